r"""The sparsest-vertex move: an optimal point pushed to a vertex of the optimal face, at equal objective.

An l1 program's optimum is often not unique (the data of a trained layer are rank deficient), and an
interior-point solver returns the centre of the optimal face: on the spirals demo's trained hidden
layer Clarabel keeps 29.8% nonzeros where an optimal point with 6% exists. This move makes the
sparsity a user gets independent of the backend.

For one column ``w`` with support ``S`` and signs ``s``, take the rows ``A`` of ``X`` that some fit
term uses for that column (``Z`` stays fixed there, so every fit keeps its value), the rows ``B`` of
the inequality terms (:class:`~convexnet.fits.Below`, ``X w <= v``) that are tight, and the l1
weights ``c``. Every direction ``d`` with

.. math::

    d_{S^c} = 0, \qquad A_S d_S = 0, \qquad B_{KS} d_S = 0, \qquad (c \circ s)_S^T d_S = 0

keeps the fits, the tight inequalities and (while no sign flips) the l1 norm, hence the objective:
``w + t d`` stays optimal until an entry of ``S`` reaches 0 or a slack inequality becomes tight. The
move takes the largest such step (a ratio test), drops the entry or adds the row, and repeats until
the system has no null space: a vertex (Caratheodory's purification, as in an LP crossover). Each
step removes one null direction, so a column takes at most ``|S|`` steps; the null-space basis is
updated by one small rotation per step, not recomputed.

The optimal dual is unchanged (the move is inside the optimal face), so the certificate of the
result still holds; a column is kept only if its fits' outputs ``A w`` moved by no more than
round-off and its l1 norm and inequalities are as before. Programs it applies to: convex, no sets,
one :class:`~convexnet.penalties.L1` penalty (any weights), any fit terms.
"""

from __future__ import annotations

import numpy as np

from .._numerics import stable_norm
from ..fits import Below
from ..penalties import L1

__all__ = ["applies", "to_vertex"]

#: Singular values below this fraction of the largest (rows scaled to unit norm) count as zero.
RANK_TOL = 1e-10
#: Steps between re-orthonormalizations of the null-space basis (each step is one reflection,
#: which keeps it orthonormal up to round-off).
REORTHONORMALIZE = 8
#: Gram eigenvalues above this fraction of the largest prove full column rank (a tall system).
SCREEN_TOL = 1e-12
#: A column is kept if its fit outputs moved by at most this fraction of their size.
KEEP_TOL = 1e-9
#: Entries below this fraction of a column's largest are left in place by the move (the zeros of an
#: interior-point answer; a digits layer's column had 786 such entries, and the move's SVD of them
#: took 5 s for nothing, as they are not in the null space of a fit on thousands of rows).
DUST_TOL = 1e-6
#: An inequality row with slack under this fraction of the output scale counts as tight.
TIGHT_TOL = 1e-7


def applies(program) -> bool:
    """Whether the move is defined for ``program`` (module docstring)."""
    return (program.convex and not program.sets and len(program.penalties) == 1
            and isinstance(program.penalties[0], L1) and program.penalties[0].strength > 0)


def _weights(program) -> np.ndarray:
    """The l1 coefficients ``c`` (N, M) of the program's penalty."""
    penalty = program.penalties[0]
    N, M = program.shape[1:]
    if penalty.weights is None:
        return np.full((N, M), penalty.strength)
    weights = penalty.weights[:, None] if penalty.weights.ndim == 1 else penalty.weights
    return penalty.strength * np.broadcast_to(weights, (N, M))


def _null_space(matrix: np.ndarray) -> np.ndarray:
    """An orthonormal basis (k, q) of the null space of ``matrix`` (r, k), rows scaled to unit norm."""
    k = matrix.shape[1]
    if matrix.shape[0] == 0:
        return np.eye(k)
    norms = stable_norm(matrix, axis=1)
    matrix = matrix[norms > 0] / norms[norms > 0, None]
    if matrix.shape[0] == 0:
        return np.eye(k)
    if matrix.shape[0] > 2 * k:
        # A tall system: its Gram matrix's spectrum screens out full column rank cheaply (singular
        # values above 1e-6 of the largest are resolved by it); only a candidate pays for the SVD.
        eigenvalues = np.linalg.eigvalsh(matrix.T @ matrix)
        if eigenvalues[0] > SCREEN_TOL * eigenvalues[-1]:
            return np.zeros((k, 0))
    # Vt is k x k either way; a full U (rows x rows) is only needed, and cheap, for a wide system.
    _, values, vt = np.linalg.svd(matrix, full_matrices=matrix.shape[0] < k)
    rank = int(np.sum(values > RANK_TOL * max(values[0], 1e-300) * max(matrix.shape)))
    return vt[rank:].T


def _restrict(basis: np.ndarray, row: np.ndarray) -> np.ndarray:
    """The part of the span of ``basis`` (k, q) orthogonal to the constraint ``row @ d = 0``."""
    coefficients = row @ basis
    if not np.any(coefficients):
        return basis
    # A Householder reflection mapping ``coefficients`` onto e_1; its other columns span the rest.
    v = coefficients.copy()
    v[0] += np.copysign(np.linalg.norm(v), v[0])
    v /= np.linalg.norm(v)
    reflected = basis - np.outer(basis @ v, 2.0 * v)
    return reflected[:, 1:]


def _column(w, fixed, below, bound, weights, scale, norms):
    """One column's vertex: ``w`` moved inside its optimal face, or None when it is one already.

    The arguments are restricted to the column's support (the move never leaves it). The work is
    done in equilibrated coordinates ``u = w * n`` (``n`` the norms of ``X``'s columns), so that a
    bias column of ones beside data of size 1e-150 does not look like the only direction with
    content; the entries' zeros and signs are the same in both.
    """
    u = _equilibrated_column(w * norms, fixed / norms, below / norms, bound, weights / norms, scale)
    return None if u is None else u / norms


def _equilibrated_column(w, fixed, below, bound, weights, scale):
    S = np.flatnonzero(w)
    if S.size == 0:
        return None
    slack = bound - below @ w
    tight = slack <= TIGHT_TOL * scale
    system = np.vstack([fixed[:, S], below[tight][:, S], (weights[S] * np.sign(w[S]))[None, :]])
    basis = _null_space(system)
    if basis.shape[1] == 0:
        return None
    w = w.copy()
    support = S.copy()
    loose = np.flatnonzero(~tight)
    penalized = weights[support] > 0
    steps_taken = 0
    while basis.shape[1] > 0:
        d = basis[:, 0]
        # Largest step t >= 0 along d (or -d): an entry reaches zero, or a slack row gets tight.
        # The rows' growth along d is one product with the full rows (no copy of a submatrix).
        full = np.zeros(w.shape[0])
        full[support] = d
        growth_d = (below @ full)[loose] if loose.size else np.zeros(0)
        steps, events = [], []
        for direction in (1.0, -1.0):
            dd = direction * d
            shrinking = penalized & (w[support] * dd < 0)
            to_zero = np.full(support.size, np.inf)
            to_zero[shrinking] = -w[support][shrinking] / dd[shrinking]
            growth = direction * growth_d
            to_row = np.full(loose.size, np.inf)
            rising = growth > 0
            to_row[rising] = np.maximum(slack[loose][rising], 0.0) / growth[rising]
            i, r = (int(np.argmin(to_zero)), int(np.argmin(to_row)) if loose.size else -1)
            best_zero, best_row = to_zero[i], (to_row[r] if loose.size else np.inf)
            steps.append(min(best_zero, best_row))
            events.append(("zero", i) if best_zero <= best_row else ("row", r))
        pick = int(np.argmin(steps))
        if not np.isfinite(steps[pick]):
            basis = basis[:, 1:]  # moves only unpenalized entries, unbounded: no vertex that way
            continue
        step = (1.0 if pick == 0 else -1.0) * steps[pick]
        w[support] += step * d
        kind, index = events[pick]
        slack = bound - below @ w
        if kind == "zero":
            w[support[index]] = 0.0
            keep = np.ones(support.size, dtype=bool)
            keep[index] = False
            row = np.zeros(support.size)
            row[index] = 1.0
            basis = _restrict(basis, row)[keep]
            support, penalized = support[keep], penalized[keep]
        else:
            row_index = loose[index]
            basis = _restrict(basis, below[row_index, support])
            loose = np.delete(loose, index)
        steps_taken += 1
        if basis.shape[1] and steps_taken % REORTHONORMALIZE == 0:
            basis, _ = np.linalg.qr(basis)  # keep it orthonormal against drift
    return w


def to_vertex(program, W: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """``(W', moved)``: each column of the optimal ``W`` (N, M) moved to a vertex of its optimal face.

    ``moved`` (M,) marks the columns that changed. A column is kept as it was unless its fit outputs,
    l1 norm and inequalities are unchanged to round-off (``KEEP_TOL``). ``W`` itself is not modified.
    """
    X = program.X
    N, M = program.shape[1:]
    weights = _weights(program)
    scale = max(program.output_scale, 1e-300)
    fit_mask = np.zeros((X.shape[0], M), dtype=bool)
    below_mask = np.zeros_like(fit_mask)
    bounds = np.zeros(fit_mask.shape)
    for term in program.fits:
        if isinstance(term, Below):
            below_mask |= term.mask
            bounds = np.where(term.mask, term.target, bounds)
        else:
            fit_mask |= term.mask
    out = np.array(W, dtype=float, copy=True)
    moved = np.zeros(M, dtype=bool)
    column_norms = stable_norm(X, axis=0)
    column_norms = np.where(column_norms > 0, column_norms, 1.0)
    for m in range(M):
        S = np.flatnonzero(out[:, m])
        if S.size == 0:
            continue
        X_S = X[:, S]
        w = out[S, m]
        fixed, below = X_S[fit_mask[:, m]], X_S[below_mask[:, m]]
        bound = bounds[below_mask[:, m], m]
        # An interior-point answer's zeros (about 1e-9 of the largest entry) stay where they are:
        # the move works on the other entries, with the inequalities' bounds net of the dust.
        moving = np.abs(w) > DUST_TOL * np.abs(w).max()
        dust = np.where(moving, 0.0, w)
        moved_part = _column(w[moving], fixed[:, moving], below[:, moving], bound - below @ dust,
                             weights[S[moving], m], scale, column_norms[S[moving]])
        if moved_part is None:
            continue
        candidate = dust.copy()
        candidate[moving] = moved_part
        change = np.abs(fixed @ (candidate - w)).max(initial=0.0)
        # The size of the sums that make Z: round-off is relative to it.
        size = (np.abs(fixed) @ np.abs(w)).max(initial=0.0)
        l1_before, l1_after = weights[S, m] @ np.abs(w), weights[S, m] @ np.abs(candidate)
        excess = np.maximum(below @ candidate - bound, 0.0).max(initial=0.0)
        excess_before = np.maximum(below @ w - bound, 0.0).max(initial=0.0)
        if (change <= KEEP_TOL * size and l1_after <= l1_before * (1 + KEEP_TOL)
                and excess <= excess_before + KEEP_TOL * scale
                and np.count_nonzero(candidate) < np.count_nonzero(w)):
            out[S, m] = candidate
            moved[m] = True
    return out, moved
