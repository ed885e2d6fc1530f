r"""The group-l1 program over a consumer layer's input units, and the path to a count of units.

For a consumer layer with Gram matrix ``H = X^T X`` (n, n) of its (bias-augmented) input rows and
original weights ``W0`` (n, M), the rows of ``W`` are grouped by the unit they read: ``G_u`` holds
the rows of unit ``u`` (one row for a ``Linear`` input, ``k*k`` rows for an input channel of a
``k x k`` convolution, a block after a ``flatten``, ``head_dim`` rows for a head); rows in no group
(the bias row) are free. Removing unit ``u`` is ``W[G_u] = 0``. The programs, in the variable
``W`` (n, M):

* **regularized** (the group lasso, Yuan and Lin 2006):

  .. math:: \min_W\; \|X (W - W_0)\|_F^2 + \lambda \sum_u \omega_u \|(D W)_{G_u}\|_F

* **budget** (constrained, Net-Trim's form with the group norm in place of the l1 norm):

  .. math:: \min_W\; \sum_u \omega_u \|(D W)_{G_u}\|_F \quad\text{s.t.}\quad
            \|X (W - W_0)\|_F^2 \le \epsilon^2

  solved as the regularized program at the ``lambda`` whose solution meets the budget with
  equality (the fit grows with ``lambda``; bisection in ``log lambda``).

with ``D = diag(sqrt(H_ii))`` (the norms of the input's columns): a unit's group norm is measured
on what it contributes, not on its raw weights. Both are convex. :func:`group_lasso` solves them
with ADMM on the scaled variable ``U = D W`` (so that ``H_n = D^{-1} H D^{-1}`` has a unit
diagonal, as in :mod:`convexnet.nn.targets`), one eigendecomposition per layer:
``A = (2 H_n + rho I)^{-1} (2 H_n U_0 + rho (Z - Y))``, ``Z = prox(A + Y)`` (the group soft
threshold ``Z_G = (A + Y)_G max(0, 1 - lambda omega_u / (rho ||(A + Y)_G||))``), ``Y += A - Z``. The
group norms are taken in the scaled variable: ``||U_{0,G_u}||`` is the unit's activation norm times
its outgoing weights' norm.

:func:`unit_support` reaches a given number of removed units by the warm-started path: bisection on
``log lambda`` (each step warm-started from the last) until the solution has the wanted number of
zero groups, with adaptive weights ``omega_u = 1 / (||U_{0,G_u}|| + c)`` in the first round and
reweighted from the solution in the next (Candes, Wakin and Boyd 2008). The units kept are those
with the largest group norms of the last solution; their weights are then refit exactly
(:func:`convexnet.nn.least_squares.masked_refit`).

Examples
--------
>>> import torch
>>> from convexnet.nn.group_lasso import unit_support
>>> X = torch.randn(200, 6, dtype=torch.float64)
>>> W0 = torch.randn(6, 3, dtype=torch.float64)
>>> W0[[1, 4]] *= 1e-3                         # units 1 and 4 hardly matter
>>> unit_support(X.T @ X, W0, torch.arange(6), 6, remove=2).tolist()
[True, False, True, True, False, True]
"""

from __future__ import annotations

import math

import torch

from ..errors import InvalidInputError

__all__ = ["group_lasso", "unit_support", "group_norms"]


def group_norms(Z: torch.Tensor, unit_of_row: torch.Tensor, count: int) -> torch.Tensor:
    """``||Z[G_u]||_F`` for every unit ``u``; rows with ``unit_of_row < 0`` are ignored.

    Parameters
    ----------
    Z : Tensor, shape (n, M)
    unit_of_row : LongTensor, shape (n,)
    count : int

    Returns
    -------
    Tensor, shape (count,)
    """
    member = unit_of_row >= 0
    squares = torch.zeros(count, dtype=Z.dtype, device=Z.device)
    squares.index_add_(0, unit_of_row[member], (Z[member] ** 2).sum(1))
    return squares.sqrt()


class _Scaled:
    """The scaled program's fixed data: ``H_n``, ``U_0`` and ADMM's inverse (module docstring)."""

    def __init__(self, H: torch.Tensor, W0: torch.Tensor, rho: float):
        d = torch.diagonal(H).clamp(min=0.0).sqrt()
        alive = d > 1e-12 * float(d.max()) if d.numel() and float(d.max()) > 0 else d > 0
        self.d = torch.where(alive, d, torch.ones_like(d))
        Hn = H / self.d[:, None] / self.d[None, :]
        Hn = torch.where(alive[:, None] & alive[None, :], Hn, torch.zeros_like(Hn))
        Hn.diagonal().copy_(alive.to(H.dtype))
        self.Hn, self.U0, self.rho = Hn, self.d[:, None] * W0, rho
        values, vectors = torch.linalg.eigh(Hn)
        self.inverse = (vectors / (2.0 * values.clamp(min=0.0) + rho)) @ vectors.T
        self.drive = self.inverse @ (2.0 * Hn @ self.U0)

    def fit(self, U: torch.Tensor) -> float:
        """``||X (W - W0)||_F^2`` at ``W = D^{-1} U``."""
        R = U - self.U0
        return float((R * (self.Hn @ R)).sum())


def _admm(scaled: _Scaled, unit_of_row, count: int, lam: float, omega: torch.Tensor, state,
          iterations: int, tolerance: float = 0.0):
    """``iterations`` ADMM steps from ``state = (A, Z, Y)``; stops early below ``tolerance``."""
    A, Z, Y = state
    rho = scaled.rho
    member = (unit_of_row >= 0).to(A.dtype)
    row_unit = unit_of_row.clamp(min=0)
    # P (count, n) sums a row quantity over each unit's rows: one product per iteration.
    P = torch.zeros((count, A.shape[0]), dtype=A.dtype, device=A.device)
    P[row_unit[member > 0], torch.nonzero(member > 0).flatten()] = 1.0
    threshold = lam * omega.to(A.dtype) / rho
    for _ in range(iterations):
        A = scaled.drive + rho * (scaled.inverse @ (Z - Y))
        V = A + Y
        norms = (P @ (V * V).sum(1)).sqrt()
        shrink = torch.clamp(1.0 - threshold / norms.clamp(min=1e-300), min=0.0)
        factor = member * shrink[row_unit] + (1.0 - member)
        previous = Z
        Z = V * factor[:, None]
        Y = Y + A - Z
        if tolerance and float((A - Z).norm()) <= tolerance * max(float(Z.norm()), 1e-30) and \
                float(rho * (Z - previous).norm()) <= tolerance * max(float(Y.norm()), 1e-30):
            break
    return A, Z, Y


def _initial_weights(U: torch.Tensor, unit_of_row, count: int, keep: int) -> torch.Tensor:
    norms = group_norms(U, unit_of_row, count)
    scale = norms.sum() / max(keep, 1)
    omega = 1.0 / (norms + 0.1 * scale + 1e-30)
    return omega / omega.mean()


def group_lasso(H: torch.Tensor, W0: torch.Tensor, unit_of_row: torch.Tensor, count: int, *,
                lam: float | None = None, epsilon: float | None = None, weights=None,
                rho: float = 1.0, iterations: int = 5000, tolerance: float = 1e-9):
    """Solve the regularized (``lam``) or budget (``epsilon``) program of the module docstring.

    Parameters
    ----------
    H : Tensor, shape (n, n), float64
    W0 : Tensor, shape (n, M), float64
    unit_of_row : LongTensor, shape (n,)
        The unit of each row; -1 for a free row (the bias).
    count : int
        Units.
    lam, epsilon : float
        Exactly one: the group penalty's weight, or the budget on ``||X (W - W0)||_F``.
    weights : Tensor, shape (count,), optional
        ``omega`` (default 1).
    rho, iterations, tolerance
        ADMM's penalty (relative to the unit diagonal), iteration cap and relative stopping
        tolerance on the primal and dual residuals.

    Returns
    -------
    W : Tensor, shape (n, M), float64
        Whole groups exactly zero.
    lam : float
        The penalty weight solved at (for ``epsilon``, the one found).
    """
    if (lam is None) == (epsilon is None):
        raise InvalidInputError("give exactly one of lam= (regularized) and epsilon= (budget).")
    for label, value in (("lam", lam), ("epsilon", epsilon)):
        if value is not None and (not isinstance(value, (int, float)) or not math.isfinite(value)
                                  or value < 0):
            raise InvalidInputError(f"{label} must be a finite float >= 0; got {value!r}.")
    scaled = _Scaled(H, W0, rho)
    omega = torch.ones(count, dtype=H.dtype, device=H.device) if weights is None else \
        torch.as_tensor(weights, dtype=H.dtype, device=H.device)
    start = (scaled.U0.clone(), scaled.U0.clone(), torch.zeros_like(scaled.U0))
    if lam is not None:
        _, Z, _ = _admm(scaled, unit_of_row, count, float(lam), omega, start, iterations, tolerance)
        return Z / scaled.d[:, None], float(lam)
    high = _lam_max(scaled, unit_of_row, count, omega)
    if scaled.fit(torch.where((unit_of_row >= 0)[:, None], 0.0, scaled.U0)) <= epsilon ** 2:
        lam = high
    else:
        low, state = 0.0, start
        for _ in range(60):
            lam = 0.5 * (low + high) if low == 0.0 else math.sqrt(low * high)
            low = low or high * 1e-9
            state = _admm(scaled, unit_of_row, count, lam, omega, state, iterations, tolerance)
            if scaled.fit(state[1]) > epsilon ** 2:
                high = lam
            else:
                low = lam
            if high / low < 1 + 1e-6:
                break
        lam = low
    _, Z, _ = _admm(scaled, unit_of_row, count, lam, omega, start, iterations, tolerance)
    return Z / scaled.d[:, None], lam


def _lam_max(scaled: _Scaled, unit_of_row, count: int, omega: torch.Tensor) -> float:
    """The smallest ``lambda`` at which every group is zero (its gradient's group norm at 0)."""
    member = unit_of_row >= 0
    U = torch.where(member[:, None], 0.0, scaled.U0)
    gradient = 2.0 * scaled.Hn @ (U - scaled.U0)
    return float((group_norms(gradient, unit_of_row, count) / omega.clamp(min=1e-30)).max())


def unit_support(H: torch.Tensor, W0: torch.Tensor, unit_of_row: torch.Tensor, count: int, *,
                 remove: int, rounds: int = 2, path_steps: int = 14, iterations: int = 30,
                 rho: float = 0.05) -> torch.Tensor:
    """The units kept when ``remove`` of ``count`` go, chosen by the group-l1 path.

    Parameters
    ----------
    H, W0, unit_of_row, count
        As in :func:`group_lasso`.
    remove : int
        Units to remove, ``0 <= remove <= count``.
    rounds : int, default 2
        Path solves: adaptive weights first, then reweighted from the previous solution.
    path_steps : int, default 14
        Bisection steps on ``log lambda`` per round.
    iterations : int, default 30
        ADMM iterations per path step (warm-started).
    rho : float, default 0.05

    Returns
    -------
    Tensor of bool, shape (count,)
        True for the ``count - remove`` units kept.
    """
    keep = count - remove
    kept = torch.ones(count, dtype=torch.bool)
    if remove <= 0 or keep <= 0:
        return kept if remove <= 0 else ~kept
    scaled = _Scaled(H, W0, rho)
    state = (scaled.U0.clone(), scaled.U0.clone(), torch.zeros_like(scaled.U0))
    previous = scaled.U0
    for _ in range(rounds):
        omega = _initial_weights(previous, unit_of_row, count, keep)
        high = _lam_max(scaled, unit_of_row, count, omega)
        low = high * 1e-6
        for _ in range(path_steps):
            lam = math.sqrt(low * high)
            state = _admm(scaled, unit_of_row, count, lam, omega, state, iterations)
            alive = int((group_norms(state[1], unit_of_row, count) > 0).sum())
            if alive > keep:
                low = lam
            else:
                high = lam
        previous = state[1]
    score = group_norms(state[1], unit_of_row, count) + \
        1e-6 * group_norms(state[0], unit_of_row, count)
    order = torch.argsort(-score.cpu(), stable=True)[:keep]
    return kept.logical_not_().index_fill_(0, order, True)
