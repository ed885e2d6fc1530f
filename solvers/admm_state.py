"""The state of graph-form ADMM and its step: :class:`ADMMData`, :class:`ADMMState`, :func:`admm_step`.

One step (Parikh and Boyd's graph projection splitting, as in POGS), with scaled duals
``(W_dual, Z_dual)`` and penalty ``rho`` (one per column, or one for the coupled ``"budget"`` loss):

.. code-block:: text

    W_prox = soft_threshold(W - W_dual, l1_weights / rho)          prox of g
    Z_prox = prox_{f / rho}(Z - Z_dual)                             prox of f, closed form
    W_rel  = alpha W_prox + (1 - alpha) W,   Z_rel likewise        over-relaxation
    (W, Z) = projection onto {Z = X W} of (W_rel + W_dual, Z_rel + Z_dual)
    W_dual += W_rel - W,   Z_dual += Z_rel - Z

:func:`prepare` builds the data of a solve (transfer, equilibration, factorization) and
:func:`initial_state` its starting state; the loop is :func:`solvers.admm.solve_graph_form`.
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .admm_operators import GraphProjection, prox_output_loss, soft_threshold
from .graph_form import GraphForm, output_violation

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
    (per row) and ``Z_hat = Z / output_scale`` with ``X_hat = X * column_scale`` (per column). The
    column scaling (equilibration) compensates in the l1 weights; the scalar output scaling keeps balls
    balls and makes the absolute tolerance independent of the data's units.

    Attributes
    ----------
    projection : GraphProjection
        The factored projection for ``X_hat``, shape (P, N).
    column_scale : torch.Tensor, shape (N, 1)
    output_scale : float
    thresholds : torch.Tensor, shape (N, 1)
        ``l1_weights * column_scale``: the l1 weights of the scaled program.
    loss : str
    lam : float or None
        ``lam * output_scale`` for the squared loss.
    Y, V : torch.Tensor, shape (P, Mw)
        Divided by ``output_scale``.
    active : torch.Tensor of bool, shape (P, Mw)
    upper, active_weight, target_shift : torch.Tensor, shape (P, Mw)
        What the prox of ``f`` needs (see :func:`prox_output_loss`): ``+inf`` on the mask and ``V``
        off it, the mask as 0/1, and ``-Y`` on the mask (0 off it). ``upper`` and ``active_weight``
        are None when the mask is all True.
    epsilon : torch.Tensor or None
        0-d or shape (Mw,), divided by ``output_scale``.
    budget_scale : torch.Tensor or None
        Denominators of the relative budget violation (0-d or (Mw,)).
    inequality_scale : float
    columns : torch.Tensor of int64, shape (Mw,)
        The columns of the full problem that these are.
    """

    projection: GraphProjection
    column_scale: torch.Tensor
    output_scale: float
    thresholds: torch.Tensor
    loss: str
    lam: float | None
    Y: torch.Tensor
    V: torch.Tensor
    active: torch.Tensor
    epsilon: torch.Tensor | None
    upper: torch.Tensor | None
    active_weight: torch.Tensor | None
    target_shift: torch.Tensor
    budget_scale: torch.Tensor | None
    inequality_scale: float
    columns: torch.Tensor

    def select(self, keep: torch.Tensor) -> "ADMMData":
        """The same data restricted to the columns where ``keep`` (bool, shape (Mw,)) is True."""
        per_column = self.loss == "column_budget"

        def pick(value):
            return None if value is None else value[:, keep]

        return dataclasses.replace(
            self, Y=self.Y[:, keep], V=self.V[:, keep], active=self.active[:, keep],
            upper=pick(self.upper), active_weight=pick(self.active_weight),
            target_shift=self.target_shift[:, keep],
            epsilon=self.epsilon[keep] if per_column else self.epsilon,
            budget_scale=self.budget_scale[keep] if per_column else self.budget_scale,
            columns=self.columns[keep])

    def violation(self, Z_hat: torch.Tensor) -> torch.Tensor:
        """Relative violation per column of the scaled outputs ``Z_hat`` (P, Mw): see GraphForm."""
        return output_violation(Z_hat, self.Y, self.active, self.V, loss=self.loss,
                                epsilon=self.epsilon, budget_scale=self.budget_scale,
                                inequality_scale=self.inequality_scale)


@dataclasses.dataclass(frozen=True)
class ADMMState:
    """The iterate of graph-form ADMM on the columns being solved (scaled variables, see ADMMData).

    Attributes
    ----------
    W, Z : torch.Tensor, shapes (N, Mw), (P, Mw)
        The last projection: ``Z = X_hat @ W``.
    W_dual, Z_dual : torch.Tensor, shapes (N, Mw), (P, Mw)
        Scaled duals (the dual variables divided by ``rho``).
    W_prox : torch.Tensor, shape (N, Mw)
        The last soft-thresholded iterate: the point a result reports (exact zeros).
    Z_prox, Z_prox_input : torch.Tensor, shape (P, Mw)
        The last prox of ``f`` and its argument; ``rho * (Z_prox_input - Z_prox)`` is a subgradient of
        ``f`` at ``Z_prox``, the dual estimate a result reports.
    rho : torch.Tensor, shape (1, Mw), or (1, 1) for the coupled ``"budget"`` loss
    primal_residual, dual_residual : torch.Tensor or None, shape (Mw,)
        Boyd et al.'s residuals of the last step, per column: ``||(W_prox, Z_prox) - (W, Z)||`` and
        ``rho ||(W, Z) - (W, Z)_previous||``. None when the step skipped them.
    primal_scale, dual_scale : torch.Tensor or None, shape (Mw,)
        ``max(||(W_prox, Z_prox)||, ||(W, Z)||)`` and ``rho ||(W_dual, Z_dual)||``: what the relative
        tolerance multiplies.
    rho_changes, rho_hold : torch.Tensor of int64 or None, shape (Mw,), or (1,) for ``"budget"``
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
            return value[:, keep] if value.ndim == 2 else value[keep]

        return ADMMState(**{field.name: pick(getattr(self, field.name))
                            for field in dataclasses.fields(self)})

    def dual(self) -> torch.Tensor:
        """``rho * (Z_prox_input - Z_prox)``, shape (P, Mw): a subgradient of ``f`` at ``Z_prox``."""
        return self.rho * (self.Z_prox_input - self.Z_prox)


def _column_norms(*blocks: torch.Tensor) -> torch.Tensor:
    return torch.sqrt(sum((block * block).sum(dim=0) for block in blocks))


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
    W_prox = soft_threshold(state.W - state.W_dual, data.thresholds / rho)
    Z_prox_input = state.Z - state.Z_dual
    Z_prox = prox_output_loss(Z_prox_input, rho, loss=data.loss, upper=data.upper,
                              active_weight=data.active_weight, target_shift=data.target_shift,
                              epsilon=data.epsilon, lam=data.lam)
    # The projection's arguments: the relaxed prox points plus the scaled duals. The new scaled duals
    # are these arguments minus their projection (W_dual + W_relaxed - W, written with one pass).
    W_target = torch.lerp(state.W, W_prox, alpha).add_(state.W_dual)
    Z_target = torch.lerp(state.Z, Z_prox, alpha).add_(state.Z_dual)
    W, Z = data.projection(W_target, Z_target)
    W_dual = W_target.sub_(W)
    Z_dual = Z_target.sub_(Z)
    residuals = {}
    if with_residuals:
        rho_row = rho.reshape(-1)
        residuals = dict(
            primal_residual=_column_norms(W_prox - W, Z_prox - Z),
            dual_residual=rho_row * _column_norms(W - state.W, Z - state.Z),
            primal_scale=torch.maximum(_column_norms(W_prox, Z_prox), _column_norms(W, Z)),
            dual_scale=rho_row * _column_norms(W_dual, Z_dual))
    return ADMMState(W=W, Z=Z, W_dual=W_dual, Z_dual=Z_dual, W_prox=W_prox, Z_prox=Z_prox,
                     Z_prox_input=Z_prox_input, rho=rho, rho_changes=state.rho_changes,
                     rho_hold=state.rho_hold, **residuals)


def prepare(form: GraphForm, *, dtype: torch.dtype, device) -> ADMMData:
    """Move ``form`` to ``device``, scale it, and factor its projection (the setup of a solve).

    Equilibration: every column of ``X`` is scaled to the norm ``EQUILIBRATION_GAIN * sqrt(min(P, N) /
    N)``, so that the root mean square of the nonzero singular values of ``X_hat`` is
    ``EQUILIBRATION_GAIN``: the weight of ``Z`` against ``W`` in the projection. The rows are not scaled: a row scaling other than a scalar would turn the budget balls
    into ellipsoids, whose projection has no closed form. The outputs are divided by the root mean
    square of ``Y`` (a scalar, which keeps balls balls and leaves the dual variable of ``Z`` unchanged).
    """
    data = form.tensors(device=device)
    X = data["X"]
    P, N = X.shape
    M = data["Y"].shape[1]
    norms = torch.linalg.vector_norm(X, dim=0)
    target = EQUILIBRATION_GAIN * math.sqrt(min(P, N) / N) if N else 1.0
    column_scale = torch.where(norms > 0, target / torch.clamp(norms, min=1e-300),
                               torch.ones_like(norms))
    rms = float(torch.linalg.vector_norm(data["Y"])) / math.sqrt(max(P * M, 1))
    output_scale = rms if rms > 0 else 1.0
    scaled = {"Y": data["Y"] / output_scale, "V": data["V"] / output_scale,
              "active": data["active"]}
    if form.epsilon is not None:
        scaled["epsilon"] = data["epsilon"] / output_scale
    budget_scale = form.budget_scale(scaled).to(dtype) if form.loss != "squared" else None
    active = scaled["active"]
    all_active = bool(active.all())
    Y = scaled["Y"].to(dtype)
    V = scaled["V"].to(dtype)
    return ADMMData(
        projection=GraphProjection.factor(X * column_scale, dtype),
        column_scale=column_scale[:, None].to(dtype),
        output_scale=output_scale,
        thresholds=(data["l1_weights"] * column_scale)[:, None].to(dtype),
        loss=form.loss,
        lam=form.lam * output_scale if form.lam is not None else None,
        Y=Y, V=V, active=active,
        upper=None if all_active else torch.where(active, math.inf, V),
        active_weight=None if all_active else active.to(dtype),
        target_shift=torch.where(active, -Y, 0.0),
        epsilon=scaled["epsilon"].to(dtype) if "epsilon" in scaled else None,
        budget_scale=budget_scale,
        inequality_scale=form.inequality_scale(scaled),
        columns=torch.arange(M, device=X.device))


def _default_rho(data: ADMMData) -> torch.Tensor:
    """Per column ``10 sqrt(N) median(thresholds) / ||Y[:, m]||`` (scaled data).

    At a solution ``X_hat^T Lambda`` is about the size of the thresholds on the support and the scaled
    dual is ``-Lambda / rho``, so ``rho`` about ``||thresholds|| / ||Y[:, m]||`` makes the scaled dual
    about the size of ``Z``. The median ignores unpenalized rows and the huge thresholds of columns
    that equilibration scaled up; the factor 10 was the fastest start on ReLU layers of sizes 60 x 20
    to 2000 x 400 (both budgets and the squared loss). A column whose target is (nearly) zero is
    given the ``rho`` of a column of average size.
    """
    positive = data.thresholds[data.thresholds > 0]
    threshold_norm = (float(positive.median()) * math.sqrt(data.thresholds.shape[0])
                      if positive.numel() else 1.0)
    # Y is scaled to a root mean square of 1, so an average column has norm sqrt(P).
    floor = 0.1 * math.sqrt(max(data.Y.shape[0], 1))
    if data.loss == "budget":
        target_norm = torch.linalg.vector_norm(data.Y) / math.sqrt(max(data.Y.shape[1], 1))
        return (10.0 * threshold_norm / torch.clamp(target_norm, min=floor)).reshape(1, 1)
    target_norm = torch.linalg.vector_norm(data.Y, dim=0, keepdim=True)
    return 10.0 * threshold_norm / torch.clamp(target_norm, min=floor)


def initial_state(data: ADMMData, *, rho=None, warm_start=None) -> ADMMState:
    """The starting state: zeros, or a previous solution (``W``, optionally ``dual`` and ``rho``).

    Parameters
    ----------
    data : ADMMData
    rho : float or None
        The starting penalty; None picks one per column (see ``_default_rho``), or the warm start's.
    warm_start : object with attributes ``W`` (N, M) and optionally ``dual`` (P, M) and ``rho`` (M,)
        Typically an :class:`ADMMResult` of a nearby problem. ``W`` and ``dual`` are in the original
        units; the state is built on the graph (``Z = X W``) with the scaled duals that a solution
        would have: ``Z_dual = -dual / rho`` and ``W_dual = -X_hat^T Z_dual``.
    """
    X = data.projection.X
    dtype, device = X.dtype, X.device
    P, N = X.shape
    M = data.Y.shape[1]
    coupled = data.loss == "budget"
    if warm_start is not None:
        _check_warm_start(warm_start, N=N, P=P, M=M)
    start_rho = _default_rho(data)
    if warm_start is not None and getattr(warm_start, "rho", None) is not None:
        previous = _as_tensor(warm_start.rho, dtype, device)
        start_rho = previous.mean().reshape(1, 1) if coupled else previous.reshape(1, M)
    if rho is not None:
        start_rho = torch.full_like(start_rho, float(rho))
    start_rho = start_rho.to(dtype)
    if warm_start is None:
        W = torch.zeros((N, M), dtype=dtype, device=device)
        Z = torch.zeros((P, M), dtype=dtype, device=device)
        W_dual, Z_dual = torch.zeros_like(W), torch.zeros_like(Z)
    else:
        W_given = _as_tensor(warm_start.W, dtype, device)
        W = W_given / (data.column_scale * data.output_scale)
        Z = X @ W
        dual = getattr(warm_start, "dual", None)
        if dual is None:
            Z_dual = torch.zeros_like(Z)
        else:
            Z_dual = -_as_tensor(dual, dtype, device) / start_rho
        W_dual = -(X.T @ Z_dual)
    return ADMMState(W=W, Z=Z, W_dual=W_dual, Z_dual=Z_dual, W_prox=W, Z_prox=Z,
                     Z_prox_input=Z - Z_dual, rho=start_rho)


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
