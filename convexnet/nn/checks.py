"""The checks :func:`convexnet.nn.trim` runs before any work: model, layers, inputs and options.

Each raises :class:`convexnet.errors.InvalidInputError` naming the argument and the fix. Besides the
argument checks, two properties of the model are checked here because trimming would silently give a
wrong answer without them:

* **meta tensors** have no values: nothing can be captured or written;
* **shared parameters** (tied weights: one tensor used by two modules, such as ``b.weight = a.weight``
  or an embedding tied to an output ``Linear``): trimming one module writes the other's weights too,
  and trimming both writes the tensor twice, so neither layer's budget, nor the chained bound, holds.
  The default selection skips such layers (with a warning, and ``report.info["skipped"]``); naming
  one in ``layers=`` is refused.
"""

from __future__ import annotations

import warnings

import numpy as np
import torch

from . import capture
from .._validation import (check_bool, check_device, check_executor, check_finite_data,
                          check_integer, is_tensor)
from ..errors import InvalidInputError

__all__ = ["check_model", "reference_tensor", "calibration_batches", "check_options",
           "shared_parameters", "choose_layers"]


# --------------------------------------------------------------------------------- the model
def check_model(model) -> None:
    """A ``torch.nn.Module`` whose parameters and buffers all hold values (none on ``meta``)."""
    if not isinstance(model, torch.nn.Module):
        raise InvalidInputError(f"model must be a torch.nn.Module; got {type(model).__name__}.")
    on_meta = [name for name, tensor in (*model.named_parameters(), *model.named_buffers())
               if tensor.is_meta]
    if on_meta:
        raise InvalidInputError(
            f"model has tensors on the meta device, which hold no values ({_names(on_meta)}); "
            "materialize the model first, e.g. model.to_empty(device='cpu') followed by "
            "model.load_state_dict(weights).")


def reference_tensor(model: torch.nn.Module) -> torch.Tensor:
    """The model's first floating-point parameter or buffer: its dtype and device are the model's."""
    for tensor in (*model.parameters(), *model.buffers()):
        if tensor.is_floating_point():
            return tensor
    raise InvalidInputError("model has no floating-point parameters; there is nothing to trim.")


# ---------------------------------------------------------------------------------- the inputs
def _as_batch(index: int, batch, reference: torch.Tensor) -> torch.Tensor:
    if isinstance(batch, (tuple, list)) and batch and (is_tensor(batch[0])
                                                       or isinstance(batch[0], np.ndarray)):
        batch = batch[0]        # (inputs, targets) as a DataLoader yields them
    if isinstance(batch, np.ndarray):
        batch = torch.as_tensor(batch)
    if not is_tensor(batch):
        raise InvalidInputError(
            f"inputs batch {index} is a {type(batch).__name__}; inputs must be a torch.Tensor, or "
            "an iterable of tensors (or of (inputs, targets) pairs); convert with torch.as_tensor.")
    if batch.is_meta:
        raise InvalidInputError(
            f"inputs batch {index} is on the meta device and holds no values; pass real "
            "calibration data.")
    if batch.is_complex():
        raise InvalidInputError(f"inputs batch {index} is complex; pass real calibration data.")
    check_finite_data(f"inputs (batch {index})", batch)
    if batch.is_floating_point():
        return batch.to(device=reference.device, dtype=reference.dtype)
    return batch.to(device=reference.device)


def calibration_batches(inputs, batch_size, reference: torch.Tensor) -> list[torch.Tensor]:
    """The calibration batches, materialized once (every pass runs over the same list)."""
    if is_tensor(inputs) or isinstance(inputs, np.ndarray):
        whole = _as_batch(0, inputs, reference)
        if whole.dim() == 0:
            raise InvalidInputError("inputs is a 0-d tensor; pass a batch of samples.")
        batches = [whole] if batch_size is None else list(torch.split(whole, batch_size))
    elif isinstance(inputs, (str, bytes, dict)) or not capture.is_iterable(inputs):
        raise InvalidInputError(
            f"inputs must be a torch.Tensor or an iterable of tensor batches (a DataLoader, a "
            f"list); got {type(inputs).__name__}.")
    else:
        batches = [_as_batch(index, batch, reference) for index, batch in enumerate(inputs)]
    if not batches or all(batch.numel() == 0 for batch in batches):
        raise InvalidInputError("inputs holds no samples; pass at least one calibration batch.")
    return batches


# --------------------------------------------------------------------------------- the options
def check_options(*, max_samples, seed, batch_size, device, executor, progress, solver_options,
                  certify, split_budget, penalize_bias, allow_inaccurate) -> dict:
    """Check the keyword options of ``trim``; return the normalized flags and device.

    Returns
    -------
    dict
        ``device`` (a ``torch.device`` or None) and the booleans ``split_budget``,
        ``penalize_bias`` and ``allow_inaccurate``.
    """
    if max_samples is not None:
        check_integer("max_samples", max_samples, low=1)
    check_integer("seed", seed, low=0)
    if batch_size is not None:
        check_integer("batch_size", batch_size, low=1)
    if progress is not None and not callable(progress):
        raise InvalidInputError(f"progress must be None or a callable progress(index, n_layers, "
                                f"layer_report); got {progress!r}.")
    if solver_options is not None and not isinstance(solver_options, dict):
        raise InvalidInputError(f"solver_options must be a dict; got {type(solver_options).__name__}.")
    # A string such as "no" is truthy: refuse it here rather than in the first layer's solve.
    if not isinstance(certify, (bool, np.bool_, dict)):
        raise InvalidInputError(f"certify must be True, False or a dict of tolerances (gap_tol, "
                                f"feas_tol); got {certify!r}.")
    check_executor("executor", executor)
    device = check_device("device", device)
    if device is not None and device.type == "meta":
        raise InvalidInputError("device='meta' holds no values; the 'admm' backend needs a real "
                                "device: 'cpu' or 'cuda'.")
    return {"device": device,
            "split_budget": check_bool("split_budget", split_budget),
            "penalize_bias": check_bool("penalize_bias", penalize_bias),
            "allow_inaccurate": check_bool("allow_inaccurate", allow_inaccurate)}


# ---------------------------------------------------------------------------- shared tensors
def _memory(tensor: torch.Tensor):
    """``(device, first byte, end byte)`` of the memory ``tensor`` can address; None when empty."""
    if tensor.numel() == 0:
        return None
    extent = 1 + sum((size - 1) * stride for size, stride in zip(tensor.shape, tensor.stride()))
    start = tensor.data_ptr()
    return str(tensor.device), start, start + extent * tensor.element_size()


def shared_parameters(model: torch.nn.Module, names: list[str]) -> dict[str, list[tuple[str, str]]]:
    """Which of the layers ``names`` share a parameter's memory with another module.

    Every parameter and buffer of every module is placed by the memory it addresses; a layer's
    parameter that overlaps a tensor of another module (the same ``Parameter`` registered twice, or
    two parameters viewing one storage) is shared. A module registered under two names is one
    module and shares nothing with itself.

    Returns
    -------
    dict
        ``{layer: [(its tensor, the other module's tensor), ...]}`` for the shared layers only,
        tensors named as in ``model.named_parameters()``.
    """
    entries = []
    for module_name, module in model.named_modules():
        for is_parameter, tensors in ((True, module._parameters), (False, module._buffers)):
            for tensor_name, tensor in tensors.items():
                place = None if tensor is None else _memory(tensor)
                if place is not None:
                    label = f"{module_name}.{tensor_name}" if module_name else tensor_name
                    entries.append((place, module_name, module, label, is_parameter))
    entries.sort(key=lambda entry: entry[0])
    clusters, end = [], None
    for entry in entries:
        device, start, stop = entry[0]
        if clusters and end is not None and device == end[0] and start < end[1]:
            clusters[-1].append(entry)
            end = (device, max(end[1], stop))
        else:
            clusters.append([entry])
            end = (device, stop)
    wanted = set(names)
    shared: dict[str, list[tuple[str, str]]] = {}
    for cluster in clusters:
        for _, module_name, module, label, is_parameter in cluster:
            if not is_parameter or module_name not in wanted:
                continue
            for _, _, other, other_label, _ in cluster:
                if other is not module:
                    shared.setdefault(module_name, []).append((label, other_label))
    return shared


def choose_layers(model: torch.nn.Module, layers) -> tuple[list[str], dict[str, str]]:
    """The layers to trim, checked; and the layers the default selection skipped, with why.

    Layers whose parameters are shared with another module (module docstring) are skipped, with a
    warning, when ``layers`` is None, and refused when ``layers`` names them.
    """
    names = capture.find_layers(model, layers)
    shared = shared_parameters(model, names)
    if not shared:
        return names, {}
    reasons = {name: "; ".join(f"{own} is {other}" for own, other in pairs)
               for name, pairs in shared.items()}
    if layers is not None:
        name = next(name for name in names if name in shared)
        own, other = shared[name][0]
        raise InvalidInputError(
            f"layers names {name!r}, whose parameter {own} is also {other} (tied weights: one "
            f"tensor, two modules). Trimming it would change the other module as well, so no "
            "budget or bound would hold. Leave both modules out of layers= (the default selection "
            "skips them), or untie them first, e.g. "
            f"model.get_submodule({name!r}).{own.rsplit('.', 1)[-1]} = "
            f"torch.nn.Parameter(model.get_submodule({name!r}).{own.rsplit('.', 1)[-1]}"
            ".detach().clone()).")
    kept = [name for name in names if name not in shared]
    if not kept:
        raise InvalidInputError(
            f"every Linear and convolution layer of the model shares a parameter with another module "
            f"({', '.join(f'{n}: {r}' for n, r in reasons.items())}); tied weights cannot be trimmed "
            "one use at a time. Untie them first (give each module its own Parameter).")
    warnings.warn(
        f"trim skips layers {sorted(shared)}: their parameters are shared with other modules "
        f"({', '.join(f'{n}: {r}' for n, r in reasons.items())}). Untie them to trim them; "
        "report.info['skipped'] lists them.", UserWarning, stacklevel=3)
    return kept, reasons


def _names(names: list[str], limit: int = 5) -> str:
    shown = ", ".join(names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "")
