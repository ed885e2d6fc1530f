"""Net-Trim's feasible set C_eps of one layer (paper 004, eq. 3), as a set on U."""

from __future__ import annotations

import numpy as np

from .._base import ConstraintSet, as_numpy, within
from .._validation import as_data, as_float_array, check_scalar
from ..errors import BackendUnavailableError, InvalidInputError

__all__ = ["NetTrimSet"]


class NetTrimSet(ConstraintSet):
    r"""Net-Trim's feasible set ``C_eps`` for one layer (paper 004, eq. 3), with batch-first data.

    With ``Z = X @ U`` and ``Omega = {(p, m) : Y[p, m] > 0}`` (every entry when ``relu=False``),

    .. math:: C_\epsilon = \{U \in \mathbb{R}^{N \times M} :
              \textstyle\sum_{\Omega} (Z - Y)^2 \le \epsilon^2,\; Z \le V \text{ off } \Omega\}.

    Parameters
    ----------
    X : array, shape (P, N)
        The layer's input, one sample per row.
    Y : array, shape (P, M)
        The layer's (post-ReLU) output to reproduce.
    V : array, shape (P, M), optional
        Upper bounds off ``Omega``; default 0 (the pruned unit must stay inactive there).
    epsilon : float
        The budget ``>= 0``.
    relu : bool
        False for a linear layer: ``Omega`` is every entry and there is no inequality.

    Notes
    -----
    There is no ``project``: projecting onto ``C_eps`` in ``U`` is itself a second-order cone
    program, not a cheap kernel, and ``project`` raises
    :class:`~convexnet.errors.BackendUnavailableError` saying so. Use ``constraints(U)`` in a CVXPY
    problem, or :class:`convexnet.NetTrimProblem`. ``contains(U, tol)`` checks
    ``sqrt(sum over Omega (Z - Y)^2) <= epsilon + tol * max(1, epsilon)`` and
    ``Z - V <= tol * max(1, max |V|)`` off ``Omega``.
    """

    # A set on U defined by data: in a SparsityProgram its meaning is the fits Budget and Below.
    program_term = False

    def __init__(self, X, Y, V=None, epsilon: float | None = None, relu: bool = True):
        self.X = as_float_array("X", X, ndim=2)
        self.Y = as_float_array("Y", Y, ndim=2)
        if self.Y.shape[0] != self.X.shape[0]:
            raise InvalidInputError(
                f"X (P, N) and Y (P, M) must have the same number of rows (samples); got "
                f"{self.X.shape[0]} and {self.Y.shape[0]}.")
        self.V = np.zeros_like(self.Y) if V is None else as_float_array("V", V, ndim=2)
        if self.V.shape != self.Y.shape:
            raise InvalidInputError(f"V must have the shape of Y {self.Y.shape}; got {self.V.shape}.")
        if epsilon is None:
            raise InvalidInputError("epsilon is required: pass the budget epsilon >= 0.")
        self.epsilon = check_scalar("epsilon", epsilon, low=0.0)
        if not isinstance(relu, (bool, np.bool_)):
            raise InvalidInputError(f"relu must be True or False; got {relu!r}.")
        self.relu = bool(relu)
        self.omega = self.Y > 0 if self.relu else np.ones(self.Y.shape, dtype=bool)

    def _parameters(self) -> dict:
        return {"P": self.X.shape[0], "N": self.X.shape[1], "M": self.Y.shape[1],
                "epsilon": self.epsilon, "relu": self.relu}

    def project(self, x):
        """Not provided: raises :class:`~convexnet.errors.BackendUnavailableError` (see Notes)."""
        raise BackendUnavailableError(
            "NetTrimSet has no projection kernel: projecting onto C_eps is a second-order cone "
            "program in U. Use NetTrimSet.constraints(U) in a CVXPY problem, or "
            "convexnet.NetTrimProblem(X, Y, epsilon=...).solve().")

    def _check_weights(self, U):
        expected = (self.X.shape[1], self.Y.shape[1])
        if tuple(U.shape) != expected:
            raise InvalidInputError(f"U must have shape {expected} (N, M); got {tuple(U.shape)}.")

    def discrepancy(self, U) -> float:
        """``sqrt(sum over Omega of (X @ U - Y)^2)``, the quantity bounded by ``epsilon``."""
        U = as_numpy(as_data("U", U, ndim=2))
        self._check_weights(U)
        return float(np.linalg.norm((self.X @ U - self.Y)[self.omega]))

    def _contains(self, U, tol):
        U = as_numpy(U)
        self._check_weights(U)
        Z = self.X @ U
        bound_scale = max(1.0, float(np.max(np.abs(self.V), initial=0.0)))
        off = ~self.omega
        inactive_ok = bool(np.all(Z[off] - self.V[off] <= tol * bound_scale))
        return inactive_ok and within(self.discrepancy(U), self.epsilon, tol)

    def _constraints(self, expr):
        import cvxpy as cp

        self._check_weights(expr)
        Z = self.X @ expr
        constraints = []
        if self.omega.any():
            constraints.append(cp.norm(Z[self.omega] - self.Y[self.omega], 2) <= self.epsilon)
        if not self.omega.all():
            constraints.append(Z[~self.omega] <= self.V[~self.omega])
        return constraints
