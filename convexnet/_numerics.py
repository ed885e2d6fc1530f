"""Numerics shared by the modeling layer: norms that hold at any scale of the data, and the BLAS
thread policy of the per-column loops."""

from __future__ import annotations

import contextlib

import numpy as np

__all__ = ["stable_norm", "root_mean_square", "one_blas_thread"]

# np.linalg.norm squares the entries: beyond these norms a square can overflow (over 1e154) or an
# entry's square underflow while it still matters (norms below 1e-146), so the data is rescaled.
_SAFE_NORMS = (1e-100, 1e100)


def stable_norm(x, axis=None):
    """``||x||_2`` (Frobenius for a matrix; per slice when ``axis`` is given) at any scale.

    Equal to ``np.linalg.norm(x, axis=axis)`` where that is exact; data near float64's limits (1e150
    or 1e-150, say) is divided by its largest magnitude first, so that no square overflows or
    underflows. Returns a float for ``axis=None``, else an array.
    """
    x = np.asarray(x, dtype=float)
    with np.errstate(over="ignore", under="ignore"):
        norm = np.linalg.norm(x, axis=axis)
    if np.all((norm >= _SAFE_NORMS[0]) & (norm <= _SAFE_NORMS[1]) | (norm == 0) & ~np.any(x)):
        return float(norm) if axis is None else norm
    largest = np.max(np.abs(x), axis=axis, keepdims=True, initial=0.0)
    divisor = np.where(largest > 0, largest, 1.0)
    norm = np.linalg.norm(x / divisor, axis=axis) * np.squeeze(largest, axis=axis)
    return float(norm) if axis is None else norm


def root_mean_square(x) -> float:
    """``sqrt(mean(x^2))`` of all entries of ``x``, at any scale (0 for empty ``x``)."""
    x = np.asarray(x)
    return stable_norm(x) / np.sqrt(x.size) if x.size else 0.0


def one_blas_thread():
    """A context in which numpy's BLAS runs on one thread (``threadpoolctl``).

    The per-column loops (polish, the vertex move) make many small products and solves, where a
    second BLAS thread gains nothing on a quiet machine and costs much on a busy one: on the shared
    2-core box with three other processes running, a column's restricted system (a 2000 x 80 slice,
    its Gram matrix and a 120 x 120 solve) took 18 ms on OpenBLAS's two threads and 3 ms on one.
    Torch's threads are not affected.
    """
    try:
        from threadpoolctl import threadpool_limits
    except ImportError:  # pragma: no cover - threadpoolctl is a dependency
        return contextlib.nullcontext()
    return threadpool_limits(limits=1, user_api="blas")
