"""The l1-ball threshold search behind :func:`solvers.prox.project_l1_ball`, and the soft thresholds.

Arrays arrive as ``(before, n, after)`` views: every ``(before, after)`` pair is a row of length
``n`` (the reduced axis in the middle, so that a C-ordered ``(N, M)`` weight matrix is read by columns
without a transposed copy). The search is sort-free: a strided sample gives each row a starting level,
the entries above it are gathered, and Michelot's fixed-point iteration finishes exactly on them.
"""

from __future__ import annotations

import numpy as np

from . import _arrays
from ._arrays import namespace

__all__ = ["thresholds", "soft_threshold_dense", "soft_threshold_sparse", "far_rows",
           "reproject_rows"]


def soft_threshold_dense(x, threshold, out):
    """``sign(x) max(|x| - threshold, 0)``, written into ``out`` (same shape and dtype as ``x``).

    ``threshold`` is float64 and broadcasts to ``x``. Float64 input takes the two-pass form
    ``x - clip(x, -threshold, threshold)``. Other dtypes subtract the threshold from the magnitudes
    as a float64 ``high + low`` pair: a float32 entry of 1e9 and a threshold just below it keep their
    small difference exact instead of rounding it to a multiple of 64.
    """
    xp = namespace(x)
    if _arrays.size(threshold) == 1:
        # A Python number takes numpy's fast scalar loops; a 1-element array is several times slower.
        threshold = float(threshold.reshape(()))
    if x.dtype == xp.float64:
        _arrays.clip_into(x, -threshold, threshold, out)
        return xp.subtract(x, out, out=out)
    # A threshold beyond the dtype's largest number zeroes every entry, as that largest number does;
    # split into high + low it would give inf - inf.
    largest = _arrays.largest_finite(x)
    threshold = min(threshold, largest) if isinstance(threshold, float) else xp.clip(threshold, None, largest)
    high, low = _arrays.split_high_low(threshold, x)
    xp.abs(x, out=out)
    xp.subtract(out, high, out=out)
    xp.subtract(out, low, out=out)
    _arrays.clip_below_inplace(out, 0.0)
    return xp.copysign(out, x, out=out)


def soft_threshold_sparse(x, threshold, positions, labels):
    """``sign(x) max(|x| - threshold, 0)`` as a new array, when only ``positions`` can be nonzero.

    ``positions`` index the C-ordered flattening of ``x`` (shape ``(before, n, after)``), ``labels``
    their rows (None for one row). The few survivors are computed in float64 and scattered into
    fresh zeros (numpy's come from calloc: untouched pages cost nothing), so the output costs far
    less than the three dense passes and is exact for any input dtype.
    """
    xp = namespace(x)
    values = _arrays.to_float64(x.reshape(-1)[positions])
    level = threshold.reshape(-1) if labels is None else threshold.reshape(-1)[labels]
    shrunk = xp.abs(values) - level
    # Only survivors are written (rows inside, level 0, entirely: their signed zeros too), so that
    # the pages of zeros are never touched.
    written = (shrunk > 0) | (level == 0)
    out = _arrays.zeros(x)
    out.reshape(-1)[positions[written]] = _arrays.cast_like(xp.copysign(shrunk[written], values[written]), x)
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
    guess = _arrays.to_float64(_arrays.take_along_axis(sorted_sample, xp.clip(margin, 0, size - 1), axis=-1))
    guess = xp.where(margin < size, guess, _arrays.new_array(-np.inf, guess))
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


def _certain_bounds(magnitudes, radius):
    """``(||v||_1 - radius) / n`` per row: below the threshold of every row outside the ball, since
    ``sum_i max(|v_i| - t, 0) >= ||v||_1 - n t = radius`` there."""
    xp = namespace(magnitudes)
    total = xp.sum(magnitudes, axis=1, keepdims=True, dtype=xp.float64)
    return (total - radius) / magnitudes.shape[1]


def _row_thresholds(magnitudes, radius, start, *, check=True):
    """The l1-ball thresholds of the rows of ``magnitudes`` (``(before, n, after)``), all at once.

    ``start`` (``(before, 1, after)``, float64) is a level per row, -inf for rows inside the ball
    (all their entries are kept, so that the sparse output can copy them). While more than a quarter
    of all entries lie above the levels, Michelot's update runs in dense form (per-row counts and
    sums of the entries above the level, no copies); rows whose start overshot (their first update
    goes down) restart from the certain bound of :func:`_certain_bounds`. Then the entries above the
    levels are gathered with their row labels and :func:`_michelot` finishes on them; rows it finds
    overshot are redone, alone, from the certain bound, with ``check=False``: that bound is trusted
    (a rounding error in it must not send a row round again).

    Returns ``(tau, candidates)``: ``candidates = (positions, labels)`` of the gathered entries, a
    superset of the nonzeros of the projection, or None when the dense form finished and the output
    must be computed densely.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
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
        overshot = (updated < tau) & (check and counts_before is None)
        tau = xp.maximum(tau, updated)
        if bool(overshot.any()):
            tau = xp.where(overshot, _certain_bounds(magnitudes, radius), tau)
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
    redone = magnitudes[index_before, :, index_after][:, :, None]
    retried, found = _row_thresholds(redone, radius, _certain_bounds(redone, radius), check=False)
    result[index_before, :, index_after] = retried[:, :, 0]
    if found is None:
        return result, None
    # Add the redone rows' candidates, moved from their (rows, n, 1) block to x's positions; the
    # stale ones they replace are a subset and are simply written twice with the same value.
    row, middle = found[0] // n, found[0] % n
    moved = (index_before[row] * n + middle) * after + index_after[row]
    positions = _arrays.concatenate([positions, moved])
    labels = None if labels is None else _arrays.concatenate([labels, retry[row]])
    return result, (positions, labels)


def thresholds(magnitudes, radius):
    """Soft-threshold levels projecting each row of ``magnitudes`` (``(before, n, after)``) onto the ball.

    Rows outside start from the larger of a sampled guess and the certain lower bound
    (:func:`_certain_bounds`); :func:`_row_thresholds` finishes exactly; rows inside get 0.
    A single vector with a positive guess starts from the guess alone and skips the full sum: if
    the vector is inside the ball, the guess overshoots, the redo starts below every entry and
    ends at a level <= 0. Returns ``(tau, candidates)`` as :func:`_row_thresholds` does, or None
    when every row is inside.
    """
    xp = namespace(magnitudes)
    guess = _sampled_lower_bounds(magnitudes, radius)
    if _arrays.size(guess) == 1 and float(guess.reshape(())) > 0:
        tau, candidates = _row_thresholds(magnitudes, radius, guess)
        return None if float(tau.reshape(())) <= 0 else (tau, candidates)
    total = xp.sum(magnitudes, axis=1, keepdims=True, dtype=xp.float64)
    outside = total > radius
    if not bool(outside.any()):
        return None
    start = xp.maximum((total - radius) / magnitudes.shape[1], guess)
    start = xp.where(outside, start, _arrays.new_array(-np.inf, start))
    tau, candidates = _row_thresholds(magnitudes, radius, start)
    return xp.where(outside, tau, _arrays.new_array(0.0, tau)), candidates


# A threshold above this many times the largest output (the row's largest magnitude minus the
# threshold) costs ``v - tau`` that factor in relative accuracy: such rows are redone shifted.
FAR_RATIO = 64.0


def far_rows(magnitudes, tau, candidates):
    """The flat indices of the rows of ``magnitudes`` (``(before, n, after)``) whose threshold lies
    far above their largest output: ``tau > FAR_RATIO (max_i v_i - tau)``.

    There ``v_i - tau`` subtracts two nearly equal numbers and ``tau`` itself carries the rounding
    of sums of the large ``v_i``: with data of 1e32 and a radius of 1e16 the output missed the
    boundary by 10%, and with a ratio above 1e16 it was 0. ``candidates`` (from :func:`thresholds`,
    or None) hold every row's largest entry, so the test reads only them when given.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    level = tau * (1.0 + 1.0 / FAR_RATIO)
    if candidates is None:
        clear = xp.sum(magnitudes > _arrays.round_down(level, magnitudes), axis=1, keepdims=True) > 0
        return _arrays.flat_nonzero(~clear & (tau > 0))
    positions, labels = candidates
    values = _arrays.to_float64(magnitudes.reshape(-1)[positions])
    flat_level = level.reshape(-1)
    above = values > (flat_level if labels is None else flat_level[labels])
    if labels is None:
        clear = _arrays.new_array([int(xp.count_nonzero(above))], tau.reshape(-1)) > 0
    else:
        clear = _arrays.segment_sum(labels[above], before * after) > 0
    return _arrays.flat_nonzero(~clear & (tau.reshape(-1) > 0))


def reproject_rows(rows, out, index, radius):
    """Write into ``out`` the projections of the rows ``index`` of ``rows`` (``(before, n, after)``),
    computed in coordinates shifted by each row's largest magnitude ``c``.

    With ``u = |v| - c <= 0`` (exact for the entries near ``c``, by Sterbenz's lemma) the threshold is
    ``c + tau'`` with ``tau' = (sum_K u - radius) / |K|``, and the output ``u - tau'`` never forms
    ``c + tau'``: its error is relative to the outputs, not to ``c``. Michelot's search starts from
    ``(sum_K u - radius) / |K|`` for ``K`` the entries at the row's maximum, a level below the
    threshold (any ``K`` gives one), so that the entries above it hold the support and the kept set
    then only shrinks to it. It runs on the whole rows, in float64.
    """
    xp = namespace(rows)
    index_before, index_after = index // rows.shape[2], index % rows.shape[2]
    signed = _arrays.to_float64(rows[index_before, :, index_after])
    magnitudes = xp.abs(signed)
    largest = xp.amax(magnitudes, axis=1, keepdims=True)
    shifted = magnitudes - largest
    kept = shifted >= 0
    # After the first pass the kept sets only shrink; the bound guards against rounding.
    for _ in range(rows.shape[1] + 2):
        counts = xp.sum(kept, axis=1, keepdims=True)
        level = (xp.sum(xp.where(kept, shifted, 0.0), axis=1, keepdims=True) - radius) / counts
        updated = shifted > level
        if bool((updated == kept).all()):
            break
        kept = updated
    shrunk = xp.copysign(_arrays.clip_below_inplace(shifted - level, 0.0), signed)
    out[index_before, :, index_after] = _arrays.cast_like(shrunk, out)
    return out
