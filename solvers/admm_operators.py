"""The three operators of graph-form ADMM, batched over columns, in torch (CPU or CUDA).

- :func:`soft_threshold`: the prox of the weighted l1 penalty ``g``;
- :func:`prox_output_loss`: the prox of ``f`` (budget balls, squared loss, and clipping off the mask);
- :class:`GraphProjection`: the projection onto ``{(W, Z) : Z = X W}``, factored once.

The kernels here are private to the ADMM engine: they take the engine's tensors (already on one device,
in one dtype) and do no input checking. ``solvers/prox.py`` holds the general-purpose kernels.
"""

from __future__ import annotations

import dataclasses

import torch

__all__ = ["soft_threshold", "prox_output_loss", "GraphProjection"]


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


def prox_output_loss(points: torch.Tensor, rho: torch.Tensor, *, loss: str,
                     upper: torch.Tensor | None, active_weight: torch.Tensor | None,
                     target_shift: torch.Tensor, epsilon, lam) -> torch.Tensor:
    """``argmin_Z f(Z) + rho/2 ||Z - points||^2`` for the three output losses, in closed form.

    With ``A`` the active mask, ``D = points`` and ``r = D - Y`` on ``A`` (0 off ``A``):

    - ``"budget"``: the Euclidean projection of ``D`` onto ``{sum over A (Z - Y)^2 <= epsilon^2}``
      (one ball over every column) on ``A``, that is ``D - (1 - s) r`` with ``s = min(1, eps / ||r||)``,
      and ``min(D, V)`` off ``A``. An indicator: ``rho`` plays no part, which is why the coupled budget
      is solved with one ``rho`` for all columns (a per-column ``rho`` would turn this projection into a
      weighted one, onto an ellipsoid);
    - ``"column_budget"``: the same with one ball per column (radius ``epsilon[m]``);
    - ``"squared"``: ``(rho D + 2 lam Y) / (rho + 2 lam) = D - c r`` with ``c = 2 lam / (rho + 2 lam)``
      on ``A`` (the minimizer of ``lam (z - y)^2 + rho/2 (z - d)^2``), ``min(D, V)`` off ``A``.

    Every case is ``min(D, upper) - c r`` with ``upper = +inf`` on ``A`` and ``V`` off it, which takes
    three passes over the data and no branch per entry.

    Parameters
    ----------
    points : torch.Tensor, shape (P, M)
    rho : torch.Tensor, shape (1, M) or (1, 1)
        Penalty parameters per column (only the squared loss uses them).
    loss : {"budget", "column_budget", "squared"}
    upper : torch.Tensor or None, shape (P, M)
        ``+inf`` on ``A``, ``V`` off ``A``; None when ``A`` is all True (no clipping).
    active_weight : torch.Tensor or None, shape (P, M)
        ``A`` as 0/1 in the points' dtype; None when ``A`` is all True.
    target_shift : torch.Tensor, shape (P, M)
        ``-Y`` on ``A``, 0 off ``A``.
    epsilon : torch.Tensor, 0-d ("budget") or (M,) ("column_budget"); None for "squared"
    lam : float or None

    Returns
    -------
    torch.Tensor, shape (P, M)
    """
    if active_weight is None:
        offset = points + target_shift
    else:
        offset = torch.addcmul(target_shift, points, active_weight)
    if loss == "squared":
        pull = (2.0 * lam) / (rho + 2.0 * lam)
    else:
        if loss == "budget":
            norm = torch.linalg.vector_norm(offset)
        else:
            norm = torch.linalg.vector_norm(offset, dim=0, keepdim=True)
        # 1 - min(1, eps / norm), without dividing by a zero norm: a zero offset is in every ball.
        shrink = epsilon.reshape(norm.shape) / torch.clamp(norm, min=torch.finfo(norm.dtype).tiny)
        pull = 1.0 - torch.clamp(shrink, max=1.0)
    clipped = points.clone() if upper is None else torch.minimum(points, upper)
    return clipped.addcmul_(offset, pull, value=-1.0)


@dataclasses.dataclass(frozen=True)
class GraphProjection:
    """The projection ``(W, Z) = argmin ||W - C||^2 + ||Z - D||^2 subject to Z = X W``, factored once.

    Its solution is ``W = (I + X^T X)^{-1} (C + X^T D)``, ``Z = X W``. The matrix depends neither on
    the column nor on ``rho``, so it is inverted once per problem, in float64, and every application is
    matrix products only (which a GPU does best):

    - ``P >= N``: ``W = K C + H D`` with ``K = (I + X^T X)^{-1}`` (N, N) and ``H = K X^T`` (N, P);
      then ``Z = X W``;
    - ``P < N`` (matrix inversion lemma): ``nu = G (D - X C)`` with ``G = (I + X X^T)^{-1}`` (P, P);
      then ``W = C + X^T nu`` and ``Z = D - nu``.

    Both inverses are of matrices whose eigenvalues are at least 1, so forming them explicitly loses at
    most a factor ``1 + ||X||_2^2`` of accuracy, and only once.

    Attributes
    ----------
    X : torch.Tensor, shape (P, N)
    inverse : torch.Tensor, shape (N, N) or (P, P)
        ``K`` or ``G`` above.
    transfer : torch.Tensor or None, shape (N, P)
        ``H`` when ``P >= N``.
    """

    X: torch.Tensor
    inverse: torch.Tensor
    transfer: torch.Tensor | None

    @classmethod
    def factor(cls, X: torch.Tensor, dtype: torch.dtype) -> "GraphProjection":
        """Invert the matrix for ``X`` (P, N) in float64 and store everything in ``dtype``."""
        P, N = X.shape
        X64 = X.to(torch.float64)
        gram = X64.T @ X64 if P >= N else X64 @ X64.T
        gram.diagonal().add_(1.0)
        inverse = torch.cholesky_inverse(torch.linalg.cholesky(gram))
        transfer = (inverse @ X64.T).to(dtype) if P >= N else None
        return cls(X=X64.to(dtype), inverse=inverse.to(dtype), transfer=transfer)

    def __call__(self, C: torch.Tensor, D: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """Project the pair ``C`` (N, M), ``D`` (P, M); returns ``(W, Z)`` with ``Z = X @ W``."""
        if self.transfer is not None:
            W = self.inverse @ C + self.transfer @ D
            return W, self.X @ W
        nu = self.inverse @ (D - self.X @ C)
        return C + self.X.T @ nu, D - nu
