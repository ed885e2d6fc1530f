r"""The l1-ball threshold of one long numpy vector in a few passes, and the threshold to the last ulp.

:func:`solvers.prox.project_l1_ball` sends a single long numpy vector here first (the general
search, :mod:`solvers._l1_search`, batches rows and handles every case; this path handles the common
one with fewer passes and no fresh large buffers). With ``v = |x|`` (n entries) the threshold is the
``tau`` with

.. math:: \sum_i \max(v_i - \tau, 0) = r .

1. A strided sample (``VECTOR_SAMPLE`` entries, sorted) gives a bracket ``lo < tau <= hi``, as in
   the general search.
2. Two comparisons into per-thread boolean buffers mark the entries above ``hi`` (counted and summed
   in one ``einsum``) and the band ``(lo, hi]`` (gathered).
3. Michelot's search on the band, the entries above ``hi`` entering through their count and sum,
   ends at the exact active set ``K``.

Whenever the bracket missed, the row may be far (its threshold far above its outputs, see
:mod:`solvers._l1_threshold`) or the vector is inside the ball, :func:`vector_threshold` returns None
and the general search decides. When ``K`` is gathered (few survivors),
:func:`solvers._l1_threshold.rounded_thresholds` evaluates ``(sum_K v - r) / |K|`` rounded once.
"""

from __future__ import annotations

import math
import threading

import numpy as np

from ._l1_threshold import FAR_RATIO

__all__ = ["vector_threshold", "soft_threshold_into", "VECTOR_MIN"]

# Vectors at least this long take this path (shorter ones gain nothing from the sample).
VECTOR_MIN = 1 << 16
# Sample size and bracket half-width (standard deviations of the sample's count), as in _l1_search.
VECTOR_SAMPLE = 16384
SPREAD = 2.5
# The mask buffers are kept per thread up to this many entries (2 bytes each: at most 8 MiB held);
# longer vectors get fresh ones. Fresh buffers cost their page faults on every call: on 1e6 entries
# the search took 4.4 ms with them and 2.6 ms with kept ones (2-core dev box).
KEPT_ENTRIES = 1 << 22

_kept = threading.local()


def _masks(n: int):
    """Two boolean buffers of length ``n`` (this thread's, reused across calls)."""
    buffer = getattr(_kept, "masks", None)
    if buffer is None or buffer.size < 2 * n:
        buffer = np.empty(2 * n, dtype=bool)
        if n <= KEPT_ENTRIES:
            _kept.masks = buffer
    return buffer[:n], buffer[n:2 * n]


def _bracket(magnitudes, radius):
    """``(lo, hi, largest)`` floats from the sorted strided sample (``lo = 0`` / ``hi = inf`` when
    it runs out; ``largest`` its largest entry)."""
    n = magnitudes.shape[0]
    sample = np.sort(magnitudes[::max(n // VECTOR_SAMPLE, 1)]).astype(np.float64)[::-1]
    size = sample.shape[0]
    cumulative = np.cumsum(sample)
    scaled = radius * size / n
    count = max(int(np.count_nonzero(sample * np.arange(1, size + 1) > cumulative - scaled)), 1)
    margin = int(SPREAD * math.sqrt(count) + 3)
    lo = float(sample[count + margin]) if count + margin < size else 0.0
    hi = float(sample[count - 1 - margin]) if count - 1 - margin >= 0 else math.inf
    return lo, hi, float(sample[0])


def _below(value: float, dtype) -> float:
    """The largest number of ``dtype`` at or below ``value`` (as a float): ``a > _below(t)`` is
    ``a > t`` for every ``a`` of that dtype."""
    rounded = dtype.type(value)
    if float(rounded) > value:
        rounded = np.nextafter(rounded, dtype.type(-np.inf))
    return float(rounded)


def vector_threshold(magnitudes, radius: float):
    """The threshold of the 1-D C-contiguous numpy vector ``magnitudes`` (``|x|``, float32/64).

    Returns ``(tau, support)``: ``tau`` a float (the closed formula on the exact active set, its
    sums in float64) and ``support`` the positions of the entries above ``tau`` when at most 1/64 of
    the entries survive (None otherwise); or None when the general search must decide (the sample's
    bracket missed, the vector may be inside the ball or far).
    """
    n = magnitudes.shape[0]
    lo, hi, largest = _bracket(magnitudes, radius)
    if lo == 0.0:
        return None
    band, top = _masks(n)
    np.greater(magnitudes, _below(lo, magnitudes.dtype), out=band)
    count_top, sum_top = 0, 0.0
    if not math.isinf(hi):
        np.greater(magnitudes, _below(hi, magnitudes.dtype), out=top)
        np.logical_xor(band, top, out=band)
        count_top = int(np.count_nonzero(top))
        sum_top = float(np.einsum("i,i->", magnitudes, top.view(np.uint8), dtype=np.float64))
    positions = np.flatnonzero(band)
    values = magnitudes[positions].astype(np.float64)
    count, total = count_top + values.shape[0], sum_top + float(values.sum())
    if total - count * lo <= radius:
        return None  # f(lo) <= r: the threshold is at or below lo (or the vector is inside)
    kept = values
    while True:
        tau = (sum_top + float(kept.sum()) - radius) / (count_top + kept.shape[0])
        keep = kept > tau
        if keep.all():
            break
        kept = kept[keep]
    if tau > hi:
        return None
    # Not far: an entry the projection keeps lies above tau (1 + 1 / FAR_RATIO).
    margin = tau * (1.0 + 1.0 / FAR_RATIO)
    if not (largest > margin or (kept.shape[0] and float(kept.max()) > margin)):
        return None
    survivors = count_top + kept.shape[0]
    if 64 * survivors > n:
        return tau, None
    kept_positions = positions[values > tau]
    return tau, np.concatenate([np.flatnonzero(top), kept_positions]) if count_top else kept_positions


def soft_threshold_into(x, tau: float, out):
    """``sign(x) max(|x| - tau, 0)`` of the float64 numpy ``x`` into ``out``, by torch's one-pass
    ``softshrink`` on views of the two buffers (bitwise the numbers of ``x - clip(x, -tau, tau)``,
    signed zeros included: 0.6 ms on 1e6 entries where numpy's two passes take 1.0 to 1.2 ms). Its
    ``out=`` form is not public torch API: where it is missing, numpy's two passes run."""
    import torch

    shrink = getattr(getattr(torch._C, "_nn", None), "softshrink", None)
    try:
        shrink(torch.from_numpy(x), tau, out=torch.from_numpy(out))
    except (TypeError, RuntimeError):
        np.clip(x, -tau, tau, out=out)
        np.subtract(x, out, out=out)
    return out

