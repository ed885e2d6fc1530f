"""Torch layers seen as Net-Trim matrices: one adapter per supported module kind.

A layer with ``M`` outputs is, in the design's orientation (batch first), the matrix ``[W; b]`` of
shape ``(N + 1, M)`` (``(N, M)`` without a bias): column ``m`` holds the incoming weights of output
``m`` and its bias, and the layer maps input rows ``X`` of ``N`` entries to ``Y = X @ W + b``.

* ``Linear``, weight ``(M, N)``: ``W = weight.T``; every row of the input (all leading dimensions
  flattened) is a sample.
* ``Conv1d``, ``Conv2d``, ``Conv3d``, weight ``(C_out, C_in / groups, *kernel)``:
  ``W = weight.reshape(C_out, -1).T``, shape ``(C_in / groups * prod(kernel), C_out)``; the input
  is unfolded, each patch position of each input a sample (a row of ``C_in * prod(kernel)``
  entries, all groups side by side), each output channel a column. With ``groups > 1`` the layer
  is one block per group: the group's columns of the unfolded input against the group's columns
  of ``W``.

An adapter (:class:`LayerAdapter`) reads ``[W; b]`` from the tensors the module computes with
(``weight_orig * weight_mask`` when it is pruned) and writes it back, splits it into blocks, builds
the module's tensors from refit blocks (:class:`LayerUpdate`), and turns captured activations into
sample rows. :func:`adapter_for` finds a module's adapter; a new module kind is one subclass passed
to :func:`register`. :mod:`convexnet.nn.trimming`, :mod:`convexnet.nn.write` and
:mod:`convexnet.training` see layers only through adapters.

Examples
--------
>>> import torch
>>> from convexnet.nn.layers import adapter_for
>>> conv = torch.nn.Conv1d(4, 6, 3, groups=2)
>>> layer = adapter_for(conv)
>>> tuple(layer.matrix().shape), len(layer.blocks())
((7, 6), 2)
>>> layer.input_rows(torch.randn(5, 4, 10)).shape    # 5 inputs x 8 positions, 4 channels x 3 taps
torch.Size([40, 12])
"""

from __future__ import annotations

import math
import sys
from dataclasses import dataclass

import numpy as np
import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from ..programs.cascade import Block

__all__ = ["LayerAdapter", "LinearAdapter", "ConvAdapter", "TransformersConv1DAdapter",
           "LayerUpdate", "Block", "register", "adapter_for", "model_adapters", "supported",
           "describe_supported", "effective_tensor", "as_numpy", "transformers_conv1d"]


@dataclass
class LayerUpdate:
    """Tensors ready to write into one module, in its dtype, on its device.

    Attributes
    ----------
    weight : Tensor
        The refit weights in the module's layout (``(M, N)``, ``(C_out, C_in / groups, *kernel)``).
    mask : Tensor
        Same shape and dtype: 1 where ``weight != 0``, 0 where pruned.
    bias : Tensor or None
        The refit bias, ``(M,)``.
    """

    weight: torch.Tensor
    mask: torch.Tensor
    bias: torch.Tensor | None


def effective_tensor(module, name: str) -> torch.Tensor | None:
    """The tensor the module computes with: ``<name>_orig * <name>_mask`` when pruned.

    Read from the reparametrization rather than the ``<name>`` attribute, which the pruning hook
    only refreshes at the next forward call.
    """
    if hasattr(module, name + "_orig") and hasattr(module, name + "_mask"):
        return getattr(module, name + "_orig") * getattr(module, name + "_mask")
    return getattr(module, name)


def as_numpy(tensor: torch.Tensor) -> np.ndarray:
    """A float64 CPU copy of ``tensor``.

    A copy always: a float64 CPU tensor would otherwise share memory with the model (or with an
    activation that an in-place ReLU overwrites next).
    """
    return tensor.detach().to("cpu", torch.float64, copy=True).numpy()


class LayerAdapter:
    """A module seen as a Net-Trim layer (module docstring).

    The default methods hold for a module whose ``weight`` is ``(outputs, ...)`` and whose ``bias``
    is ``(outputs,)`` or None; a subclass sets ``module_types`` and says how activations become rows
    (:meth:`input_rows`, :meth:`output_rows`).

    Parameters
    ----------
    module : torch.nn.Module
        One of ``module_types``.
    """

    module_types: tuple = ()
    #: The names of the module's weight and bias tensors (what :mod:`convexnet.nn.write` writes).
    weight_name = "weight"
    bias_name = "bias"

    def __init__(self, module: torch.nn.Module):
        self.module = module

    # ------------------------------------------------------------------------------ the module
    @classmethod
    def types(cls) -> tuple:
        """The module types this adapter takes (``module_types``, unless looked up at run time)."""
        return cls.module_types

    @property
    def kind(self) -> str:
        """The supported type the module is an instance of (``"Linear"``, ``"Conv2d"``, ...)."""
        return next(t.__name__ for t in self.types() if isinstance(self.module, t))

    def parameter(self, name: str) -> torch.Tensor | None:
        """The tensor that holds ``name``'s values: ``<name>_orig`` when pruned, else ``<name>``."""
        if hasattr(self.module, name + "_orig"):
            return getattr(self.module, name + "_orig")
        return getattr(self.module, name)

    @property
    def weight_shape(self) -> tuple:
        """The weight's shape in torch's layout."""
        return tuple(self.parameter(self.weight_name).shape)

    @property
    def groups(self) -> int:
        """Independent blocks of the layer (convolution groups); 1 otherwise."""
        return 1

    @property
    def rows_per_output(self) -> int:
        """``N``: rows of ``W`` (the bias row excluded), the inputs of one output."""
        return self.parameter(self.weight_name)[0].numel()

    # ------------------------------------------------------------------------------ the matrix
    def _tensors(self, effective: bool) -> tuple:
        """``(weight, bias)``: those the module computes with, or (``effective=False``) the
        ``torch.nn.utils.prune`` originals (``<name>_orig``, the values before the mask)."""
        read = effective_tensor if effective else (lambda module, name: self.parameter(name))
        return read(self.module, self.weight_name).detach(), read(self.module, self.bias_name)

    def matrix(self, effective: bool = True) -> torch.Tensor:
        """``[W; b]`` of the tensors the module computes with, detached.

        Shape ``(N + 1, M)`` with a bias, ``(N, M)`` without; then, for a module that is not pruned,
        a view of the weight (no copy). ``effective=False`` reads a pruned module's originals.
        """
        weight, bias = self._tensors(effective)
        matrix = weight.reshape(weight.shape[0], -1).T
        if bias is None:
            return matrix
        return torch.cat([matrix, bias.detach().reshape(1, -1)], dim=0)

    def design(self, tensor: torch.Tensor) -> torch.Tensor:
        """A tensor in the weight's layout (a mask) as the matrix ``W``, ``(N, M)``."""
        return tensor.reshape(tensor.shape[0], -1).T

    def write_matrix(self, matrix: torch.Tensor) -> None:
        """Copy ``[W; b]`` into the module's parameters, in place (call under ``torch.no_grad()``)."""
        weight, bias = self.parameter(self.weight_name), self.parameter(self.bias_name)
        rows = weight[0].numel()
        weight.copy_(matrix[:rows].T.reshape(weight.shape))
        if bias is not None:
            bias.copy_(matrix[rows])

    def blocks(self, effective: bool = True) -> list[Block]:
        """The layer as float64 design matrices, one :class:`Block` per group.

        A block's ``inputs`` selects its columns of :meth:`input_rows`, ``outputs`` its columns of
        ``W`` and of :meth:`output_rows`; ``W`` is ``(N, M_g)`` and ``b`` ``(M_g,)`` or None.
        ``effective`` as in :meth:`matrix`.
        """
        matrix = as_numpy(self.matrix(effective))
        rows = self.rows_per_output
        W, b = matrix[:rows], (matrix[rows] if matrix.shape[0] > rows else None)
        if self.groups == 1:
            return [Block(slice(None), slice(None), W.copy(), None if b is None else b.copy())]
        width = W.shape[1] // self.groups
        blocks = []
        for group in range(self.groups):
            inputs = slice(group * rows, (group + 1) * rows)
            outputs = slice(group * width, (group + 1) * width)
            blocks.append(Block(inputs, outputs, W[:, outputs].copy(),
                                None if b is None else b[outputs].copy()))
        return blocks

    def update(self, refit: list[Block]) -> LayerUpdate:
        """The module's tensors holding the refit ``blocks``, in its dtype on its device.

        The mask is read off the weights in the module's dtype: an entry that rounds to 0 is pruned.
        """
        reference = self.parameter(self.weight_name)
        dtype, device = reference.dtype, reference.device
        W = np.zeros((self.rows_per_output, reference.shape[0]))
        for block in refit:
            W[:, block.outputs] = block.W
        weight = torch.as_tensor(np.ascontiguousarray(W.T.reshape(reference.shape)), dtype=dtype,
                                 device=device)
        bias = None
        if refit[0].b is not None:
            bias = torch.as_tensor(np.concatenate([block.b for block in refit]), dtype=dtype,
                                   device=device)
        return LayerUpdate(weight, (weight != 0).to(dtype), bias)

    # ------------------------------------------------------------------------- the activations
    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The layer's input as sample rows, shape ``(rows, groups * N)``."""
        raise NotImplementedError(type(self).__name__)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        """The layer's (pre-activation) output as sample rows, shape ``(rows, M)``."""
        raise NotImplementedError(type(self).__name__)

    def row_count(self, y: torch.Tensor) -> int:
        """Samples one call produces: output entries per output column."""
        return y.numel() // self.parameter(self.weight_name).shape[0]

    # ------------------------------------------------------------------ one call of the hooked module
    @property
    def hooked(self) -> torch.nn.Module:
        """The module whose forward hook sees the layer's input (the module itself, by default)."""
        return self.module

    def call_inputs(self, args: tuple, kwargs: dict) -> torch.Tensor:
        """The layer's input rows from one call of :attr:`hooked`, shape ``(rows, groups * N)``."""
        return self.input_rows(args[0] if args else kwargs["input"])

    def call_outputs(self, args: tuple, kwargs: dict, output) -> torch.Tensor:
        """The layer's output rows ``(rows, M)`` from one call of :attr:`hooked`, in input row order."""
        return self.output_rows(output)

    def call_rows(self, args: tuple, kwargs: dict, output) -> int:
        """Samples one call of :attr:`hooked` produces."""
        return self.row_count(output)

    def inner_layers(self) -> dict:
        """``{child name: adapter}`` for child modules that are layers seen through this module."""
        return {}


class LinearAdapter(LayerAdapter):
    """``torch.nn.Linear``: ``W = weight.T``; every input row is a sample."""

    module_types = (torch.nn.Linear,)

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.module.in_features)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, self.module.out_features)


class ConvAdapter(LayerAdapter):
    """``torch.nn.Conv1d``, ``Conv2d`` and ``Conv3d``, through unfold (module docstring)."""

    module_types = (torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d)

    @property
    def groups(self) -> int:
        return self.module.groups

    def _padding(self) -> list[int]:
        """The input's padding as ``F.pad`` takes it (last axis first); "same" may be asymmetric."""
        module = self.module
        if isinstance(module.padding, str):
            # "same": the extra entry of an odd total goes to the end, as torch pads.
            pairs = [(0, 0)] * len(module.kernel_size) if module.padding == "valid" else [
                (dilation * (size - 1) // 2, dilation * (size - 1) - dilation * (size - 1) // 2)
                for dilation, size in zip(module.dilation, module.kernel_size)]
        else:
            pairs = [(pad, pad) for pad in module.padding]
        return [value for pair in reversed(pairs) for value in pair]

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        """The unfolded input: one row per (input, output position).

        Parameters
        ----------
        x : Tensor, shape (B, C_in, *size) or (C_in, *size)

        Returns
        -------
        Tensor, shape (B * prod(output size), C_in * prod(kernel))
            Rows ordered by input, then output position (last axis fastest); columns by
            ``(channel, *kernel offsets)``, as ``weight.reshape(C_out, -1)``:
            ``conv(x) == rows @ W + b`` per group's block.
        """
        module = self.module
        axes = len(module.kernel_size)
        if x.dim() == axes + 1:
            x = x.unsqueeze(0)
        pads = self._padding()
        if any(pads):
            mode = "constant" if module.padding_mode == "zeros" else module.padding_mode
            x = F.pad(x, pads, mode=mode)
        for axis, (size, stride, dilation) in enumerate(zip(module.kernel_size, module.stride,
                                                            module.dilation)):
            # Each unfold appends the window of one axis as a last dimension.
            x = x.unfold(2 + axis, dilation * (size - 1) + 1, stride)
        if any(dilation > 1 for dilation in module.dilation):
            x = x[(Ellipsis, *(slice(None, None, dilation) for dilation in module.dilation))]
        order = (0, *range(2, 2 + axes), 1, *range(2 + axes, 2 + 2 * axes))
        return x.permute(order).reshape(-1, x.shape[1] * math.prod(module.kernel_size))

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        if y.dim() == len(self.module.kernel_size) + 1:
            y = y.unsqueeze(0)
        return y.reshape(y.shape[0], y.shape[1], -1).transpose(1, 2).reshape(-1, y.shape[1])


class TransformersConv1DAdapter(LayerAdapter):
    """``transformers``' ``Conv1D`` (GPT-2's linear layers): ``weight`` is already ``W``, ``(N, M)``.

    ``y = x @ weight + bias`` on the last axis; every input row is a sample. The class is looked up
    in ``sys.modules`` (module docstring of :func:`transformers_conv1d`): without ``transformers``
    imported, no module can be one, and ``convexnet.nn`` never imports it.
    """

    @classmethod
    def types(cls) -> tuple:
        return transformers_conv1d()

    @property
    def rows_per_output(self) -> int:
        return self.parameter(self.weight_name).shape[0]

    def matrix(self, effective: bool = True) -> torch.Tensor:
        weight, bias = self._tensors(effective)
        if bias is None:
            return weight
        return torch.cat([weight, bias.detach().reshape(1, -1)], dim=0)

    def design(self, tensor: torch.Tensor) -> torch.Tensor:
        return tensor

    def write_matrix(self, matrix: torch.Tensor) -> None:
        weight, bias = self.parameter(self.weight_name), self.parameter(self.bias_name)
        weight.copy_(matrix[:weight.shape[0]])
        if bias is not None:
            bias.copy_(matrix[weight.shape[0]])

    def update(self, refit: list[Block]) -> LayerUpdate:
        reference = self.parameter(self.weight_name)
        W = np.zeros(tuple(reference.shape))
        for block in refit:
            W[:, block.outputs] = block.W
        weight = torch.as_tensor(W, dtype=reference.dtype, device=reference.device)
        bias = None
        if refit[0].b is not None:
            bias = torch.as_tensor(np.concatenate([block.b for block in refit]),
                                   dtype=reference.dtype, device=reference.device)
        return LayerUpdate(weight, (weight != 0).to(reference.dtype), bias)

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.rows_per_output)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, self.parameter(self.weight_name).shape[1])

    def row_count(self, y: torch.Tensor) -> int:
        return y.numel() // self.parameter(self.weight_name).shape[1]


def transformers_conv1d() -> tuple:
    """``(transformers.pytorch_utils.Conv1D,)`` when ``transformers`` is imported, else ``()``.

    A model holding such a module was built by ``transformers``, which was imported to build it; so
    looking in ``sys.modules`` finds the class whenever it matters, at no import cost.
    """
    module = sys.modules.get("transformers.pytorch_utils")
    conv1d = getattr(module, "Conv1D", None)
    return (conv1d,) if isinstance(conv1d, type) else ()


_ADAPTERS: list[type[LayerAdapter]] = [LinearAdapter, ConvAdapter, TransformersConv1DAdapter]


def register(adapter: type[LayerAdapter]) -> None:
    """Add an adapter class; it is tried before those registered earlier."""
    _ADAPTERS.insert(0, adapter)


def supported() -> tuple:
    """The module types some adapter takes."""
    return tuple(t for adapter in _ADAPTERS for t in adapter.types())


def describe_supported() -> str:
    """The supported module types, for messages."""
    return ("torch.nn.Linear, Conv1d, Conv2d, Conv3d, MultiheadAttention (self-attention) or "
            "transformers' Conv1D")


def model_adapters(model: torch.nn.Module) -> dict:
    """``{name: adapter}`` for every layer of ``model``, in registration order.

    A child that an adapter claims as one of its :meth:`~LayerAdapter.inner_layers` (the
    ``out_proj`` of a ``MultiheadAttention``) gets that adapter instead of its own type's.
    """
    found, inner = {}, {}
    for name, module in model.named_modules():
        if name in inner:
            found[name] = inner.pop(name)
        elif isinstance(module, supported()):
            found[name] = adapter_for(module)
            prefix = f"{name}." if name else ""
            inner.update({prefix + child: adapter
                          for child, adapter in found[name].inner_layers().items()})
    return found


def adapter_for(module) -> LayerAdapter:
    """The adapter of ``module``; :class:`InvalidInputError` for a module no adapter takes."""
    for adapter in _ADAPTERS:
        if isinstance(module, adapter.types()):
            return adapter(module)
    raise InvalidInputError(f"{type(module).__name__} is not a supported layer; supported: "
                            f"{describe_supported()}.")


# The MultiheadAttention adapters register themselves; imported last, as they subclass LayerAdapter.
from . import attention  # noqa: E402,F401
