"""Batched graph-form ADMM against Clarabel (through CVXPY), side by side, on Net-Trim layers.

Three cases (issue 4):

1. ``layer``: a layer shaped like paper 004's NN2-10K first layer (P=10000 samples, N=784, M=300) on the
   CPU, in the constrained form with per-column budgets and in the regularized form. ADMM solves the
   whole layer; Clarabel solves a few sampled columns, whose median time is extrapolated to M columns.
   Target: ADMM at least 100x faster, at the same accuracy (objective and violation printed side by
   side on the sampled columns).
2. ``spirals``: the spirals demo's 200 x 200 hidden layer (P=200, N=200, M=200), coupled budget.
   Target: ADMM under 1 s. Clarabel on the whole coupled layer, within a time limit.
3. ``gpu``: N=1568, M=512, P=60000 on CUDA to 1e-4. Target: under 10 s. Skipped without CUDA.

The data have the statistics of ReLU activations: ``X = relu(G @ R / sqrt(N))`` with Gaussian ``G`` and
``R`` (nonnegative, about half zeros) and targets ``Y = relu(X @ W0)`` with Gaussian ``W0 / sqrt(N)``.
Each layer is a ``cn.NetTrimProblem``; ADMM solves its ``to_graph_form()`` directly
(``solvers.admm.solve_graph_form``: no cleaning, no certificate), and Clarabel a CVXPY statement written
from the same data. Both are judged by the graph form's ``objective`` and ``violation``.

Run ``python benchmarks/admm.py`` for everything, ``--case layer --samples 2000 --features 196
--columns 40`` for a quick run. Case 2 times one and two torch threads side by side (small matrices
can lose more to thread synchronization than they gain). The machine's load average is printed: the
dev box is shared.
"""

from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import cvxpy as cp
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import convexnet as cn  # noqa: E402
from solvers.admm import solve_graph_form  # noqa: E402


def relu_layer(P: int, N: int, M: int, seed: int = 0):
    """Activations X (P, N) >= 0 and targets Y = relu(X W0) (P, M)."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((P, N)) @ (rng.standard_normal((N, N)) / np.sqrt(N)), 0.0)
    Y = np.maximum(X @ (rng.standard_normal((N, M)) / np.sqrt(N)), 0.0)
    return X, Y


def column_problems(X, Y, *, rel_epsilon: float, lam: float) -> dict[str, cn.NetTrimProblem]:
    """The two column-separable Net-Trim forms: per-column budgets and the regularized form.

    Omega is ``Y > 0`` and ``Z <= 0`` off it (the problem's defaults); ADMM gets each one's
    ``to_graph_form()``.
    """
    budgets = rel_epsilon * np.linalg.norm(Y, axis=0)
    return {"constrained (column budgets)": cn.NetTrimProblem(X, Y, epsilon=budgets),
            f"regularized (lam={lam:g})": cn.NetTrimProblem(X, Y, lam=lam)}


def clarabel_program(problem: cn.NetTrimProblem, columns) -> tuple[cp.Problem, cp.Variable]:
    """The layer's program restricted to ``columns``, as CVXPY states it (one block per column).

    Written from the problem's data (``X_design``, ``Y``, ``active``, ``V``, its budgets or ``lam``),
    not from its lowering, so that Clarabel's time is that of the plain statement.
    """
    X, Y, active, V = problem.X_design, problem.Y, problem.active, problem.V
    W = cp.Variable((X.shape[1], len(columns)))
    weights = np.outer(problem.penalty_weights, np.ones(len(columns)))
    objective = cp.sum(cp.multiply(weights, cp.abs(W)))
    constraints, residuals = [], []
    for j, m in enumerate(columns):
        on, off = active[:, m], ~active[:, m]
        residual = X[on] @ W[:, j] - Y[on, m]
        residuals.append(residual)
        if problem.column_budgets is not None:
            constraints.append(cp.norm(residual, 2) <= problem.column_budgets[m])
        if off.any():
            constraints.append(X[off] @ W[:, j] <= V[off, m])
    if problem.form == "regularized":
        objective = objective + problem.lam * cp.sum_squares(cp.hstack(residuals))
    elif problem.column_budgets is None:
        constraints.append(cp.norm(cp.hstack(residuals), 2) <= problem.epsilon)
    return cp.Problem(cp.Minimize(objective), constraints), W


def solve_clarabel(problem: cn.NetTrimProblem, columns, time_limit: float | None = None):
    """Solve the program on ``columns`` with Clarabel; returns (W or None, seconds incl. compile, status)."""
    start = time.perf_counter()
    cvxpy_problem, W = clarabel_program(problem, columns)
    options = {} if time_limit is None else {"time_limit": time_limit}
    try:
        cvxpy_problem.solve(solver=cp.CLARABEL, **options)
    except cp.error.SolverError:
        return None, time.perf_counter() - start, "solver_error"
    return W.value, time.perf_counter() - start, cvxpy_problem.status


def case_layer(args) -> list[str]:
    P, N, M = args.samples, args.features, args.columns
    X, Y = relu_layer(P, N, M, seed=args.seed)
    lines = [f"### Case 1: layer P={P}, N={N}, M={M}, ADMM {args.dtype} on the CPU",
             f"(active fraction {(Y > 0).mean():.2f}; Clarabel on {args.clarabel_columns} sampled "
             f"columns, median time x {M})", ""]
    header = ("| form | ADMM time (s) | ADMM status, iterations (median / max) | Clarabel time per "
              "column (s, median) | Clarabel extrapolated (s) | speedup | objective rel. diff "
              "(ADMM vs Clarabel, sampled columns) | violation ADMM / Clarabel |")
    lines += [header, "|" + "---|" * 8]
    sampled = np.random.default_rng(args.seed + 1).choice(M, size=args.clarabel_columns, replace=False)
    for name, problem in column_problems(X, Y, rel_epsilon=args.rel_epsilon, lam=args.lam).items():
        form = problem.to_graph_form()
        admm_times, result = [], None
        for _ in range(args.repeats):
            result = solve_graph_form(form, dtype=args.dtype)
            admm_times.append(result.setup_time + result.solve_time)
        admm_time = statistics.median(admm_times)
        clarabel_times, clarabel_W = [], []
        for m in sampled:
            W, seconds, status = solve_clarabel(problem, [m])
            clarabel_times.append(seconds)
            clarabel_W.append(W[:, 0] if W is not None else np.full(N, np.nan))
            print(f"  clarabel column {m}: {seconds:.1f} s, {status}", flush=True)
        clarabel_column = statistics.median(clarabel_times)
        extrapolated = clarabel_column * M
        # The sampled columns' own program (the forms are separable), to judge both solvers on it.
        judged = problem.program.select_columns(sampled).to_graph_form()
        admm_W = np.asarray(result.W, dtype=np.float64)
        reference = np.stack(clarabel_W, axis=1)
        admm_objective, clarabel_objective = judged.objective(admm_W[:, sampled]), judged.objective(reference)
        # Violations on the whole layer's scale (a bound's part divides by the layer's max |Y|),
        # with Clarabel's columns put in place of ADMM's.
        with_reference = admm_W.copy()
        with_reference[:, sampled] = reference
        admm_violation = form.violation(admm_W, per_column=True)[sampled].max()
        clarabel_violation = form.violation(with_reference, per_column=True)[sampled].max()
        lines.append(
            f"| {name} | {admm_time:.1f} | {result.status}, {np.median(result.iterations):.0f} / "
            f"{result.iterations.max()} | {clarabel_column:.1f} | {extrapolated:.0f} | "
            f"{extrapolated / admm_time:.0f}x | "
            f"{(admm_objective - clarabel_objective) / clarabel_objective:+.1e} | "
            f"{admm_violation:.1e} / {clarabel_violation:.1e} |")
        print(lines[-1], flush=True)
    return lines


def case_spirals(args) -> list[str]:
    P = N = M = 200
    X, Y = relu_layer(P, N, M, seed=args.seed)
    # One budget for the whole layer, rel_epsilon ||Y||_F: the columns are coupled.
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=args.rel_epsilon)
    form = problem.to_graph_form()
    # One and two torch threads, alternated in one run (a shared box's load moves over time).
    times, result = {1: [], 2: []}, None
    for _ in range(max(args.repeats, 7)):
        for threads in times:
            result = solve_graph_form(form, dtype=args.dtype, threads=threads)
            times[threads].append(result.setup_time + result.solve_time)
    admm_time = min(statistics.median(values) for values in times.values())
    lines = [f"### Case 2: spirals-shaped hidden layer P=N=M=200, coupled budget, ADMM {args.dtype}", "",
             "| solver | time (s) | status | objective | violation |", "|---|---|---|---|---|"]
    for threads, values in times.items():
        lines.append(f"| ADMM, {threads} thread(s) (median of {len(values)}, fastest "
                     f"{min(values):.3f}) | {statistics.median(values):.3f} | {result.status}, "
                     f"{result.iterations.max()} iterations | {result.objective:.6g} | "
                     f"{result.violation:.1e} |")
    print(lines[-1], flush=True)
    W, seconds, status = solve_clarabel(problem, list(range(M)), time_limit=args.clarabel_limit)
    if W is not None and status in ("optimal", "optimal_inaccurate"):
        lines.append(f"| Clarabel, whole coupled layer | {seconds:.1f} | {status} | "
                     f"{form.objective(W):.6g} | {form.violation(W):.1e} |")
        lines.append("")
        lines.append(f"Speedup {seconds / admm_time:.0f}x; objective rel. diff (ADMM vs Clarabel) "
                     f"{(result.objective - form.objective(W)) / form.objective(W):+.1e}.")
    else:
        lines.append(f"| Clarabel, whole coupled layer | > {seconds:.0f} (limit) | {status} | | |")
    print("\n".join(lines[-3:]), flush=True)
    return lines


def case_gpu(args) -> list[str]:
    if not torch.cuda.is_available():
        print("Case 3 (GPU, N=1568, M=512, P=60000): skipped (no CUDA)")
        return ["### Case 3: GPU N=1568, M=512, P=60000", "", "skipped (no CUDA)"]
    P, N, M = 60000, 1568, 512
    X, Y = relu_layer(P, N, M, seed=args.seed)
    lines = [f"### Case 3: GPU ({torch.cuda.get_device_name()}) P={P}, N={N}, M={M}, float32", "",
             "| form | time (s) incl. setup | setup (s) | status | iterations (median / max) | "
             "violation |", "|---|---|---|---|---|---|"]
    for name, problem in column_problems(X, Y, rel_epsilon=args.rel_epsilon, lam=args.lam).items():
        form = problem.to_graph_form()
        solve_graph_form(form, dtype="float32", device="cuda", max_iterations=20)  # warm-up
        result = solve_graph_form(form, dtype="float32", device="cuda")
        lines.append(f"| {name} | {result.setup_time + result.solve_time:.2f} | {result.setup_time:.2f} "
                     f"| {result.status} | {np.median(result.iterations):.0f} / "
                     f"{result.iterations.max()} | {result.violation:.1e} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", choices=("all", "layer", "spirals", "gpu"), default="all")
    parser.add_argument("--samples", type=int, default=10000, help="P of case 1")
    parser.add_argument("--features", type=int, default=784, help="N of case 1")
    parser.add_argument("--columns", type=int, default=300, help="M of case 1")
    parser.add_argument("--clarabel-columns", type=int, default=3, help="columns Clarabel solves (case 1)")
    parser.add_argument("--clarabel-limit", type=float, default=120.0, help="seconds for Clarabel (case 2)")
    parser.add_argument("--rel-epsilon", type=float, default=0.05)
    parser.add_argument("--lam", type=float, default=0.1, help="weight of the regularized form")
    parser.add_argument("--dtype", choices=("float32", "float64"), default="float32")
    parser.add_argument("--repeats", type=int, default=1, help="ADMM runs per form (median)")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=None,
                        help="torch CPU threads (default: torch's); one is faster for small layers")
    args = parser.parse_args(argv)
    if args.threads is not None:
        torch.set_num_threads(args.threads)
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads, load average "
          f"{os.getloadavg()[0]:.1f} at start", flush=True)
    lines = []
    for case, run in (("layer", case_layer), ("spirals", case_spirals), ("gpu", case_gpu)):
        if args.case in ("all", case):
            lines += run(args) + [""]
    print(f"load average {os.getloadavg()[0]:.1f} at end\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
