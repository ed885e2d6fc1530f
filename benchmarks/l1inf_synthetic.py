"""Paper 001's synthetic classification: L1,inf weight normalization over the bound c.

Data (paper 001, "A Synthesis Classification Experiment"): ``zeta ~ N(0, 1)`` is drawn once; every
sample has ``x_j ~ N(zeta / 2, 1 / 4)`` for ``j = 1..500`` and the label
``y = 1 if exp(x_1) + x_2^2 + 5 sin(x_3 x_4) - 3 > 0 else 0``; 500 training and 1000 test samples.
The network is 500-100-50-20-2 with ReLU and biases, trained on the cross entropy.

For every ``c`` the three hidden layers are trained under ``max_j ||V_l[:, j]||_1 <= c`` with
``V_l = [W_l; b_l]`` (bias row included; the output layer is free, as in the paper's class
``S_c``): :class:`convexnet.training.ProjectedOptimizer` with ``sets.L1InfBall(c)`` around
``torch.optim.Adam`` (the paper projects after each step of stochastic gradient descent; Adam is used
here so that one learning rate serves every ``c``), the initial point projected first; ``c = inf`` is
plain Adam.

Reported per ``c``, averaged over trials (new samples and initialization each; ``zeta`` fixed):
the generalization error ``|test loss - train loss|`` (cross entropy), the test accuracy, the
sparsity (fraction of exact zeros) of the constrained matrices ``[W_l; b_l]``, and the test accuracy
of always predicting the training set's majority class. The paper (table, 500-100-50-20-2, 500
samples): generalization error 1.674 / 0.478 / 0.441 / 0.324 / 0.134 / 0.068 and accuracy
69.90 / 84.78 / 87.03 / 87.78 / 89.57 / 88.48 % for c = inf / 0.5 / 0.16 / 0.1 / 0.04 / 0.01, and the
network sparser as ``c`` falls.

Run::

    python benchmarks/l1inf_synthetic.py                  # 3 trials, 50 epochs
    python benchmarks/l1inf_synthetic.py --trials 1 --epochs 20 --bounds inf 0.1   # quick look
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

from convexnet import sets  # noqa: E402
from convexnet.training import ProjectedOptimizer, design_matrix  # noqa: E402

SIZES = (500, 100, 50, 20, 2)
BOUNDS = (math.inf, 0.5, 0.16, 0.1, 0.04, 0.01)


def sample(count: int, zeta: float, generator: torch.Generator):
    """``count`` samples of the paper's generating rule (float32)."""
    X = zeta / 2 + 0.5 * torch.randn(count, SIZES[0], generator=generator)
    score = torch.exp(X[:, 0]) + X[:, 1] ** 2 + 5 * torch.sin(X[:, 2] * X[:, 3]) - 3
    return X, (score > 0).long()


def network(generator: torch.Generator) -> torch.nn.Sequential:
    torch.manual_seed(int(torch.randint(0, 2 ** 31 - 1, (1,), generator=generator)))
    layers = []
    for index, (a, b) in enumerate(zip(SIZES[:-1], SIZES[1:])):
        layers.append(torch.nn.Linear(a, b))
        if index < len(SIZES) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers)


def train(c: float, data, generator: torch.Generator, epochs: int, batch_size: int, lr: float) -> dict:
    X, y, X_test, y_test = data
    model = network(generator)
    hidden = [m for m in model if isinstance(m, torch.nn.Linear)][:-1]
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    if math.isfinite(c):
        optimizer = ProjectedOptimizer(optimizer, [(layer, sets.L1InfBall(c)) for layer in hidden])
        optimizer.project_now()
    for _ in range(epochs):
        order = torch.randperm(X.shape[0], generator=generator)
        for start in range(0, X.shape[0], batch_size):
            rows = order[start:start + batch_size]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(X[rows]), y[rows]).backward()
            optimizer.step()
    with torch.no_grad():
        train_loss = float(torch.nn.functional.cross_entropy(model(X), y))
        test_logits = model(X_test)
        test_loss = float(torch.nn.functional.cross_entropy(test_logits, y_test))
        accuracy = float((test_logits.argmax(1) == y_test).float().mean())
    matrices = [design_matrix(layer) for layer in hidden]
    zeros = sum(int((V == 0).sum()) for V in matrices)
    return {"gap": abs(test_loss - train_loss), "train": train_loss, "test": test_loss,
            "accuracy": accuracy, "sparsity": zeros / sum(V.numel() for V in matrices),
            "max_norm": max(float(V.abs().sum(0).max()) for V in matrices)}


def run(bounds, trials: int, epochs: int, batch_size: int, lr: float, seed: int):
    zeta = float(torch.randn(1, generator=torch.Generator().manual_seed(seed)))
    results = {c: [] for c in bounds}
    baselines = []
    for trial in range(trials):
        generator = torch.Generator().manual_seed(seed + 1 + trial)
        X, y = sample(500, zeta, generator)
        X_test, y_test = sample(1000, zeta, generator)
        majority = int(y.float().mean() > 0.5)
        baselines.append(float((y_test == majority).float().mean()))
        for c in bounds:
            results[c].append(train(c, (X, y, X_test, y_test), generator, epochs, batch_size, lr))
        print(f"trial {trial + 1}/{trials} done", file=sys.stderr, flush=True)
    return zeta, results, baselines


def average(results, c, key) -> float:
    return float(np.mean([r[key] for r in results[c]]))


def table(results, bounds) -> str:
    rows = ["| c | generalization error | train / test loss | test accuracy | sparsity of hidden [W; b] | "
            "max column l1 |", "|---|---|---|---|---|---|"]
    for c in bounds:
        rows.append(f"| {c:g} | {average(results, c, 'gap'):.3f} | {average(results, c, 'train'):.3f} / "
                    f"{average(results, c, 'test'):.3f} | {100 * average(results, c, 'accuracy'):.2f} % | "
                    f"{100 * average(results, c, 'sparsity'):.1f} % | {average(results, c, 'max_norm'):.3g} |")
    return "\n".join(rows)


def plot(results, bounds, baseline: float, path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    labels = [f"{c:g}" for c in bounds]
    figure, axes = plt.subplots(1, 3, figsize=(12, 3.6))
    for axis, key, title in zip(axes, ("gap", "accuracy", "sparsity"),
                                ("generalization error", "test accuracy", "sparsity of hidden [W; b]")):
        axis.boxplot([[r[key] for r in results[c]] for c in bounds])
        axis.set_xticks(range(1, len(bounds) + 1), labels)
        axis.set(xlabel="c", title=title)
        axis.grid(alpha=0.3)
    axes[0].set_yscale("log")
    axes[1].axhline(baseline, color="gray", linestyle="--", label="majority class")
    axes[1].legend(fontsize=8)
    figure.suptitle("Paper 001, synthetic classification (500-100-50-20-2, 500 samples)")
    figure.tight_layout()
    figure.savefig(path, dpi=110, bbox_inches="tight")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--bounds", type=float, nargs="+", default=list(BOUNDS))
    parser.add_argument("--trials", type=int, default=3)
    parser.add_argument("--epochs", type=int, default=50)
    parser.add_argument("--batch-size", type=int, default=50)
    parser.add_argument("--lr", type=float, default=1e-2)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plot", default=str(Path(__file__).resolve().parents[1] / "docs" / "img"
                                              / "l1inf_synthetic.png"), help="'' for none")
    args = parser.parse_args()
    torch.set_num_threads(1)     # small layers: a second thread only adds contention
    start = time.perf_counter()
    zeta, results, baselines = run(args.bounds, args.trials, args.epochs, args.batch_size, args.lr,
                                   args.seed)
    print(f"zeta = {zeta:.3f}; {args.trials} trials, {args.epochs} epochs of Adam (lr {args.lr}, "
          f"batch {args.batch_size}); {platform.machine()}, torch {torch.__version__}, "
          f"{time.perf_counter() - start:.0f} s\n")
    print(table(results, args.bounds))
    print(f"\nmajority-class test accuracy: {100 * np.mean(baselines):.2f} %")
    if args.plot:
        plot(results, args.bounds, float(np.mean(baselines)), Path(args.plot))
        print(f"\nplot: {args.plot}")


if __name__ == "__main__":
    main()
