"""Phase transition of exact recovery for one ReLU unit, and how much of it the certificates prove.

For Gaussian ``X`` (P, N) and an s-sparse ``w0``, observe ``y = relu(X @ w0)`` and ask:

* **recovered**: does an independent solve of Net-Trim's ``epsilon = 0`` program (8),
  ``min ||w||_1  s.t.  x_p . w = y_p (y_p > 0),  x_p . w <= 0 (y_p = 0)``, by CVXPY with Clarabel,
  return ``w0`` (``||w - w0|| <= 1e-4 max(1, ||w0||)``)?
* **certified (LP)** / **certified (LS)**: does :func:`convexnet.certificates.uniqueness_certificate`
  prove ``w0`` the unique solution, with the margin-maximizing linear program or the least-squares
  ``nu``?

A certificate is a proof, so the certified fractions never exceed the recovered one; the LP
certificate is exact (it finds a certificate whenever ``w0`` is the unique solution), the
least-squares one is only sufficient. Theorem 3 of paper 004 says ``P = (11 s + 7) mu log N``
samples suffice with probability ``>= 1 - N^(1 - mu)``; its line is drawn at the given ``mu``.

Run::

    python benchmarks/phase_transition.py                       # N = 100, s in {2, 4, 8}, 20 trials
    python benchmarks/phase_transition.py --trials 3 --samples 20 60 200   # a quick look
"""

from __future__ import annotations

import argparse
import math
import platform
import sys
import time
import warnings
from pathlib import Path

import cvxpy as cp
import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from convexnet.certificates import uniqueness_certificate  # noqa: E402

DEFAULT_SAMPLES = (6, 10, 15, 20, 25, 30, 40, 50, 60, 80, 100, 130, 170, 230, 320, 450)


def theorem_3_samples(sparsity: int, N: int, mu: float) -> float:
    """``P = (11 s + 7) mu log N`` (natural logarithm)."""
    return (11 * sparsity + 7) * mu * math.log(N)


def solve_program_8(X: np.ndarray, y: np.ndarray) -> np.ndarray | None:
    w = cp.Variable(X.shape[1])
    omega = y > 0
    constraints = [X[omega] @ w == y[omega]]
    if (~omega).any():
        constraints.append(X[~omega] @ w <= 0)
    problem = cp.Problem(cp.Minimize(cp.norm1(w)), constraints)
    # An inaccurate solve is judged by its distance to w0 like any other; the warning adds nothing.
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        try:
            problem.solve(solver="CLARABEL")
        except cp.error.SolverError:
            return None
    return w.value


def run_trial(rng: np.random.Generator, P: int, N: int, sparsity: int) -> tuple[bool, bool, bool]:
    X = rng.standard_normal((P, N))
    w0 = np.zeros(N)
    w0[rng.choice(N, sparsity, replace=False)] = rng.standard_normal(sparsity)
    y = np.maximum(X @ w0, 0.0)
    w_hat = solve_program_8(X, y)
    recovered = w_hat is not None and bool(
        np.linalg.norm(w_hat - w0) <= 1e-4 * max(1.0, np.linalg.norm(w0)))
    certified_lp = uniqueness_certificate(X, y, w0, method="lp").unique
    certified_ls = uniqueness_certificate(X, y, w0, method="least_squares").unique
    return recovered, certified_lp, certified_ls


def sweep(N: int, sparsities, samples, trials: int, seed: int) -> dict:
    """Fractions per ``(s, P)``: ``{s: array (len(samples), 3)}`` of recovered, LP, LS."""
    rng = np.random.default_rng(seed)
    fractions = {}
    for sparsity in sparsities:
        table = np.zeros((len(samples), 3))
        for row, P in enumerate(samples):
            outcomes = np.array([run_trial(rng, P, N, sparsity) for _ in range(trials)])
            table[row] = outcomes.mean(axis=0)
        fractions[sparsity] = table
    return fractions


def plot(fractions: dict, samples, N: int, mu: float, trials: int, out: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    figure, axes = plt.subplots(figsize=(8, 5.6))
    colors = plt.rcParams["axes.prop_cycle"].by_key()["color"]
    for color, (sparsity, table) in zip(colors, fractions.items()):
        axes.plot(samples, table[:, 0], "-", color=color, linewidth=2.5, alpha=0.5,
                  label=f"s = {sparsity}: recovered")
        # Markers only: the LP curve lies on the recovery curve, and a line would hide it.
        axes.plot(samples, table[:, 1], "s", color=color, markersize=5, fillstyle="none",
                  label=f"s = {sparsity}: certified (LP)")
        axes.plot(samples, table[:, 2], ":^", color=color, markersize=4,
                  label=f"s = {sparsity}: certified (least squares)")
        line = theorem_3_samples(sparsity, N, mu)
        axes.axvline(line, color=color, linewidth=1, linestyle="-.")
        axes.annotate(f"Thm 3, s = {sparsity}", (line, 0.5), rotation=90, fontsize=7,
                      color=color, ha="right", va="center")
    axes.set_xscale("log")
    axes.set_xlabel("samples P")
    axes.set_ylabel(f"fraction of {trials} trials")
    axes.set_ylim(-0.03, 1.03)
    axes.set_title(f"Exact recovery of an s-sparse ReLU unit, N = {N}; dash-dot: Theorem 3, "
                   f"P = (11 s + 7) mu log N, mu = {mu:g}", fontsize=9)
    axes.grid(alpha=0.3)
    figure.legend(fontsize=7, ncol=3, loc="lower center")
    figure.tight_layout(rect=(0, 0.12, 1, 1))
    out.parent.mkdir(parents=True, exist_ok=True)
    figure.savefig(out, dpi=120)


def print_table(fractions: dict, samples, N: int, mu: float, trials: int) -> None:
    sparsities = list(fractions)
    header = "| P | " + " | ".join(f"s={s}: recovered / LP / LS" for s in sparsities) + " |"
    print(f"N = {N}, {trials} trials per point; fractions recovered / certified by LP / by least squares")
    print(header)
    print("|" + "---|" * (len(sparsities) + 1))
    for row, P in enumerate(samples):
        cells = [" / ".join(f"{value:.2f}" for value in fractions[s][row]) for s in sparsities]
        print(f"| {P} | " + " | ".join(cells) + " |")
    lines = ", ".join(f"s={s}: P={theorem_3_samples(s, N, mu):.0f}" for s in sparsities)
    print(f"Theorem 3 with mu = {mu:g}: {lines}")


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--N", type=int, default=100, help="inputs of the unit (default 100)")
    parser.add_argument("--sparsities", type=int, nargs="+", default=[2, 4, 8])
    parser.add_argument("--samples", type=int, nargs="+", default=list(DEFAULT_SAMPLES),
                        help="values of P to sweep")
    parser.add_argument("--trials", type=int, default=20, help="trials per point (default 20)")
    parser.add_argument("--mu", type=float, default=1.0,
                        help="Theorem 3's mu for the drawn line (default 1, the edge of its range)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--out", type=Path, default=Path("docs/img/phase_transition.png"))
    args = parser.parse_args(argv)

    start = time.perf_counter()
    fractions = sweep(args.N, args.sparsities, args.samples, args.trials, args.seed)
    elapsed = time.perf_counter() - start
    print_table(fractions, args.samples, args.N, args.mu, args.trials)
    print(f"{elapsed:.0f} s on {platform.machine()} ({platform.python_version()}); plot: {args.out}")
    plot(fractions, args.samples, args.N, args.mu, args.trials, args.out)


if __name__ == "__main__":
    main()
