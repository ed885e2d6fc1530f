"""Proposition 2 of paper 004: a dual certificate that a sparse column is the unique Net-Trim solution.

Public through :mod:`convexnet.certificates`.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from .._validation import as_float_array, check_scalar, check_shape
from ..errors import InvalidInputError

__all__ = [
    "UniquenessCertificate",
    "LayerUniquenessCertificate",
    "uniqueness_certificate",
    "layer_uniqueness_certificate",
]

METHODS = ("lp", "least_squares")


@dataclass(frozen=True)
class UniquenessCertificate:
    """The verdict of :func:`uniqueness_certificate` for one column.

    Attributes
    ----------
    unique : bool
        ``feasible and full_rank and equality_residual <= tol and margin > margin_tol``: the
        candidate is proven the unique solution of program (8).
    margin : float
        ``min(coefficient_margin, slack_margin)``: how strictly the strict inequalities hold
        (``-inf`` when no ``nu`` meets the equalities).
    full_rank : bool
        ``X[R, S]`` has full column rank, ``R`` = Omega and the zero-slack rows, ``S = supp w``.
    dual : ndarray, shape (P,)
        ``nu`` (0 on the rows with strictly negative slack, and everywhere when none was found).
    feasible : bool
        ``w`` satisfies program (8) up to ``tol`` (relative to ``max(1, max y)``).
    method : str
    support : ndarray of int
        ``S``: indices with ``|w_n| > tol * max|w|``.
    zero_slack : ndarray of int
        Rows off Omega with ``x_p . w >= -tol * max(1, max y)``.
    coefficient_margin : float
        ``1 - max_{n not in S} |(X^T nu)_n|`` (1 when ``S`` is every index).
    slack_margin : float
        ``min_{p zero slack} (-nu_p)`` (``inf`` without zero-slack rows).
    equality_residual : float
        ``max_{n in S} |(X^T nu)_n - sign(w_n)|``.
    feasibility_residual : float
        ``max(max_Omega |x_p . w - y_p|, max_{off Omega} (x_p . w)_+) / max(1, max y)``.
    """

    unique: bool
    margin: float
    full_rank: bool
    dual: np.ndarray = field(repr=False)
    feasible: bool = True
    method: str = "lp"
    support: np.ndarray = field(default=None, repr=False)
    zero_slack: np.ndarray = field(default=None, repr=False)
    coefficient_margin: float = float("nan")
    slack_margin: float = float("inf")
    equality_residual: float = float("nan")
    feasibility_residual: float = 0.0

    def __str__(self) -> str:
        verdict = "unique" if self.unique else "not certified unique"
        return (f"uniqueness certificate ({self.method}): {verdict}; margin {self.margin:.3e} "
                f"(coefficients {self.coefficient_margin:.3e}, slacks {self.slack_margin:.3e}), "
                f"full rank {self.full_rank}, feasible {self.feasible} "
                f"(residual {self.feasibility_residual:.1e}), |supp w| = {len(self.support)}, "
                f"{len(self.zero_slack)} zero slacks")


@dataclass(frozen=True)
class LayerUniquenessCertificate:
    """Corollary 1: the layer is the unique ``epsilon = 0`` solution when every column is.

    Attributes
    ----------
    unique : bool
        Every column certified unique.
    margin : float
        The smallest column margin.
    full_rank : bool
        Every column's restricted matrix has full column rank.
    columns : tuple of UniquenessCertificate
        One per column of ``W``.
    """

    unique: bool
    margin: float
    full_rank: bool
    columns: tuple

    @property
    def failed_columns(self) -> list[int]:
        """Columns not certified unique."""
        return [m for m, column in enumerate(self.columns) if not column.unique]

    def __str__(self) -> str:
        verdict = "unique" if self.unique else f"not certified on columns {self.failed_columns}"
        return (f"layer uniqueness certificate: {verdict}; smallest margin {self.margin:.3e} over "
                f"{len(self.columns)} columns")


def uniqueness_certificate(X, y, w, *, method: str = "lp", tol: float = 1e-7,
                           margin_tol: float = 1e-6) -> UniquenessCertificate:
    """Prove that ``w`` is the unique solution of Net-Trim's ``epsilon = 0`` column program (**contract**).

    Program (8) of paper 004, batch-first (``x_p`` is row ``p`` of ``X``, Omega ``= {p : y_p > 0}``)::

        minimize ||w||_1  s.t.  x_p . w = y_p  (p in Omega),   x_p . w <= 0  (p off Omega)

    or, with slacks ``s_p = x_p . w <= 0`` off Omega, program (9). Proposition 2 asks for ``Lambda`` in
    the range of ``X~^T``; writing ``Lambda = X~^T nu`` with ``nu`` (P,), ``X~`` gives
    ``Lambda_w = X^T nu`` and ``Lambda_s = -nu`` off Omega, so its conditions read, with
    ``S = supp w``, ``Z0 = {p off Omega : s_p = 0}`` and ``N0 = {p off Omega : s_p < 0}``:

    1. ``(X^T nu)_n = sign(w_n)`` for ``n`` in ``S``;
    2. ``|(X^T nu)_n| < 1`` for ``n`` not in ``S``;
    3. ``nu_p = 0`` for ``p`` in ``N0`` (``Lambda_s = 0`` on ``supp s``);
    4. ``nu_p < 0`` for ``p`` in ``Z0`` (``Lambda_s > 0`` off ``supp s``);
    5. ``X~[:, S + supp s]`` has full column rank, which is ``X[R, S]`` having full column rank
       with ``R = Omega + Z0`` (the identity block absorbs the rows of ``N0``).

    ``nu`` is free on Omega. The ``margin`` is ``min(1 - max_{n not in S} |(X^T nu)_n|,
    min_{Z0} (-nu_p))``: conditions 2 and 4 hold iff it is positive. Condition 1 is met to round-off
    (the ``nu`` found is projected onto it). DESIGN section 5 states the rank on ``X[Omega, S]``, a
    stronger requirement; the paper's (5) is used here.

    Parameters
    ----------
    X : array_like, shape (P, N)
    y : array_like, shape (P,)
        The neuron's output, ``y >= 0``.
    w : array_like, shape (N,)
        The candidate. Entries with ``|w_n| <= tol * max|w|`` count as zero (solvers leave tiny
        non-zeros); the certificate is about ``w`` with those set to 0.
    method : {"lp", "least_squares"}
        ``"lp"`` maximizes the margin by a linear program (HiGHS through scipy): exact up to
        round-off, positive whenever a certificate exists. ``"least_squares"`` takes the
        minimum-norm ``nu`` on ``R`` meeting condition 1 and checks the others: faster, sufficient
        only (it may miss a certificate that exists).
    tol : float
        Classification and feasibility tolerance, relative to ``max(1, max y)`` for ``x_p . w``.
    margin_tol : float
        ``unique`` needs ``margin > margin_tol``: a certificate that barely holds in floating
        point proves nothing.

    Returns
    -------
    UniquenessCertificate

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((60, 20))
    >>> w = np.zeros(20); w[[2, 7]] = [1.5, -2.0]
    >>> uniqueness_certificate(X, np.maximum(X @ w, 0), w).unique
    True
    """
    X = as_float_array("X", X, ndim=2)
    y = as_float_array("y", y, ndim=1)
    w = as_float_array("w", w, ndim=1)
    P, N = X.shape
    check_shape("y", y, (P,), "(P,) with P = X.shape[0]")
    check_shape("w", w, (N,), "(N,) with N = X.shape[1]")
    if (y < 0).any():
        raise InvalidInputError("y has negative entries; it must be a ReLU unit's output (y >= 0).")
    tol, margin_tol = _check_options(method, tol, margin_tol)
    return _column_certificate(X, y, w, method, tol, margin_tol)


def layer_uniqueness_certificate(X, Y, W, *, method: str = "lp", tol: float = 1e-7,
                                 margin_tol: float = 1e-6) -> LayerUniquenessCertificate:
    """Certify every column of ``W`` (Corollary 1): ``epsilon = 0`` Net-Trim decouples into columns.

    Parameters
    ----------
    X : array_like, shape (P, N)
    Y : array_like, shape (P, M)
        The layer's output, ``Y >= 0``.
    W : array_like, shape (N, M)
        The candidate layer.
    method, tol, margin_tol
        As in :func:`uniqueness_certificate`.

    Returns
    -------
    LayerUniquenessCertificate
    """
    X = as_float_array("X", X, ndim=2)
    Y = as_float_array("Y", Y, ndim=2)
    W = as_float_array("W", W, ndim=2)
    P, N = X.shape
    check_shape("Y", Y, (P, Y.shape[1]), "(P, M) with P = X.shape[0]")
    check_shape("W", W, (N, Y.shape[1]), "(N, M) with N = X.shape[1], M = Y.shape[1]")
    if (Y < 0).any():
        raise InvalidInputError("Y has negative entries; it must be a ReLU layer's output (Y >= 0).")
    tol, margin_tol = _check_options(method, tol, margin_tol)
    columns = tuple(_column_certificate(X, Y[:, m], W[:, m], method, tol, margin_tol)
                    for m in range(W.shape[1]))
    return LayerUniquenessCertificate(
        unique=all(column.unique for column in columns),
        margin=min((column.margin for column in columns), default=float("inf")),
        full_rank=all(column.full_rank for column in columns), columns=columns)


def _check_options(method, tol, margin_tol) -> tuple[float, float]:
    if method not in METHODS:
        raise InvalidInputError(f"method must be one of {METHODS}; got {method!r}.")
    return (check_scalar("tol", tol, low=0.0, low_inclusive=False),
            check_scalar("margin_tol", margin_tol, low=0.0))


def _column_certificate(X, y, w, method, tol, margin_tol) -> UniquenessCertificate:
    P, N = X.shape
    scale = max(1.0, float(y.max(initial=0.0)))
    support = np.abs(w) > tol * float(np.abs(w).max(initial=0.0))
    w = np.where(support, w, 0.0)
    z = X @ w
    omega = y > 0
    feasibility = max(float(np.abs(z - y)[omega].max(initial=0.0)),
                      float(np.maximum(z, 0.0)[~omega].max(initial=0.0))) / scale
    zero_slack = ~omega & (z >= -tol * scale)
    rows = omega | zero_slack
    restricted = X[np.ix_(rows, support)]
    full_rank = bool(restricted.shape[1] == 0 or np.linalg.matrix_rank(restricted) == restricted.shape[1])
    signs = np.sign(w[support])

    nu_rows = (_lp_dual(X, rows, support, zero_slack, signs) if method == "lp"
               else np.linalg.lstsq(restricted.T, signs, rcond=None)[0])
    nu = np.zeros(P)
    if nu_rows is not None:
        # Meet condition 1 to round-off: the LP's answer is only as exact as its tolerances.
        correction = np.linalg.lstsq(restricted.T, restricted.T @ nu_rows - signs, rcond=None)[0]
        nu[rows] = nu_rows - correction
    correlation = X.T @ nu
    equality_residual = float(np.abs(correlation[support] - signs).max(initial=0.0))
    coefficient_margin = 1.0 - float(np.abs(correlation[~support]).max(initial=0.0))
    slack_margin = float((-nu[zero_slack]).min(initial=np.inf))
    margin = min(coefficient_margin, slack_margin) if nu_rows is not None else -np.inf
    feasible = feasibility <= tol
    return UniquenessCertificate(
        unique=bool(feasible and full_rank and equality_residual <= tol and margin > margin_tol),
        margin=float(margin), full_rank=full_rank, dual=nu, feasible=bool(feasible), method=method,
        support=np.flatnonzero(support), zero_slack=np.flatnonzero(zero_slack),
        coefficient_margin=coefficient_margin, slack_margin=slack_margin,
        equality_residual=equality_residual, feasibility_residual=feasibility)


def _lp_dual(X, rows, support, zero_slack, signs):
    """The ``nu`` on ``rows`` maximizing the margin, or None when condition 1 has no solution.

    Variables ``(nu_R, t)``: maximize ``t <= 1`` s.t. ``X[R, S]^T nu_R = sign(w_S)``,
    ``+-X[R, n]^T nu_R + t <= 1`` off the support, ``nu_p + t <= 0`` on zero-slack rows.
    """
    from scipy.optimize import linprog

    X_rows = X[rows]
    count = X_rows.shape[0]
    off_support = X_rows[:, ~support].T
    zero_positions = np.flatnonzero(zero_slack[rows])
    zero_rows = np.zeros((len(zero_positions), count))
    zero_rows[np.arange(len(zero_positions)), zero_positions] = 1.0
    inequality = np.vstack([
        np.hstack([off_support, np.ones((off_support.shape[0], 1))]),
        np.hstack([-off_support, np.ones((off_support.shape[0], 1))]),
        np.hstack([zero_rows, np.ones((zero_rows.shape[0], 1))]),
    ])
    bound = np.concatenate([np.ones(2 * off_support.shape[0]), np.zeros(zero_rows.shape[0])])
    equality = np.hstack([X_rows[:, support].T, np.zeros((int(support.sum()), 1))])
    objective = np.zeros(count + 1)
    objective[-1] = -1.0
    solution = linprog(objective, A_ub=inequality if len(bound) else None,
                       b_ub=bound if len(bound) else None,
                       A_eq=equality if len(signs) else None, b_eq=signs if len(signs) else None,
                       bounds=[(None, None)] * count + [(None, 1.0)], method="highs")
    if solution.status != 0:
        return None
    return solution.x[:count]
