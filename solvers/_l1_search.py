r"""The bracketed threshold search behind :func:`solvers.prox.project_l1_ball`.

Arrays arrive as ``(before, n, after)`` views of magnitudes ``v >= 0``: every ``(before, after)``
pair is a row of length ``n`` (the reduced axis in the middle, so that a C-ordered ``(N, M)`` weight
matrix is read by columns without a transposed copy). Each row's threshold is the ``tau >= 0`` with

.. math:: f(\tau) = \sum_i \max(v_i - \tau, 0) = r,

or 0 when :math:`\|v\|_1 \le r`. The search never sorts a row and never gathers more than a thin
band of it:

1. a strided sample of every row gives a bracket ``lo < tau <= hi`` (the sample's own threshold,
   moved a few standard deviations of the sample's rank either way);
2. one dense pass forms the shifted magnitudes ``d = max(v - lo, 0)`` and, per row, their sum
   ``f(lo)`` and the count of entries above ``hi``; only the entries in ``(lo, hi]`` (the band) are
   gathered, in float64, with their row labels;
3. Michelot's fixed-point search (Michelot 1986) runs on the band alone: the entries above ``hi``
   enter it only through their count, and their sum is ``f(lo)`` minus the band's. From ``lo`` the
   level only rises and the kept set only shrinks, so the search ends, at the exact active set;
   the threshold is then ``lo + (f(lo) - (removed band entries) - r) / |K|``, a sum of positive
   terms close to ``r``, accurate to a few units in the last place of the shifted values.

A row whose bracket missed (``f(lo) <= r``, or a level above ``hi``) is searched again with a bracket
that the first pass proved: ``[0, lo]`` or ``[hi, inf)``. Rows inside the ball get ``tau = 0``.
"""

from __future__ import annotations

import numpy as np

from . import _arrays
from ._arrays import namespace
from ._l1_threshold import FAR_RATIO

__all__ = ["thresholds"]

# Sample entries per row (at least) and in all: a larger sample narrows the band that is gathered,
# at the price of sorting the sample.
SAMPLE_PER_ROW = 256
SAMPLE_TOTAL = 16384


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


def _sampled_bracket(magnitudes, radius):
    """Per row a likely bracket ``(lo, hi)`` of the threshold (float64, ``(before, 1, after)``).

    The sample's threshold (for the radius scaled by the sample fraction) keeps ``k`` sample entries;
    ``lo`` is the sample entry ``3 sqrt(k) + 3`` places below the cut, ``hi`` the one as many places
    above it (``0`` and ``inf`` when the sample runs out). A bracket is only likely: the search
    checks it and redoes the rows it misses.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    per_row = min(n, max(SAMPLE_PER_ROW, SAMPLE_TOTAL // (before * after)))
    strided = magnitudes[:, ::n // per_row, :]
    # Rows along the last axis need no move; a single row is read as one vector.
    sample = strided[:, :, 0] if after == 1 else xp.moveaxis(strided, 1, -1)
    ordered = _arrays.to_float64(_arrays.sort_descending(_arrays.contiguous(sample), axis=-1))
    size = ordered.shape[-1]
    _, count = _sorted_thresholds(ordered, radius * size / n)
    margin = _arrays.as_index(3 * xp.sqrt(_arrays.to_float64(count)) + 3)
    below, above = count + margin, count - 1 - margin
    lo = _arrays.take_along_axis(ordered, xp.clip(below, 0, size - 1), axis=-1)
    lo = xp.where(below < size, lo, _arrays.new_array(0.0, lo))
    hi = _arrays.take_along_axis(ordered, xp.clip(above, 0, size - 1), axis=-1)
    hi = xp.where(above >= 0, hi, _arrays.new_array(np.inf, hi))
    if after == 1:
        return lo[:, :, None], hi[:, :, None]
    return xp.moveaxis(lo, -1, 1), xp.moveaxis(hi, -1, 1)


def _band_michelot(values, labels, rows, sum_top, count_top, radius):
    """Michelot's search on the band, the entries above it counted and summed but never touched.

    ``values`` (float64) are the band's magnitudes and ``labels`` their rows (None for one row); per
    row (flat, length ``rows``) ``sum_top`` and ``count_top`` are the sum and count of the entries
    above the band. Each pass sets the level to ``(sum_top + kept sum - radius) / (count_top + kept
    count)`` and drops the band entries at or below it; from a level below the threshold the level
    only rises, and the last one is the exact formula on the active set. Returns ``(level, kept)``:
    the threshold per row and which band entries exceed it.
    """
    xp = namespace(values)
    kept_values, kept_labels, level = values, labels, None
    while True:
        if labels is None:
            sums = sum_top + xp.sum(kept_values)
            counts = count_top + _arrays.size(kept_values)
        else:
            sums = sum_top + _arrays.segment_sum(kept_labels, rows, weights=kept_values)
            counts = count_top + _arrays.segment_sum(kept_labels, rows)
        updated = (sums - radius) / xp.clip(counts, 1, None)
        # Rounding can drop a row's last entries (a radius below the spacing of its largest);
        # the level then stays where it was, and the far-row redo settles the row.
        level = updated if level is None else xp.where(counts > 0, updated, level)
        keep = kept_values > (level if labels is None else level[kept_labels])
        if bool(keep.all()):
            # The level only rose, so every dropped entry lies at or below the last one.
            return level, values > (level if labels is None else level[labels])
        kept_values = kept_values[keep]
        if labels is not None:
            kept_labels = kept_labels[keep]


def _count(mask, rows):
    """Per-row counts of the true entries of ``mask`` (``(before, n, after)``), shaped ``(before, 1, after)``."""
    xp = namespace(mask)
    if rows == 1:
        # numpy sums booleans through an int64 cast; count_nonzero is several times faster.
        return _arrays.new_array(int(xp.count_nonzero(mask)), mask, dtype=xp.int64).reshape(1, 1, 1)
    return xp.sum(mask, axis=1, keepdims=True)


def _per_row(value, rows):
    """``value`` (``(before, 1, after)``) as it is, or as a Python float when there is one row."""
    return float(value.reshape(())) if rows == 1 else value


def _search(magnitudes, radius, lo, hi):
    """Thresholds of all rows for the brackets ``(lo, hi)`` (``(before, 1, after)``, ``0 <= lo < hi``).

    Returns ``(tau, missed_low, missed_high, candidates, clear)``: ``tau`` (``(before, 1, after)``,
    float64, 0 for rows inside the ball); ``missed_low`` and ``missed_high`` (boolean, same shape)
    the rows whose threshold lies at or below ``lo`` or above ``hi`` (their ``tau`` is meaningless);
    ``candidates`` as :func:`thresholds` returns them; ``clear`` the rows known to hold an entry
    above ``tau (1 + 1 / FAR_RATIO)`` (the others may be far rows, see :func:`thresholds`).
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    rows = before * after
    # One row takes Python numbers: numpy's scalar loops are several times faster than broadcasting.
    band = magnitudes > _per_row(_arrays.round_down(lo, magnitudes), rows)
    has_top = bool(xp.isfinite(hi).any())
    if has_top:
        top = magnitudes > _per_row(_arrays.round_down(hi, magnitudes), rows)
        band ^= top  # top lies inside band: one pass, no inverted copy
        count_top = _count(top, rows).reshape(-1)
        sum_top = _arrays.masked_row_sums(magnitudes, top).reshape(-1)
    else:
        count_top = sum_top = _arrays.new_array(np.zeros(rows), lo, dtype=lo.dtype)
    positions = _arrays.flat_nonzero(band)
    values = _arrays.to_float64(magnitudes.reshape(-1)[positions])
    labels = (positions // (n * after)) * after + positions % after if rows > 1 else None
    tau, kept = _band_michelot(values, labels, rows, sum_top, count_top, radius)
    tau = tau.reshape(lo.shape)
    count_top, sum_top = count_top.reshape(lo.shape), sum_top.reshape(lo.shape)
    # f(lo) = (sum of all entries above lo) - (their count) lo; at or below the radius, lo is not
    # below the threshold (or the row is inside the ball, when lo is 0).
    band_sums = _arrays.new_array([float(xp.sum(values))], lo) if labels is None \
        else _arrays.segment_sum(labels, rows, weights=values)
    band_counts = _arrays.new_array([_arrays.size(values)], lo) if labels is None \
        else _arrays.segment_sum(labels, rows)
    at_lo = (sum_top + band_sums.reshape(lo.shape)) - (count_top + band_counts.reshape(lo.shape)) * lo
    inside = (at_lo <= radius) & (lo == 0)
    missed_low = (at_lo <= radius) & ~inside
    missed_high = (tau > hi) & ~missed_low & ~inside
    tau = xp.where(inside, _arrays.new_array(0.0, tau), tau)
    # A row is clear of the far case when an entry it keeps lies above tau (1 + 1 / FAR_RATIO).
    margin = tau * (1.0 + 1.0 / FAR_RATIO)
    clear = ((count_top > 0) & (hi > margin)) | inside
    above = values > (margin.reshape(-1) if labels is None else margin.reshape(-1)[labels])
    if labels is None:
        clear = clear | bool(above.any())
    else:
        clear = clear | (_arrays.segment_sum(labels[above], rows) > 0).reshape(clear.shape)
    survivors = int(xp.sum(count_top)) + int(xp.sum(kept))
    candidates = None
    if 64 * survivors <= _arrays.size(magnitudes):
        found = positions[kept]
        if has_top:
            found = _arrays.concatenate([_arrays.flat_nonzero(top), found])
        candidates = (found, None if rows == 1 else (found // (n * after)) * after + found % after)
    return tau, missed_low, missed_high, candidates, clear


def _redo(rows, radius, index, lo, hi):
    """:func:`_search` on the rows ``index`` (flat) of the signed ``rows`` alone, with the brackets
    ``lo``, ``hi`` (flat). Returns the thresholds, the candidates and the clear rows."""
    xp = namespace(rows)
    after = rows.shape[2]
    magnitudes = _arrays.contiguous(xp.abs(rows[index // after, :, index % after]))[:, :, None]
    tau, _, _, found, clear = _search(magnitudes, radius, lo[:, None, None], hi[:, None, None])
    return tau.reshape(-1), found, clear.reshape(-1)


def thresholds(rows, magnitudes, radius):
    """Soft-threshold levels projecting each row of ``rows`` (``(before, n, after)``) onto the ball.

    ``magnitudes`` is ``abs(rows)``, C-ordered, and is overwritten (the caller may reuse it as the
    output). Returns ``(tau, candidates, far)``: ``tau`` float64 of shape ``(before, 1, after)`` (0
    for rows inside), ``candidates`` as ``(positions, labels)`` into the C-ordered flattening (a
    superset of the nonzeros of the projection; ``labels`` None for one row) or None when more than
    1/64 of the entries survive, and ``far`` the flat indices of the rows to redo with
    :func:`solvers._l1_threshold.reproject_rows`. Returns None when every row is inside.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    lo, hi = _sampled_bracket(magnitudes, radius)
    tau, missed_low, missed_high, candidates, clear = _search(magnitudes, radius, lo, hi)
    missed = missed_low | missed_high
    tau, clear = tau.reshape(-1), clear.reshape(-1)
    if bool(missed.any()):
        # The first pass proved a bracket for every missed row: (0, lo] below, (hi, inf) above.
        index = _arrays.flat_nonzero(missed)
        low_side = missed_low.reshape(-1)[index]
        lo, hi = lo.reshape(-1)[index], hi.reshape(-1)[index]
        zero, infinite = _arrays.new_array(0.0, lo), _arrays.new_array(np.inf, lo)
        redone, found, redone_clear = _redo(rows, radius, index, xp.where(low_side, zero, hi),
                                            xp.where(low_side, lo, infinite))
        tau, clear = _arrays.copy(tau), _arrays.copy(clear)
        tau[index], clear[index] = redone, redone_clear
        if candidates is not None and found is None:
            candidates = None
        elif candidates is not None:
            # The redone rows' candidates, moved from their (rows, n, 1) block to x's positions; the
            # stale ones they replace are simply written with the same values.
            row, middle = found[0] // n, found[0] % n
            moved = ((index // after)[row] * n + middle) * after + (index % after)[row]
            positions = _arrays.concatenate([candidates[0], moved])
            labels = None if candidates[1] is None else _arrays.concatenate([candidates[1], index[row]])
            candidates = (positions, labels)
    if not bool((tau > 0).any()):
        return None
    far = _arrays.flat_nonzero(~clear & (tau > 0))
    return tau.reshape(before, 1, after), candidates, far
