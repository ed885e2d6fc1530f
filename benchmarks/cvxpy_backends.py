"""CVXPY backends on Net-Trim: compile and solve time per backend, and DPP reuse vs recompiling.

Three measurements, in one process on the same data:

1. one regularized Net-Trim column at N=784, P=10000 (paper 004's NN2-10K first layer), per backend;
2. a small whole layer, both forms, per backend;
3. a decoupled layer solved with ONE compiled DPP column problem vs a freshly built problem per
   column (what a naive loop does), with the ratio.

Run: ``python benchmarks/cvxpy_backends.py`` (``--quick`` for smaller sizes).
"""

from __future__ import annotations

import argparse
import platform
import statistics
import time

import cvxpy as cp
import numpy as np

import convexnet as cn
from convexnet.backends.cvxpy_columns import ColumnProblem
from solvers import cvxpy_backend


def relu_layer(P, N, M, seed):
    """Inputs with the statistics of ReLU activations (nonnegative, about half zeros)."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((P, 64)) @ rng.standard_normal((64, N)) / 8, 0)
    W = rng.standard_normal((N, M)) / np.sqrt(N)
    return X, np.maximum(X @ W - 0.1, 0)


def one_column(P, N, lam, backends):
    X, Y = relu_layer(P, N, 1, seed=0)
    prob = cn.NetTrimProblem(X, Y, lam=lam)
    scaled, scaling = prob.program.scaled()
    print(f"\n1. one regularized column, N={N}, P={P}, lam={lam}")
    print(f"{'backend':>9} {'compile (s)':>12} {'solve (s)':>10} {'status':>18} {'objective':>14}")
    for backend in backends:
        column = ColumnProblem(scaled)
        column.set_column(0)
        info = cvxpy_backend.solve_problem(column.problem, backend)
        W = scaling.weights(column.w.value[:, None])
        print(f"{backend:>9} {info.compile_time:>12.2f} {info.solve_time:>10.2f} {info.status:>18} "
              f"{prob.objective(W):>14.8g}")


def small_layer(P, N, M, backends):
    X, Y = relu_layer(P, N, M, seed=1)
    print(f"\n2. a small whole layer, N={N}, M={M}, P={P}")
    print(f"{'form':>12} {'backend':>9} {'compile (s)':>12} {'solve (s)':>10} {'wall (s)':>9} "
          f"{'status':>18} {'objective':>14}")
    for form, budget in (("constrained", dict(rel_epsilon=0.05)), ("regularized", dict(lam=10.0))):
        for backend in backends:
            res = cn.NetTrimProblem(X, Y, **budget).solve(backend=backend)
            print(f"{form:>12} {backend:>9} {res.compile_time:>12.2f} {res.solve_time:>10.2f} "
                  f"{res.wall_time:>9.2f} {res.status:>18} {res.objective:>14.8g}")


def dpp_reuse(P, N, M, repeats):
    X, Y = relu_layer(P, N, M, seed=2)
    prob = cn.NetTrimProblem(X, Y, lam=10.0)
    scaled, _ = prob.program.scaled()
    fit, below = scaled.fits

    def reuse():
        column = ColumnProblem(scaled)
        for m in range(M):
            column.set_column(m)
            cvxpy_backend.solve_problem(column.problem, "clarabel")

    def recompile():
        for m in range(M):
            u = cp.Variable(N)
            active = fit.mask[:, m]
            z = scaled.X @ u
            problem = cp.Problem(
                cp.Minimize(cp.norm1(u) + fit.weight * cp.sum_squares(z[active] - fit.target[active, m])),
                [z[~active] <= below.target[~active, m]])
            cvxpy_backend.solve_problem(problem, "clarabel")

    times = {"reuse": [], "recompile": []}
    for _ in range(repeats):
        for name, run in (("reuse", reuse), ("recompile", recompile)):
            start = time.perf_counter()
            run()
            times[name].append(time.perf_counter() - start)
    reuse_t, recompile_t = statistics.median(times["reuse"]), statistics.median(times["recompile"])
    print(f"\n3. DPP reuse vs recompiling, regularized layer N={N}, M={M}, P={P}, Clarabel, "
          f"median of {repeats}")
    print(f"   one DPP column problem reused: {reuse_t:.2f} s")
    print(f"   a new problem per column:      {recompile_t:.2f} s")
    print(f"   ratio recompile / reuse:       {recompile_t / reuse_t:.2f}x")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes, for a smoke run")
    parser.add_argument("--backends", default=",".join(cvxpy_backend.installed_backends()))
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    backends = args.backends.split(",")
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, "
          f"python {platform.python_version()}, cvxpy {cp.__version__}")
    if args.quick:
        one_column(1000, 100, 10.0, backends)
        small_layer(200, 20, 5, backends)
        dpp_reuse(200, 20, 10, 1)
    else:
        one_column(10000, 784, 10.0, backends)
        small_layer(1000, 50, 20, backends)
        dpp_reuse(1000, 50, 40, args.repeats)


if __name__ == "__main__":
    main()
