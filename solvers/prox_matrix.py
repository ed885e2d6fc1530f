r"""Projection kernels onto sets of matrices: nuclear-norm ball, low rank, sum-of-max (l1,inf) ball.

Same contract as :mod:`solvers.prox`: the input first, parameters as keywords, numpy or torch in and
the same kind, dtype and device out, ``ValueError`` for bad parameters. Matrices are the last two
axes; the SVD-based kernels are batched over any leading axes.
"""

from __future__ import annotations


import numpy as np

from . import _arrays
from ._arrays import namespace
from .prox import _check_radius, project_l1_ball

__all__ = [
    "project_nuclear_ball",
    "project_low_rank",
    "project_sum_of_max_ball",
]


def _check_matrices(x):
    x = _arrays.as_floating(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a matrix (or a batch of them); got shape {tuple(x.shape)}.")
    return x


def project_nuclear_ball(x, *, radius: float):
    r"""Projection onto the nuclear-norm ball (the convex hull of low-rank matrices, paper 000).

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \|Z\|_* = \textstyle\sum_i \sigma_i(Z) \le r.

    With ``W = U diag(s) V^T``, the answer is ``U diag(p) V^T`` where ``p`` is the projection of the
    singular values ``s`` onto the l1 ball of radius ``r`` (von Neumann's trace inequality).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., m, n)
    radius : float
        ``r >= 0``; 0 gives zeros.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., m, n)
        The projection; matrices already inside come back bitwise unchanged.
    """
    radius = _check_radius(radius)
    x = _check_matrices(x)
    xp = namespace(x)
    if radius == 0:
        return xp.zeros_like(x)
    left, singular, right = xp.linalg.svd(x, full_matrices=False)
    inside = xp.sum(_arrays.to_float64(singular), axis=-1) <= radius
    if bool(inside.all()):
        return _arrays.copy(x)
    shrunk = project_l1_ball(singular, radius=radius, axis=-1)
    projected = (left * shrunk[..., None, :]) @ right
    return xp.where(inside[..., None, None], x, projected)


def project_low_rank(x, *, rank: int):
    r"""Projection onto the matrices of rank at most ``rank`` (nonconvex): the truncated SVD.

    .. math:: P(W) \in \operatorname{argmin}_Z \|Z - W\|_F \quad\text{subject to}\quad
              \operatorname{rank}(Z) \le k,
              \qquad P(W) = \textstyle\sum_{i \le k} \sigma_i u_i v_i^\top

    (Eckart and Young). When ``sigma_k = sigma_{k+1}`` the minimizer is not unique; the one kept
    is the one the SVD orders first.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., m, n)
    rank : int
        ``k >= 0``; 0 gives zeros, ``k >= min(m, n)`` returns ``x``.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., m, n)
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise ValueError(f"rank must be an integer >= 0; got {rank!r}.")
    x = _check_matrices(x)
    xp = namespace(x)
    if rank >= min(x.shape[-2:]):
        return _arrays.copy(x)
    if rank == 0:
        return xp.zeros_like(x)
    left, singular, right = xp.linalg.svd(x, full_matrices=False)
    return (left[..., :rank] * singular[..., None, :rank]) @ right[..., :rank, :]


@_arrays.numpy_on_cpu
def project_sum_of_max_ball(x, *, radius: float):
    r"""Projection onto the l1,inf ball of Quattoni et al. (2009): ``sum_i max_j |W[i, j]| <= r``.

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \textstyle\sum_i \max_j |Z_{ij}| \le r.

    The answer clips each row: ``P(W)[i, j] = sign(W[i, j]) min(|W[i, j]|, mu_i)``, with row caps
    ``mu_i >= 0`` summing to ``r`` and one common level ``theta`` such that every row with
    ``mu_i > 0`` loses exactly ``sum_j max(|W[i, j]| - mu_i, 0) = theta``, and rows with
    ``||W[i, :]||_1 <= theta`` are zeroed. Each cap is a decreasing, piecewise-linear function of
    ``theta`` whose breakpoints come from the row sorted by magnitude; so is their sum ``g(theta)``.
    The row norms first give a level ``theta_0 <= theta`` (see :func:`_level_floor`): the rows with
    ``||W[i, :]||_1 <= theta_0`` are zero, and only the others are sorted (``O(N' M log M)``, the cost
    of Quattoni et al.'s method on the ``N'`` rows left; a small radius leaves few). Newton's method
    on ``g`` then runs from ``theta_0`` (Chu et al.'s root-finding), each step a binary search per
    row; the steps end, exactly, when no row changes piece. The rows are batched: no Python loop
    over them. A CPU tensor is processed by the numpy form on a view of its memory. (A matrix inside
    the ball is recognized from its sorted rows, so it costs the sort too.)

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (N, M)
    radius : float
        ``r >= 0``; 0 gives zeros.

    Returns
    -------
    ndarray or torch.Tensor, shape (N, M)
        The projection; a matrix already inside comes back bitwise unchanged.
    """
    radius = _check_radius(radius)
    x = _arrays.as_floating(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a matrix of shape (N, M); got shape {tuple(x.shape)}.")
    xp = namespace(x)
    rows, columns = x.shape
    if rows * columns == 0:
        return _arrays.copy(x)
    if radius == 0:
        return xp.zeros_like(x) if bool(xp.any(x != 0)) else _arrays.copy(x)
    floor = 0.0
    if _prunes_rows(x, radius):
        norms = xp.sum(xp.abs(x), 1, dtype=xp.float64)
        floor = _level_floor(norms, radius * columns)
    # Rows whose l1 norm is at most the level lose everything: only the others are sorted.
    kept = _arrays.flat_nonzero(norms > floor * (1.0 - 1e-9)) if floor > 0 else None
    if kept is not None and _arrays.size(kept) < rows:
        caps = _arrays.new_array(np.zeros((rows, 1)), x, dtype=xp.float64)
        caps[kept] = _sum_of_max_caps(_negated_sorted_magnitudes(x[kept]), radius, floor)
        return _clip_rows(x, _arrays.cast_like(caps, x), xp.empty_like(x))
    ordered = _negated_sorted_magnitudes(x)
    # Outside for sure when the norms give a level; otherwise the row maxima tell.
    if floor == 0 and -float(xp.sum(ordered[:, 0])) <= radius:
        return _arrays.copy(x)
    caps = _sum_of_max_caps(ordered, radius, floor)
    # The kernel is done with the sorted rows' buffer (numpy's now holds piece starts): reuse it.
    out = ordered if ordered.dtype == x.dtype else xp.empty_like(x)
    return _clip_rows(x, _arrays.cast_like(caps, x), out)


# The row norms (a pass over the matrix) are computed when a sample of rows says that at least
# this fraction of the rows would be zeroed by the norms' level.
PRUNED_FRACTION = 0.125


def _prunes_rows(x, radius: float) -> bool:
    """Whether every ``s``-th row (about 64 of them), as a problem of its own with the radius
    scaled by its share of the rows, zeroes at least ``PRUNED_FRACTION`` of them by
    :func:`_level_floor`: then the full norms are worth their pass."""
    xp = namespace(x)
    rows, columns = x.shape
    sample = x[::max(rows // 64, 1)]
    norms = xp.sum(xp.abs(sample), 1, dtype=xp.float64)
    floor = _level_floor(norms, radius * columns * sample.shape[0] / rows)
    return floor > 0 and float(xp.sum(norms <= floor)) >= PRUNED_FRACTION * sample.shape[0]


def _level_floor(norms, budget: float) -> float:
    r"""A level ``theta_0 <= theta`` of :func:`project_sum_of_max_ball` from the row norms alone.

    A row that loses ``theta`` keeps a cap ``mu_i >= (||W_i||_1 - theta) / M`` (all ``M`` entries
    clipped at most), so ``r = sum_i mu_i >= sum_i max(||W_i||_1 - theta, 0) / M``: the level is at
    least the l1-ball threshold ``theta_0`` of the norms for the radius ``r M`` (0 when they are
    inside). Rows with ``||W_i||_1 <= theta_0`` are zero in the projection.
    """
    xp = namespace(norms)
    if float(xp.sum(norms)) <= budget:
        return 0.0
    ordered = _arrays.sort_descending(norms)
    partial = xp.cumsum(ordered, 0)
    positions = _arrays.new_array(np.arange(1, ordered.shape[0] + 1), partial)
    count = max(int(xp.sum(ordered * positions > partial - budget)), 1)
    return max(float((partial[count - 1] - budget) / count), 0.0)


def _level_bound(negative_sums, radius: float) -> float:
    r"""A level ``theta_k <= theta`` for each ``k`` in 1, 2, 4, ..., M; the largest of them.

    A convex piecewise-linear cap is the largest of its pieces, so ``mu_i(theta) >= max(S_i(k) -
    theta, 0) / k`` for any ``k`` (``S_i(k)`` the sum of the row's ``k`` largest magnitudes), and
    ``r = sum_i mu_i(theta) >= sum_i max(S_i(k) - theta, 0) / k``: ``theta`` is at least the
    l1-ball threshold ``theta_k`` of the column ``S(k)`` for the radius ``r k`` (0 when inside).
    Newton's method started there needs a few steps instead of a dozen from 0 (:func:`_level_floor`
    is the case ``k = M``). ``negative_sums`` holds ``-S``.
    """
    xp = namespace(negative_sums)
    rows, columns = negative_sums.shape
    sizes = sorted({1 << power for power in range(columns.bit_length()) if 1 << power <= columns} | {columns})
    budgets = radius * _arrays.new_array(np.array(sizes, dtype=np.float64), negative_sums)
    ordered = _arrays.sort_descending(-negative_sums[:, [size - 1 for size in sizes]].T, axis=-1)
    cumulative = xp.cumsum(ordered, 1)
    positions = _arrays.new_array(np.arange(1, rows + 1, dtype=np.float64), ordered)
    count = xp.clip(xp.sum(ordered * positions > cumulative - budgets[:, None], 1), 1, None)
    levels = (_arrays.take_along_axis(cumulative, (count - 1)[:, None], axis=1)[:, 0] - budgets) / count
    levels = xp.where(cumulative[:, -1] > budgets, levels, 0.0)
    return max(float(xp.amax(levels)), 0.0)


def _clip_rows(x, caps, out):
    """``sign(x) min(|x|, caps)`` into ``out``; ``caps`` (N, 1) in ``x``'s dtype. torch's clamp with
    per-row bounds (on a view of numpy's memory) runs in 0.95 ms on 1000 x 1000 where ``np.clip``
    takes 1.6 ms; the results are the same numbers."""
    if _arrays.is_tensor(x):
        return _arrays.clip_into(x, -caps, caps, out=out)
    import torch

    high = torch.from_numpy(caps)
    torch.clamp(torch.from_numpy(x), -high, high, out=torch.from_numpy(out))
    return out


def _count_starts_below(starts, level):
    """Per row, how many entries of ``starts`` (``(N, M)``, each row non-decreasing) are ``< level``
    (``(N, 1)``): a batched binary search, ``O(N log M)``, shaped ``(N, 1)`` int64."""
    xp = namespace(starts)
    rows, columns = starts.shape
    flat = starts.reshape(-1)
    # Flat position of each row's entry k - 1.
    before = _arrays.new_array(np.arange(rows, dtype=np.int64)[:, None] * columns - 1, starts,
                               dtype=xp.int64)
    last = before + columns
    count = xp.zeros_like(before)
    step = 1 << (int(columns).bit_length() - 1)
    # Branch-free lower bound: add each power of two while the entry it reaches is still below.
    while step:
        reach = before + count + step
        count = count + step * ((flat[xp.minimum(reach, last)] < level) & (reach <= last))
        step >>= 1
    return count


def _sum_of_max_level(negative_sums, starts, radius, floor: float):
    """The common level ``theta`` of :func:`project_sum_of_max_ball`, by Newton's method on ``g``.

    ``g(theta) = sum_i mu_i(theta)`` is convex, decreasing and piecewise linear; row ``i`` is on
    the piece that keeps ``k_i`` entries, ``mu_i = (S_i(k_i) - theta) / k_i``, where ``k_i`` is the
    number of its piece starts below ``theta`` (a binary search in the row). From ``floor`` (0 or
    :func:`_level_floor`'s bound), left of the root, each Newton step solves the current pieces' linear equation and lands left of
    the root again (convexity), at the root once no row changes piece: the pieces only move forward,
    so the steps are finitely many, each ``O(N log M)`` after the ``O(N M log M)`` sort (Chu et al.'s
    root-finding; a handful of steps in practice).
    """
    xp = namespace(negative_sums)
    rows, columns = negative_sums.shape
    norms = -negative_sums[:, -1:]
    theta = _arrays.new_array(np.full((rows, 1), floor), negative_sums)
    pieces = None
    for _ in range(rows * columns + 1):
        counts = _count_starts_below(starts, theta)
        active = theta <= norms
        # A row past its norm is on its last piece, zero: coded as M + 1 entries kept.
        current = xp.where(active, counts, columns + 1)
        if pieces is not None and bool((current == pieces).all()):
            break
        pieces = current
        index = xp.clip(counts - 1, 0, columns - 1)
        sizes = _arrays.to_float64(index + 1)
        row_sums = -_arrays.take_along_axis(negative_sums, index, axis=1)
        value = xp.sum(xp.where(active, (row_sums - theta) / sizes, 0.0))
        slope = xp.sum(xp.where(active, 1.0 / sizes, 0.0))
        step = (value - radius) / slope if float(slope) > 0 else 0.0
        # Rounding near the root can give a step <= 0: theta is then as good as floats make it.
        if not float(step) > 0:
            break
        theta = theta + step
    return float(theta[0, 0])


def _negated_sorted_magnitudes(x):
    """``-|x|`` in float64 with each row sorted ascending (the largest magnitudes first), a new
    array; numpy sorts the ``copysign`` of ``x`` in place."""
    if _arrays.is_tensor(x):
        return namespace(x).sort(-_arrays.to_float64(x).abs(), dim=1).values
    ordered = np.copysign(_arrays.to_float64(x), -1.0)
    ordered.sort(axis=1)
    return ordered


def _row_cumsum(x):
    """Running sums along the rows of the float64 matrix ``x`` (a new array of its kind).

    A numpy array is summed by torch on a view of its memory: the same left-to-right order (the
    same float64 sums, bitwise), four times faster than ``np.cumsum`` along rows (1.0 against 4.0
    ms for 1000 x 1000 on the 2-core dev box).
    """
    if _arrays.is_tensor(x):
        return x.cumsum(1)
    import torch

    return torch.from_numpy(x).cumsum(1).numpy()


def _sum_of_max_caps(negated, radius, floor: float):
    """The row caps ``mu`` (shape ``(N, 1)``, float64) of :func:`project_sum_of_max_ball`.

    With each row sorted descending, ``v_i(1) >= ... >= v_i(M)``, and ``S_i(k)`` the sum of its
    ``k`` largest entries, the cap on the piece that keeps ``k`` entries above it is
    ``mu_i(theta) = (S_i(k) - theta) / k``. That piece starts at ``B_i(k) = S_i(k) - k v_i(k)``
    (where ``mu_i`` reaches ``v_i(k)``; ``B_i(1) = 0``, non-decreasing in ``k``), and after
    ``||row||_1 = S_i(M)`` the row is zero. :func:`_sum_of_max_level` finds the level; the caps are
    then recomputed from each row's own piece. ``negated`` holds ``-v`` (float64, each row ascending,
    so that no pass negates the sort), and the running sums ``-S``: ``B = k (-v) - (-S)``, the same
    numbers as ``S - k v``. numpy's ``negated`` is overwritten with the piece starts.
    """
    xp = namespace(negated)
    rows, columns = negated.shape
    negative_sums = _row_cumsum(negated)
    sizes = _arrays.new_array(np.arange(1, columns + 1, dtype=np.float64), negated)
    # numpy's starts overwrite the sorted values (one buffer fewer to fault in); torch's may not.
    starts = negated if not _arrays.is_tensor(negated) else xp.empty_like(negated)
    starts = xp.subtract(xp.multiply(negated, sizes, out=starts), negative_sums, out=starts)
    level = _sum_of_max_level(negative_sums, starts, radius,
                              max(floor, _level_bound(negative_sums, radius)))

    # Redo the last step from each row's own piece, so that the running sums' rounding drops out.
    counts = _count_starts_below(starts, _arrays.new_array(np.full((rows, 1), level), starts))
    # The rows of largest l1 norm are active for every r > 0, even when rounding puts the level at
    # or above their norm (r far below the data's spacing); their piece is then the last one that
    # counts their nonzero entries: the pieces that start below the norm are those of the nonzero
    # entries (a zero entry's piece starts at the norm).
    norms = -_arrays.contiguous(negative_sums[:, -1:])
    active = (level <= norms) | (norms == xp.amax(norms))
    last_piece = _count_starts_below(starts, norms)
    index = xp.clip(xp.minimum(counts, last_piece) - 1, 0, columns - 1)
    row_sums = -_arrays.take_along_axis(negative_sums, index, axis=1)
    row_sizes = _arrays.to_float64(index + 1)
    # Relative to the largest active row sum P: with d_i = S_i - P, the level is P + level' and the
    # caps (d_i - level') / k_i. Forming S_i - level directly cancels: a radius 1e-7 of the data's
    # size came out 3e-10 off the boundary, and one 1e-16 of it not at all.
    pivot = float(xp.amax(xp.where(active, row_sums, -np.inf)))
    offsets = row_sums - pivot
    level = (float(xp.sum(xp.where(active, offsets / row_sizes, 0))) - radius) \
        / float(xp.sum(xp.where(active, 1.0 / row_sizes, 0)))
    return xp.where(active, _arrays.clip_below_inplace((offsets - level) / row_sizes, 0.0), 0.0)
