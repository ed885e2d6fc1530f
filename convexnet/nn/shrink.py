r"""A pruned model rebuilt physically smaller: removed units taken out of every tensor.

:func:`shrink` finds the units of the model (:mod:`convexnet.nn.structure`), decides which are
removed, and cuts them out of a copy:

* a unit is **removed** when all its entries in every consumer are zero (its outgoing weights: the
  columns of the next ``Linear``, the input channel of the next convolution, a head's columns of the
  output projection), or when all its producer entries (weights and bias) are zero and nothing on
  the way maps 0 to something else (no ``BatchNorm`` shift);
* removing it takes its entries out of the producers, carriers (``BatchNorm``) and consumers; then
  the consumer's contribution of a removed unit was zero (its weights were), or the unit's output
  was zero: either way **the outputs are unchanged**, up to floating-point summation order;
* ``torch.nn.utils.prune`` masks are folded in first (``weight = weight_orig * weight_mask``), so
  the copy holds plain parameters; ``Linear``, convolutions, ``BatchNorm`` and ``transformers``'
  ``Conv1D`` keep their class (with their size attributes updated), GPT-2 attention its class (with
  ``num_heads`` and ``split_size`` updated), and an ``nn.MultiheadAttention`` with heads removed
  becomes a :class:`~convexnet.nn.pruned_attention.PrunedAttention`.

Units whose every use cannot be determined (a residual addition, a functional ``F.linear`` on a
module's weight, a model ``torch.fx`` cannot trace) are never removed; when such a unit *is* pruned
(all-zero producer rows, or zero columns in the consumers found), :func:`shrink` raises
:class:`~convexnet.errors.InvalidInputError` naming the module, before any copy is made.
"""

from __future__ import annotations

import torch

from ..errors import InvalidInputError
from . import capture, checks
from .io import make_permanent
from .layers import effective_tensor
from .pruned_attention import PrunedAttention
from .structure import OUTPUT_ONLY, UnitGroup, unit_groups, unit_indices

__all__ = ["shrink", "removed_units", "apply_removal"]

def _unit_nonzero(model, role, count: int) -> torch.Tensor:
    """Per unit, whether any of its entries in ``role``'s tensors is non-zero; bool ``(count,)``."""
    module = model.get_submodule(role.module)
    nonzero = torch.zeros(count, dtype=torch.bool)
    for key, axis in role.tensors:
        tensor = effective_tensor(module, key)
        if tensor is None:
            continue
        moved = tensor.detach().movedim(axis, 0).reshape(role.parts, count, role.width, -1)
        nonzero |= (moved != 0).any(3).any(2).any(0).cpu()
    return nonzero


def _zero_units(model, roles: list, count: int) -> torch.Tensor:
    nonzero = torch.zeros(count, dtype=torch.bool)
    for role in roles:
        nonzero |= _unit_nonzero(model, role, count)
    return ~nonzero


def removed_units(model: torch.nn.Module, groups: list | None = None) -> dict:
    """``{group name: [removed unit indices]}`` for the groups with removed units (module docstring).

    Raises
    ------
    InvalidInputError
        A group whose units cannot be removed (a blocker) has pruned units.
    """
    groups = unit_groups(model) if groups is None else groups
    removed = {}
    for group in groups:
        consumer_zero = _zero_units(model, group.consumers, group.count) if group.consumers \
            else torch.zeros(group.count, dtype=torch.bool)
        producer_zero = _zero_units(model, group.producers, group.count)
        if group.blockers:
            marked = consumer_zero | producer_zero
            serious = [why for why in group.blockers if why != OUTPUT_ONLY]
            if marked.any() and (serious or group.consumers):
                units = torch.nonzero(marked).flatten().tolist()
                why = "; ".join(group.blockers)
                raise InvalidInputError(
                    f"cannot shrink module {group.name!r}: its {group.kind} {units[:8]}"
                    f"{' ...' if len(units) > 8 else ''} are pruned (all-zero weights), but the "
                    f"consumers of its output cannot be determined: {why}. Only units whose every "
                    "use is a Linear or convolution layer (through activations, dropout, "
                    "BatchNorm, pooling or flatten) can be removed; cnn.trim(..., neurons=) "
                    "prunes only those. Undo the pruning of this module (or rewrite forward with "
                    "modules instead of functional calls) before shrinking.")
            continue
        gone = consumer_zero if group.consumers else torch.zeros(group.count, dtype=torch.bool)
        if group.zero_preserving:
            gone = gone | producer_zero
        if gone.any():
            removed[group.name] = torch.nonzero(gone).flatten().tolist()
    return removed


def _replace(module: torch.nn.Module, key: str, value: torch.Tensor) -> None:
    if key in module._parameters:
        requires_grad = module._parameters[key].requires_grad
        module._parameters[key] = torch.nn.Parameter(value.contiguous(), requires_grad=requires_grad)
    else:
        module._buffers[key] = value.contiguous()


def _fix_sizes(module) -> None:
    """Size attributes that a module reads in ``forward`` or ``repr`` after its tensors are cut."""
    weight = getattr(module, "weight", None)
    if isinstance(module, torch.nn.Linear):
        module.out_features, module.in_features = weight.shape
    elif isinstance(module, (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)):
        module.out_channels, module.in_channels = weight.shape[0], weight.shape[1] * module.groups
    elif isinstance(module, (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)):
        module.num_features = module.running_mean.shape[0] if module.running_mean is not None \
            else weight.shape[0]
    elif hasattr(module, "nf") and hasattr(module, "nx") and weight is not None:
        module.nx, module.nf = weight.shape


def _set_module(model: torch.nn.Module, name: str, new: torch.nn.Module) -> None:
    parent, _, child = name.rpartition(".")
    setattr(model.get_submodule(parent) if parent else model, child, new)


def apply_removal(model: torch.nn.Module, groups: list, removed: dict) -> torch.nn.Module:
    """Cut ``removed`` units out of ``model`` (a plain copy: no pruning hooks), in place.

    Parameters
    ----------
    model : torch.nn.Module
    groups : list of UnitGroup
        As :func:`~convexnet.nn.structure.unit_groups` found them on this architecture.
    removed : dict
        ``{group name: [unit indices]}`` (:func:`removed_units`).

    Returns
    -------
    torch.nn.Module
        ``model``, or the new root when the root itself was replaced (an attention module).
    """
    by_name = {group.name: group for group in groups}
    for name, units in removed.items():
        group: UnitGroup = by_name[name]
        kept = [unit for unit in range(group.count) if unit not in set(units)]
        for role in group.roles():
            module = model.get_submodule(role.module)
            for key, axis in role.tensors:
                tensor = getattr(module, key, None)
                if tensor is None:
                    continue
                index = unit_indices(role, group.count, kept).to(tensor.device)
                _replace(module, key, tensor.detach().index_select(axis, index))
            _fix_sizes(module)
        if group.owner is not None:
            model = _cut_heads(model, group, kept)
    return model


def _cut_heads(model, group: UnitGroup, kept: list) -> torch.nn.Module:
    owner = model.get_submodule(group.owner)
    if isinstance(owner, torch.nn.MultiheadAttention):
        new = PrunedAttention(owner.embed_dim, kept, group.count, owner.head_dim,
                              owner.in_proj_weight, owner.in_proj_bias, owner.out_proj,
                              owner.batch_first, owner.dropout)
        if not group.owner:
            return new
        _set_module(model, group.owner, new)
        _no_nested_fastpath(model)
        return model
    owner.num_heads = len(kept)
    owner.split_size = len(kept) * owner.head_dim
    return model


def _no_nested_fastpath(model) -> None:
    """``nn.TransformerEncoder``'s nested-tensor path reads ``in_proj_weight``: turn it off."""
    for module in model.modules():
        if isinstance(module, torch.nn.TransformerEncoder):
            module.use_nested_tensor = False


def shrink(model: torch.nn.Module) -> torch.nn.Module:
    """A new, physically smaller module computing what the pruned ``model`` computes.

    Units (output features, channels, attention heads) whose weights are pruned are cut out of
    their producers, of the ``BatchNorm`` layers on the way and of their consumers (module
    docstring); everything else is copied, ``torch.nn.utils.prune`` masks folded in.

    Parameters
    ----------
    model : torch.nn.Module
        A pruned model, e.g. after ``cnn.trim(model, calibration, neurons=0.3)``. Not changed.

    Returns
    -------
    torch.nn.Module
        A deep copy (same classes except :class:`~convexnet.nn.pruned_attention.PrunedAttention`
        for ``nn.MultiheadAttention`` with heads removed), in ``model``'s training mode, with
        plain parameters. ``small(x)`` equals ``model(x)`` up to floating-point rounding.

    Raises
    ------
    InvalidInputError
        When a pruned unit's consumers cannot be determined (module docstring), naming the module;
        raised before any copy is made.

    Examples
    --------
    >>> import torch, convexnet.nn as cnn
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> with torch.no_grad():
    ...     model[2].weight[:, :3] = 0            # inputs 0, 1, 2 of the last layer pruned
    >>> small = cnn.shrink(model)
    >>> small[0].out_features, small[2].in_features
    (5, 5)
    >>> x = torch.randn(3, 4)
    >>> torch.allclose(small(x), model(x), atol=1e-6)
    True
    """
    checks.check_model(model)
    groups = unit_groups(model)
    removed = removed_units(model, groups)
    training = model.training
    copy = capture.working_copy(model)
    make_permanent(copy)
    copy = apply_removal(copy, groups, removed)
    return copy.train(training)
