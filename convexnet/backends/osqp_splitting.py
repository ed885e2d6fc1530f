r"""OSQP and penalties that are not quadratic programs: ADMM with OSQP as the inner solver.

OSQP solves quadratic programs. A penalty such as :class:`~convexnet.penalties.GroupL1`
(``sum_g ||W_g||_2``, a second-order cone) is not one, but it has a closed-form prox. This module
splits such penalties off the rest of the program and solves

.. math::

    \min_{W, V_i, R_b} \; q(W) + \sum_i p_i(V_i) + \sum_b I_{B_b}(R_b)
    \quad \text{s.t.} \quad W = V_i, \quad \operatorname{mask}_b \odot (X W) = R_b,

by the alternating direction method of multipliers (ADMM), where

- ``q`` is every quadratic-program-representable term (squared fits, ``Below``, l1 penalties, the
  polyhedral sets), kept together in one quadratic program;
- ``p_i`` are the split penalties, reached through ``p_i.prox`` (the group soft threshold for
  ``GroupL1``: exact zero groups);
- ``B_b`` are the budget balls ``{R : ||(R - Y)_mask|| <= epsilon}`` of the
  :class:`~convexnet.fits.Budget` terms (one ball, or one per column), reached through their
  Euclidean projection, which is closed form. The budget is thus handled exactly inside the same
  loop: nesting the splitting inside the multiplier search of :mod:`convexnet.backends.osqp_budget`
  (which serves programs without a split penalty) would cost one converged splitting per multiplier
  step. The splitting also takes several budgets, and per-column budgets with terms that couple the
  columns.

One iteration (scaled form, over-relaxation ``alpha``; ``U_i``, ``T_b`` the scaled duals):

.. math::

    W^+ &= \arg\min_W \; q(W) + \sum_i \tfrac{\rho_W}{2} \|W - V_i + U_i\|^2
           + \sum_b \tfrac{\rho_Z}{2} \|\operatorname{mask}_b \odot (X W) - R_b + T_b\|^2, \\
    V_i^+ &= \operatorname{prox}_{p_i / \rho_W}(\hat W + U_i), \quad
    R_b^+ = \Pi_{B_b}(\hat Z_b + T_b), \\
    U_i^+ &= U_i + \hat W - V_i^+, \quad T_b^+ = T_b + \hat Z_b - R_b^+,

with ``hat W = alpha W+ + (1 - alpha) V_i``. The ``W``-step is one compiled DPP quadratic program
whose parameters are ``rho_W``, ``rho_Z`` and the linear terms: OSQP re-solves it warm-started, and
refactors only when a ``rho`` changes. The quadratic program is built from the program in
:meth:`SparsityProgram.scaled` units (CVXPY's lowering keeps auxiliary variables in the data's units,
which OSQP's absolute tolerances must not see), normalized further (``W`` and ``Z`` over their
root-mean-square sizes at a least-squares reference ``W_ref``, the objective over its size at ``0``
and ``W_ref``), so that the iterates do not depend on the data's units. ``rho_W`` and ``rho_Z`` start
where each augmented term is of the objective's size and are balanced separately every
``ADAPT_EVERY`` iterations by OSQP's rule ``rho <- rho * sqrt(primal / dual)`` on relative residuals.

Stopping: the duality-gap certificate (:func:`convexnet.certificates.programs.certify_program`) is both
the stopping rule and the final test. Once the relative residuals are below ``CHECK_BELOW`` it is
evaluated every ``CHECK_EVERY`` iterations, at the reported point and the ``W``-step's dual of
``Z = X W``; the loop stops when the relative gap and the relative violation are within
``GAP_TOL`` and ``FEAS_TOL``. The reported ``W`` is the first split penalty's ``V`` (exact zero
groups), with the entries that any other split penalty's ``V`` holds at exactly zero set to zero.
Every candidate is certified against the program as given (mapped back from the scaled units), so
that the stopping rule is exactly the certificate :meth:`SparsityProgram.solve` attaches (relative
gap and violation are not unit-free). A run is ``"optimal"`` only when the certificate holds; a run
not certified after ``FEASIBILITY_CHECK_AFTER`` iterations asks one more QP whether the budgets can be
met at all (ADMM does not converge on an infeasible program); see :func:`solve` for the statuses.

Cost: one warm-started OSQP solve (a few milliseconds for a layer of a few hundred weights) and one
prox per iteration; 20 to 150 iterations (0.1 to 0.5 s) for the group programs of the test battery.
"""

from __future__ import annotations

from dataclasses import dataclass, replace

import numpy as np

from ..fits import BUDGET_SCALE_FLOOR
from ..certificates.programs import certify_program
from . import Solution
from .cvxpy_route import NO_SOLUTION, solve_cvxpy
from .osqp_budget import budgets, is_quadratic

__all__ = ["split_penalties", "reason_to_refuse", "solve", "GAP_TOL", "FEAS_TOL"]

#: The certificate's tolerances at which the loop stops (relative gap, relative violation).
GAP_TOL = 1e-6
FEAS_TOL = 1e-6
MAX_ITERATIONS = 5000
#: Over-relaxation of the split copies (1.5 to 1.8 is the usual range that speeds ADMM up).
ALPHA = 1.6
ADAPT_EVERY = 10
#: ``rho`` changes only when the residuals are this far out of balance (OSQP uses 5 as well).
ADAPT_RATIO = 5.0
RHO_RANGE = 1e6
CHECK_EVERY = 10
CHECK_BELOW = 1e-4
#: The loop stops without a certificate when the residuals reach rounding (``RESIDUAL_TOL``) or
#: have not halved in ``STALL_ITERATIONS`` iterations: the iterate no longer moves.
RESIDUAL_TOL = 1e-13
STALL_ITERATIONS = 200
#: A run not certified after this many iterations asks whether the budgets can be met at all (most
#: feasible programs of the battery are certified by then or soon after; one extra QP if not).
FEASIBILITY_CHECK_AFTER = 50


def split_penalties(program) -> list:
    """The penalties OSQP reaches only by splitting: convex, with a prox, not quadratic programs."""
    shape = (program.X.shape[1], program.M)
    return [term for term in program.penalties if not is_quadratic(term, shape)]


def reason_to_refuse(program) -> str | None:
    """Why the splitting cannot take ``program`` (None when it can): a set that is not a QP."""
    shape = (program.X.shape[1], program.M)
    fits = [type(term).__name__ for term in program.fits if not term.quadratic and term not in budgets(program)]
    if fits:
        return (f"the fit {', '.join(fits)} is not quadratic-program representable and OSQP takes "
                "quadratic programs only (budgets by a reduction)")
    others = [type(term).__name__ for term in program.sets if not is_quadratic(term, shape)]
    if others:
        return (f"{', '.join(others)} is not quadratic-program representable (a second-order or "
                "semidefinite cone) and OSQP takes quadratic programs only (penalties with a prox "
                "are split off; sets are not)")
    return None


@dataclass(frozen=True)
class SplittingState:
    """The ADMM iterate in normalized units: split copies, scaled duals and the two ``rho``."""

    V: tuple
    U: tuple
    R: tuple
    T: tuple
    rho_w: float
    rho_z: float


@dataclass(frozen=True)
class Residuals:
    """Relative primal and dual residuals of the weight splits (``w``) and the budget splits (``z``)."""

    primal_w: float
    dual_w: float
    primal_z: float
    dual_z: float

    @property
    def largest(self) -> float:
        return max(self.primal_w, self.dual_w, self.primal_z, self.dual_z)


class SplitQP:
    r"""The ``W``-step as one compiled CVXPY problem, in normalized units.

    Variables ``W_hat = W / w_scale`` (N, M) and ``Z_hat = Z / z_scale`` (P, M); objective (over
    ``objective_scale``) ``q(W)`` plus ``(k rho_W / 2) ||W_hat||^2 - <C, W_hat>`` and
    ``(rho_Z / 2) ||mask Z_hat||^2 - <D, Z_hat>`` with parameters ``rho_W``, ``rho_Z``, ``C``, ``D``
    (``k`` split penalties; ``mask`` the union of the budgets' masks). ``constraints[0]`` is
    ``Z_hat = (w_scale / z_scale) X W_hat``; the program's ``Lambda`` is its dual (negated) times
    ``objective_scale / z_scale``.
    """

    def __init__(self, program, splits: list, balls: list):
        import cvxpy as cp

        P, N, M = program.shape
        self.program, self.splits, self.balls = program, splits, balls
        self.w_scale, self.z_scale, self.objective_scale = _scales(program)
        W_hat = cp.Variable((N, M), name="W_hat")
        Z_hat = cp.Variable((P, M), name="Z_hat")
        objective, constraints = _quadratic_part(program, W_hat, Z_hat, self, splits, balls)
        self.rho_w = cp.Parameter(nonneg=True, name="rho_w")
        self.rho_z = cp.Parameter(nonneg=True, name="rho_z")
        self.C = cp.Parameter((N, M), name="C", value=np.zeros((N, M)))
        self.D = cp.Parameter((P, M), name="D", value=np.zeros((P, M)))
        # Expanded squares: the iterates enter the linear term only, so a new iterate changes OSQP's
        # q alone (no refactorization); a new rho changes P.
        augmented = (len(splits) / 2.0) * self.rho_w * cp.sum_squares(W_hat) - cp.sum(
            cp.multiply(self.C, W_hat))
        if balls:
            self.mask = np.logical_or.reduce([ball.mask for ball in balls])
            augmented = augmented + 0.5 * self.rho_z * cp.sum_squares(
                cp.multiply(self.mask.astype(float), Z_hat)) - cp.sum(cp.multiply(self.D, Z_hat))
        self.problem = cp.Problem(cp.Minimize(objective + augmented), constraints)
        self.W_hat = W_hat
        self.steps = 0
        # rho such that each augmented term is of the objective's size at the reference point: the
        # objective is 1 there, and the reference has entries of size 1 (normalized units).
        self.rho_w_start = 1.0 / (N * M)
        self.rho_z_start = 1.0 / max(int(self.mask.sum()), 1) if balls else 1.0

    def solve(self, state: SplittingState, options: dict) -> Solution:
        """The ``W``-step at ``state``: ``W`` and ``Lambda`` in the program's units."""
        self.rho_w.value, self.rho_z.value = state.rho_w, state.rho_z
        self.C.value = state.rho_w * sum(V - U for V, U in zip(state.V, state.U))
        if self.balls:
            pulls = sum(R - T for R, T in zip(state.R, state.T))
            self.D.value = state.rho_z * np.where(self.mask, pulls, 0.0)
        solution = solve_cvxpy(self.program, "osqp", options, False, warm_start=self.steps > 0,
                               lowered=(self.problem, self.W_hat))
        self.steps += 1
        if solution.W is not None:
            solution.W = solution.W * self.w_scale
        if solution.dual is not None:
            solution.dual = solution.dual * (self.objective_scale / self.z_scale)
        return solution

    def prox_step(self, term, points: np.ndarray, rho_w: float) -> np.ndarray:
        r"""``argmin_V p(w V) / s + (rho_W / 2) ||V - points||^2`` (``w``, ``s`` the scales)
        ``= prox_{t p}(w points) / w`` with ``t = w^2 / (rho_W s)``."""
        step = self.w_scale ** 2 / (rho_w * self.objective_scale)
        return np.asarray(term.prox(self.w_scale * points, step), dtype=float) / self.w_scale

    def project_ball(self, ball, points: np.ndarray) -> np.ndarray:
        """The Euclidean projection of ``points`` (normalized ``Z``) onto ``ball``'s budget on its
        mask (entries off the mask are left as they are; they are not part of this split)."""
        Z = self.z_scale * points
        residual = np.where(ball.mask, Z - ball.target, 0.0)
        norms = np.linalg.norm(residual, axis=0) if ball.per_column else np.linalg.norm(residual)
        shrink = np.minimum(1.0, ball.epsilon / np.maximum(norms, np.finfo(float).tiny))
        projected = np.where(ball.mask, ball.target + residual * shrink, Z)
        return projected / self.z_scale


def _quadratic_part(program, W_hat, Z_hat, scales, splits, balls):
    """``q`` over the objective's scale, and the constraints (``Z = X W`` first), on the normalized
    variables: every term but the split penalties and the budgets, through its CVXPY lowering."""
    W, Z = scales.w_scale * W_hat, scales.z_scale * Z_hat
    constraints = [Z_hat == (scales.w_scale / scales.z_scale) * program.X @ W_hat]
    objective = 0.0
    for term in program.fits:
        if not any(term is ball for ball in balls):
            expression, extra = term.cvxpy(Z)
            objective = objective + expression
            constraints += extra
    for term in program.penalties:
        if not any(term is split for split in splits):
            objective = objective + term.cvxpy(W)
    for term in program.sets:
        constraints += term.constraints(W)
    return objective / scales.objective_scale, constraints


def _scales(program) -> tuple[float, float, float]:
    """``(w_scale, z_scale, objective_scale)``: root-mean-square sizes of ``W_ref`` and ``X W_ref``
    for the least-squares ``W_ref`` of the fits' targets, and the objective at ``0`` plus at
    ``W_ref`` (1 wherever a size is 0)."""
    X = program.X
    target = sum(np.where(term.mask, term.target, 0.0) for term in program.fits)
    W_ref = np.linalg.lstsq(X, target, rcond=None)[0]
    Z_ref = X @ W_ref
    w_scale = float(np.sqrt(np.mean(W_ref ** 2)))
    z_scale = float(np.sqrt(np.mean(Z_ref ** 2)))
    if not (np.isfinite(w_scale) and w_scale > 0 and z_scale > 0):
        w_scale = 1.0
        z_scale = float(np.linalg.norm(X, 2))
        W_ref = np.ones_like(W_ref)
    objective = program.objective(np.zeros_like(W_ref)) + program.objective(W_ref)
    objective = objective if np.isfinite(objective) and objective > 0 else 1.0
    return w_scale, z_scale, objective


def first_state(qp: SplitQP) -> SplittingState:
    """Zero copies and scaled duals, ``rho`` at its start."""
    P, N, M = qp.program.shape
    zeros_w = tuple(np.zeros((N, M)) for _ in qp.splits)
    zeros_z = tuple(np.zeros((P, M)) for _ in qp.balls)
    return SplittingState(zeros_w, zeros_w, zeros_z, zeros_z, qp.rho_w_start, qp.rho_z_start)


def splitting_step(qp: SplitQP, state: SplittingState, W_hat: np.ndarray):
    """One ADMM step after the ``W``-step gave ``W_hat`` (normalized): the new state and residuals."""
    Z_hat = (qp.w_scale / qp.z_scale) * (qp.program.X @ W_hat)
    V, U, R, T = [], [], [], []
    weight_parts = np.zeros(4)
    for term, V_old, U_old in zip(qp.splits, state.V, state.U):
        relaxed = ALPHA * W_hat + (1.0 - ALPHA) * V_old
        V.append(qp.prox_step(term, relaxed + U_old, state.rho_w))
        U.append(U_old + relaxed - V[-1])
        weight_parts += _residual_parts(W_hat, V[-1], V_old, U[-1])
    output_parts = np.zeros(4)
    for ball, R_old, T_old in zip(qp.balls, state.R, state.T):
        Z_ball = np.where(ball.mask, Z_hat, 0.0)
        relaxed = ALPHA * Z_ball + (1.0 - ALPHA) * R_old
        R.append(np.where(ball.mask, qp.project_ball(ball, relaxed + T_old), 0.0))
        T.append(T_old + relaxed - R[-1])
        output_parts += _residual_parts(Z_ball, R[-1], R_old, T[-1])
    residuals = Residuals(*_relative(weight_parts, state.rho_w, qp.rho_w_start),
                          *_relative(output_parts, state.rho_z, qp.rho_z_start))
    return replace(state, V=tuple(V), U=tuple(U), R=tuple(R), T=tuple(T)), residuals


def _residual_parts(point, copy, copy_old, scaled_dual) -> np.ndarray:
    """Squared norms ``||point - copy||, max(||point||, ||copy||), ||copy - copy_old||, ||U||``."""
    return np.array([np.sum((point - copy) ** 2), max(np.sum(point ** 2), np.sum(copy ** 2)),
                     np.sum((copy - copy_old) ** 2), np.sum(scaled_dual ** 2)])


def _relative(parts: np.ndarray, rho: float, rho_start: float) -> tuple[float, float]:
    """OSQP's relative residuals ``||W - V|| / max(||W||, ||V||)`` and
    ``rho ||V - V_old|| / ||rho U||``, with floors of one unit (normalized units: the reference has
    entries of size 1 and ``rho_start`` is the dual's unit) so that a zero solution or a zero
    penalty does not divide by zero."""
    primal = np.sqrt(parts[0]) / max(np.sqrt(parts[1]), 1.0)
    dual = rho * np.sqrt(parts[2]) / max(rho * np.sqrt(parts[3]), rho_start)
    return float(primal), float(dual)


def rebalance(state: SplittingState, residuals: Residuals, qp: SplitQP) -> SplittingState:
    """OSQP's rule per split: ``rho <- rho sqrt(primal / dual)`` when out of balance by more than
    ``ADAPT_RATIO`` (and within ``RHO_RANGE`` of its start); the scaled duals are rescaled so that
    ``rho U`` is unchanged."""
    rho_w = _adapted(state.rho_w, qp.rho_w_start, residuals.primal_w, residuals.dual_w)
    rho_z = _adapted(state.rho_z, qp.rho_z_start, residuals.primal_z, residuals.dual_z)
    return replace(state, rho_w=rho_w, rho_z=rho_z,
                   U=tuple(U * (state.rho_w / rho_w) for U in state.U),
                   T=tuple(T * (state.rho_z / rho_z) for T in state.T))


def _adapted(rho: float, start: float, primal: float, dual: float) -> float:
    if primal <= 0 or dual <= 0:
        return rho
    factor = np.sqrt(primal / dual)
    if 1.0 / ADAPT_RATIO <= factor <= ADAPT_RATIO:
        return rho
    return float(np.clip(rho * factor, start / RHO_RANGE, start * RHO_RANGE))


def reported_weights(qp: SplitQP, state: SplittingState) -> np.ndarray:
    """The first split copy in the program's units, zero wherever any split copy is exactly zero."""
    W = state.V[0] * qp.w_scale
    for V in state.V[1:]:
        W = np.where(V == 0, 0.0, W)
    return W


def solve(program, options: dict, verbose: bool = False) -> Solution:
    """Solve ``program`` with OSQP by the splitting of the module docstring.

    Returns ``"optimal"`` only when the certificate holds; ``"optimal_inaccurate"`` when the iterate
    stopped moving with small residuals but without it (a program whose certificate cannot close,
    such as two penalties whose dual split is not exact); ``"infeasible"`` when no ``W`` meets the
    budgets with the other constraints; ``"max_iterations"`` otherwise.
    """
    # Built in scaled units, certified in the program's own (module docstring).
    scaled, scaling = program.scaled()
    qp = SplitQP(scaled, split_penalties(scaled), budgets(scaled))
    state = first_state(qp)
    times = np.zeros(2)
    inner, status, certificate, step = 0, "max_iterations", None, None
    best, since = np.inf, 0

    def certify():
        return certify_program(program, scaling.weights(reported_weights(qp, state)),
                               scaling.dual(step.dual), gap_tol=GAP_TOL, feas_tol=FEAS_TOL)

    for iteration in range(1, MAX_ITERATIONS + 1):
        step = qp.solve(state, options)
        times += (step.solve_time, step.compile_time)
        inner += step.iterations or 0
        if step.status in NO_SOLUTION:
            status = "infeasible" if qp.balls and _budgets_infeasible(qp, options) else step.status
            return _failed(status, times, iteration, inner)
        state, residuals = splitting_step(qp, state, step.W / qp.w_scale)
        if iteration % CHECK_EVERY == 0 and residuals.largest < CHECK_BELOW:
            certificate = certify()
            if verbose:
                print(f"osqp splitting {iteration:5d}: residual {residuals.largest:.2e}, relative gap "
                      f"{certificate.relative_gap:.2e}, violation {certificate.primal_violation:.2e}")
            if certificate.ok:
                status = "optimal"
                break
        if residuals.largest < best / 2:
            best, since = residuals.largest, iteration
        if residuals.largest < RESIDUAL_TOL or iteration - since >= STALL_ITERATIONS:
            certificate = certify()
            status = "optimal" if certificate.ok else (
                "optimal_inaccurate" if residuals.largest < CHECK_BELOW else "max_iterations")
            break
        if iteration == FEASIBILITY_CHECK_AFTER and qp.balls and _budgets_infeasible(qp, options):
            return _failed("infeasible", times, iteration, inner)
        if iteration % ADAPT_EVERY == 0:
            state = rebalance(state, residuals, qp)
    info = {"splitting_iterations": iteration, "osqp_iterations": inner, "rho_w": state.rho_w,
            "rho_z": state.rho_z, "residual": residuals.largest}
    return Solution(scaling.weights(reported_weights(qp, state)), scaling.dual(step.dual), status,
                    *times, iteration, info, {"gap_tol": GAP_TOL, "feas_tol": FEAS_TOL})


def _failed(status: str, times, iteration: int, inner: int) -> Solution:
    return Solution(None, None, status, *times, iteration,
                    {"splitting_iterations": iteration, "osqp_iterations": inner})


def _budgets_infeasible(qp: SplitQP, options: dict) -> bool:
    """Whether no ``W`` meets the budgets with the quadratic program's constraints.

    One QP: the least ``sum_b ||(X W - Y_b)_mask||^2`` over those constraints. More than
    ``sum_b epsilon_b^2`` (all columns' budgets together) proves the program infeasible; exactly so
    for one whole-matrix budget.
    """
    import cvxpy as cp

    P, N, M = qp.program.shape
    W_hat, Z_hat = cp.Variable((N, M)), cp.Variable((P, M))
    _, constraints = _quadratic_part(qp.program, W_hat, Z_hat, qp, qp.splits, qp.balls)
    residuals = [cp.multiply(ball.mask.astype(float), Z_hat) - np.where(ball.mask, ball.target, 0.0)
                 / qp.z_scale for ball in qp.balls]
    problem = cp.Problem(cp.Minimize(sum(cp.sum_squares(residual) for residual in residuals)),
                         constraints)
    found = solve_cvxpy(qp.program, "osqp", options, False, lowered=(problem, W_hat))
    if found.status in NO_SOLUTION:
        return found.status == "infeasible"
    least = qp.z_scale * np.sqrt(max(problem.value, 0.0))
    allowed = np.sqrt(sum(np.sum(np.broadcast_to(ball.epsilon, (M,)) ** 2) if ball.per_column
                          else ball.epsilon ** 2 for ball in qp.balls))
    reference = np.sqrt(sum(np.sum(np.where(ball.mask, ball.target, 0.0) ** 2) for ball in qp.balls))
    # The budget's own relative measure (fits.Budget.violation), well above OSQP's accuracy.
    return least - allowed > 10 * FEAS_TOL * max(allowed, BUDGET_SCALE_FLOOR * reference)
