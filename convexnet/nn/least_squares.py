r"""The exact refit of a layer on a fixed support, and its certificate.

For a layer whose input rows ``X`` (P, n) (bias-augmented) have Gram matrix ``H = X^T X`` and whose
original weights are ``W0`` (n, M), the refit on a support ``S`` (n, M) is the convex QP

.. math:: \min_W \|X (W - W_0)\|_F^2 + \delta \|W - W_0\|_F^2 \quad\text{s.t.}\quad W_{im} = 0
          \text{ where } S_{im} \text{ is False},

(``delta >= 0`` the optional damping). Its columns are independent; on column ``m`` with support
``s`` and complement ``c`` the optimality conditions are the ``|s| x |s|`` linear system

.. math:: (H + \delta I)_{ss} (w_s - w_{0s}) = H_{sc}\, w_{0c},

solved for many columns at once (batched Cholesky; a column whose ``H_ss`` is singular takes the
minimum-norm least-squares solution, still optimal). :func:`certify` writes the same QP as a
:class:`~convexnet.SparsityProgram` on a compressed sample form (``R`` with ``R^T R = H``: the
Cholesky factor, or :class:`~convexnet.GramData`'s eigenvalue form when ``H`` is singular;
``T = R W0``), with a ``fits.Squared`` term and a ``sets.Mask``
constraint, and certifies ``W`` with :func:`convexnet.certificates.verify`: its duality gap.
"""

from __future__ import annotations

import numpy as np
import torch

from .. import fits, sets
from ..certificates import verify
from ..programs.gram import GramData, compress
from ..programs.program import ProgramResult, SparsityProgram

__all__ = ["masked_refit", "certify", "GAP_TOL"]

#: Relative duality gap under which a refit is certified optimal.
GAP_TOL = 1e-6
# Columns per batched solve are capped so that the batch of |s| x |s| systems stays near 64 MiB.
_BATCH_BYTES = 64 * 2 ** 20


def masked_refit(H: torch.Tensor, W0: torch.Tensor, support: torch.Tensor, *,
                 damping: float = 0.0) -> torch.Tensor:
    """The refit weights (module docstring).

    Parameters
    ----------
    H : Tensor, shape (n, n), float64
    W0 : Tensor, shape (n, M), float64
    support : Tensor of bool, shape (n, M)
        True where ``W`` may be non-zero (the bias row True).
    damping : float, default 0.0
        ``delta``, absolute (added to ``H``'s diagonal).

    Returns
    -------
    Tensor, shape (n, M), float64
        Exactly zero off the support.
    """
    n, M = W0.shape
    Hd = H + damping * torch.eye(n, dtype=H.dtype, device=H.device) if damping else H
    # H_sc w0_c for every column at once: H applied to the pruned part of W0.
    drive = Hd @ (W0 * ~support)
    W = torch.zeros_like(W0)
    sizes = support.sum(0)
    for size in torch.unique(sizes).tolist():
        columns = torch.nonzero(sizes == size).flatten()
        if size == 0:
            continue
        chunk = max(1, _BATCH_BYTES // (8 * size * size))
        for start in range(0, columns.numel(), chunk):
            cols = columns[start:start + chunk]
            # Row indices of each column's support, ascending: (c, size).
            rows = torch.nonzero(support[:, cols].T)[:, 1].reshape(cols.numel(), size)
            system = Hd[rows[:, :, None], rows[:, None, :]]
            rhs = torch.gather(drive[:, cols].T, 1, rows).unsqueeze(-1)
            factor, info = torch.linalg.cholesky_ex(system)
            step = torch.cholesky_solve(rhs, factor)
            failed = torch.nonzero(info > 0).flatten()
            if failed.numel():
                step[failed] = _least_squares(system[failed], rhs[failed])
            values = torch.gather(W0[:, cols].T, 1, rows) + step.squeeze(-1)
            W[:, cols] = torch.zeros((cols.numel(), n), dtype=W0.dtype, device=W0.device) \
                .scatter_(1, rows, values).T
    return W


def _least_squares(system: torch.Tensor, rhs: torch.Tensor) -> torch.Tensor:
    """Minimum-norm solutions of singular symmetric positive semidefinite systems, batched."""
    values, vectors = torch.linalg.eigh(system)
    cutoff = 1e-12 * values.abs().amax(dim=-1, keepdim=True).clamp(min=1e-300)
    inverse = torch.where(values > cutoff, 1.0 / values.clamp(min=1e-300), torch.zeros_like(values))
    return vectors @ (inverse.unsqueeze(-1) * (vectors.transpose(-1, -2) @ rhs))


def refit_program(H: np.ndarray, W0: np.ndarray, support: np.ndarray, *, samples: int,
                  damping: float = 0.0) -> SparsityProgram:
    """The refit QP as a :class:`~convexnet.SparsityProgram` on a compressed form of ``H``.

    ``R`` is the transposed Cholesky factor of ``H`` (``R^T R = H``, square) when ``H`` is positive
    definite, else the eigenvalue form of :func:`convexnet.programs.gram.compress`; either way
    ``||R (W - W0)||^2 = ||X (W - W0)||^2`` for every ``W``, and the target is ``T = R W0``.
    """
    factor, info = torch.linalg.cholesky_ex(torch.from_numpy(H))
    if int(info) == 0:
        R = factor.numpy().T
    else:
        gram = GramData(H=H, XtY=H @ W0, y_squares=np.einsum("nm,nm->m", W0, H @ W0), n=samples,
                        x_sum=np.zeros(H.shape[0]), y_sum=np.zeros(W0.shape[1]))
        R, _, _ = compress(gram)
    T = R @ W0
    if damping:
        R = np.vstack([R, np.sqrt(damping) * np.eye(H.shape[0])])
        T = np.vstack([T, np.sqrt(damping) * W0])
    return SparsityProgram(R, fit=fits.Squared(T), constraints=[sets.Mask(support)])


def certify(H: torch.Tensor, W0: torch.Tensor, W: torch.Tensor, support: torch.Tensor, *,
            samples: int, damping: float = 0.0, solve_time: float = 0.0) -> ProgramResult:
    """``W`` as the result of the refit program, with its duality-gap certificate attached.

    Returns
    -------
    ProgramResult
        ``backend="exact"``; ``status`` ``"optimal"`` when :func:`~convexnet.certificates.verify`
        certifies a relative gap ``<= GAP_TOL``, else ``"optimal_inaccurate"``; ``objective`` is
        ``||X (W - W0)||^2`` (plus the damping term).
    """
    to_numpy = lambda tensor: tensor.detach().to("cpu", torch.float64).numpy()  # noqa: E731
    program = refit_program(to_numpy(H), to_numpy(W0), to_numpy(support).astype(bool),
                            samples=samples, damping=damping)
    W = to_numpy(W)
    result = ProgramResult(program=program, backend="exact", status="optimal",
                           solve_time=solve_time, W=W, objective=program.objective(W),
                           violation=program.violation(W),
                           info={"tolerances": {"gap_tol": GAP_TOL, "feas_tol": GAP_TOL}})
    result.certificate = verify(result, gap_tol=GAP_TOL, feas_tol=GAP_TOL)
    if not result.certificate.ok:
        result.status = "optimal_inaccurate"
    return result
