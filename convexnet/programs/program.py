r"""The sparsity program: terms, their evaluation, and the lowerings a backend asks for.

.. math::

    \min_W \; \sum_j f_j(X W) + \sum_i p_i(W) \quad \text{subject to} \quad W \in C_k \text{ for all } k,

with ``X`` of shape ``(P, N)``, ``W`` of shape ``(N, M)``. The fit terms ``f_j`` (:mod:`convexnet.fits`)
act on disjoint masks of ``Z = X W``; the penalties ``p_i`` (:mod:`convexnet.penalties`) and the sets
``C_k`` (:mod:`convexnet.sets`) act on ``W``. Each term knows its meaning (value, violation, CVXPY
lowering, ADMM prox, conjugate); the program only adds them up, and backends ask the terms.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_float_array, check_bool
from ..errors import InvalidInputError
from ..fits import FitTerm

__all__ = ["SparsityProgram", "ProgramResult"]


def _as_list(terms, name: str) -> list:
    if terms is None:
        return []
    if isinstance(terms, (list, tuple)):
        return list(terms)
    if isinstance(terms, np.ndarray) or not hasattr(terms, "__dict__"):
        raise InvalidInputError(f"{name} must be a term object or a list of them; got {terms!r}.")
    return [terms]


class SparsityProgram:
    """``minimize fit(X @ W) + penalty(W)`` subject to ``W`` in every set of ``constraints``.

    Parameters
    ----------
    X : array_like, shape (P, N)
        The data, one sample per row.
    fit : FitTerm or list of FitTerm
        Terms on ``Z = X @ W`` (:mod:`convexnet.fits`), all of shape ``(P, M)``, with disjoint masks.
    penalty : penalty or list of penalties, optional
        Terms on ``W`` (:mod:`convexnet.penalties`).
    constraints : sequence of sets, optional
        Sets ``W`` must lie in (:mod:`convexnet.sets`), each of ``W``'s shape ``(N, M)``.

    Attributes
    ----------
    fits, penalties, sets : list
    convex : bool
        Every term is convex: backends may certify an optimum.
    separable : bool
        Every term is a sum of per-column terms: the columns are independent programs.

    Examples
    --------
    >>> import numpy as np, convexnet as cn
    >>> from convexnet import fits, penalties, sets
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((30, 6)); Y = X @ rng.standard_normal((6, 2))
    >>> prog = cn.SparsityProgram(X, fit=fits.Squared(Y, weight=10.0), penalty=penalties.L1(1.0),
    ...                           constraints=[sets.L1InfBall(2.0)])
    >>> res = prog.solve(backend="clarabel")
    >>> res.status, bool(cn.certificates.verify(res).ok)
    ('optimal', True)
    """

    def __init__(self, X, fit, penalty=None, constraints=()):
        self.X = as_float_array("X", X, ndim=2)
        P, N = self.X.shape
        if P == 0 or N == 0:
            raise InvalidInputError(f"X must have at least one row and one column; got shape {(P, N)}.")
        self.fits = _as_list(fit, "fit")
        self.penalties = _as_list(penalty, "penalty")
        self.sets = _as_list(constraints, "constraints")
        if not self.fits:
            raise InvalidInputError("fit is empty; give at least one fit term (convexnet.fits).")
        for term in self.fits:
            if not isinstance(term, FitTerm):
                raise InvalidInputError(f"fit terms come from convexnet.fits (Squared, Budget, Below); "
                                        f"got {term!r}.")
        for term in self.penalties:
            if getattr(term, "is_constraint", None) is not False:
                raise InvalidInputError(f"penalty terms come from convexnet.penalties; got {term!r} "
                                        "(sets go in constraints=).")
        for term in self.sets:
            if getattr(term, "is_constraint", None) is not True:
                raise InvalidInputError(f"constraints come from convexnet.sets; got {term!r} "
                                        "(penalties go in penalty=).")
            if not getattr(term, "program_term", True):
                raise InvalidInputError(
                    f"{type(term).__name__} cannot be a constraint of a SparsityProgram: write it "
                    "with fit terms instead (fits.Budget(Y, epsilon, mask=omega) and "
                    "fits.Below(V, mask=~omega); NetTrimProblem builds them).")
        shapes = {term.shape for term in self.fits}
        if len(shapes) != 1:
            raise InvalidInputError(f"every fit term must have the same shape (P, M); got {sorted(shapes)}.")
        (shape,) = shapes
        if shape[0] != P:
            raise InvalidInputError(f"the fit terms have {shape[0]} rows but X has {P}; both are "
                                    "batch-first, one sample per row.")
        if shape[1] == 0:
            raise InvalidInputError("the fit terms have no columns (M = 0).")
        coverage = sum(term.mask.astype(np.int64) for term in self.fits)
        if (coverage > 1).any():
            raise InvalidInputError("the fit terms' masks overlap: each entry of Z = X @ W may belong "
                                    "to one fit term (Net-Trim: a fit on Omega, Below off it).")
        self.M = shape[1]

    # ----------------------------------------------------------------------------- structure
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(P, N, M)``: samples, inputs, outputs."""
        return self.X.shape[0], self.X.shape[1], self.M

    @property
    def terms(self) -> list:
        """Every term: fits, then penalties, then sets."""
        return [*self.fits, *self.penalties, *self.sets]

    @property
    def weight_terms(self) -> list:
        """The terms on ``W``: penalties, then sets (the order ADMM gives its weight copies)."""
        return [*self.penalties, *self.sets]

    @property
    def convex(self) -> bool:
        return all(getattr(term, "convex", True) for term in self.terms)

    @property
    def separable(self) -> bool:
        return all(term.separable for term in self.terms)

    @property
    def output_scale(self) -> float:
        """The largest magnitude of any fit term's data (1 when all are 0): relative violations of
        bounds on ``Z`` are measured against it."""
        scale = max(term.scale() for term in self.fits)
        return scale if scale > 0 else 1.0

    # ---------------------------------------------------------------------------- evaluation
    def objective(self, W) -> float:
        """``sum_j f_j(X W) + sum_i p_i(W)`` (indicators left to :meth:`violation`)."""
        W = self._check_weights(W)
        Z = self.X @ W
        return (sum(term.value(Z) for term in self.fits)
                + sum(float(term.value(W)) for term in self.penalties))

    def violation(self, W, *, per_column: bool = False):
        """The largest relative violation over the constraint terms (0 when ``W`` is feasible).

        Fit terms measure theirs per column (:mod:`convexnet.fits`), sets by the relative distance
        ``||W - project(W)|| / max(1, ||W||)``. ``per_column=True`` returns the fits' part per column
        with the sets' (whole-matrix) part added to every column.
        """
        W = self._check_weights(W)
        Z = self.X @ W
        scale = self.output_scale
        columns = np.zeros(self.M)
        for term in self.fits:
            columns = np.maximum(columns, term.violation(Z, scale))
        sets = max((term.violation(W) for term in self.sets), default=0.0)
        columns = np.maximum(columns, sets)
        return columns if check_bool("per_column", per_column) else float(columns.max(initial=0.0))

    def _check_weights(self, W) -> np.ndarray:
        W = as_float_array("W", W, ndim=2)
        expected = (self.X.shape[1], self.M)
        if W.shape != expected:
            raise InvalidInputError(f"W must have shape {expected} (N, M); got {W.shape}.")
        return W

    # ----------------------------------------------------------------------------- lowerings
    def to_cvxpy(self):
        """The program as a CVXPY problem, to solve or to compose with other constraints.

        Returns
        -------
        problem : cvxpy.Problem
            Variables ``W`` (N, M) and ``Z`` (P, M); ``problem.constraints[0]`` is ``Z == X @ W``,
            whose dual value, negated, is the dual ``Lambda`` of the certificates.
        W : cvxpy.Variable, shape (N, M)

        Raises
        ------
        InvalidInputError
            For a nonconvex term (CVXPY needs convex programs); the message names what to use.
        """
        import cvxpy as cp

        P, N, M = self.shape
        W = cp.Variable((N, M), name="W")
        Z = cp.Variable((P, M), name="Z")
        constraints = [Z == self.X @ W]
        objective = 0.0
        for term in self.fits:
            expression, extra = term.cvxpy(Z)
            objective = objective + expression
            constraints += extra
        for term in self.penalties:
            objective = objective + term.cvxpy(W)
        for term in self.sets:
            constraints += term.constraints(W)
        return cp.Problem(cp.Minimize(objective), constraints), W

    def to_graph_form(self):
        """The program in the ADMM engine's terms (:class:`solvers.graph_form.GraphForm`)."""
        from solvers.graph_form import GraphForm

        return GraphForm.from_terms(self.X, [term.graph_term() for term in self.fits],
                                    self._graph_weight_terms())

    def _graph_weight_terms(self) -> list:
        """The weight terms in the engine's terms. The first penalty and set whose sum has a
        closed-form prox (an L1 penalty and an l1, L1,inf or sum-of-max ball or a Mask) become one
        term, placed first; every other term is its own."""
        for penalty in self.penalties:
            for constraint in self.sets:
                fused = penalty.graph_term_with(constraint)
                if fused is not None:
                    rest = [term for term in self.weight_terms
                            if term is not penalty and term is not constraint]
                    return [fused, *(term.graph_term() for term in rest)]
        return [term.graph_term() for term in self.weight_terms]

    def select_columns(self, index) -> "SparsityProgram":
        """The program of the columns ``index`` alone (separable programs: the columns are independent)."""
        if not self.separable:
            raise InvalidInputError("this program couples its columns; it cannot be split by column.")
        return SparsityProgram(self.X, fit=[term.select_columns(index) for term in self.fits],
                               penalty=[term.select_columns(index) for term in self.penalties],
                               constraints=[term.select_columns(index) for term in self.sets])

    def scaled(self) -> tuple["SparsityProgram", "Scaling"]:
        """The same program in units that interior-point solvers like, and its scales.

        With ``x`` the root mean square of ``X`` and ``y`` that of the fit terms' targets (1 when
        zero), the program in ``X' = X / x_n`` (per column ``n``), ``W'[n] = W[n] x_n / y`` (so
        ``Z' = Z / y``) with its objective multiplied by ``x / y`` has the solution ``W'`` and the
        dual ``Lambda' = x Lambda``. ``x_n = x`` for every row a weight term touches; a row none
        touches (an unpenalized bias row, say) is scaled by its own column's root mean square, so a
        ones column next to data of size 1e-150 stays well scaled. Each term says how it scales.

        Returns
        -------
        program : SparsityProgram
        scaling : Scaling
            The scales, and the map of a solution back.
        """
        from .._numerics import root_mean_square, stable_norm

        P, N, _ = self.shape
        free = np.ones(N, dtype=bool)
        for term in self.weight_terms:
            free &= term.free_rows(N)
        columns = stable_norm(self.X, axis=0) / np.sqrt(P)
        x_scale = root_mean_square(self.X[:, ~free]) if (~free).any() else root_mean_square(self.X)
        x_scale = x_scale or 1.0
        x_scales = np.where(free & (columns > 0), columns, x_scale)
        targets = [term.target[term.mask] for term in self.fits if term.fits_target]
        y_scale = root_mean_square(np.concatenate(targets)) if targets else 0.0
        y_scale = y_scale or 1.0
        try:
            program = SparsityProgram(
                self.X / x_scales, fit=[term.scaled(x_scale, y_scale) for term in self.fits],
                penalty=[term.scaled(x_scale, y_scale) for term in self.penalties],
                constraints=[term.scaled(x_scale, y_scale) for term in self.sets])
        except NotImplementedError:
            # A term that does not say how it scales: the program is solved in its own units.
            return self, Scaling(np.ones(N), 1.0, 1.0)
        return program, Scaling(x_scales, x_scale, y_scale)

    def replace(self, *, fit=None) -> "SparsityProgram":
        """The same program with other fit terms (penalties and sets kept)."""
        return SparsityProgram(self.X, fit=self.fits if fit is None else fit,
                               penalty=self.penalties, constraints=self.sets)

    # -------------------------------------------------------------------------------- solving
    def solve(self, backend: str = "auto", *, solver_options: dict | None = None, executor=None,
              certify: bool | dict = True, verbose: bool = False,
              sparsest: bool = True) -> "ProgramResult":
        """Solve the program with ``backend`` and return a checked result.

        Parameters
        ----------
        backend : {"auto", "clarabel", "osqp", "scs", "admm"}
            See :mod:`convexnet.backends`; a backend that cannot take this program raises
            :class:`~convexnet.errors.BackendUnavailableError` naming the ones that can, before any
            work.
        solver_options : dict, optional
            The backend's options (CVXPY solver keywords, or ADMM options), flat or keyed by backend
            (``{"admm": {...}, "clarabel": {...}}``, see :mod:`convexnet.backends.options`).
        executor : concurrent.futures.Executor, optional
            Runs chunks of columns of a separable program as jobs (CVXPY backends).
        certify : bool or dict, default True
            Attach :func:`convexnet.certificates.verify`'s report (convex programs) at the backend's
            accuracy; a dict overrides its tolerances. A result whose certificate fails is never
            reported ``"optimal"``.
        verbose : bool
            Print the solver's log.
        sparsest : bool, default True
            Move an optimal point of an l1 program to a vertex of its optimal face, at equal
            objective (:mod:`convexnet.programs.vertex`), so that the sparsity does not depend on the
            backend; ``info["vertex_columns"]`` counts the columns that moved.

        Returns
        -------
        ProgramResult
        """
        solution, start = self._run(backend, solver_options, executor, certify, verbose, sparsest)
        result = ProgramResult(program=self, backend=solution.backend, status=solution.status,
                               solve_time=solution.solve_time, compile_time=solution.compile_time,
                               iterations=solution.iterations, dual=solution.dual,
                               info={**solution.info, "tolerances": dict(solution.tolerances)})
        if solution.W is not None:
            # Coordinate cones (a support Mask) hold exactly: solvers leave 1e-16 off the support.
            for term in self.sets:
                if term.row_scalable:
                    solution.W = np.asarray(term.project(solution.W), dtype=float)
            result.W = solution.W
            result.objective = self.objective(solution.W)
            result.violation = self.violation(solution.W)
        attach_certificate(result, solution, certify)
        result.wall_time = time.perf_counter() - start
        return result

    def _run(self, backend, solver_options, executor, certify, verbose, sparsest=True):
        """Check every argument, run the backend, then (``sparsest``) the vertex move:
        ``(Solution, start time)``."""
        from .. import backends, cluster
        from .._validation import check_executor
        from ..backends import options

        if not isinstance(certify, (bool, dict)):
            raise InvalidInputError(f"certify must be True, False or a dict of tolerances; got {certify!r}.")
        check_executor("executor", executor)
        verbose = check_bool("verbose", verbose)
        sparsest = check_bool("sparsest", sparsest)
        engine = backends.select(self, backend)
        concrete = backends.auto.choose(self) if engine.name == "auto" else engine.name
        options.check(solver_options, concrete)
        run_options = dict(solver_options or {}) if engine.name == "auto" else \
            dict(options.options_for(solver_options, engine.name) or {})
        start = time.perf_counter()
        client = cluster.find_client(executor)
        if client is not None:
            solution = cluster.solve(self, engine.name, run_options, verbose, sparsest, client)
        else:
            solution = solve_here(self, engine, run_options, verbose, executor, sparsest)
        return solution, start


def solve_here(program, engine, options: dict, verbose: bool, executor, sparsest: bool, *,
               choice: str | None = None, columns=None):
    """``engine.solve`` in this process, then (``sparsest``) the vertex move: a ``Solution``.

    A cluster task (:mod:`convexnet.cluster`) solves the ``columns`` of a separable program with the
    backend ``choice`` that ``"auto"`` chose for the whole program; a CVXPY backend then solves them
    in the whole program's units (the in-process solve's numbers, not a rescaled program's).
    """
    from .. import backends
    from .._numerics import one_blas_thread
    from ..backends import options as backend_options
    from . import vertex

    part = program if columns is None else program.select_columns(columns)
    if choice is not None and choice != "admm" and engine.name == "auto":
        # "auto" adds nothing to a CVXPY backend's answer: run it, with the options meant for it.
        options = dict(backend_options.options_for(options, choice) or {})
        engine = backends.get(choice)
    if columns is not None and engine.name in ("clarabel", "osqp", "scs"):
        solution = engine.solve(program, options, verbose, executor, columns=columns)
    elif engine.name == "auto" and choice is not None:
        solution = engine.solve(part, options, verbose, executor, choice=choice)
    else:
        solution = engine.solve(part, options, verbose, executor)
    solution.backend = solution.backend or engine.name
    if (sparsest and solution.W is not None and vertex.applies(part)
            and solution.status in ("optimal", "optimal_inaccurate")):
        moved_at = time.perf_counter()
        with one_blas_thread():
            solution.W, moved = vertex.to_vertex(part, solution.W)
        solution.info = {**solution.info, "vertex_columns": int(moved.sum()),
                         "vertex_time": time.perf_counter() - moved_at}
    return solution


def attach_certificate(result, solution, certify) -> None:
    """Attach ``verify``'s report at the backend's tolerances (``certify`` a dict overrides them).

    An uncertified ``"optimal"`` becomes ``"optimal_inaccurate"``; a solver's
    ``"optimal_inaccurate"`` that the certificate proves optimal becomes ``"optimal"`` (the solver's
    own word stays in ``info["solver_status"]``).
    """
    from ..certificates import verify

    if certify is False or getattr(result, "W", None) is None:
        return
    tolerances = dict(solution.tolerances)
    tolerances.update(certify if isinstance(certify, dict) else {})
    report = verify(result, **tolerances)
    result.certificate = report
    result.info.setdefault("solver_status", result.status)
    if not report.ok and result.status == "optimal":
        result.status = "optimal_inaccurate"
    elif report.ok and result.status == "optimal_inaccurate":
        result.status = "optimal"


@dataclass(frozen=True)
class Scaling:
    """The scales of :meth:`SparsityProgram.scaled`: ``x_n`` per row of ``W``, ``x`` (the objective's
    factor ``x / y``), and ``y``."""

    x_per_row: np.ndarray
    x: float
    y: float

    def weights(self, W_scaled: np.ndarray) -> np.ndarray:
        """``W[n] = W'[n] y / x_n``."""
        return W_scaled * (self.y / self.x_per_row)[:, None]

    def dual(self, dual_scaled):
        """``Lambda = Lambda' / x`` (None stays None)."""
        return None if dual_scaled is None else dual_scaled / self.x


@dataclass
class ProgramResult:
    """The outcome of :meth:`SparsityProgram.solve`.

    Attributes
    ----------
    W : ndarray, shape (N, M) or None
        The solution (None when the backend found none).
    status : str
        ``"optimal"``, ``"optimal_inaccurate"``, ``"infeasible"``, ``"unbounded"``,
        ``"max_iterations"``, ``"solver_error"``, or ``"stationary"`` (a nonconvex program: the prox
        method converged to a stationary point, which no certificate can call optimal).
    objective : float
        The program's objective at ``W`` (``inf`` without a solution).
    violation : float
        The relative constraint violation at ``W`` (:meth:`SparsityProgram.violation`).
    dual : ndarray, shape (P, M) or None
        ``Lambda``, the dual of ``Z = X @ W`` (the gradient of the fit at the solution).
    solve_time, compile_time, wall_time : float
    iterations : object
    backend : str
    program : SparsityProgram
    certificate : CertificateReport or None
    info : dict
    """

    program: SparsityProgram
    backend: str
    status: str
    solve_time: float = 0.0
    compile_time: float = 0.0
    wall_time: float = 0.0
    W: np.ndarray | None = None
    objective: float = float("inf")
    violation: float = float("nan")
    dual: np.ndarray | None = None
    iterations: object = None
    certificate: object = None
    info: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros in ``W``."""
        return float(np.mean(self.W == 0)) if self.W is not None else float("nan")

    def __repr__(self) -> str:
        P, N, M = self.program.shape
        return (f"ProgramResult(status={self.status!r}, backend={self.backend!r}, shape=({N}, {M}), "
                f"sparsity={self.sparsity:.3f}, objective={self.objective:.6g}, "
                f"violation={self.violation:.2e}, solve_time={self.solve_time:.3f}s)")
