"""The soft thresholds that finish :func:`solvers.prox.project_l1_ball` and :func:`solvers.prox.prox_l1`,
and the shifted redo of rows whose threshold lies far above their outputs.

Arrays arrive as ``(before, n, after)`` views: every ``(before, after)`` pair is a row of length
``n`` (the reduced axis in the middle). The threshold search itself is in :mod:`solvers._l1_search`.
"""

from __future__ import annotations


from . import _arrays
from ._arrays import namespace

__all__ = ["soft_threshold_dense", "soft_threshold_sparse", "reproject_rows", "FAR_RATIO"]


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
