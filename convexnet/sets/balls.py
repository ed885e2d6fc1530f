"""Norm balls on W: l1, l1 per column (L1,inf), sum of row maxima, nuclear (paper 000, 001)."""

from __future__ import annotations

import numpy as np

from solvers import prox, prox_constrained, prox_matrix

from .._base import RadiusBall, as_numpy
from .._validation import check_integer
from ..errors import InvalidInputError

__all__ = ["L1Ball", "L1InfBall", "SumOfMaxBall", "NuclearBall"]


def _check_axis(axis: int | None, x) -> None:
    """Raise when ``axis`` (None or an int) does not name a dimension of ``x``."""
    if axis is not None and not -x.ndim <= axis < x.ndim:
        raise InvalidInputError(f"axis={axis} is out of range for x of shape {tuple(x.shape)}.")


class L1Ball(RadiusBall):
    r"""The l1 ball ``{x : sum_i |x_i| <= radius}`` (paper 000's convex sparsity constraint).

    Parameters
    ----------
    radius : float
        ``r >= 0``.
    axis : int or None
        None: the whole array is one vector. An int: every slice along that axis has its own ball
        (``axis=0`` on an ``(N, M)`` matrix bounds each column; that is :class:`L1InfBall`).

    Notes
    -----
    The projection is sort-free (a sampled bracket, then Michelot's search on the entries inside
    it, see :func:`solvers.prox.project_l1_ball`); a point inside comes back bitwise unchanged and
    ``radius=0`` gives zeros.
    """

    def __init__(self, radius: float, *, axis: int | None = None):
        super().__init__(radius)
        self.axis = None if axis is None else check_integer("axis", axis)
        self.separable = self.axis == 0

    def support(self, S):
        """``radius * max |S|`` (per slice, summed, when ``axis`` is set; per column for axis 0)."""
        magnitudes = np.abs(as_numpy(S))
        if self.axis is None:
            return self.radius * float(magnitudes.max(initial=0.0))
        largest = magnitudes.max(axis=self.axis, initial=0.0)
        return self.radius * largest if self.axis == 0 else self.radius * float(largest.sum())

    def _parameters(self) -> dict:
        return {"radius": self.radius, "axis": self.axis}

    def _project(self, x):
        _check_axis(self.axis, x)
        return prox.project_l1_ball(x, radius=self.radius, axis=self.axis)

    def l1_prox(self):
        """``prox(x, step)``: :func:`solvers.prox_constrained.prox_l1_in_l1_ball`."""
        return lambda x, step: prox_constrained.prox_l1_in_l1_ball(x, step=step, radius=self.radius,
                                                                   axis=self.axis)

    def norm(self, x) -> np.ndarray:
        """``sum |x|`` (per slice when ``axis`` is set), in float64."""
        _check_axis(self.axis, x)
        return np.sum(np.abs(as_numpy(x)), axis=self.axis)

    def _constraints(self, expr):
        import cvxpy as cp

        if self.axis is None:
            return [cp.sum(cp.abs(expr)) <= self.radius]
        return [cp.sum(cp.abs(expr), axis=self.axis) <= self.radius]


class L1InfBall(RadiusBall):
    r"""Paper 001's L1,inf ball: ``max_j ||W[:, j]||_1 <= radius`` for ``W`` of shape ``(N, M)``.

    Column ``j`` is the incoming weights of output neuron ``j``, bias row included. The projection
    projects every column onto its own l1 ball, in one batched call (no loop over columns), on the
    CPU or the GPU. ``project`` also takes a batch ``(..., N, M)``.
    """

    separable = True

    def _project(self, x):
        if x.ndim < 2:
            raise InvalidInputError(f"x must be a matrix (N, M); got shape {tuple(x.shape)}.")
        return prox.project_l1_inf_ball(x, radius=self.radius)

    def l1_prox(self):
        """``prox(x, step)``: :func:`solvers.prox_constrained.prox_l1_in_l1_inf_ball`."""
        return lambda x, step: prox_constrained.prox_l1_in_l1_inf_ball(x, step=step, radius=self.radius)

    def support(self, S) -> np.ndarray:
        """``radius * max_n |S[n, m]|`` per column (the dual norm sums them)."""
        return self.radius * np.abs(as_numpy(S)).max(axis=0, initial=0.0)

    def norm(self, x) -> np.ndarray:
        """``max_j ||W[:, j]||_1`` (per matrix of a batch), in float64."""
        return np.max(np.sum(np.abs(as_numpy(x)), axis=-2), axis=-1)

    def _constraints(self, expr):
        import cvxpy as cp

        return [cp.sum(cp.abs(expr), axis=0) <= self.radius]


class SumOfMaxBall(RadiusBall):
    r"""The l1,inf ball of Quattoni et al. (2009): ``sum_i max_j |W[i, j]| <= radius``.

    Row ``i`` of ``W`` (an input feature's outgoing weights) costs its largest magnitude, so the
    ball drives whole rows to zero: feature selection. Its dual norm is :class:`L1InfBall`'s.
    The projection is exact and finite (rows sorted, then Newton's method on the caps; see
    :func:`solvers.prox_matrix.project_sum_of_max_ball`).
    """

    _ndim = 2

    def _project(self, x):
        return prox_matrix.project_sum_of_max_ball(x, radius=self.radius)

    def l1_prox(self):
        """``prox(x, step)``: :func:`solvers.prox_constrained.prox_l1_in_sum_of_max_ball`."""
        return lambda x, step: prox_constrained.prox_l1_in_sum_of_max_ball(x, step=step,
                                                                           radius=self.radius)

    def norm(self, x) -> float:
        """``sum_i max_j |W[i, j]|``, in float64."""
        return float(np.sum(np.max(np.abs(as_numpy(x)), axis=1)))

    def support(self, S) -> float:
        """``radius * max_i sum_j |S[i, j]|``: the dual norm of ``sum_i max_j |W[i, j]|``."""
        return self.radius * float(np.abs(as_numpy(S)).sum(axis=1).max(initial=0.0))

    def _constraints(self, expr):
        import cvxpy as cp

        return [cp.sum(cp.max(cp.abs(expr), axis=1)) <= self.radius]


class NuclearBall(RadiusBall):
    r"""The nuclear-norm ball ``sum_i sigma_i(W) <= radius`` (paper 000's convex low-rank constraint).

    ``project`` takes a matrix or a batch ``(..., m, n)`` (one SVD each, then the l1 projection of
    the singular values).
    """

    def _project(self, x):
        if x.ndim < 2:
            raise InvalidInputError(f"x must be a matrix; got shape {tuple(x.shape)}.")
        return prox_matrix.project_nuclear_ball(x, radius=self.radius)

    def norm(self, x) -> np.ndarray:
        """The nuclear norm (per matrix of a batch), in float64."""
        return np.sum(np.linalg.svd(as_numpy(x), compute_uv=False), axis=-1)

    def support(self, S) -> float:
        """``radius * ||S||_2``: the spectral norm is the nuclear norm's dual."""
        return self.radius * float(np.linalg.norm(as_numpy(S), 2))

    def _constraints(self, expr):
        import cvxpy as cp

        return [cp.normNuc(expr) <= self.radius]
