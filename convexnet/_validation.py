"""Checks of user input shared by the modeling layer.

Each helper raises :class:`convexnet.errors.InvalidInputError` with a message that names the
argument and says how to fix it. They run before any work starts.
"""

from __future__ import annotations

import math
import numbers

import numpy as np

from solvers._arrays import is_tensor

from .errors import InvalidInputError

__all__ = [
    "is_tensor",
    "as_float_array",
    "check_finite_data",
    "check_scalar",
    "check_integer",
    "check_shape",
    "check_exactly_one",
    "as_data",
    "check_bool",
    "check_device",
    "check_executor",
]


def as_float_array(name: str, x, *, ndim: int | tuple[int, ...] | None = None,
                   dtype=np.float64) -> np.ndarray:
    """Convert ``x`` to a finite floating numpy array, or raise naming ``name``.

    Only real numbers are read: complex data (whose imaginary part a float conversion would drop
    without a word), strings, objects and dates are refused. A tensor must hold data (not the
    ``meta`` device) and may have any real dtype (bfloat16 included).

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    x : array_like or torch.Tensor
        The data. Tensors are detached and moved to the CPU.
    ndim : int or tuple of int, optional
        The allowed numbers of dimensions.
    dtype : numpy dtype
        The dtype of the returned array.
    """
    if x is None:
        raise InvalidInputError(f"{name} is None; pass an array.")
    if is_tensor(x):
        x = _tensor_to_numpy(name, x)
    try:
        arr = np.asarray(x)
    except (TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name} cannot be read as a numeric array ({exc}).") from None
    _check_real_dtype(name, arr.dtype)
    arr = arr.astype(dtype, copy=False)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise InvalidInputError(f"{name} must be {want}; got shape {arr.shape}.")
    check_finite_data(name, arr)
    return arr


def _check_real_dtype(name: str, dtype) -> None:
    """Raise unless ``dtype`` holds real numbers (bool, integers or floats)."""
    if dtype.kind == "c":
        raise InvalidInputError(f"{name} is complex ({dtype}); pass real data (take .real or "
                                "abs() yourself if that is what you mean).")
    if dtype.kind not in "biuf":
        raise InvalidInputError(f"{name} must hold real numbers; got dtype {dtype} (convert "
                                "strings or objects to a float array first).")


def _tensor_to_numpy(name: str, x) -> np.ndarray:
    """A tensor's values as a numpy array, or a typed error for a tensor that holds none."""
    import torch

    if x.device.type == "meta":
        raise InvalidInputError(f"{name} is a tensor on the 'meta' device, which holds no values; "
                                "pass a materialized tensor (e.g. after model.to_empty() and "
                                "loading its weights).")
    if x.is_complex():
        raise InvalidInputError(f"{name} is a complex tensor ({x.dtype}); pass real data.")
    x = x.detach()
    if x.is_floating_point() and x.dtype not in (torch.float16, torch.float32, torch.float64):
        # bfloat16 and the float8 types have no numpy dtype; float32 holds them exactly.
        x = x.to(torch.float32)
    try:
        return x.cpu().numpy()
    except (RuntimeError, TypeError, NotImplementedError) as exc:
        raise InvalidInputError(f"{name} cannot be read as a dense real tensor ({exc}); pass "
                                "a dense tensor (sparse: .to_dense()).") from None


def check_finite_data(name: str, x) -> None:
    """Raise when ``x`` (numpy array or tensor) holds NaN or infinite entries."""
    if is_tensor(x):
        import torch

        bad = int((~torch.isfinite(x)).sum()) if x.is_floating_point() else 0
    else:
        arr = np.asarray(x)
        bad = int((~np.isfinite(arr)).sum()) if np.issubdtype(arr.dtype, np.inexact) else 0
    if bad:
        raise InvalidInputError(
            f"{name} has {bad} NaN or infinite entries; clean or impute them before calling.")


def check_scalar(name: str, value, *, low: float | None = None, low_inclusive: bool = True,
                 allow_inf: bool = False) -> float:
    """Return ``value`` as a float after checking it is a real number in range.

    Parameters
    ----------
    low : float, optional
        Lower bound; ``value >= low`` (or ``> low`` when ``low_inclusive`` is False).
    allow_inf : bool
        Whether ``+inf`` is accepted (an unconstrained ball, say).
    """
    if isinstance(value, bool) or not isinstance(value, numbers.Real):
        if is_tensor(value) and value.numel() == 1:
            value = float(value)
        elif isinstance(value, np.ndarray) and value.size == 1:
            value = float(value)
        else:
            raise InvalidInputError(f"{name} must be a real number; got {value!r}.")
    value = float(value)
    if math.isnan(value) or (math.isinf(value) and not (allow_inf and value > 0)):
        raise InvalidInputError(f"{name} must be finite; got {value}.")
    if low is not None:
        if low_inclusive and value < low:
            raise InvalidInputError(f"{name} must be >= {low}; got {value}.")
        if not low_inclusive and value <= low:
            raise InvalidInputError(f"{name} must be > {low}; got {value}.")
    return value


def check_integer(name: str, value, *, low: int | None = None) -> int:
    """Return ``value`` as an int after checking it is an integer (not a float or bool) >= ``low``."""
    if isinstance(value, bool) or not isinstance(value, (numbers.Integral, np.integer)):
        raise InvalidInputError(f"{name} must be an integer; got {value!r}.")
    value = int(value)
    if low is not None and value < low:
        raise InvalidInputError(f"{name} must be >= {low}; got {value}.")
    return value


def check_shape(name: str, x: np.ndarray, shape: tuple[int, ...], meaning: str = "") -> None:
    """Raise when ``x.shape`` differs from ``shape``; ``meaning`` names the dimensions, e.g. "(P, M)"."""
    if tuple(x.shape) != tuple(shape):
        label = f" {meaning}" if meaning else ""
        raise InvalidInputError(f"{name} must have shape {tuple(shape)}{label}; got {tuple(x.shape)}.")


def as_data(name: str, x, *, ndim: int | tuple[int, ...] | None = None):
    """Return ``x`` as a finite floating array of its own kind, or raise naming ``name``.

    Unlike :func:`as_float_array`, a torch tensor stays a tensor on its device and a float32 array
    stays float32 (kernels answer in the input's kind and dtype); integer and boolean data become
    float64 (numpy) or torch's default dtype. Finiteness is checked with one sum (NaN and infinities
    propagate into it); only when the sum is not finite are the entries counted.

    Parameters
    ----------
    name : str
        The argument's name, used in the error message.
    x : array_like or torch.Tensor
    ndim : int or tuple of int, optional
        The allowed numbers of dimensions.
    """
    if x is None:
        raise InvalidInputError(f"{name} is None; pass an array.")
    if is_tensor(x):
        import torch

        if x.is_complex():
            raise InvalidInputError(f"{name} is complex; pass real data.")
        if x.device.type == "meta":
            raise InvalidInputError(f"{name} is a tensor on the 'meta' device, which holds no "
                                    "values; pass a materialized tensor.")
        arr = x if x.is_floating_point() else x.to(torch.get_default_dtype())
    else:
        try:
            arr = np.asarray(x)
        except (TypeError, ValueError) as exc:
            raise InvalidInputError(f"{name} cannot be read as a numeric array ({exc}).") from None
        _check_real_dtype(name, arr.dtype)
        if arr.dtype.kind != "f":
            arr = arr.astype(np.float64)
    if ndim is not None:
        allowed = (ndim,) if isinstance(ndim, int) else tuple(ndim)
        if arr.ndim not in allowed:
            want = " or ".join(f"{d}-D" for d in allowed)
            raise InvalidInputError(f"{name} must be {want}; got shape {tuple(arr.shape)}.")
    if not math.isfinite(float((arr.detach() if is_tensor(arr) else arr).sum())):
        check_finite_data(name, arr)
    return arr


def check_exactly_one(named: dict, hint: str = "") -> str:
    """Return the name of the one entry of ``named`` whose value is not None, or raise naming them.

    ``check_exactly_one({"epsilon": None, "rel_epsilon": 0.05, "lam": None})`` returns
    ``"rel_epsilon"``; ``hint`` is appended to the message (what each choice means).
    """
    given = [name for name, value in named.items() if value is not None]
    if len(given) != 1:
        names = list(named)
        raise InvalidInputError(f"give exactly one of {', '.join(names[:-1])} or {names[-1]}"
                                f"{hint}; got {' and '.join(given) if given else 'none'}.")
    return given[0]


def check_bool(name: str, value) -> bool:
    """Return ``value`` as a bool, accepting only ``True``/``False`` (and numpy bools).

    Strings such as ``"no"`` or ``"False"`` are truthy in Python; a flag given one is refused rather
    than read as True.
    """
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    raise InvalidInputError(f"{name} must be True or False; got {value!r} "
                            f"({type(value).__name__}).")


def check_device(name: str, value):
    """Return ``value`` as a ``torch.device`` (None stays None), or raise naming ``name``."""
    if value is None:
        return None
    import torch

    if not isinstance(value, (str, torch.device)):
        raise InvalidInputError(f"{name} must be a torch device or its name ('cpu', 'cuda', "
                                f"'cuda:1'); got {value!r}.")
    try:
        return torch.device(value)
    except (RuntimeError, TypeError, ValueError) as exc:
        raise InvalidInputError(f"{name}={value!r} is not a torch device ({exc}); use 'cpu' or "
                                "'cuda'.") from None


def check_executor(name: str, value):
    """Return ``value`` when it is None or has ``submit`` (a ``concurrent.futures.Executor``)."""
    if value is None or callable(getattr(value, "submit", None)):
        return value
    raise InvalidInputError(
        f"{name} must be a concurrent.futures.Executor (an object with submit(), e.g. "
        f"ThreadPoolExecutor() or a Dask client's get_executor()); got {value!r}.")
