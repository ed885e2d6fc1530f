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

from solvers import prox as kernels

from ._base import Parametrized, nonconvex_error
from ._validation import as_data, check_scalar, is_tensor

__all__ = ["Penalty", "L1", "L0", "TransformedL1"]


class Penalty(Parametrized):
    """A separable penalty ``strength * sum_i rho(x_i)``.

    Subclasses set ``convex`` and implement ``_value(x)`` (entrywise ``rho``, before the sum and the
    strength) and ``_prox(x, weight)`` (the prox of ``weight * rho``); nonconvex ones name in
    ``alternative`` what to use where a convex program is needed.
    """

    convex: bool = True
    alternative: str = ""

    def __init__(self, strength: float):
        self.strength = check_scalar("strength", strength, low=0.0)

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
    r"""The l1 norm ``strength * sum_i |x_i|``; its prox is the soft threshold at ``step * strength``.

    .. math:: \operatorname{prox}(x)_i = \operatorname{sign}(x_i)\max(|x_i| - \text{step}\cdot
              \text{strength}, 0).
    """

    def _value(self, x):
        return abs(x)

    def _prox(self, x, weight):
        return kernels.prox_l1(x, step=weight)

    def _cvxpy(self, expr):
        import cvxpy as cp

        return self.strength * cp.sum(cp.abs(expr))


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
        magnitudes = abs(x)
        return (self.a + 1) * magnitudes / (self.a + magnitudes)

    def _prox(self, x, weight):
        return kernels.prox_transformed_l1(x, step=weight, a=self.a)
