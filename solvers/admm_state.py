"""The state of graph-form ADMM and its step: :class:`ADMMData`, :class:`ADMMState`, :func:`admm_step`.

One step (Parikh and Boyd's graph projection splitting, as in POGS), with one copy ``W_i`` of the
weights per weight term ``g_i``, scaled duals ``(W_dual_i, Z_dual)`` and penalty ``rho`` (one per
column, or one for all when a term couples the columns):

.. code-block:: text

    W_prox_i = prox_{g_i / rho}(W - W_dual_i)                      each weight term's prox
    Z_prox   = prox_{f / rho}(Z - Z_dual)                           each output term on its mask
    W_rel_i  = alpha W_prox_i + (1 - alpha) W,   Z_rel likewise    over-relaxation
    (W, Z)   = projection onto {W_i = W, Z = X W} of (W_rel_i + W_dual_i, Z_rel + Z_dual)
    W_dual_i += W_rel_i - W,   Z_dual += Z_rel - Z

With one weight term this is the graph projection splitting itself; with several (a penalty and a
set, say) no closed form of the prox of their sum is assumed.

:func:`prepare` builds the data of a solve (transfer, equilibration, factorization) and
:func:`initial_state` its starting state; the loop is :func:`solvers.admm.solve_graph_form`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .admm_operators import GraphProjection
from .graph_form import GraphForm

__all__ = ["ADMMData", "ADMMState", "admm_step", "prepare", "initial_state"]

# The root mean square singular value that equilibration gives X_hat: how much Z weighs against W in
# the projection (the starting rho scales with it, through the scaled l1 weights). Of 1, 2, 3, 5 and
# 10, 3 took the fewest steps in total over fifteen random ReLU layers (three losses, five shapes from
# 200 x 200 x 200 to 3000 x 200 x 50): 28% fewer than 1, though up to 31% more on some layers. On the
# spirals demo's trained hidden layer (per-column budgets) it halved the median steps and let every
# column converge (docs/benchmarks.md).
EQUILIBRATION_GAIN = 3.0


@dataclasses.dataclass(frozen=True)
class ADMMData:
    """The device-resident, scaled data of one solve, restricted to the columns still being solved.

    The engine solves the program in scaled variables ``W_hat = W / (output_scale * column_scale)``
    (per row) and ``Z_hat = Z / output_scale`` with ``X_hat = X * column_scale`` (per column of X),
    and divides the program by ``output_scale``: the terms are prepared in these units
    (:mod:`solvers.graph_terms`). The column scaling (equilibration) is per row of ``W`` when every
    weight term allows it, else one scalar; the scalar output scaling keeps balls balls and makes the
    absolute tolerance independent of the data's units.

    Attributes
    ----------
    projection : GraphProjection
        The factored projection for ``X_hat``, shape (P, N), and the number of weight copies.
    column_scale : torch.Tensor, shape (N, 1)
    output_scale : float
    outputs : tuple of prepared output terms
    weights : tuple of prepared weight terms
    violation_scale : float
        The output scale of relative violations, divided by ``output_scale``.
    coupled : bool
        One ``rho`` for all columns, which are judged together.
    target_norms : torch.Tensor, shape (Mw,)
        The norm of each column's targets (scaled), for the starting ``rho``.
    columns : torch.Tensor of int64, shape (Mw,)
        The columns of the full problem that these are.
    """

    projection: GraphProjection
    column_scale: torch.Tensor
    output_scale: float
    outputs: tuple
    weights: tuple
    violation_scale: float
    coupled: bool
    target_norms: torch.Tensor
    columns: torch.Tensor

    def select(self, keep: torch.Tensor) -> "ADMMData":
        """The same data restricted to the columns where ``keep`` (bool, shape (Mw,)) is True."""
        return dataclasses.replace(
            self, outputs=tuple(term.select(keep) for term in self.outputs),
            weights=tuple(term.select(keep) for term in self.weights),
            target_norms=self.target_norms[keep], columns=self.columns[keep])

    def violation(self, Z_hat: torch.Tensor) -> torch.Tensor:
        """Relative violation per column of the scaled outputs ``Z_hat`` (P, Mw): see GraphForm."""
        violation = torch.zeros(Z_hat.shape[1], dtype=Z_hat.dtype, device=Z_hat.device)
        for term in self.outputs:
            violation = torch.maximum(violation, term.violation(Z_hat, self.violation_scale))
        return violation

    def weight_violation(self, W_hat: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Relative distance per column of ``W_hat`` (N, Mw) to each set after the first term."""
        violation = torch.zeros(W_hat.shape[1], dtype=W_hat.dtype, device=W_hat.device)
        for term in self.weights[1:]:
            if not term.kind.is_constraint:
                continue
            gap = torch.linalg.vector_norm(term.prox(W_hat, rho) - W_hat, dim=0)
            size = torch.clamp(torch.linalg.vector_norm(W_hat, dim=0), min=1.0)
            if self.coupled:
                gap, size = torch.linalg.vector_norm(gap), torch.linalg.vector_norm(size)
            violation = torch.maximum(violation, gap / size)
        return violation


@dataclasses.dataclass(frozen=True)
class ADMMState:
    """The iterate of graph-form ADMM on the columns being solved (scaled variables, see ADMMData).

    Attributes
    ----------
    W, Z : torch.Tensor, shapes (N, Mw), (P, Mw)
        The last projection: ``Z = X_hat @ W``.
    W_dual : torch.Tensor, shape (k, N, Mw)
        Scaled duals of the copies ``W_i = W`` (the dual variables divided by ``rho``).
    Z_dual : torch.Tensor, shape (P, Mw)
    W_prox : torch.Tensor, shape (k, N, Mw)
        The last prox of each weight term; ``W_prox[0]`` (the first term's, soft-thresholded for an
        l1 penalty: exact zeros) is the point a result reports.
    Z_prox, Z_prox_input : torch.Tensor, shape (P, Mw)
        The last prox of ``f`` and its argument; ``rho * (Z_prox_input - Z_prox)`` is a subgradient of
        ``f`` at ``Z_prox``, the dual estimate a result reports.
    rho : torch.Tensor, shape (1, Mw), or (1, 1) when the columns are coupled
    primal_residual, dual_residual : torch.Tensor or None, shape (Mw,)
        Boyd et al.'s residuals of the last step, per column: ``||(W_prox_i - W, Z_prox - Z)||`` and
        ``rho ||(W, ..., W, Z) - previous||``. None when the step skipped them.
    primal_scale, dual_scale : torch.Tensor or None, shape (Mw,)
        ``max(||(W_prox_i, Z_prox)||, ||(W, ..., Z)||)`` and ``rho ||(W_dual_i, Z_dual)||``: what the
        relative tolerance multiplies.
    rho_changes, rho_hold : torch.Tensor of int64 or None, shape (Mw,), or (1,) when coupled
        How often each ``rho`` has changed, and the step before which it may not change again (see
        ``solvers.admm._balance_rho``). None until the first balancing.
    """

    W: torch.Tensor
    Z: torch.Tensor
    W_dual: torch.Tensor
    Z_dual: torch.Tensor
    W_prox: torch.Tensor
    Z_prox: torch.Tensor
    Z_prox_input: torch.Tensor
    rho: torch.Tensor
    primal_residual: torch.Tensor | None = None
    dual_residual: torch.Tensor | None = None
    primal_scale: torch.Tensor | None = None
    dual_scale: torch.Tensor | None = None
    rho_changes: torch.Tensor | None = None
    rho_hold: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> "ADMMState":
        """The state restricted to the columns where ``keep`` (bool, shape (Mw,)) is True."""
        def pick(value):
            if value is None:
                return None
            if value.ndim == 3:
                return value[:, :, keep]
            return value[:, keep] if value.ndim == 2 else value[keep]

        return ADMMState(**{field.name: pick(getattr(self, field.name))
                            for field in dataclasses.fields(self)})

    def dual(self) -> torch.Tensor:
        """``rho * (Z_prox_input - Z_prox)``, shape (P, Mw): a subgradient of ``f`` at ``Z_prox``."""
        return self.rho * (self.Z_prox_input - self.Z_prox)


def _column_norms(*blocks: torch.Tensor) -> torch.Tensor:
    """Norms per column (last axis) over every block; a (k, N, Mw) block counts its k copies."""
    total = 0.0
    for block in blocks:
        squares = block * block
        total = total + (squares.sum(dim=(0, 1)) if block.ndim == 3 else squares.sum(dim=0))
    return torch.sqrt(total)


def admm_step(data: ADMMData, state: ADMMState, *, alpha: float,
              with_residuals: bool) -> ADMMState:
    """One step of over-relaxed graph-form ADMM (see the module docstring).

    Parameters
    ----------
    data : ADMMData
    state : ADMMState
    alpha : float
        Over-relaxation, in (0, 2).
    with_residuals : bool
        Compute the residuals and their scales (a few reductions over (P, Mw); the loop asks for them
        only when it checks convergence).

    Returns
    -------
    ADMMState
    """
    rho = state.rho
    W_prox = torch.stack([term.prox(state.W - W_dual, rho)
                          for term, W_dual in zip(data.weights, state.W_dual)])
    Z_prox_input = state.Z - state.Z_dual
    Z_prox = Z_prox_input
    for term in data.outputs:
        Z_prox = term.prox(Z_prox, Z_prox_input, rho)
    # The projection's arguments: the relaxed prox points plus the scaled duals. The new scaled duals
    # are these arguments minus their projection (W_dual + W_relaxed - W, written with one pass).
    W_target = torch.lerp(state.W.expand_as(W_prox), W_prox, alpha).add_(state.W_dual)
    Z_target = torch.lerp(state.Z, Z_prox, alpha).add_(state.Z_dual)
    W, Z = data.projection(W_target.sum(dim=0) if W_target.shape[0] > 1 else W_target[0], Z_target)
    W_dual = W_target.sub_(W)
    Z_dual = Z_target.sub_(Z)
    residuals = {}
    if with_residuals:
        rho_row = rho.reshape(-1)
        copies = math.sqrt(W_prox.shape[0])
        residuals = dict(
            primal_residual=_column_norms(W_prox - W, Z_prox - Z),
            dual_residual=rho_row * _column_norms(copies * (W - state.W), Z - state.Z),
            primal_scale=torch.maximum(_column_norms(W_prox, Z_prox), _column_norms(copies * W, Z)),
            dual_scale=rho_row * _column_norms(W_dual, Z_dual))
    return ADMMState(W=W, Z=Z, W_dual=W_dual, Z_dual=Z_dual, W_prox=W_prox, Z_prox=Z_prox,
                     Z_prox_input=Z_prox_input, rho=rho, rho_changes=state.rho_changes,
                     rho_hold=state.rho_hold, **residuals)


def prepare(form: GraphForm, *, dtype: torch.dtype, device) -> ADMMData:
    """Move ``form`` to ``device``, scale it, and factor its projection (the setup of a solve).

    Equilibration: every column of ``X`` is scaled to the norm ``EQUILIBRATION_GAIN * sqrt(min(P, N) /
    N)``, so that the root mean square of the nonzero singular values of ``X_hat`` is
    ``EQUILIBRATION_GAIN``: the weight of ``Z`` against ``W`` in the projection. When a weight term
    cannot take a per-row scaling of ``W`` (a norm ball, say), one scalar (the root mean square of
    those scales) is used for every column. The rows are not scaled: a row scaling other than a scalar
    would turn the budget balls into ellipsoids, whose projection has no closed form. The outputs are
    divided by the root mean square of the output terms' targets (a scalar, which keeps balls balls and
    leaves the dual variable of ``Z`` unchanged).
    """
    X = form.X.detach().to(device=device, dtype=torch.float64) if isinstance(form.X, torch.Tensor) \
        else torch.as_tensor(np.asarray(form.X, dtype=np.float64), device=device)
    P, N = X.shape
    M = form.shape[2]
    norms = torch.linalg.vector_norm(X, dim=0)
    target = EQUILIBRATION_GAIN * math.sqrt(min(P, N) / N) if N else 1.0
    column_scale = torch.where(norms > 0, target / torch.clamp(norms, min=1e-300),
                               torch.ones_like(norms))
    if not form.row_scalable and N:
        positive = norms > 0
        uniform = (target / torch.sqrt(torch.mean(norms[positive] ** 2)) if bool(positive.any())
                   else torch.tensor(1.0, dtype=torch.float64, device=device))
        column_scale = torch.full_like(norms, float(uniform))
    squares = sum(term.square_sum() for term in form.outputs)
    rms = math.sqrt(squares / max(P * M, 1))
    output_scale = rms if rms > 0 else 1.0
    row_scale = column_scale[:, None]
    outputs = tuple(term.prepare(device=device, dtype=dtype, output_scale=output_scale)
                    for term in form.outputs)
    weights = tuple(term.prepare(device=device, dtype=dtype, row_scale=row_scale,
                                 output_scale=output_scale) for term in form.weights)
    target_squares = sum(torch.where(term.mask, term.target, 0.0).to(torch.float64) ** 2
                         for term in outputs if term.kind.fits_target)
    target_norms = (torch.sqrt(target_squares.sum(dim=0)) if torch.is_tensor(target_squares)
                    else torch.zeros(M, dtype=torch.float64, device=device))
    return ADMMData(
        projection=GraphProjection.factor(X * column_scale, dtype, copies=len(weights)),
        column_scale=row_scale.to(dtype),
        output_scale=output_scale,
        outputs=outputs, weights=weights,
        violation_scale=form.violation_scale / output_scale,
        coupled=form.coupled,
        target_norms=target_norms.to(dtype),
        columns=torch.arange(M, device=X.device))


def _default_rho(data: ADMMData) -> torch.Tensor:
    """Per column ``10 sqrt(N) median(thresholds) / ||Y[:, m]||`` (scaled data).

    At a solution ``X_hat^T Lambda`` is about the size of the thresholds on the support and the scaled
    dual is ``-Lambda / rho``, so ``rho`` about ``||thresholds|| / ||Y[:, m]||`` makes the scaled dual
    about the size of ``Z``. The thresholds are the first weight term's (an l1 or group penalty; 1
    for other terms); the median ignores unpenalized rows and the huge thresholds of columns that
    equilibration scaled up; the factor 10 was the fastest start on ReLU layers of sizes 60 x 20 to
    2000 x 400 (both budgets and the squared loss). A column whose target is (nearly) zero is given
    the ``rho`` of a column of average size.
    """
    thresholds = next((term.thresholds for term in data.weights if term.thresholds is not None), None)
    positive = thresholds[thresholds > 0] if thresholds is not None else None
    N = data.projection.X.shape[1]
    threshold_norm = (float(positive.median()) * math.sqrt(N)
                      if positive is not None and positive.numel() else 1.0)
    # The targets are scaled to a root mean square of 1, so an average column has norm sqrt(P).
    P = data.projection.X.shape[0]
    floor = 0.1 * math.sqrt(max(P, 1))
    norms = data.target_norms
    if data.coupled:
        target_norm = torch.linalg.vector_norm(norms) / math.sqrt(max(norms.shape[0], 1))
        return (10.0 * threshold_norm / torch.clamp(target_norm, min=floor)).reshape(1, 1)
    return 10.0 * threshold_norm / torch.clamp(norms.reshape(1, -1), min=floor)


def initial_state(data: ADMMData, *, rho=None, warm_start=None) -> ADMMState:
    """The starting state: zeros, or a previous solution (``W``, optionally ``dual`` and ``rho``).

    Parameters
    ----------
    data : ADMMData
    rho : float or None
        The starting penalty; None picks one per column (see ``_default_rho``), or the warm start's.
    warm_start : object with attributes ``W`` (N, M) and optionally ``dual`` (P, M) and ``rho`` (M,)
        Typically an :class:`ADMMResult` of a nearby problem. ``W`` and ``dual`` are in the original
        units; the state is built on the graph (``Z = X W``, every copy at ``W``) with the scaled
        duals that a solution would have: ``Z_dual = -dual / rho`` and
        ``W_dual_i = -X_hat^T Z_dual / k``.
    """
    X = data.projection.X
    dtype, device = X.dtype, X.device
    P, N = X.shape
    M = data.columns.numel()
    copies = len(data.weights)
    if warm_start is not None:
        _check_warm_start(warm_start, N=N, P=P, M=M)
    start_rho = _default_rho(data)
    if warm_start is not None and getattr(warm_start, "rho", None) is not None:
        previous = _as_tensor(warm_start.rho, dtype, device)
        start_rho = previous.mean().reshape(1, 1) if data.coupled else previous.reshape(1, M)
    if rho is not None:
        start_rho = torch.full_like(start_rho, float(rho))
    start_rho = start_rho.to(dtype)
    if warm_start is None:
        W = torch.zeros((N, M), dtype=dtype, device=device)
        Z = torch.zeros((P, M), dtype=dtype, device=device)
        W_dual, Z_dual = torch.zeros((copies, N, M), dtype=dtype, device=device), torch.zeros_like(Z)
    else:
        W_given = _as_tensor(warm_start.W, dtype, device)
        W = W_given / (data.column_scale * data.output_scale)
        Z = X @ W
        dual = getattr(warm_start, "dual", None)
        if dual is None:
            Z_dual = torch.zeros_like(Z)
        else:
            Z_dual = -_as_tensor(dual, dtype, device) / start_rho
        W_dual = (-(X.T @ Z_dual) / copies).expand(copies, N, M).clone()
    return ADMMState(W=W, Z=Z, W_dual=W_dual, Z_dual=Z_dual, W_prox=W.expand(copies, N, M).clone(),
                     Z_prox=Z, Z_prox_input=Z - Z_dual, rho=start_rho)


def _check_warm_start(warm_start, *, N: int, P: int, M: int) -> None:
    expected = {"W": (N, M), "dual": (P, M), "rho": (M,)}
    if getattr(warm_start, "W", None) is None:
        raise ValueError("warm_start needs an attribute W of shape (N, M) (e.g. a previous ADMMResult).")
    for name, shape in expected.items():
        value = getattr(warm_start, name, None)
        if value is not None and tuple(value.shape) != shape:
            raise ValueError(f"warm_start.{name} must have shape {shape}; got {tuple(value.shape)}.")


def _as_tensor(values, dtype: torch.dtype, device) -> torch.Tensor:
    """A warm start's array (numpy or a tensor on any device) on the solve's device and dtype."""
    if isinstance(values, torch.Tensor):
        return values.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(values), dtype=dtype, device=device)
