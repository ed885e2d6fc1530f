r"""Columns the polish leaves, solved again on their likely support by Clarabel, called directly.

Where the restricted optimality system of :mod:`convexnet.backends.polish` is degenerate (more tight
rows than a vertex needs, a budget that is not active, a column without fit rows: a linear program
whose vertex the active-set corrections do not reach) the polish gives up. The column's program
restricted to the entries ADMM kept, those whose correlation ``|X^T Lambda|`` is within ``margin``
of their weight, and the unpenalized rows, is small (``P x |S|`` instead of ``P x N``) and an
interior-point solver settles it: :func:`solvers.clarabel_column.solve_l1_column`, which builds
Clarabel's conic form directly (about a millisecond per column where a CVXPY compile costs 20 ms).
The answer is the full program's when the certificate's dual feasibility holds off that support,
checked here: ``|X^T Lambda| <= c (1 + DUAL_TOL)`` on every other row; entries that fail join the
support and the column is solved again. The inequality rows are a working set too: those nearly
tight at ADMM's point first, then any the answer violates. The fit is compressed to ``|S|`` rows by
a QR factorization inside the solver, so a column of a layer calibrated on thousands of samples is
a conic program of a few hundred rows.
"""

from __future__ import annotations

import numpy as np

from solvers.clarabel_column import solve_l1_column

from ..fits import Budget
from .polish import BOUND_TOL, DUAL_TOL, Polished, applies, terms

__all__ = ["restricted"]

#: Inequality rows with slack under this fraction of the output scale at ADMM's point start in the
#: working set (on a digits layer, 39 of 1786 rows; the solve took 0.3 s instead of 4 s).
START_SLACK = 0.05
#: Rounds of growing the working sets (violated rows, entries whose dual correlation is too large).
WORKING_SET_ROUNDS = 6


def restricted(program, W, dual, columns, *, options=None, margin: float = 0.9) -> Polished | None:
    """Columns ``columns`` of a separable ``program`` solved again on their likely support.

    Parameters
    ----------
    program : SparsityProgram
        Of the polish kind (:func:`convexnet.backends.polish.applies`) and separable.
    W : ndarray, shape (N, M)
        The approximate solution (ADMM's).
    dual : ndarray, shape (P, M)
        Its dual ``Lambda``.
    columns : array_like of int
        The columns to solve again.
    options : dict, optional
        Clarabel settings by name.
    margin : float, default 0.9
        Entries whose correlation is at least ``margin`` times their weight join the support.

    Returns
    -------
    Polished or None
        ``columns`` marks those that passed (the others keep ``W`` and ``dual``); None when the
        program is not of the polish kind.
    """
    if not applies(program) or not program.separable:
        return None
    fit, below, weights = terms(program)
    X = program.X
    P, N, M = program.shape
    correlation = np.abs(X.T @ dual)
    settings = {key: value for key, value in (options or {}).items() if key not in ("verbose",)}
    scale = max(program.output_scale, 1e-300)
    W_out, dual_out = W.copy(), dual.copy()
    passed = np.zeros(M, dtype=bool)
    for m in columns:
        support = (W[:, m] != 0) | (weights == 0) | (correlation[:, m] >= margin * weights)
        if not support.any():
            continue
        budget = {"epsilon": float(fit.epsilon[m])} if isinstance(fit, Budget) else {"lam": fit.weight}
        found = _solve_column(X, fit.mask[:, m], fit.target[:, m],
                              below.mask[:, m] if below is not None else np.zeros(P, dtype=bool),
                              below.target[:, m] if below is not None else np.zeros(P),
                              weights, support, W[:, m], dual[:, m], scale, settings, budget)
        if found is not None:
            W_out[:, m], dual_out[:, m] = found
            passed[m] = True
    return Polished(W_out, dual_out, passed)


def _solve_column(X, fit_rows, y, below_rows, v, weights, support, w_start, dual_start, scale,
                  settings, budget):
    """One column on a working set of entries (``support``) and of inequality rows, grown until the
    answer holds on every row and its dual is feasible off the support: ``(w, Lambda)`` or None.

    The inequality rows start as those tight at ``w_start`` (slack under ``START_SLACK`` of the
    output scale) or with a positive multiplier in ``dual_start``; most rows of a ReLU layer's
    inactive samples have slack and never enter, which keeps the conic program small.
    """
    P, N = X.shape
    slack = v - X @ w_start
    rows = below_rows & ((slack <= START_SLACK * scale) | (dual_start > 0))
    for _ in range(WORKING_SET_ROUNDS):
        X_S = X[:, support]
        found = solve_l1_column(X_S[fit_rows], y[fit_rows], X_S[rows], v[rows], weights[support],
                                settings=settings, **budget)
        if found.status != "optimal":
            return None
        w = np.zeros(N)
        w[support] = found.w
        violated = below_rows & ~rows & (X @ w - v > BOUND_TOL * scale)
        if violated.any():
            rows |= violated
            continue
        Lambda = np.zeros(P)
        Lambda[fit_rows] = found.fit_dual
        Lambda[rows] = found.below_dual
        outside = ~support & (np.abs(X.T @ Lambda) > weights * (1 + DUAL_TOL))
        if outside.any():
            support |= outside
            continue
        return w, Lambda
    return None
