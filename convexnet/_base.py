"""Shared base of :mod:`convexnet.sets` and :mod:`convexnet.penalties`: checks, repr, error messages."""

from __future__ import annotations

import numpy as np

from ._validation import as_data, check_scalar, is_tensor
from .errors import InvalidInputError

__all__ = ["Parametrized", "nonconvex_error", "ConstraintSet", "RadiusBall", "as_numpy", "within"]


def as_numpy(x) -> np.ndarray:
    """``x`` as a float64 numpy array for the membership arithmetic (tensors are copied to the CPU)."""
    if is_tensor(x):
        return x.detach().cpu().double().numpy()
    return np.asarray(x, dtype=np.float64)


def within(value, bound: float, tol: float) -> bool:
    """``value <= bound`` up to ``tol`` relative to ``max(1, bound)``, for every entry of ``value``."""
    return bool(np.all(np.asarray(value) <= bound + tol * max(1.0, bound)))


class Parametrized:
    """An object shown as ``Name(parameter=value, ...)`` from its ``_parameters()``."""

    def __repr__(self) -> str:
        fields = ", ".join(f"{key}={value!r}" for key, value in self._parameters().items())
        return f"{type(self).__name__}({fields})"

    def _parameters(self) -> dict:
        return {}


def nonconvex_error(owner, missing: str, advice: str) -> InvalidInputError:
    """The error for a CVXPY lowering asked of the nonconvex ``owner``; ``advice`` says what to use."""
    return InvalidInputError(f"{type(owner).__name__} is nonconvex, so it has no {missing} (CVXPY "
                             f"needs convex programs); {advice}")


def _check_tol(tol) -> float:
    return check_scalar("tol", tol, low=0.0)


class ConstraintSet(Parametrized):
    """A set ``C`` with a projection, a membership test and (when convex) CVXPY constraints.

    Subclasses set ``convex`` and implement ``_project(x)`` (``x`` already checked: finite, floating,
    of the input's kind), ``_contains(x, tol)`` and, for convex sets, ``_constraints(expr)``.
    Nonconvex subclasses name the convex set to use in CVXPY in ``relaxation``.
    """

    convex: bool = True
    relaxation: str = ""
    # The numbers of dimensions x may have (None: any), checked before any work.
    _ndim: int | tuple[int, ...] | None = None
    # As a term of a SparsityProgram (on W of shape (N, M)): a constraint; separable when it is one
    # set per column; a subspace (its dual part is its orthogonal complement) or bounded (its
    # support function is finite everywhere); row_scalable when every positive scaling of the rows
    # of W maps it onto itself (a coordinate cone such as a support mask; not a general subspace).
    is_constraint = True
    separable = False
    subspace = False
    row_scalable = False
    # A cone (closed under positive scaling) keeps its shape in any units; a bounded set does not.
    cone = False
    # Whether the set may be a constraint of a SparsityProgram (its projection and violation exist).
    program_term = True

    def violation(self, W) -> float:
        """Relative distance to the set: ``||W - project(W)||_F / max(1, ||W||_F)`` (0 inside)."""
        W = as_numpy(W)
        size = max(1.0, float(np.linalg.norm(W)))
        return float(np.linalg.norm(W - as_numpy(self.project(W)))) / size

    def scaled(self, x_scale: float, y_scale: float) -> "ConstraintSet":
        """The set in units ``W' = W x_scale / y_scale``: a cone (a subspace, a mask, a sparsity
        or rank set) is unchanged; a ball scales its radius; any other set must say how it scales
        (then the backends solve the program in its own units)."""
        if self.cone or self.subspace:
            return self
        raise NotImplementedError(f"{type(self).__name__} does not define scaled(x_scale, y_scale).")

    def free_rows(self, N: int) -> np.ndarray:
        """A set constrains every row (bool, shape (N,), all False)."""
        return np.zeros(N, dtype=bool)

    def select_columns(self, index) -> "ConstraintSet":
        """The set on the columns ``index`` of ``W`` (separable sets: one set per column)."""
        return self

    def column_cvxpy(self, w, z):
        """One column's CVXPY lowering: ``(0, constraints, set_column)``."""
        return 0.0, self.constraints(w), lambda j: None

    def graph_term(self):
        """The set as an ADMM weight term (:class:`solvers.graph_terms.Projection`)."""
        from solvers import graph_terms

        restrict = (lambda index: self.select_columns(index).project) if self.separable else None
        return graph_terms.Projection(self.project, separable=self.separable,
                                      scale_invariant=self.row_scalable, restrict=restrict)

    def l1_prox(self):
        """The prox of an l1 penalty plus the set's indicator, where it has a closed form:
        ``prox(x, step) = argmin_{z in C} 0.5 ||z - x||^2 + sum step * |z|`` (``step`` broadcasting
        to ``x``; :mod:`solvers.prox_constrained`); None for the sets without one."""
        return None

    def graph_term_with_l1(self, weights):
        """The set and the penalty ``sum weights * |W|`` as one ADMM weight term
        (:class:`solvers.graph_terms.ProjectedL1`), or None when their prox has no closed form here."""
        if self.l1_prox() is None:
            return None
        from solvers import graph_terms

        restrict = (lambda index: self.select_columns(index).l1_prox()) if self.separable else None
        return graph_terms.ProjectedL1(weights, self.l1_prox(), separable=self.separable,
                                       scale_invariant=self.row_scalable, restrict=restrict)

    def dual_part(self, S):
        """Split ``S`` (N, M) for the conjugate of a sum of terms: ``(cost, remainder)``.

        A subspace ``C`` takes the part of ``S`` orthogonal to it at no cost (its support function
        is 0 on ``C``'s orthogonal complement) and leaves ``project(S)``; a bounded convex set takes
        all of ``S`` at the cost of its support function ``sigma_C(S) = sup_{W in C} <S, W>``.
        Costs are per column (shape (M,)) for separable sets, floats otherwise.
        """
        if self.subspace:
            return 0.0, as_numpy(self.project(S))
        return self.support(S), np.zeros_like(S)

    def support(self, S):
        """The support function ``sup_{W in C} <S, W>``; sets without one cannot be certified."""
        raise NotImplementedError(f"{type(self).__name__} has no support function here, so "
                                  "programs that use it get no duality-gap certificate.")

    def project(self, x):
        """The Euclidean projection of ``x`` onto the set, of ``x``'s kind, dtype and device."""
        return self._project(as_data("x", x, ndim=self._ndim))

    def contains(self, x, tol: float = 1e-9) -> bool:
        """True when ``x`` lies in the set up to ``tol`` (see the class for how ``tol`` enters)."""
        tol = _check_tol(tol)
        return self._contains(as_data("x", x, ndim=self._ndim), tol)

    def constraints(self, expr) -> list:
        """CVXPY constraints stating that the expression ``expr`` lies in the set."""
        if not self.convex:
            raise nonconvex_error(self, "CVXPY constraints",
                                  f"use {self.relaxation} instead, or use {type(self).__name__}.project "
                                  f"in a projected-gradient loop.")
        return self._constraints(expr)


class RadiusBall(ConstraintSet):
    """A norm ball ``{x : norm(x) <= radius}``; subclasses give the norm and the kernel."""

    def __init__(self, radius: float):
        self.radius = check_scalar("radius", radius, low=0.0)

    def _parameters(self) -> dict:
        return {"radius": self.radius}

    def _contains(self, x, tol):
        return within(self.norm(x), self.radius, tol)

    def scaled(self, x_scale: float, y_scale: float) -> "RadiusBall":
        import copy

        ball = copy.copy(self)
        ball.radius = self.radius * x_scale / y_scale
        return ball
