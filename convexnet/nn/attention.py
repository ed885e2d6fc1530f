r"""``torch.nn.MultiheadAttention`` as two layers: the packed input projection and ``out_proj``.

A self-attention module with embedding size ``E`` computes, on query rows ``x`` (``q = k = v``),

.. math:: [q, k, v] = x W_{in} + b_{in}, \qquad y = A(q, k, v)\, W_{out} + b_{out},

where ``W_in = in_proj_weight.T`` is ``(E, 3E)`` (the packed query, key and value projections) and
``A`` is the per-head softmax attention. Two adapters see it:

* :class:`InProjectionAdapter`, registered for the module itself: the matrix
  ``[in_proj_weight.T; in_proj_bias]`` of shape ``(E + 1, 3E)``, each query row a sample; written
  back to ``in_proj_weight`` / ``in_proj_bias``.
* :class:`OutProjectionAdapter`, for the child ``out_proj`` (a ``Linear``): ``MultiheadAttention``
  never calls it as a module (it passes its weight to ``F.multi_head_attention_forward``), so its
  input ``A(q, k, v)`` is recomputed from the parent's call with the identity as output projection:
  the hook sits on the parent (:attr:`OutProjectionAdapter.hooked`).

Only self-attention with one embedding size (``_qkv_same_embed_dim``) is supported; a call whose key
or value is not the query raises :class:`~convexnet.errors.InvalidInputError` (cross-attention would
give the key and value columns of ``W_in`` other inputs than the query columns).

The pruning hooks of ``torch.nn.utils.prune`` on ``out_proj`` do not run (its ``forward`` is never
called): the written ``out_proj.weight`` is right for evaluation; before fine-tuning call
``prune.remove(mha.out_proj, "weight")``.
"""

from __future__ import annotations

import torch
import torch.nn.functional as F

from ..errors import InvalidInputError
from .layers import LayerAdapter, effective_tensor, register

__all__ = ["InProjectionAdapter", "OutProjectionAdapter", "attention_inputs"]


def _query(args: tuple, kwargs: dict) -> tuple:
    """``(query, key, value)`` of one call, whichever way they were passed."""
    names = ("query", "key", "value")
    values = list(args[:3]) + [kwargs.get(name) for name in names[len(args[:3]):]]
    return tuple(values)


def _batch_second(module, tensor: torch.Tensor) -> torch.Tensor:
    """``(L, B, E)`` layout (as ``F.multi_head_attention_forward`` takes it) of a module's tensor."""
    if tensor.dim() == 2:
        return tensor.unsqueeze(1)
    return tensor.transpose(0, 1) if module.batch_first else tensor


def _self_attention_query(module, args: tuple, kwargs: dict) -> torch.Tensor:
    query, key, value = _query(args, kwargs)
    if key is not query or value is not query:
        raise InvalidInputError(
            "a MultiheadAttention layer was called with a key or value other than its query "
            "(cross-attention); convexnet prunes self-attention only: leave this module out of "
            "layers=.")
    return query


def attention_inputs(module: torch.nn.MultiheadAttention, args: tuple, kwargs: dict) -> torch.Tensor:
    """``A(q, k, v)``: the input of ``out_proj`` in one call, ``(L, B, E)``.

    The module's own attention function, run with the identity as output projection and no bias.
    """
    query = _batch_second(module, _self_attention_query(module, args, kwargs))
    E = module.embed_dim
    eye = torch.eye(E, dtype=query.dtype, device=query.device)
    in_bias = effective_tensor(module, "in_proj_bias")
    output, _ = F.multi_head_attention_forward(
        query, query, query, E, module.num_heads,
        effective_tensor(module, "in_proj_weight"), in_bias,
        module.bias_k, module.bias_v, module.add_zero_attn, 0.0, eye, None, training=False,
        key_padding_mask=kwargs.get("key_padding_mask"), need_weights=False,
        attn_mask=kwargs.get("attn_mask"), is_causal=bool(kwargs.get("is_causal", False)))
    return output


class InProjectionAdapter(LayerAdapter):
    """The packed ``in_proj_weight`` ``(3E, E)`` and ``in_proj_bias`` of a self-attention module."""

    module_types = (torch.nn.MultiheadAttention,)
    weight_name = "in_proj_weight"
    bias_name = "in_proj_bias"

    def __init__(self, module):
        if not module._qkv_same_embed_dim:
            raise InvalidInputError(
                "a MultiheadAttention with kdim or vdim other than embed_dim keeps separate "
                "q/k/v projections; convexnet supports the packed in_proj_weight only (leave it out "
                "of layers=).")
        super().__init__(module)

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.module.embed_dim)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, 3 * self.module.embed_dim)

    def call_inputs(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return self.input_rows(_batch_second(self.module, _self_attention_query(self.module, args,
                                                                                kwargs)))

    def call_outputs(self, args: tuple, kwargs: dict, output) -> torch.Tensor:
        x = _batch_second(self.module, _self_attention_query(self.module, args, kwargs))
        return self.output_rows(F.linear(x, effective_tensor(self.module, self.weight_name),
                                         effective_tensor(self.module, self.bias_name)))

    def call_rows(self, args: tuple, kwargs: dict, output) -> int:
        query = _query(args, kwargs)[0]
        return query.numel() // self.module.embed_dim

    def inner_layers(self) -> dict:
        return {"out_proj": OutProjectionAdapter(self.module.out_proj, self.module)}


class OutProjectionAdapter(LayerAdapter):
    """``out_proj`` of a self-attention module; hooked through its parent (module docstring).

    Parameters
    ----------
    module : torch.nn.Linear
        The ``out_proj`` child.
    parent : torch.nn.MultiheadAttention
    """

    module_types = ()

    def __init__(self, module, parent: torch.nn.MultiheadAttention):
        super().__init__(module)
        self.parent = parent

    @property
    def kind(self) -> str:
        return "Linear"

    @property
    def hooked(self) -> torch.nn.Module:
        return self.parent

    def input_rows(self, x: torch.Tensor) -> torch.Tensor:
        return x.reshape(-1, self.module.in_features)

    def output_rows(self, y: torch.Tensor) -> torch.Tensor:
        return y.reshape(-1, self.module.out_features)

    def call_inputs(self, args: tuple, kwargs: dict) -> torch.Tensor:
        return self.input_rows(attention_inputs(self.parent, args, kwargs))

    def call_outputs(self, args: tuple, kwargs: dict, output) -> torch.Tensor:
        return self.output_rows(_batch_second(self.parent, output[0]))

    def call_rows(self, args: tuple, kwargs: dict, output) -> int:
        return output[0].numel() // self.module.out_features


register(InProjectionAdapter)
