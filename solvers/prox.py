r"""Projection and prox kernels: one function per operator, numpy or torch in, the same kind out.

Every kernel takes the input first and its parameters as keyword arguments, states the exact problem
it solves, and returns a new array of the input's kind, dtype and device (a torch tensor stays on its
GPU). Kernels check their parameters and raise ``ValueError``; checking the data (NaN, infinities,
shapes against a model) is the modeling layer's job, done before a kernel is called.

Vector sets
    :func:`project_l1_ball`, :func:`project_l1_inf_ball` (a batch of l1 balls),
    :func:`project_sparse`, :func:`project_subspace`; the matrix sets (nuclear-norm ball, low rank,
    sum-of-max ball) are in :mod:`solvers.prox_matrix`.
Penalties
    :func:`prox_l1` (soft threshold), :func:`prox_l0` (hard threshold), :func:`prox_transformed_l1`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays
from ._arrays import namespace

__all__ = [
    "project_l1_ball",
    "project_l1_inf_ball",
    "project_sparse",
    "project_subspace",
    "prox_l1",
    "prox_l0",
    "prox_transformed_l1",
]


def _check_radius(radius) -> float:
    radius = float(radius)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0; got {radius}.")
    return radius


def _check_step(step) -> float:
    step = float(step)
    if not math.isfinite(step) or step < 0:
        raise ValueError(f"step must be a finite number >= 0; got {step}.")
    return step


def _three_axes(x, axis):
    """``x`` viewed as ``(before, n, after)`` with the reduced axis in the middle.

    ``axis=None`` makes the whole array one vector. The view keeps memory order, so reductions along
    a non-last axis (the columns of a C-ordered weight matrix) need no transposed copy.
    """
    if axis is None:
        return x.reshape(1, -1, 1)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {x.ndim} dimensions.")
    axis %= x.ndim
    before = math.prod(x.shape[:axis])
    return x.reshape(before, x.shape[axis], -1)


def _soft_threshold_dense(x, threshold, out):
    """``sign(x) max(|x| - threshold, 0)``, written into ``out`` (same shape and dtype as ``x``).

    ``threshold`` is float64 and broadcasts to ``x``. Float64 input takes the two-pass form
    ``x - clip(x, -threshold, threshold)``. Other dtypes subtract the threshold from the magnitudes
    as a float64 ``high + low`` pair: a float32 entry of 1e9 and a threshold just below it keep their
    small difference exact instead of rounding it to a multiple of 64.
    """
    xp = namespace(x)
    if _arrays.size(threshold) == 1:
        # A Python number takes the fast scalar loops; a broadcast 1-element array is several times slower.
        threshold = float(threshold.reshape(()))
    if x.dtype == xp.float64:
        _arrays.clip_into(x, -threshold, threshold, out)
        return xp.subtract(x, out, out=out)
    high, low = _arrays.split_high_low(threshold, x)
    xp.abs(x, out=out)
    xp.subtract(out, high, out=out)
    xp.subtract(out, low, out=out)
    _arrays.clip_below_inplace(out, 0.0)
    return xp.copysign(out, x, out=out)


def _soft_threshold_sparse(x, threshold, positions, labels, out):
    """``sign(x) max(|x| - threshold, 0)`` into ``out``, when only the entries at ``positions`` can be nonzero.

    ``positions`` index the C-ordered flattening of ``x`` (shape ``(before, n, after)``), ``labels``
    their rows (None for one row). The few survivors are computed in float64 and scattered into
    zeros, so the output costs about one pass instead of three and is exact for any input dtype.
    """
    xp = namespace(x)
    values = _arrays.to_float64(x.reshape(-1)[positions])
    level = threshold.reshape(-1) if labels is None else threshold.reshape(-1)[labels]
    shrunk = _arrays.clip_below_inplace(xp.abs(values) - level, 0.0)
    out[...] = 0
    out.reshape(-1)[positions] = _arrays.cast_like(xp.copysign(shrunk, values), x)
    return out


def _sorted_thresholds(values, radius):
    """Exact l1-ball thresholds of the rows of ``values`` (sorted descending along the last axis).

    Returns ``(tau, count)``: the row's threshold and how many entries exceed it, from the classical
    rule ``count = #{j : v_j > (v_1 + ... + v_j - radius) / j}`` (Held, Wolfe and Crowder 1974).
    """
    xp = namespace(values)
    cumulative = xp.cumsum(values, axis=-1, dtype=xp.float64)
    positions = _arrays.new_array(np.arange(1, values.shape[-1] + 1), cumulative)
    count = xp.sum(values * positions > cumulative - radius, axis=-1, keepdims=True)
    # j = 1 always qualifies; a radius below the spacing of v_1 can round it away.
    count = xp.clip(count, 1, None)
    tau = (_arrays.take_along_axis(cumulative, count - 1, axis=-1) - radius) / count
    return tau, count


def _sampled_lower_bounds(magnitudes, radius):
    """A guess below each row's threshold, from a strided sample of the row, or -inf.

    The sample's own threshold (for the radius scaled by the sample fraction) estimates the row's;
    the guess is the sample value with ``3 sqrt(count) + 3`` more sample entries above it than that
    threshold, so that it falls below the row's threshold except with small probability. A guess
    is only a starting point: the callers check it and fall back to a certain lower bound.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    per_row = min(n, max(256, 4096 // (before * after)))
    sample = _arrays.contiguous(xp.moveaxis(magnitudes[:, ::n // per_row, :], 1, -1))
    sorted_sample = _arrays.sort_descending(sample, axis=-1)
    size = sorted_sample.shape[-1]
    _, count = _sorted_thresholds(sorted_sample, radius * size / n)
    margin = _arrays.as_index(count + 3 * xp.sqrt(_arrays.to_float64(count)) + 3)
    guess = _arrays.take_along_axis(sorted_sample, xp.clip(margin, 0, size - 1), axis=-1)
    guess = xp.where(margin < size, _arrays.to_float64(guess), _arrays.new_array(-np.inf, count,
                                                                                 dtype=xp.float64))
    return xp.moveaxis(guess, -1, 1)


def _michelot(values, labels, start, radius):
    """Michelot's fixed-point search on candidates labelled by row, for many rows at once.

    ``values`` (float64) are candidate magnitudes, ``labels`` their rows (None when there is one row,
    which is the common ``axis=None`` case and spares the bincounts), ``start`` (one per row) the
    level above which the candidates were taken. Each pass sets a row's level to
    ``(sum of its kept values - radius) / (number kept)`` and drops the values at or below it. From a
    level below the threshold the level only grows and the kept set only shrinks, so the passes end,
    at the exact threshold (Michelot 1986). Returns ``(tau, valid)``; ``valid`` is False for rows whose
    ``start`` lay above the threshold (the first pass then lowers the level), and their ``tau`` is
    meaningless.
    """
    xp = namespace(values)
    rows = start.shape[0]
    tau, valid = start, None
    while True:
        if labels is None:
            counts = _arrays.new_array([_arrays.size(values)], values)
            sums = xp.sum(values, axis=0, keepdims=True)
        else:
            counts = _arrays.segment_sum(labels, rows)
            sums = _arrays.segment_sum(labels, rows, weights=values)
        # A row left empty (its largest entries equal the level up to rounding) keeps its level.
        tau = xp.where(counts > 0, (sums - radius) / xp.clip(counts, 1, None), tau)
        if valid is None:
            valid = (counts > 0) & (tau >= start)
        keep = values > (tau if labels is None else tau[labels])
        if bool(keep.all()):
            return tau, valid
        values = values[keep]
        if labels is not None:
            labels = labels[keep]


def _row_thresholds(magnitudes, radius, total, start, *, check=True):
    """The l1-ball thresholds of the rows of ``magnitudes`` (``(before, n, after)``), all at once.

    ``start`` (``(before, 1, after)``, float64) is a level per row, -inf for rows inside the ball
    (all their entries are kept, so that the sparse output can copy them). While more than a quarter
    of all entries lie above the levels, Michelot's update runs in dense form (per-row counts and
    sums of the entries above the level, no copies); rows whose start overshot (their first update
    goes down) restart from the certain bound ``(total - radius) / n``. Then the entries above the
    levels are gathered with their row labels and :func:`_michelot` finishes on them; rows it finds
    overshot are redone, alone, from the certain bound, with ``check=False``: that bound is trusted
    (a rounding error in it must not send a row round again).

    Returns ``(tau, candidates)``: ``candidates = (positions, labels)`` of the gathered entries, a
    superset of the nonzeros of the projection, or None when the dense form finished (or a row was
    redone) and the output must be computed densely.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    certain = (total - radius) / n
    tau, counts_before = start, None
    while True:
        above = magnitudes > _arrays.round_down(tau, magnitudes)
        if 4 * int(xp.count_nonzero(above)) <= _arrays.size(magnitudes):
            break
        counts = xp.sum(above, axis=1, keepdims=True)
        sums = xp.sum(xp.where(above, magnitudes, 0), axis=1, keepdims=True, dtype=xp.float64)
        updated = (sums - radius) / xp.clip(counts, 1, None)
        if counts_before is not None and bool((counts == counts_before).all()):
            return xp.where(counts > 0, updated, tau), None
        overshot = (updated < tau) & check if counts_before is None else xp.zeros_like(updated, dtype=bool)
        tau = xp.where(overshot, certain, xp.maximum(tau, updated))
        counts_before = xp.where(overshot, -1, counts)
    positions = _arrays.flat_nonzero(above)
    labels = (positions // (n * after)) * after + positions % after if before * after > 1 else None
    values = _arrays.to_float64(magnitudes.reshape(-1)[positions])
    result, valid = _michelot(values, labels, tau.reshape(-1), radius)
    result = result.reshape(tau.shape)
    retry = _arrays.flat_nonzero(~valid & check)
    if _arrays.size(retry) == 0:
        return result, (positions, labels)
    index_before, index_after = retry // after, retry % after
    retried, _ = _row_thresholds(magnitudes[index_before, :, index_after][:, :, None], radius,
                                 total[index_before, :, index_after][:, :, None],
                                 certain[index_before, :, index_after][:, :, None], check=False)
    result[index_before, :, index_after] = retried[:, :, 0]
    return result, None


def _l1_thresholds(magnitudes, radius):
    """Soft-threshold levels projecting each row of ``magnitudes`` (``(before, n, after)``) onto the ball.

    Rows outside start from the larger of a sampled guess and the certain lower bound
    ``(||v||_1 - radius) / n``; :func:`_row_thresholds` finishes exactly; rows inside get 0.
    Returns ``(tau, candidates)`` as :func:`_row_thresholds` does, or None when every row is inside.
    """
    xp = namespace(magnitudes)
    if magnitudes.shape[0] * magnitudes.shape[2] == 1:
        # numpy's flat sum is about twice as fast as the same sum over the middle axis of (1, n, 1).
        total = xp.sum(magnitudes.reshape(-1), dtype=xp.float64).reshape(1, 1, 1)
    else:
        total = xp.sum(magnitudes, axis=1, keepdims=True, dtype=xp.float64)
    outside = total > radius
    if not bool(outside.any()):
        return None
    start = xp.maximum((total - radius) / magnitudes.shape[1], _sampled_lower_bounds(magnitudes, radius))
    start = xp.where(outside, start, _arrays.new_array(-np.inf, start))
    tau, candidates = _row_thresholds(magnitudes, radius, total, start)
    return xp.where(outside, tau, _arrays.new_array(0.0, tau)), candidates


def project_l1_ball(x, *, radius: float, axis: int | None = None):
    r"""Euclidean projection onto the l1 ball, of the whole array or of each slice along ``axis``.

    For each vector ``v`` (the whole array when ``axis`` is None, else every slice along ``axis``)
    solves

    .. math:: P(v) = \operatorname{argmin}_z \tfrac12 \|z - v\|_2^2
              \quad\text{subject to}\quad \|z\|_1 \le r,

    whose solution is the soft threshold :math:`P(v)_i = \operatorname{sign}(v_i)\max(|v_i| - \tau, 0)`
    with :math:`\tau = 0` when :math:`\|v\|_1 \le r`, else the unique :math:`\tau > 0` with
    :math:`\sum_i \max(|v_i| - \tau, 0) = r`.

    The threshold is found without sorting the vector: a strided sample gives a starting guess
    (Condat 2016's idea of starting close to the answer), a pass keeps the entries above it, and
    Michelot's fixed-point search (Michelot 1986) finishes exactly on those, in float64. All slices
    are processed together (no Python loop over them), on the input's device.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
        The point(s) to project.
    radius : float
        The ball's radius ``r >= 0``; 0 gives zeros.
    axis : int or None
        None: ``x`` is one vector. An int: every slice ``x[..., :, ...]`` along that axis is projected
        onto its own ball (``axis=0`` on an ``(N, M)`` matrix projects each column).

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
        A new array of ``x``'s kind, dtype and device. Slices already inside the ball are returned
        bitwise unchanged.

    Examples
    --------
    >>> project_l1_ball(np.array([3.0, -1.0, 0.5]), radius=2.0)
    array([2., 0., 0.])
    """
    radius = _check_radius(radius)
    x = _arrays.as_floating(x)
    xp = namespace(x)
    if _arrays.size(x) == 0:
        return _arrays.copy(x)
    if radius == 0:
        return xp.zeros_like(x)
    rows = _three_axes(x, axis)
    magnitudes = xp.abs(rows)
    found = _l1_thresholds(magnitudes, radius)
    if found is None:
        return _arrays.copy(x)
    tau, candidates = found
    if candidates is not None and 16 * _arrays.size(candidates[0]) <= _arrays.size(x):
        return _soft_threshold_sparse(rows, tau, *candidates, out=magnitudes).reshape(x.shape)
    out = _soft_threshold_dense(rows, tau, out=magnitudes)
    if rows.shape[0] * rows.shape[2] > 1 and bool((tau == 0).any()):
        # Rows inside the ball come back bitwise, signed zeros included.
        out = xp.where(tau == 0, rows, out)
    return out.reshape(x.shape)


def project_l1_inf_ball(x, *, radius: float):
    r"""Projection onto paper 001's L1,inf ball: every column of ``W`` in its own l1 ball.

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \max_j \|Z_{:, j}\|_1 \le r.

    Column ``j`` holds the incoming weights of output neuron ``j`` (bias row included, in the
    design's ``(N, M)`` orientation). The set is a product of l1 balls, so the projection is one
    :func:`project_l1_ball` per column, all done in one batched call.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., N, M)
        The weight matrix (or a batch of them).
    radius : float
        The bound ``r >= 0`` on every column's l1 norm.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., N, M)
        The projection, of ``x``'s kind, dtype and device.
    """
    if getattr(x, "ndim", np.ndim(x)) < 2:
        raise ValueError("x must have at least 2 dimensions (N, M): the columns are the neurons.")
    return project_l1_ball(x, radius=radius, axis=-2)


def project_sparse(x, *, k: int, axis: int | None = None):
    r"""Projection onto the k-sparse vectors (nonconvex): keep the ``k`` largest magnitudes.

    .. math:: P(v) \in \operatorname{argmin}_z \|z - v\|_2^2
              \quad\text{subject to}\quad \|z\|_0 \le k,

    for the whole array (``axis=None``) or each slice along ``axis``. Among entries of equal
    magnitude at the cut, the lowest index (in C order along the slice) is kept, so the result
    is deterministic.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    k : int
        How many entries to keep, ``k >= 0``; 0 gives zeros, ``k >= n`` returns ``x``.
    axis : int or None
        As in :func:`project_l1_ball`.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
        ``x`` with all but ``k`` entries (per slice) set to zero.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0; got {k!r}.")
    x = _arrays.as_floating(x)
    xp = namespace(x)
    rows = _three_axes(x, axis) if _arrays.size(x) else x
    if _arrays.size(x) == 0 or k >= rows.shape[1]:
        return _arrays.copy(x)
    if k == 0:
        return xp.zeros_like(x)
    magnitudes = xp.abs(rows)
    cut = _arrays.kth_largest(magnitudes, k, axis=1)
    larger = magnitudes > cut
    places_left = k - xp.sum(larger, axis=1, keepdims=True)
    at_cut = magnitudes == cut
    keep = larger | (at_cut & (xp.cumsum(at_cut, axis=1) <= places_left))
    return xp.where(keep, rows, 0).reshape(x.shape)


def project_subspace(x, *, basis):
    r"""Orthogonal projection onto the span of the orthonormal columns of ``basis``.

    .. math:: P(v) = Q Q^\top v = \operatorname{argmin}_{z \in \operatorname{span}(Q)} \|z - v\|_2,
              \qquad Q^\top Q = I.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., n)
        Vectors (the last axis), e.g. flattened weight matrices.
    basis : ndarray or torch.Tensor, shape (n, d)
        ``Q``, with orthonormal columns (not checked here; the modeling layer checks it once).

    Returns
    -------
    ndarray or torch.Tensor, shape (..., n)
    """
    x = _arrays.as_floating(x)
    basis = _arrays.new_array(basis, x)
    if basis.ndim != 2 or basis.shape[0] != x.shape[-1]:
        raise ValueError(f"basis must have shape (n, d) with n = {x.shape[-1]}; got {tuple(basis.shape)}.")
    return (x @ basis) @ basis.T


def prox_l1(x, *, step: float):
    r"""Prox of the l1 norm (soft threshold): ``argmin_z 0.5 ||z - x||^2 + step ||z||_1``.

    .. math:: \operatorname{prox}(x)_i = \operatorname{sign}(x_i) \max(|x_i| - \text{step}, 0).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        The weight ``>= 0`` of the l1 term (a penalty's strength times the step size).

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    x = _arrays.as_floating(x)
    return _soft_threshold_dense(x, _arrays.new_array(step, x, dtype=namespace(x).float64),
                                 out=namespace(x).empty_like(x))


def prox_l0(x, *, step: float):
    r"""Prox of the l0 count (hard threshold): ``argmin_z 0.5 ||z - x||^2 + step ||z||_0``.

    .. math:: \operatorname{prox}(x)_i = x_i \text{ if } |x_i| > \sqrt{2\,\text{step}}, \text{ else } 0.

    At ``|x_i| = sqrt(2 step)`` both 0 and ``x_i`` minimize; 0 is returned. The comparison is exact
    (the float64 threshold is rounded down to ``x``'s dtype, not to nearest).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        The weight ``>= 0`` of the l0 term.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    x = _arrays.as_floating(x)
    xp = namespace(x)
    threshold = _arrays.round_down(_arrays.new_array(math.sqrt(2.0 * step), x, dtype=xp.float64), x)
    return xp.where(xp.abs(x) > threshold, x, 0)


def prox_transformed_l1(x, *, step: float, a: float):
    r"""Prox of the transformed l1 penalty (Zhang and Xin 2017; paper 002's thresholding).

    Solves, entrywise, with :math:`\lambda = \text{step}` and
    :math:`\rho_a(z) = (a + 1)|z| / (a + |z|)`,

    .. math:: \operatorname{prox}(x) = \operatorname{argmin}_z \tfrac12 (z - x)^2 + \lambda \rho_a(z),

    whose solution is 0 when :math:`|x| \le t` and otherwise

    .. math:: \operatorname{sign}(x)\Big[\tfrac23 (a + |x|)\cos\tfrac{\varphi}{3} - \tfrac{2a}{3}
              + \tfrac{|x|}{3}\Big], \quad
              \varphi = \arccos\Big(1 - \frac{27 \lambda a (a + 1)}{2 (a + |x|)^3}\Big),

    with :math:`t = \lambda (a + 1) / a` if :math:`\lambda \le a^2 / (2 (a + 1))`, else
    :math:`t = \sqrt{2 \lambda (a + 1)} - a / 2`. The bracket is evaluated as
    :math:`|x| - \tfrac43 (a + |x|) \sin^2(\varphi / 6)` (the same number, without the cancellation
    that ruins it in float32 for large ``a``), and :math:`\varphi = \arccos(1 - \delta)` as
    :math:`2 \arcsin(\sqrt{\delta / 2})` with :math:`\delta / 2` clamped to ``[0, 1]``, which is the
    arccos argument clamped to ``[-1, 1]`` without losing :math:`\delta` to rounding next to 1.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        ``lambda >= 0``, the weight of the penalty.
    a : float
        The shape parameter ``a > 0``: small ``a`` approaches l0, large ``a`` approaches l1.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    a = float(a)
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"a must be a finite number > 0; got {a}.")
    x = _arrays.as_floating(x)
    xp = namespace(x)
    if step == 0:
        return _arrays.copy(x)
    if step <= a * a / (2 * (a + 1)):
        threshold = step * (a + 1) / a
    else:
        threshold = math.sqrt(2 * step * (a + 1)) - a / 2
    magnitudes = xp.abs(x)
    shifted = a + magnitudes
    half_delta = xp.clip(27 * step * a * (a + 1) / (4 * shifted ** 3), 0, 1)
    phi = 2 * xp.arcsin(xp.sqrt(half_delta))
    shrunk = magnitudes - (4.0 / 3.0) * shifted * xp.sin(phi / 6) ** 2
    keep = magnitudes > _arrays.round_down(_arrays.new_array(threshold, x, dtype=xp.float64), x)
    return xp.where(keep, xp.copysign(shrunk, x), 0)
