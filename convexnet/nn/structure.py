r"""Units of a model and their producers and consumers: what structured pruning removes.

A **unit** is one output of a *producer* layer that later layers read as one input: an output
feature of a ``Linear`` (or of ``transformers``' ``Conv1D``), an output channel of a convolution,
an attention head. Removing unit ``u`` takes out its entries in every tensor that carries it:

* the producers' outputs (``Linear.weight`` rows and bias entries, a convolution's output channels;
  for a head, its rows of the query, key and value projections),
* the *carriers* on the way (``BatchNorm``: ``weight``, ``bias``, running statistics),
* the *consumers*' inputs (``Linear.weight`` columns, a convolution's input channels; after a
  ``flatten`` a block of ``S`` columns, ``S`` the positions per channel; a head's ``head_dim``
  columns of the output projection).

Each such tensor is described by a :class:`Role`: the module, its tensors and the axis, and how
unit ``u``'s entries lie on that axis: ``{p * count * width + u * width + j : p < parts, j < width}``
(``parts = 3`` for the packed query/key/value projections, ``width`` the block per unit).

Where the units are found:

* inside known blocks, by their structure: ``nn.TransformerEncoderLayer`` (the feed-forward units
  ``linear1 -> linear2``), ``nn.MultiheadAttention`` (heads: ``in_proj_weight`` -> ``out_proj``),
  a GPT-2 MLP (``c_fc -> c_proj``) and GPT-2 attention (heads: ``c_attn -> c_proj``);
* everywhere else, by tracing the model with ``torch.fx``: from a producer's call, through
  unit-wise operations (activations, dropout, ``BatchNorm``, pooling, ``flatten`` to a ``Linear``),
  to the layers that read it. Anything else on the way (a residual addition, a ``LayerNorm``, a
  functional ``F.linear``, a concatenation, the model's output) is a *blocker*: the units cannot be
  removed there, and :class:`UnitGroup.blockers` says why.

Examples
--------
>>> import torch
>>> from convexnet.nn.structure import unit_groups
>>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
>>> [(group.name, group.count, [role.module for role in group.consumers])
...  for group in unit_groups(model) if not group.blockers]
[('0', 8, ['2'])]
"""

from __future__ import annotations

from dataclasses import dataclass, field

import torch
import torch.nn.functional as F

from .layers import transformers_conv1d

__all__ = ["Role", "UnitGroup", "unit_groups", "unit_indices", "OUTPUT_ONLY"]

#: The blocker of a layer whose output is the model's: natural, not an obstacle to anything.
OUTPUT_ONLY = "its output reaches the model's output"

_CONV = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)
_NORMS = (torch.nn.BatchNorm1d, torch.nn.BatchNorm2d, torch.nn.BatchNorm3d)
# Modules and functions that act on each unit separately and map 0 to 0.
_ELEMENTWISE_MODULES = (torch.nn.ReLU, torch.nn.ReLU6, torch.nn.GELU, torch.nn.SiLU, torch.nn.Tanh,
                        torch.nn.LeakyReLU, torch.nn.ELU, torch.nn.Hardtanh, torch.nn.Mish,
                        torch.nn.Identity, torch.nn.Dropout, torch.nn.Dropout1d, torch.nn.Dropout2d,
                        torch.nn.Dropout3d)
_POOLS = (torch.nn.MaxPool1d, torch.nn.MaxPool2d, torch.nn.MaxPool3d, torch.nn.AvgPool1d,
          torch.nn.AvgPool2d, torch.nn.AvgPool3d, torch.nn.AdaptiveAvgPool1d,
          torch.nn.AdaptiveAvgPool2d, torch.nn.AdaptiveAvgPool3d, torch.nn.AdaptiveMaxPool1d,
          torch.nn.AdaptiveMaxPool2d, torch.nn.AdaptiveMaxPool3d)
_ELEMENTWISE_FUNCTIONS = {F.relu, torch.relu, F.gelu, F.silu, torch.tanh, F.tanh, F.leaky_relu,
                          F.elu, F.dropout, F.relu6, F.hardtanh, F.mish}
_POOL_FUNCTIONS = {F.max_pool1d, F.max_pool2d, F.max_pool3d, F.avg_pool1d, F.avg_pool2d,
                   F.avg_pool3d, F.adaptive_avg_pool1d, F.adaptive_avg_pool2d,
                   F.adaptive_avg_pool3d}
_ELEMENTWISE_METHODS = {"relu", "tanh", "contiguous"}


@dataclass(frozen=True)
class Role:
    """Where a unit's entries lie in one module's tensors (module docstring).

    Attributes
    ----------
    module : str
        The module's name in ``model.named_modules()``.
    tensors : tuple of (str, int)
        ``(tensor name, axis)`` pairs: ``("weight", 0)`` for a ``Linear`` producer's rows.
    parts : int
        Copies of the unit layout along the axis (3 for packed query, key, value).
    width : int
        Entries per unit and part along the axis.
    """

    module: str
    tensors: tuple
    parts: int = 1
    width: int = 1


@dataclass
class UnitGroup:
    """The units of one producer (or one attention module) and every tensor that carries them.

    Attributes
    ----------
    name : str
        The producer's name (the attention module's for heads).
    kind : {"units", "heads"}
    count : int
        Units (heads) in the group.
    producers, carriers, consumers : list of Role
    zero_preserving : bool
        Whether a unit whose producer entries are all zero outputs zero to its consumers (no
        ``BatchNorm`` shift on the way).
    owner : str or None
        For heads, the attention module (its head count changes with the cut).
    blockers : list of str
        Why the units cannot be removed (empty when they can).
    """

    name: str
    kind: str
    count: int
    producers: list
    carriers: list = field(default_factory=list)
    consumers: list = field(default_factory=list)
    zero_preserving: bool = True
    owner: str | None = None
    blockers: list = field(default_factory=list)

    def roles(self) -> list:
        return [*self.producers, *self.carriers, *self.consumers]


def unit_indices(role: Role, count: int, units) -> torch.Tensor:
    """The indices, along ``role``'s axis, of the entries of ``units`` (module docstring).

    Parameters
    ----------
    role : Role
    count : int
        Units in the group.
    units : sequence of int

    Returns
    -------
    LongTensor, shape (parts * len(units) * width,), ascending
    """
    units = torch.as_tensor(list(units), dtype=torch.long)
    offsets = torch.arange(role.width)
    parts = torch.arange(role.parts) * (count * role.width)
    index = parts[:, None, None] + units[None, :, None] * role.width + offsets[None, None, :]
    return index.reshape(-1).sort().values


# ----------------------------------------------------------------------------- producer roles
def _is_conv1d(module) -> bool:
    return bool(transformers_conv1d()) and isinstance(module, transformers_conv1d())


def _producer_role(name: str, module) -> Role | None:
    if isinstance(module, torch.nn.Linear) or (isinstance(module, _CONV) and module.groups == 1):
        return Role(name, (("weight", 0), ("bias", 0)) if module.bias is not None
                    else (("weight", 0),))
    if _is_conv1d(module):
        return Role(name, (("weight", 1), ("bias", 0)))
    return None


def _units_of(module) -> int:
    if isinstance(module, torch.nn.Linear):
        return module.out_features
    if isinstance(module, _CONV):
        return module.out_channels
    return module.nf


def _zero_to_zero(activation) -> bool:
    try:
        with torch.no_grad():
            return bool(activation(torch.zeros(1)).abs().max() == 0)
    except Exception:
        return False


# ------------------------------------------------------------------------------ known blocks
def _is_gpt2_mlp(module) -> bool:
    return all(_is_conv1d(getattr(module, key, None)) for key in ("c_fc", "c_proj")) \
        and callable(getattr(module, "act", None))


def _is_gpt2_attention(module) -> bool:
    return all(_is_conv1d(getattr(module, key, None)) for key in ("c_attn", "c_proj")) \
        and all(hasattr(module, key) for key in ("num_heads", "head_dim", "split_size"))


def _join(prefix: str, name: str) -> str:
    return f"{prefix}.{name}" if prefix else name


def _attention_group(name: str, module: torch.nn.MultiheadAttention) -> UnitGroup:
    heads, d = module.num_heads, module.head_dim
    group = UnitGroup(name, "heads", heads, [Role(name, (("in_proj_weight", 0), ("in_proj_bias", 0))
                                                  if module.in_proj_bias is not None
                                                  else (("in_proj_weight", 0),), 3, d)],
                      consumers=[Role(_join(name, "out_proj"), (("weight", 1),), 1, d)],
                      owner=name)
    if not module._qkv_same_embed_dim:
        group.blockers.append("separate q/k/v projections (kdim or vdim set)")
    if module.bias_k is not None or module.add_zero_attn:
        group.blockers.append("add_bias_kv or add_zero_attn")
    return group


def _known_groups(model: torch.nn.Module) -> tuple[list, set]:
    """Groups inside known blocks, and the names of the modules fx must not trace into."""
    groups, inside = [], set()
    for name, module in model.named_modules():
        if isinstance(module, torch.nn.TransformerEncoderLayer):
            activation = module.activation
            preserving = module.activation_relu_or_gelu in (1, 2) or _zero_to_zero(activation)
            groups.append(UnitGroup(_join(name, "linear1"), "units", module.linear1.out_features,
                                    [_producer_role(_join(name, "linear1"), module.linear1)],
                                    consumers=[Role(_join(name, "linear2"), (("weight", 1),))],
                                    zero_preserving=preserving,
                                    blockers=[] if preserving else ["an activation with f(0) != 0"]))
        elif isinstance(module, torch.nn.MultiheadAttention):
            groups.append(_attention_group(name, module))
        elif _is_gpt2_mlp(module):
            fc = _join(name, "c_fc")
            preserving = _zero_to_zero(module.act)
            groups.append(UnitGroup(fc, "units", module.c_fc.nf,
                                    [_producer_role(fc, module.c_fc)],
                                    consumers=[Role(_join(name, "c_proj"), (("weight", 0),))],
                                    zero_preserving=preserving,
                                    blockers=[] if preserving else ["an activation with f(0) != 0"]))
            inside.add(name)
        elif _is_gpt2_attention(module):
            heads, d = int(module.num_heads), int(module.head_dim)
            group = UnitGroup(name, "heads", heads,
                              [Role(_join(name, "c_attn"), (("weight", 1), ("bias", 0)), 3, d)],
                              consumers=[Role(_join(name, "c_proj"), (("weight", 0),), 1, d)],
                              owner=name)
            if getattr(module, "is_cross_attention", False) or module.c_attn.nf != 3 * heads * d:
                group.blockers.append("cross-attention (separate query projection)")
            groups.append(group)
            inside.add(name)
    return groups, inside


# ------------------------------------------------------------------------------------ tracing
class _Tracer(torch.fx.Tracer):
    """torch's tracer, with ``transformers`` modules and the known blocks kept whole."""

    def __init__(self, leaves: set):
        super().__init__()
        self.leaves = leaves

    def is_leaf_module(self, module, qualified_name: str) -> bool:
        return (qualified_name in self.leaves or type(module).__module__.startswith("transformers")
                or super().is_leaf_module(module, qualified_name))


def _describe(node) -> str:
    if node.op == "call_module":
        return f"module {node.target!r}"
    if node.op == "output":
        return "the model's output"
    target = getattr(node.target, "__name__", str(node.target))
    return f"{'a call of ' + target if node.op == 'call_function' else '.' + target + '()'} " \
           f"in forward ({node.name})"


def _first_argument(node):
    return node.args[0] if node.args else next(iter(node.kwargs.values()), None)


def _flatten_start(node, modules) -> int | None:
    """The start dimension of a flatten call, or None when ``node`` is not one."""
    if node.op == "call_module" and isinstance(modules[node.target], torch.nn.Flatten):
        flatten = modules[node.target]
        return flatten.start_dim if flatten.end_dim == -1 else None
    if (node.op == "call_function" and node.target is torch.flatten) or \
            (node.op == "call_method" and node.target == "flatten"):
        start = node.args[1] if len(node.args) > 1 else node.kwargs.get("start_dim", 0)
        end = node.args[2] if len(node.args) > 2 else node.kwargs.get("end_dim", -1)
        return start if end == -1 else None
    return None


def _unit_wise(node, modules, layout: str) -> str | None:
    """The layout after ``node`` when it acts on each unit separately, else None.

    ``"features"``: units on the last axis (a ``Linear``'s output); ``"channels"``: on axis 1 (a
    convolution's); ``"flat"``: channels flattened into blocks of the last axis.
    """
    if node.op == "call_module":
        module = modules[node.target]
        if isinstance(module, _ELEMENTWISE_MODULES):
            return layout
        if isinstance(module, _NORMS) and layout in ("features", "channels"):
            return layout
        if isinstance(module, _POOLS) and layout == "channels":
            return layout
    elif node.op == "call_function" and (node.target in _ELEMENTWISE_FUNCTIONS
                                         or (node.target in _POOL_FUNCTIONS
                                             and layout == "channels")):
        return layout
    elif node.op == "call_method" and node.target in _ELEMENTWISE_METHODS:
        return layout
    if layout == "channels" and _flatten_start(node, modules) == 1:
        return "flat"
    return None


def _traced_groups(model, leaves: set, skip: set) -> list:
    graph = _Tracer(leaves).trace(model)
    modules = dict(model.named_modules())
    calls: dict = {}
    for node in graph.nodes:
        if node.op == "call_module":
            calls[node.target] = calls.get(node.target, 0) + 1
    functional = {node.target.rpartition(".")[0] for node in graph.nodes if node.op == "get_attr"}
    groups = []
    for node in graph.nodes:
        if node.op != "call_module" or node.target in skip:
            continue
        role = _producer_role(node.target, modules[node.target])
        if role is None:
            continue
        module = modules[node.target]
        group = UnitGroup(node.target, "units", _units_of(module), [role])
        layout = "channels" if isinstance(module, _CONV) else "features"
        if calls[node.target] > 1:
            group.blockers.append(f"module {node.target!r} is called {calls[node.target]} times")
        if node.target in functional:
            group.blockers.append("its parameters are read directly in forward")
        _follow(node, layout, group, modules, calls, functional)
        groups.append(group)
    return groups


def _follow(node, layout: str, group: UnitGroup, modules: dict, calls: dict, functional: set):
    """Walk the users of ``node`` (module docstring), filling ``group``'s carriers and consumers."""
    for user in node.users:
        if _first_argument(user) is not node:
            group.blockers.append(f"its output reaches {_describe(user)}")
            continue
        after = _unit_wise(user, modules, layout)
        if after is not None:
            if user.op == "call_module" and isinstance(modules[user.target], _NORMS):
                norm = modules[user.target]
                group.zero_preserving = False
                if norm.num_features != group.count:
                    group.blockers.append(f"module {user.target!r} has {norm.num_features} features")
                group.carriers.append(Role(user.target, tuple(
                    (key, 0) for key in ("weight", "bias", "running_mean", "running_var")
                    if getattr(norm, key, None) is not None)))
            _follow(user, after, group, modules, calls, functional)
            continue
        consumer = _consumer_role(user, layout, group, modules, calls, functional)
        if consumer is None:
            group.blockers.append(f"its output reaches {_describe(user)}")
        else:
            group.consumers.append(consumer)


def _consumer_role(user, layout: str, group: UnitGroup, modules, calls, functional) -> Role | None:
    if user.op != "call_module" or calls[user.target] > 1 or user.target in functional:
        return None
    module = modules[user.target]
    if isinstance(module, _CONV) and module.groups == 1 and layout == "channels":
        return Role(user.target, (("weight", 1),)) if module.in_channels == group.count else None
    if isinstance(module, torch.nn.Linear) or _is_conv1d(module):
        inputs = module.in_features if isinstance(module, torch.nn.Linear) else module.nx
        axis = 1 if isinstance(module, torch.nn.Linear) else 0
        if layout == "features" and inputs == group.count:
            return Role(user.target, (("weight", axis),))
        if layout == "flat" and inputs % group.count == 0:
            return Role(user.target, (("weight", axis),), 1, inputs // group.count)
    return None


def unit_groups(model: torch.nn.Module) -> list:
    """Every group of units of ``model``: known blocks first, then the traced ones.

    Returns
    -------
    list of UnitGroup
        A group with ``blockers`` cannot have units removed. When ``torch.fx`` cannot trace the
        model, the layers outside known blocks form one group each, blocked with the reason.
    """
    known, leaves = _known_groups(model)
    inside = {role.module for group in known for role in group.roles()}
    try:
        traced = _traced_groups(model, leaves, inside)
    except Exception as exc:        # fx raises many kinds on code it cannot trace
        reason = str(exc).strip().splitlines()[0] if str(exc).strip() else type(exc).__name__
        traced = []
        for name, module in model.named_modules():
            role = _producer_role(name, module)
            if role is None or name in inside or any(name.startswith(block + ".")
                                                     for block in leaves):
                continue
            traced.append(UnitGroup(name, "units", _units_of(module), [role], blockers=[
                f"torch.fx cannot trace the model ({type(exc).__name__}: {reason[:120]})"]))
    groups = [*known, *traced]
    for group in groups:
        check_layout(group, model)
    return groups


def check_layout(group: UnitGroup, model: torch.nn.Module) -> None:
    """Add a blocker when a role's axis does not hold ``parts * count * width`` entries."""
    for role in group.roles():
        module = model.get_submodule(role.module)
        for key, axis in role.tensors:
            tensor = getattr(module, key + "_orig", None)
            tensor = getattr(module, key) if tensor is None else tensor
            if tensor is None or tensor.dim() <= axis:
                continue
            expected = role.parts * group.count * role.width
            if tensor.shape[axis] != expected:
                group.blockers.append(f"{role.module}.{key} has {tensor.shape[axis]} entries on "
                                      f"axis {axis}, not {expected}")

