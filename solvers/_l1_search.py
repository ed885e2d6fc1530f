r"""The bracketed threshold search behind :func:`solvers.prox.project_l1_ball`.

Arrays arrive as ``(before, n, after)`` views of magnitudes ``v >= 0``: every ``(before, after)``
pair is a row of length ``n`` (the reduced axis in the middle, so that a C-ordered ``(N, M)`` weight
matrix is read by columns without a transposed copy). Each row's threshold is the ``tau >= 0`` with

.. math:: f(\tau) = \sum_i \max(v_i - \tau, 0) = r,

or 0 when :math:`\|v\|_1 \le r`. The search never sorts a row and never gathers more than a thin
band of it:

1. a strided sample of every row gives a bracket ``lo < tau <= hi`` (the sample's own threshold,
   moved a few standard deviations of the sample's rank either way);
2. one dense pass counts the entries above ``hi`` and sums them, and gathers the entries in
   ``(lo, hi]`` (the band), in float64, with their row labels;
3. Michelot's fixed-point search (Michelot 1986) runs on the band alone, the entries above ``hi``
   entering only through their count and sum. From a level below the threshold the level only
   rises and the kept set only shrinks, so the search ends, at the exact active set ``K``, and the
   threshold is the closed formula ``(sum_K v - r) / |K|`` on it.

A row whose bracket missed is searched again, alone, with a bracket that the first pass proved
(see :func:`thresholds`). Rows inside the ball get ``tau = 0``.
"""

from __future__ import annotations

import numpy as np

from . import _arrays
from ._arrays import namespace
from ._l1_threshold import FAR_RATIO

__all__ = ["thresholds"]

# Sample entries per row (at least) and in all: a larger sample narrows the band that is gathered,
# at the price of sorting the sample.
SAMPLE_PER_ROW = 512
SAMPLE_TOTAL = 16384
# The bracket's half-width, in standard deviations of the sample's count (sqrt(k)): a miss costs a
# second search of the row, a wide bracket a larger band on every row.
SPREAD = 2.5


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


def _sample(magnitudes, radius):
    """A strided sample of every row, sorted descending (float64, ``(rows, size)``, rows in the flat
    order of ``(before, after)``), and ``k`` (``(rows, 1)``): how many sample entries lie above the
    sample's own threshold for the radius scaled by the sample fraction."""
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    per_row = min(n, max(SAMPLE_PER_ROW, SAMPLE_TOTAL // (before * after)))
    strided = magnitudes[:, ::n // per_row, :]
    # Rows along the last axis need no move; a single row is read as one vector.
    sample = strided[:, :, 0] if after == 1 else xp.moveaxis(strided, 1, -1)
    ordered = _arrays.to_float64(_arrays.sort_descending(_arrays.contiguous(sample), axis=-1))
    ordered = ordered.reshape(before * after, -1)
    _, count = _sorted_thresholds(ordered, radius * ordered.shape[-1] / n)
    return ordered, count


def _bracket(ordered, count, spread):
    """A likely bracket ``(lo, hi)`` of each row's threshold (float64, ``(rows, 1)``), from the sorted
    sample: ``lo`` is the sample entry ``spread sqrt(k) + 3`` places below the sample's cut, ``hi``
    the one as many places above it (``0`` and ``inf`` when the sample runs out)."""
    xp = namespace(ordered)
    size = ordered.shape[-1]
    margin = _arrays.as_index(spread * xp.sqrt(_arrays.to_float64(count)) + 3)
    below, above = count + margin, count - 1 - margin
    lo = _arrays.take_along_axis(ordered, xp.clip(below, 0, size - 1), axis=-1)
    lo = xp.where(below < size, lo, _arrays.new_array(0.0, lo))
    hi = _arrays.take_along_axis(ordered, xp.clip(above, 0, size - 1), axis=-1)
    return lo, xp.where(above >= 0, hi, _arrays.new_array(np.inf, hi))


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

    Returns ``(tau, missed_low, missed_high, candidates, clear, floor)``: ``tau`` (``(before, 1,
    after)``, float64, 0 for rows inside the ball); ``missed_low`` and ``missed_high`` (boolean,
    same shape) the rows whose threshold lies at or below ``lo`` or above ``hi`` (their ``tau`` is
    meaningless); ``candidates`` as :func:`thresholds` returns them; ``clear`` the rows known to
    hold an entry above ``tau (1 + 1 / FAR_RATIO)`` (the others may be far rows, see
    :func:`thresholds`); ``floor`` a level below the threshold of every ``missed_low`` row.
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
    above_sums = sum_top + band_sums.reshape(lo.shape)
    above_counts = count_top + band_counts.reshape(lo.shape)
    at_lo = above_sums - above_counts * lo
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
    if bool((~clear & (count_top > 0)).any()):
        # Entries above hi but hi below that level: the rows' largest entries decide.
        clear = clear | (xp.amax(magnitudes, axis=1, keepdims=True) > margin)
    survivors = int(xp.sum(count_top)) + int(xp.sum(kept))
    candidates = None
    if 64 * survivors <= _arrays.size(magnitudes):
        found = positions[kept]
        if has_top:
            found = _arrays.concatenate([_arrays.flat_nonzero(top), found])
        candidates = (found, None if rows == 1 else (found // (n * after)) * after + found % after)
    # Where lo is not below the threshold, all the entries above it are active, and Michelot's level
    # on them is a level below the threshold: a certain bracket for the redo.
    floor = xp.clip((above_sums - radius) / xp.clip(above_counts, 1, None), 0.0, None)
    return tau, missed_low, missed_high, candidates, clear, floor


def _redo(rows, radius, index, lo, hi):
    """:func:`_search` on the rows ``index`` (flat) of the signed ``rows`` alone, with the brackets
    ``lo``, ``hi`` (flat); its results flat."""
    xp = namespace(rows)
    after = rows.shape[2]
    magnitudes = _arrays.contiguous(xp.abs(rows[index // after, :, index % after]))[:, :, None]
    tau, missed_low, missed_high, found, clear, floor = _search(magnitudes, radius, lo[:, None, None],
                                                                 hi[:, None, None])
    return (tau.reshape(-1), missed_low.reshape(-1), missed_high.reshape(-1), found,
            clear.reshape(-1), floor.reshape(-1))


def _moved(found, index, n, after):
    """Candidates ``found`` of the rows ``index`` searched alone (a ``(rows, n, 1)`` block), as
    positions and labels in ``(before, n, after)``."""
    row, middle = found[0] // n, found[0] % n
    return ((index // after)[row] * n + middle) * after + (index % after)[row], index[row]


# A missed row's bracket widens this many times before its upper end goes to infinity.
WIDENINGS = 3


def thresholds(rows, magnitudes, radius):
    """Soft-threshold levels projecting each row of ``rows`` (``(before, n, after)``) onto the ball.

    ``magnitudes`` is ``abs(rows)``, C-ordered. Rows whose sampled bracket misses are searched
    again, alone, with a bracket the miss proved: ``(floor, lo]`` below (see :func:`_search`), or
    ``(hi, hi']`` above with ``hi'`` from the sample at four times the spread, then ``(hi, inf)``.
    Returns ``(tau, candidates, far)``: ``tau`` float64 of shape ``(before, 1, after)`` (0 for rows
    inside), ``candidates`` as ``(positions, labels)`` into the C-ordered flattening (a superset of
    the nonzeros of the projection; ``labels`` None for one row) or None when more than 1/64 of the
    entries survive, and ``far`` the flat indices of the rows to redo with
    :func:`solvers._l1_threshold.reproject_rows`. Returns None when every row is inside.
    """
    xp = namespace(magnitudes)
    before, n, after = magnitudes.shape
    sample, count = _sample(magnitudes, radius)
    spread = SPREAD
    lo, hi = _bracket(sample, count, spread)
    shape = (before, 1, after)
    lo3 = lo.reshape(before, after)[:, None, :]
    hi3 = hi.reshape(before, after)[:, None, :]
    tau, missed_low, missed_high, candidates, clear, floor = _search(magnitudes, radius, lo3, hi3)
    tau, clear = tau.reshape(-1), clear.reshape(-1)
    missed_low, missed_high, floor = missed_low.reshape(-1), missed_high.reshape(-1), floor.reshape(-1)
    index = _arrays.flat_nonzero(missed_low | missed_high)
    lo, hi = lo.reshape(-1), hi.reshape(-1)
    if _arrays.size(index):
        tau, clear = _arrays.copy(tau), _arrays.copy(clear)
    for widening in range(WIDENINGS + 1):
        if _arrays.size(index) == 0:
            break
        spread *= 4
        wider = _bracket(sample[index], count[index], spread)[1].reshape(-1) if widening < WIDENINGS \
            else _arrays.new_array(np.full(_arrays.size(index), np.inf), lo)
        low_side = missed_low[index]
        lo_index = xp.where(low_side, floor[index], hi[index])
        # A sample with nothing above hi gives no wider bracket: then up to infinity at once.
        wider = xp.where(wider > hi[index], wider, _arrays.new_array(np.inf, wider))
        hi_index = xp.where(low_side, lo[index], wider)
        result = _redo(rows, radius, index, lo_index, hi_index)
        tau[index], clear[index] = result[0], result[4]
        if candidates is not None and result[3] is None:
            candidates = None
        elif candidates is not None:
            # The stale candidates of the redone rows are simply written with the right values.
            positions, labels = _moved(result[3], index, n, after)
            candidates = (_arrays.concatenate([candidates[0], positions]),
                          None if candidates[1] is None else _arrays.concatenate([candidates[1], labels]))
        # The brackets (floor, lo] are certain; only rounding can miss them, and is trusted.
        again = result[2] & xp.isfinite(hi_index)
        missed_low, missed_high = xp.zeros_like(missed_low), xp.zeros_like(missed_high)
        missed_high[index] = again
        lo[index], hi[index] = lo_index, hi_index
        index = index[again]
    if not bool((tau > 0).any()):
        return None
    far = _arrays.flat_nonzero(~clear & (tau > 0))
    return tau.reshape(shape), candidates, far
