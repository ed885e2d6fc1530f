"""Structured pruning (issue 15) on scikit-learn's digits: Net-Trim's group program against magnitude
and activation neuron pruning, each baseline with and without a least-squares refit, side by side.

Two networks are trained on two thirds of ``sklearn.datasets.load_digits`` (seeded, no download):
the digits MLP of ``benchmarks/digits_table1.py`` (64-300-300-10) and a small CNN
(conv 1->16 3x3, BatchNorm, ReLU, max-pool, conv 16->32 3x3, BatchNorm, ReLU, max-pool, flatten,
128-64-10). At each level (30%, 50%, 70%, 90% of the units of every prunable layer: hidden
features, conv channels), on the same calibration inputs (the training images), in one process:

* **Net-Trim**: ``cnn.trim(model, calibration, neurons=level)``: units chosen by the group-l1 path
  on the next layer's rows, next layer refit exactly (certified);
* **magnitude**: the units whose producer rows (weights and bias) have the largest L2 norms;
* **activation**: the units whose activations, as the next layer reads them, have the largest L2
  norm on the calibration inputs;

each baseline without a refit (the next layer keeps its weights) and with the same exact
least-squares refit (``support=`` callable, ``refit=True``). Every pruned model is then shrunk
(:func:`convexnet.nn.shrink`; the same sizes for every method at a level) and the table gives test
accuracy without fine-tuning, the parameters of the shrunk model, and the CPU inference time of
the shrunk against the dense model at batch 1 and 256 (medians; one torch thread).

    python benchmarks/structured.py [--levels 0.3 0.5 0.7 0.9] [--repeats 200]
"""

from __future__ import annotations

import argparse
import copy
import platform
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import convexnet.nn as cnn  # noqa: E402
from digits_table1 import accuracy, load_data, network, train  # noqa: E402


def small_cnn() -> torch.nn.Sequential:
    return torch.nn.Sequential(
        torch.nn.Conv2d(1, 16, 3, padding=1), torch.nn.BatchNorm2d(16), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(16, 32, 3, padding=1), torch.nn.BatchNorm2d(32),
        torch.nn.ReLU(), torch.nn.MaxPool2d(2), torch.nn.Flatten(), torch.nn.Linear(128, 64),
        torch.nn.ReLU(), torch.nn.Linear(64, 10))


def magnitude(units):
    """Keep the units whose producer rows (with the bias entry) have the largest L2 norms."""
    return _top(units.producer.norm(dim=1), units)


def activation(units):
    """Keep the units whose inputs to the next layer have the largest L2 norm (``sum diag H``)."""
    energy = torch.zeros(units.count, dtype=torch.float64)
    member = units.unit_of_row >= 0
    energy.index_add_(0, units.unit_of_row[member].cpu(), torch.diagonal(units.H)[member].cpu())
    return _top(energy, units)


def _top(score, units):
    kept = torch.zeros(units.count, dtype=torch.bool)
    kept[torch.argsort(-score, stable=True)[:units.count - units.remove]] = True
    return kept


METHODS = {
    "Net-Trim": {},
    "magnitude": {"support": magnitude, "refit": False},
    "magnitude+refit": {"support": magnitude, "refit": True},
    "activation": {"support": activation, "refit": False},
    "activation+refit": {"support": activation, "refit": True},
}


def median_times(models, x, repeats: int) -> list:
    """Median seconds of one forward pass of each model, the models' passes interleaved so that
    a change in the machine's load hits them alike (after a warm-up)."""
    times = [[] for _ in models]
    with torch.no_grad():
        for model in models:
            for _ in range(10):
                model(x)
        for _ in range(repeats):
            for model, bucket in zip(models, times):
                start = time.perf_counter()
                model(x)
                bucket.append(time.perf_counter() - start)
    return [statistics.median(bucket) for bucket in times]


def parameters(model) -> int:
    return sum(p.numel() for p in model.parameters())


def run_model(label, dense, data, calibration, levels, repeats):
    X_train, X_test, y_train, y_test = data
    rows = []
    dense_params = parameters(dense)
    x1, x256 = X_test[:1], X_test[:256]
    for level in levels:
        row = {"model": label, "level": level, "dense_params": dense_params}
        pruned_models = {}
        for method, options in METHODS.items():
            model = copy.deepcopy(dense)
            tic = time.perf_counter()
            report = cnn.trim(model, calibration, neurons=level, **options)
            row[f"time {method}"] = time.perf_counter() - tic
            row[method] = accuracy(model, X_test.numpy(), y_test)
            if method == "Net-Trim":
                row["certified"] = all(layer.certificate == "ok" for layer in report)
            pruned_models[method] = model
        small = cnn.shrink(pruned_models["Net-Trim"])
        with torch.no_grad():
            row["shrink_error"] = float((small(X_test) - pruned_models["Net-Trim"](X_test)).abs().max())
        row["params"] = parameters(small)
        row["b1"] = median_times([dense, small], x1, repeats)
        row["b256"] = median_times([dense, small], x256, max(repeats // 4, 20))
        rows.append(row)
        print(line(row), flush=True)
    return rows


HEADER = (f"{'model':<5} {'units':>5} {'params':>15} | {'Net-Trim':>8} {'mag':>6} {'mag+rf':>6} "
          f"{'act':>6} {'act+rf':>6} | {'best base':>9} {'NT-best':>7} | {'b1 dense/shrunk (us)':>21} "
          f"{'x':>5} | {'b256 dense/shrunk (us)':>22} {'x':>5}")


def line(row) -> str:
    baselines = [row[m] for m in METHODS if m != "Net-Trim"]
    best = max(baselines)
    b1, b256 = row["b1"], row["b256"]
    return (f"{row['model']:<5} {100 * row['level']:>4.0f}% {row['params']:>7}/{row['dense_params']:<7} | "
            f"{row['Net-Trim']:>8.2f} {row['magnitude']:>6.2f} {row['magnitude+refit']:>6.2f} "
            f"{row['activation']:>6.2f} {row['activation+refit']:>6.2f} | {best:>9.2f} "
            f"{row['Net-Trim'] - best:>+7.2f} | {1e6 * b1[0]:>9.1f}/{1e6 * b1[1]:<9.1f} "
            f"{b1[0] / b1[1]:>5.2f} | {1e6 * b256[0]:>10.1f}/{1e6 * b256[1]:<10.1f} "
            f"{b256[0] / b256[1]:>5.2f}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levels", type=float, nargs="+", default=[0.3, 0.5, 0.7, 0.9])
    parser.add_argument("--repeats", type=int, default=200)
    parser.add_argument("--calibration", type=int, default=1000,
                        help="training images used as calibration inputs (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    X_train, X_test, y_train, y_test = load_data(args.seed)
    print(f"machine: {platform.processor() or platform.machine()}, torch {torch.__version__}, "
          f"1 thread; digits: {len(X_train)} train, {len(X_test)} test; calibration "
          f"{min(args.calibration, len(X_train))} training images")
    torch.manual_seed(args.seed)
    mlp = network()
    train(mlp, X_train, y_train, epochs=40, lr=1e-3, seed=args.seed)
    torch.manual_seed(args.seed)
    conv = small_cnn()
    images = lambda X: torch.as_tensor(X).reshape(-1, 1, 8, 8)  # noqa: E731
    train(conv, images(X_train), y_train, epochs=40, lr=2e-3, seed=args.seed)
    print(f"dense test accuracy: MLP {accuracy(mlp, X_test, y_test):.2f}%, "
          f"CNN {accuracy(conv, images(X_test), y_test):.2f}%\n")
    print(HEADER)
    rows = []
    for label, model, to_input in (("MLP", mlp, torch.as_tensor), ("CNN", conv, images)):
        data = (to_input(X_train), to_input(X_test), y_train, y_test)
        calibration = to_input(X_train[:args.calibration])
        rows += run_model(label, model, data, calibration, args.levels, args.repeats)
    print("\nNet-Trim certified at every layer:", all(row["certified"] for row in rows))
    print("shrunk vs pruned outputs, max abs difference:",
          f"{max(row['shrink_error'] for row in rows):.1e}")
    print("pruning time per method (s, median over levels and models): " + ", ".join(
        f"{m} {np.median([row[f'time {m}'] for row in rows]):.2f}" for m in METHODS))
    wins = [row["Net-Trim"] >= max(row[m] for m in METHODS if m != "Net-Trim") for row in rows]
    ahead = [row["Net-Trim"] > max(row[m] for m in METHODS if m != "Net-Trim")
             for row in rows if row["level"] >= 0.7]
    print(f"Net-Trim >= best baseline: {sum(wins)}/{len(wins)} rows; strictly ahead at 70%/90%: "
          f"{sum(ahead)}/{len(ahead)} rows")


if __name__ == "__main__":
    main()
