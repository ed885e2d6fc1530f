"""The duality-gap certificate of a Net-Trim layer (DESIGN section 5, paper 004), and :func:`verify`.

Any dual point ``Lambda`` of the Net-Trim layer program, repaired to be dual feasible, gives a lower
bound on the optimal value; with a feasible primal ``W`` the gap ``primal - dual >= 0`` bounds how far
``W`` is from optimal. It needs only numpy, so it checks a backend without trusting it.

The layer program, batch-first: data ``X`` (P, N) (with a trailing ones column when the layer has a
bias), weights ``W`` (N, M), ``Z = X @ W``, targets ``Y`` (P, M), mask ``A`` = Omega (P, M),
thresholds ``V`` (P, M), l1 weights ``c`` (N,), ``g(W) = sum_{n, m} c_n |W[n, m]|``:

* regularized: ``min g(W) + lam * sum_A (Z - Y)^2``  s.t. ``Z <= V`` off A;
* constrained: ``min g(W)`` s.t. ``||(Z - Y)_A||_F <= epsilon`` (coupled) or
  ``||(Z - Y)_A[:, m]|| <= epsilon_m`` for every m (per column), and ``Z <= V`` off A.

Their Fenchel duals in ``Lambda`` (P, M), ``xi = Lambda`` on A, ``mu = Lambda`` off A:

* regularized: ``max -<Y_A, xi> - ||xi||^2 / (4 lam) - <V_B, mu>``;
* constrained: ``max -<Y_A, xi> - epsilon ||xi||_F - <V_B, mu>`` (or ``- sum_m epsilon_m ||xi_m||``);

both subject to ``|X^T Lambda|[n, m] <= c_n`` and ``mu >= 0``. A backend's ``Lambda`` is the gradient
of the loss at ``Z``: ``X^T Lambda`` lies in ``-dg(W)`` at optimality; regularized
``xi = 2 lam (Z - Y)_A``; constrained ``xi = lambda (Z - Y)_A / ||(Z - Y)_A||`` with the budget's
multiplier ``lambda >= 0``; ``mu`` the multiplier of ``Z <= V``. These are CVXPY's constraint duals.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

import numpy as np

from .._validation import as_float_array, check_exactly_one, check_scalar, check_shape
from ..errors import InvalidInputError
from .layer_duals import LayerLoss, construct_dual, repair_dual

__all__ = ["CertificateReport", "duality_gap", "primal_violation", "verify"]

GAP_TOL = 1e-6
FEAS_TOL = 1e-6


@dataclass(frozen=True)
class CertificateReport:
    """The duality-gap certificate of one layer solution.

    Attributes
    ----------
    ok : bool
        ``relative_gap <= gap_tol`` and ``primal_violation <= feas_tol``.
    gap : float
        ``primal - dual``: an upper bound on ``primal - optimal`` when the primal is feasible
        (then ``gap >= 0`` up to round-off).
    relative_gap : float
        ``gap / max(1, |primal|)``.
    primal_violation : float
        ``max(budget_violation, inequality_violation)``; 0 for a feasible ``W``.
    budget_violation : float
        ``(||r_A|| - epsilon)_+ / max(epsilon, 1e-3 ||Y_A||)`` with ``r = Z - Y`` (per-column
        budgets: the largest over columns). 0 for the regularized form.
    inequality_violation : float
        ``max_{off A} (Z - V)_+`` over the largest magnitude of ``Y`` on A and ``V`` off it (1 when
        both are 0). Both parts are the fit terms' rule (:mod:`convexnet.fits`).
    primal, dual : float
        The primal objective at ``W`` and the dual objective at the repaired ``Lambda``.
    form : str
        ``"regularized"``, ``"constrained"`` (coupled budget) or ``"constrained_per_column"``.
    dual_source : str
        ``"supplied"`` or ``"constructed"`` (built from ``W`` because no dual was given).
    dual_scale : float
        The factor ``t`` applied to the candidate (after clipping and cancelling) to make it feasible
        and best: the maximizer of the dual objective over ``[0, 1 / max_{n,m} |X^T Lambda| / c_n]``.
        Separable forms (regularized, per-column budgets) scale each column by its own best ``t``
        (the maximum then runs over ``n`` only); this reports the smallest.
    dropped_columns : tuple of int
        Columns whose dual was set to 0 because ``X^T Lambda`` could not be cancelled on the
        unpenalized rows by changing ``xi`` (see :func:`duality_gap`).
    unpenalized_residual : float
        ``max |X^T Lambda|`` on unpenalized rows after repair (round-off; exactly feasible in theory).
    multiplier : ndarray, shape (P, M)
        The dual-feasible ``Lambda`` that gives ``dual``.
    gap_tol, feas_tol : float
        The tolerances ``ok`` was judged with.
    """

    ok: bool
    gap: float
    relative_gap: float
    primal_violation: float
    budget_violation: float
    inequality_violation: float
    primal: float
    dual: float
    form: str
    dual_source: str
    dual_scale: float
    dropped_columns: tuple[int, ...]
    unpenalized_residual: float
    gap_tol: float
    feas_tol: float
    multiplier: np.ndarray = field(repr=False)

    def __str__(self) -> str:
        verdict = "OK" if self.ok else "NOT CERTIFIED"
        gap_mark = "<=" if self.relative_gap <= self.gap_tol else ">"
        feas_mark = "<=" if self.primal_violation <= self.feas_tol else ">"
        dropped = (f"; dual set to 0 on columns {list(self.dropped_columns)}"
                   if self.dropped_columns else "")
        return (f"duality-gap certificate ({self.form}): {verdict}\n"
                f"  primal {self.primal:.10g}   dual {self.dual:.10g}\n"
                f"  gap {self.gap:.3e}, relative {self.relative_gap:.3e} {gap_mark} {self.gap_tol:g}\n"
                f"  primal violation {self.primal_violation:.3e} {feas_mark} {self.feas_tol:g} "
                f"(budget {self.budget_violation:.3e}, inequality {self.inequality_violation:.3e})\n"
                f"  dual {self.dual_source}, scaled by {self.dual_scale:.6g}{dropped}")


def duality_gap(X, Y, active, V, W, dual=None, *, epsilon=None, column_budgets=None, lam=None,
                l1_weights=None, gap_tol: float = GAP_TOL, feas_tol: float = FEAS_TOL
                ) -> CertificateReport:
    """Certify a Net-Trim layer solution by a duality gap (numpy only).

    Give exactly one of ``lam`` (regularized), ``epsilon`` (constrained, one budget for the layer)
    and ``column_budgets`` (constrained, one budget per column). The programs and their duals are in
    the module docstring.

    Parameters
    ----------
    X : array_like, shape (P, N)
        The design matrix (with the trailing ones column when the layer has a bias).
    Y : array_like, shape (P, M)
        Targets.
    active : array_like of bool, shape (P, M), or None
        Omega. None means every entry (a linear layer: no inequality).
    V : array_like, shape (P, M), or None
        Thresholds off Omega (default 0).
    W : array_like, shape (N, M)
        The primal point to certify.
    dual : array_like, shape (P, M), optional
        A candidate ``Lambda`` in the convention of the module docstring; it need not be feasible.
        When None, one is built from ``W``: ``xi`` along the residual with the multiplier fitted by
        nonnegative least squares on the support, ``mu`` on the tight inequalities likewise. It is
        tight for an optimal ``W`` with an active budget; with a zero budget ``xi`` has no residual
        to follow and the fitted point is a valid but loose bound (supply the backend's dual).
    epsilon : float, optional
    column_budgets : array_like, shape (M,), optional
    lam : float, optional
    l1_weights : array_like, shape (N,), optional
        ``c``: 1 (default) or 0 on an unpenalized (bias) row.
    gap_tol, feas_tol : float
        ``ok`` needs ``relative_gap <= gap_tol`` and ``primal_violation <= feas_tol``.

    Returns
    -------
    CertificateReport

    Notes
    -----
    The candidate is repaired to dual feasibility before its value is taken: ``mu <- max(mu, 0)``;
    on an unpenalized row (``c_n = 0``) feasibility needs ``(X^T Lambda)[n, :] = 0`` exactly, which
    is obtained by the smallest change of ``xi`` on each column (``mu`` untouched, so still
    ``>= 0``); a column where no change of ``xi`` can do it (no active row for a bias) gets
    ``Lambda[:, m] = 0``, feasible but weak, and is listed in ``dropped_columns``. Last, ``Lambda`` is
    scaled by the ``t >= 0`` that keeps ``|X^T Lambda|[n, m] <= c_n`` and maximizes the dual
    objective (in the constrained form only the direction of ``Lambda`` matters). A second candidate,
    ``Lambda`` changed as little as possible to meet the optimality equations exactly on the support
    of ``W``, is repaired the same way and the better dual value kept (both are valid bounds): an
    inaccurate ``Lambda`` then costs the square of its error in the gap instead of the error.

    Examples
    --------
    >>> import numpy as np
    >>> X = np.eye(3); Y = np.array([[1.0], [2.0], [0.5]])
    >>> W = Y - 1 / (2 * 4.0)        # soft threshold at 1 / (2 lam): the exact solution
    >>> duality_gap(X, Y, None, None, W, lam=4.0).ok
    True
    """
    X = as_float_array("X", X, ndim=2)
    Y = as_float_array("Y", Y, ndim=2)
    W = as_float_array("W", W, ndim=2)
    P, N = X.shape
    M = Y.shape[1]
    check_shape("Y", Y, (P, M), "(P, M) with P = X.shape[0]")
    check_shape("W", W, (N, M), "(N, M) with N = X.shape[1], M = Y.shape[1]")
    active = _as_mask(active, (P, M))
    V = np.zeros((P, M)) if V is None else as_float_array("V", V, ndim=2)
    check_shape("V", V, (P, M), "(P, M), the shape of Y")
    weights = np.ones(N) if l1_weights is None else as_float_array("l1_weights", l1_weights, ndim=1)
    check_shape("l1_weights", weights, (N,), "(N,), one per row of W")
    if (weights < 0).any():
        raise InvalidInputError("l1_weights must be >= 0 (use 0 for an unpenalized bias row).")
    loss = _layer_loss(Y, active, V, epsilon=epsilon, column_budgets=column_budgets, lam=lam)
    gap_tol = check_scalar("gap_tol", gap_tol, low=0.0)
    feas_tol = check_scalar("feas_tol", feas_tol, low=0.0)
    if dual is not None:
        dual = as_float_array("dual", dual, ndim=2)
        check_shape("dual", dual, (P, M), "(P, M), the shape of Y")

    Z = X @ W
    primal = float(np.sum(weights[:, None] * np.abs(W))) + sum(term.value(Z) for term in loss.terms)
    budget_violation, inequality_violation = _violations(X, W, loss)
    violation = max(budget_violation, inequality_violation)

    source = "supplied" if dual is not None else "constructed"
    if dual is None:
        dual = construct_dual(X, Y, V, active, W, weights, loss)
    # A dual value above `enough` already certifies gap_tol: the costly support alignment is skipped.
    enough = primal - gap_tol * max(1.0, abs(primal))
    repaired = repair_dual(X, Y, V, active, dual, weights, loss, W=W, enough=enough)
    gap = primal - repaired.value
    relative_gap = gap / max(1.0, abs(primal))
    form = loss.label
    return CertificateReport(
        ok=bool(relative_gap <= gap_tol and violation <= feas_tol), gap=gap,
        relative_gap=relative_gap, primal_violation=violation, budget_violation=budget_violation,
        inequality_violation=inequality_violation, primal=primal, dual=repaired.value, form=form,
        dual_source=source, dual_scale=repaired.scale, dropped_columns=repaired.dropped_columns,
        unpenalized_residual=repaired.unpenalized_residual, gap_tol=gap_tol, feas_tol=feas_tol,
        multiplier=repaired.dual)


def verify(result, *, gap_tol: float | None = None, feas_tol: float | None = None):
    """Certify a result by its duality gap (**contract**).

    A :class:`~convexnet.ProgramResult` (any :class:`~convexnet.SparsityProgram`) is certified from
    its terms' conjugates (:mod:`convexnet.certificates.programs`), by default at the accuracy its backend
    promised (``res.info["tolerances"]``: 1e-6 for the interior-point and polished results, ADMM's
    ``violation_tol`` otherwise); a Net-Trim layer result as below, by default at 1e-6.

    Parameters
    ----------
    result : ProgramResult, NetTrimResult or mapping
        For a Net-Trim layer, read: ``W_design`` (N_design, M), ``dual`` ((P, M) or None: then a dual is built from the
        primal) and ``problem`` with ``X_design``, ``Y``, ``V``, ``active``, ``form``
        (``"constrained"`` or ``"regularized"``), ``epsilon``, ``column_budgets`` (set when the budget
        is split per column; it takes precedence over ``epsilon``), ``lam`` and ``penalty_weights``.
        A mapping (a dict, or ``numpy.load`` of an ``.npz``) holds the same names, either flat or
        under ``"problem"``; leave out a key whose value is None.
    gap_tol, feas_tol : float, optional
        Tolerances of ``ok`` (see :func:`duality_gap`).

    Returns
    -------
    CertificateReport or ProgramCertificate

    Raises
    ------
    InvalidInputError
        When the result has no solution (``W_design`` is None) or a field is missing or malformed.

    Examples
    --------
    >>> import numpy as np
    >>> saved = {"W_design": np.array([[0.875]]), "X_design": np.eye(1), "Y": np.array([[1.0]]),
    ...          "V": np.zeros((1, 1)), "active": np.ones((1, 1), bool), "form": "regularized",
    ...          "lam": 4.0, "penalty_weights": np.ones(1)}
    >>> verify(saved).ok
    True
    """
    program = getattr(result, "program", None)
    if program is not None:
        return _verify_program(result, program, gap_tol=gap_tol, feas_tol=feas_tol)
    gap_tol = GAP_TOL if gap_tol is None else gap_tol
    feas_tol = FEAS_TOL if feas_tol is None else feas_tol
    W = _read(result, "W_design")
    if W is None:
        raise InvalidInputError(
            "result has no solution to certify (W_design is None; the solve failed with status "
            f"{_read(result, 'status')!r}); certify only results that hold weights.")
    problem = _read(result, "problem")
    source = result if problem is None else problem
    form = _read(source, "form")
    if form not in ("constrained", "regularized"):
        raise InvalidInputError(f"problem.form must be 'constrained' or 'regularized'; got {form!r}.")
    required = ("X_design", "Y", "penalty_weights")
    missing = [name for name in required if _read(source, name) is None]
    if missing:
        raise InvalidInputError(f"result lacks {missing}; a saved result must hold {list(required)}.")
    budgets = {}
    if _read(source, "lam") is not None:
        budgets["lam"] = _read(source, "lam")
    elif _read(source, "column_budgets") is not None:
        budgets["column_budgets"] = _read(source, "column_budgets")
    else:
        budgets["epsilon"] = _read(source, "epsilon")
    return duality_gap(_read(source, "X_design"), _read(source, "Y"), _read(source, "active"),
                       _read(source, "V"), W, _read(result, "dual"),
                       l1_weights=_read(source, "penalty_weights"), gap_tol=gap_tol,
                       feas_tol=feas_tol, **budgets)


def _verify_program(result, program, *, gap_tol, feas_tol):
    """:func:`verify` of a :class:`~convexnet.programs.ProgramResult` (any convex program)."""
    from .programs import certify_program

    if result.W is None:
        raise InvalidInputError(f"result has no solution to certify (status {result.status!r}).")
    # By default, the accuracy the backend promised (1e-6 for the interior-point and polished
    # results, ADMM's violation_tol otherwise), as for the certificate solve() attached.
    promised = result.info.get("tolerances", {})
    gap_tol = promised.get("gap_tol", GAP_TOL) if gap_tol is None else gap_tol
    feas_tol = promised.get("feas_tol", FEAS_TOL) if feas_tol is None else feas_tol
    gap_tol = check_scalar("gap_tol", gap_tol, low=0.0)
    feas_tol = check_scalar("feas_tol", feas_tol, low=0.0)
    return certify_program(program, result.W, result.dual, gap_tol=gap_tol, feas_tol=feas_tol)


def _read(source, name):
    """``source.name`` or ``source[name]``, None when absent; 0-d arrays unboxed (saved scalars)."""
    if isinstance(source, Mapping):
        try:
            value = source[name]
        except KeyError:
            return None
        except ValueError as error:
            raise InvalidInputError(
                f"saved field {name!r} cannot be read ({error}); leave out fields that are None "
                "when saving, or load with allow_pickle=True.") from None
    else:
        value = getattr(source, name, None)
    if isinstance(value, np.ndarray) and value.ndim == 0:
        value = value.item()
    return value


def _as_mask(active, shape) -> np.ndarray:
    if active is None:
        return np.ones(shape, dtype=bool)
    mask = np.asarray(active)
    if mask.dtype != bool:
        numeric = as_float_array("active", mask, ndim=2)
        if not np.isin(numeric, (0.0, 1.0)).all():
            raise InvalidInputError("active must be a boolean mask (Omega = Y > 0 for a ReLU layer).")
        mask = numeric.astype(bool)
    check_shape("active", mask, shape, "(P, M), the shape of Y")
    return mask


def _layer_loss(Y, active, V, *, epsilon, column_budgets, lam) -> LayerLoss:
    """The layer's fit terms (:mod:`convexnet.fits`): the loss on Omega and ``Z <= V`` off it."""
    from ..fits import Below, Budget, Squared

    check_exactly_one({"lam": lam, "epsilon": epsilon, "column_budgets": column_budgets},
                      " (regularized; constrained with one layer budget; per column)")
    if lam is not None:
        fit = Squared(Y, weight=check_scalar("lam", lam, low=0.0, low_inclusive=False), mask=active)
    elif epsilon is not None:
        fit = Budget(Y, check_scalar("epsilon", epsilon, low=0.0), mask=active)
    else:
        budgets = as_float_array("column_budgets", column_budgets, ndim=1)
        check_shape("column_budgets", budgets, (Y.shape[1],), "(M,), one per column of Y")
        if (budgets < 0).any():
            raise InvalidInputError("column_budgets must be >= 0.")
        fit = Budget(Y, budgets, mask=active)
    return LayerLoss((fit,) if active.all() else (fit, Below(V, mask=~active)))


def _violations(X, W, loss: LayerLoss) -> tuple[float, float]:
    """``(budget part, inequality part)`` of the relative violation, by the fit terms' one rule
    (:meth:`convexnet.SparsityProgram.violation`, which every backend uses too)."""
    Z = X @ W
    terms = loss.terms
    scale = max(term.scale() for term in terms) or 1.0
    parts = [float(term.violation(Z, scale).max(initial=0.0)) for term in terms]
    return parts[0], (parts[1] if len(parts) > 1 else 0.0)


def primal_violation(X, Y, active, V, W, *, epsilon=None, column_budgets=None,
                     lam=None) -> float:
    """Relative constraint violation of ``W`` for the layer program: 0 when feasible.

    The larger of the budget excess ``(||r|| - epsilon)_+ / max(epsilon, 1e-3 ||Y_Omega||)`` (per
    column for per-column budgets, the largest) and the threshold excess ``max_{off A} (Z - V)_+``
    over the largest magnitude of ``Y`` on A and ``V`` off it: the fit terms' rule
    (:mod:`convexnet.fits`), shared by every backend, :func:`duality_gap` and
    ``NetTrimProblem.violation``. Inputs as in :func:`duality_gap` (already validated arrays).
    """
    loss = _layer_loss(Y, active, V, epsilon=epsilon, column_budgets=column_budgets, lam=lam)
    return max(_violations(X, W, loss))
