"""Torch layers as Net-Trim matrices: which layers, which have a ReLU, and their activations.

A ``Linear`` layer with weight ``(M, N)`` is the design-orientation matrix ``W = weight.T`` of shape
``(N, M)``; every row of its input (all leading dimensions flattened) is a sample. A ``Conv2d`` layer
is the same through unfold: each patch position of each image is a sample (a row of
``C_in / groups * kh * kw`` entries), each output channel a column; group ``g`` is its own matrix,
the column block of its input channels against the row block of its output channels.

Activations are captured with forward hooks while the model runs on the calibration batches, in
float64 numpy. Every capture of a layer keeps the same rows: when a layer sees more than
``max_samples`` rows in a pass, the rows kept are ``numpy.random.default_rng(seed).choice(total,
max_samples, replace=False)``, sorted, where ``total`` is the layer's row count over all batches (a
counting pass measures it first). Layers with the same row count therefore keep the same rows.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError

__all__ = ["LayerSpec", "SUPPORTED", "find_layers", "detect_relu", "resolve_relu", "layer_rows",
           "design_blocks", "effective_tensor", "count_rows", "select_rows", "capture",
           "working_copy", "run_model", "is_iterable"]

SUPPORTED = (torch.nn.Linear, torch.nn.Conv2d)
# Modules that are the identity at evaluation time: a ReLU after them still follows the layer.
_TRANSPARENT = (torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d,
                torch.nn.AlphaDropout)


@dataclass
class LayerSpec:
    """A layer to trim: its name in ``model.named_modules()``, its kind and whether it has a ReLU."""

    name: str
    kind: str
    relu: bool
    weight_shape: tuple


# -------------------------------------------------------------------------------- discovery
def find_layers(model: torch.nn.Module, layers) -> list[str]:
    """Names of the layers to trim, in registration order; checked.

    ``layers=None`` takes every ``Linear`` and ``Conv2d``; otherwise an iterable of names from
    ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    candidates = [name for name, module in modules.items() if isinstance(module, SUPPORTED)]
    if layers is None:
        if not candidates:
            raise InvalidInputError(
                "model has no torch.nn.Linear or torch.nn.Conv2d layer to trim; convexnet.nn.trim "
                "handles these two layer types.")
        chosen = candidates
    else:
        if isinstance(layers, str) or not is_iterable(layers):
            raise InvalidInputError(
                f"layers must be None or a list of module names (e.g. {candidates[:3]}); "
                f"got {layers!r}.")
        chosen = list(layers)
        if not chosen:
            raise InvalidInputError("layers is empty; pass None to trim every Linear and Conv2d.")
        for name in chosen:
            if not isinstance(name, str):
                raise InvalidInputError(f"layers must hold module names (str); got {name!r}.")
            if name not in modules:
                raise InvalidInputError(
                    f"layers names {name!r}, which is not a module of the model; layers that can "
                    f"be trimmed: {_short_list(candidates)}.")
            if not isinstance(modules[name], SUPPORTED):
                raise InvalidInputError(
                    f"layers names {name!r}, a {type(modules[name]).__name__}; only "
                    "torch.nn.Linear and torch.nn.Conv2d can be trimmed.")
        if len(set(chosen)) != len(chosen):
            raise InvalidInputError(f"layers names a module twice: {chosen}.")
    for name in chosen:
        if torch.nn.utils.parametrize.is_parametrized(modules[name]):
            raise InvalidInputError(
                f"layer {name!r} has a parametrization (torch.nn.utils.parametrize); remove it "
                "before trimming, the refit weights are written into the plain parameter.")
    return chosen


def detect_relu(model: torch.nn.Module) -> set[str]:
    """Names of ``Linear``/``Conv2d`` modules followed by a ReLU, by the structural rule.

    In an ``nn.Sequential``, a layer is a ReLU layer when the next child (skipping ``Identity`` and
    ``Dropout`` modules, the identity in evaluation mode) is an ``nn.ReLU`` (``inplace`` or not).
    Functional ReLUs in a custom ``forward`` are invisible: say them with ``relu=``.
    """
    found = set()
    for prefix, module in model.named_modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        for index, (child_name, child) in enumerate(children):
            if not isinstance(child, SUPPORTED):
                continue
            following = [c for _, c in children[index + 1:] if not isinstance(c, _TRANSPARENT)]
            if following and isinstance(following[0], torch.nn.ReLU):
                found.add(f"{prefix}.{child_name}" if prefix else child_name)
    return found


def resolve_relu(names: list[str], model: torch.nn.Module, relu) -> dict[str, bool]:
    """Whether each layer is trimmed as a ReLU layer.

    ``relu=None``: the structural rule of :func:`detect_relu`. A mapping ``{name: bool}``: those
    layers as said, the others detected. A set (or list, tuple) of names: exactly these are ReLU
    layers, every other layer is linear.
    """
    detected = detect_relu(model)
    if relu is None:
        return {name: name in detected for name in names}
    if isinstance(relu, dict):
        explicit = relu
        chosen = {name: name in detected for name in names}
    elif isinstance(relu, (set, frozenset, list, tuple)):
        explicit = {name: True for name in relu}
        chosen = {name: False for name in names}
    else:
        raise InvalidInputError(
            "relu must be None (detect), a dict {layer name: bool} or a set of the names of ReLU "
            f"layers; got {type(relu).__name__}.")
    for name, value in explicit.items():
        if name not in chosen:
            raise InvalidInputError(
                f"relu names {name!r}, which is not a layer being trimmed ({_short_list(names)}).")
        if not isinstance(value, (bool, np.bool_)):
            raise InvalidInputError(f"relu[{name!r}] must be True or False; got {value!r}.")
        chosen[name] = bool(value)
    return chosen


# ---------------------------------------------------------------------------------- matrices
def _conv_padding(module: torch.nn.Conv2d) -> tuple[int, int, int, int]:
    """``(left, right, top, bottom)`` padding, as ``F.pad`` takes it; "same" may be asymmetric."""
    if isinstance(module.padding, str):
        if module.padding == "valid":
            return 0, 0, 0, 0
        pads = []
        for dilation, size in zip(module.dilation, module.kernel_size):
            total = dilation * (size - 1)
            pads.append((total // 2, total - total // 2))
        return pads[1][0], pads[1][1], pads[0][0], pads[0][1]
    height, width = module.padding
    return width, width, height, height


def conv_patches(module: torch.nn.Conv2d, x: torch.Tensor) -> torch.Tensor:
    """The unfolded input of a convolution: one row per (image, output position).

    Parameters
    ----------
    module : torch.nn.Conv2d
    x : Tensor, shape (B, C_in, H, W) or (C_in, H, W)

    Returns
    -------
    Tensor, shape (B * H_out * W_out, C_in * kh * kw)
        Row ``b * H_out * W_out + i * W_out + j`` is the patch of output position ``(i, j)`` of image
        ``b``; columns ordered ``(channel, kernel row, kernel column)``, as ``weight.reshape(C_out, -1)``.
        ``conv2d(x) == patches @ weight.reshape(C_out, -1).T + bias`` (per group's block).
    """
    if x.dim() == 3:
        x = x.unsqueeze(0)
    pads = _conv_padding(module)
    if any(pads):
        mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
        x = F.pad(x, pads, mode=mode)
    columns = F.unfold(x, module.kernel_size, dilation=module.dilation, padding=0,
                       stride=module.stride)
    return columns.transpose(1, 2).reshape(-1, columns.shape[1])


def layer_rows(module, x: torch.Tensor, y: torch.Tensor | None):
    """The layer's input and (pre-activation) output as sample rows.

    Returns
    -------
    X : Tensor, shape (rows, N)
        ``N = in_features`` (Linear) or ``C_in * kh * kw`` (Conv2d, all groups side by side).
    Y : Tensor, shape (rows, M) or None
        ``M = out_features`` or ``C_out``.
    """
    if isinstance(module, torch.nn.Linear):
        X = x.reshape(-1, module.in_features)
        return X, None if y is None else y.reshape(-1, module.out_features)
    X = conv_patches(module, x)
    if y is None:
        return X, None
    if y.dim() == 3:
        y = y.unsqueeze(0)
    Y = y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])
    return X, Y


def row_count(module, y: torch.Tensor) -> int:
    """Samples a call produces: output entries per output feature or channel."""
    width = module.out_features if isinstance(module, torch.nn.Linear) else module.out_channels
    return y.numel() // width


def effective_tensor(module, name: str) -> torch.Tensor | None:
    """The tensor the module computes with: ``<name>_orig * <name>_mask`` when pruned.

    Read from the reparametrization rather than the ``<name>`` attribute, which the pruning hook
    only refreshes at the next forward call.
    """
    if hasattr(module, name + "_orig") and hasattr(module, name + "_mask"):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name)


def design_blocks(module) -> list[tuple[slice, slice, np.ndarray, np.ndarray | None]]:
    """The layer as design-orientation matrices, one per group, in float64.

    Returns
    -------
    list of (input_columns, output_columns, W, b)
        ``W`` (N_g, M_g) and ``b`` (M_g,) or None; ``input_columns`` selects the group's columns of
        :func:`layer_rows`' ``X``, ``output_columns`` its columns of ``Y``.
    """
    weight = _as_numpy(effective_tensor(module, "weight"))
    bias = effective_tensor(module, "bias")
    bias = None if bias is None else _as_numpy(bias)
    if isinstance(module, torch.nn.Linear):
        return [(slice(None), slice(None), weight.T.copy(), bias)]
    groups = module.groups
    out_per_group = module.out_channels // groups
    inputs_per_group = weight[0].size
    blocks = []
    for group in range(groups):
        outs = slice(group * out_per_group, (group + 1) * out_per_group)
        ins = slice(group * inputs_per_group, (group + 1) * inputs_per_group)
        W = weight[outs].reshape(out_per_group, -1).T.copy()
        blocks.append((ins, outs, W, None if bias is None else bias[outs].copy()))
    return blocks


# ------------------------------------------------------------------------------------ passes
def working_copy(model: torch.nn.Module) -> torch.nn.Module:
    """A deep copy of ``model`` in evaluation mode, for capturing and trial writes.

    A pruned module's ``weight`` is a non-leaf tensor (``weight_orig * weight_mask``), which
    ``copy.deepcopy`` refuses; such tensors are copied detached (the pruning hook recomputes them).
    """
    memo = {}
    for module in model.modules():
        for value in vars(module).values():
            if isinstance(value, torch.Tensor) and not value.is_leaf:
                memo[id(value)] = value.detach().clone()
    try:
        copied = copy.deepcopy(model, memo)
    except Exception as exc:
        raise InvalidInputError(
            f"model cannot be deep-copied ({type(exc).__name__}: {exc}); trim works on a copy so "
            "that the model is untouched until every layer has been solved.") from None
    return copied.eval()


def run_model(model: torch.nn.Module, batches: list, hooks: dict) -> None:
    """Run ``model`` on every batch without gradients, with ``hooks`` ``{module: hook}`` attached.

    Each hook is a forward hook with keyword arguments, ``hook(module, args, kwargs, output)``; all
    are removed afterwards, even when the forward pass raises.
    """
    handles = [module.register_forward_hook(hook, with_kwargs=True)
               for module, hook in hooks.items()]
    try:
        with torch.no_grad():
            for batch in batches:
                model(batch)
    finally:
        for handle in handles:
            handle.remove()


def count_rows(model, names: list[str], batches: list) -> tuple[list[str], dict, dict]:
    """One pass that measures each layer: execution order, rows in total and calls per batch."""
    modules = {name: model.get_submodule(name) for name in names}
    order, totals, calls = [], dict.fromkeys(names, 0), dict.fromkeys(names, 0)

    def make_hook(name):
        def hook(module, args, kwargs, output):
            if name not in order:
                order.append(name)
            totals[name] += row_count(module, output)
            calls[name] += 1
        return hook

    try:
        run_model(model, batches, {modules[name]: make_hook(name) for name in names})
    except (RuntimeError, TypeError, ValueError, IndexError) as exc:
        # The first pass is where inputs that do not fit the model show up: say so in one line.
        raise InvalidInputError(
            f"the model raised {type(exc).__name__} on the calibration inputs "
            f"({str(exc).splitlines()[0] if str(exc) else 'no message'}); pass inputs of the shape "
            "and type the model takes.") from exc
    missing = [name for name in names if totals[name] == 0]
    if missing:
        raise InvalidInputError(
            f"layers {missing} were not called when the model ran on the calibration inputs; "
            "trim only layers that the forward pass uses (layers=[...]).")
    per_batch = {name: calls[name] / len(batches) for name in names}
    return order, totals, per_batch


def select_rows(total: int, max_samples: int | None, seed: int) -> np.ndarray | None:
    """The rows a layer keeps (module docstring); None keeps all ``total`` rows."""
    if max_samples is None or total <= max_samples:
        return None
    return np.sort(np.random.default_rng(seed).choice(total, size=max_samples, replace=False))


def capture(model, names: list[str], batches: list, selections: dict, totals: dict, *,
            inputs: bool, outputs: bool) -> dict[str, dict[str, np.ndarray]]:
    """Run ``model`` and keep the selected rows of each layer's input and/or output.

    ``totals`` are the row counts of :func:`count_rows`; a pass that sees other counts (a forward
    pass that is not deterministic) raises, since the kept rows would no longer match.

    Returns
    -------
    dict
        ``{name: {"X": (rows, N), "Y": (rows, M)}}`` in float64, ``Y`` before any activation.
    """
    modules = {name: model.get_submodule(name) for name in names}
    pieces = {name: {"X": [], "Y": []} for name in names}
    offsets = dict.fromkeys(names, 0)

    def make_hook(name):
        def hook(module, args, kwargs, output):
            x = args[0] if args else kwargs["input"]
            X, Y = layer_rows(module, x, output if outputs else None)
            start = offsets[name]
            offsets[name] += X.shape[0]
            keep = selections[name]
            if keep is not None:
                local = keep[(keep >= start) & (keep < start + X.shape[0])] - start
                index = torch.as_tensor(local, device=X.device)
                X = X.index_select(0, index)
                Y = None if Y is None else Y.index_select(0, index)
            if inputs:
                pieces[name]["X"].append(_as_numpy(X))
            if outputs:
                pieces[name]["Y"].append(_as_numpy(Y))
        return hook

    run_model(model, batches, {modules[name]: make_hook(name) for name in names})
    changed = [name for name in names if offsets[name] != totals[name]]
    if changed:
        raise InvalidInputError(
            f"layers {changed} saw a different number of samples from one pass over the "
            "calibration inputs to the next; trim needs a forward pass that is the same every time "
            "(evaluation mode, no random input transforms).")
    return {name: {key: np.concatenate(parts) for key, parts in pieces[name].items() if parts}
            for name in names}


def _as_numpy(tensor: torch.Tensor) -> np.ndarray:
    # A copy always: a float64 CPU tensor would otherwise share memory with the model (or with an
    # activation that an in-place ReLU overwrites next).
    return tensor.detach().to("cpu", torch.float64, copy=True).numpy()


def is_iterable(value) -> bool:
    """Whether ``iter(value)`` works."""
    try:
        iter(value)
    except TypeError:
        return False
    return True


def _short_list(names: list[str], limit: int = 8) -> str:
    shown = ", ".join(repr(n) for n in names[:limit])
    return shown + (f", ... ({len(names)} in all)" if len(names) > limit else "") if names else "none"
