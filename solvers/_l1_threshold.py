"""The soft thresholds that finish :func:`solvers.prox.project_l1_ball` and :func:`solvers.prox.prox_l1`,
and the shifted redo of rows whose threshold lies far above their outputs.

Arrays arrive as ``(before, n, after)`` views: every ``(before, after)`` pair is a row of length
``n`` (the reduced axis in the middle). The threshold search itself is in :mod:`solvers._l1_search`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays
from ._arrays import namespace

__all__ = ["soft_threshold_dense", "soft_threshold_sparse", "reproject_rows", "rounded_thresholds",
           "FAR_RATIO"]


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


# A threshold above this many times the largest output (the row's largest magnitude minus the
# threshold) costs ``v - tau`` that factor in relative accuracy: such rows are redone shifted. With
# data of 1e32 and a radius of 1e16 the unshifted output missed the boundary by 10%, and with a
# ratio above 1e16 it was 0.
FAR_RATIO = 64.0


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


def _two_sum(a, b):
    """``(s, e)`` with ``s = fl(a + b)`` and ``s + e = a + b`` exactly (Knuth)."""
    s = a + b
    shifted = s - a
    return s, (a - (s - shifted)) + (b - shifted)


def _two_product(a, b):
    """``(p, e)`` with ``p = fl(a b)`` and ``p + e = a b`` exactly (Dekker's splitting, no FMA)."""
    def split(v):
        spread = 134217729.0 * v
        high = spread - (spread - v)
        return high, v - high

    p = a * b
    a_high, a_low = split(a)
    b_high, b_low = split(b)
    return p, ((a_high * b_high - p) + a_high * b_low + a_low * b_high) + a_low * b_low


def rounded_thresholds(values, labels, rows: int, radius: float):
    r"""Per row, the threshold ``(sum_K v - r) / |K|`` rounded once to float64.

    ``values`` (float64, shape (k,)) are the magnitudes of every row's active set ``K``, ``labels``
    their rows (None for one row), ``rows`` the number of rows; returns shape (rows,) (rows without
    entries: meaningless). The sums are split without error: with ``C`` a power of two above ``2 k
    max|v|``, the parts ``(v + C) - C`` are multiples of ``ulp(C)`` whose sums are exact in any
    order, and the remainders (exact, at most ``ulp(C) / 2``) are split once more. The last
    remainders' float64 sums err by about ``k^4 max 2^-157``, below the threshold's last place
    unless ``max / tau`` exceeds about ``2^45``. The exact parts and the radius meet in a
    double-double sum (Knuth's two-sum), divided by ``|K|`` with Dekker's exact product for the
    remainder: the quotient is the exact one rounded to nearest, but within ``2^-100`` of a tie.
    Numpy or torch, batched (segment sums), no Python loop over rows.
    """
    xp = namespace(values)
    if labels is None:
        def sums(weights):
            return xp.sum(weights).reshape(1)
        counts = _arrays.new_array([float(_arrays.size(values))], values)
    else:
        def sums(weights):
            return _arrays.segment_sum(labels, rows, weights=weights)
        counts = _arrays.to_float64(_arrays.segment_sum(labels, rows))
    longest = int(float(counts.max())) if _arrays.size(counts) else 0
    parts, rest = [], values
    for _ in range(2):
        largest = float(xp.amax(xp.abs(rest))) if _arrays.size(rest) else 0.0
        if largest == 0.0:
            break
        scale = math.ldexp(1.0, math.frexp(largest)[1] + longest.bit_length() + 1)
        high = (rest + scale) - scale
        parts.append(sums(high))
        rest = rest - high
    total, error = _two_sum(parts[0], _arrays.new_array(-radius, counts)) if parts \
        else (_arrays.new_array(np.full(rows, -radius), counts), xp.zeros_like(counts))
    for part in parts[1:]:
        total, more = _two_sum(total, part)
        error = error + more
    error = error + sums(rest)
    counts = xp.where(counts > 0, counts, 1.0)
    quotient = total / counts
    product, product_error = _two_product(quotient, counts)
    return quotient + (((total - product) - product_error) + error) / counts
