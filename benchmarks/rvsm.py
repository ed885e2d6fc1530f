"""Paper 002: RVSM on Theorem 1's convolutional model, and l1 / l0 / transformed-l1 on digits.

**Part 1, Theorem 1's setting.** A one-hidden-layer no-overlap convolutional network
``L(x; w) = (1/k) sum_i relu(w . x_i)`` over ``k`` disjoint patches ``x_i`` of width ``d`` of a
Gaussian input ``x ~ N(0, I_{kd})`` (a ``Conv1d(1, 1, d, stride=d, bias=False)`` and a mean), trained on
the population loss ``f(w) = E (L(x; w) - L(x; w*))^2`` in its closed form (paper 002, eq. 5; checked
against a Monte Carlo estimate) with :class:`convexnet.training.RVSM` around plain
``torch.optim.SGD``, i.e. Algorithm 1 exactly. ``w*`` is a sparse unit vector. Reported: the angle
``theta(w, w*)`` and ``theta(u, w*)``, ``||w - w*||``, the support of ``u`` against that of ``w*``, for
gradient descent and the three penalties; then ``||w - w*||`` over ``beta`` at a fixed threshold
``lambda / beta`` (Theorem 1: ``theta(w_bar, w*) < delta`` and ``||w_bar - w*|| = O(beta)``).

**Part 2, penalties on a small network (as paper 002's Table 1).** scikit-learn's digits (8x8
images, 1797 samples, no download), a 64-128-64-10 ReLU network trained with SGD (momentum 0.9) from
the same initialization: the base model, and RVSM with ``L1``, ``TransformedL1(a=1)`` and ``L0`` at the
same ``lambda`` and ``beta``. Accuracy is the test accuracy of ``u`` (the sparse network), sparsity the
fraction of zero weights (biases are not penalized, paper 002's choice). The paper (VGG-16, CIFAR-10):
l0 sparsest (86.89 %), l1 most accurate (93.70 %, sparsity 35.68 %), transformed l1 between.

Run::

    python benchmarks/rvsm.py                 # both parts, 3 seeds
    python benchmarks/rvsm.py --seeds 1 --epochs 20      # quick look
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexnet import penalties  # noqa: E402
from convexnet.training import RVSM  # noqa: E402


# ------------------------------------------------------------------------ part 1: Theorem 1
class AngleTerm(torch.autograd.Function):
    """``h(c) = sin(theta) + (pi - theta) cos(theta)`` of ``c = cos(theta)``, with ``h'(c) = pi - theta``.

    Written out because autograd through ``arccos`` and ``sqrt(1 - c^2)`` multiplies infinities by
    zeros at ``c = 1``, exactly where gradient descent converges; ``h'`` itself is finite there.
    """

    @staticmethod
    def forward(ctx, cos):
        ctx.save_for_backward(cos)
        return torch.sqrt((1 - cos * cos).clamp_min(0)) + (math.pi - torch.arccos(cos)) * cos

    @staticmethod
    def backward(ctx, grad):
        (cos,) = ctx.saved_tensors
        return grad * (math.pi - torch.arccos(cos))


def population_loss(w: torch.Tensor, w_star: torch.Tensor, k: int) -> torch.Tensor:
    """Paper 002, eq. 5: ``(1/k^2) [a (|w|^2 + |w*|^2) - 2 k g(w, w*) - 2 b |w| |w*|]``.

    ``g(w, w*) = |w| |w*| h(cos theta) / (2 pi)`` (Lemma 1), ``b = (k^2 - k) / (2 pi)``, ``a = b + k/2``.
    """
    norm, norm_star = w.norm(), w_star.norm()
    cos = (w @ w_star / (norm * norm_star)).clamp(-1.0, 1.0)
    g = norm * norm_star * AngleTerm.apply(cos) / (2 * math.pi)
    b = (k * k - k) / (2 * math.pi)
    a = b + k / 2
    return (a * (norm ** 2 + norm_star ** 2) - 2 * k * g - 2 * b * norm * norm_star) / k ** 2


def network_output(conv: torch.nn.Conv1d, x: torch.Tensor) -> torch.Tensor:
    """``L(x; w) = (1/k) sum_i relu(w . x_i)`` for a batch ``x`` of shape ``(B, k d)``."""
    return torch.relu(conv(x[:, None, :])).mean(dim=(1, 2))


def angle(a: torch.Tensor, b: torch.Tensor) -> float:
    """Degrees between two vectors (90 for a zero vector)."""
    denominator = float(a.norm() * b.norm())
    if denominator == 0:
        return 90.0
    return math.degrees(math.acos(max(-1.0, min(1.0, float(a @ b) / denominator))))


def theorem_1_run(penalty, w_star, w0, k, beta, lr, iterations, every=10):
    d = w_star.numel()
    conv = torch.nn.Conv1d(1, 1, d, stride=d, bias=False).double()
    with torch.no_grad():
        conv.weight.copy_(w0.reshape(1, 1, d))
    optimizer = torch.optim.SGD(conv.parameters(), lr=lr)
    rvsm = RVSM(optimizer, [conv], penalty, beta) if penalty is not None else None
    stepper = rvsm if rvsm is not None else optimizer
    history = []
    for iteration in range(iterations + 1):
        w = conv.weight.detach().reshape(-1)
        u = rvsm.splits[0].u.reshape(-1) if rvsm is not None else w
        if iteration % every == 0:
            history.append((iteration, angle(w, w_star), angle(u, w_star)))
        if iteration == iterations:
            break
        stepper.zero_grad()
        population_loss(conv.weight.reshape(-1), w_star, k).backward()
        stepper.step()
    return {"w": w.clone(), "u": u.clone(), "history": history, "conv": conv}


def part_1(args) -> dict:
    generator = torch.Generator().manual_seed(args.seed)
    d, k, s = args.width, args.patches, args.support
    w_star = torch.zeros(d, dtype=torch.float64)
    support = torch.randperm(d, generator=generator)[:s]
    signs = torch.randint(0, 2, (s,), generator=generator).double() * 2 - 1
    w_star[support] = signs * (0.5 + 0.5 * torch.rand(s, generator=generator, dtype=torch.float64))
    w_star /= w_star.norm()
    w0 = torch.randn(d, generator=generator, dtype=torch.float64)
    w0 /= w0.norm()

    # The closed form (eq. 5) against a Monte Carlo estimate of E (L(x; w0) - L(x; w*))^2.
    probe = torch.nn.Conv1d(1, 1, d, stride=d, bias=False).double()
    target = torch.nn.Conv1d(1, 1, d, stride=d, bias=False).double()
    with torch.no_grad():
        probe.weight.copy_(w0.reshape(1, 1, d))
        target.weight.copy_(w_star.reshape(1, 1, d))
        x = torch.randn(200_000, k * d, generator=generator, dtype=torch.float64)
        monte_carlo = float((network_output(probe, x) - network_output(target, x)).square().mean())
    closed_form = float(population_loss(w0, w_star, k))

    lam_over_beta = args.threshold
    runs = {"gradient descent": None,
            "l1": penalties.L1(lam_over_beta * args.beta),
            "transformed l1 (a=1)": penalties.TransformedL1(lam_over_beta * args.beta, a=1.0),
            "l0": penalties.L0(lam_over_beta * args.beta)}
    results = {name: theorem_1_run(p, w_star, w0, k, args.beta, args.eta, args.iterations)
               for name, p in runs.items()}
    betas = {}
    for beta in args.betas:
        run = theorem_1_run(penalties.L1(lam_over_beta * beta), w_star, w0, k, beta, args.eta,
                            args.iterations)
        betas[beta] = (float((run["w"] - w_star).norm()), angle(run["w"], w_star))
    return {"w_star": w_star, "w0": w0, "monte_carlo": monte_carlo, "closed_form": closed_form,
            "results": results, "betas": betas}


def part_1_tables(part, args) -> str:
    w_star = part["w_star"]
    support = set(torch.nonzero(w_star).reshape(-1).tolist())
    lines = [f"d = {args.width}, k = {args.patches}, |supp w*| = {args.support}, beta = {args.beta}, "
             f"lambda / beta = {args.threshold}, eta = {args.eta}, {args.iterations} iterations; "
             f"theta(w0, w*) = {angle(part['w0'], w_star):.1f} deg; f(w0): closed form "
             f"{part['closed_form']:.5f}, Monte Carlo (200000 samples) {part['monte_carlo']:.5f}", "",
             "| method | theta(w, w*) | theta(u, w*) | ‖w - w*‖ | ‖u - w*‖ | nonzeros of u | supp u = supp w* |",
             "|---|---|---|---|---|---|---|"]
    for name, run in part["results"].items():
        u = run["u"]
        found = set(torch.nonzero(u).reshape(-1).tolist())
        if name == "gradient descent":       # no splitting: there is no u
            lines.append(f"| {name} | {angle(run['w'], w_star):.2f} deg | - | "
                         f"{float((run['w'] - w_star).norm()):.4f} | - | - | - |")
            continue
        lines.append(f"| {name} | {angle(run['w'], w_star):.2f} deg | {angle(u, w_star):.2f} deg | "
                     f"{float((run['w'] - w_star).norm()):.4f} | {float((u - w_star).norm()):.4f} | "
                     f"{len(found)} / {u.numel()} | {'yes' if found == support else 'no'} |")
    lines += ["", "| beta (l1, lambda / beta fixed) | ‖w - w*‖ | theta(w, w*) |", "|---|---|---|"]
    for beta, (distance, theta) in part["betas"].items():
        lines.append(f"| {beta:g} | {distance:.4f} | {theta:.3f} deg |")
    return "\n".join(lines)


# --------------------------------------------------------------------------- part 2: digits
def digits(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    X, y = load_digits(return_X_y=True)
    X_train, X_test, y_train, y_test = train_test_split(X / 16.0, y, test_size=0.3, stratify=y,
                                                        random_state=seed)
    as_tensor = lambda a, dtype: torch.as_tensor(a, dtype=dtype)  # noqa: E731
    return (as_tensor(X_train, torch.float32), as_tensor(y_train, torch.long),
            as_tensor(X_test, torch.float32), as_tensor(y_test, torch.long))


def digits_run(penalty, data, seed: int, args) -> dict:
    X, y, X_test, y_test = data
    torch.manual_seed(seed)
    model = torch.nn.Sequential(torch.nn.Linear(64, 128), torch.nn.ReLU(), torch.nn.Linear(128, 64),
                                torch.nn.ReLU(), torch.nn.Linear(64, 10))
    optimizer = torch.optim.SGD(model.parameters(), lr=args.lr, momentum=0.9)
    rvsm = RVSM(optimizer, model, penalty, args.digits_beta) if penalty is not None else None
    stepper = rvsm if rvsm is not None else optimizer
    generator = torch.Generator().manual_seed(seed)
    for _ in range(args.epochs):
        order = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], args.batch_size):
            rows = order[start:start + args.batch_size]
            stepper.zero_grad()
            torch.nn.functional.cross_entropy(model(X[rows]), y[rows]).backward()
            stepper.step()
    with torch.no_grad():
        if rvsm is None:
            accuracy = float((model(X_test).argmax(1) == y_test).float().mean())
            return {"accuracy": accuracy, "sparsity": 0.0, "w_accuracy": accuracy}
        w_accuracy = float((model(X_test).argmax(1) == y_test).float().mean())
        with rvsm.sparse_weights():
            accuracy = float((model(X_test).argmax(1) == y_test).float().mean())
    return {"accuracy": accuracy, "sparsity": rvsm.sparsity, "w_accuracy": w_accuracy}


def part_2(args) -> dict:
    lam = args.digits_lambda
    methods = {"base model (SGD)": None, "l1": penalties.L1(lam),
               "transformed l1 (a=1)": penalties.TransformedL1(lam, a=1.0), "l0": penalties.L0(lam)}
    results = {name: [] for name in methods}
    for seed in range(args.seeds):
        data = digits(seed)
        for name, penalty in methods.items():
            results[name].append(digits_run(penalty, data, seed, args))
        print(f"digits seed {seed + 1}/{args.seeds} done", file=sys.stderr, flush=True)
    return results


def part_2_table(results, args) -> str:
    lines = [f"64-128-64-10, SGD lr {args.lr} momentum 0.9, batch {args.batch_size}, {args.epochs} epochs; "
             f"lambda = {args.digits_lambda}, beta = {args.digits_beta}; {args.seeds} seeds (mean ± std)", "",
             "| penalty | test accuracy of u | test accuracy of w | sparsity of u (weights) |",
             "|---|---|---|---|"]
    for name, runs in results.items():
        values = {key: np.array([r[key] for r in runs]) for key in ("accuracy", "w_accuracy", "sparsity")}
        lines.append(f"| {name} | {100 * values['accuracy'].mean():.2f} ± {100 * values['accuracy'].std():.2f} % | "
                     f"{100 * values['w_accuracy'].mean():.2f} % | "
                     f"{100 * values['sparsity'].mean():.2f} ± {100 * values['sparsity'].std():.2f} % |")
    return "\n".join(lines)


def plot(part, results, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(11, 3.8))
    colors = {"gradient descent": "k", "base model (SGD)": "k", "l1": "C0", "transformed l1 (a=1)": "C1",
              "l0": "C2"}
    for name, run in part["results"].items():
        color = colors[name]
        iterations, theta_w, theta_u = zip(*run["history"])
        left.semilogy(iterations, np.maximum(theta_w, 1e-9), color=color, label=f"{name}: w")
        if name != "gradient descent":
            left.semilogy(iterations, np.maximum(theta_u, 1e-9), color=color, linestyle="--",
                          label=f"{name}: u")
    left.set(xlabel="iteration", ylabel="theta(., w*) (degrees)", title="Theorem 1's model: angle to w*")
    left.legend(fontsize=7)
    left.grid(alpha=0.3)
    names = list(results)
    for name, marker in zip(names, "osd^"):
        accuracy = [100 * r["accuracy"] for r in results[name]]
        sparsity = [100 * r["sparsity"] for r in results[name]]
        right.scatter(sparsity, accuracy, marker=marker, color=colors[name], label=name)
    right.set(xlabel="sparsity of u (%)", ylabel="test accuracy of u (%)", title="digits, per seed")
    right.legend(fontsize=8)
    right.grid(alpha=0.3)
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--width", type=int, default=25, help="d, the patch width")
    parser.add_argument("--patches", type=int, default=4, help="k, the number of patches")
    parser.add_argument("--support", type=int, default=5, help="non-zeros of w*")
    parser.add_argument("--beta", type=float, default=0.05)
    parser.add_argument("--betas", type=float, nargs="+", default=[0.1, 0.05, 0.02, 0.01])
    parser.add_argument("--threshold", type=float, default=0.02, help="lambda / beta in part 1")
    parser.add_argument("--eta", type=float, default=0.1)
    parser.add_argument("--iterations", type=int, default=3000)
    parser.add_argument("--seeds", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=30)
    parser.add_argument("--batch-size", type=int, default=32)
    parser.add_argument("--lr", type=float, default=0.05)
    parser.add_argument("--digits-lambda", type=float, default=2.5e-4)
    parser.add_argument("--digits-beta", type=float, default=0.05)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"
                                              / "rvsm.png"), help="'' for none")
    args = parser.parse_args()
    torch.set_num_threads(1)     # small layers: a second thread only adds contention
    start = time.perf_counter()
    part = part_1(args)
    print(part_1_tables(part, args), "\n", flush=True)
    results = part_2(args)
    print(part_2_table(results, args))
    print(f"\n{platform.machine()}, torch {torch.__version__}, {time.perf_counter() - start:.0f} s")
    if args.plot:
        plot(part, results, Path(args.plot))
        print(f"plot: {args.plot}")


if __name__ == "__main__":
    main()
