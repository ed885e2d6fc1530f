r"""Sparsity penalties: value, prox, and a CVXPY expression where convex (papers 000, 002).

Each penalty ``R`` holds its ``strength`` and has

- ``value(x)``: ``R(x)``, summed over all entries (a float for numpy input, a 0-d tensor for a
  tensor, so that it can enter a differentiable loss);
- ``prox(x, step)``: ``argmin_z 0.5 ||z - x||^2 + step * R(z)``, entrywise, of ``x``'s kind, dtype and
  device; the kernels are in :mod:`solvers.prox`, called with ``step * strength``;
- ``cvxpy(expr)``: a CVXPY expression for ``R(expr)`` (convex penalties only; the nonconvex ones
  raise :class:`~convexnet.errors.InvalidInputError` naming what to use instead).

Example
-------
>>> import numpy as np
>>> from convexnet import penalties
>>> penalties.L1(0.5).prox(np.array([2.0, -0.3]), step=1.0)
array([1.5, 0. ])
"""

from __future__ import annotations

from solvers import _arrays
from solvers import prox as kernels

import numpy as np

from ._base import Parametrized, nonconvex_error
from ._validation import as_data, as_float_array, check_scalar, is_tensor
from .errors import InvalidInputError

__all__ = ["Penalty", "L1", "GroupL1", "L0", "TransformedL1"]


class Penalty(Parametrized):
    """A separable penalty ``strength * sum_i rho(x_i)``.

    Subclasses set ``convex`` and implement ``_value(x)`` (entrywise ``rho``, before the sum and the
    strength) and ``_prox(x, weight)`` (the prox of ``weight * rho``); nonconvex ones name in
    ``alternative`` what to use where a convex program is needed.
    """

    convex: bool = True
    alternative: str = ""
    # As a term of a SparsityProgram (on W of shape (N, M)): not a constraint; separable when it is
    # a sum of per-column terms (an entrywise penalty is).
    is_constraint = False
    separable = True
    subspace = False
    # A norm (positively homogeneous of degree 1) keeps its strength in any units.
    norm_like = False

    def __init__(self, strength: float = 1.0):
        self.strength = check_scalar("strength", strength, low=0.0)

    def scaled(self, x_scale: float, y_scale: float) -> "Penalty":
        """The penalty in units ``W' = W x_scale / y_scale`` with the objective times ``x_scale /
        y_scale``: a norm is unchanged (the two factors cancel); other penalties must say how they
        scale (without it the backends solve the program in its own units)."""
        if self.norm_like:
            return self
        raise NotImplementedError(f"{type(self).__name__} does not define scaled(x_scale, y_scale).")

    def _dual_ball(self, S):
        raise NotImplementedError(f"{type(self).__name__} has no dual-norm ball here, so programs "
                                  "that use it get no duality-gap certificate.")

    def _subgradient_near(self, S, W):
        raise NotImplementedError(f"{type(self).__name__} has no subgradient here, so programs "
                                  "that use it get no duality-gap certificate.")

    def select_columns(self, index) -> "Penalty":
        """The penalty on the columns ``index`` of ``W`` (separable penalties)."""
        return self

    def free_rows(self, N: int) -> np.ndarray:
        """The rows of ``W`` (N, M) the penalty does not touch (bool, shape (N,)): rescaling them
        changes nothing. A zero strength leaves every row free."""
        return np.full(N, self.strength == 0)

    def column_cvxpy(self, w, z):
        """One column's CVXPY lowering: ``(expression, constraints, set_column)``."""
        return self.cvxpy(w), [], lambda j: None

    def graph_term(self):
        """The penalty as an ADMM weight term: any prox (:class:`solvers.graph_terms.Prox`)."""
        from solvers import graph_terms

        return graph_terms.Prox(self.prox, separable=self.separable)

    def graph_term_with(self, constraint):
        """The penalty and the set ``constraint`` as one ADMM weight term, or None (then each is
        its own term); only :class:`L1` fuses, with the sets that have a closed-form prox."""
        return None

    def dual_part(self, S, W=None):
        """Split ``S`` (N, M) for the conjugate of a sum: ``(0, S - S_1)``.

        A convex penalty's conjugate is the indicator of its dual-norm ball, so any ``S_1`` in the
        ball costs nothing. Without ``W``, ``S_1`` is the projection of ``S`` onto the ball; with a
        primal ``W``, the subgradient of the penalty at ``W`` closest to ``S`` (exact at an optimum,
        where ``S - S_1`` is what the sets must pay for). Nonconvex penalties have no conjugate here.
        """
        if not self.convex:
            raise NotImplementedError(f"{type(self).__name__} is nonconvex: no duality-gap "
                                      "certificate applies.")
        taken = self._dual_ball(S) if W is None else self._subgradient_near(S, W)
        return 0.0, S - taken

    def value(self, x):
        """``strength * sum_i rho(x_i)``: a float for numpy input, a 0-d tensor for a tensor."""
        x = as_data("x", x)
        total = self.strength * self._value(x).sum()
        return total if is_tensor(total) else float(total)

    def prox(self, x, step: float):
        """``argmin_z 0.5 ||z - x||^2 + step * R(z)``, of ``x``'s kind, dtype and device."""
        step = check_scalar("step", step, low=0.0)
        return self._prox(as_data("x", x), step * self.strength)

    def cvxpy(self, expr):
        """A CVXPY expression for ``R(expr)`` (convex penalties only)."""
        if not self.convex:
            raise nonconvex_error(self, "CVXPY expression", self.alternative)
        return self._cvxpy(expr)

    def _parameters(self) -> dict:
        return {"strength": self.strength}


class L1(Penalty):
    r"""The l1 norm ``strength * sum_i c_i |x_i|``; its prox is the soft threshold at ``step * strength * c``.

    .. math:: \operatorname{prox}(x)_i = \operatorname{sign}(x_i)\max(|x_i| - \text{step}\cdot
              \text{strength}\cdot c_i, 0).

    Parameters
    ----------
    strength : float, default 1.0
    weights : array_like, optional
        Non-negative ``c``, broadcast against ``x``; for a matrix ``W`` (N, M) a vector of length N
        weighs the rows (0 leaves a row, such as a bias row, unpenalized). Default: all ones.
    """

    norm_like = True

    def __init__(self, strength: float = 1.0, weights=None):
        super().__init__(strength)
        self.weights = None
        if weights is not None:
            weights = as_float_array("weights", weights, ndim=(1, 2))
            if (weights < 0).any():
                raise InvalidInputError("weights must be >= 0 (0 leaves an entry unpenalized).")
            self.weights = weights

    def _parameters(self) -> dict:
        if self.weights is None:
            return {"strength": self.strength}
        return {"strength": self.strength, "weights": f"<array {self.weights.shape}>"}

    def _weights_for(self, x):
        """``c`` shaped to broadcast against ``x``: a row vector of a matrix's length becomes (N, 1)."""
        weights = self.weights
        if weights.ndim == 1 and x.ndim == 2 and weights.shape[0] == x.shape[0]:
            weights = weights[:, None]
        try:
            np.broadcast_shapes(weights.shape, tuple(x.shape))
        except ValueError:
            raise InvalidInputError(f"L1 weights of shape {self.weights.shape} do not fit x of shape "
                                    f"{tuple(x.shape)}; give (N,) for a matrix (N, M), or x's shape.") from None
        if is_tensor(x):
            import torch

            return torch.as_tensor(weights, device=x.device).to(x.dtype)
        return weights

    def _value(self, x):
        return abs(x) if self.weights is None else self._weights_for(x) * abs(x)

    def _prox(self, x, weight):
        if self.weights is None:
            return kernels.prox_l1(x, step=weight)
        return kernels.prox_l1(x, step=weight * self._weights_for(x))

    def _cvxpy(self, expr):
        import cvxpy as cp

        if self.weights is None:
            return self.strength * cp.sum(cp.abs(expr))
        return self.strength * cp.sum(cp.multiply(self._weights_for(expr), cp.abs(expr)))

    def graph_term(self):
        from solvers import graph_terms

        return graph_terms.WeightedL1(self._graph_weights())

    def _graph_weights(self) -> np.ndarray:
        """``strength * c`` for the ADMM terms: shape (1,), (N,) or (N, M)."""
        return self.strength * (np.ones(1) if self.weights is None else self.weights)

    def graph_term_with(self, constraint):
        """The l1 penalty restricted to ``constraint`` as one term
        (:class:`solvers.graph_terms.ProjectedL1`) when the set has a closed-form prox with it."""
        return constraint.graph_term_with_l1(self._graph_weights())

    def free_rows(self, N: int) -> np.ndarray:
        if self.strength == 0:
            return np.ones(N, dtype=bool)
        if self.weights is None:
            return np.zeros(N, dtype=bool)
        weights = self.weights if self.weights.ndim == 2 else self.weights[:, None]
        return np.broadcast_to(weights == 0, (N, weights.shape[1])).all(axis=1)

    def select_columns(self, index) -> "L1":
        if self.weights is None or self.weights.ndim == 1:
            return self
        return L1(self.strength, self.weights[:, index])

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        if self.weights is None or self.weights.ndim == 1:
            weights = np.ones(w.shape[0]) if self.weights is None else self.weights
            return self.strength * (weights @ cp.abs(w)), [], lambda j: None
        weights = cp.Parameter(w.shape[0], nonneg=True, name="l1_weights")

        def set_column(j):
            weights.value = self.weights[:, j]

        return self.strength * (weights @ cp.abs(w)), [], set_column

    def full_weights(self, shape) -> np.ndarray:
        """``strength * c`` broadcast to ``shape`` (N, M)."""
        weights = np.ones(shape) if self.weights is None else np.broadcast_to(
            self._weights_for(np.empty(shape)), shape)
        return self.strength * weights

    def _dual_ball(self, S):
        bound = self.full_weights(S.shape)
        return np.clip(S, -bound, bound)

    def _subgradient_near(self, S, W):
        bound = self.full_weights(S.shape)
        return np.where(W != 0, bound * np.sign(W), np.clip(S, -bound, bound))


class GroupL1(Penalty):
    r"""The group l1 (group lasso) penalty: ``strength * sum_g ||W_g||_2`` over rows or columns.

    ``axis=1`` (default): the groups are the rows of ``W`` (N, M), the l2 norm of each row; a zero
    row is an input unit of the layer that can be removed (neuron / channel pruning). ``axis=0``: the
    groups are the columns (output units). Its prox is the group soft threshold
    ``W_g * max(0, 1 - step * strength / ||W_g||)``.

    Parameters
    ----------
    strength : float, default 1.0
    axis : {1, 0}
    """

    norm_like = True

    def __init__(self, strength: float = 1.0, axis: int = 1):
        super().__init__(strength)
        if isinstance(axis, bool) or axis not in (0, 1):
            raise InvalidInputError(f"axis must be 1 (rows: input units) or 0 (columns: output "
                                    f"units); got {axis!r}.")
        self.axis = int(axis)
        self.separable = self.axis == 0

    def _parameters(self) -> dict:
        return {"strength": self.strength, "axis": self.axis}

    def value(self, x):
        x = as_data("x", x, ndim=2)
        if is_tensor(x):
            import torch

            return self.strength * torch.linalg.vector_norm(x, dim=self.axis).sum()
        return self.strength * float(np.linalg.norm(x, axis=self.axis).sum())

    def prox(self, x, step: float):
        step = check_scalar("step", step, low=0.0)
        x = as_data("x", x, ndim=2)
        # The group soft threshold with overflow-free norms, numpy or torch alike.
        return kernels.prox_group_l1(x, step=step * self.strength, axis=self.axis)

    def _cvxpy(self, expr):
        import cvxpy as cp

        return self.strength * cp.sum(cp.norm(expr, 2, axis=self.axis))

    def graph_term(self):
        from solvers import graph_terms

        return graph_terms.GroupL2(self.strength, self.axis)

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        return self.strength * cp.norm(w, 2), [], lambda j: None

    def _dual_ball(self, S):
        norms = np.linalg.norm(S, axis=self.axis, keepdims=True)
        return S * np.minimum(1.0, self.strength / np.maximum(norms, 1e-300))

    def _subgradient_near(self, S, W):
        norms = np.linalg.norm(W, axis=self.axis, keepdims=True)
        direction = self.strength * W / np.maximum(norms, 1e-300)
        return np.where(norms > 0, direction, self._dual_ball(S))


class L0(Penalty):
    r"""The l0 count ``strength * #{i : x_i != 0}`` (nonconvex); its prox is the hard threshold.

    .. math:: \operatorname{prox}(x)_i = x_i \text{ if } |x_i| > \sqrt{2\,\text{step}\cdot
              \text{strength}}, \text{ else } 0.
    """

    convex = False
    alternative = ("use L1 (its convex relaxation) in CVXPY, or a prox-based method "
                   "(backend='admm', convexnet.training.RVSM).")

    def _value(self, x):
        nonzero = x != 0
        return nonzero.to(x.dtype) if is_tensor(x) else nonzero.astype(x.dtype)

    def _prox(self, x, weight):
        return kernels.prox_l0(x, step=weight)


class TransformedL1(Penalty):
    r"""The transformed l1 penalty ``strength * sum_i (a + 1)|x_i| / (a + |x_i|)`` (nonconvex).

    It interpolates between l0 (``a -> 0``) and l1 (``a -> inf``). Its prox (Zhang and Xin 2017;
    paper 002) with ``lam = step * strength`` is 0 for ``|x| <= t`` and otherwise
    ``sign(x) [(2/3)(a + |x|) cos(phi/3) - 2a/3 + |x|/3]``,
    ``phi = arccos(1 - 27 lam a (a + 1) / (2 (a + |x|)^3))``, with ``t = lam (a + 1) / a`` if
    ``lam <= a^2 / (2 (a + 1))``, else ``t = sqrt(2 lam (a + 1)) - a / 2``; see
    :func:`solvers.prox.prox_transformed_l1` for the float32-stable evaluation.

    Parameters
    ----------
    strength : float
        ``>= 0``.
    a : float
        The shape parameter, ``a > 0``.
    """

    convex = False
    alternative = ("use L1 (the limit a -> inf) in CVXPY, or a prox-based method "
                   "(backend='admm', convexnet.training.RVSM).")

    def __init__(self, strength: float, a: float):
        super().__init__(strength)
        self.a = check_scalar("a", a, low=0.0, low_inclusive=False)

    def _parameters(self) -> dict:
        return {"strength": self.strength, "a": self.a}

    def _value(self, x):
        # In float64 and with |x| / (a + |x|) <= 1 formed first: (a + 1) |x| overflows for a = 1e150
        # (and a float32 a + |x| for a = 1e40), giving inf / inf.
        magnitudes = abs(_arrays.to_float64(x))
        return _arrays.cast_like((self.a + 1) * (magnitudes / (self.a + magnitudes)), x)

    def _prox(self, x, weight):
        return kernels.prox_transformed_l1(x, step=weight, a=self.a)
