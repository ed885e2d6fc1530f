"""Separable programs column by column: ONE compiled (DPP) column problem per chunk, re-solved.

When every term of a program is a sum of per-column terms, its ``M`` columns are independent
programs of ``N`` weights each. Each term lowers one column with CVXPY parameters
(``column_cvxpy(w, z)``); the column problem is compiled once and solved for every column after its
parameters are set, so compilation is paid once per chunk, not ``M`` times. With an executor, the
columns are cut into chunks of equal cost shipped whole to workers (a chunk is the program restricted to its
columns: plain arrays, picklable; the CVXPY objects are built on the worker).
"""

from __future__ import annotations

import os

import numpy as np

from solvers import cvxpy_backend

from . import Solution, worst_status

__all__ = ["ColumnProblem", "solve_columns"]

NO_SOLUTION = {"solver_error", "unbounded", "infeasible"}


class ColumnProblem:
    """The compiled column problem of a separable program: variables ``w`` (N,) and ``z`` (P,)."""

    def __init__(self, program):
        import cvxpy as cp

        P, N, _ = program.shape
        self.w = cp.Variable(N, name="w")
        self.z = cp.Variable(P, name="z")
        constraints = [self.z == program.X @ self.w]
        objective = 0.0
        self.setters = []
        for term in program.terms:
            expression, extra, set_column = term.column_cvxpy(self.w, self.z)
            objective = objective + expression
            constraints += extra
            self.setters.append(set_column)
        self.problem = cp.Problem(cp.Minimize(objective), constraints)

    def set_column(self, j: int) -> None:
        for set_column in self.setters:
            set_column(j)


def _solve_chunk(task):
    """Solve every column of one chunk: ``task = (program, backend, options, verbose)``."""
    program, backend, options, verbose = task
    column_problem = ColumnProblem(program)
    P, N, M = program.shape
    W, dual = np.zeros((N, M)), np.zeros((P, M))
    statuses, iterations = [], np.zeros(M, dtype=int)
    solve_time = compile_time = 0.0
    warm = backend in ("osqp", "scs")
    for j in range(M):
        column_problem.set_column(j)
        info = cvxpy_backend.solve_problem(column_problem.problem, backend, options=options,
                                           warm_start=warm and j > 0, verbose=verbose)
        statuses.append(info.status)
        solve_time += info.solve_time
        compile_time += info.compile_time
        iterations[j] = info.iterations or 0
        if info.status in NO_SOLUTION or column_problem.w.value is None:
            continue
        W[:, j] = column_problem.w.value
        dual[:, j] = -column_problem.problem.constraints[0].dual_value
    return W, dual, statuses, iterations, solve_time, compile_time


def solve_columns(program, backend: str, options: dict, *, verbose: bool = False,
                  executor=None) -> Solution:
    """Solve the separable ``program`` column by column with a CVXPY ``backend``.

    Parameters
    ----------
    program : SparsityProgram
        Separable (every term per column).
    backend : {"clarabel", "osqp", "scs"}
    options : dict
        Solver keywords.
    executor : concurrent.futures.Executor, optional
        Runs chunks of columns as jobs, as many as the work pays for
        (:func:`convexnet.cluster.column_ranges`, a few per worker); default: one chunk in-process.

    Returns
    -------
    Solution
        ``W`` and the dual per column; the status is the worst column's, and ``info["column_status"]``
        lists them all.
    """
    P, N, M = program.shape
    bounds = [(0, M)]
    if executor is not None:
        from ..cluster import column_ranges

        threads = getattr(executor, "_max_workers", None) or os.cpu_count() or 1
        bounds = column_ranges(P, N, M, threads)
    tasks = [(program if (a, b) == (0, M) else program.select_columns(np.arange(a, b)), backend,
              options, verbose) for a, b in bounds]
    if executor is None:
        outputs = [_solve_chunk(task) for task in tasks]
    else:
        outputs = [future.result() for future in [executor.submit(_solve_chunk, task) for task in tasks]]
    statuses = [status for out in outputs for status in out[2]]
    status = worst_status(statuses)
    solve_time = sum(out[4] for out in outputs)
    compile_time = sum(out[5] for out in outputs)
    iterations = np.concatenate([out[3] for out in outputs])
    info = {"column_status": statuses, "chunks": len(tasks)}
    if status in NO_SOLUTION:
        return Solution(None, None, status, solve_time, compile_time, iterations, info)
    return Solution(np.hstack([out[0] for out in outputs]), np.hstack([out[1] for out in outputs]),
                    status, solve_time, compile_time, iterations, info)
