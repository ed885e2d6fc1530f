"""Structured pruning: whole units (features, channels, attention heads) removed, consumers refit.

:func:`prune_units` is what :func:`convexnet.nn.trim` runs for ``neurons=``. The units are those of
:mod:`convexnet.nn.structure` whose every use is one consumer layer (``Linear``, a convolution
with ``groups=1``, ``transformers``' ``Conv1D``, an attention output projection). On a working copy
of the model, group after group in the order the forward pass calls their consumers (block by block
for a model of repeated blocks), as in :mod:`convexnet.nn.pruning`:

1. stream the Gram matrices of the consumer's input rows: ``H = Xp^T Xp`` in the working copy
   (the groups before it pruned) and ``C = Xp^T Xo`` against its input ``Xo`` in the original model;
2. choose the units kept: the group-l1 path of :func:`convexnet.nn.group_lasso.unit_support` on
   the consumer's rows grouped by unit (or a callable: magnitude, activations, anything);
3. refit the consumer on the kept units exactly to the original model's output,
   ``min ||Xp W - Xo W0||^2`` with the removed units' rows zero (as Net-Trim's cascade targets
   the original outputs: the refit corrects the error of the groups pruned before), and certify it
   (:mod:`convexnet.nn.least_squares`). Since ``||Xp W - Xo W0||^2 = ||Xp (W - W0')||^2 + const``
   with ``W0' = H^+ C W0``, this is the certified refit program with target weights ``W0'``.
   Block by block (a model of repeated blocks), ``Xo`` is not at hand: ``W0' = W0``;
4. zero the removed units in the producers too (their rows and bias entries, a head's query, key
   and value rows), so that :func:`convexnet.nn.shrink` can cut them out of every tensor.

Every pruned tensor is written under the ``torch.nn.utils.prune`` contract of :func:`trim`, all or
nothing, once every group is done.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError
from ..programs.cascade import Block
from . import capture, checks
from .blocks import BlockStream, ModelStream, block_of, find_blocks, layer_order
from .group_lasso import unit_support
from .layers import LayerUpdate, adapter_for, effective_tensor, model_adapters
from .least_squares import certify, masked_refit
from .pruning import check_token_batches
from .report import LayerReport, TrimReport
from .structure import OUTPUT_ONLY, UnitGroup, unit_groups, unit_indices
from .write import write_all, write_update

__all__ = ["UnitData", "prune_units", "check_neurons", "prunable_groups"]


@dataclass(frozen=True)
class UnitData:
    """What a unit-selection callable sees of one group.

    Attributes
    ----------
    name : str
        The group (its producer, or the attention module for heads).
    kind : {"units", "heads"}
    consumer : str
    H : Tensor, shape (n, n), float64
        Gram matrix of the consumer's input rows (bias column last when it has a bias), in the model
        pruned so far.
    W : Tensor, shape (n, M), float64
        The consumer's ``[W; b]``.
    unit_of_row : LongTensor, shape (n,)
        The unit each row of ``W`` reads (-1: the bias row).
    producer : Tensor, shape (count, k)
        Each unit's producer weights (its rows, with its bias entry), flattened.
    count, remove : int
        Units in the group, units to remove.
    """

    name: str
    kind: str
    consumer: str
    H: torch.Tensor
    W: torch.Tensor
    unit_of_row: torch.Tensor
    producer: torch.Tensor
    count: int
    remove: int


def check_neurons(neurons) -> float:
    """``neurons`` as a fraction in [0, 1)."""
    if isinstance(neurons, (bool, np.bool_)) or not isinstance(neurons, (int, float, np.number)) \
            or not math.isfinite(float(neurons)) or not 0.0 <= float(neurons) < 1.0:
        raise InvalidInputError(f"neurons is the fraction of units removed and must lie in "
                                f"[0, 1); got {neurons!r} (0.3 removes 30% of each layer's units).")
    return float(neurons)


def prunable_groups(model: torch.nn.Module, layers=None) -> tuple[list, dict]:
    """The groups :func:`prune_units` prunes, and ``{group: why}`` for those it skips.

    ``layers``: producer (or attention module) names to prune; None: every group that can be.
    """
    groups = unit_groups(model)
    adapters = model_adapters(model)
    chosen, skipped = [], {}
    for group in groups:
        if layers is not None and group.name not in layers:
            continue
        if group.blockers == [OUTPUT_ONLY] and layers is None:
            continue                # the model's outputs: not units of any layer
        if group.blockers:
            skipped[group.name] = "; ".join(group.blockers)
        elif len(group.consumers) != 1 or group.consumers[0].module not in adapters:
            skipped[group.name] = f"{len(group.consumers)} consumers"
        elif adapters[group.consumers[0].module].groups != 1:
            skipped[group.name] = "a grouped convolution consumes it"
        else:
            chosen.append(group)
    if layers is not None:
        names = {group.name for group in groups}
        unknown = [name for name in layers if name not in names]
        if unknown:
            raise InvalidInputError(
                f"layers names {unknown}, which produce no units; with neurons= name the "
                f"producers (or attention modules): {sorted(names)[:8]}.")
        if skipped:
            name, why = next(iter(skipped.items()))
            raise InvalidInputError(f"layers names {name!r}, whose units cannot be removed ({why}).")
    if not chosen:
        raise InvalidInputError(
            "the model has no units that can be removed (each needs one Linear or convolution "
            f"layer reading it through activations, BatchNorm, pooling or flatten); {skipped}.")
    return chosen, skipped


def _unit_of_row(adapter, role, count: int, rows: int) -> torch.Tensor:
    """The unit of each row of the consumer's ``[W; b]`` (-1 for the bias row)."""
    shape = adapter.weight_shape
    ids = torch.full(shape, -1, dtype=torch.long)
    key, axis = role.tensors[0]
    for unit in range(count):
        index = unit_indices(role, count, [unit])
        ids.index_fill_(axis, index, unit)
    design = adapter.design(ids)[:, 0]
    return torch.cat([design, torch.full((rows - design.shape[0],), -1, dtype=torch.long)])


def _producer_rows(working, group: UnitGroup) -> torch.Tensor:
    """Each unit's producer entries, flattened: ``(count, k)``."""
    pieces = []
    for role in group.producers:
        module = working.get_submodule(role.module)
        for key, axis in role.tensors:
            tensor = effective_tensor(module, key)
            if tensor is None:
                continue
            moved = tensor.detach().movedim(axis, 0).reshape(role.parts, group.count, role.width, -1)
            pieces.append(moved.transpose(0, 1).reshape(group.count, -1).to("cpu", torch.float64))
    return torch.cat(pieces, 1)


def _zero_producers(working, group: UnitGroup, removed: list) -> None:
    """Zero the removed units' producer entries in the working copy, masks registered."""
    for role in group.producers:
        module = working.get_submodule(role.module)
        adapter = adapter_for(module)
        tensors = {}
        for key, axis in role.tensors:
            tensor = effective_tensor(module, key)
            index = unit_indices(role, group.count, removed).to(tensor.device)
            tensors[key] = tensor.detach().clone().index_fill_(axis, index, 0)
        weight = tensors[adapter.weight_name]
        old = getattr(module, adapter.weight_name + "_mask", None)
        mask = torch.ones_like(weight) if old is None else old.detach().clone()
        key, axis = next(item for item in role.tensors if item[0] == adapter.weight_name)
        mask.index_fill_(axis, unit_indices(role, group.count, removed).to(mask.device), 0)
        write_update(module, LayerUpdate(weight, mask, tensors.get(adapter.bias_name)))


def _grams(working, original, name: str, batches: list, bias: bool):
    """``(H, C, rows)``: ``H = Xp^T Xp`` and ``C = Xp^T Xo`` of the consumer's input rows in the
    working copy (``Xp``) and in the original model (``Xo``), batch by batch (bias column last)."""
    adapters = (capture.layer_adapters(working, [name])[name],
                capture.layer_adapters(original, [name])[name])
    totals: dict = {"H": 0.0, "C": 0.0, "rows": 0}
    for batch in batches:
        queue = []

        def grab(module, args, kwargs, output):
            queue.append(_rows(adapters[1].call_inputs(args, kwargs), bias))

        def accumulate(module, args, kwargs, output):
            X = _rows(adapters[0].call_inputs(args, kwargs), bias)
            totals["H"] = totals["H"] + X.T @ X
            totals["C"] = totals["C"] + X.T @ queue.pop(0)
            totals["rows"] += X.shape[0]
        capture.run_model(original, [batch], [(adapters[1].hooked, grab)])
        capture.run_model(working, [batch], [(adapters[0].hooked, accumulate)])
    return totals["H"], totals["C"], totals["rows"]


def _rows(X: torch.Tensor, bias: bool) -> torch.Tensor:
    X = X.to(torch.float64)
    return torch.cat([X, torch.ones((X.shape[0], 1), dtype=X.dtype, device=X.device)], 1) \
        if bias else X


def _target_weights(H: torch.Tensor, T: torch.Tensor) -> torch.Tensor:
    """``W0' = H^+ T``: ``Xp W0'`` is the projection of the original output ``Xo W0`` onto the
    span of ``Xp``, so ``||Xp W - Xo W0||^2 = ||Xp (W - W0')||^2 + const`` for every ``W``."""
    values, vectors = torch.linalg.eigh(H)
    cutoff = 1e-12 * float(values.abs().max()) if values.numel() else 0.0
    inverse = torch.where(values > cutoff, 1.0 / values.clamp(min=1e-300), torch.zeros_like(values))
    return vectors @ (inverse[:, None] * (vectors.T @ T))


def _state(module) -> LayerUpdate:
    """A module's current weights, mask and bias, as fresh tensors."""
    adapter = adapter_for(module)
    weight = effective_tensor(module, adapter.weight_name).detach().clone()
    mask = getattr(module, adapter.weight_name + "_mask", None)
    bias = effective_tensor(module, adapter.bias_name)
    return LayerUpdate(weight, torch.ones_like(weight) if mask is None else mask.detach().clone(),
                       None if bias is None else bias.detach().clone())


def prune_units(model: torch.nn.Module, calibration, *, neurons, layers=None, select="l1",
                refit: bool = True, blockwise=None, batch_size=None, progress=None,
                path_options: dict | None = None) -> TrimReport:
    """Remove ``round(neurons * count)`` units of every prunable group (module docstring).

    Parameters
    ----------
    model, calibration, layers, blockwise, batch_size, progress
        As in :func:`convexnet.nn.trim`; ``layers`` names producers (or attention modules).
    neurons : float in [0, 1)
    select : "l1" or callable
        ``select(UnitData) -> bool tensor (count,)``, True for the kept units (exactly
        ``count - remove`` of them).
    refit : bool, default True
        Refit the consumer on the kept units; False keeps its weights (certified all the same).
    path_options : dict, optional
        Passed to :func:`~convexnet.nn.group_lasso.unit_support`.

    Returns
    -------
    TrimReport
        One row per consumer (its certified refit); ``info["units"]`` holds, per group, the
        consumer, the unit count and the removed units.
    """
    start = time.perf_counter()
    checks.check_model(model)
    fraction = check_neurons(neurons)
    if not (select == "l1" or callable(select)):
        raise InvalidInputError(f"select must be 'l1' or a callable select(units) -> kept mask; "
                                f"got {select!r}.")
    if layers is not None and (isinstance(layers, str) or not capture.is_iterable(layers)):
        raise InvalidInputError(f"layers must be None or a list of module names; got {layers!r}.")
    groups, skipped = prunable_groups(model, None if layers is None else list(layers))
    reference = checks.reference_tensor(model)
    batches = checks.calibration_batches(calibration, batch_size, reference)
    check_token_batches(model, batches)

    working = capture.working_copy(model)
    original = capture.working_copy(model)
    consumers = [group.consumers[0].module for group in groups]
    found = find_blocks(working, consumers) if blockwise in (None, True) else None
    blocks = found[1] if found and all(block_of(name, found[1]) is not None
                                       for name in consumers) else None
    if blockwise is True and blocks is None:
        raise InvalidInputError("blockwise=True, but the units' consumers are not all inside "
                                "repeated blocks; pass blockwise=None.")
    stream = BlockStream(working, batches, blocks) if blocks else ModelStream(working, batches)
    adapters = capture.layer_adapters(working, consumers)

    def run(hooks):
        capture.run_model(working, batches[:1], hooks)
    order = layer_order(working, consumers, run)
    by_consumer = {group.consumers[0].module: group for group in groups}
    reports, units, touched = [], {}, []
    for index, name in enumerate(order):
        group = by_consumer[name]
        block = stream.reach(name)
        tic = time.perf_counter()
        adapter = adapters[name]
        has_bias = adapter.blocks()[0].b is not None
        piece = adapter.blocks()[0]
        if blocks:
            H, rows = stream.gram(name, adapter, has_bias)
            cross = None
        else:
            H, cross, rows = _grams(working, original, name, batches, has_bias)
        W0 = torch.as_tensor(piece.W, dtype=torch.float64, device=H.device)
        if has_bias:
            W0 = torch.cat([W0, torch.as_tensor(piece.b, dtype=torch.float64,
                                                device=H.device)[None]])
        target = W0 if cross is None else _target_weights(H, cross @ W0)
        unit_of_row = _unit_of_row(adapter, group.consumers[0], group.count, W0.shape[0]) \
            .to(H.device)
        remove = int(math.floor(fraction * group.count + 0.5))
        kept = _select(select, group, name, H, W0, target, unit_of_row, working, remove,
                       path_options)
        support = (unit_of_row < 0) | kept.to(H.device)[unit_of_row.clamp(min=0)]
        support = support[:, None].expand_as(W0)
        solve = time.perf_counter()
        W = masked_refit(H, target, support) if refit else torch.where(support, W0, 0.0)
        result = certify(H, target, W, support, samples=rows,
                         solve_time=time.perf_counter() - solve)
        N = piece.W.shape[0]
        W = W.cpu().numpy()
        update = adapter.update([Block(slice(None), slice(None), W[:N], W[N] if has_bias else None)])
        write_update(adapter.module, update)
        removed = torch.nonzero(~kept).flatten().tolist()
        if removed:
            _zero_producers(working, group, removed)
        touched += [name] + [role.module for role in group.producers]
        units[group.name] = {"kind": group.kind, "consumer": name, "count": group.count,
                             "removed": removed}
        reports.append(LayerReport(
            name, adapter.kind, adapter.weight_shape, False, rows, [result], float("nan"),
            int(update.mask.count_nonzero()), update.mask.numel(), time.perf_counter() - tic,
            discrepancy=float(np.sqrt(max(result.objective, 0.0))), block=block))
        if progress is not None:
            progress(index, len(order), reports[-1])
    names = list(dict.fromkeys(touched))
    write_all([model.get_submodule(name) for name in names],
              [_state(working.get_submodule(name)) for name in names])
    return TrimReport(reports, "blockwise" if blocks else "cascade", time.perf_counter() - start,
                      info={"target": f"neurons {fraction:g}", "units": units, "refit": refit,
                            "select": select if isinstance(select, str) else
                            getattr(select, "__name__", "callable"),
                            "skipped": skipped, "blocks": blocks or []})


def _select(select, group, consumer, H, W0, target, unit_of_row, working, remove, path_options):
    if select == "l1":
        return unit_support(H, target, unit_of_row, group.count, remove=remove,
                            **(path_options or {})).cpu()
    kept = select(UnitData(group.name, group.kind, consumer, H, W0, unit_of_row,
                           _producer_rows(working, group), group.count, remove))
    kept = torch.as_tensor(kept).to("cpu")
    if kept.dtype != torch.bool or tuple(kept.shape) != (group.count,) \
            or int(kept.sum()) != group.count - remove:
        raise InvalidInputError(
            f"select returned {tuple(kept.shape)} {kept.dtype} for {group.name!r}; it must return "
            f"a bool tensor ({group.count},) with {group.count - remove} True (the units kept).")
    return kept
