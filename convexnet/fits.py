r"""Fit terms: the part of a sparsity program that acts on the outputs ``Z = X @ W``.

A :class:`~convexnet.SparsityProgram` minimizes ``fit(X @ W) + penalty(W)`` over ``W`` in its sets.
The fit is one term or a sum of terms, each acting on the entries of ``Z`` (shape ``(P, M)``) where
its ``mask`` is True (all entries by default):

================  ======================================================  ==========================
term              meaning                                                 conjugate (dual part)
================  ======================================================  ==========================
``Squared``       ``weight * sum_mask (Z - Y)^2``                         ``<L, Y> + ||L||^2 / (4 w)``
``Budget``        ``sum_mask (Z - Y)^2 <= epsilon^2`` (or per column)     ``<L, Y> + epsilon ||L||``
``Below``         ``Z <= V`` on the mask                                  ``<L, V>``, ``L >= 0``
================  ======================================================  ==========================

Each term knows its meaning once: ``value`` (the finite part), ``violation`` (relative; 0 when the
term holds), ``cvxpy`` (its CVXPY lowering), ``conjugate`` and ``dual_domain`` (for certificates), and
``graph_term`` (its ADMM lowering, a :mod:`solvers.graph_terms` object). The fit terms of one program
must have disjoint masks: each output entry belongs to at most one term (an entry in none is free).

Example
-------
>>> import numpy as np
>>> from convexnet import fits
>>> Y = np.array([[1.0, 0.0], [2.0, 0.0]])
>>> round(float(fits.Squared(Y, weight=2.0).value(np.zeros((2, 2)))), 12)
10.0
"""

from __future__ import annotations

import numpy as np

from ._base import Parametrized
from ._numerics import stable_norm
from ._validation import as_float_array, check_bool, check_scalar
from .errors import InvalidInputError

__all__ = ["FitTerm", "Squared", "Budget", "Below", "BUDGET_SCALE_FLOOR"]

# A budget smaller than this fraction of ||Y_mask|| is measured against the fraction instead, so
# that epsilon = 0 (exact interpolation) still has a finite relative violation.
BUDGET_SCALE_FLOOR = 1e-3


def _as_mask(mask, shape) -> np.ndarray:
    if mask is None:
        return np.ones(shape, dtype=bool)
    if hasattr(mask, "detach"):
        mask = mask.detach().cpu().numpy()
    mask = np.asarray(mask)
    if mask.dtype != np.bool_:
        if mask.dtype.kind not in "biu" or not np.isin(mask, (0, 1)).all():
            raise InvalidInputError("mask must be boolean (or 0/1) of the shape of the target; "
                                    f"got dtype {mask.dtype}.")
        mask = mask.astype(bool)
    if mask.shape != tuple(shape):
        raise InvalidInputError(f"mask must have the target's shape {tuple(shape)}; got {mask.shape}.")
    return mask


def _column_parameters(P: int):
    """A 0/1 mask and a pre-masked target for one column (a product of two parameters is not DPP)."""
    import cvxpy as cp

    return cp.Parameter(P, nonneg=True, name="mask"), cp.Parameter(P, name="target")


class FitTerm(Parametrized):
    """A term on the outputs ``Z`` (P, M), acting where ``mask`` is True.

    Subclasses set ``is_constraint`` and ``separable`` (whether the term is a sum of per-column
    terms) and implement the methods below. ``target`` holds the term's data (``Y`` or ``V``).
    """

    convex = True
    is_constraint = False
    separable = True
    # Whether Z should come close to the target (a fit) rather than stay below it (a bound).
    fits_target = True
    # Whether the CVXPY lowering is quadratic-program representable (OSQP takes it as it is).
    quadratic = False

    def __init__(self, target, mask, name: str):
        self.target = as_float_array(name, target, ndim=2)
        self.mask = _as_mask(mask, self.target.shape)

    @property
    def shape(self) -> tuple[int, int]:
        """``(P, M)``: the shape of ``Z`` the term acts on."""
        return self.target.shape

    def _on_mask(self, values: np.ndarray) -> np.ndarray:
        return np.where(self.mask, values, 0.0)

    def select_columns(self, index) -> "FitTerm":
        """The same term on the columns ``index`` of ``Z`` (separable terms only)."""
        raise NotImplementedError(f"{type(self).__name__} does not define select_columns.")

    def scaled(self, x_scale: float, y_scale: float) -> "FitTerm":
        """The term in units ``X / x_scale``, ``Z / y_scale`` (the objective times ``x_scale /
        y_scale``); a term that does not say is solved in the program's own units."""
        raise NotImplementedError(f"{type(self).__name__} does not define scaled(x_scale, y_scale).")

    def column_cvxpy(self, w, z):
        """One column's lowering with CVXPY parameters; without it, the program is solved whole."""
        raise NotImplementedError(f"{type(self).__name__} does not define column_cvxpy.")

    # The methods every term implements:
    # value(Z) -> float; violation(Z, scale) -> (M,) array; cvxpy(Z) -> (expression or 0, constraints);
    # conjugate(L) -> (M,) array (or float for a coupled term); dual_domain(L) -> L on the domain;
    # graph_term() -> a solvers.graph_terms output term; scale() -> max |data| (for violations);
    # scaled(x_scale, y_scale) -> the term of the program in units X / x_scale, Z / y_scale (the
    # objective multiplied by x_scale / y_scale); and, separable terms, select_columns(index) and
    # column_cvxpy(w, z) -> (expression, constraints, set_column(j)): one column's lowering with
    # CVXPY parameters, compiled once and re-solved for every column.

    def scale(self) -> float:
        """The largest magnitude of the term's data on its mask (0 for an empty mask)."""
        values = np.abs(self.target[self.mask])
        return float(values.max()) if values.size else 0.0


class Squared(FitTerm):
    r"""``weight * sum over mask of (Z - Y)^2``: the least-squares fit (the regularized form).

    Parameters
    ----------
    Y : array_like, shape (P, M)
    weight : float, default 1.0
        ``> 0``.
    mask : array_like of bool, shape (P, M), optional

    Notes
    -----
    Conjugate on the mask: ``f*(L) = <L, Y> + ||L||^2 / (4 weight)``; the optimal dual is the
    gradient ``L = 2 weight (Z - Y)``.
    """

    quadratic = True

    def __init__(self, Y, weight: float = 1.0, mask=None):
        super().__init__(Y, mask, "Y")
        self.weight = check_scalar("weight", weight, low=0.0, low_inclusive=False)

    def _parameters(self) -> dict:
        return {"shape": self.shape, "weight": self.weight}

    def select_columns(self, index) -> "Squared":
        return Squared(self.target[:, index], self.weight, self.mask[:, index])

    def scaled(self, x_scale: float, y_scale: float) -> "Squared":
        return Squared(self.target / y_scale, self.weight * x_scale * y_scale, self.mask)

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        mask, target = _column_parameters(z.shape[0])
        expression = self.weight * cp.sum_squares(cp.multiply(mask, z) - target)

        def set_column(j):
            mask.value = self.mask[:, j].astype(float)
            target.value = np.where(self.mask[:, j], self.target[:, j], 0.0)

        return expression, [], set_column

    def value(self, Z) -> float:
        # Through a norm that rescales, so that data near float64's limits does not overflow.
        return float((np.sqrt(self.weight) * stable_norm(self._on_mask(Z - self.target))) ** 2)

    def violation(self, Z, scale: float) -> np.ndarray:
        return np.zeros(self.shape[1])

    def cvxpy(self, Z):
        import cvxpy as cp

        mask = self.mask.astype(float)
        return self.weight * cp.sum_squares(cp.multiply(mask, Z) - mask * self.target), []

    def conjugate(self, L) -> np.ndarray:
        L = self._on_mask(L)
        return (np.sum(L * self.target, axis=0)
                + np.sum(L * L, axis=0) / (4.0 * self.weight))

    def dual_domain(self, L) -> np.ndarray:
        return L

    def graph_term(self):
        from solvers import graph_terms

        return graph_terms.QuadraticFit(self.target, self.mask, self.weight)


class Budget(FitTerm):
    r"""``sum over mask of (Z - Y)^2 <= epsilon^2``: a budget on the squared error (a constraint).

    Parameters
    ----------
    Y : array_like, shape (P, M)
    epsilon : float or array_like of shape (M,)
        ``>= 0``. An array gives one budget per column (``per_column`` is then implied).
    mask : array_like of bool, shape (P, M), optional
    per_column : bool, default False
        With a float ``epsilon``: the same budget for every column separately.

    Notes
    -----
    One budget for the whole matrix couples the columns; per-column budgets decouple them.
    Conjugate: ``<L, Y> + epsilon ||L_mask||_F`` (per column: ``sum_m epsilon_m ||L_mask[:, m]||``).
    Relative violation: ``(||r|| - epsilon)_+ / max(epsilon, 1e-3 ||Y_mask||)``, per column for
    per-column budgets.
    """

    is_constraint = True

    def __init__(self, Y, epsilon, mask=None, per_column: bool = False):
        super().__init__(Y, mask, "Y")
        per_column = check_bool("per_column", per_column)
        M = self.shape[1]
        if np.ndim(epsilon) == 1:
            epsilon = as_float_array("epsilon", epsilon, ndim=1)
            if epsilon.shape != (M,):
                raise InvalidInputError(f"epsilon as an array holds one budget per column: shape "
                                        f"({M},); got {epsilon.shape}.")
            if (epsilon < 0).any():
                raise InvalidInputError("epsilon must be >= 0 in every column.")
            per_column = True
        else:
            epsilon = check_scalar("epsilon", epsilon, low=0.0)
            if per_column:
                epsilon = np.full(M, epsilon)
        self.epsilon = epsilon
        self.per_column = per_column
        self.separable = per_column

    def _parameters(self) -> dict:
        return {"shape": self.shape, "epsilon": self.epsilon, "per_column": self.per_column}

    def select_columns(self, index) -> "Budget":
        if not self.per_column:
            raise InvalidInputError("a whole-matrix Budget couples the columns; it cannot be split.")
        return Budget(self.target[:, index], self.epsilon[index], self.mask[:, index])

    def scaled(self, x_scale: float, y_scale: float) -> "Budget":
        return Budget(self.target / y_scale, self.epsilon / y_scale, self.mask,
                      per_column=self.per_column)

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        mask, target = _column_parameters(z.shape[0])
        budget = cp.Parameter(nonneg=True, name="budget")
        constraint = cp.norm(cp.multiply(mask, z) - target, 2) <= budget

        def set_column(j):
            mask.value = self.mask[:, j].astype(float)
            target.value = np.where(self.mask[:, j], self.target[:, j], 0.0)
            budget.value = float(self.epsilon[j])

        return 0.0, [constraint], set_column

    def _norms(self, Z):
        residual = self._on_mask(Z - self.target)
        return stable_norm(residual, axis=0) if self.per_column else stable_norm(residual)

    def value(self, Z) -> float:
        return 0.0

    def violation(self, Z, scale: float) -> np.ndarray:
        reference = self._on_mask(self.target)
        if self.per_column:
            floor = BUDGET_SCALE_FLOOR * stable_norm(reference, axis=0)
        else:
            floor = BUDGET_SCALE_FLOOR * stable_norm(reference)
        denominator = np.maximum(np.maximum(self.epsilon, floor), np.finfo(float).tiny)
        excess = np.maximum(self._norms(Z) - self.epsilon, 0.0) / denominator
        return np.broadcast_to(excess, (self.shape[1],)).copy()

    def cvxpy(self, Z):
        import cvxpy as cp

        mask = self.mask.astype(float)
        residual = cp.multiply(mask, Z) - mask * self.target
        if self.per_column:
            return 0.0, [cp.norm(residual, 2, axis=0) <= self.epsilon]
        return 0.0, [cp.norm(residual, "fro") <= self.epsilon]

    def conjugate(self, L):
        L = self._on_mask(L)
        linear = np.sum(L * self.target, axis=0)
        if self.per_column:
            return linear + self.epsilon * stable_norm(L, axis=0)
        return float(linear.sum()) + self.epsilon * stable_norm(L)

    def dual_domain(self, L) -> np.ndarray:
        return L

    def graph_term(self):
        from solvers import graph_terms

        return graph_terms.BallFit(self.target, self.mask, self.epsilon, per_column=self.per_column)


class Below(FitTerm):
    r"""``Z <= V`` on the mask (Net-Trim's inequality off Omega).

    Parameters
    ----------
    V : array_like, shape (P, M)
    mask : array_like of bool, shape (P, M), optional

    Notes
    -----
    Conjugate: ``<L, V>`` for ``L >= 0`` on the mask (``+inf`` otherwise). Relative violation:
    ``max over the mask of (Z - V)_+ / scale`` with the program's output scale (the largest magnitude
    of any fit term's data, 1 when all are 0).
    """

    is_constraint = True
    fits_target = False
    quadratic = True

    def __init__(self, V, mask=None):
        super().__init__(V, mask, "V")

    def _parameters(self) -> dict:
        return {"shape": self.shape}

    def select_columns(self, index) -> "Below":
        return Below(self.target[:, index], self.mask[:, index])

    def scaled(self, x_scale: float, y_scale: float) -> "Below":
        return Below(self.target / y_scale, self.mask)

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        if not self.mask.any():
            return 0.0, [], lambda j: None
        mask, threshold = _column_parameters(z.shape[0])

        def set_column(j):
            mask.value = self.mask[:, j].astype(float)
            threshold.value = np.where(self.mask[:, j], self.target[:, j], 0.0)

        return 0.0, [cp.multiply(mask, z) <= threshold], set_column

    def value(self, Z) -> float:
        return 0.0

    def violation(self, Z, scale: float) -> np.ndarray:
        excess = np.where(self.mask, Z - self.target, 0.0)
        return np.maximum(excess.max(axis=0, initial=0.0), 0.0) / scale

    def cvxpy(self, Z):
        import cvxpy as cp

        if not self.mask.any():
            return 0.0, []
        mask = self.mask.astype(float)
        return 0.0, [cp.multiply(mask, Z) <= mask * self.target]

    def conjugate(self, L) -> np.ndarray:
        return np.sum(self._on_mask(L) * self.target, axis=0)

    def dual_domain(self, L) -> np.ndarray:
        return np.where(self.mask, np.maximum(L, 0.0), L)

    def graph_term(self):
        from solvers import graph_terms

        return graph_terms.UpperBound(self.target, self.mask)
