"""The few array operations whose numpy and torch spellings differ, for the kernels in ``prox``.

Kernels are written once against a namespace ``xp`` (``numpy`` or ``torch``): both accept
``xp.abs``, ``xp.sum(x, axis=..., keepdims=..., dtype=...)``, ``xp.cumsum``, ``xp.where``,
``xp.copysign(..., out=...)``, ``xp.clip``, ``xp.linalg.svd`` and boolean or integer indexing.
What does not line up (sorting, ``nonzero``, ``bincount``, dtype casts, new arrays on the input's
device) lives here, so that a kernel reads the same for both kinds and a tensor never leaves its device.
"""

from __future__ import annotations

import functools
import sys

import numpy as np

__all__ = [
    "HOST_NUMPY",
    "numpy_on_cpu",
    "is_tensor",
    "namespace",
    "as_floating",
    "copy",
    "new_array",
    "to_float64",
    "cast_like",
    "sort_descending",
    "sorted_magnitudes",
    "flat_nonzero",
    "segment_sum",
    "round_down",
    "split_high_low",
    "kth_largest",
    "size",
    "as_index",
    "take_along_axis",
    "contiguous",
    "clip_below_inplace",
    "clip_into",
    "argsort",
    "concatenate",
    "zeros",
    "largest_finite",
    "masked_row_sums",
]


def is_tensor(x) -> bool:
    """True when ``x`` is a ``torch.Tensor``; torch is not imported when the caller never loaded it."""
    torch = sys.modules.get("torch")
    return torch is not None and isinstance(x, torch.Tensor)


# Kernels decorated with :func:`numpy_on_cpu` run their numpy form on CPU tensors, through views
# that share the tensor's memory. On the 2-core dev box torch's CPU comparisons, ``nonzero`` and
# fresh allocations (its allocator returns large blocks to the system, so every new tensor pays its
# page faults) measured 2 to 5 times numpy's. Tests set this to False to run the torch form (the
# GPU's) on the CPU.
HOST_NUMPY = True


def numpy_on_cpu(kernel):
    """Run ``kernel(x, **parameters)`` on a numpy view of a float32/float64 CPU tensor ``x`` and return
    the result as a tensor sharing the numpy result's memory (no copy either way, but for a tensor
    with a lazy negation or conjugation, which is resolved first). Other inputs
    (numpy arrays, GPU tensors, other dtypes, or any tensor when ``HOST_NUMPY`` is False) go to the
    kernel unchanged."""
    @functools.wraps(kernel)
    def run(x, **parameters):
        if HOST_NUMPY and is_tensor(x) and x.device.type == "cpu":
            torch = sys.modules["torch"]
            x = as_floating(x)
            if x.dtype in (torch.float32, torch.float64):
                host = x.resolve_conj().resolve_neg().numpy()
                return torch.from_numpy(np.ascontiguousarray(kernel(host, **parameters)))
        return kernel(x, **parameters)
    return run


def namespace(x):
    """The module whose functions apply to ``x``: ``torch`` for tensors, ``numpy`` otherwise."""
    if is_tensor(x):
        return sys.modules["torch"]
    return np


def as_floating(x):
    """``x`` as a floating array of its own kind: tensors stay tensors, anything else becomes numpy.

    Floating inputs keep their dtype (float32 stays float32); integer and boolean inputs become
    float64 (numpy) or torch's default floating dtype. Tensors are detached: the kernels are
    projections and proxes applied to parameters, not differentiable operations.
    """
    if is_tensor(x):
        x = x.detach()
        if x.is_floating_point():
            return x
        return x.to(sys.modules["torch"].get_default_dtype())
    arr = np.asarray(x)
    if np.issubdtype(arr.dtype, np.floating):
        return arr
    return arr.astype(np.float64)


def copy(x):
    """A copy of ``x`` that shares no memory with it."""
    return x.clone() if is_tensor(x) else x.copy()


def new_array(values, like, dtype=None):
    """``values`` as an array of ``like``'s kind and device (and ``dtype``, default ``like``'s)."""
    if is_tensor(like):
        torch = sys.modules["torch"]
        return torch.as_tensor(values, dtype=like.dtype if dtype is None else dtype,
                               device=like.device)
    return np.asarray(values, dtype=like.dtype if dtype is None else dtype)


def to_float64(x):
    """``x`` in float64, on its device (no copy when it already is)."""
    if is_tensor(x):
        return x.to(sys.modules["torch"].float64)
    return x.astype(np.float64, copy=False)


def cast_like(x, like):
    """``x`` in ``like``'s dtype."""
    if is_tensor(x):
        return x.to(like.dtype)
    return x.astype(like.dtype, copy=False)


def sort_descending(x, axis: int = -1):
    """The values of ``x`` sorted from largest to smallest along ``axis``, as a new C-ordered array."""
    if is_tensor(x):
        return sys.modules["torch"].sort(x, dim=axis, descending=True).values
    # Sorting the negated values gives a C-ordered result; a flipped view of an ascending sort makes
    # every later pass (cumsum, differences) several times slower.
    ordered = np.negative(x)
    ordered.sort(axis=axis)
    return np.negative(ordered, out=ordered)


def sorted_magnitudes(x):
    """``|x|`` in float64 with each row of the matrix sorted from largest to smallest, as a new
    array. numpy sorts ``-|x|`` (one ``copysign`` pass) and negates it in place: a cumulative sum
    along a flipped view of an ascending sort runs at half speed."""
    if is_tensor(x):
        return sys.modules["torch"].sort(to_float64(x).abs(), dim=1, descending=True).values
    ordered = np.copysign(to_float64(x), -1.0)
    ordered.sort(axis=1)
    return np.negative(ordered, out=ordered)


def flat_nonzero(mask):
    """The positions of the true entries of ``mask`` in its C-ordered flattening (int64)."""
    if is_tensor(mask):
        return mask.reshape(-1).nonzero(as_tuple=True)[0]
    return np.flatnonzero(mask)


def segment_sum(labels, length: int, weights=None):
    """Per-label sums of ``weights`` (counts when None): entry ``i`` sums the items labelled ``i``."""
    if is_tensor(labels):
        return sys.modules["torch"].bincount(labels, weights=weights, minlength=length)
    return np.bincount(labels, weights=weights, minlength=length)


def round_down(value, like):
    """The largest numbers representable in ``like``'s dtype that are ``<= value`` (elementwise).

    Comparing a float32 array with the rounded-down threshold gives exactly the comparison with the
    float64 threshold: ``a > round_down(t)`` holds if and only if ``a > t``.
    """
    xp = namespace(value)
    # A value beyond the dtype's range casts to inf, which the step below brings back to its largest.
    with np.errstate(over="ignore"):
        rounded = cast_like(value, like)
    too_high = to_float64(rounded) > value
    below = xp.nextafter(rounded, new_array(-np.inf, rounded))
    return xp.where(too_high, below, rounded)


def split_high_low(value, like):
    """``value`` (float64 array or Python float) as ``high + low`` in ``like``'s dtype.

    ``high`` is the nearest number of that dtype. Subtracting ``high`` and then ``low`` from an entry
    of ``like``'s dtype keeps the accuracy of a float64 subtraction where it matters (entries close to
    ``value``, by Sterbenz's lemma), without converting a large float32 array to float64. A Python
    float gives Python floats (exactly representable in the dtype), which every device accepts.
    """
    if isinstance(value, float):
        if is_tensor(like):
            torch = sys.modules["torch"]
            high = torch.tensor(value, dtype=like.dtype).item()
            return high, torch.tensor(value - high, dtype=like.dtype).item()
        high = float(np.asarray(value).astype(like.dtype))
        return high, float(np.asarray(value - high).astype(like.dtype))
    high = cast_like(value, like)
    low = cast_like(value - to_float64(high), like)
    return high, low


def kth_largest(x, k: int, axis: int):
    """The ``k``-th largest value of ``x`` along ``axis`` (``1 <= k <= x.shape[axis]``), keeping the axis."""
    n = x.shape[axis]
    if is_tensor(x):
        return sys.modules["torch"].kthvalue(x, n - k + 1, dim=axis, keepdim=True).values
    return np.take(np.partition(x, n - k, axis=axis), [n - k], axis=axis)


def size(x) -> int:
    """The number of entries of ``x``."""
    return x.numel() if is_tensor(x) else x.size


def as_index(x):
    """``x`` (floating or integer) truncated to int64, usable as indices."""
    if is_tensor(x):
        return x.to(sys.modules["torch"].int64)
    return x.astype(np.int64)


def take_along_axis(x, indices, axis: int):
    """``numpy.take_along_axis`` for both kinds."""
    if is_tensor(x):
        return sys.modules["torch"].take_along_dim(x, indices, dim=axis)
    return np.take_along_axis(x, indices, axis=axis)


def contiguous(x):
    """``x`` laid out in C order (a copy only when it is not already)."""
    if is_tensor(x):
        return x.contiguous()
    return np.ascontiguousarray(x)


def clip_below_inplace(x, low: float):
    """``x = max(x, low)`` in place (numpy's ``clip`` wrapper costs several times ``maximum``)."""
    if is_tensor(x):
        return x.clamp_min_(low)
    return np.maximum(x, low, out=x)


def clip_into(x, low, high, out):
    """``out = min(max(x, low), high)``; the bounds are numbers or arrays broadcasting to ``x``."""
    if is_tensor(x):
        return sys.modules["torch"].clamp(x, low, high, out=out)
    return np.clip(x, low, high, out=out)



def argsort(x):
    """Indices that sort the 1-D ``x`` ascending (ties in any order)."""
    if is_tensor(x):
        return sys.modules["torch"].argsort(x)
    return np.argsort(x)


def concatenate(parts):
    """The 1-D arrays ``parts`` end to end."""
    if is_tensor(parts[0]):
        return sys.modules["torch"].cat(parts)
    return np.concatenate(parts)


def zeros(like):
    """Fresh zeros of ``like``'s shape, dtype and device (numpy's from calloc: pages are mapped lazily)."""
    if is_tensor(like):
        return sys.modules["torch"].zeros_like(like, memory_format=sys.modules["torch"].contiguous_format)
    return np.zeros(like.shape, dtype=like.dtype)


def largest_finite(like) -> float:
    """The largest finite number of ``like``'s dtype, as a Python float."""
    if is_tensor(like):
        return float(sys.modules["torch"].finfo(like.dtype).max)
    return float(np.finfo(like.dtype).max)


def masked_row_sums(x, mask):
    """Per-row sums (float64) of the entries of ``x`` (``(before, n, after)``) where ``mask`` holds,
    shaped ``(before, 1, after)``.

    A numpy row is a single ``einsum`` with the mask's bytes: one pass, where ``sum(where(...))``
    takes two and ``sum(where=...)`` is ten times slower (``dot`` would be one pass too, but it goes
    through the BLAS, whose threads stall on a loaded machine).
    """
    xp = namespace(x)
    if is_tensor(x):
        return xp.sum(x * mask, dim=1, keepdim=True, dtype=xp.float64)
    if x.shape[0] * x.shape[2] == 1:
        weights = mask.reshape(-1).view(np.uint8)
        return np.reshape(np.einsum("i,i->", x.reshape(-1), weights, dtype=np.float64), (1, 1, 1))
    return np.sum(x * mask, axis=1, keepdims=True, dtype=np.float64)

