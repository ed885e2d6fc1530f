"""Which layers of a model are trimmed, which have a ReLU, and their activations.

A layer is any module that an adapter of :mod:`convexnet.nn.layers` takes (``Linear``,
``Conv1d/2d/3d``); the adapter says how its input and output become sample rows. Activations are
captured with forward hooks while the model runs on the calibration batches, in float64 numpy.
Every capture of a layer keeps the same rows: when a layer sees more than ``max_samples`` rows in a
pass, the rows kept are ``numpy.random.default_rng(seed).choice(total, max_samples,
replace=False)``, sorted, where ``total`` is the layer's row count over all batches (a counting pass
measures it first). Layers with the same row count therefore keep the same rows.
"""

from __future__ import annotations

import contextlib
import copy
import inspect

import numpy as np
import torch

from ..errors import InvalidInputError
from .layers import as_numpy, describe_supported, model_adapters

__all__ = ["find_layers", "detect_relu", "resolve_relu", "count_rows", "select_rows", "capture",
           "working_copy", "run_model", "is_iterable", "layer_adapters", "model_options",
           "no_fastpath"]

# Modules that are the identity at evaluation time: a ReLU after them still follows the layer.
_TRANSPARENT = (torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d,
                torch.nn.Dropout3d, torch.nn.AlphaDropout, torch.nn.FeatureAlphaDropout)


# -------------------------------------------------------------------------------- discovery
def find_layers(model: torch.nn.Module, layers) -> list[str]:
    """Names of the layers to trim, in registration order; checked.

    ``layers=None`` takes every supported layer (:func:`convexnet.nn.layers.supported`);
    otherwise an iterable of names from ``model.named_modules()``.
    """
    modules = dict(model.named_modules())
    adapters = model_adapters(model)
    candidates = list(adapters)
    if layers is None:
        if not candidates:
            raise InvalidInputError(
                f"model has no {describe_supported()} layer to trim; convexnet.nn.trim handles "
                "these layer types.")
        chosen = candidates
    else:
        if isinstance(layers, str) or not is_iterable(layers):
            raise InvalidInputError(
                f"layers must be None or a list of module names (e.g. {candidates[:3]}); "
                f"got {layers!r}.")
        chosen = list(layers)
        if not chosen:
            raise InvalidInputError("layers is empty; pass None to trim every supported layer.")
        for name in chosen:
            if not isinstance(name, str):
                raise InvalidInputError(f"layers must hold module names (str); got {name!r}.")
            if name not in modules:
                raise InvalidInputError(
                    f"layers names {name!r}, which is not a module of the model; layers that can "
                    f"be trimmed: {_short_list(candidates)}.")
            if name not in adapters:
                raise InvalidInputError(
                    f"layers names {name!r}, a {type(modules[name]).__name__}; only "
                    f"{describe_supported()} can be trimmed.")
        if len(set(chosen)) != len(chosen):
            raise InvalidInputError(f"layers names a module twice: {chosen}.")
    for name in chosen:
        if torch.nn.utils.parametrize.is_parametrized(modules[name]):
            raise InvalidInputError(
                f"layer {name!r} has a parametrization (torch.nn.utils.parametrize); remove it "
                "before trimming, the refit weights are written into the plain parameter.")
    return chosen


def detect_relu(model: torch.nn.Module) -> set[str]:
    """Names of supported layers followed by a ReLU, by the structural rule.

    In an ``nn.Sequential``, a layer is a ReLU layer when the next child (skipping ``Identity`` and
    ``Dropout`` modules, the identity in evaluation mode) is an ``nn.ReLU`` (``inplace`` or not).
    Functional ReLUs in a custom ``forward`` are invisible: say them with ``relu=``.
    """
    found = set()
    for prefix, module in model.named_modules():
        if not isinstance(module, torch.nn.Sequential):
            continue
        children = list(module.named_children())
        layers = model_adapters(module)
        for index, (child_name, child) in enumerate(children):
            if child_name not in layers:
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


def run_model(model: torch.nn.Module, batches: list, hooks: list) -> None:
    """Run ``model`` on every batch without gradients, with ``hooks`` ``[(module, hook)]`` attached.

    Each hook is a forward hook with keyword arguments, ``hook(module, args, kwargs, output)``; all
    are removed afterwards, even when the forward pass raises. The fused fast path of
    ``nn.TransformerEncoderLayer`` and ``nn.MultiheadAttention`` is off meanwhile: it skips the
    submodules' calls (so their hooks) and the pruning hooks that refresh their weights.
    """
    handles = [module.register_forward_hook(hook, with_kwargs=True) for module, hook in hooks]
    options = model_options(model)
    try:
        with torch.no_grad(), no_fastpath():
            for batch in batches:
                model(batch, **options)
    finally:
        for handle in handles:
            handle.remove()


@contextlib.contextmanager
def no_fastpath():
    """PyTorch's fused attention fast path off inside (put back as it was after)."""
    fastpath = torch.backends.mha.get_fastpath_enabled()
    torch.backends.mha.set_fastpath_enabled(False)
    try:
        yield
    finally:
        torch.backends.mha.set_fastpath_enabled(fastpath)


def model_options(model: torch.nn.Module) -> dict:
    """Keyword arguments for calibration passes: ``use_cache=False`` for a model that takes it.

    A ``transformers`` model would otherwise build a key/value cache that its blocks update in
    place, so that running a recorded block call twice would attend to the first run's keys.
    """
    try:
        parameters = inspect.signature(model.forward).parameters
    except (TypeError, ValueError):
        return {}
    return {"use_cache": False} if "use_cache" in parameters else {}


def count_rows(model, names: list[str], batches: list) -> tuple[list[str], dict, dict]:
    """One pass that measures each layer: execution order, rows in total and calls per batch."""
    adapters = layer_adapters(model, names)
    order, totals, calls = [], dict.fromkeys(names, 0), dict.fromkeys(names, 0)

    def make_hook(name):
        def hook(module, args, kwargs, output):
            if name not in order:
                order.append(name)
            totals[name] += adapters[name].call_rows(args, kwargs, output)
            calls[name] += 1
        return hook

    try:
        run_model(model, batches, [(adapters[name].hooked, make_hook(name)) for name in names])
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
    adapters = layer_adapters(model, names)
    pieces = {name: {"X": [], "Y": []} for name in names}
    offsets = dict.fromkeys(names, 0)

    def make_hook(name):
        def hook(module, args, kwargs, output):
            X = adapters[name].call_inputs(args, kwargs)
            Y = adapters[name].call_outputs(args, kwargs, output) if outputs else None
            start = offsets[name]
            offsets[name] += X.shape[0]
            keep = selections[name]
            if keep is not None:
                local = keep[(keep >= start) & (keep < start + X.shape[0])] - start
                index = torch.as_tensor(local, device=X.device)
                X = X.index_select(0, index)
                Y = None if Y is None else Y.index_select(0, index)
            if inputs:
                pieces[name]["X"].append(as_numpy(X))
            if outputs:
                pieces[name]["Y"].append(as_numpy(Y))
        return hook

    run_model(model, batches, [(adapters[name].hooked, make_hook(name)) for name in names])
    changed = [name for name in names if offsets[name] != totals[name]]
    if changed:
        raise InvalidInputError(
            f"layers {changed} saw a different number of samples from one pass over the "
            "calibration inputs to the next; trim needs a forward pass that is the same every time "
            "(evaluation mode, no random input transforms).")
    return {name: {key: np.concatenate(parts) for key, parts in pieces[name].items() if parts}
            for name in names}


def layer_adapters(model: torch.nn.Module, names: list[str]) -> dict:
    """``{name: adapter}`` of the named layers of ``model`` (:func:`~convexnet.nn.layers.model_adapters`)."""
    adapters = model_adapters(model)
    return {name: adapters[name] for name in names}


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
