r"""Constraint sets: exact projections, membership tests and CVXPY constraints.

Every set has

- ``project(x)``: the Euclidean projection (numpy in, numpy out; a torch tensor stays a tensor on its
  device, in its dtype), computed by the kernel in :mod:`solvers.prox` or :mod:`solvers.prox_matrix`;
- ``contains(x, tol=1e-9)``: whether ``x`` lies in the set up to ``tol`` (each class says how ``tol``
  enters; for a bound ``value(x) <= b`` it is ``value(x) <= b + tol * max(1, b)``);
- ``constraints(expr)``: a list of CVXPY constraints stating ``expr`` in the set, for convex sets;
  nonconvex sets (``Sparse``, ``LowRank``) raise :class:`~convexnet.errors.InvalidInputError` naming
  the convex relaxation to use instead.

Weights follow the design's orientation: ``W`` has shape ``(N, M)``, column ``j`` the incoming weights
of output neuron ``j`` (a bias is a last row). Bad parameters and data (negative or non-finite radii,
non-integer counts, NaN or infinite entries) raise ``InvalidInputError`` before any work starts.

Example
-------
>>> import numpy as np
>>> from convexnet import sets
>>> ball = sets.L1Ball(2.0)
>>> ball.project(np.array([3.0, -1.0, 0.5]))
array([2., 0., 0.])
"""

from .._base import ConstraintSet
from .balls import L1Ball, L1InfBall, NuclearBall, SumOfMaxBall
from .nettrim_set import NetTrimSet
from .structure import ConvolutionSubspace, LowRank, Mask, Sparse, Subspace

__all__ = [
    "ConstraintSet",
    "L1Ball",
    "L1InfBall",
    "SumOfMaxBall",
    "NuclearBall",
    "Sparse",
    "LowRank",
    "Subspace",
    "ConvolutionSubspace",
    "NetTrimSet",
    "Mask",
]
