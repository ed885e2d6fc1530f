"""What :mod:`convexnet.training` needs about layers: their ``[W; b]`` matrix and argument checks.

A layer (``Linear``, ``Conv1d/2d/3d``) is seen in the design's orientation: ``W = weight.reshape(M,
-1).T`` of shape ``(N, M)``, with the bias as a last row, ``[W; b]`` of shape ``(N + 1, M)``. The
checks raise :class:`~convexnet.errors.InvalidInputError` naming the argument, before any work.
"""

from __future__ import annotations

from dataclasses import dataclass

import torch

from .errors import InvalidInputError
from .penalties import Penalty
from .sets import ConstraintSet, NetTrimSet

__all__ = ["SUPPORTED", "Constraint", "layer_matrix", "write_matrix", "check_layer", "check_optimizer",
           "optimized", "check_unique", "check_constraints", "named_layers"]

# Layers whose weight is (outputs, inputs...) with every output a column of the design matrix.
SUPPORTED = (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)


# ---------------------------------------------------------------------------- layer matrices
def layer_matrix(weight: torch.Tensor, bias: torch.Tensor | None) -> torch.Tensor:
    """``[W; b]`` from the parameters; without a bias, a view of the weight (no copy)."""
    matrix = weight.detach().reshape(weight.shape[0], -1).T
    if bias is None:
        return matrix
    return torch.cat([matrix, bias.detach().reshape(1, -1)], dim=0)


def write_matrix(weight: torch.Tensor, bias: torch.Tensor | None, matrix: torch.Tensor) -> None:
    """Copy ``[W; b]`` back into the parameters, in place (call under ``torch.no_grad()``)."""
    rows = weight[0].numel()
    weight.copy_(matrix[:rows].T.reshape(weight.shape))
    if bias is not None:
        bias.copy_(matrix[rows])


# ------------------------------------------------------------------------------------ checks
def check_layer(label: str, module, *, allow_pruned: bool = False) -> None:
    """A floating-point Linear or convolution layer, plain unless ``allow_pruned``."""
    if not isinstance(module, torch.nn.Module):
        raise InvalidInputError(f"{label} must be a torch.nn.Module (a Linear or convolution layer); "
                                f"got {type(module).__name__}.")
    if not isinstance(module, SUPPORTED):
        has_weight = isinstance(getattr(module, "weight", None), torch.Tensor)
        raise InvalidInputError(
            f"{label} is a {type(module).__name__}{'' if has_weight else ', which has no weight'}; "
            "only torch.nn.Linear and Conv1d/Conv2d/Conv3d layers can be trained under a set or a "
            "penalty (list the layers themselves, not their container).")
    if torch.nn.utils.parametrize.is_parametrized(module) or not allow_pruned and (
            hasattr(module, "weight_orig") or hasattr(module, "bias_orig")):
        raise InvalidInputError(
            f"{label} is pruned or parametrized (its weight is computed, e.g. weight_orig * "
            "weight_mask); make it plain first with torch.nn.utils.prune.remove(module, 'weight').")
    if not module.weight.is_floating_point():
        raise InvalidInputError(f"{label} has a {module.weight.dtype} weight; it must be floating point.")


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
        for key in (id(module), id(module.weight)):
            if key in seen and seen[key] != index:
                raise InvalidInputError(
                    f"{label} lists the same layer (or two layers sharing one weight) twice, at "
                    f"positions {seen[key]} and {index}; list every layer once.")
            seen[key] = index


@dataclass(frozen=True)
class Constraint:
    """One constrained layer: its parameters and its set (``label`` names it in messages)."""

    label: str
    module: torch.nn.Module
    weight: torch.nn.Parameter
    bias: torch.nn.Parameter | None
    set: ConstraintSet


def _check_set(label: str, constraint_set, weight, bias) -> None:
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
    zeros = torch.zeros_like(layer_matrix(weight, bias))
    try:
        constraint_set.project(zeros)
    except (InvalidInputError, ValueError) as exc:
        raise InvalidInputError(
            f"{label} {constraint_set!r} cannot take the layer's matrix [W; b] of shape "
            f"{tuple(zeros.shape)} (bias row {'included' if bias is not None else 'absent'}): "
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
        if not optimized(optimizer, module.weight):
            raise InvalidInputError(
                f"{label}[0]: the layer's weight is not among the optimizer's parameters; build "
                "the optimizer over the model's parameters (model.parameters()).")
        _check_set(f"{label}[1]", constraint_set, module.weight, module.bias)
        checked.append(Constraint(label, module, module.weight, module.bias, constraint_set))
    check_unique("constraints", [c.module for c in checked])
    return checked


def named_layers(modules) -> list[tuple[str, torch.nn.Module]]:
    """``(name, layer)`` pairs from a model, a ``{name: layer}`` dict, or a list of layers/pairs."""
    if isinstance(modules, torch.nn.Module) and not isinstance(modules, SUPPORTED):
        pairs = [(name, m) for name, m in modules.named_modules() if isinstance(m, SUPPORTED)]
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


