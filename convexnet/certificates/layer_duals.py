"""Dual points of a Net-Trim layer: construction from a primal, repair to feasibility, dual value.

Numpy only: the duality-gap certificate must not depend on the solvers it checks.

Notation (batch-first, as in :mod:`convexnet.certificates`): ``X`` (P, N), ``W`` (N, M),
``Z = X @ W``, mask ``active`` (P, M) (Omega), penalty weights ``c`` (N,). A dual point is
``Lambda`` (P, M): ``xi = Lambda`` on Omega and ``mu = Lambda >= 0`` off it. It is dual feasible when
``|X^T Lambda|[n, m] <= c[n]`` for every entry (so exactly 0 on a row with ``c[n] = 0``) and
``mu >= 0``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._numerics import stable_norm

# An entry of W counts in the support when it exceeds this fraction of its column's largest entry
# (and the column's largest exceeds this fraction of the layer's): solvers' iterates carry tiny
# non-zeros that are not part of the solution.
SUPPORT_TOL = 1e-6
# Aligning a supplied dual to the support is a polish: a correction larger than this fraction of
# the column means the support guess is wrong, and the column is left as it was.
ALIGN_TOL = 1e-3
# Off Omega, Z[p, m] >= V[p, m] - INEQUALITY_ACTIVE_TOL * scale counts as a tight inequality, one
# that may carry a multiplier mu > 0 (complementary slackness up to the solver's accuracy).
INEQUALITY_ACTIVE_TOL = 1e-4
# A residual is cancelled on the unpenalized rows when it falls below this fraction of the size
# of the terms it is made of; otherwise the column's dual is dropped (set to 0, always feasible).
CANCEL_TOL = 1e-10


@dataclass(frozen=True)
class LayerLoss:
    """The data-fit part ``f(Z)`` of the layer program: its fit on Omega (:class:`~convexnet.fits.Squared`
    or :class:`~convexnet.fits.Budget`) and, when some entry is off Omega, ``Z <= V`` there
    (:class:`~convexnet.fits.Below`). Everything below asks these terms."""

    terms: tuple

    @property
    def fit(self):
        return self.terms[0]

    @property
    def budget(self) -> bool:
        """Whether the fit is a budget (a constraint) rather than the squared loss."""
        return self.fit.is_constraint

    @property
    def separable(self) -> bool:
        return all(term.separable for term in self.terms)

    @property
    def label(self) -> str:
        """``"regularized"``, ``"constrained"`` or ``"constrained_per_column"`` (for reports)."""
        if not self.budget:
            return "regularized"
        return "constrained_per_column" if self.separable else "constrained"

    def column_budgets(self, M: int) -> np.ndarray:
        """The budget of every column (the layer's, repeated, for a whole-matrix budget)."""
        return np.broadcast_to(np.asarray(self.fit.epsilon, dtype=float), (M,))


def dual_objective_parts(dual, loss: LayerLoss, *, per_column: bool = False):
    """Split the dual objective into ``(linear, quadratic)``: value at ``t * Lambda`` is
    ``t * linear - t^2 * quadratic``.

    The value is ``-sum of the terms' conjugates`` (:mod:`convexnet.fits`), whose parts are
    homogeneous of degree 1 or 2 in ``Lambda`` (``<L, Y>`` and ``epsilon ||L||`` of degree 1,
    ``||L||^2 / (4 lam)`` of degree 2); with ``c(t)`` the conjugates at ``t Lambda``,
    ``linear = -(4 c(1) - c(2)) / 2`` and ``quadratic = (c(2) - 2 c(1)) / 2``. ``per_column=True``
    (separable losses only) returns the two parts of every column, arrays of shape (M,).
    """
    def conjugates(L):
        total_columns, total = np.zeros(L.shape[1]), 0.0
        for term in loss.terms:
            value = term.conjugate(L)
            if np.ndim(value) == 0:
                total += float(value)
            else:
                total_columns = total_columns + value
        return total_columns, total

    (once, once_whole), (twice, twice_whole) = conjugates(dual), conjugates(2.0 * dual)
    linear = -(4.0 * once - twice) / 2.0
    quadratic = (twice - 2.0 * once) / 2.0
    if per_column:
        return linear, np.maximum(quadratic, 0.0)
    linear_whole = -(4.0 * once_whole - twice_whole) / 2.0
    quadratic_whole = (twice_whole - 2.0 * once_whole) / 2.0
    return (float(linear.sum()) + linear_whole,
            max(float(quadratic.sum()) + quadratic_whole, 0.0))


def best_scale(linear: float, quadratic: float, largest: float) -> float:
    """The ``t`` in ``[0, largest]`` maximizing ``t * linear - t^2 * quadratic``.

    ``largest`` may be ``inf`` (the direction has ``X^T Lambda = 0`` on penalized rows); an unbounded
    increase then means the primal is infeasible, and ``t = 1`` is returned rather than a number
    that overflows.
    """
    if quadratic > 0.0:
        return float(np.clip(linear / (2.0 * quadratic), 0.0, largest))
    if linear <= 0.0:
        return 0.0
    return largest if np.isfinite(largest) else 1.0


def cancel_unpenalized(X, active, dual, unpenalized) -> tuple[np.ndarray, tuple[int, ...]]:
    """Make ``X[:, unpenalized]^T Lambda = 0`` column by column, keeping ``mu`` untouched.

    An unpenalized row ``n`` (``c[n] = 0``) allows only ``(X^T Lambda)[n, m] = 0``. The residual is
    removed from ``xi`` alone, by the smallest change: ``xi_m <- xi_m - G^+T r`` with
    ``G = X[Omega_m, unpenalized]`` and ``r = X[:, unpenalized]^T Lambda_m``; as ``mu`` is unchanged it stays
    nonnegative. When ``r`` is not in the range of ``G^T`` (no active row, or ``G`` rank deficient
    in the wrong direction), no change of ``xi`` cancels it; the column's dual is then set to 0, which
    is always feasible, and the column is reported as dropped.

    Returns
    -------
    dual : ndarray, shape (P, M)
    dropped : tuple of int
        The columns set to 0.
    """
    dual = dual.copy()
    if not unpenalized.any():
        return dual, ()
    X_free = X[:, unpenalized]
    dropped = []
    for m in range(dual.shape[1]):
        residual = X_free.T @ dual[:, m]
        if not np.any(residual):
            continue
        rows = active[:, m]
        if rows.any():
            correction = np.linalg.lstsq(X_free[rows].T, residual, rcond=None)[0]
            dual[rows, m] -= correction
            size = stable_norm(X_free) * stable_norm(dual[:, m])
            if stable_norm(X_free.T @ dual[:, m]) <= CANCEL_TOL * max(size, 1.0):
                continue
        dual[:, m] = 0.0
        dropped.append(m)
    return dual, tuple(dropped)


def bounded_least_squares(matrix, target, free_count: int) -> np.ndarray:
    """``argmin ||matrix @ x - target||`` s.t. ``x[free_count:] >= 0`` (the first entries are free).

    Lawson and Hanson's active-set method, with the free entries always in the passive set. The
    result only needs to be good, not exact: the caller clips and rescales it to a feasible dual.
    """
    count = matrix.shape[1]
    solution = np.zeros(count)
    passive = np.zeros(count, dtype=bool)
    passive[:free_count] = True
    bounded = ~passive

    def solve_on(columns):
        values = np.zeros(count)
        if columns.any():
            values[columns] = np.linalg.lstsq(matrix[:, columns], target, rcond=None)[0]
        return values

    solution = solve_on(passive)
    # Round-off in the gradient, relative to the data: a floor of 1 would hide every gradient of
    # data at 1e-150 (and the dual built from it would certify nothing).
    scale = float(np.abs(matrix).sum(axis=0).max(initial=0.0))
    threshold = 10.0 * np.finfo(float).eps * scale * float(np.abs(target).max(initial=0.0))
    for _ in range(3 * count):
        gradient = matrix.T @ (target - matrix @ solution)
        candidates = bounded & ~passive & (gradient > threshold)
        if not candidates.any():
            break
        passive[np.argmax(np.where(candidates, gradient, -np.inf))] = True
        for _ in range(count):
            trial = solve_on(passive)
            negative = bounded & passive & (trial <= 0.0)
            if not negative.any():
                solution = trial
                break
            step = np.min(solution[negative] / (solution[negative] - trial[negative]))
            solution = solution + step * (trial - solution)
            leaving = bounded & passive & (solution <= threshold)
            passive[leaving] = False
            solution[leaving] = 0.0
    return solution


def construct_dual(X, Y, V, active, W, weights, loss: LayerLoss) -> np.ndarray:
    """A dual point built from the primal alone, exact when ``W`` is optimal and nondegenerate.

    Optimality gives, on each column's support ``S_m`` (and on the unpenalized rows, target 0)::

        X[:, S]^T (xi_m + mu_m) = -c_S * sign(W[S, m])

    with ``xi_m = 2 lam r_m`` (regularized) or ``xi_m = a_m r_m``, ``a_m = lambda / ||r||`` with the
    budget's multiplier ``lambda >= 0`` (constrained; ``r = (Z - Y)_Omega``), and ``mu_m >= 0``
    supported on the tight inequalities ``Z = V``. The unknowns are fitted by nonnegative least squares.
    The coupled budget shares one ``a``: the median of the per-column fits, then ``mu`` is refitted.
    A zero budget (``r = 0``) leaves ``xi`` free; an inactive one makes ``xi = 0``.

    Returns
    -------
    dual : ndarray, shape (P, M)
        Not yet feasible: :func:`repair_dual` makes it so.
    """
    Z = X @ W
    residual = np.where(active, Z - Y, 0.0)
    scale = max(float(np.abs(Y).max(initial=0.0)), float(np.abs(V).max(initial=0.0))) or 1.0
    tight = ~active & (Z - V >= -INEQUALITY_ACTIVE_TOL * scale)
    unpenalized = weights == 0
    P, M = Y.shape
    dual = np.zeros((P, M))

    budget_mode = _budget_mode(residual, loss)
    coefficients = np.zeros(M)
    supports = support_mask(W, weights)

    def fit(m, coefficient):
        """Fit column m; ``coefficient`` is the fixed a_m, or None to fit it (or free xi)."""
        support = supports[:, m]
        equations = support | unpenalized
        target = np.where(support, -weights * np.sign(W[:, m]), 0.0)[equations]
        X_eq = X[:, equations]
        rows_tight = tight[:, m]
        rows_active = active[:, m]
        if coefficient is not None:
            xi = coefficient * residual[:, m]
            fitted = bounded_least_squares(X_eq[rows_tight].T, target - X_eq.T @ xi, 0)
            dual[:, m] = xi
            dual[rows_tight, m] = fitted
            return coefficient
        if budget_mode[m] == "free":
            free = X_eq[rows_active].T
            fitted = bounded_least_squares(np.hstack([free, X_eq[rows_tight].T]), target, free.shape[1])
            dual[rows_active, m] = fitted[:free.shape[1]]
            dual[rows_tight, m] = fitted[free.shape[1]:]
            return 0.0
        direction = X_eq.T @ residual[:, m]
        fitted = bounded_least_squares(np.column_stack([direction, X_eq[rows_tight].T]), target, 0)
        dual[:, m] = fitted[0] * residual[:, m]
        dual[rows_tight, m] = fitted[1:]
        return float(fitted[0])

    for m in range(M):
        if not loss.budget:
            # The squared loss's gradient is known: 2 lam (Z - Y) on Omega.
            fit(m, 2.0 * loss.fit.weight)
        elif budget_mode[m] == "inactive":
            fit(m, 0.0)
        else:
            coefficients[m] = fit(m, None)
    if loss.budget and not loss.separable and budget_mode[0] == "direction":
        informative = stable_norm(residual, axis=0) > 0
        shared = float(np.median(coefficients[informative])) if informative.any() else 0.0
        for m in range(M):
            fit(m, shared)
    return dual


def _budget_mode(residual, loss: LayerLoss) -> list[str]:
    """Per column: ``"direction"`` (xi along the residual), ``"free"`` (zero budget) or ``"inactive"``."""
    M = residual.shape[1]
    if not loss.budget:
        return ["direction"] * M
    if not loss.separable:
        return [_mode(stable_norm(residual), float(loss.fit.epsilon))] * M
    return [_mode(norm, budget)
            for norm, budget in zip(stable_norm(residual, axis=0), loss.column_budgets(M))]


def _mode(norm: float, budget: float) -> str:
    if budget == 0.0:
        return "free"
    # A budget left unused has multiplier 0 (complementary slackness).
    return "inactive" if norm < (1.0 - 1e-4) * budget else "direction"


def support_mask(W, weights) -> np.ndarray:
    """The penalized entries of ``W`` (N, M) that count as non-zero (``SUPPORT_TOL``)."""
    column_max = np.abs(W).max(axis=0, initial=0.0)
    live = column_max > SUPPORT_TOL * float(column_max.max(initial=0.0))
    return (np.abs(W) > SUPPORT_TOL * column_max) & live & (weights > 0)[:, None]


def align_to_support(X, Y, V, active, dual, W, weights) -> np.ndarray:
    """Change ``Lambda`` as little as possible so that optimality holds exactly on the support of ``W``.

    For each column, with ``S_m`` the support (entries above ``SUPPORT_TOL`` of the column's
    largest, penalized rows) and ``U`` the unpenalized rows, find the smallest ``delta``, non-zero only
    on Omega and on the tight inequalities (``Z = V`` up to ``INEQUALITY_ACTIVE_TOL``), with
    ``X[:, S_m + U]^T (Lambda_m + delta) = (-c_S sign(W[S, m]), 0)``. A ``Lambda`` from an approximate
    solver is off by ``d`` on the support, which costs ``O(d)`` in the gap when fixed by scaling; fixing
    it here costs ``O(d^2)`` (the Fenchel-Young terms are quadratic in ``delta``). A column whose
    equations cannot be met this way, or only by a change above ``ALIGN_TOL`` of the column (the
    support guess is then wrong), is left as it was. ``mu`` may turn negative where it was about 0;
    the caller clips it again.
    """
    aligned = dual.copy()
    unpenalized = weights == 0
    Z = X @ W
    scale = max(float(np.abs(Y).max(initial=0.0)), float(np.abs(V).max(initial=0.0))) or 1.0
    movable = active | (Z - V >= -INEQUALITY_ACTIVE_TOL * scale)
    supports = support_mask(W, weights)
    for m in range(dual.shape[1]):
        support = supports[:, m]
        equations = support | unpenalized
        rows = movable[:, m]
        if not equations.any() or not rows.any():
            continue
        target = np.where(support, -weights * np.sign(W[:, m]), 0.0)[equations]
        X_eq = X[:, equations]
        residual = X_eq.T @ dual[:, m] - target
        correction = np.linalg.lstsq(X_eq[rows].T, residual, rcond=None)[0]
        column = dual[:, m].copy()
        column[rows] -= correction
        size = stable_norm(X_eq) * max(stable_norm(column), 1.0)
        small = stable_norm(correction) <= ALIGN_TOL * stable_norm(dual[:, m])
        if small and stable_norm(X_eq.T @ column - target) <= CANCEL_TOL * size:
            aligned[:, m] = column
    return aligned


@dataclass(frozen=True)
class RepairedDual:
    """A dual-feasible point and how it was obtained from the candidate."""

    dual: np.ndarray
    scale: float
    dropped_columns: tuple[int, ...]
    unpenalized_residual: float
    value: float
    aligned: bool = False


def repair_dual(X, Y, V, active, dual, weights, loss: LayerLoss, W=None,
                enough: float | None = None) -> RepairedDual:
    """Turn any candidate ``Lambda`` into a dual-feasible one and evaluate the dual there.

    Steps: clip ``mu`` to ``>= 0``; cancel ``X^T Lambda`` on unpenalized rows
    (:func:`cancel_unpenalized`); then scale by the ``t`` in ``[0, t_max]``,
    ``t_max = 1 / max_{n, m : c_n > 0} |X^T Lambda|[n, m] / c_n``, that maximizes the dual objective
    (every such ``t`` keeps the point feasible since 0 is feasible and the set convex); for the
    separable forms, by one such ``t`` per column, with the maximum over ``n`` only. With
    ``t = 1 / max(1, ...)`` as a fallback this is the usual scaling; the line search only tightens it.
    When ``W`` is given the candidate aligned to its support (:func:`align_to_support`) is repaired
    too and the better of the two kept: each is a valid lower bound. The alignment costs
    ``O(P |S_m|^2)`` per column, so it is skipped when the plain candidate's value already reaches
    ``enough`` (the dual value that certifies the caller's tolerance).

    Returns
    -------
    RepairedDual
        ``unpenalized_residual`` is ``max |X^T Lambda|`` on unpenalized rows after scaling: round-off.
    """
    candidate = np.where(active, dual, np.maximum(dual, 0.0))
    best = _repair_clipped(X, Y, V, active, candidate, weights, loss)
    if W is not None and (enough is None or best.value < enough):
        aligned = align_to_support(X, Y, V, active, candidate, W, weights)
        aligned = _repair_clipped(X, Y, V, active, np.where(active, aligned, np.maximum(aligned, 0.0)),
                                  weights, loss, aligned=True)
        if aligned.value > best.value:
            best = aligned
    return best


def _repair_clipped(X, Y, V, active, candidate, weights, loss, aligned=False) -> RepairedDual:
    """Cancel the unpenalized rows, then scale ``candidate`` to the best feasible multiple.

    A separable loss (regularized, per-column budgets) makes the dual a sum over columns with one
    constraint set per column, so each column gets its own best scale: one slightly off column then
    costs only its own share of the gap. The coupled budget's ``epsilon ||xi||_F`` ties the columns,
    so they share one scale. ``RepairedDual.scale`` reports the smallest.
    """
    candidate, dropped = cancel_unpenalized(X, active, candidate, weights == 0)
    correlation = np.abs(X.T @ candidate)
    penalized = weights > 0
    per_column = loss.separable
    ratio = (correlation[penalized] / weights[penalized, None]).max(axis=0, initial=0.0)
    if not per_column:
        ratio = np.array([ratio.max(initial=0.0)])
    largest = np.where(ratio > 0, 1.0 / np.where(ratio > 0, ratio, 1.0), np.inf)
    if per_column:
        parts = list(zip(*dual_objective_parts(candidate, loss, per_column=True)))
    else:
        parts = [dual_objective_parts(candidate, loss)]
    scales = np.array([best_scale(linear, quadratic, bound)
                       for (linear, quadratic), bound in zip(parts, largest)])
    residual = float((correlation[~penalized] * scales).max(initial=0.0))
    # Adding 0.0 turns the -0.0 of a zero dual into 0.0 in reports.
    value = float(sum(t * linear - t ** 2 * quadratic for t, (linear, quadratic) in zip(scales, parts)))
    value += 0.0
    return RepairedDual(dual=scales * candidate, scale=float(scales.min(initial=1.0)),
                        dropped_columns=dropped, unpenalized_residual=residual, value=value,
                        aligned=aligned)
