"""Net-Trim for one layer: the program as an object, its lowerings, and its result.

Batch-first (DESIGN section 1): a layer input ``X`` has shape ``(P, N)``, weights ``U`` shape ``(N, M)``,
``Z = X @ U`` shape ``(P, M)``, the trained layer's output ``Y`` shape ``(P, M)``. With
``Omega = {(p, m) : Y[p, m] > 0}`` and thresholds ``V`` (default 0), paper 004's programs are

* constrained (eqs. 3-5)::

      minimize ||U||_1  s.t.  sum_{Omega} (Z - Y)^2 <= epsilon^2,   Z <= V off Omega

* regularized (eq. 11)::

      minimize ||U||_1 + lam * sum_{Omega} (Z - Y)^2   s.t.   Z <= V off Omega

``relu=False`` (a linear layer) makes Omega every entry and drops the inequality. With ``bias=True``
``X`` gains a trailing column of ones and ``U`` a last row holding the bias.
"""

from __future__ import annotations

import time

import numpy as np

from ._numerics import root_mean_square, stable_norm
from ._validation import as_float_array, check_bool, check_exactly_one, check_scalar
from .errors import InvalidInputError
from .fits import Below, Budget, Squared
from .penalties import L1
from .programs import SparsityProgram
from .programs.program import attach_certificate
from .results import NetTrimResult

__all__ = ["NetTrimProblem", "NetTrimResult"]


def _relu(x: np.ndarray) -> np.ndarray:
    return np.maximum(x, 0.0)


class NetTrimProblem:
    """Net-Trim for one layer (paper 004), in constrained or regularized form.

    Exactly one of ``epsilon``, ``rel_epsilon`` and ``lam`` is given.

    Parameters
    ----------
    X : array_like, shape (P, N)
        The layer's input, one sample per row.
    Y : array_like, shape (P, M)
        The trained layer's output on ``X`` (after the ReLU when ``relu=True``, so ``Y >= 0``).
    epsilon : float or array_like of shape (M,), optional
        Constrained form with the budget ``sum_{Omega} (Z - Y)^2 <= epsilon^2`` on the whole layer; an
        array gives one budget per column (``sum_{Omega_m} (Z[:, m] - Y[:, m])^2 <= epsilon[m]^2``,
        columns decoupled, as with ``split_budget``).
    rel_epsilon : float, optional
        Constrained form with ``epsilon = rel_epsilon * ||Y||_F`` (the paper's practical choice).
    lam : float, optional
        Regularized form with weight ``lam > 0`` on the squared error.
    V : array_like, shape (P, M), optional
        Thresholds: ``Z <= V`` off Omega. Default 0 (the pruned unit stays off where it was off).
    relu : bool, default True
        Whether the layer is followed by a ReLU. ``False`` for a linear (last) layer.
    bias : bool, default False
        Whether the layer has a bias: ``X`` gains a column of ones, the weights a bias row.
    penalize_bias : bool, default True
        Whether the bias row is in the l1 term (the papers penalize it).
    split_budget : bool, default False
        Constrained form only: replace the one layer budget by per-column budgets
        ``epsilon_m = epsilon * ||Y[:, m]||_2 / ||Y||_F`` (their squares sum to ``epsilon^2``). Columns
        then decouple and are solved independently.
    zero_tol : float, default 1e-6
        Cleaning rule for exact zeros. An entry's size is what it adds to the outputs,
        ``c[n, m] = |U[n, m]| rms(X_design[:, n])``, and it is set to 0 when ``c[n, m] <= zero_tol *
        max(max_n c[n, m], max(rms(Y), rms(V)) / sqrt(N_design))``: relative to the column's
        largest, with a floor at the size of one term of a dense layer that produces outputs of
        ``Y``'s size, so that a column that should be 0 (a dead unit, ``Y[:, m] = 0``) is exactly 0
        and rescaling an input, or the data, changes nothing. The constraints are then re-checked:
        while cleaning would raise the relative violation above ``max(violation before cleaning,
        feas_tol)``, the tolerance is divided by 10 (three times at most, then the solution is
        kept as the backend returned it).
    feas_tol : float, default 1e-6
        The relative violation that cleaning may introduce (the certificates' default tolerance).

    Attributes
    ----------
    X_design : ndarray, shape (P, N_design)
        ``X``, with the ones column when ``bias=True`` (``N_design = N + bias``).
    active : ndarray of bool, shape (P, M)
        Omega: ``Y > 0`` for a ReLU layer, all True for a linear one.
    form : {"constrained", "regularized"}
    epsilon : float or None
        The layer budget (constrained form).
    column_budgets : ndarray, shape (M,), or None
        Per-column budgets when ``split_budget=True``.
    penalty_weights : ndarray, shape (N_design,)
        Weight of each row of ``U`` in the l1 term (0 on an unpenalized bias row).

    Examples
    --------
    >>> import numpy as np, convexnet as cn
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((40, 8)); W = rng.standard_normal((8, 3))
    >>> prob = cn.NetTrimProblem(X, np.maximum(X @ W, 0), rel_epsilon=0.05)
    >>> res = prob.solve(backend="clarabel")
    >>> bool(res.discrepancy <= prob.epsilon * (1 + 1e-6))
    True
    """

    def __init__(self, X, Y, *, epsilon=None, rel_epsilon=None, lam=None, V=None, relu=True,
                 bias=False, penalize_bias=True, split_budget=False, zero_tol=1e-6,
                 feas_tol=1e-6):
        X = as_float_array("X", X, ndim=2)
        Y = as_float_array("Y", Y, ndim=2)
        if X.shape[0] != Y.shape[0]:
            raise InvalidInputError(
                f"X has {X.shape[0]} rows (samples) but Y has {Y.shape[0]}; both are batch-first, "
                "one sample per row (transpose data laid out as in the papers, samples as columns).")
        if X.shape[0] == 0:
            raise InvalidInputError("X and Y have no rows (P = 0 samples); pass the layer's input "
                                    "and output on at least one calibration sample.")
        if Y.shape[1] == 0:
            raise InvalidInputError("Y has no columns (M = 0 outputs); a layer to trim has at "
                                    "least one output unit.")
        check_exactly_one({"epsilon": epsilon, "rel_epsilon": rel_epsilon, "lam": lam},
                          " (epsilon or rel_epsilon: constrained form; lam: regularized form)")
        relu, bias = check_bool("relu", relu), check_bool("bias", bias)
        penalize_bias = check_bool("penalize_bias", penalize_bias)
        split_budget = check_bool("split_budget", split_budget)
        if relu and (Y < 0).any():
            raise InvalidInputError(
                "Y has negative entries but relu=True: Y must be the ReLU layer's output (>= 0); "
                "pass relu=False for a linear layer.")
        if V is None:
            V = np.zeros_like(Y)
        else:
            V = as_float_array("V", V, ndim=2)
            if V.shape != Y.shape:
                raise InvalidInputError(f"V must have the shape of Y, {Y.shape}; got {V.shape}.")
        self.zero_tol = check_scalar("zero_tol", zero_tol, low=0.0)
        if self.zero_tol >= 1.0:
            raise InvalidInputError(f"zero_tol must be < 1 (relative to a column's largest entry); "
                                    f"got {self.zero_tol}.")
        self.feas_tol = check_scalar("feas_tol", feas_tol, low=0.0)

        self.X, self.Y, self.V = X, Y, V
        self.relu, self.bias, self.penalize_bias = relu, bias, penalize_bias
        self.X_design = np.hstack([X, np.ones((X.shape[0], 1))]) if bias else X
        self.active = Y > 0 if relu else np.ones(Y.shape, dtype=bool)
        self.penalty_weights = np.ones(self.X_design.shape[1])
        if bias and not penalize_bias:
            self.penalty_weights[-1] = 0.0

        self.epsilon = self.lam = self.column_budgets = None
        if lam is not None:
            self.form = "regularized"
            self.lam = check_scalar("lam", lam, low=0.0, low_inclusive=False)
            if split_budget:
                raise InvalidInputError("split_budget applies to the constrained form; drop it "
                                        "(the regularized form already decouples columns).")
        else:
            self.form = "constrained"
            column_budgets = None
            if epsilon is not None and np.ndim(epsilon) == 1:
                column_budgets = as_float_array("epsilon", epsilon, ndim=1)
                if column_budgets.shape != (Y.shape[1],):
                    raise InvalidInputError(f"epsilon as an array holds one budget per column of Y: "
                                            f"shape ({Y.shape[1]},); got {column_budgets.shape}.")
                if (column_budgets < 0).any():
                    raise InvalidInputError("epsilon must be >= 0 in every column.")
                self.epsilon = stable_norm(column_budgets)
            elif epsilon is not None:
                self.epsilon = check_scalar("epsilon", epsilon, low=0.0)
            else:
                rel = check_scalar("rel_epsilon", rel_epsilon, low=0.0)
                self.epsilon = rel * stable_norm(Y)
            if column_budgets is None and split_budget:
                y_norm = stable_norm(Y)
                shares = (stable_norm(Y, axis=0) / y_norm if y_norm > 0
                          else np.full(Y.shape[1], Y.shape[1] ** -0.5))
                column_budgets = self.epsilon * shares
            self.column_budgets = column_budgets
        self.program = self._program()
        # Set by from_gram: the statistics, and ||Y[:, m]||^2 left after the best fit on X's range.
        self.gram = None
        self.residual_floor = np.zeros(Y.shape[1])

    def _program(self) -> SparsityProgram:
        """The layer as a :class:`~convexnet.SparsityProgram`: a fit on Omega (the squared loss, or
        the budget of the layer or of each column), ``Z <= V`` off Omega, the weighted l1 norm."""
        if self.lam is not None:
            fit = Squared(self.Y, weight=self.lam, mask=self.active)
        else:
            budget = self.column_budgets if self.column_budgets is not None else self.epsilon
            fit = Budget(self.Y, budget, mask=self.active)
        fits = [fit] if self.active.all() else [fit, Below(self.V, mask=~self.active)]
        return SparsityProgram(self.X_design, fit=fits, penalty=L1(1.0, weights=self.penalty_weights))

    @classmethod
    def from_gram(cls, gram, *, epsilon=None, rel_epsilon=None, lam=None, bias: bool = False,
                  penalize_bias: bool = True, split_budget: bool = False,
                  **options) -> "NetTrimProblem":
        """A linear layer's program from its sufficient statistics (:class:`convexnet.GramData`).

        Without a mask the fit depends on the samples only through ``X^T X``, ``X^T Y`` and
        ``||Y||``; the program is solved in the compressed sample form of
        :mod:`convexnet.programs.gram` (``r <= N`` rows, memory independent of P), with the same
        solution as the sample form. The budget is the layer's, ``||X W + b - Y||_F <= epsilon``
        (``rel_epsilon`` relative to ``||Y||_F``); in the compressed program it becomes
        ``sqrt(epsilon^2 - floor^2)``, where ``floor`` (``residual_floor``) is the part of ``Y`` that
        no ``W`` reaches. ``result.discrepancy`` is the full ``||X W + b - Y||_F``.

        Parameters
        ----------
        gram : GramData
        epsilon, rel_epsilon, lam
            Exactly one, as for the class (``epsilon`` may hold one budget per column).
        bias, penalize_bias, split_budget
            As for the class.
        **options
            ``zero_tol``, ``feas_tol``.

        Raises
        ------
        InvalidInputError
            When the budget is below the floor (no ``W`` meets it).
        """
        from .programs.gram import net_trim_problem

        return net_trim_problem(cls, gram, epsilon=epsilon, rel_epsilon=rel_epsilon, lam=lam,
                                bias=bias, penalize_bias=penalize_bias, split_budget=split_budget,
                                **options)

    @classmethod
    def from_weights(cls, X, W, b=None, *, relu=True, **kwargs) -> "NetTrimProblem":
        """The program that re-learns a trained layer ``Y = act(X @ W + b)`` sparsely.

        Parameters
        ----------
        X : array_like, shape (P, N)
        W : array_like, shape (N, M)
        b : array_like, shape (M,), optional
            When given, ``bias=True``.
        relu : bool
        **kwargs
            The budget (``epsilon``, ``rel_epsilon`` or ``lam``) and other options of the class.
        """
        X = as_float_array("X", X, ndim=2)
        W = as_float_array("W", W, ndim=2)
        if W.shape[0] != X.shape[1]:
            raise InvalidInputError(f"W must have shape (N, M) with N = X.shape[1] = {X.shape[1]}; "
                                    f"got {W.shape} (torch's Linear.weight is W.T).")
        Z = X @ W
        if b is not None:
            b = as_float_array("b", b, ndim=1)
            if b.shape[0] != W.shape[1]:
                raise InvalidInputError(f"b must have shape ({W.shape[1]},); got {b.shape}.")
            Z = Z + b
        return cls(X, _relu(Z) if relu else Z, relu=relu, bias=b is not None, **kwargs)

    # ----------------------------------------------------------------------------------- shapes
    @property
    def shape(self) -> tuple[int, int, int]:
        """``(P, N, M)``: samples (those of the Gram data for a Gram-form problem), inputs (without
        the bias column), outputs."""
        samples = self.gram.n if self.gram is not None else self.X.shape[0]
        return samples, self.X.shape[1], self.Y.shape[1]

    @property
    def decoupled(self) -> bool:
        """True when columns are independent programs (regularized, or split budgets)."""
        return self.program.separable

    # ------------------------------------------------------------------------------- lowerings
    def to_cvxpy(self):
        """The whole layer as a CVXPY problem, to solve or to compose with other constraints.

        Returns
        -------
        problem : cvxpy.Problem
            Variables ``U`` (N_design, M) and ``Z`` (P, M). ``problem.constraints[0]`` is the graph
            equality ``Z == X_design @ U``; the negative of its dual value is the dual ``Lambda``
            of :attr:`NetTrimResult.dual`. Per-column budgets become one constraint per column.
        U : cvxpy.Variable, shape (N_design, M)

        Examples
        --------
        >>> import cvxpy as cp
        >>> problem, U = prob.to_cvxpy()                           # doctest: +SKIP
        >>> cp.Problem(problem.objective, problem.constraints + [U[0, :] == 0]).solve()  # doctest: +SKIP
        """
        return self.program.to_cvxpy()

    def to_graph_form(self):
        """The layer in the ADMM contract ``min g(W) + f(Z) s.t. Z = X W`` (:mod:`solvers.graph_form`)."""
        return self.program.to_graph_form()

    # ---------------------------------------------------------------------------------- solving
    def solve(self, backend: str = "auto", *, solver_options: dict | None = None, executor=None,
              certify: bool | dict = True, verbose: bool = False,
              sparsest: bool = True) -> "NetTrimResult":
        """Solve the program and return a cleaned, re-checked result.

        Parameters
        ----------
        backend : {"auto", "clarabel", "osqp", "scs", "admm"}
            ``"auto"`` runs ADMM and its polish (every form of a layer), and Clarabel for what
            does not polish: a decoupled form's columns on their likely support, then whole; a
            coupled budget's columns on their supports at once, moved to a vertex and polished,
            else the layer whole (``result.backend`` is then ``"admm+clarabel"``; see the user
            guide). OSQP takes quadratic programs only: the regularized form.
        solver_options : dict, optional
            Passed to the backend (CVXPY solver keywords, or ADMM options).
        executor : concurrent.futures.Executor, optional
            Runs independent column chunks (decoupled forms) as jobs, e.g. a Dask client's
            ``get_executor()``. Default: in-process.
        certify : bool or dict, default True
            Attach the duality-gap certificate (:func:`convexnet.certificates.verify`) to the result,
            at the backend's accuracy: ``1e-6`` relative gap and violation for the CVXPY backends, the
            ADMM's ``violation_tol`` (default ``1e-4``) for both with ``"admm"``. A dict overrides the
            tolerances (``gap_tol``, ``feas_tol``). A result whose certificate fails is never reported
            ``"optimal"``: its status becomes ``"optimal_inaccurate"``.
        verbose : bool
            Print the solver's log.
        sparsest : bool, default True
            Move the optimum to a vertex of the optimal face at equal objective (the sparsest-vertex
            move of :mod:`convexnet.programs.vertex`): the same sparsity from every backend.

        Returns
        -------
        NetTrimResult
        """
        if isinstance(certify, dict):
            unknown = sorted(set(certify) - {"gap_tol", "feas_tol"}, key=str)
            if unknown:
                raise InvalidInputError(f"certify has unknown keys {unknown}; the tolerances it "
                                        "may set are 'gap_tol' and 'feas_tol'.")
            certify = {key: check_scalar(f"certify[{key!r}]", value, low=0.0)
                       for key, value in certify.items()}
        solution, start = self.program._run(backend, solver_options, executor, certify, verbose,
                                            sparsest)
        result = self._finish(solution)
        attach_certificate(result, solution, certify)
        result.wall_time = time.perf_counter() - start
        return result

    # ----------------------------------------------------------------------- evaluation helpers
    def activation(self, Z: np.ndarray) -> np.ndarray:
        """``relu(Z)`` for a ReLU layer, ``Z`` for a linear one."""
        return _relu(Z) if self.relu else Z

    def objective(self, W_design: np.ndarray) -> float:
        """The program's objective at ``W_design`` (N_design, M) (:meth:`SparsityProgram.objective`);
        a Gram-form regularized problem adds back ``lam`` times the floor its compression left out."""
        offset = self.lam * float(np.sum(self.residual_floor)) if self.lam is not None else 0.0
        return self.program.objective(W_design) + offset

    def violation(self, W_design: np.ndarray) -> float:
        """Relative constraint violation of ``W_design``: 0 when feasible.

        The program's rule (:meth:`SparsityProgram.violation`), the one every backend and the
        certificates use: the budget excess ``(||(Z - Y)_Omega|| - epsilon)_+`` relative to
        ``max(epsilon, 1e-3 ||Y_Omega||)`` (per column with split budgets, the largest), and the
        threshold excess ``max_{off Omega} (Z - V)_+`` relative to the largest magnitude of ``Y``
        on Omega and ``V`` off it.
        """
        return self.program.violation(W_design)

    def clean(self, W_design: np.ndarray) -> np.ndarray:
        """Exact zeros by the rule of ``zero_tol`` (class docstring), feasibility preserved."""
        reference = max(self.violation(W_design), self.feas_tol)
        # Entries are compared by what they add to the outputs, |U[n, m]| rms(X[:, n]): unlike |U|,
        # that does not change when an input (or the bias's ones column) is rescaled.
        P = self.X_design.shape[0]
        contributions = np.abs(W_design) * (stable_norm(self.X_design, axis=0) / np.sqrt(P))[:, None]
        # The floor zeroes what a solver leaves in a column that should be 0 (a dead unit, Y = 0):
        # relative to its own largest entry nothing there is small.
        outputs = max(root_mean_square(self.Y), root_mean_square(self.V))
        floor = outputs / np.sqrt(self.X_design.shape[1]) if outputs > 0 else np.inf
        scale = np.maximum(contributions.max(axis=0, keepdims=True), floor)
        tol = self.zero_tol
        while tol >= self.zero_tol * 1e-3:
            cleaned = np.where(contributions <= tol * scale, 0.0, W_design)
            if self.violation(cleaned) <= reference:
                return cleaned
            tol /= 10.0
        return W_design

    def _finish(self, solution) -> "NetTrimResult":
        result = NetTrimResult(problem=self, backend=solution.backend, status=solution.status,
                               solve_time=solution.solve_time, compile_time=solution.compile_time,
                               column_status=solution.info.get("column_status"),
                               iterations=solution.iterations, dual=solution.dual,
                               info=solution.info)
        if solution.W is None:
            return result
        W_design = self.clean(solution.W)
        result.W_design = W_design
        result.objective = self.objective(W_design)
        result.violation = self.violation(W_design)
        Z = self.X_design @ W_design
        # A Gram-form problem adds back the part of Y no W reaches (zero for sample data).
        residual = (self.activation(Z) - self.Y).ravel()
        floor = float(np.sum(self.residual_floor))
        result.discrepancy = stable_norm(np.append(residual, np.sqrt(floor)) if floor else residual)
        return result
