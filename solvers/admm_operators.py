"""Operators of graph-form ADMM, batched over columns, in torch (CPU or CUDA).

- :func:`soft_threshold`: the prox of a weighted l1 penalty;
- :class:`GraphProjection`: the projection onto ``{(W_1, ..., W_k, Z) : W_i = W, Z = X W}``, factored
  once.

The proxes of the program's terms live with the terms (:mod:`solvers.graph_terms`).

The kernels here are private to the ADMM engine: they take the engine's tensors (already on one device,
in one dtype) and do no input checking. ``solvers/prox.py`` holds the general-purpose kernels.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["soft_threshold", "GraphProjection"]


def soft_threshold(values: torch.Tensor, thresholds: torch.Tensor) -> torch.Tensor:
    """``argmin_W sum t * |W| + 1/2 ||W - values||^2``, entrywise: ``sign(v) * max(|v| - t, 0)``.

    Parameters
    ----------
    values : torch.Tensor, shape (N, M)
    thresholds : torch.Tensor, broadcastable to (N, M), non-negative

    Returns
    -------
    torch.Tensor, shape (N, M), with exact zeros where ``|values| <= thresholds``.
    """
    return torch.sign(values) * torch.clamp(values.abs() - thresholds, min=0.0)


@dataclasses.dataclass(frozen=True)
class GraphProjection:
    """The projection onto ``{W_1 = ... = W_k = W, Z = X W}``, factored once.

    For points ``C_1, ..., C_k`` (N, M) and ``D`` (P, M) it solves
    ``argmin_W sum_i ||W - C_i||^2 + ||X W - D||^2``, that is ``W = (k I + X^T X)^{-1} (S + X^T D)``
    with ``S = sum_i C_i``, and ``Z = X W``. ``k`` is the number of weight terms of the program (each
    has its own copy of ``W``; ``k = 1`` is Parikh and Boyd's graph projection). The matrix depends
    neither on the column nor on ``rho``, so it is inverted once per problem, in float64, and every
    application is matrix products only (which a GPU does best):

    - ``P >= N``: ``W = K S + H D`` with ``K = (k I + X^T X)^{-1}`` (N, N) and ``H = K X^T`` (N, P);
      then ``Z = X W``;
    - ``P < N`` (matrix inversion lemma): ``nu = G (D - X S / k)`` with ``G = (k I + X X^T)^{-1}``
      (P, P); then ``W = S / k + X^T nu`` and ``Z = D - k nu``.

    Both inverses are of matrices whose eigenvalues are at least ``k``, so forming them explicitly
    loses at most a factor ``1 + ||X||_2^2 / k`` of accuracy, and only once.

    Attributes
    ----------
    X : torch.Tensor, shape (P, N)
    inverse : torch.Tensor, shape (N, N) or (P, P)
        ``K`` or ``G`` above.
    transfer : torch.Tensor or None, shape (N, P)
        ``H`` when ``P >= N``.
    copies : int
        ``k``.
    """

    X: torch.Tensor
    inverse: torch.Tensor
    transfer: torch.Tensor | None
    copies: int = 1

    @classmethod
    def factor(cls, X: torch.Tensor, dtype: torch.dtype, copies: int = 1) -> "GraphProjection":
        """Invert the matrix for ``X`` (P, N) and ``k = copies`` in float64; store it in ``dtype``."""
        P, N = X.shape
        X64 = X.to(torch.float64)
        gram = X64.T @ X64 if P >= N else X64 @ X64.T
        gram.diagonal().add_(float(copies))
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        transfer = (inverse @ X64.T).to(dtype) if P >= N else None
        return cls(X=X64.to(dtype), inverse=inverse.to(dtype), transfer=transfer, copies=int(copies))

    def __call__(self, C: torch.Tensor, D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project ``C`` (the sum of the copies' points, (N, M)) and ``D`` (P, M); returns ``(W, Z)``."""
        if self.transfer is not None:
            W = self.inverse @ C + self.transfer @ D
            return W, self.X @ W
        mean = C if self.copies == 1 else C / self.copies
        nu = self.inverse @ (D - self.X @ mean)
        return mean + self.X.T @ nu, D - self.copies * nu
