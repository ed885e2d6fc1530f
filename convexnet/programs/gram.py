r"""Sufficient statistics of a least-squares fit: a linear layer's program without its samples.

For a fit without a mask, ``||X W - Y||_F^2 = tr(W^T H W) - 2 tr(W^T C) + ||Y||_F^2`` with
``H = X^T X`` (N, N) and ``C = X^T Y`` (N, M): the program depends on the P samples only through
``H``, ``C`` and the column norms of ``Y``. :class:`GramData` accumulates them from a stream of
batches in float64 (memory ``O(N^2 + N M)``, whatever P), with the column sums that a bias needs.

A program is then solved in an equivalent *compressed* sample form: with the eigendecomposition
``H = Q diag(s) Q^T`` restricted to ``s > 0`` (rank ``r``), ``R = diag(sqrt(s)) Q^T`` (r, N) and
``T = diag(1 / sqrt(s)) Q^T C`` (r, M) give

.. math:: \|X W - Y\|^2 = \|R W - T\|^2 + \|Y\|^2 - \|T\|^2

for every ``W``: the last two terms are the part of ``Y`` no ``W`` can reach (its residual on the
range of ``X``), a constant. Budgets shrink by it (``epsilon'^2 = epsilon^2 - floor``), the squared
loss gains it as a constant, and every backend, certificate and cleaning rule runs unchanged on ``r``
rows instead of ``P``.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from .._validation import as_float_array, check_bool, check_exactly_one, check_scalar
from ..errors import InvalidInputError

__all__ = ["GramData", "compress", "net_trim_problem"]


@dataclass
class GramData:
    """``H = X^T X``, ``C = X^T Y``, the squared column norms of ``Y`` and the sample count, float64.

    Attributes
    ----------
    H : ndarray, shape (N, N)
    XtY : ndarray, shape (N, M)
    y_squares : ndarray, shape (M,)
        ``||Y[:, m]||^2``.
    n : int
        Samples seen (P).
    x_sum : ndarray, shape (N,)
        ``X^T 1``, for a bias column.
    y_sum : ndarray, shape (M,)
        ``Y^T 1``.

    Examples
    --------
    >>> import numpy as np, convexnet as cn
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((1000, 6)); Y = X @ rng.standard_normal((6, 2))
    >>> gram = cn.GramData.from_batches((X[i:i + 100], Y[i:i + 100]) for i in range(0, 1000, 100))
    >>> bool(np.allclose(gram.H, X.T @ X)), gram.n
    (True, 1000)
    """

    H: np.ndarray
    XtY: np.ndarray
    y_squares: np.ndarray
    n: int
    x_sum: np.ndarray
    y_sum: np.ndarray

    @classmethod
    def empty(cls, N: int, M: int) -> "GramData":
        """Statistics of no samples, for ``N`` inputs and ``M`` outputs."""
        return cls(np.zeros((N, N)), np.zeros((N, M)), np.zeros(M), 0, np.zeros(N), np.zeros(M))

    @classmethod
    def from_arrays(cls, X, Y) -> "GramData":
        """The statistics of one batch ``X`` (P, N), ``Y`` (P, M)."""
        X = as_float_array("X", X, ndim=2)
        Y = as_float_array("Y", Y, ndim=2)
        gram = cls.empty(X.shape[1], Y.shape[1])
        gram.add(X, Y)
        return gram

    @classmethod
    def from_batches(cls, batches) -> "GramData":
        """Accumulate the statistics of ``(x, y)`` batches (numpy arrays or tensors, any P each).

        Only one batch is held at a time: memory ``O(N^2 + N M)`` besides it.
        """
        gram = None
        for index, batch in enumerate(batches):
            if not isinstance(batch, (tuple, list)) or len(batch) != 2:
                raise InvalidInputError(f"batch {index} must be a pair (x, y); got {type(batch).__name__}.")
            x = as_float_array(f"batch {index} x", batch[0], ndim=2)
            y = as_float_array(f"batch {index} y", batch[1], ndim=2)
            if gram is None:
                gram = cls.empty(x.shape[1], y.shape[1])
            gram.add(x, y, label=f"batch {index}")
        if gram is None or gram.n == 0:
            raise InvalidInputError("batches held no samples; give at least one (x, y) pair with rows.")
        return gram

    def add(self, X, Y, *, label: str = "batch") -> None:
        """Add the statistics of ``X`` (P, N) and ``Y`` (P, M) in place."""
        X = as_float_array(f"{label} x", X, ndim=2)
        Y = as_float_array(f"{label} y", Y, ndim=2)
        N, M = self.XtY.shape
        if X.shape[1] != N or Y.shape[1] != M or X.shape[0] != Y.shape[0]:
            raise InvalidInputError(f"{label} has shapes x {X.shape}, y {Y.shape}; expected (P, {N}) "
                                    f"and (P, {M}) with the same P.")
        self.H += X.T @ X
        self.XtY += X.T @ Y
        self.y_squares += np.einsum("pm,pm->m", Y, Y)
        self.x_sum += X.sum(axis=0)
        self.y_sum += Y.sum(axis=0)
        self.n += X.shape[0]

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(P, N, M)``."""
        return self.n, self.H.shape[0], self.XtY.shape[1]

    def with_bias(self) -> "GramData":
        """The statistics of ``[X, 1]``: ``X`` with a trailing ones column (a bias)."""
        N, M = self.XtY.shape
        H = np.empty((N + 1, N + 1))
        H[:N, :N] = self.H
        H[:N, N] = H[N, :N] = self.x_sum
        H[N, N] = self.n
        XtY = np.vstack([self.XtY, self.y_sum[None, :]])
        x_sum = np.append(self.x_sum, self.n)
        return GramData(H, XtY, self.y_squares.copy(), self.n, x_sum, self.y_sum.copy())


def compress(gram: GramData, *, relative_rank_tol: float = 1e-12):
    """The compressed sample form of the module docstring.

    Returns
    -------
    R : ndarray, shape (r, N)
    T : ndarray, shape (r, M)
    floor : ndarray, shape (M,)
        ``||Y[:, m]||^2 - ||T[:, m]||^2 >= 0``: the squared residual no ``W`` removes, per column.
    """
    values, vectors = np.linalg.eigh(gram.H)
    keep = values > relative_rank_tol * max(float(values.max(initial=0.0)), np.finfo(float).tiny)
    roots = np.sqrt(values[keep])
    basis = vectors[:, keep]
    R = roots[:, None] * basis.T
    T = (basis.T @ gram.XtY) / roots[:, None]
    floor = np.maximum(gram.y_squares - np.einsum("rm,rm->m", T, T), 0.0)
    return R, T, floor


def net_trim_problem(cls, gram, *, epsilon=None, rel_epsilon=None, lam=None, bias=False,
                     penalize_bias=True, split_budget=False, **options):
    """The body of :meth:`convexnet.NetTrimProblem.from_gram` (``cls`` the class)."""
    if not isinstance(gram, GramData):
        raise InvalidInputError(f"gram must be a convexnet.GramData; got {type(gram).__name__}.")
    bias = check_bool("bias", bias)
    check_exactly_one({"epsilon": epsilon, "rel_epsilon": rel_epsilon, "lam": lam},
                      " (epsilon or rel_epsilon: constrained form; lam: regularized form)")
    design = gram.with_bias() if bias else gram
    R, T, floor = compress(design)
    y_norms = np.sqrt(gram.y_squares)
    total = float(np.sqrt(gram.y_squares.sum()))
    budget = {"lam": lam} if lam is not None else {}
    if lam is None:
        full = (check_scalar("rel_epsilon", rel_epsilon, low=0.0) * total if epsilon is None
                else epsilon)
        if np.ndim(full) == 0 and check_bool("split_budget", split_budget):
            shares = y_norms / total if total > 0 else np.full(y_norms.shape, y_norms.size ** -0.5)
            full = check_scalar("epsilon", full, low=0.0) * shares
        if np.ndim(full) == 1:
            full = as_float_array("epsilon", full, ndim=1)
            squares, floors = full ** 2, floor
        else:
            full = check_scalar("epsilon", full, low=0.0)
            squares, floors = full ** 2, float(floor.sum())
        short = np.asarray(squares - floors) < 0
        if short.any():
            raise InvalidInputError(
                f"epsilon is below the least-squares floor: no W reaches ||X W - Y|| <= epsilon "
                f"(floor {np.sqrt(np.sum(floor)):.6g} for the layer); raise the budget.")
        budget = {"epsilon": np.sqrt(np.maximum(squares - floors, 0.0))}
    problem = cls(R, T, relu=False, **budget, **options)
    if bias:
        problem.bias = True
        problem.X = R[:, :-1]
        problem.penalize_bias = check_bool("penalize_bias", penalize_bias)
        if not problem.penalize_bias:
            problem.penalty_weights[-1] = 0.0
        problem.program = problem._program()
    problem.gram, problem.residual_floor = gram, floor
    return problem
