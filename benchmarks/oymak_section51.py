"""Paper 000, Section 5.1: projected gradient descent with a sparsity constraint, good initialization.

The model is ``y = o^T relu(W* x)`` with ``o`` all ones, ``x ~ N(0, I_p)`` and ``W*`` of shape
``(h, p)`` with exactly ``s`` non-zeros per row at random places, entries ``N(0, p / (h s))``. Training
starts at ``W0 = W* + Z``, ``Z`` i.i.d. ``N(0, 1 / h)`` (so ``E ||Z||_F^2 = E ||W*||_F^2``), and runs
full-batch gradient descent on ``n`` samples with step ``mu`` for a fixed number of iterations, three
ways (one :class:`convexnet.training.ProjectedOptimizer` around ``torch.optim.SGD`` each):

* unconstrained: plain gradient descent;
* l1: after every step, projection onto the l1 ball of radius ``||W*||_1`` (``sets.L1Ball``);
* l0: after every step, projection onto the ``s h``-sparse matrices (``sets.Sparse``).

Reported, per ``n`` and averaged over trials: the normalized test loss ``var(y - yhat) / var(y)`` on
1000 fresh samples, and ``corr(W*, W) = (1/h) sum_i max_j <w*_i, w_j> / (||w*_i|| ||w_j||)`` (rows
matched up to permutation). The paper: l1 and l0 reach about zero test loss, and correlation about 1,
from ``n`` of about 600; the unconstrained model never does for n up to 1000 while fitting the
training set perfectly.

The training loss is ``(1 / 2n) sum_i (y_i - yhat_i)^2 / var(y_train)``: the paper does not say how it
normalizes the loss for its step ``mu = 5``; with the loss divided by the label variance, ``mu = 5`` is
stable for the constrained runs. Unconstrained gradient descent with few samples is not (the empirical
Hessian grows as ``n`` falls below ``h p``): a run whose weights become non-finite is redone with half
the step, and the table says which step the unconstrained runs used.

Run::

    python benchmarks/oymak_section51.py                  # p=80, h=20, s=8, n = 100..1000, 3 trials, 1000 iterations
    python benchmarks/oymak_section51.py --trials 2 --iterations 500 --samples 200 600   # quick look
"""

from __future__ import annotations

import argparse
import platform
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexnet import sets  # noqa: E402
from convexnet.training import ProjectedOptimizer  # noqa: E402

METHODS = ("unconstrained", "l1", "l0")


def ground_truth(p: int, h: int, s: int, generator: torch.Generator) -> torch.Tensor:
    """``W*`` (h, p): ``s`` non-zeros per row at random places, entries ``N(0, p / (h s))``."""
    W = torch.zeros(h, p, dtype=torch.float64)
    for row in range(h):
        places = torch.randperm(p, generator=generator)[:s]
        W[row, places] = torch.randn(s, generator=generator, dtype=torch.float64) * (p / (h * s)) ** 0.5
    return W


def correlation(W_true: torch.Tensor, W: torch.Tensor) -> float:
    """Paper 000's ``corr``: each true row matched to its most correlated estimated row."""
    unit_true = W_true / W_true.norm(dim=1, keepdim=True)
    unit = W / W.norm(dim=1, keepdim=True).clamp_min(1e-300)
    return float((unit_true @ unit.T).max(dim=1).values.mean())


def train(method: str, W_true, W0, X, y, X_test, y_test, mu: float, iterations: int, s: int):
    """One run; a run that diverges (non-finite weights) is redone with half the step."""
    while True:
        result = train_with_step(method, W_true, W0, X, y, X_test, y_test, mu, iterations, s)
        if all(np.isfinite(value) for value in result.values()):
            return {**result, "mu": mu}
        mu /= 2


def train_with_step(method: str, W_true, W0, X, y, X_test, y_test, mu: float, iterations: int, s: int):
    p, h = W_true.shape[1], W_true.shape[0]
    layer = torch.nn.Linear(p, h, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(W0)
    optimizer = torch.optim.SGD(layer.parameters(), lr=mu)
    if method == "l1":
        optimizer = ProjectedOptimizer(optimizer, [(layer, sets.L1Ball(float(W_true.abs().sum())))])
    elif method == "l0":
        optimizer = ProjectedOptimizer(optimizer, [(layer, sets.Sparse(s * h))])
    scale = 1.0 / (float(y.var()) * X.shape[0])
    weight = layer.weight
    for _ in range(iterations):
        # The gradient of (1/2n) sum (o^T relu(W x) - y)^2 / var(y), written out: four tensor
        # operations instead of autograd's graph, which dominates the time at this size.
        with torch.no_grad():
            pre = X @ weight.T
            residual = torch.relu(pre).sum(1) - y
            weight.grad = ((pre > 0) * (scale * residual)[:, None]).T @ X
        optimizer.step()
    with torch.no_grad():
        residual = torch.relu(layer(X_test)).sum(1) - y_test
        train_residual = torch.relu(layer(X)).sum(1) - y
        return {"test": float(residual.var() / y_test.var()),
                "train": float(train_residual.var() / y.var()),
                "corr": correlation(W_true, layer.weight.detach())}


def run(samples, trials, iterations, p, h, s, mu, seed):
    results = {(method, n): [] for method in METHODS for n in samples}
    for trial in range(trials):
        generator = torch.Generator().manual_seed(seed + trial)
        W_true = ground_truth(p, h, s, generator)
        W0 = W_true + torch.randn(h, p, generator=generator, dtype=torch.float64) / h ** 0.5
        X_all = torch.randn(max(samples), p, generator=generator, dtype=torch.float64)
        X_test = torch.randn(1000, p, generator=generator, dtype=torch.float64)
        y_all, y_test = torch.relu(X_all @ W_true.T).sum(1), torch.relu(X_test @ W_true.T).sum(1)
        for n in samples:
            for method in METHODS:
                results[(method, n)].append(train(method, W_true, W0, X_all[:n], y_all[:n], X_test,
                                                  y_test, mu, iterations, s))
        print(f"trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)
    return results


def mean(results, method, n, key):
    return float(np.mean([r[key] for r in results[(method, n)]]))


def table(results, samples) -> str:
    rows = ["| n | test loss: unconstrained / l1 / l0 | corr(W*, W): unconstrained / l1 / l0 | "
            "train loss (unconstrained) | step of the unconstrained runs |", "|---|---|---|---|---|"]
    for n in samples:
        tests = " / ".join(f"{mean(results, m, n, 'test'):.3f}" for m in METHODS)
        corrs = " / ".join(f"{mean(results, m, n, 'corr'):.3f}" for m in METHODS)
        steps = sorted({r["mu"] for r in results[("unconstrained", n)]}, reverse=True)
        rows.append(f"| {n} | {tests} | {corrs} | {mean(results, 'unconstrained', n, 'train'):.1e} | "
                    f"{', '.join(f'{mu:g}' for mu in steps)} |")
    return "\n".join(rows)


def plot(results, samples, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, (left, right) = plt.subplots(1, 2, figsize=(10, 3.8))
    for method, marker in zip(METHODS, "osd"):
        left.plot(samples, [mean(results, method, n, "test") for n in samples], marker=marker, label=method)
        right.plot(samples, [mean(results, method, n, "corr") for n in samples], marker=marker, label=method)
    left.set(xlabel="n (training samples)", ylabel="normalized test loss", title="test loss")
    right.set(xlabel="n (training samples)", ylabel="corr(W*, W)", title="recovery of W*")
    for axis in (left, right):
        axis.grid(alpha=0.3)
        axis.legend()
    figure.suptitle("Paper 000, Section 5.1 (p=80, h=20, s=8, good initialization)")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, nargs="+", default=list(range(100, 1001, 100)))
    parser.add_argument("--trials", type=int, default=3, help="the paper averages 20")
    parser.add_argument("--iterations", type=int, default=1000, help="the paper runs 2000")
    parser.add_argument("--p", type=int, default=80)
    parser.add_argument("--h", type=int, default=20)
    parser.add_argument("--s", type=int, default=8)
    parser.add_argument("--mu", type=float, default=5.0)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"
                                              / "oymak_section51.png"), help="'' for none")
    args = parser.parse_args()
    torch.set_num_threads(1)     # tiny matrices: a second thread only adds contention
    start = time.perf_counter()
    results = run(args.samples, args.trials, args.iterations, args.p, args.h, args.s, args.mu, args.seed)
    print(f"p={args.p}, h={args.h}, s={args.s}, mu={args.mu}, {args.iterations} iterations, "
          f"{args.trials} trials; {platform.machine()}, torch {torch.__version__}, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(table(results, args.samples))
    if args.plot:
        plot(results, args.samples, Path(args.plot))
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
