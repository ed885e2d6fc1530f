r"""Baseline pruning methods for ``benchmarks/lm_pruning.py``, written from their papers.

Each is a ``support`` callable for :func:`convexnet.nn.trim`: it receives a
:class:`convexnet.nn.pruning.LayerData` (``H = X^T X`` (N, N) of the layer's calibration input in the
model pruned so far, ``W`` (N, M) in the design's orientation, the ``target``) and returns a mask or
pruned weights meeting the target (``round(s N)`` zeros per output, or ``n`` of every ``m``
consecutive inputs). So every method runs on the same model, the same calibration and the same
block-by-block schedule; only the choice (and, for SparseGPT, the update) differs.

* **Magnitude**: keep the largest ``|W_ij|`` of each output.
* **Wanda** (Sun, Liu, Bair and Kolter 2023, "A simple and effective pruning approach for large
  language models"): keep the largest ``|W_ij| * ||X_i||_2`` of each output, with
  ``||X_i||_2 = sqrt(H_ii)`` the norm of input feature ``i`` over the calibration rows; no update.
* **SparseGPT** (Frantar and Alistarh 2023, "SparseGPT: massive language models can be accurately
  pruned in one-shot"): with the damped Hessian ``H_d = H + 0.01 mean(diag H) I`` and the upper
  Cholesky factor ``U`` of ``H_d^{-1}`` (``U^T U = H_d^{-1}``), the inputs are visited in order, in
  blocks of 128; at the start of a block the mask of its columns is chosen by the OBS saliency
  ``w^2 / U_ii^2`` (per output; per group of ``m`` for ``n:m``); when input ``i`` is pruned in an
  output the error ``e = w_i / U_ii`` is compensated on the later inputs, ``w_j -= e U_ij``
  (``j > i``), so each output's weights become a sequential OBS reconstruction.
"""

from __future__ import annotations

import math

import torch

__all__ = ["magnitude", "wanda", "sparsegpt"]


def _keep_largest(score: torch.Tensor, target) -> torch.Tensor:
    """The support (N, M) meeting ``target`` with the largest scores of each output (column)."""
    N, M = score.shape
    if target.n is not None:
        groups = score.T.reshape(M, N // target.m, target.m)
        best = torch.topk(groups, target.n, dim=2).indices
        keep = torch.zeros_like(groups, dtype=torch.bool).scatter_(2, best, True)
        return keep.reshape(M, N).T
    kept = N - int(math.floor(target.sparsity * N + 0.5))
    best = torch.topk(score, kept, dim=0).indices
    return torch.zeros_like(score, dtype=torch.bool).scatter_(0, best, True)


def magnitude(layer) -> torch.Tensor:
    """Keep the largest magnitudes of each output."""
    return _keep_largest(layer.W.abs(), layer.target)


def wanda(layer) -> torch.Tensor:
    """Keep the largest ``|W_ij| ||X_i||`` of each output."""
    norms = torch.diagonal(layer.H).clamp(min=0.0).sqrt()
    return _keep_largest(layer.W.abs() * norms[:, None], layer.target)


def sparsegpt(layer, *, block: int = 128, damping: float = 0.01) -> tuple:
    """SparseGPT's mask and pruned weights, both (N, M) (module docstring)."""
    target = layer.target
    W = layer.W.T.clone()                    # (M, N): one output per row, as in the paper
    M, N = W.shape
    H = layer.H.clone()
    dead = torch.diagonal(H) == 0
    H[dead, dead] = 1.0
    W[:, dead] = 0.0
    H += damping * torch.diagonal(H).mean() * torch.eye(N, dtype=H.dtype)
    U = torch.linalg.cholesky(torch.cholesky_inverse(torch.linalg.cholesky(H)), upper=True)
    pruned = torch.zeros_like(W, dtype=torch.bool)
    for start in range(0, N, block):
        stop = min(start + block, N)
        W1, U1 = W[:, start:stop].clone(), U[start:stop, start:stop]
        errors = torch.zeros_like(W1)
        mask1 = torch.zeros_like(W1, dtype=torch.bool)
        if target.n is None:
            # this block's share of each output's zeros, so that the row total is exact
            zeros = (int(math.floor(target.sparsity * stop + 0.5))
                     - int(math.floor(target.sparsity * start + 0.5)))
            saliency = W1 ** 2 / torch.diagonal(U1)[None, :] ** 2
            if zeros:
                mask1.scatter_(1, torch.topk(saliency, zeros, dim=1, largest=False).indices, True)
        for i in range(stop - start):
            if target.n is not None and i % target.m == 0:
                group = slice(i, i + target.m)
                saliency = W1[:, group] ** 2 / torch.diagonal(U1)[None, group] ** 2
                lowest = torch.topk(saliency, target.m - target.n, dim=1, largest=False).indices
                mask1[:, group] = torch.zeros_like(saliency, dtype=torch.bool).scatter_(1, lowest, True)
            w, d = W1[:, i], U1[i, i]
            q = torch.where(mask1[:, i], torch.zeros_like(w), w)
            error = (w - q) / d
            W1[:, i:] -= error[:, None] * U1[i, i:][None, :]
            W1[:, i] = q
            errors[:, i] = error
        W[:, start:stop] = W1
        pruned[:, start:stop] = mask1
        W[:, stop:] -= errors @ U[start:stop, stop:]
    W[pruned] = 0.0
    return ~pruned.T, W.T.contiguous()
