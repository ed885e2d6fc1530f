r"""Self-attention with some heads removed: what :func:`convexnet.nn.shrink` puts in place of an
``nn.MultiheadAttention`` whose heads were pruned.

``nn.MultiheadAttention`` ties its inner width to ``embed_dim`` (``in_proj_weight`` is
``(3 E, E)``), so it cannot hold ``H' < H`` heads of ``head_dim = E / H``. :class:`PrunedAttention`
keeps the module's interface (the same call, ``batch_first``, masks, ``(output, weights)``) with an
inner width ``H' * head_dim``:

.. math:: [q, k, v] = [x_q W_q^T + b_q,\; x_k W_k^T + b_k,\; x_v W_v^T + b_v], \qquad
          y = \big[\operatorname{softmax}(q_h k_h^T / \sqrt{d} + \text{mask})\, v_h\big]_{h}
              W_{out}^T + b_{out},

with ``W_q, W_k, W_v`` of shape ``(H' d, E)`` and ``W_out`` of shape ``(E, H' d)``. A removed head
contributed zero (its value and output-projection entries were zero), so the outputs equal the
pruned module's. Attention weights returned with ``need_weights=True`` are those of the kept heads
(averaged over them with ``average_attn_weights``).
"""

from __future__ import annotations

import math

import torch
import torch.nn.functional as F

__all__ = ["PrunedAttention"]


class PrunedAttention(torch.nn.Module):
    """Multi-head attention holding the kept heads of an ``nn.MultiheadAttention``.

    Parameters
    ----------
    embed_dim : int
        ``E``, the width of the inputs and of the output.
    heads : list of int
        The original indices of the kept heads (for 3-d attention masks given per head).
    original_heads : int
        ``H`` of the original module.
    head_dim : int
    in_proj_weight : Tensor, shape (3 * len(heads) * head_dim, E)
    in_proj_bias : Tensor or None, shape (3 * len(heads) * head_dim,)
    out_proj : torch.nn.Linear
        ``(len(heads) * head_dim) -> E``.
    batch_first : bool
    dropout : float
    """

    # nn.TransformerEncoderLayer reads this to choose its fused path; ours has no fused path.
    _qkv_same_embed_dim = False

    def __init__(self, embed_dim: int, heads: list, original_heads: int, head_dim: int,
                 in_proj_weight: torch.Tensor, in_proj_bias, out_proj: torch.nn.Linear,
                 batch_first: bool, dropout: float = 0.0):
        super().__init__()
        self.embed_dim, self.head_dim = embed_dim, head_dim
        self.heads, self.original_heads = list(heads), original_heads
        self.num_heads = len(self.heads)
        self.batch_first, self.dropout = batch_first, dropout
        self.in_proj_weight = torch.nn.Parameter(in_proj_weight.detach().clone())
        self.in_proj_bias = None if in_proj_bias is None else \
            torch.nn.Parameter(in_proj_bias.detach().clone())
        self.out_proj = out_proj

    def extra_repr(self) -> str:
        return (f"embed_dim={self.embed_dim}, heads={self.heads} of {self.original_heads}, "
                f"head_dim={self.head_dim}, batch_first={self.batch_first}")

    def _project(self, x: torch.Tensor, part: int) -> torch.Tensor:
        inner = self.num_heads * self.head_dim
        weight = self.in_proj_weight[part * inner:(part + 1) * inner]
        bias = None if self.in_proj_bias is None else \
            self.in_proj_bias[part * inner:(part + 1) * inner]
        projected = F.linear(x, weight, bias)                                   # (B, L, H' d)
        return projected.reshape(*x.shape[:2], self.num_heads, self.head_dim).transpose(1, 2)

    def _mask(self, attn_mask, key_padding_mask, is_causal: bool, batch: int, L: int, S: int,
              dtype) -> torch.Tensor | None:
        """The additive mask ``(B, H', L, S)`` (or broadcastable), or None."""
        def additive(mask):
            if mask.dtype == torch.bool:
                return torch.zeros(mask.shape, dtype=dtype, device=mask.device) \
                    .masked_fill(mask, float("-inf"))
            return mask.to(dtype)

        total = None
        if attn_mask is None and is_causal:
            attn_mask = torch.ones(L, S, dtype=torch.bool).triu(1)
        if attn_mask is not None:
            mask = additive(attn_mask)
            if mask.dim() == 3:      # (B * H, L, S): keep the kept heads' masks
                mask = mask.reshape(batch, self.original_heads, L, S)[:, self.heads]
            total = mask
        if key_padding_mask is not None:
            padding = additive(key_padding_mask).reshape(batch, 1, 1, S)
            total = padding if total is None else total + padding
        return total

    def forward(self, query, key, value, key_padding_mask=None, need_weights: bool = True,
                attn_mask=None, average_attn_weights: bool = True, is_causal: bool = False):
        """As ``nn.MultiheadAttention.forward``; returns ``(output, weights or None)``."""
        unbatched = query.dim() == 2
        if unbatched:
            query, key, value = (t.unsqueeze(1) for t in (query, key, value))
            if key_padding_mask is not None:
                key_padding_mask = key_padding_mask.unsqueeze(0)
        if not self.batch_first or unbatched:
            query, key, value = (t.transpose(0, 1) for t in (query, key, value))
        batch, L, S = query.shape[0], query.shape[1], key.shape[1]
        q, k, v = self._project(query, 0), self._project(key, 1), self._project(value, 2)
        scores = q @ k.transpose(-1, -2) / math.sqrt(self.head_dim)              # (B, H', L, S)
        mask = self._mask(attn_mask, key_padding_mask, is_causal, batch, L, S, scores.dtype)
        if mask is not None:
            scores = scores + mask
        weights = torch.softmax(scores, dim=-1)
        if self.training and self.dropout > 0:
            weights = F.dropout(weights, p=self.dropout)
        attended = (weights @ v).transpose(1, 2).reshape(batch, L, self.num_heads * self.head_dim)
        output = self.out_proj(attended)
        if not self.batch_first or unbatched:
            output = output.transpose(0, 1)
        if unbatched:
            output = output.squeeze(1)
        if not need_weights:
            return output, None
        returned = weights.mean(1) if average_attn_weights else weights
        return output, returned.squeeze(0) if unbatched else returned
