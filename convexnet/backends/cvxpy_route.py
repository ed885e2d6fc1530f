"""Clarabel, SCS and OSQP through :meth:`SparsityProgram.to_cvxpy`.

Clarabel and SCS take every convex program of the catalog as CVXPY compiles it (second-order cones for
budgets and group norms, a semidefinite cone for the nuclear ball). OSQP takes quadratic programs only;
it reaches the rest by two documented reductions: a program whose one non-quadratic part is a
:class:`~convexnet.fits.Budget` by :mod:`convexnet.backends.osqp_budget` (the budget form equals the
squared-loss form at the right multiplier, found by a safeguarded root search), and a program with a
penalty that is not a quadratic program but has a prox (``GroupL1``) by
:mod:`convexnet.backends.osqp_splitting` (ADMM that splits those penalties and the budgets off, with
OSQP solving the quadratic rest). Sets that are not quadratic programs (``NuclearBall``) are refused.
"""

from __future__ import annotations

import numpy as np

from solvers import cvxpy_backend

from ..errors import InvalidInputError
from . import Solution

__all__ = ["CVXPYBackend", "backends", "solve_cvxpy"]

#: Failed statuses: no point to report.
NO_SOLUTION = {"solver_error", "unbounded", "infeasible"}


def solve_cvxpy(program, backend: str, options: dict, verbose: bool, *, warm_start: bool = False,
                lowered=None) -> Solution:
    """Lower ``program`` to CVXPY (or use ``lowered = (problem, W)``), solve it, read ``W`` and ``Lambda``."""
    problem, W = lowered if lowered is not None else program.to_cvxpy()
    info = cvxpy_backend.solve_problem(problem, backend, options=options, warm_start=warm_start,
                                       verbose=verbose)
    extra = {"raw_status": info.raw_status}
    if info.status in NO_SOLUTION or W.value is None:
        return Solution(None, None, info.status, info.solve_time, info.compile_time,
                        info.iterations, extra)
    dual = problem.constraints[0].dual_value
    dual = None if dual is None else -np.asarray(dual, dtype=float)
    return Solution(np.asarray(W.value, dtype=float), dual, info.status, info.solve_time,
                    info.compile_time, info.iterations, extra)


def check_options(backend: str, options: dict) -> None:
    """Options a solver would refuse, as :class:`InvalidInputError` before any work."""
    try:
        cvxpy_backend.check_options(backend, options)
    except (TypeError, ValueError) as error:
        raise InvalidInputError(f"solver_options for backend={backend!r}: {error}") from None


class CVXPYBackend:
    """One CVXPY solver as a backend (``clarabel``, ``scs`` or ``osqp``)."""

    def __init__(self, name: str):
        self.name = name

    def check_options(self, options: dict) -> None:
        """Options this solver would refuse, as :class:`InvalidInputError` before any work."""
        check_options(self.name, options)

    def accepts(self, program) -> str | None:
        if not program.convex:
            nonconvex = [type(term).__name__ for term in program.terms if not getattr(term, "convex", True)]
            return (f"{', '.join(nonconvex)} is nonconvex and {self.name} needs convex programs "
                    "(a prox method can take it)")
        if self.name != "osqp":
            return None
        from . import osqp_budget, osqp_splitting

        if osqp_splitting.split_penalties(program):
            return osqp_splitting.reason_to_refuse(program)
        return osqp_budget.reason_to_refuse(program)

    def solve(self, program, options: dict, verbose: bool = False, executor=None, *,
              columns=None) -> Solution:
        """Solve ``program`` in scaled units (:meth:`SparsityProgram.scaled`): separable programs
        column by column (:mod:`convexnet.backends.cvxpy_columns`), others whole. OSQP's splitting
        scales the program itself: its stopping rule is the certificate of the program as given.
        ``columns`` (separable programs): solve only these, in the whole program's units, so that
        a cluster task's columns come out as the in-process solve's do."""
        if self.name == "osqp":
            from . import osqp_splitting

            if osqp_splitting.split_penalties(program):
                part = program if columns is None else program.select_columns(columns)
                return osqp_splitting.solve(part, options, verbose)
        scaled, scaling = program.scaled()
        if columns is not None:
            scaled = scaled.select_columns(columns)
        solution = self._solve_scaled(scaled, options, verbose, executor)
        if solution.W is not None:
            solution.W = scaling.weights(solution.W)
            solution.dual = scaling.dual(solution.dual)
        solution.tolerances = {"gap_tol": 1e-6, "feas_tol": 1e-6}
        return solution

    def _solve_scaled(self, program, options, verbose, executor) -> Solution:
        if self.name == "osqp":
            from . import osqp_budget

            if osqp_budget.budgets(program):
                return osqp_budget.solve(program, options, verbose)
        if program.separable and program.M > 1:
            from .cvxpy_columns import solve_columns

            try:
                return solve_columns(program, self.name, options, verbose=verbose, executor=executor)
            except NotImplementedError:
                pass  # a term without a per-column lowering (raised while building, before solving)
        return solve_cvxpy(program, self.name, options, verbose)


def backends() -> list:
    """A backend for each CVXPY solver installed here."""
    return [CVXPYBackend(name) for name in cvxpy_backend.installed_backends()]
