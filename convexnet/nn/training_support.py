"""What :mod:`convexnet.training` needs besides the layer adapters: checks and all-or-nothing steps.

A layer is seen through its adapter (:mod:`convexnet.nn.layers`): its matrix ``[W; b]`` in the
design's orientation, shape ``(N + 1, M)`` with a bias. The checks raise
:class:`~convexnet.errors.InvalidInputError` naming the argument, before any work.

A wrapper's step is all or nothing: :class:`StepSnapshot` keeps the parameters and the optimizer's
state from before the step, gradients are checked before the optimizer reads them
(:func:`check_gradients`) and the stepped weights before they are committed (:func:`check_finite`);
on any failure the snapshot is put back before the error propagates.
"""

from __future__ import annotations

import copy
from dataclasses import dataclass

import torch

from ..errors import InvalidInputError, SolverFailedError
from ..penalties import Penalty
from ..sets import ConstraintSet, NetTrimSet
from .layers import LayerAdapter, adapter_for, describe_supported, supported

__all__ = ["Constraint", "check_layer", "check_optimizer", "optimized", "check_unique",
           "check_constraints", "named_layers", "compute_dtype", "StepSnapshot", "guarded_step",
           "check_gradients", "check_finite", "check_weights"]

# Half-precision tensors are projected in float32: some kernels (SVD) have no bfloat16/float16
# version on the CPU, and sorting-based projections lose their invariants in 8-bit mantissas.
_HALF = (torch.float16, torch.bfloat16)


def compute_dtype(tensor: torch.Tensor) -> torch.Tensor:
    """``tensor`` in float32 when it is float16 or bfloat16, else itself."""
    return tensor.float() if tensor.dtype in _HALF else tensor


# ------------------------------------------------------------------------------------ checks
def check_layer(label: str, module, *, allow_pruned: bool = False) -> None:
    """A floating-point Linear or convolution layer, plain unless ``allow_pruned``."""
    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(f"{label} must be a torch.nn.Module (a Linear or convolution layer); "
                                f"got {type(module).__name__}.")
    if not isinstance(module, supported()):
        has_weight = isinstance(getattr(module, "weight", None), torch.Tensor)
        raise InvalidInputError(
            f"{label} is a {type(module).__name__}{'' if has_weight else ', which has no weight'}; "
            f"only {describe_supported()} layers can be trained under a set or a penalty (list "
            "the layers themselves, not their container).")
    if torch.nn.utils.parametrize.is_parametrized(module) or not allow_pruned and (
            hasattr(module, "weight_orig") or hasattr(module, "bias_orig")):
        raise InvalidInputError(
            f"{label} is pruned or parametrized (its weight is computed, e.g. weight_orig * "
            "weight_mask); make it plain first with torch.nn.utils.prune.remove(module, 'weight').")
    weight = adapter_for(module).parameter(adapter_for(module).weight_name)
    if weight.is_meta:
        raise InvalidInputError(
            f"{label} is on the meta device and holds no values; materialize the model first, "
            "e.g. model.to_empty(device='cpu') followed by model.load_state_dict(weights).")
    if not weight.is_floating_point():
        raise InvalidInputError(f"{label} has a {weight.dtype} weight; it must be floating point.")


def tensors(module) -> tuple:
    """``(weight, bias)``: the parameters the layer's adapter reads and writes (bias may be None).

    ``in_proj_weight`` / ``in_proj_bias`` for a ``MultiheadAttention``, ``weight`` / ``bias``
    otherwise.
    """
    layer = adapter_for(module)
    return getattr(module, layer.weight_name), getattr(module, layer.bias_name)


def check_optimizer(optimizer) -> None:
    """A torch optimizer, not one of convexnet's wrappers."""
    if isinstance(getattr(optimizer, "optimizer", None), torch.optim.Optimizer):
        raise InvalidInputError(
            f"optimizer is a {type(optimizer).__name__}, a wrapper; wrap the torch optimizer itself "
            "(one convexnet wrapper per optimizer).")
    if not isinstance(optimizer, torch.optim.Optimizer):
        raise InvalidInputError(
            f"optimizer must be a torch.optim.Optimizer (e.g. torch.optim.SGD(model.parameters(), "
            f"lr=0.1)); got {type(optimizer).__name__}.")


def optimized(optimizer, tensor: torch.Tensor) -> bool:
    """Whether ``tensor`` (by identity) is among ``optimizer``'s parameters."""
    return any(p is tensor for group in optimizer.param_groups for p in group["params"])


def check_unique(label: str, modules: list) -> None:
    """No module, and no weight tensor (tied layers), may appear twice."""
    seen: dict[int, int] = {}
    for index, module in enumerate(modules):
        for key in (id(module), id(tensors(module)[0])):
            if key in seen and seen[key] != index:
                raise InvalidInputError(
                    f"{label} lists the same layer (or two layers sharing one weight) twice, at "
                    f"positions {seen[key]} and {index}; list every layer once.")
            seen[key] = index


@dataclass(frozen=True)
class Constraint:
    """One constrained layer: its adapter, parameters and set (``label`` names it in messages)."""

    label: str
    layer: LayerAdapter
    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
    set: ConstraintSet

    @property
    def module(self) -> torch.nn.Module:
        """The layer's module."""
        return self.layer.module


def _check_set(label: str, constraint_set, layer: LayerAdapter) -> None:
    if isinstance(constraint_set, type):
        raise InvalidInputError(f"{label} is the class {constraint_set.__name__}; pass an instance, "
                                f"e.g. {constraint_set.__name__}(radius).")
    if isinstance(constraint_set, Penalty):
        raise InvalidInputError(
            f"{label} is the penalty {constraint_set!r}; ProjectedOptimizer takes constraint sets "
            "(convexnet.sets). For a penalty use convexnet.training.RVSM.")
    if isinstance(constraint_set, NetTrimSet):
        raise InvalidInputError(
            f"{label} is a NetTrimSet, which has no projection kernel; prune a trained model with "
            "convexnet.nn.trim instead.")
    if not isinstance(constraint_set, ConstraintSet):
        raise InvalidInputError(
            f"{label} must be a convexnet.sets set (L1Ball, L1InfBall, SumOfMaxBall, NuclearBall, "
            f"Sparse, LowRank, Subspace, ConvolutionSubspace); got {type(constraint_set).__name__}.")
    # A trial projection of zeros finds shape and axis mismatches now, not at the first step.
    zeros = torch.zeros_like(compute_dtype(layer.matrix()))
    has_bias = layer.parameter(layer.bias_name) is not None
    try:
        constraint_set.project(zeros)
    except (InvalidInputError, ValueError) as exc:
        raise InvalidInputError(
            f"{label} {constraint_set!r} cannot take the layer's matrix [W; b] of shape "
            f"{tuple(zeros.shape)} (bias row {'included' if has_bias else 'absent'}): "
            f"{exc}") from None


def check_constraints(optimizer, constraints) -> list[Constraint]:
    """``ProjectedOptimizer``'s ``(module, set)`` pairs, checked, as :class:`Constraint` records."""
    if isinstance(constraints, (str, bytes, dict)) or not hasattr(constraints, "__iter__"):
        raise InvalidInputError(
            "constraints must be a list of (module, set) pairs, e.g. [(model[0], sets.L1Ball(5.0))]; "
            f"got {type(constraints).__name__}.")
    pairs = list(constraints)
    if not pairs:
        raise InvalidInputError("constraints is empty; list at least one (module, set) pair.")
    checked = []
    for index, pair in enumerate(pairs):
        label = f"constraints[{index}]"
        if not isinstance(pair, (tuple, list)) or len(pair) != 2:
            raise InvalidInputError(f"{label} must be a (module, set) pair; got {pair!r}.")
        module, constraint_set = pair
        check_layer(f"{label}[0]", module)
        if not optimized(optimizer, tensors(module)[0]):
            raise InvalidInputError(
                f"{label}[0]: the layer's weight is not among the optimizer's parameters; build "
                "the optimizer over the model's parameters (model.parameters()).")
        layer = adapter_for(module)
        _check_set(f"{label}[1]", constraint_set, layer)
        checked.append(Constraint(label, layer, *tensors(module), constraint_set))
    check_unique("constraints", [c.module for c in checked])
    return checked


def named_layers(modules) -> list[tuple[str, torch.nn.Module]]:
    """``(name, layer)`` pairs from a model, a ``{name: layer}`` dict, or a list of layers/pairs."""
    if isinstance(modules, torch.nn.Module) and not isinstance(modules, supported()):
        pairs = [(name, m) for name, m in modules.named_modules() if isinstance(m, supported())]
        if not pairs:
            raise InvalidInputError(f"modules ({type(modules).__name__}) holds no Linear or "
                                    "convolution layer to sparsify.")
        return pairs
    if isinstance(modules, torch.nn.Module):
        return [("", modules)]
    if isinstance(modules, dict):
        pairs = list(modules.items())
    elif isinstance(modules, (str, bytes)) or not hasattr(modules, "__iter__"):
        raise InvalidInputError("modules must be a model, a {name: layer} dict or a list of layers; "
                                f"got {type(modules).__name__}.")
    else:
        pairs = [item if isinstance(item, tuple) and len(item) == 2 and isinstance(item[0], str)
                 else (str(index), item) for index, item in enumerate(modules)]
    if not pairs:
        raise InvalidInputError("modules is empty; list at least one layer.")
    for name, _ in pairs:
        if not isinstance(name, str):
            raise InvalidInputError(f"modules: layer names must be str; got {name!r}.")
    return pairs




# -------------------------------------------------------------------------------- step undo
def parameter_names(optimizer, known: dict[int, str]) -> dict[int, str]:
    """A name for every parameter of ``optimizer`` (by ``id``): ``known`` ones, else by position."""
    names = {}
    for group_index, group in enumerate(optimizer.param_groups):
        for index, parameter in enumerate(group["params"]):
            names[id(parameter)] = known.get(
                id(parameter), f"param_groups[{group_index}]['params'][{index}] "
                               f"(shape {tuple(parameter.shape)})")
    return names


def _all_finite(tensors: list[torch.Tensor]) -> list[bool]:
    """Per tensor, whether every entry is finite, with one device synchronization per device."""
    flags: list = [None] * len(tensors)
    by_device: dict = {}
    for index, tensor in enumerate(tensors):
        by_device.setdefault(tensor.device, []).append(index)
    for indices in by_device.values():
        verdicts = torch.stack([torch.isfinite(tensors[i]).all() for i in indices]).tolist()
        for i, verdict in zip(indices, verdicts):
            flags[i] = verdict
    return flags


def check_gradients(optimizer, names: dict[int, str]) -> None:
    """Raise :class:`InvalidInputError` naming the parameters whose gradients are not finite."""
    pairs = [(p, p.grad) for group in optimizer.param_groups for p in group["params"]
             if p.grad is not None and not p.grad.is_sparse]
    flags = _all_finite([grad for _, grad in pairs])
    bad = [names[id(p)] for (p, _), ok in zip(pairs, flags) if not ok]
    if bad:
        raise InvalidInputError(
            f"the gradient of {', '.join(bad)} has NaN or infinite entries; the step was not taken "
            "(parameters and optimizer state are unchanged). Check the loss for NaN, lower the "
            "learning rate or clip the gradients (torch.nn.utils.clip_grad_norm_), then "
            "zero_grad() and step again.")


def check_weights(matrices: list[tuple[str, torch.Tensor]]) -> None:
    """Raise :class:`InvalidInputError` naming the layers whose current ``[W; b]`` is not finite."""
    flags = _all_finite([matrix for _, matrix in matrices])
    bad = [label for (label, _), ok in zip(matrices, flags) if not ok]
    if bad:
        raise InvalidInputError(f"the weights of {', '.join(bad)} have NaN or infinite entries; "
                                "nothing was projected. Re-initialize or reload those layers.")


def check_finite(what: str, tensors: list[tuple[str, torch.Tensor]]) -> None:
    """Raise :class:`SolverFailedError` (status ``"non_finite"``) naming the non-finite tensors."""
    flags = _all_finite([tensor for _, tensor in tensors])
    bad = [name for (name, _), ok in zip(tensors, flags) if not ok]
    if bad:
        raise SolverFailedError(
            f"{what} of {', '.join(bad)} has NaN or infinite entries (overflow); the step was undone "
            "(parameters and optimizer state are as before it). Lower the learning rate or clip "
            "the gradients.", status="non_finite")


class StepSnapshot:
    """The values of ``optimizer``'s parameters and its state, to undo a failed step.

    The state is restored into the optimizer's own tensors where they still fit, so an optimizer
    that holds references to them (fused or capturable implementations) sees the old values;
    entries the failed step created are removed. Costs one copy of the parameters and the state.
    """

    def __init__(self, optimizer):
        self.optimizer = optimizer
        with torch.no_grad():
            self.values = [(p, p.detach().clone()) for group in optimizer.param_groups
                           for p in group["params"]]
            self.state = {p: {key: value.detach().clone() if isinstance(value, torch.Tensor)
                              else copy.deepcopy(value) for key, value in entries.items()}
                          for p, entries in optimizer.state.items()}

    def restore(self) -> None:
        """Put the parameters' values and the optimizer's state back as they were."""
        with torch.no_grad():
            for parameter, saved in self.values:
                parameter.copy_(saved)
            live = self.optimizer.state
            for parameter in [p for p in live if p not in self.state]:
                del live[parameter]
            for parameter, saved in self.state.items():
                entries = live[parameter]
                for key in [k for k in entries if k not in saved]:
                    del entries[key]
                for key, value in saved.items():
                    current = entries.get(key)
                    if (isinstance(current, torch.Tensor) and isinstance(value, torch.Tensor)
                            and current.shape == value.shape and current.dtype == value.dtype):
                        current.copy_(value)
                    else:
                        entries[key] = value


def guarded_step(optimizer, known: dict[int, str], closure, commit):
    """``optimizer.step(closure)``, then ``commit()``, all or nothing; returns the step's loss.

    The gradients are checked: without a closure before anything is copied or changed, with one
    each time the optimizer calls it (before the optimizer reads what it computed). After the step
    every parameter is checked finite, then ``commit`` runs (it writes projections or thresholds and
    may raise). If anything raises, the parameters and the optimizer's state are restored first.
    ``known`` names parameters (by ``id``) in the messages.
    """
    names = parameter_names(optimizer, known)
    if closure is None:
        check_gradients(optimizer, names)
    snapshot = StepSnapshot(optimizer)
    try:
        if closure is None:
            loss = optimizer.step()
        else:
            def checked_closure():
                value = closure()
                check_gradients(optimizer, names)
                return value
            loss = optimizer.step(checked_closure)
        check_finite("the optimizer's step", [(names[id(p)], p) for group in optimizer.param_groups
                                              for p in group["params"]])
        commit()
    except BaseException:
        snapshot.restore()
        raise
    return loss
