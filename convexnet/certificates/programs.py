r"""The duality-gap certificate of any convex :class:`SparsityProgram`, from its terms' conjugates.

For ``min_W F(X W) + G(W)`` with ``F = sum_j f_j`` (fit terms on disjoint masks) and
``G = sum_i p_i + sum_k I_{C_k}`` (penalties and sets), Fenchel duality gives, for any ``Lambda``
(P, M),

.. math:: d(\Lambda) = -F^*(\Lambda) - G^*(-X^T \Lambda) \;\le\; \text{optimal value},

where ``F*`` is the sum of the fit terms' conjugates on their masks (``Lambda`` must be 0 on entries
no term covers) and ``G*`` the infimal convolution of the weight terms' conjugates. Any split
``S = S_1 + ... + S_k`` of ``S = -X^T Lambda`` bounds ``G*(S) <= sum g_i*(S_i)``, so any split gives a
valid lower bound. The split used: subspace sets (``Mask``, ``Subspace``) take the part orthogonal to
them at no cost; each penalty then takes the projection of what is left onto its dual-norm ball (its
conjugate is that ball's indicator); a bounded set takes the rest at the cost of its support
function. At an optimum this split is exact for one penalty and one set of the catalog.

The candidate ``Lambda`` comes from the backend (the dual of ``Z = X W``) or, without one, from the
primal (the fits' gradient directions). It is moved into the conjugates' domains (``Lambda >= 0``
under ``Below``) and scaled by the ``t >= 0`` that maximizes ``d(t Lambda)``, per column when every
term is separable: ``d`` is concave in ``t``, so a golden-section search finds it.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..fits import Budget, Squared

__all__ = ["ProgramCertificate", "certify_program"]

_GOLDEN = (np.sqrt(5.0) - 1.0) / 2.0
# The part of X^T Lambda no term takes counts as 0 below this fraction of the size of its terms.
REMAINDER_TOL = 1e-12
_SEARCH_STEPS = 80


@dataclass(frozen=True)
class ProgramCertificate:
    """The duality-gap certificate of a :class:`~convexnet.programs.ProgramResult`.

    Attributes
    ----------
    ok : bool
        ``applies``, ``relative_gap <= gap_tol`` and ``primal_violation <= feas_tol``.
    gap : float
        ``primal - dual``: an upper bound on ``primal - optimal`` for a feasible ``W``.
    relative_gap : float
        ``gap / max(1, |primal|)``.
    primal_violation : float
        :meth:`SparsityProgram.violation` at ``W``.
    primal, dual : float
    applies : bool
        False for a nonconvex program, or a term without a conjugate here (``reason`` says which).
    reason : str
    dual_source : str
        ``"supplied"`` (the backend's) or ``"constructed"`` (from the primal).
    dual_scale : float
        The smallest factor ``t`` applied to the candidate.
    multiplier : ndarray, shape (P, M)
        The ``Lambda`` that gives ``dual``.
    gap_tol, feas_tol : float
    """

    ok: bool
    gap: float
    relative_gap: float
    primal_violation: float
    primal: float
    dual: float
    applies: bool
    reason: str
    dual_source: str
    dual_scale: float
    gap_tol: float
    feas_tol: float
    multiplier: np.ndarray | None = field(default=None, repr=False)

    def __str__(self) -> str:
        if not self.applies:
            return f"duality-gap certificate: does not apply ({self.reason})"
        verdict = "OK" if self.ok else "NOT CERTIFIED"
        return (f"duality-gap certificate (program): {verdict}\n"
                f"  primal {self.primal:.10g}   dual {self.dual:.10g}\n"
                f"  gap {self.gap:.3e}, relative {self.relative_gap:.3e} (tol {self.gap_tol:g})\n"
                f"  primal violation {self.primal_violation:.3e} (tol {self.feas_tol:g})\n"
                f"  dual {self.dual_source}, scaled by {self.dual_scale:.6g}")


def _not_applicable(reason, violation, primal, gap_tol, feas_tol) -> ProgramCertificate:
    return ProgramCertificate(False, float("nan"), float("nan"), violation, primal, float("nan"),
                              False, reason, "none", float("nan"), gap_tol, feas_tol)


def certify_program(program, W, dual=None, *, gap_tol: float, feas_tol: float) -> ProgramCertificate:
    """The certificate of ``W`` (N, M) for ``program``, from ``dual`` (P, M) or built from ``W``."""
    primal = program.objective(W)
    violation = program.violation(W)
    if not program.convex:
        nonconvex = [type(term).__name__ for term in program.terms if not getattr(term, "convex", True)]
        return _not_applicable(f"{', '.join(nonconvex)} is nonconvex: no duality-gap certificate "
                               "applies", violation, primal, gap_tol, feas_tol)
    source = "supplied" if dual is not None else "constructed"
    Lambda = _candidate(program, W) if dual is None else np.asarray(dual, dtype=float)
    Lambda = _cancel_locked(program, _into_domain(program, Lambda))
    S = -(program.X.T @ Lambda)
    separable = program.separable
    try:
        value = _dual_function(program, Lambda, S, separable, W)
        scale, best = _maximize(value, program.M if separable else 1)
    except NotImplementedError as error:
        return _not_applicable(str(error), violation, primal, gap_tol, feas_tol)
    dual_value = float(np.sum(best))
    gap = primal - dual_value
    relative = gap / max(1.0, abs(primal))
    multiplier = Lambda * (scale[None, :] if separable else float(scale[0]))
    ok = bool(relative <= gap_tol and violation <= feas_tol)
    return ProgramCertificate(ok, gap, relative, violation, primal, dual_value, True, "", source,
                              float(scale.min()), gap_tol, feas_tol, multiplier)


def _locked_rows(program) -> np.ndarray:
    """Rows of ``W`` whose dual part no term can take (bool, shape (N,)): every penalty leaves them
    free (an l1 weight of 0, or no penalty at all) and no set bounds them. There the dual needs
    ``(X^T Lambda)[n, :] = 0`` exactly, which no solver's dual meets to the last digit."""
    N = program.X.shape[1]
    if program.sets:
        return np.zeros(N, dtype=bool)
    locked = np.ones(N, dtype=bool)
    for term in program.penalties:
        locked &= term.free_rows(N)
    return locked


def _cancel_locked(program, Lambda) -> np.ndarray:
    """``Lambda`` changed as little as possible, on the entries of fits that take any value (not
    the ``Below`` bounds, whose multipliers must stay >= 0), so that ``X[:, locked]^T Lambda = 0``
    in every column: the dual's feasibility on the locked rows, to round-off."""
    locked = _locked_rows(program)
    if not locked.any():
        return Lambda
    free = np.zeros(Lambda.shape, dtype=bool)
    for term in program.fits:
        if term.fits_target:
            free |= term.mask
    X_locked = program.X[:, locked]
    Lambda = Lambda.copy()
    for m in range(Lambda.shape[1]):
        rows = free[:, m]
        residual = X_locked.T @ Lambda[:, m]
        if rows.any() and np.any(residual):
            Lambda[rows, m] -= np.linalg.lstsq(X_locked[rows].T, residual, rcond=None)[0]
    return Lambda


def _candidate(program, W) -> np.ndarray:
    """A dual direction from the primal: the fits' gradients (budgets: the residual's direction)."""
    Z = program.X @ W
    Lambda = np.zeros_like(Z)
    for term in program.fits:
        residual = np.where(term.mask, Z - term.target, 0.0)
        if isinstance(term, Squared):
            Lambda += 2.0 * term.weight * residual
        elif isinstance(term, Budget):
            Lambda += residual
    return Lambda


def _into_domain(program, Lambda) -> np.ndarray:
    """``Lambda`` moved into every fit term's conjugate domain, and 0 where no term acts."""
    covered = np.zeros(Lambda.shape, dtype=bool)
    for term in program.fits:
        Lambda = np.where(term.mask, term.dual_domain(Lambda), Lambda)
        covered |= term.mask
    return np.where(covered, Lambda, 0.0)


def _add(columns: np.ndarray, whole: float, part):
    """Accumulate a per-column part (an array) or a whole-matrix part (a float) separately."""
    if np.ndim(part) == 0:
        return columns, whole + float(part)
    return columns + part, whole


def _split_cost(program, S, separable: bool, W=None, reference: float = 0.0) -> np.ndarray:
    """``G*(S)`` bounded through the split of the module docstring (per column when separable).

    With a primal ``W`` the penalties' parts are also taken as their subgradients at ``W`` (exact at
    an optimum); the smaller of the two bounds is kept (both are valid).
    """
    costs = [_split_with(program, S, separable, None, reference)]
    if W is not None and program.penalties and (program.sets or len(program.penalties) > 1):
        costs.append(_split_with(program, S, separable, W, reference))
    return np.minimum.reduce(costs)


def _split_with(program, S, separable: bool, W, reference: float) -> np.ndarray:
    columns, whole = np.zeros(S.shape[1]), 0.0
    remainder = S
    for term in [term for term in program.sets if term.subspace]:
        part, remainder = term.dual_part(remainder)
        columns, whole = _add(columns, whole, part)
    for term in program.penalties:
        part, remainder = term.dual_part(remainder, W)
        columns, whole = _add(columns, whole, part)
    for term in [term for term in program.sets if not term.subspace]:
        part, remainder = term.dual_part(remainder)
        columns, whole = _add(columns, whole, part)
    # What no term takes must be 0; round-off is judged against the size of the products that
    # make X^T Lambda (``reference``), not against S itself, which cancellation may have made tiny.
    size = max(np.abs(S).max(initial=0.0), reference)
    left = np.abs(remainder).max(axis=0, initial=0.0)
    infeasible = left > REMAINDER_TOL * max(size, 1e-300)
    if separable:
        return np.where(infeasible, np.inf, columns)
    return np.array([np.inf if infeasible.any() else float(np.sum(columns)) + whole])


def _fit_conjugates(program, Lambda, separable: bool) -> np.ndarray:
    columns, whole = np.zeros(Lambda.shape[1]), 0.0
    for term in program.fits:
        columns, whole = _add(columns, whole, term.conjugate(Lambda))
    return columns if separable else np.array([float(np.sum(columns)) + whole])


def _dual_function(program, Lambda, S, separable, W=None):
    """``t -> d(t Lambda)``, vectorized over columns (separable) or a length-1 array."""
    # The size of the terms of X^T Lambda: max |X| max |Lambda| times the number of rows.
    reference = (float(np.abs(program.X).max(initial=0.0)) * float(np.abs(Lambda).max(initial=0.0))
                 * program.X.shape[0])

    def value(t: np.ndarray) -> np.ndarray:
        factor = t[None, :] if separable else float(t[0])
        return (-_fit_conjugates(program, Lambda * factor, separable)
                - _split_cost(program, S * factor, separable, W, reference * float(np.max(t))))

    return value


def _maximize(value, K: int):
    """Maximize the concave ``value`` over ``t >= 0`` per entry: bracket, then golden section."""
    low = np.zeros(K)
    high = np.ones(K)
    # Grow the bracket while the value still increases at the end, shrink it while infeasible.
    for _ in range(60):
        at_high = value(high)
        infeasible = ~np.isfinite(at_high)
        if infeasible.any():
            high = np.where(infeasible, high / 2.0, high)
            if (high < 1e-30).all():
                break
            continue
        larger = value(high * 2.0)
        grow = np.isfinite(larger) & (larger > at_high)
        if not grow.any():
            break
        high = np.where(grow, high * 2.0, high)
    # The feasible t form an interval [0, t_max]; find its end inside [high, 2 high] by bisection.
    top = high * 2.0
    for _ in range(60):
        middle = (high + top) / 2.0
        feasible = np.isfinite(value(middle))
        high = np.where(feasible, middle, high)
        top = np.where(feasible, top, middle)
    a, b = low, high
    c = b - _GOLDEN * (b - a)
    d = a + _GOLDEN * (b - a)
    fc, fd = value(c), value(d)
    for _ in range(_SEARCH_STEPS):
        left = fc >= fd
        a, b = np.where(left, a, c), np.where(left, d, b)
        c, d = b - _GOLDEN * (b - a), a + _GOLDEN * (b - a)
        fc, fd = value(c), value(d)
    candidates = np.stack([low, high, c, d, np.ones(K)])
    values = np.stack([value(point) for point in candidates])
    values = np.where(np.isfinite(values), values, -np.inf)
    best = values.argmax(axis=0)
    index = np.arange(K)
    return candidates[best, index], values[best, index]
