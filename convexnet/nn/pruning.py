"""Pruning to a target, and refitting given masks, layer after layer on streamed Gram statistics.

:func:`prune` is what :func:`convexnet.nn.trim` runs for ``sparsity=`` or ``pattern=``, and
:func:`convexnet.nn.refit` for given masks. One loop, the cascade of paper 004 at the level of
layers: on a working copy of the model, for each layer in the order the forward pass calls it,

1. stream the Gram matrix ``H`` of its input rows (:mod:`convexnet.nn.blocks`: through the whole
   model, or through its current block only), with the layers before it already pruned;
2. choose the support: the convex l1 path (:func:`convexnet.nn.targets.l1_support`), a callable
   (any method: magnitude, Wanda, SparseGPT), or the given mask;
3. refit the kept weights exactly (:func:`convexnet.nn.least_squares.masked_refit`) and certify them
   (:func:`convexnet.nn.least_squares.certify`);
4. write them into the working copy, so that the next layer sees the pruned input.

Only when every layer is done are the weights written into the model (:func:`write_all`): a failure
anywhere (block 3's solve, a bad mask) leaves the model exactly as it was.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from ..programs.cascade import Block
from . import capture, checks
from .blocks import BlockStream, ModelStream, block_of, find_blocks, layer_order
from .least_squares import certify, masked_refit
from .report import LayerReport, TrimReport
from .targets import Target, l1_support, satisfies
from .write import write_all, write_update

__all__ = ["LayerData", "prune", "check_token_batches"]


@dataclass(frozen=True)
class LayerData:
    """What a support callable sees of one layer (one group of a grouped convolution).

    Attributes
    ----------
    name : str
    H : Tensor, shape (N, N), float64
        ``X^T X`` of the layer's input rows (no bias column), in the model pruned so far.
    W : Tensor, shape (N, M), float64
        The layer's weights in the design's orientation (``Linear.weight.T``).
    rows : int
        Calibration rows behind ``H``.
    target : Target or None
    """

    name: str
    H: torch.Tensor
    W: torch.Tensor
    rows: int
    target: Target | None


def check_token_batches(model, batches: list) -> None:
    """For a language model (``get_input_embeddings()`` an ``nn.Embedding``): token ids ``(B, T)``."""
    getter = getattr(model, "get_input_embeddings", None)
    embedding = getter() if callable(getter) else None
    if not isinstance(embedding, torch.nn.Embedding):
        return
    limit = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    for index, batch in enumerate(batches):
        if batch.is_floating_point() or batch.dtype == torch.bool:
            raise InvalidInputError(
                f"calibration batch {index} has dtype {batch.dtype}; a language model takes token "
                "ids: a torch.long tensor (B, T), e.g. torch.tensor(list(text.encode())).")
        if batch.dim() != 2:
            raise InvalidInputError(
                f"calibration batch {index} has shape {tuple(batch.shape)}; pass token ids of "
                "shape (B, T) (one sequence per row).")
        if batch.numel() and (int(batch.min()) < 0 or int(batch.max()) >= embedding.num_embeddings):
            raise InvalidInputError(
                f"calibration batch {index} holds token ids outside [0, "
                f"{embedding.num_embeddings}); the model's vocabulary has "
                f"{embedding.num_embeddings} tokens.")
        if limit is not None and batch.shape[1] > limit:
            raise InvalidInputError(
                f"calibration batch {index} has {batch.shape[1]} tokens per sequence, more than "
                f"the model's {limit} positions; cut the sequences.")


def _plan(model, layers, blockwise):
    """The layers, the blocks (or None) and the skipped layers, checked."""
    names, skipped = checks.choose_layers(model, layers)
    found = find_blocks(model, names) if blockwise in (None, True) else None
    if blockwise is True and found is None:
        raise InvalidInputError("blockwise=True, but the model has no repeated blocks "
                                "(an nn.ModuleList of one block class); pass blockwise=None.")
    if found is None:
        return names, None, skipped
    outside = [name for name in names if block_of(name, found[1]) is None]
    if outside and layers is not None:
        if blockwise is True:
            raise InvalidInputError(
                f"layers {outside} lie outside the repeated blocks {found[0]!r}, which blockwise="
                "True calibrates; leave them out or pass blockwise=False.")
        return names, None, skipped
    for name in outside:
        skipped[name] = f"outside the repeated blocks {found[0]!r}"
    return [name for name in names if name not in outside], found[1], skipped


def prune(model: torch.nn.Module, calibration, *, target: Target | None, support="l1", layers=None,
          masks: dict | None = None, refit: bool = True, damping: float = 0.0, blockwise=None,
          batch_size=None, progress=None, l1_options: dict | None = None) -> TrimReport:
    """The loop of the module docstring; see :func:`convexnet.nn.trim` for the arguments.

    ``masks`` (``{name: bool tensor in the weight's layout}``) fixes the supports (``refit``);
    ``support`` is ``"l1"`` or a callable ``support(LayerData)`` returning a Tensor (N, M): bool, a
    mask; floating, weights whose zeros are the mask (written as they are with ``refit=False``); or
    a pair ``(mask, weights)``.
    """
    start = time.perf_counter()
    checks.check_model(model)
    if not (support == "l1" or callable(support)):
        raise InvalidInputError(f"support must be 'l1' or a callable support(layer) -> mask; "
                                f"got {support!r}.")
    if not isinstance(damping, (int, float)) or not np.isfinite(damping) or damping < 0:
        raise InvalidInputError(f"damping must be a float >= 0 (a fraction of H's mean diagonal); "
                                f"got {damping!r}.")
    if blockwise not in (None, True, False):
        raise InvalidInputError(f"blockwise must be None (when the model has repeated blocks), "
                                f"True or False; got {blockwise!r}.")
    names, blocks, skipped = _plan(model, layers, blockwise)
    adapters = capture.layer_adapters(model, names)
    fixed = _check_masks(masks, names, adapters) if masks is not None else None
    for name in names:
        if target is not None:
            target.check_inputs(f"layer {name!r}", adapters[name].rows_per_output)
    reference = checks.reference_tensor(model)
    batches = checks.calibration_batches(calibration, batch_size, reference)
    check_token_batches(model, batches)

    working = capture.working_copy(model)
    stream = BlockStream(working, batches, blocks) if blocks else ModelStream(working, batches)
    order = _order(working, names, batches)
    work_adapters = capture.layer_adapters(working, names)
    reports, updates = [], {}
    for index, name in enumerate(order):
        block = stream.reach(name)
        layer_start = time.perf_counter()
        adapter = work_adapters[name]
        # Refitting given masks starts from the dense weights (a pruned module's weight_orig).
        pieces = adapter.blocks(effective=fixed is None)
        has_bias = pieces[0].b is not None
        H, rows = stream.gram(name, adapter, has_bias)
        refits, results = [], []
        for piece in pieces:
            given = None if fixed is None else fixed[name][:, piece.outputs]
            W, result = _solve_piece(name, piece, H, rows, target, support, given, refit, damping,
                                     l1_options or {})
            refits.append(Block(piece.inputs, piece.outputs, W[:piece.W.shape[0]],
                                W[-1] if has_bias else None))
            results.append(result)
        update = adapter.update(refits)
        write_update(adapter.module, update)
        updates[name] = update
        objective = sum(result.objective for result in results)
        reports.append(LayerReport(
            name, adapter.kind, adapter.weight_shape, False, rows, results, float("nan"),
            int(update.mask.count_nonzero()), update.mask.numel(), time.perf_counter() - layer_start,
            discrepancy=float(np.sqrt(max(objective, 0.0))), block=block))
        if progress is not None:
            progress(index, len(order), reports[-1])
    modules = [model.get_submodule(name) for name in order]
    write_all(modules, [type(u)(u.weight.clone(), u.mask.clone(),
                                None if u.bias is None else u.bias.clone())
                        for u in (updates[name] for name in order)])
    mode = "blockwise" if blocks else "cascade"
    return TrimReport(reports, mode, time.perf_counter() - start,
                      info={"target": None if target is None else target.describe(),
                            "support": support if isinstance(support, str) else
                            getattr(support, "__name__", "callable"),
                            "refit": refit, "damping": damping, "skipped": skipped,
                            "blocks": blocks or []})


def _order(working, names: list[str], batches: list) -> list[str]:
    def run(hooks):
        try:
            capture.run_model(working, batches[:1], hooks)
        except (RuntimeError, TypeError, ValueError, IndexError) as exc:
            raise InvalidInputError(
                f"the model raised {type(exc).__name__} on the calibration inputs "
                f"({str(exc).splitlines()[0] if str(exc) else 'no message'}); pass inputs of the "
                "shape and type the model takes.") from exc
    return layer_order(working, names, run)


def _check_masks(masks, names: list[str], adapters: dict) -> dict:
    """``{name: bool design mask (N, M)}`` from masks in the weights' layout; every layer needs one."""
    if not isinstance(masks, dict):
        raise InvalidInputError(f"masks must be a dict {{layer name: bool tensor}}; got "
                                f"{type(masks).__name__}.")
    unknown = [name for name in masks if name not in adapters]
    if unknown:
        raise InvalidInputError(f"masks names {unknown}, which are not layers being refit "
                                f"({names[:6]}...).")
    design = {}
    for name in names:
        adapter = adapters[name]
        if name in masks:
            mask = torch.as_tensor(masks[name])
        elif hasattr(adapter.module, adapter.weight_name + "_mask"):
            mask = getattr(adapter.module, adapter.weight_name + "_mask")
        else:
            mask = adapter.parameter(adapter.weight_name) != 0
        if tuple(mask.shape) != adapter.weight_shape:
            raise InvalidInputError(f"masks[{name!r}] has shape {tuple(mask.shape)}; the layer's "
                                    f"weight is {adapter.weight_shape}.")
        design[name] = adapter.design(mask.detach().to("cpu") != 0)
    return design


def _solve_piece(name, piece, H, rows, target, support, given, refit, damping, l1_options):
    """One program of a layer: its support, its refit ``[W; b]`` (n, M) float64, its certificate."""
    N = piece.W.shape[0]
    device = H.device
    index = torch.arange(H.shape[0], device=device)
    if not isinstance(piece.inputs, slice) or piece.inputs != slice(None):
        kept = index[piece.inputs]
        index = torch.cat([kept, index[-1:]]) if piece.b is not None else kept
    Hg = H[index][:, index]
    W0 = torch.as_tensor(piece.W, dtype=torch.float64, device=device)
    if piece.b is not None:
        W0 = torch.cat([W0, torch.as_tensor(piece.b, dtype=torch.float64, device=device)[None]])
    weights = None
    if given is not None:
        mask = given.to(device)
    elif support == "l1":
        mask = l1_support(Hg, W0, target, pruned_rows=N, **l1_options)
    else:
        chosen = support(LayerData(name, Hg[:N, :N], W0[:N], rows, target))
        if isinstance(chosen, tuple) and len(chosen) == 2:
            mask, weights = (torch.as_tensor(part, device=device) for part in chosen)
            mask, weights = mask != 0, weights.to(torch.float64)
        else:
            chosen = torch.as_tensor(chosen, device=device)
            mask = chosen != 0 if chosen.dtype != torch.bool else chosen
            weights = chosen.to(torch.float64) if chosen.is_floating_point() else None
        for part in (mask, weights):
            if part is not None and tuple(part.shape) != (N, W0.shape[1]):
                raise InvalidInputError(f"support returned shape {tuple(part.shape)} for layer "
                                        f"{name!r}; expected {(N, W0.shape[1])} (W's orientation).")
        if target is not None and not satisfies(mask, target):
            raise InvalidInputError(f"support's mask for layer {name!r} does not meet the target "
                                    f"({target.describe()}).")
    full = torch.cat([mask, torch.ones((W0.shape[0] - N, W0.shape[1]), dtype=torch.bool,
                                       device=device)])
    absolute = damping * float(torch.diagonal(Hg).mean()) if damping else 0.0
    tic = time.perf_counter()
    if refit:
        W = masked_refit(Hg, W0, full, damping=absolute)
    else:
        W = torch.where(full, W0 if weights is None else torch.cat([weights, W0[N:]]),
                        torch.zeros_like(W0))
    result = certify(Hg, W0, W, full, samples=rows, damping=absolute,
                     solve_time=time.perf_counter() - tic)
    return W.cpu().numpy(), result
