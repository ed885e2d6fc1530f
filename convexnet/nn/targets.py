r"""Sparsity targets and the convex choice of a support that meets them.

A target says how many weights of a layer stay non-zero, counted on ``W`` (N, M) in the design's
orientation (column ``m`` holds output ``m``'s incoming weights; the bias row is never pruned):

* ``sparsity=s``: exactly ``round(s * N)`` zeros in every column (``per="row"``, a row of torch's
  ``(M, N)`` weight), or ``round(s * N * M)`` in the layer (``per="layer"``);
* ``pattern="n:m"``: at most ``n`` non-zeros in each group of ``m`` consecutive inputs of every
  column (``m`` divides ``N``), exactly ``n`` when the scores allow: PyTorch's semi-structured layout
  for ``"2:4"``.

:func:`l1_support` chooses the support by convex programs. For one layer with Gram matrix
``H = X^T X`` (n, n) of its (bias-augmented) input and original weights ``W0`` (n, M), each column
solves, in the scaled variable ``u = d * w`` with ``d_i = sqrt(H_ii)`` (the norm of input ``i``),

.. math:: \min_u\; (u - u_0)^T H_n (u - u_0) + \lambda_m \sum_{i < N} \omega_i |u_i|,
          \qquad H_n = H / d d^T \text{ (unit diagonal)},

with ``lambda_m`` found on a warm-started path (bisection in ``log lambda``, every column at once)
so that the solution has the target's number of non-zeros. The weights are adaptive (Zou 2006):
``omega_i = 1 / (|u_0i| + eps)`` in the first round, then reweighted from the previous solution,
``1 / (|u_i| + eps)`` (Candes, Wakin and Boyd 2008; for a pattern, entries the pattern would drop
get the heaviest weights). With a diagonal ``H`` the first round keeps exactly the largest
``|w_0i| d_i`` (Wanda's score); the full ``H`` lets correlated inputs stand in for each other. The
kept entries are then refit exactly (:mod:`convexnet.nn.least_squares`).

The program is solved by a batched ADMM with one eigendecomposition per layer:
``x = (2 H_n + rho I)^{-1} (2 H_n u_0 + rho (z - y))``, ``z = soft(x + y, lambda omega / rho)``,
``y += x - z``. The inputs of a transformer layer are strongly correlated (after a layer norm the
spectrum of ``H_n`` spans ten orders of magnitude), and a small ``rho`` (0.002 of the unit diagonal)
is what lets the iterations reach the small-eigenvalue directions: on the benchmark's GPT-2 it
halves the refit error of the chosen supports against ``rho = 2``.
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np
import torch

from ..errors import InvalidInputError

__all__ = ["Target", "check_target", "select", "l1_support", "satisfies"]

PER = ("row", "layer")


@dataclass(frozen=True)
class Target:
    """A checked target (module docstring).

    Attributes
    ----------
    sparsity : float or None
        Fraction of zeros; for a pattern ``1 - n / m``.
    n, m : int or None
        The pattern ``n:m``.
    per : {"row", "layer"}
    """

    sparsity: float | None
    n: int | None = None
    m: int | None = None
    per: str = "row"

    @property
    def pattern(self) -> str | None:
        return None if self.n is None else f"{self.n}:{self.m}"

    def describe(self) -> str:
        return (f"pattern {self.pattern}" if self.n is not None
                else f"sparsity {self.sparsity:g} per {self.per}")

    def zeros(self, N: int) -> int:
        """Zeros per column of ``N`` inputs (``per="row"``; a pattern's count when exact)."""
        if self.n is not None:
            return N - N // self.m * self.n
        return int(math.floor(self.sparsity * N + 0.5))

    def check_inputs(self, label: str, N: int) -> None:
        """Refuse a layer whose ``N`` inputs the pattern's group size does not divide."""
        if self.m is not None and N % self.m:
            raise InvalidInputError(
                f"pattern {self.pattern!r} groups the inputs of {label} by {self.m}, but it has "
                f"{N} inputs per output, which {self.m} does not divide; choose a pattern whose "
                f"group size divides {N}, or leave the layer out of layers=.")


def check_target(*, sparsity=None, pattern=None, per: str = "row") -> Target:
    """A :class:`Target` from ``trim``'s arguments (one of ``sparsity`` and ``pattern``)."""
    if per not in PER:
        raise InvalidInputError(f"per must be 'row' or 'layer'; got {per!r}.")
    if (sparsity is None) == (pattern is None):
        raise InvalidInputError("give exactly one of sparsity= and pattern=.")
    if sparsity is not None:
        if isinstance(sparsity, (bool, np.bool_)) or not isinstance(sparsity, (int, float, np.number)) \
                or not math.isfinite(float(sparsity)) or not 0.0 <= float(sparsity) < 1.0:
            raise InvalidInputError(
                f"sparsity is the fraction of weights set to zero and must lie in [0, 1); got "
                f"{sparsity!r} (0.5 prunes half of each row).")
        return Target(float(sparsity), per=per)
    parts = pattern.split(":") if isinstance(pattern, str) else []
    if len(parts) != 2 or not all(part.strip().isdigit() for part in parts):
        raise InvalidInputError(f"pattern must be a string 'n:m' such as '2:4'; got {pattern!r}.")
    n, m = (int(part) for part in parts)
    if not 0 < n < m:
        raise InvalidInputError(f"pattern {pattern!r} must keep 0 < n < m weights of each group.")
    if per != "row":
        raise InvalidInputError("a pattern is per group of inputs; per='layer' applies to sparsity=.")
    return Target(1.0 - n / m, n, m, "row")


def select(score: torch.Tensor, target: Target) -> torch.Tensor:
    """The support meeting ``target`` that keeps the largest scores.

    Parameters
    ----------
    score : Tensor, shape (N, M)
        Non-negative; ties go to the lower input index (a stable sort).
    target : Target

    Returns
    -------
    Tensor of bool, shape (N, M)
    """
    N, M = score.shape
    keep = torch.zeros((N, M), dtype=torch.bool, device=score.device)
    if target.n is not None:
        grouped = score.T.reshape(M, N // target.m, target.m)
        order = torch.argsort(-grouped, dim=2, stable=True)[..., :target.n]
        kept = torch.zeros_like(grouped, dtype=torch.bool).scatter_(2, order, True)
        return kept.reshape(M, N).T.contiguous()
    if target.per == "layer":
        count = N * M - int(math.floor(target.sparsity * N * M + 0.5))
        order = torch.argsort(-score.reshape(-1), stable=True)[:count]
        keep.view(-1)[order] = True
        return keep
    count = N - target.zeros(N)
    order = torch.argsort(-score, dim=0, stable=True)[:count]
    return keep.scatter_(0, order, True)


def satisfies(support: torch.Tensor, target: Target) -> bool:
    """Whether a support ``(N, M)`` meets the target exactly (counts) or as an upper bound (pattern)."""
    N, M = support.shape
    if target.n is not None:
        return bool((support.T.reshape(M, N // target.m, target.m).sum(2) <= target.n).all())
    if target.per == "layer":
        return int((~support).sum()) == int(math.floor(target.sparsity * N * M + 0.5))
    return bool(((~support).sum(0) == target.zeros(N)).all())


def _soft(x: torch.Tensor, threshold: torch.Tensor) -> torch.Tensor:
    return torch.sign(x) * torch.clamp(x.abs() - threshold, min=0.0)


def l1_support(H: torch.Tensor, W0: torch.Tensor, target: Target, *, pruned_rows: int,
               rounds: int = 2, path_steps: int = 10, iterations: int = 20,
               adaptive: bool = True, rho: float = 0.002) -> torch.Tensor:
    """The support chosen by the weighted (and reweighted) l1 path (module docstring).

    Parameters
    ----------
    H : Tensor, shape (n, n), float64
        Gram matrix of the layer's input rows, with a trailing ones column when it has a bias.
    W0 : Tensor, shape (n, M), float64
        The original weights (bias row last).
    target : Target
    pruned_rows : int
        ``N``: the first rows are prunable; rows ``N:`` (the bias) are kept and unpenalized.
    rounds : int, default 2
        l1 solves: the first weighted by ``d``, each later one reweighted by the previous solution.
    path_steps : int, default 10
        Bisection steps on ``log lambda`` per round (every column at once).
    iterations : int, default 20
        ADMM iterations per path step, warm-started from the previous step.
    adaptive : bool, default True
        First-round weights ``1 / (|u_0| + eps)``; False: 1 (the plain weighted lasso).
    rho : float, default 0.002
        ADMM's penalty parameter, relative to ``H_n``'s unit diagonal.

    Returns
    -------
    Tensor of bool, shape (N, M)
        Meets ``target`` (:func:`select` applied to the last solution's magnitudes).
    """
    N, M = pruned_rows, W0.shape[1]
    diagonal = torch.diagonal(H).clamp(min=0.0)
    d = diagonal.sqrt()
    alive = d > 1e-12 * float(d.max()) if d.numel() and float(d.max()) > 0 else d > 0
    safe = torch.where(alive, d, torch.ones_like(d))
    Hn = H / safe[:, None] / safe[None, :]
    Hn = torch.where(alive[:, None] & alive[None, :], Hn, torch.zeros_like(Hn))
    Hn.diagonal().copy_(torch.where(alive, torch.ones_like(d), torch.zeros_like(d)))
    U0 = safe[:, None] * W0
    values, vectors = torch.linalg.eigh(Hn)

    inverse = (vectors / (2.0 * values.clamp(min=0.0) + rho)) @ vectors.T
    drive = inverse @ (2.0 * Hn @ U0)
    # The iterations only rank entries: single precision halves their cost.
    inverse, drive = inverse.to(torch.float32), drive.to(torch.float32)
    penalized = torch.zeros_like(W0)
    penalized[:N] = 1.0
    wanted = N - target.zeros(N)
    if target.n is None and target.per == "layer":
        wanted = (N * M - int(math.floor(target.sparsity * N * M + 0.5))) / M
    omega = penalized.clone()
    penalized, omega = penalized.to(torch.float32), omega.to(torch.float32)
    X, Z = U0.to(torch.float32), U0.to(torch.float32)
    Y = torch.zeros_like(X)
    for round_index in range(rounds):
        if round_index or adaptive:
            previous = Z[:N].abs() if round_index else U0[:N].abs().to(torch.float32)
            if target.n is not None:
                # entries the pattern would drop get the heaviest weights in the next round
                previous = previous * select(previous, target)
            scale = previous.sum(0, keepdim=True) / max(wanted, 1)
            omega[:N] = 1.0 / (previous + 0.1 * scale + 1e-30)
            omega[:N] = omega[:N] / omega[:N].mean(0, keepdim=True)
        reach = (2.0 * Hn @ U0).abs()[:N].to(torch.float32) / omega[:N].clamp(min=1e-30)
        high = reach.max(0).values.clamp(min=1e-30)
        if target.per == "layer" and target.n is None:
            high = torch.full_like(high, float(high.max()))      # one lambda for the layer
        low = high * 1e-6
        for _ in range(path_steps):
            lam = (low * high).sqrt()
            threshold = lam[None, :] * omega / rho
            for _ in range(iterations):
                X = drive + rho * (inverse @ (Z - Y))
                Z = torch.where(penalized > 0, _soft(X + Y, threshold), X + Y)
                Y = Y + X - Z
            count = (Z[:N] != 0).sum(0).to(torch.float32)
            if target.per == "layer" and target.n is None:
                count = torch.full_like(count, float(count.mean()))
            too_many = count > wanted
            low = torch.where(too_many, lam, low)
            high = torch.where(too_many, high, lam)
    score = (Z[:N].abs() + 1e-6 * X[:N].abs() * (Z[:N] == 0)).to(W0.dtype)
    score = torch.where(alive[:N, None], score, torch.zeros_like(score))
    return select(score, target)
