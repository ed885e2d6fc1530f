"""Lower a Net-Trim layer to a backend and run it.

Three routes, chosen by the program's shape and the backend:

* the coupled constrained form (one budget for the layer) is one CVXPY problem over all of ``U``;
* decoupled forms (regularized, split budgets) compile ONE parametrized (DPP) column problem and
  re-solve it for every column, optionally in chunks on an executor;
* ``backend="admm"`` hands the graph form to :mod:`solvers.admm`, batched over columns. Under
  ``"auto"``, columns of a decoupled form that ADMM leaves unfinished are solved again with Clarabel.

Backends receive a CVXPY problem or a ``GraphForm``; they never see the problem's class.
"""

from __future__ import annotations

import dataclasses
import math
from dataclasses import dataclass, field

import cvxpy as cp
import numpy as np

from solvers import cvxpy_backend

from ._duality import root_mean_square, stable_norm
from .errors import BackendUnavailableError, InvalidInputError

__all__ = ["RawSolution", "ColumnProgram", "auto_backend_for", "backend_options", "check_backend",
           "check_solver_options", "layer_program", "resolve_backend", "solve_layer",
           "with_admm_defaults"]

#: The ADMM backend's default relative violation tolerance (``solvers.admm``'s ``violation_tol``).
ADMM_VIOLATION_TOL = 1e-4

# Worst first: the status a layer reports is the worst of its columns'.
_SEVERITY = ["solver_error", "unbounded", "infeasible", "max_iterations", "optimal_inaccurate",
             "optimal"]
_NO_SOLUTION = {"solver_error", "unbounded", "infeasible"}


@dataclass
class RawSolution:
    """A backend's answer before cleaning: design-orientation weights and the dual of ``Z``."""

    W_design: np.ndarray | None
    dual: np.ndarray | None
    status: str
    solve_time: float
    compile_time: float
    column_status: list | None = None
    iterations: object = None
    info: dict = field(default_factory=dict)


def worst_status(statuses) -> str:
    """The most severe of ``statuses`` in the order of :data:`_SEVERITY`."""
    return min(statuses, key=_SEVERITY.index)


# ------------------------------------------------------------------------------------- backend
def check_backend(backend: str, form: str) -> str:
    """Validate ``backend`` for a program of ``form``; return its lower-case name (maybe "auto").

    Raises :class:`BackendUnavailableError` for an unknown or uninstalled name, and for OSQP asked to
    solve the constrained form (a second-order-cone program), naming the alternatives.
    """
    if not isinstance(backend, str):
        raise BackendUnavailableError(f"backend must be a string; got {backend!r}.")
    name = backend.lower()
    installed = cvxpy_backend.installed_backends()
    if name in ("auto", "admm"):
        return name
    if name not in cvxpy_backend.BACKENDS or name not in installed:
        known = ", ".join(["auto", *installed, "admm"])
        raise BackendUnavailableError(
            f"unknown or uninstalled backend {backend!r}; available here: {known}.")
    kind = "qp" if form == "regularized" else "socp"
    if not cvxpy_backend.supports(name, kind):
        raise BackendUnavailableError(
            f"backend {name!r} takes quadratic programs only, and the constrained form has a "
            "second-order-cone budget; use backend='clarabel', 'scs' or 'admm', or the regularized "
            "form (lam=...).")
    return name


def resolve_backend(problem, backend: str) -> str:
    """The concrete backend for ``problem``: ``backend`` checked, "auto" decided by size."""
    name = check_backend(backend, problem.form)
    return _auto_backend(problem) if name == "auto" else name


#: Above this many entries of ``X_design`` times output columns (``P * N_design * M``), "auto" hands a
#: layer to ADMM: Clarabel needs 55 to 85 s per column at P = 10000, N = 784 on the 2-core dev box
#: (docs/benchmarks.md), so 1e8 is roughly a quarter of an hour of interior-point work. Below it
#: Clarabel's certified 1e-9 answers are worth their time: on the spirals demo's trained 200 x 200
#: layer (8e6) ADMM with Clarabel for its 12 unfinished columns took 23 s against Clarabel's 60 s, but
#: its dual certified only a 5e-4 gap (status "optimal_inaccurate").
AUTO_ADMM_SIZE = 1e8


def _auto_backend(problem) -> str:
    P, N, M = problem.X_design.shape[0], problem.X_design.shape[1], problem.Y.shape[1]
    return auto_backend_for(P, N, M)


def auto_backend_for(P: int, N_design: int, M: int) -> str:
    """What ``"auto"`` picks for a layer of ``P`` samples, ``N_design`` inputs and ``M`` outputs."""
    return "admm" if P * N_design * M > AUTO_ADMM_SIZE else "clarabel"


#: The backends ``solver_options`` may be keyed by: ``{"admm": {...}, "clarabel": {...}}``.
OPTION_BACKENDS = ("admm", "clarabel", "osqp", "scs")


def backend_options(solver_options, backend: str) -> dict | None:
    """The options meant for ``backend``.

    ``solver_options`` is either one backend's options (a flat dict, given to whichever backend
    runs) or a dict keyed by backend names (:data:`OPTION_BACKENDS`) whose values are such dicts;
    the keyed form lets ``"auto"`` take options for each backend it may pick.
    """
    if solver_options is None:
        return None
    if not isinstance(solver_options, dict):
        raise InvalidInputError(f"solver_options must be a dict; got {type(solver_options).__name__}.")
    if _keyed(solver_options):
        for key, value in solver_options.items():
            if not isinstance(value, dict):
                raise InvalidInputError(f"solver_options[{key!r}] must be a dict of {key}'s options; "
                                        f"got {type(value).__name__}.")
        return solver_options.get(backend)
    return solver_options


def _keyed(solver_options: dict | None) -> bool:
    """Whether ``solver_options`` is the form keyed by backend names."""
    return bool(solver_options) and all(key in OPTION_BACKENDS for key in solver_options)


def with_admm_defaults(solver_options, **defaults) -> dict | None:
    """``solver_options`` with ``defaults`` added to ADMM's options (flat or keyed), never overriding."""
    options = dict(solver_options or {})
    if not _keyed(options):
        return {**defaults, **options}
    admm_options = options.get("admm") or {}
    if isinstance(admm_options, dict):  # anything else is reported by check_solver_options
        options["admm"] = {**defaults, **admm_options}
    return options


def check_solver_options(solver_options, backend: str) -> None:
    """Raise :class:`InvalidInputError` now, before any work, for options a backend would refuse.

    Flat options are checked for ``backend`` (the one that will run); keyed options for every backend
    they name, used or not. ADMM's options are checked by name and value, Clarabel's by name and
    type; OSQP and SCS check theirs when they run.
    """
    backend_options(solver_options, backend)  # the shape of solver_options
    if not solver_options:
        return
    named = solver_options if _keyed(solver_options) else {backend: solver_options}
    from solvers import admm

    for name, options in named.items():
        try:
            if name == "admm":
                admm.check_options(**options)
            else:
                cvxpy_backend.check_options(name, options)
        except (TypeError, ValueError) as error:
            keyed = ", ".join(f"{key!r}: {{...}}" for key in ("admm", "clarabel"))
            raise InvalidInputError(
                f"solver_options for backend={name!r}: {error} With backend='auto' the backend "
                f"depends on the layer's size; options for each can be given as {{{keyed}}}."
            ) from None


# ------------------------------------------------------------------------------ whole layer
def layer_program(problem):
    """The whole layer as one CVXPY problem (see :meth:`NetTrimProblem.to_cvxpy`)."""
    X = problem.X_design
    P, M = problem.Y.shape
    U = cp.Variable((X.shape[1], M), name="U")
    Z = cp.Variable((P, M), name="Z")
    active = problem.active.astype(float)
    fit = cp.multiply(active, Z) - active * problem.Y
    constraints = [Z == X @ U]
    objective = cp.sum(cp.multiply(problem.penalty_weights[:, None], cp.abs(U)))
    if problem.form == "regularized":
        objective = objective + problem.lam * cp.sum_squares(fit)
    elif problem.column_budgets is None:
        constraints.append(cp.norm(fit, "fro") <= problem.epsilon)
    else:
        constraints.append(cp.norm(fit, 2, axis=0) <= problem.column_budgets)
    if not problem.active.all():
        inactive = 1.0 - active
        constraints.append(cp.multiply(inactive, Z) <= inactive * problem.V)
    return cp.Problem(cp.Minimize(objective), constraints), U


def _solve_coupled(problem, backend, options, verbose) -> RawSolution:
    program, U = layer_program(problem)
    info = cvxpy_backend.solve_problem(program, backend, options=options, verbose=verbose)
    if info.status in _NO_SOLUTION or U.value is None:
        return RawSolution(None, None, info.status, info.solve_time, info.compile_time,
                           iterations=info.iterations, info={"raw_status": info.raw_status})
    dual = -np.asarray(program.constraints[0].dual_value, dtype=float)
    return RawSolution(np.asarray(U.value, dtype=float), dual, info.status, info.solve_time,
                       info.compile_time, iterations=info.iterations,
                       info={"raw_status": info.raw_status})


# ---------------------------------------------------------------------------------- columns
class ColumnProgram:
    """One compiled DPP column problem, re-solved for every column of a layer.

    Variables ``u`` (N_design,) and ``z`` (P,); parameters ``active`` (P,) in {0, 1},
    ``target = active * y``, ``threshold = (1 - active) * v`` and, for split budgets, ``budget``.
    Products of two parameters are not DPP, hence the pre-multiplied targets.
    """

    def __init__(self, X_design, penalty_weights, *, form: str, lam: float | None,
                 has_inequality: bool):
        P, N = X_design.shape
        self.u = cp.Variable(N, name="u")
        self.z = cp.Variable(P, name="z")
        self.active = cp.Parameter(P, nonneg=True, name="active")
        self.target = cp.Parameter(P, name="target")
        self.threshold = cp.Parameter(P, name="threshold")
        self.budget = cp.Parameter(nonneg=True, name="budget")
        self.has_inequality = has_inequality
        fit = cp.multiply(self.active, self.z) - self.target
        objective = penalty_weights @ cp.abs(self.u)
        constraints = [self.z == X_design @ self.u]
        if form == "regularized":
            objective = objective + lam * cp.sum_squares(fit)
        else:
            constraints.append(cp.norm(fit, 2) <= self.budget)
        if has_inequality:
            constraints.append(cp.multiply(1 - self.active, self.z) <= self.threshold)
        self.problem = cp.Problem(cp.Minimize(objective), constraints)

    def set_column(self, y, active, v, budget=None) -> None:
        mask = active.astype(float)
        self.active.value = mask
        self.target.value = mask * y
        self.threshold.value = (1.0 - mask) * v
        self.budget.value = 0.0 if budget is None else float(budget)


@dataclass
class _ColumnChunk:
    """The data of a few columns, shipped whole to a worker (picklable, no CVXPY objects)."""

    X_design: np.ndarray
    penalty_weights: np.ndarray
    Y: np.ndarray
    active: np.ndarray
    V: np.ndarray
    budgets: np.ndarray | None
    form: str
    lam: float | None
    has_inequality: bool
    backend: str
    options: dict | None
    verbose: bool


def _solve_column_chunk(chunk: _ColumnChunk):
    """Compile one column program and solve every column of ``chunk`` with it."""
    program = ColumnProgram(chunk.X_design, chunk.penalty_weights, form=chunk.form, lam=chunk.lam,
                            has_inequality=chunk.has_inequality)
    k = chunk.Y.shape[1]
    W = np.zeros((chunk.X_design.shape[1], k))
    dual = np.zeros(chunk.Y.shape)
    statuses, iterations = [], np.zeros(k, dtype=int)
    solve_time = compile_time = 0.0
    warm = chunk.backend in ("osqp", "scs")
    for j in range(k):
        budget = None if chunk.budgets is None else chunk.budgets[j]
        program.set_column(chunk.Y[:, j], chunk.active[:, j], chunk.V[:, j], budget)
        info = cvxpy_backend.solve_problem(program.problem, chunk.backend, options=chunk.options,
                                           warm_start=warm and j > 0, verbose=chunk.verbose)
        statuses.append(info.status)
        solve_time += info.solve_time
        compile_time += info.compile_time
        iterations[j] = info.iterations or 0
        if info.status in _NO_SOLUTION or program.u.value is None:
            continue
        W[:, j] = program.u.value
        dual[:, j] = -program.problem.constraints[0].dual_value
    return W, dual, statuses, iterations, solve_time, compile_time


def _solve_columns(problem, backend, options, executor, verbose) -> RawSolution:
    M = problem.Y.shape[1]
    n_chunks = 1 if executor is None else min(M, 8)
    size = math.ceil(M / n_chunks)
    bounds = [(start, min(start + size, M)) for start in range(0, M, size)]
    chunks = [_ColumnChunk(problem.X_design, problem.penalty_weights, problem.Y[:, a:b],
                           problem.active[:, a:b], problem.V[:, a:b],
                           None if problem.column_budgets is None else problem.column_budgets[a:b],
                           problem.form, problem.lam, not problem.active.all(), backend, options,
                           verbose) for a, b in bounds]
    if executor is None:
        outputs = [_solve_column_chunk(chunk) for chunk in chunks]
    else:
        outputs = [future.result() for future in
                   [executor.submit(_solve_column_chunk, chunk) for chunk in chunks]]
    W = np.hstack([out[0] for out in outputs])
    dual = np.hstack([out[1] for out in outputs])
    statuses = [s for out in outputs for s in out[2]]
    iterations = np.concatenate([out[3] for out in outputs])
    status = worst_status(statuses)
    solve_time = sum(out[4] for out in outputs)
    compile_time = sum(out[5] for out in outputs)
    if status in _NO_SOLUTION:
        return RawSolution(None, None, status, solve_time, compile_time, statuses, iterations)
    return RawSolution(W, dual, status, solve_time, compile_time, statuses, iterations,
                       info={"chunks": len(chunks)})


# ---------------------------------------------------------------------------------- scaling
@dataclass
class ScaledLayer:
    """The layer's program with data rescaled to unit RMS, as the CVXPY routes solve it.

    Net-Trim is scale-covariant: with ``X' = X / s_x``, ``Y' = Y / s_y``, ``V' = V / s_y``,
    ``epsilon' = epsilon / s_y`` and ``lam' = lam s_x s_y``, the solution is ``U' = U s_x / s_y`` and the
    dual ``Lambda' = s_x Lambda``, while the objective is multiplied by ``s_x / s_y``. Solvers'
    absolute tolerances then mean the same thing for a link-normalized network (outputs near
    1e-4) as for a trained one.

    ``s_x`` is the RMS of the penalized columns of ``X_design``. An unpenalized column (a bias left
    out of the l1 term) is divided by its own RMS instead, which the objective does not see: a ones
    column beside inputs of 1e-150 would otherwise need weights of 1e-150 next to weights of 1, and
    the solver would call the layer infeasible. (Dividing penalized columns by their own RMS too would
    need l1 weights of every size, which Clarabel fails on.) ``x_scale`` holds each column's divisor.
    """

    X_design: np.ndarray
    Y: np.ndarray
    V: np.ndarray
    active: np.ndarray
    penalty_weights: np.ndarray
    form: str
    lam: float | None
    epsilon: float | None
    column_budgets: np.ndarray | None
    decoupled: bool
    x_scale: np.ndarray
    y_scale: float
    dual_scale: float

    def columns(self, index: np.ndarray) -> "ScaledLayer":
        """The same layer restricted to the output columns ``index`` (decoupled forms only)."""
        return dataclasses.replace(
            self, Y=self.Y[:, index], V=self.V[:, index], active=self.active[:, index],
            column_budgets=None if self.column_budgets is None else self.column_budgets[index])

    @classmethod
    def of(cls, problem) -> "ScaledLayer":
        X = problem.X_design
        penalized = problem.penalty_weights > 0
        # Root mean squares without squaring the data: inputs of 1e160 would overflow.
        sx = root_mean_square(X[:, penalized]) or 1.0
        own = stable_norm(X, axis=0) / np.sqrt(X.shape[0])
        x_scale = np.where(penalized, sx, np.where(own > 0, own, 1.0))
        sy = root_mean_square(problem.Y) or 1.0
        return cls(X / x_scale, problem.Y / sy, problem.V / sy, problem.active,
                   problem.penalty_weights, problem.form,
                   None if problem.lam is None else problem.lam * sx * sy,
                   None if problem.epsilon is None else problem.epsilon / sy,
                   None if problem.column_budgets is None else problem.column_budgets / sy,
                   problem.decoupled, x_scale, sy, sx)

    def unscale(self, raw: RawSolution) -> RawSolution:
        if raw.W_design is not None:
            raw.W_design = raw.W_design * (self.y_scale / self.x_scale[:, None])
            raw.dual = raw.dual / self.dual_scale
        return raw


# ------------------------------------------------------------------------------------- entry
def solve_layer(problem, backend: str, *, solver_options=None, executor=None, verbose=False,
                fallback: str | None = None) -> RawSolution:
    """Run ``backend`` (already resolved) on ``problem``.

    ``fallback`` (a CVXPY backend) re-solves, for a decoupled form, the columns that ADMM did not
    finish (``max_iterations``, or a violation above its tolerance); see :func:`_refine_columns`.
    """
    check_solver_options(solver_options, backend)
    options = backend_options(solver_options, backend)
    if backend == "admm":
        raw = _solve_admm(problem, options or {}, verbose)
        if fallback is not None and problem.decoupled:
            # Flat options belong to the backend that runs; only keyed ones reach the fallback.
            keyed = _keyed(solver_options)
            fallback_options = backend_options(solver_options, fallback) if keyed else None
            raw = _refine_columns(problem, raw, fallback, fallback_options, executor, verbose)
        return raw
    scaled = ScaledLayer.of(problem)
    if problem.decoupled:
        raw = _solve_columns(scaled, backend, options, executor, verbose)
    else:
        raw = _solve_coupled(scaled, backend, options, verbose)
    return scaled.unscale(raw)


def certificate_tolerances(raw_info: dict) -> dict:
    """The accuracy a backend promised (``info["tolerance"]``) as its certificate's tolerances."""
    tol = raw_info.get("tolerance")
    return {} if tol is None else {"gap_tol": tol, "feas_tol": tol}


def _refine_columns(problem, raw: RawSolution, backend: str, options, executor,
                    verbose) -> RawSolution:
    """Solve again with ``backend`` the columns of an ADMM ``raw`` that are not finished.

    A column is unfinished when ADMM stopped it at ``max_iterations`` or its violation exceeds ADMM's
    tolerance. The others keep ADMM's solution. ``info["refined_columns"]`` lists the re-solved columns
    and ``info["refine_time"]`` their time; when ``backend`` finds no solution for them, ADMM's answer
    and status stand.
    """
    out = raw.info["admm"]
    redo = np.flatnonzero(~out.converged | (out.column_violation > raw.info["tolerance"]))
    if redo.size == 0 or raw.W_design is None:
        return raw
    scaled = ScaledLayer.of(problem)
    sub = scaled.unscale(_solve_columns(scaled.columns(redo), backend, options, executor, verbose))
    if sub.W_design is None:
        return raw
    W, dual = raw.W_design.copy(), raw.dual.copy()
    W[:, redo], dual[:, redo] = sub.W_design, sub.dual
    kept = ["optimal"] if redo.size < W.shape[1] else []
    info = {**raw.info, "refined_columns": redo, "refine_time": sub.solve_time + sub.compile_time,
            "refine_backend": backend}
    return RawSolution(W, dual, worst_status(kept + list(sub.column_status)),
                       raw.solve_time + sub.solve_time, raw.compile_time + sub.compile_time,
                       iterations=raw.iterations, info=info)


def _solve_admm(problem, options, verbose) -> RawSolution:
    from solvers import admm

    options = {"violation_tol": ADMM_VIOLATION_TOL, **options}
    out = admm.solve_graph_form(problem.to_graph_form(), verbose=verbose, **options)
    return RawSolution(np.asarray(out.W, dtype=float), np.asarray(out.dual, dtype=float),
                       out.status, out.solve_time, out.setup_time, iterations=out.iterations,
                       info={"tolerance": options["violation_tol"],
                             "primal_residual": out.primal_residual,
                             "dual_residual": out.dual_residual, "admm": out})
