"""Batched graph-form ADMM for :class:`solvers.graph_form.GraphForm`, in torch on a CPU or a GPU.

The algorithm is Parikh and Boyd's graph projection splitting (as in POGS): with scaled duals
``(W_dual, Z_dual)`` and penalty ``rho`` (one per column, or one for the coupled ``"budget"`` loss),

.. code-block:: text

    W_prox = soft_threshold(W - W_dual, l1_weights / rho)          prox of g
    Z_prox = prox_{f / rho}(Z - Z_dual)                             prox of f, closed form
    W_rel  = alpha W_prox + (1 - alpha) W,   Z_rel likewise        over-relaxation
    (W, Z) = projection onto {Z = X W} of (W_rel + W_dual, Z_rel + Z_dual)
    W_dual += W_rel - W,   Z_dual += Z_rel - Z

:class:`ADMMState` is the state, :func:`admm_step` one step of it, :func:`solve_graph_form` the loop
(stopping, adaptive ``rho``, retiring converged columns, the result). ``docs/admm.md`` has the math.
"""

from __future__ import annotations

import dataclasses
import math
import time

import numpy as np
import torch

from .admm_operators import GraphProjection, prox_output_loss, soft_threshold
from .graph_form import GraphForm, output_violation

__all__ = ["ADMMData", "ADMMState", "ADMMResult", "admm_step", "prepare", "initial_state",
           "solve_graph_form"]

# Residual balancing changes rho only when the balance is off by more than this factor (as OSQP does),
# so that rho settles and the iteration keeps its convergence guarantee in practice.
RHO_CHANGE_THRESHOLD = 5.0
# The in-loop feasibility check (in the iteration's dtype) uses this fraction of violation_tol.
VIOLATION_MARGIN = 0.9
# rho is kept within this factor of its starting value.
RHO_RANGE = 1e6


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
                     Z_prox_input=Z_prox_input, rho=rho, **residuals)


def prepare(form: GraphForm, *, dtype: torch.dtype, device) -> ADMMData:
    """Move ``form`` to ``device``, scale it, and factor its projection (the setup of a solve).

    Equilibration: every column of ``X`` is scaled to the norm ``sqrt(min(P, N) / N)``, so that the
    mean squared nonzero singular value of ``X_hat`` is 1 and ``W`` and ``Z`` weigh alike in the
    projection. The rows are not scaled: a row scaling other than a scalar would turn the budget balls
    into ellipsoids, whose projection has no closed form. The outputs are divided by the root mean
    square of ``Y`` (a scalar, which keeps balls balls and leaves the dual variable of ``Z`` unchanged).
    """
    data = form.tensors(device=device)
    X = data["X"]
    P, N = X.shape
    M = data["Y"].shape[1]
    norms = torch.linalg.vector_norm(X, dim=0)
    target = math.sqrt(min(P, N) / N) if N else 1.0
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
    start_rho = _default_rho(data)
    if warm_start is not None and getattr(warm_start, "rho", None) is not None:
        previous = torch.as_tensor(np.asarray(_to_numpy(warm_start.rho)), dtype=dtype, device=device)
        start_rho = previous.mean().reshape(1, 1) if coupled else previous.reshape(1, M)
    if rho is not None:
        start_rho = torch.full_like(start_rho, float(rho))
    start_rho = start_rho.to(dtype)
    if warm_start is None:
        W = torch.zeros((N, M), dtype=dtype, device=device)
        Z = torch.zeros((P, M), dtype=dtype, device=device)
        W_dual, Z_dual = torch.zeros_like(W), torch.zeros_like(Z)
    else:
        W_given = torch.as_tensor(_to_numpy(warm_start.W), dtype=dtype, device=device)
        W = W_given / (data.column_scale * data.output_scale)
        Z = X @ W
        dual = getattr(warm_start, "dual", None)
        if dual is None:
            Z_dual = torch.zeros_like(Z)
        else:
            Z_dual = -torch.as_tensor(_to_numpy(dual), dtype=dtype, device=device) / start_rho
        W_dual = -(X.T @ Z_dual)
    return ADMMState(W=W, Z=Z, W_dual=W_dual, Z_dual=Z_dual, W_prox=W, Z_prox=Z,
                     Z_prox_input=Z - Z_dual, rho=start_rho)


def _to_numpy(values):
    if isinstance(values, torch.Tensor):
        return values.detach().cpu().numpy()
    return np.asarray(values)


def _converged(data: ADMMData, state: ADMMState, *, abs_tol: float, rel_tol: float,
               violation_tol: float) -> torch.Tensor:
    """Which columns are done: residuals within tolerance and the reported point feasible.

    A column is done when ``primal_residual <= sqrt(N + P) abs_tol + rel_tol primal_scale``, likewise
    for the dual (Boyd et al. 2011, section 3.3.1), and the point it would report, the soft-thresholded
    iterate, violates the constraints by at most ``violation_tol`` (relative). The check runs in the
    iteration's dtype against ``VIOLATION_MARGIN * violation_tol``, so that rounding cannot lift the
    result's float64 assessment over ``violation_tol``. The coupled ``"budget"`` loss is judged on the
    whole layer.
    """
    P, N = data.projection.X.shape
    columns = data.Y.shape[1]
    residuals = (state.primal_residual, state.primal_scale, state.dual_residual, state.dual_scale)
    dimension = N + P
    if data.loss == "budget":
        residuals = tuple(torch.linalg.vector_norm(value).expand(columns) for value in residuals)
        dimension *= columns
    primal, primal_scale, dual, dual_scale = residuals
    absolute = math.sqrt(dimension) * abs_tol
    done = (primal <= absolute + rel_tol * primal_scale) & (dual <= absolute + rel_tol * dual_scale)
    if not bool(done.any()):
        return done
    candidates = data if bool(done.all()) else data.select(done)
    violation = candidates.violation(data.projection.X @ state.W_prox[:, done])
    feasible = violation <= VIOLATION_MARGIN * violation_tol
    if data.loss == "budget":
        feasible = feasible.all().expand(columns)
    done[done.clone()] = feasible
    return done


def _balance_rho(state: ADMMState, *, coupled: bool, bounds: tuple[float, float]) -> ADMMState:
    """Residual balancing: scale ``rho`` by ``sqrt(relative primal / relative dual residual)``.

    Only columns whose balance is off by more than ``RHO_CHANGE_THRESHOLD`` change; the scaled duals are
    divided by the same factor so that the unscaled dual is unchanged. For the coupled ``"budget"`` loss
    one ``rho`` is balanced on the whole layer (see :func:`prox_output_loss`).
    """
    tiny = torch.finfo(state.rho.dtype).tiny
    parts = (state.primal_residual, state.primal_scale, state.dual_residual, state.dual_scale)
    if coupled:
        parts = tuple(torch.linalg.vector_norm(value).reshape(1) for value in parts)
    primal, primal_scale, dual, dual_scale = parts
    ratio = torch.sqrt((primal / torch.clamp(primal_scale, min=tiny)) /
                       torch.clamp(dual / torch.clamp(dual_scale, min=tiny), min=tiny))
    change = (ratio > RHO_CHANGE_THRESHOLD) | (ratio < 1.0 / RHO_CHANGE_THRESHOLD)
    if not bool(change.any()):
        return state
    old_rho = state.rho.reshape(-1)
    new_rho = torch.where(change, torch.clamp(old_rho * ratio, min=bounds[0], max=bounds[1]), old_rho)
    factor = (new_rho / old_rho).reshape(1, -1)
    return dataclasses.replace(state, rho=new_rho.reshape(state.rho.shape),
                               W_dual=state.W_dual / factor, Z_dual=state.Z_dual / factor)


@dataclasses.dataclass(frozen=True)
class ADMMResult:
    """The outcome of :func:`solve_graph_form`.

    ``W``, ``Z`` and ``dual`` are torch tensors (on the solve's device, in its dtype) when the form's
    ``X`` was a tensor, numpy arrays otherwise; the per-column diagnostics are numpy arrays.

    Attributes
    ----------
    W : array, shape (N, M)
        The soft-thresholded iterate, in the original units: pruned entries are exactly zero.
    Z : array, shape (P, M)
        ``X @ W``, recomputed (in float64) from the returned ``W``.
    dual : array, shape (P, M)
        ``Lambda``, a subgradient of ``f`` at the last prox point, so that ``X^T Lambda`` is in
        ``-dg(W)`` at a solution: ``2 lam (Z - Y)`` on the mask for ``"squared"``,
        ``nu (Z - Y) / ||Z - Y||`` on the mask for the budgets (``nu >= 0`` the budget's multiplier),
        and ``mu >= 0``, the multiplier of ``Z <= V``, off the mask. The sign convention of CVXPY's
        constraint duals.
    status : str
        ``"optimal"`` when every column met the tolerances and the returned ``W`` violates the
        constraints by at most ``violation_tol`` (checked again in float64); ``"optimal_inaccurate"``
        when the tolerances were met but that check fails; ``"max_iterations"`` otherwise.
    iterations : numpy.ndarray of int, shape (M,)
        Steps taken by each column.
    primal_residual, dual_residual : numpy.ndarray, shape (M,)
        The residuals of each column's last check (of the scaled problem, the quantities compared with
        the tolerances).
    converged : numpy.ndarray of bool, shape (M,)
    rho : numpy.ndarray, shape (M,)
        The final penalty per column (scaled problem's units); a warm start reuses it.
    objective : float
        ``g(W)`` plus the squared loss if any, in float64.
    violation : float
        The relative violation of ``W`` (see :class:`GraphForm`), in float64.
    column_violation : numpy.ndarray, shape (M,)
    solve_time, setup_time : float
        Seconds of iterations and of setup (scaling, transfer, factorization).
    """

    W: object
    Z: object
    dual: object
    status: str
    iterations: np.ndarray
    primal_residual: np.ndarray
    dual_residual: np.ndarray
    converged: np.ndarray
    rho: np.ndarray
    objective: float
    violation: float
    column_violation: np.ndarray
    solve_time: float
    setup_time: float


class _Collected:
    """Full-size outputs that columns are written into as they retire."""

    def __init__(self, data: ADMMData):
        X = data.projection.X
        P, N = X.shape
        M = data.Y.shape[1]
        self.W = torch.zeros((N, M), dtype=X.dtype, device=X.device)
        self.dual = torch.zeros((P, M), dtype=X.dtype, device=X.device)
        self.rho = torch.zeros(M, dtype=X.dtype, device=X.device)
        self.iterations = np.zeros(M, dtype=np.int64)
        self.primal_residual = np.full(M, np.nan)
        self.dual_residual = np.full(M, np.nan)
        self.converged = np.zeros(M, dtype=bool)

    def store(self, data: ADMMData, state: ADMMState, *, iteration: int, converged: bool) -> None:
        """Write the columns of ``data`` from ``state``, in the original units."""
        columns = data.columns
        index = columns.cpu().numpy()
        self.W[:, columns] = state.W_prox * (data.column_scale * data.output_scale)
        self.dual[:, columns] = state.dual()
        self.rho[columns] = state.rho.reshape(-1).expand(columns.numel())
        self.iterations[index] = iteration
        if state.primal_residual is not None:
            self.primal_residual[index] = state.primal_residual.cpu().numpy()
            self.dual_residual[index] = state.dual_residual.cpu().numpy()
        self.converged[index] = converged


def _check_options(alpha, abs_tol, rel_tol, violation_tol, max_iterations, check_interval, rho):
    if not 0 < alpha < 2:
        raise ValueError(f"alpha must be in (0, 2) (over-relaxation; 1.6 is typical); got {alpha}.")
    for name, value in (("abs_tol", abs_tol), ("rel_tol", rel_tol), ("violation_tol", violation_tol)):
        if not (math.isfinite(value) and value >= 0):
            raise ValueError(f"{name} must be a finite number >= 0; got {value}.")
    for name, value in (("max_iterations", max_iterations), ("check_interval", check_interval)):
        if int(value) != value or value < 1:
            raise ValueError(f"{name} must be a positive integer; got {value}.")
    if rho is not None and not (math.isfinite(rho) and rho > 0):
        raise ValueError(f"rho must be a positive number or None (automatic); got {rho}.")


def _resolve_dtype(dtype) -> torch.dtype:
    named = {"float32": torch.float32, "float64": torch.float64}
    resolved = named.get(dtype, dtype)
    if resolved not in (torch.float32, torch.float64):
        raise ValueError(f"dtype must be torch.float32, torch.float64, 'float32' or 'float64'; "
                         f"got {dtype!r}.")
    return resolved


def solve_graph_form(form: GraphForm, *, rho: float | None = None, alpha: float = 1.6,
                     abs_tol: float = 1e-6, rel_tol: float = 3e-5, violation_tol: float = 1e-4,
                     max_iterations: int = 20000, check_interval: int = 10,
                     dtype=torch.float64, device="cpu", warm_start=None,
                     adaptive_rho: bool = True, verbose: bool = False) -> ADMMResult:
    """Solve ``minimize g(W) + f(Z) subject to Z = X @ W`` (a :class:`GraphForm`) by batched ADMM.

    Parameters
    ----------
    form : GraphForm
        The program; see :class:`solvers.graph_form.GraphForm`.
    rho : float, optional
        The starting penalty; default: one per column from the data's scales. Adapted unless
        ``adaptive_rho=False``.
    alpha : float
        Over-relaxation, in (0, 2).
    abs_tol, rel_tol : float
        Tolerances of the primal and dual residuals (Boyd et al. 2011, section 3.3.1), on the scaled
        problem (outputs divided by the root mean square of ``Y``).
    violation_tol : float
        A column also needs its soft-thresholded iterate to violate the constraints by at most this
        (relative, as :meth:`GraphForm.violation`) before it stops.
    max_iterations : int
        Steps at most per column; columns still running then are reported as ``"max_iterations"``.
    check_interval : int
        Steps between convergence checks (and ``rho`` updates).
    dtype : torch.float32, torch.float64, "float32" or "float64"
        The dtype of the iterations; the setup (factorization) and the final assessment are float64.
    device : str or torch.device
        ``"cpu"``, ``"cuda"``, ...: the same code runs on any.
    warm_start : ADMMResult or object with ``W`` (and optionally ``dual``, ``rho``), optional
        A previous solution to start from.
    adaptive_rho : bool
        Balance the residuals by changing ``rho`` (per column; one ``rho`` for ``"budget"``).
    verbose : bool
        Print the progress at every check.

    Returns
    -------
    ADMMResult

    Examples
    --------
    >>> import numpy as np
    >>> from solvers.graph_form import GraphForm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 8)); Y = np.maximum(X @ rng.standard_normal((8, 3)), 0)
    >>> form = GraphForm(X, Y, active=Y > 0, loss="squared", lam=10.0)
    >>> result = solve_graph_form(form)
    >>> result.status
    'optimal'
    """
    _check_options(alpha, abs_tol, rel_tol, violation_tol, max_iterations, check_interval, rho)
    dtype = _resolve_dtype(dtype)
    device = torch.device(device)
    start = time.perf_counter()
    data = prepare(form, dtype=dtype, device=device)
    _synchronize(device)
    setup_time = time.perf_counter() - start
    start = time.perf_counter()
    state = initial_state(data, rho=rho, warm_start=warm_start)
    rho_bounds = (float(state.rho.min()) / RHO_RANGE, float(state.rho.max()) * RHO_RANGE)
    collected = _Collected(data)
    coupled = form.loss == "budget"
    iteration = 0
    while data.columns.numel() and iteration < max_iterations:
        iteration += 1
        check = iteration % check_interval == 0 or iteration == max_iterations
        state = admm_step(data, state, alpha=alpha, with_residuals=check)
        if not check:
            continue
        done = _converged(data, state, abs_tol=abs_tol, rel_tol=rel_tol,
                          violation_tol=violation_tol)
        if verbose:
            _report_progress(iteration, data, state, done)
        if bool(done.all()):
            collected.store(data, state, iteration=iteration, converged=True)
            data = data.select(~done)
            break
        if bool(done.any()):
            collected.store(data.select(done), state.select(done), iteration=iteration,
                            converged=True)
            data, state = data.select(~done), state.select(~done)
        if adaptive_rho:
            state = _balance_rho(state, coupled=coupled, bounds=rho_bounds)
    if data.columns.numel():
        collected.store(data, state, iteration=iteration, converged=False)
    _synchronize(device)
    solve_time = time.perf_counter() - start
    return _result(form, collected, dtype=dtype, violation_tol=violation_tol,
                   solve_time=solve_time, setup_time=setup_time)


def _synchronize(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def _report_progress(iteration: int, data: ADMMData, state: ADMMState, done: torch.Tensor) -> None:
    relative_primal = state.primal_residual / torch.clamp(state.primal_scale, min=1e-300)
    relative_dual = state.dual_residual / torch.clamp(state.dual_scale, min=1e-300)
    print(f"iteration {iteration:6d}  columns {data.columns.numel():5d}  done {int(done.sum()):5d}  "
          f"max relative primal {float(relative_primal.max()):.2e}  "
          f"dual {float(relative_dual.max()):.2e}  "
          f"rho [{float(state.rho.min()):.2e}, {float(state.rho.max()):.2e}]")


def _result(form: GraphForm, collected: _Collected, *, dtype, violation_tol: float,
            solve_time: float, setup_time: float) -> ADMMResult:
    """Assess the collected ``W`` in float64 and package it in the kind of array the form holds."""
    objective, column_violation, Z = form.assess(collected.W)
    violation = float(column_violation.max(initial=0.0))
    if not collected.converged.all():
        status = "max_iterations"
    else:
        status = "optimal" if violation <= violation_tol else "optimal_inaccurate"
    as_tensors = isinstance(form.X, torch.Tensor)

    def output(value: torch.Tensor):
        value = value.to(dtype)
        return value if as_tensors else value.cpu().numpy()

    return ADMMResult(
        W=output(collected.W), Z=output(Z), dual=output(collected.dual), status=status,
        iterations=collected.iterations, primal_residual=collected.primal_residual,
        dual_residual=collected.dual_residual, converged=collected.converged,
        rho=collected.rho.cpu().numpy(), objective=objective, violation=violation,
        column_violation=column_violation, solve_time=solve_time, setup_time=setup_time)
