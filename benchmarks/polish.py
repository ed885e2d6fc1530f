"""ADMM with and without polish against Clarabel on a trained layer, side by side in one process.

The layer: the spirals demo network's trained 200 x 200 hidden layer (its input is the first hidden
layer's activations on the 200 training points), Net-Trim in three forms: one budget for the layer
(rel_epsilon 0.03, the case issue 13 names), per-column budgets, and the squared loss. For each form
it prints the time, status, relative duality gap, violation, sparsity, and the objective's relative
difference to Clarabel's, and the ratio of Clarabel's time to ADMM+polish's.

Run: ``python benchmarks/polish.py`` (``--threads 1`` is the default: one torch thread holds up on
a shared machine where two collapse).
"""

from __future__ import annotations

import argparse
import platform
import time

import numpy as np

import convexnet as cn
from convexnet.demo import spirals, train_spirals_network


def hidden_layer(seed: int):
    X, labels = spirals(seed=seed)
    weights, biases = train_spirals_network(X, labels, hidden=200, steps=2500, seed=seed,
                                            log=lambda message: None)
    first = np.maximum(X @ weights[0] + biases[0], 0.0)
    second = np.maximum(first @ weights[1] + biases[1], 0.0)
    return first, second


def run(problem, backend, options):
    start = time.perf_counter()
    result = problem.solve(backend, solver_options=options)
    return result, time.perf_counter() - start


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--threads", type=int, default=1)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    print(f"machine: {platform.machine()}, {platform.processor() or 'cpu'}, python "
          f"{platform.python_version()}; ADMM on {args.threads} torch thread(s)")
    X, Y = hidden_layer(args.seed)
    forms = {"one budget (rel_epsilon 0.03)": dict(rel_epsilon=0.03),
             "per-column budgets": dict(rel_epsilon=0.03, split_budget=True),
             "squared loss (lam 10)": dict(lam=10.0)}
    print(f"{'form':>30} {'backend':>14} {'time (s)':>9} {'status':>18} {'rel. gap':>9} "
          f"{'violation':>9} {'zeros':>6} {'objective vs Clarabel':>22}")
    for name, budget in forms.items():
        problem = cn.NetTrimProblem(X, Y, bias=True, **budget)
        reference, clarabel_time = run(problem, "clarabel", None)
        rows = [("clarabel", reference, clarabel_time)]
        for label, options in (("admm", {"polish": False}), ("admm+polish", {"polish": True})):
            result, seconds = run(problem, "admm", {**options, "threads": args.threads})
            rows.append((label, result, seconds))
        for label, result, seconds in rows:
            difference = (result.objective - reference.objective) / reference.objective
            print(f"{name:>30} {label:>14} {seconds:>9.2f} {result.status:>18} "
                  f"{result.certificate.relative_gap:>9.1e} {result.violation:>9.1e} "
                  f"{result.sparsity:>6.1%} {difference:>22.1e}")
        print(f"{'':>30} Clarabel / (ADMM+polish) time: {clarabel_time / rows[-1][2]:.1f}x")


if __name__ == "__main__":
    main()
