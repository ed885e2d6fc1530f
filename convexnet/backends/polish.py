r"""Polish: an approximate solution made exact by solving the optimality system on its support.

As OSQP's solution polishing, applied to the structure of l1 programs with squared fits: once ADMM's
support ``S`` (with the signs ``s`` of its entries) and its tight inequalities ``K`` have settled,
the Karush-Kuhn-Tucker conditions restricted to them are a small linear system per column. For a
column with the fit rows ``A`` (target ``y``), the inequality rows ``B`` (bound ``v``) and the l1
weights ``c``:

.. math::

    \begin{bmatrix} 2\lambda A_S^T A_S & B_{KS}^T \\ B_{KS} & 0 \end{bmatrix}
    \begin{bmatrix} w_S \\ \mu_K \end{bmatrix} =
    \begin{bmatrix} 2\lambda A_S^T y - c_S s \\ v_K \end{bmatrix}

for the squared fit ``lambda ||A w - y||^2``. A budget ``||A w - y|| <= epsilon`` that is active has
the same system at ``lambda = nu``, its multiplier, which is found in closed form from
``||A_S w_S(nu) - y|| = epsilon`` (one ``nu`` for the whole matrix's budget, one per column for
per-column budgets). The answer is accepted only if it is consistent: signs kept on ``S``,
``mu_K >= 0``, the other inequalities hold, and ``|X^T Lambda| <= c`` off ``S``; then it satisfies
the optimality conditions to the accuracy of the linear solves, and the certificate proves it. A
few rounds move entries into or out of ``S`` and ``K`` where a check fails. Columns that do not
pass keep the approximate solution.

Programs this applies to: one fit on a mask (:class:`~convexnet.fits.Squared` or
:class:`~convexnet.fits.Budget`), optionally :class:`~convexnet.fits.Below` on other entries, one
:class:`~convexnet.penalties.L1` penalty with per-row weights, and no sets.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.linalg

from ..fits import Below, Budget, Squared
from ..penalties import L1

__all__ = ["Polished", "applies", "polish", "terms"]

ROUNDS = 30
# Relative tolerances of the acceptance checks. They absorb the round-off of the small solves at
# degenerate points (an entry off the support whose correlation sits exactly at its weight, a tight
# row with a zero multiplier), where exact tests make the active set cycle; what they let through
# costs at most about their size in the certificate, which checks the result afterwards.
SIGN_TOL = 1e-12
DUAL_TOL = 1e-8
BOUND_TOL = 1e-9
MULTIPLIER_TOL = 1e-9
# The restricted system must hold to this fraction of the size of its terms.
SYSTEM_TOL = 1e-10
# Pivots of the tight rows' QR factorization below this fraction of the largest mark dependent rows.
RANK_TOL = 1e-10
# An inequality row within this fraction of the output scale of its bound starts in the active set;
# one looser than LOOSE_TOL never does.
TIGHT_TOL = 1e-4
LOOSE_TOL = 1e-3


@dataclass
class Polished:
    """The polished point: ``W`` (N, M), the dual ``Lambda`` (P, M), and which columns passed."""

    W: np.ndarray
    dual: np.ndarray
    columns: np.ndarray


def applies(program) -> bool:
    """Whether ``program`` has the structure of the module docstring."""
    fits = [term for term in program.fits if not isinstance(term, Below)]
    return (not program.sets and len(program.penalties) == 1
            and isinstance(program.penalties[0], L1)
            and (program.penalties[0].weights is None or program.penalties[0].weights.ndim == 1)
            and len(fits) == 1 and isinstance(fits[0], (Squared, Budget))
            and sum(isinstance(term, Below) for term in program.fits) <= 1)


def terms(program):
    """``(fit, below, weights)`` of a program of the polish kind: its fit on a mask, its
    :class:`~convexnet.fits.Below` term or None, and the l1 weights ``c`` (N,)."""
    fit = next(term for term in program.fits if not isinstance(term, Below))
    below = next((term for term in program.fits if isinstance(term, Below)), None)
    return fit, below, program.penalties[0].full_weights((program.shape[1], 1))[:, 0]


class _Column:
    """One column's data and its restricted solves."""

    def __init__(self, X, fit_rows, y, below_rows, v, weights):
        self.fit_rows, self.below_rows = np.flatnonzero(fit_rows), np.flatnonzero(below_rows)
        # A fit on every row (a linear layer, the Gram form) shares X itself: no copy per column.
        self.A = X if fit_rows.all() else X[fit_rows]
        self.y = y[fit_rows]
        self.B = X[below_rows]
        self.v = v[below_rows]
        self.weights = weights
        self._index = self._gram = self._correlation = None    # the last support's Gram (gram())

    def gram(self, S):
        """``(A_S^T A_S, A_S^T y)`` for the support ``S`` (N,), updated from the last call's: the
        entries of both supports are reused and only the rows and columns of the new ones are
        computed (an active-set round changes a few entries; recomputing the whole product took
        most of the polish of a 4000 x 785 digits layer)."""
        index = np.flatnonzero(S)
        gram = np.empty((index.size, index.size))
        correlation = np.empty(index.size)
        fresh = np.ones(index.size, dtype=bool)
        if self._index is not None and self._index.size:
            at = np.minimum(np.searchsorted(self._index, index), self._index.size - 1)
            kept = self._index[at] == index
            gram[np.ix_(kept, kept)] = self._gram[np.ix_(at[kept], at[kept])]
            correlation[kept] = self._correlation[at[kept]]
            fresh = ~kept
        if fresh.any():
            A_new = self.A[:, index[fresh]]
            if fresh.sum() * 4 > index.size:
                cross = A_new.T @ self.A[:, index]
            else:
                cross = (A_new.T @ self.A)[:, index]     # no gather of A's support columns
            gram[fresh, :] = cross
            gram[:, fresh] = cross.T
            correlation[fresh] = A_new.T @ self.y
        self._index, self._gram, self._correlation = index, gram, correlation
        return gram, correlation

    def void(self) -> bool:
        """No fit rows and ``w = 0`` feasible: ``w = 0`` is optimal (objective 0, dual 0)."""
        return self.A.shape[0] == 0 and bool(np.all(self.v >= 0))

    def independent(self, S, K):
        """``K`` without rows of ``B_KS`` that depend on the others (a degenerate vertex: more tight
        rows than it needs, which makes the system singular). The rows kept are chosen by a QR
        factorization with column pivoting of the unit-normed rows; a dropped row that the answer
        then violates rejoins through the checks."""
        count = int(K.sum())
        if count <= 1 or not S.any():
            return K
        rows = self.B[K][:, S]
        norms = np.linalg.norm(rows, axis=1)
        _, R, pivots = scipy.linalg.qr((rows / np.where(norms > 0, norms, 1.0)[:, None]).T,
                                       mode="economic", pivoting=True, check_finite=False)
        diagonal = np.abs(np.diag(R))
        rank = int(np.sum(diagonal > RANK_TOL * max(diagonal.max(initial=0.0), 1e-300)))
        if rank == count:
            return K
        kept = np.zeros(K.shape[0], dtype=bool)
        kept[np.flatnonzero(K)[pivots[:rank]]] = True
        return kept

    def solve(self, S, signs, K, lam):
        """``(w (N,), mu (|K|,))`` of the restricted system at ``lam``, or None when it is singular
        (:meth:`affine` at ``t = 1 / (2 lam)``; at ``lam = 0``, a budget that is not active, the
        limit ``t -> inf``: the linear program's vertex, which needs ``w1 = 0``)."""
        found = self.affine(S, signs, K)
        if found is None:
            return None
        w0, w1, m0, m1 = found
        if lam == 0:
            return _vertex_limit(self, S, K, found)
        return w0 + w1 / (2.0 * lam), 2.0 * lam * m0 + m1

    def affine(self, S, signs, K):
        """The restricted solution as a function of ``t = 1 / (2 nu)``: ``(w0, w1, m0, m1)`` with
        ``w(nu) = w0 + t w1`` and ``mu(nu) = (m0 + t m1) / t``, from one factorization, or None.

        Dividing the first block row of the system by ``2 nu`` and writing ``mu = 2 nu mu'`` gives
        ``[[G, B^T], [B, 0]] [w; mu'] = [A^T y; v] + t [-c s; 0]`` with ``G = A_S^T A_S``: the
        right-hand side, hence the solution, is affine in ``t``.
        """
        B_KS = self.B[K][:, S]
        size, k = S.sum(), K.sum()
        gram, correlation = self.gram(S)
        matrix = np.zeros((size + k, size + k))
        matrix[:size, :size] = gram
        matrix[:size, size:] = B_KS.T
        matrix[size:, :size] = B_KS
        rhs = np.zeros((size + k, 2))
        rhs[:size, 0] = correlation
        rhs[size:, 0] = self.v[K]
        rhs[:size, 1] = -self.weights[S] * signs[S]
        try:
            solution = np.linalg.solve(matrix, rhs)
        except np.linalg.LinAlgError:
            # A singular system (more support than equations): the least-squares point.
            solution = np.linalg.lstsq(matrix, rhs, rcond=None)[0]
        if not np.all(np.isfinite(solution)):
            return None
        # A nearly singular system can return a point that does not solve it (the tight rows then
        # do not hold): such a point is no solution of the restricted problem.
        mismatch = np.abs(matrix @ solution - rhs).max(initial=0.0)
        magnitude = (np.abs(matrix).max(initial=0.0) * np.abs(solution).max(initial=0.0)
                     + np.abs(rhs).max(initial=0.0))
        if mismatch > SYSTEM_TOL * max(magnitude, 1e-300):
            return None
        w = np.zeros((self.weights.shape[0], 2))
        w[S] = solution[:size]
        return w[:, 0], w[:, 1], solution[size:, 0], solution[size:, 1]


def _vertex_limit(column, S, K, found):
    """``(w, mu)`` of the restricted system as ``nu -> 0`` (``t -> inf``) from ``affine``'s
    ``found = (w0, w1, m0, m1)``: ``(w0, m1)`` when the tight rows fix ``w`` (``B_KS`` has full
    column rank, so ``w1 = 0``), else None (``w`` would move without bound)."""
    size = int(S.sum())
    if int(K.sum()) < size or (size and np.linalg.matrix_rank(column.B[K][:, S]) < size):
        return None
    w0, _, _, m1 = found
    return w0, m1


def _closed_form_multiplier(columns, sets, budget: float):
    """``nu`` with ``||r(nu)|| = budget`` for fixed active sets, exactly: ``r = r0 + t r1`` with
    ``t = 1 / (2 nu)`` (:meth:`_Column.affine`), so ``||r||^2`` is a quadratic in ``t`` whose
    positive root is taken. Returns ``(nu, [(w, mu)])`` or None (a singular system, no root)."""
    parts, a, b, c = [], 0.0, 0.0, 0.0
    for column, (S, signs, K) in zip(columns, sets):
        found = column.affine(S, signs, K)
        if found is None:
            return None
        w0, w1, m0, m1 = found
        r0, r1 = column.A @ w0 - column.y, column.A @ w1
        a, b, c = a + float(r1 @ r1), b + float(r0 @ r1), c + float(r0 @ r0)
        parts.append(found)
    target = budget * budget
    limits = [_vertex_limit(column, S, K, found)
              for column, (S, signs, K), found in zip(columns, sets, parts)]
    if all(limit is not None for limit in limits):
        # The tight rows fix every w (a vertex of the linear program): the residual does not move
        # with nu. The budget is inactive (nu = 0) if it holds there; else these sets cannot meet it.
        return (0.0, limits) if c <= target * (1 + 1e-12) else None
    if a <= 0:
        return None
    discriminant = b * b - a * (c - target)
    if discriminant < 0 or budget <= 0:
        return None
    t = (-b + np.sqrt(discriminant)) / a
    if not t > 0:
        return None
    outputs = [(w0 + t * w1, (m0 + t * m1) / t) for w0, w1, m0, m1 in parts]
    return 1.0 / (2.0 * t), outputs


def polish(program, W, dual, *, rounds: int = ROUNDS, starts: int = 2) -> Polished | None:
    """Polish ``W`` (N, M) with the help of ``dual`` (P, M); None when the program does not apply.

    Separable programs are polished column by column; a whole-matrix budget searches its one
    multiplier with every column's restricted system at once. ``rounds`` bounds the active-set
    corrections and ``starts`` the initial sets tried (see :func:`_initial_sets`): an early polish,
    which ADMM's later steps may still make succeed, takes fewer of both.
    """
    if not applies(program) or W is None or dual is None:
        return None
    fit, below, weights = terms(program)
    X = program.X
    P, N, M = program.shape

    def column(m):
        return _Column(X, fit.mask[:, m], fit.target[:, m],
                       below.mask[:, m] if below is not None else np.zeros(P, dtype=bool),
                       below.target[:, m] if below is not None else np.zeros(P), weights)

    def initial(m, one):
        return [_initial_sets(one, W[:, m], dual, m, below, weights, scale, with_tight)
                for with_tight in (False, True)[:starts]]

    scale = max(program.output_scale, 1e-300)
    # A column without fit rows whose zero is feasible (a unit never active, bounds >= 0) is 0 with
    # a zero dual, whatever the multiplier: exact, and no part of any system below.
    W_out, dual_out = W.copy(), dual.copy()
    if isinstance(fit, Budget) and not fit.per_column:
        # One multiplier for every column: all columns' data are held at once.
        columns = [column(m) for m in range(M)]
        void = np.array([one.void() for one in columns], dtype=bool)
        W_out[:, void], dual_out[:, void] = 0.0, 0.0
        coupled = np.flatnonzero(~void)
        starts = list(zip(*[initial(m, columns[m]) for m in coupled]))
        for state in starts or [()]:
            found = _polish_coupled(fit, [columns[m] for m in coupled], list(state), coupled,
                                    W_out, dual_out, weights, scale, rounds)
            if found is not None:
                return found
        return None
    # Separable: one column's data at a time (a masked fit copies its rows of X per column).
    passed = np.zeros(M, dtype=bool)
    for m in range(M):
        one = column(m)
        if one.void():
            W_out[:, m], dual_out[:, m], passed[m] = 0.0, 0.0, True
            continue
        for state in initial(m, one):
            found = _polish_column(one, state, fit, m, weights, scale, rounds)
            if found is not None:
                W_out[:, m], dual_out[:, m] = found
                passed[m] = True
                break
    return Polished(W_out, dual_out, passed)


def _initial_sets(column, w, dual, m, below, weights, scale, with_tight: bool):
    """``(S, signs, K)`` from the approximate solution: its support (every unpenalized row too) and
    the inequality rows that carry a clearly positive multiplier, and with ``with_tight`` also
    those that hold with equality to the approximation's accuracy (``TIGHT_TOL`` of the output
    scale). Which start reaches the solution depends on the point: many tight rows with zero
    multipliers (a degenerate vertex) mislead the first, missing tight rows the second."""
    S = (w != 0) | (weights == 0)
    signs = np.sign(w)
    if below is None or column.B.shape[0] == 0:
        return S, signs, np.zeros(0, dtype=bool)
    mu = dual[below.mask[:, m], m]
    slack = column.v - column.B @ w
    # A row clearly loose at the point is not tight at the optimum, whatever round-off multiplier
    # an interior point left on it (5e-11 on a spirals column, the largest 1e-5).
    K = (mu > 1e-6 * max(np.abs(mu).max(initial=0.0), 1e-300)) & (slack <= LOOSE_TOL * scale)
    if with_tight:
        K |= slack <= TIGHT_TOL * scale
    return S, signs, K


def _largest(mask, size, limit_fraction=0.25):
    """``mask`` kept on its ``max(1, count * limit_fraction)`` entries of largest ``size``: an
    active-set step that changes a few entries at a time, so that rounds do not cycle."""
    count = int(mask.sum())
    if count <= 1:
        return mask
    keep = max(1, int(count * limit_fraction))
    rows = np.flatnonzero(mask)
    chosen = rows[np.argsort(-size[rows])[:keep]]
    out = np.zeros_like(mask)
    out[chosen] = True
    return out


def _check(column, w, mu, S, signs, K, lam, weights, scale):
    """The acceptance checks: ``(ok, S, signs, K)`` with the sets corrected where a check failed.

    One kind of failure is corrected per call, a few entries at a time, worst first: signs that
    flipped leave ``S``; else negative multipliers leave ``K``; else violated bounds join ``K``;
    else entries whose correlation exceeds their weight join ``S``.
    """
    S, signs, K = S.copy(), signs.copy(), K.copy()
    penalized = S & (weights > 0)
    flipped = penalized & (w * signs <= SIGN_TOL * np.abs(w).max(initial=0.0))
    if flipped.any():
        S &= ~flipped
        return False, S, signs, K
    negative = mu < -MULTIPLIER_TOL * max(np.abs(mu).max(initial=0.0), 1e-300)
    if K.any() and negative.any():
        multipliers = np.zeros(K.shape[0])
        multipliers[K] = np.where(negative, mu, 0.0)
        K &= ~_largest(multipliers < 0, -multipliers)
        return False, S, signs, K
    if column.B.shape[0]:
        excess = column.B @ w - column.v
        violated = ~K & (excess > BOUND_TOL * scale)
        if violated.any():
            # Primal feasibility first: the correlations below mean little until it holds.
            K |= _largest(violated, excess)
            return False, S, signs, K
    residual = column.A @ w - column.y
    Lambda_B = np.zeros(column.B.shape[0])
    if K.any() and mu.size == np.count_nonzero(K):
        Lambda_B[K] = mu
    correlation = column.A.T @ (2.0 * lam * residual) + column.B.T @ Lambda_B
    excess_correlation = np.abs(correlation) - weights * (1 + DUAL_TOL)
    outside = ~S & (excess_correlation > 0)
    if outside.any():
        joining = _largest(outside, excess_correlation)
        S |= joining
        signs = np.where(joining, -np.sign(correlation), signs)
        return False, S, signs, K
    return True, S, signs, K


def _active_set(column, sets, lam, weights, scale, rounds=ROUNDS):
    """Solve one column's restricted system at ``lam``, correcting ``S`` and ``K`` until the checks
    pass: ``(w, mu, sets)``, or None after ``rounds`` rounds or a singular system."""
    S, signs, K = sets
    for _ in range(rounds):
        solved = column.solve(S, signs, K, lam)
        if solved is None:
            # Singular: dependent tight rows (a degenerate vertex) are dropped, once per round.
            reduced = column.independent(S, K)
            if reduced.sum() == K.sum():
                return None
            K = reduced
            solved = column.solve(S, signs, K, lam)
        if solved is None:
            return None
        w, mu = solved
        ok, S, signs, K = _check(column, w, mu, S, signs, K, lam, weights, scale)
        if ok:
            return w, mu, (S, signs, K)
    return None


def _polish_column(column, sets, fit, m, weights, scale, rounds):
    """One column's polished ``(w, Lambda)`` or None: at the fit's weight, or at the multiplier of
    its budget (see :func:`_budget_rounds`)."""
    if isinstance(fit, Squared):
        found = _active_set(column, sets, fit.weight, weights, scale, rounds)
        if found is None:
            return None
        w, mu, (_, _, K) = found
        return w, _column_dual(column, fit, m, w, mu, K, fit.weight)
    if column.A.shape[0] == 0:
        # No fit rows (a unit never active): the budget is void, the column a linear program whose
        # optimality system does not involve the multiplier.
        found = _active_set(column, sets, 1.0, weights, scale, rounds)
        if found is None:
            return None
        w, mu, (_, _, K) = found
        return w, _column_dual(column, fit, m, w, mu, K, 1.0)
    found = _budget_rounds([column], [sets], float(fit.epsilon[m]), weights, scale, rounds)
    if found is None:
        return None
    nu, ((w, mu, (_, _, K)),) = found
    return w, _column_dual(column, fit, m, w, mu, K, nu)


def _budget_rounds(columns, sets, budget, weights, scale, rounds=ROUNDS):
    """The multiplier ``nu`` of a budget shared by ``columns`` and their solutions there.

    Each round sets ``nu`` in closed form with the active sets held fixed
    (:func:`_closed_form_multiplier`; 0 where the sets fix ``w`` and the budget holds there), stops when every column passes its checks at that ``nu``, and else
    corrects the failing columns' active sets at that ``nu`` (where each column is the squared-loss
    program, whose active set the corrections find): ``(nu, [(w, mu, sets)])``, or None.
    """
    sets = list(sets)
    for _ in range(rounds):
        closed = _closed_form_multiplier(columns, sets, budget)
        if closed is None:
            # Singular or no root: dependent tight rows (a degenerate vertex) are dropped, once.
            reduced = [(S, signs, column.independent(S, K)) for column, (S, signs, K) in zip(columns, sets)]
            if any(new[2].sum() < old[2].sum() for new, old in zip(reduced, sets)):
                sets = reduced
                closed = _closed_form_multiplier(columns, sets, budget)
        if closed is None:
            # Exact for the sets held: no multiplier puts the residual on the budget.
            return None
        nu, solved = closed
        outputs, passed = [], True
        for index, (column, (S, signs, K)) in enumerate(zip(columns, sets)):
            w, mu = solved[index]
            if _check(column, w, mu, S, signs, K, nu, weights, scale)[0]:
                outputs.append((w, mu, (S, signs, K)))
                continue
            passed = False
            found = _active_set(column, sets[index], nu, weights, scale, rounds)
            if found is None:
                return None
            sets[index] = found[2]
        if passed:
            return nu, outputs
    return None


def _column_dual(column, fit, m, w, mu, K, lam):
    """``Lambda[:, m]``: ``2 lam (X w - y)`` on the fit's rows, ``mu`` on the tight rows, else 0."""
    Lambda = np.zeros(fit.mask.shape[0])
    Lambda[column.fit_rows] = 2.0 * lam * (column.A @ w - column.y)
    if K.any():
        Lambda[column.below_rows[K]] = mu
    return Lambda


def _polish_coupled(fit, columns, state, indices, W, dual, weights, scale, rounds):
    """A whole-matrix budget: one multiplier for every column (:func:`_budget_rounds`) of
    ``columns``, which are ``W``'s columns ``indices``; the others are kept as they are."""
    W_out, dual_out = W.copy(), dual.copy()
    if columns:
        found = _budget_rounds(columns, state, float(fit.epsilon), weights, scale, rounds)
        if found is None:
            return None
        nu, outputs = found
        for m, column, (w, mu, (_, _, K)) in zip(indices, columns, outputs):
            W_out[:, m] = w
            dual_out[:, m] = _column_dual(column, fit, m, w, mu, K, nu)
    return Polished(W_out, dual_out, np.ones(W.shape[1], dtype=bool))
