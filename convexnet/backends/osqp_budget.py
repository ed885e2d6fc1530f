r"""OSQP and budget constraints: the constrained form as a squared-loss form at the right multiplier.

OSQP solves quadratic programs; a :class:`~convexnet.fits.Budget` ``||(Z - Y)_mask|| <= epsilon`` is a
second-order cone. By Lagrange duality the budget program

.. math:: \min_W \; h(W) \quad \text{s.t.} \quad \|r(W)\| \le \epsilon

(``h`` the other terms) has the solution of

.. math:: \min_W \; h(W) + \lambda \|r(W)\|^2

for the multiplier ``lambda >= 0`` at which ``||r|| = epsilon`` (or ``lambda = 0`` when the budget is
not active). ``||r(lambda)||`` does not increase with ``lambda``, so ``lambda`` is found by a
safeguarded root search on ``log lambda``: a bracket grown by factors of 10, then the Illinois
variant of regula falsi with a bisection fallback, every step one warm-started QP of a single compiled
DPP problem. One scalar for a whole-matrix budget; one per column for per-column budgets (every
column's search runs in the same QPs, as the columns are independent there). Columns with
``epsilon = 0`` become equalities ``Z = Y`` on the mask.
"""

from __future__ import annotations

import numpy as np

from ..fits import Budget
from . import Solution
from .cvxpy_route import NO_SOLUTION, solve_cvxpy

__all__ = ["budgets", "is_quadratic", "reason_to_refuse", "solve"]

#: The search stops when every column's ``||r||`` is within this fraction of its budget (below it).
RELATIVE_TOL = 1e-8
MAX_STEPS = 80


def budgets(program) -> list:
    """The program's budget terms."""
    return [term for term in program.fits if isinstance(term, Budget)]


def is_quadratic(term, shape) -> bool:
    """Whether the CVXPY lowering of ``term`` (a penalty or a set on ``W`` of ``shape``) is a QP."""
    import cvxpy as cp

    W = cp.Variable(shape)
    if getattr(term, "is_constraint", False):
        return cp.Problem(cp.Minimize(0), term.constraints(W)).is_qp()
    return cp.Problem(cp.Minimize(term.cvxpy(W))).is_qp()


def _non_quadratic(program) -> list[str]:
    """Names of the terms on ``W`` whose CVXPY lowering is not quadratic-program representable."""
    shape = (program.X.shape[1], program.M)
    return [type(term).__name__ for term in program.weight_terms if not is_quadratic(term, shape)]


def reason_to_refuse(program) -> str | None:
    """Why OSQP cannot take ``program`` (None when it can, natively or by the reduction)."""
    fits = [type(term).__name__ for term in program.fits
            if not term.quadratic and term not in budgets(program)]
    if fits:
        return (f"the fit {', '.join(fits)} is not quadratic-program representable and OSQP takes "
                "quadratic programs only (budgets by a reduction)")
    others = _non_quadratic(program)
    if others:
        return (f"{', '.join(others)} is not quadratic-program representable (a second-order or "
                "semidefinite cone) and OSQP takes quadratic programs only")
    found = budgets(program)
    if len(found) > 1:
        return "OSQP's budget reduction takes one Budget term per program"
    if found and found[0].per_column and not program.separable:
        return ("per-column budgets need one multiplier per column, which OSQP's reduction finds "
                "only when the columns are independent (a term here couples them)")
    return None


class _Reduced:
    """The program with its budget replaced by ``lam * ||r||^2`` (``lam`` a CVXPY parameter)."""

    def __init__(self, program, budget: Budget):
        import cvxpy as cp

        self.budget = budget
        P, N, M = program.shape
        self.epsilon = np.broadcast_to(np.asarray(budget.epsilon, dtype=float), (M,)).copy() \
            if budget.per_column else np.asarray(float(budget.epsilon))
        zero = (self.epsilon == 0) if budget.per_column else np.full(M, float(budget.epsilon) == 0)
        self.zero = zero
        W = cp.Variable((N, M), name="W")
        Z = cp.Variable((P, M), name="Z")
        self.lam = cp.Parameter(M, nonneg=True, name="lam")
        constraints = [Z == program.X @ W]
        objective = 0.0
        for term in program.fits:
            if term is budget:
                continue
            expression, extra = term.cvxpy(Z)
            objective = objective + expression
            constraints += extra
        mask = budget.mask & ~zero[None, :]
        residual = cp.multiply(mask.astype(float), Z) - mask * budget.target
        objective = objective + self.lam @ cp.sum(cp.square(residual), axis=0)
        equal = budget.mask & zero[None, :]
        if equal.any():
            constraints.append(cp.multiply(equal.astype(float), Z) == equal * budget.target)
        for term in program.penalties:
            objective = objective + term.cvxpy(W)
        for term in program.sets:
            constraints += term.constraints(W)
        self.problem = cp.Problem(cp.Minimize(objective), constraints)
        self.W = W
        self.program = program

    def residual_norms(self, W) -> np.ndarray:
        """``||r||`` per column (per-column budgets) or of the whole matrix, repeated per column."""
        residual = np.where(self.budget.mask, self.program.X @ W - self.budget.target, 0.0)
        if self.budget.per_column:
            return np.linalg.norm(residual, axis=0)
        return np.full(residual.shape[1], np.linalg.norm(residual))

    def solve(self, lam: np.ndarray, options, verbose, warm: bool) -> Solution:
        self.lam.value = np.where(self.zero, 0.0, lam)
        return solve_cvxpy(self.program, "osqp", options, verbose, warm_start=warm,
                           lowered=(self.problem, self.W))


def solve(program, options: dict, verbose: bool = False) -> Solution:
    """Solve ``program`` (one Budget term) with OSQP by the multiplier search of the module."""
    (budget,) = budgets(program)
    reduced = _Reduced(program, budget)
    M = program.M
    epsilon = np.broadcast_to(reduced.epsilon, (M,))
    steps, solve_time, compile_time = 0, 0.0, 0.0

    def evaluate(lam):
        nonlocal steps, solve_time, compile_time
        solution = reduced.solve(lam, options, verbose, warm=steps > 0)
        steps += 1
        solve_time += solution.solve_time
        compile_time += solution.compile_time
        if solution.status in NO_SOLUTION:
            raise _Failed(solution.status)
        return solution, reduced.residual_norms(solution.W) - epsilon

    try:
        # lam = 0: when the budget is slack there, that point is the answer for those columns.
        best, excess = evaluate(np.zeros(M))
        active = (excess > RELATIVE_TOL * epsilon) & ~reduced.zero
        if not active.any():
            return _finish(best, "optimal", steps, solve_time, compile_time, np.zeros(M))
        low = np.zeros(M)
        high = np.where(active, _first_guess(program, budget), 0.0)
        high_excess = np.full(M, -np.inf)
        low_excess = excess.copy()
        # Grow the bracket until the residual is within budget in every active column.
        for _ in range(30):
            solution, excess = evaluate(high)
            grow = active & (excess > 0)
            done = active & ~grow
            high_excess = np.where(done, excess, high_excess)
            low = np.where(grow, high, low)
            low_excess = np.where(grow, excess, low_excess)
            if not grow.any():
                break
            high = np.where(grow, high * 10.0, high)
        else:
            raise _Failed("infeasible")
        # Each column's answer is its bracket's high end (within budget), kept from the solve that
        # gave it: the columns' multipliers are independent (one shared value for a whole budget).
        W, dual = solution.W.copy(), _dual_copy(solution.dual)
        first_dual = _dual_copy(best.dual)
        W[:, ~active] = best.W[:, ~active]
        if dual is not None and first_dual is not None:
            dual[:, ~active] = first_dual[:, ~active]
        side = np.zeros(M)
        tolerance = RELATIVE_TOL * np.maximum(epsilon, 1e-300)
        while steps < MAX_STEPS:
            if not (active & (high_excess < -tolerance)).any():
                break
            lam = _next_multiplier(low, high, low_excess, high_excess, active)
            solution, excess = evaluate(lam)
            above = excess > 0
            # Illinois: halve the weight of an end point kept twice, for superlinear convergence.
            low_excess = np.where(active & above, excess, np.where(active & (side == -1) & ~above,
                                                                   low_excess / 2, low_excess))
            high_excess = np.where(active & ~above, excess, np.where(active & (side == 1) & above,
                                                                     high_excess / 2, high_excess))
            low = np.where(active & above, lam, low)
            high = np.where(active & ~above, lam, high)
            side = np.where(above, 1, -1)
            improved = active & ~above
            W[:, improved] = solution.W[:, improved]
            if dual is not None and solution.dual is not None:
                dual[:, improved] = np.asarray(solution.dual)[:, improved]
            if np.array_equal(low[active], high[active]):  # the bracket closed in floating point
                break
        within = ~active | (high_excess >= -tolerance)
        best.W, best.dual = W, dual
        status = "optimal" if within.all() else "optimal_inaccurate"
        return _finish(best, status if best.status == "optimal" else best.status, steps, solve_time,
                       compile_time, high)
    except _Failed as failure:
        return Solution(None, None, failure.status, solve_time, compile_time, steps,
                        {"multiplier_steps": steps})


def _dual_copy(dual):
    return None if dual is None else np.array(dual, dtype=float, copy=True)


class _Failed(Exception):
    def __init__(self, status: str):
        super().__init__(status)
        self.status = status


def _first_guess(program, budget) -> np.ndarray:
    """A multiplier of the right order: penalty scale over residual scale (``1 / ||Y||`` per column)."""
    target = np.where(budget.mask, budget.target, 0.0)
    norm = np.linalg.norm(target, axis=0) if budget.per_column else np.linalg.norm(target)
    X_norm = np.linalg.norm(program.X) / max(np.sqrt(program.X.shape[1]), 1.0)
    return np.broadcast_to(X_norm / np.maximum(norm, 1e-300), (program.M,)).copy()


def _next_multiplier(low, high, low_excess, high_excess, active) -> np.ndarray:
    """Regula falsi on ``log lam`` within each bracket, bisection when it would leave the middle 98%."""
    safe_low = np.maximum(low, high * 1e-12)
    log_low, log_high = np.log(np.maximum(safe_low, 1e-300)), np.log(np.maximum(high, 1e-300))
    with np.errstate(divide="ignore", invalid="ignore"):
        fraction = low_excess / (low_excess - high_excess)
    fraction = np.where(np.isfinite(fraction) & (fraction > 0.01) & (fraction < 0.99), fraction, 0.5)
    return np.where(active, np.exp(log_low + fraction * (log_high - log_low)), high)


def _finish(solution: Solution, status, steps, solve_time, compile_time, lam) -> Solution:
    solution.status = status
    solution.solve_time, solution.compile_time = solve_time, compile_time
    solution.iterations = steps
    solution.info = {**solution.info, "multiplier": lam, "multiplier_steps": steps}
    solution.tolerances = {"gap_tol": 1e-6, "feas_tol": 1e-6}
    return solution
