"""Batched graph-form ADMM for :class:`solvers.graph_form.GraphForm`, in torch on a CPU or a GPU.

:func:`solve_graph_form` is the loop: it prepares the data, runs :func:`solvers.admm_state.admm_step`
(the state and its step live in ``solvers/admm_state.py``), checks convergence every few steps, balances
``rho``, retires converged columns, and assesses the result. ``docs/admm.md`` has the math.
"""

from __future__ import annotations

import dataclasses
import inspect
import math
import time

import numpy as np
import torch

from .admm_state import ADMMData, ADMMState, admm_step, initial_state, prepare
from .graph_form import GraphForm

__all__ = ["ADMMResult", "check_options", "solve_graph_form"]

# Residual balancing changes rho only when the balance is off by more than this factor (as OSQP does),
# so that rho settles and the iteration keeps its convergence guarantee in practice.
RHO_CHANGE_THRESHOLD = 5.0
# The in-loop feasibility check (in the iteration's dtype) uses this fraction of violation_tol.
VIOLATION_MARGIN = 0.9
# rho is kept within this factor of its starting value.
RHO_RANGE = 1e6


def _converged(data: ADMMData, state: ADMMState, *, abs_tol: float, rel_tol: float,
               violation_tol: float) -> torch.Tensor:
    """Which columns are done: residuals within tolerance and the reported point feasible.

    A column is done when ``primal_residual <= sqrt(N + P) abs_tol + rel_tol primal_scale``, likewise
    for the dual (Boyd et al. 2011, section 3.3.1), and the point it would report, the soft-thresholded
    iterate, violates the constraints by at most ``violation_tol`` (relative). The check runs in the
    iteration's dtype against ``VIOLATION_MARGIN * violation_tol``, so that rounding cannot lift the
    result's float64 assessment over ``violation_tol``. The coupled ``"budget"`` loss is judged on the
    whole layer. With several weight terms, the reported point (the first term's prox) must also be
    within ``violation_tol`` of every set among the others.
    """
    P, N = data.projection.X.shape
    columns = data.columns.numel()
    residuals = (state.primal_residual, state.primal_scale, state.dual_residual, state.dual_scale)
    dimension = N + P
    if data.coupled:
        residuals = tuple(torch.linalg.vector_norm(value).expand(columns) for value in residuals)
        dimension *= columns
    primal, primal_scale, dual, dual_scale = residuals
    absolute = math.sqrt(dimension) * abs_tol
    done = (primal <= absolute + rel_tol * primal_scale) & (dual <= absolute + rel_tol * dual_scale)
    if not bool(done.any()):
        return done
    candidates = data if bool(done.all()) else data.select(done)
    reported = state.W_prox[0][:, done]
    violation = candidates.violation(data.projection.X @ reported)
    if len(data.weights) > 1:
        rho = state.rho if state.rho.shape[1] == 1 else state.rho[:, done]
        violation = torch.maximum(violation, candidates.weight_violation(reported, rho))
    feasible = violation <= VIOLATION_MARGIN * violation_tol
    if data.coupled:
        feasible = feasible.all().expand(columns)
    done[done.clone()] = feasible
    return done


def _balance_rho(state: ADMMState, *, coupled: bool, bounds: tuple[float, float], iteration: int,
                 check_interval: int) -> ADMMState:
    """Residual balancing: scale ``rho`` by ``sqrt(relative primal / relative dual residual)``.

    Only columns whose balance is off by more than ``RHO_CHANGE_THRESHOLD`` change; the scaled duals are
    divided by the same factor so that the unscaled dual is unchanged. For the coupled ``"budget"`` loss
    one ``rho`` is balanced on the whole layer when a term couples the columns (an indicator that
    couples them would otherwise be projected in a weighted norm, which has no closed form).

    After its ``k``-th change a column's ``rho`` is held for ``check_interval * 2**k`` steps. Balancing
    can otherwise swing ``rho`` between two values for ever (on the spirals demo's first layer columns
    alternated between 0.58 and 3.4 every few checks and never converged); with the doubling hold
    ``rho`` changes at most about ``log2(max_iterations / check_interval)`` times, so it settles and
    ADMM's convergence for a fixed penalty applies from then on.
    """
    tiny = torch.finfo(state.rho.dtype).tiny
    parts = (state.primal_residual, state.primal_scale, state.dual_residual, state.dual_scale)
    if coupled:
        parts = tuple(torch.linalg.vector_norm(value).reshape(1) for value in parts)
    primal, primal_scale, dual, dual_scale = parts
    ratio = torch.sqrt((primal / torch.clamp(primal_scale, min=tiny)) /
                       torch.clamp(dual / torch.clamp(dual_scale, min=tiny), min=tiny))
    changes = state.rho_changes
    if changes is None:
        changes = torch.zeros(ratio.shape, dtype=torch.int64, device=ratio.device)
    hold = state.rho_hold if state.rho_hold is not None else torch.zeros_like(changes)
    change = (iteration >= hold) & ((ratio > RHO_CHANGE_THRESHOLD) | (ratio < 1.0 / RHO_CHANGE_THRESHOLD))
    if not bool(change.any()):
        return state
    changes = changes + change.to(torch.int64)
    hold = torch.where(change, iteration + check_interval * torch.pow(2, changes), hold)
    old_rho = state.rho.reshape(-1)
    new_rho = torch.where(change, torch.clamp(old_rho * ratio, min=bounds[0], max=bounds[1]), old_rho)
    factor = (new_rho / old_rho).reshape(1, -1)
    return dataclasses.replace(state, rho=new_rho.reshape(state.rho.shape),
                               W_dual=state.W_dual / factor, Z_dual=state.Z_dual / factor,
                               rho_changes=changes, rho_hold=hold)


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
        M = data.columns.numel()
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
        self.W[:, columns] = state.W_prox[0] * (data.column_scale * data.output_scale)
        self.dual[:, columns] = state.dual()
        self.rho[columns] = state.rho.reshape(-1).expand(columns.numel())
        self.iterations[index] = iteration
        if state.primal_residual is not None:
            self.primal_residual[index] = state.primal_residual.cpu().numpy()
            self.dual_residual[index] = state.dual_residual.cpu().numpy()
        self.converged[index] = converged


def _check_options(alpha, abs_tol, rel_tol, violation_tol, max_iterations, check_interval, rho,
                   threads):
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
    if threads is not None and (int(threads) != threads or threads < 1):
        raise ValueError(f"threads must be a positive integer or None (torch's setting); got {threads}.")


def check_options(**options) -> None:
    """Check keyword options of :func:`solve_graph_form` without solving anything.

    Raises
    ------
    TypeError
        For a name :func:`solve_graph_form` does not take.
    ValueError
        For a value out of range (the message names the option and its range).
    """
    bound = _SIGNATURE.bind(None, **options)
    bound.apply_defaults()
    values = bound.arguments
    _check_options(values["alpha"], values["abs_tol"], values["rel_tol"], values["violation_tol"],
                   values["max_iterations"], values["check_interval"], values["rho"], values["threads"])
    _resolve_dtype(values["dtype"])
    _resolve_device(values["device"])


def _resolve_device(device) -> torch.device:
    """``device`` as a ``torch.device`` this machine has, or ``ValueError`` naming it."""
    if not isinstance(device, (str, torch.device)):
        raise ValueError(f"device must be a torch device or its name ('cpu', 'cuda', 'cuda:1'); "
                         f"got {device!r}.")
    try:
        resolved = torch.device(device)
    except (RuntimeError, TypeError, ValueError) as error:
        raise ValueError(f"device={device!r} is not a torch device ({error}); use 'cpu' or "
                         "'cuda'.") from None
    if resolved.type == "cuda" and not torch.cuda.is_available():
        raise ValueError(f"device={device!r} asks for CUDA, which is not available here; use "
                         "device='cpu'.")
    return resolved


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
                     adaptive_rho: bool = True, threads: int | None = None,
                     verbose: bool = False) -> ADMMResult:
    """Solve ``minimize sum g_i(W) + sum f_j(Z) s.t. Z = X @ W`` (a :class:`GraphForm`) by batched ADMM.

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
        problem (outputs divided by the root mean square of ``Y``). ``rel_tol=1e-4`` saves 15 to 40% of
        the steps but is not enough for an objective within 1e-4: it missed by 1.2e-4 on a test layer.
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
    threads : int, optional
        Torch CPU threads for this solve (``torch.set_num_threads``, put back afterwards, also on an
        error); default: the process's setting. Small layers can run faster on one thread on a busy
        machine: on the shared 2-core dev box a 200 x 200 x 200 layer ran 1.4x faster on two threads
        than on one when the box was nearly idle, but 4.5x slower when other jobs held the cores
        (``docs/benchmarks.md``).
    verbose : bool
        Print the progress at every check.

    Returns
    -------
    ADMMResult

    Examples
    --------
    >>> import numpy as np
    >>> from solvers import graph_terms
    >>> from solvers.graph_form import GraphForm
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 8)); Y = np.maximum(X @ rng.standard_normal((8, 3)), 0)
    >>> fits = [graph_terms.QuadraticFit(Y, Y > 0, 10.0),
    ...         graph_terms.UpperBound(np.zeros_like(Y), Y <= 0)]
    >>> form = GraphForm.from_terms(X, fits, [graph_terms.WeightedL1(np.ones(8))])
    >>> result = solve_graph_form(form)
    >>> result.status
    'optimal'
    """
    _check_options(alpha, abs_tol, rel_tol, violation_tol, max_iterations, check_interval, rho,
                   threads)
    dtype = _resolve_dtype(dtype)
    device = _resolve_device(device)
    options = dict(rho=rho, alpha=alpha, abs_tol=abs_tol, rel_tol=rel_tol,
                   violation_tol=violation_tol, max_iterations=max_iterations,
                   check_interval=check_interval, warm_start=warm_start, adaptive_rho=adaptive_rho,
                   verbose=verbose)
    if threads is None:
        return _solve(form, dtype=dtype, device=device, **options)
    previous_threads = torch.get_num_threads()
    torch.set_num_threads(int(threads))
    try:
        return _solve(form, dtype=dtype, device=device, **options)
    finally:
        torch.set_num_threads(previous_threads)


def _solve(form: GraphForm, *, dtype: torch.dtype, device: torch.device, rho, alpha, abs_tol, rel_tol,
           violation_tol, max_iterations, check_interval, warm_start, adaptive_rho,
           verbose) -> ADMMResult:
    """The body of :func:`solve_graph_form`, with the options checked."""
    start = time.perf_counter()
    data = prepare(form, dtype=dtype, device=device)
    _synchronize(device)
    setup_time = time.perf_counter() - start
    start = time.perf_counter()
    state = initial_state(data, rho=rho, warm_start=warm_start)
    rho_bounds = (float(state.rho.min()) / RHO_RANGE, float(state.rho.max()) * RHO_RANGE)
    collected = _Collected(data)
    coupled = data.coupled
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
            state = _balance_rho(state, coupled=coupled, bounds=rho_bounds, iteration=iteration,
                                 check_interval=check_interval)
    if data.columns.numel():
        collected.store(data, state, iteration=iteration, converged=False)
    _synchronize(device)
    solve_time = time.perf_counter() - start
    return _result(form, collected, dtype=dtype, violation_tol=violation_tol,
                   solve_time=solve_time, setup_time=setup_time)


_SIGNATURE = inspect.signature(solve_graph_form)


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
