"""Write refit weights into torch modules: in place, zeros registered with ``torch.nn.utils.prune``.

The contract (also in :func:`convexnet.nn.trim`):

* the values are copied into the existing tensors under ``torch.no_grad()``, so every
  ``torch.nn.Parameter`` object survives: a module that was not pruned has its ``weight`` parameter
  re-registered by :func:`torch.nn.utils.prune.custom_from_mask` as ``weight_orig`` (the same object,
  now holding the refit weights) and gains the buffer ``weight_mask``; ``weight`` becomes the plain
  tensor ``weight_orig * weight_mask``, recomputed by the pruning hook before every forward call;
* a module that was already pruned keeps its hook: ``weight_orig`` and ``weight_mask`` are
  overwritten in place, the mask REPLACED by the support of the refit weights, since that is what
  makes the weights used equal Net-Trim's solution. Entries pruned before that Net-Trim uses again
  come back; their number is reported (``revived``);
* the bias is copied into its parameter (``bias_orig`` with the same rule if the bias was pruned);
* writing is all or nothing: every tensor is built before the first write, and if a write still
  fails, every module touched is restored (parameters, buffers, hooks and values) before the error
  propagates.

The tensors are built by the layer's adapter (:meth:`convexnet.nn.layers.LayerAdapter.update`),
which also names the tensors written (``weight_name``, ``bias_name``).
"""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torch.nn.utils import prune

from .layers import LayerUpdate, adapter_for

__all__ = ["LayerUpdate", "write_update", "write_all"]


def _write_tensor(module, name: str, value: torch.Tensor, mask: torch.Tensor | None) -> int:
    """Write ``value`` into ``module.<name>`` (module docstring); return the count of revived entries."""
    if hasattr(module, name + "_orig") and hasattr(module, name + "_mask"):
        original, old_mask = getattr(module, name + "_orig"), getattr(module, name + "_mask")
        mask = (value != 0).to(value.dtype) if mask is None else mask
        revived = int(((old_mask == 0) & (mask != 0)).sum())
        with torch.no_grad():
            original.copy_(value)
            old_mask.copy_(mask)
        # The hook refreshes this at the next forward; set it now so that reading the attribute
        # before any forward call sees the new weights (prune does the same, with autograd on).
        setattr(module, name, original * old_mask)
        return revived
    with torch.no_grad():
        getattr(module, name).copy_(value)
    if mask is not None:
        prune.custom_from_mask(module, name, mask)
    return 0


def write_update(module, update: LayerUpdate) -> int:
    """Write one layer (built by its adapter's ``update``); return the entries revived."""
    adapter = adapter_for(module)
    revived = _write_tensor(module, adapter.weight_name, update.weight, update.mask)
    if update.bias is not None:
        _write_tensor(module, adapter.bias_name, update.bias, None)
    return revived


def _written(module) -> tuple[str, str]:
    adapter = adapter_for(module)
    return adapter.weight_name, adapter.bias_name


@dataclass
class _ModuleState:
    """What a write can change in a module, to put it back."""

    module: torch.nn.Module
    parameters: dict
    buffers: dict
    pre_hooks: dict
    attributes: dict
    values: list

    @classmethod
    def of(cls, module) -> "_ModuleState":
        tensors = [t for t in (*module._parameters.values(), *module._buffers.values())
                   if t is not None]
        return cls(module, dict(module._parameters), dict(module._buffers),
                   dict(module._forward_pre_hooks),
                   {key: module.__dict__[key] for key in _written(module) if key in module.__dict__},
                   [(t, t.detach().clone()) for t in tensors])

    def restore(self) -> None:
        module = self.module
        for live, saved in ((module._parameters, self.parameters), (module._buffers, self.buffers),
                            (module._forward_pre_hooks, self.pre_hooks)):
            live.clear()
            live.update(saved)
        for key in _written(module):
            module.__dict__.pop(key, None)
            if key in self.attributes:
                module.__dict__[key] = self.attributes[key]
        with torch.no_grad():
            for tensor, saved in self.values:
                tensor.copy_(saved)


def write_all(modules: list, updates: list[LayerUpdate]) -> list[int]:
    """Write every layer, or none: on any exception every module is restored, then it propagates.

    Returns
    -------
    list of int
        Per layer, the entries pruned before that are non-zero again.
    """
    states = [_ModuleState.of(module) for module in modules]
    try:
        return [write_update(module, update) for module, update in zip(modules, updates)]
    except BaseException:
        for state in states:
            state.restore()
        raise
