r"""Columns the polish leaves, solved again on their likely support by Clarabel, called directly.

Where the restricted optimality system of :mod:`convexnet.backends.polish` is degenerate (more tight
rows than a vertex needs, a budget that is not active, a column without fit rows: a linear program
whose vertex the active-set corrections do not reach) the polish gives up. The column's program
restricted to the entries ADMM kept, those whose correlation ``|X^T Lambda|`` is within ``margin``
of their weight, and the unpenalized rows, is small (``P x |S|`` instead of ``P x N``) and an
interior-point solver settles it: :func:`solvers.clarabel_column.solve_l1_column`, which builds
Clarabel's conic form directly (about a millisecond per column where a CVXPY compile costs 20 ms).
The answer is the full program's when the certificate's dual feasibility holds off that support,
checked here: ``|X^T Lambda| <= c (1 + GROW_TOL)`` on every other row; entries that fail join the
support and the column is solved again. The inequality rows are a working set too: those nearly
tight at ADMM's point first, then any the answer violates. The fit is compressed to ``|S|`` rows by
a QR factorization inside the solver, so a column of a layer calibrated on thousands of samples is
a conic program of a few hundred rows.
"""

from __future__ import annotations

import numpy as np

from solvers.clarabel_column import solve_l1_column, solve_l1_columns

from ..fits import Budget
from .polish import BOUND_TOL, Polished, applies, polish, terms

__all__ = ["restricted", "restricted_coupled"]

#: Inequality rows with slack under this fraction of the output scale at ADMM's point start in the
#: working set (on a digits layer, 39 of 1786 rows; the solve took 0.3 s instead of 4 s).
START_SLACK = 0.05
#: An entry off the support joins it when its dual correlation exceeds its weight by this fraction:
#: the interior-point dual's own accuracy (an optimal face with many entries at their bound, as in a
#: trained layer's whole-layer budget, otherwise pulls most of them in, at no gain).
GROW_TOL = 1e-6
#: Entries that join per column and round in a coupled program: this share of those that fail
#: (at least GROW_MIN). On the spirals hidden layer all of them at once took the second solve from
#: 5378 to 14895 entries (21 s); a tenth, 6369 entries (1.3 s), and it settled. Separable columns,
#: whose dual is refined, take all of them.
COUPLED_GROW_SHARE = 0.1
GROW_MIN = 3
#: Entries of an interior-point answer under this fraction of their column's largest are its
#: round-off (the solver's own zeros are about 1e-9 of it), set to 0 before the vertex move.
DUST = 1e-7
#: Rounds of growing the working sets (violated rows, entries whose dual correlation is too large).
WORKING_SET_ROUNDS = 12


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
    correlation = np.abs(X.T @ dual)
    settings = _settings(options)
    scale = max(program.output_scale, 1e-300)
    W_out, dual_out = W.copy(), dual.copy()
    passed = np.zeros(program.shape[2], dtype=bool)
    for m in columns:
        one = _WorkingSet(program, fit, below, weights, m, W, dual, correlation, margin, scale)
        if not one.support.any():
            continue
        budget = {"epsilon": float(fit.epsilon[m])} if isinstance(fit, Budget) else {"lam": fit.weight}
        for _ in range(WORKING_SET_ROUNDS):
            found = solve_l1_column(*one.block(X, weights), settings=settings, **budget)
            if found.status not in ("optimal", "optimal_inaccurate"):
                break
            w, Lambda, grew = one.absorb(found, X, weights, scale)
            # The interior point's answer, polished at a vertex, is exact on the whole column when
            # polish's checks pass (every entry and row): no further working-set rounds, an "almost
            # solved" answer of a badly conditioned fit counts too, and the certificate reads
            # round-off where the interior point's own dual can leave 1e-6 (a digits column: 1.5e-6).
            exact = _exact(program.select_columns([m]), w[:, None], Lambda[:, None])
            if exact is not None:
                W_out[:, m], dual_out[:, m] = exact.W[:, 0], exact.dual[:, 0]
                passed[m] = True
                break
            if not grew and found.status == "optimal":
                W_out[:, m], dual_out[:, m] = w, Lambda
                passed[m] = True
                break
            if found.status != "optimal":
                break
    return Polished(W_out, dual_out, passed)


def restricted_coupled(program, W, dual, *, options=None, margin: float = 0.9) -> Polished | None:
    """A whole-layer budget's columns solved again together, each on its likely support.

    The same working sets as :func:`restricted`, one per column, in ONE conic program (the budget
    ``sum_m ||A_m w_m - y_m||^2 <= epsilon^2`` couples them; :func:`solvers.clarabel_column.
    solve_l1_columns`), grown until every column holds on every row and its dual is feasible off
    its support, then made exact at a vertex (:func:`_exact`). Returns a :class:`Polished` whose
    ``columns`` are all True, or None (the program is not of this kind, or the working sets did
    not settle). Where the vertex's polish does not pass, the answer is the interior point's, whose
    dual's stationarity errors (1e-5 to 1e-4 of the weights on a 200 x 40 x 10 layer, 1e-5 on the
    spirals hidden layer) can keep the certificate above a 1e-6 gap: the caller checks it.
    """
    if not applies(program) or program.separable:
        return None
    fit, below, weights = terms(program)
    if not isinstance(fit, Budget):
        return None
    X = program.X
    M = program.shape[2]
    correlation = np.abs(X.T @ dual)
    scale = max(program.output_scale, 1e-300)
    sets = [_WorkingSet(program, fit, below, weights, m, W, dual, correlation, margin, scale)
            for m in range(M)]
    for _ in range(WORKING_SET_ROUNDS):
        found = solve_l1_columns([one.block(X, weights) for one in sets], epsilon=float(fit.epsilon),
                                 settings=_settings(options))
        if found[0].status != "optimal":
            return None
        absorbed = [one.absorb(part, X, weights, scale, COUPLED_GROW_SHARE)
                    for one, part in zip(sets, found)]
        if not any(grew for _, _, grew in absorbed):
            W_found = np.column_stack([w for w, _, _ in absorbed])
            dual_found = np.column_stack([Lambda for _, Lambda, _ in absorbed])
            exact = _exact(program, W_found, dual_found)
            return exact if exact is not None else Polished(W_found, dual_found,
                                                            np.ones(M, dtype=bool))
    return None


def _exact(program, W, dual) -> Polished | None:
    """The interior point's answer ``W`` (N, M) made exact where it can be: its dust (entries under
    ``DUST`` of their column's largest) set to 0, moved to a vertex of the optimal face
    (:func:`convexnet.programs.vertex.to_vertex`), where the restricted systems are nonsingular,
    and polished there (one multiplier for every column). On the spirals hidden layer the
    interior-point dual certifies to 1.2e-6 to 1.1e-5 (its stationarity errors on a face with many
    correlations at their bound), the polished one to 6e-9. Returns the polished point if every
    column passed, else None."""
    from ..programs.vertex import to_vertex

    cleaned = np.where(np.abs(W) > DUST * np.abs(W).max(axis=0, keepdims=True), W, 0.0)
    vertex, _ = to_vertex(program, cleaned)
    polished = polish(program, vertex, dual)
    return polished if polished is not None and polished.columns.all() else None


def _settings(options) -> dict:
    return {key: value for key, value in (options or {}).items() if key != "verbose"}


class _WorkingSet:
    """One column's working sets: the entries ``support`` (N,) and the inequality rows ``rows`` (P,).

    The support starts as ADMM's nonzeros, the unpenalized entries and those whose correlation
    ``|X^T Lambda|`` is within ``margin`` of their weight; the rows as those tight at ADMM's point
    (slack under ``START_SLACK`` of the output scale) or with a positive multiplier: most rows of a
    ReLU layer's inactive samples have slack and never enter, which keeps the conic program small.
    """

    def __init__(self, program, fit, below, weights, m, W, dual, correlation, margin, scale):
        P = program.shape[0]
        self.fit_rows, self.y = fit.mask[:, m], fit.target[:, m]
        self.below_rows = below.mask[:, m] if below is not None else np.zeros(P, dtype=bool)
        self.v = below.target[:, m] if below is not None else np.zeros(P)
        self.support = (W[:, m] != 0) | (weights == 0) | (correlation[:, m] >= margin * weights)
        slack = self.v - program.X @ W[:, m]
        self.rows = self.below_rows & ((slack <= START_SLACK * scale) | (dual[:, m] > 0))

    def block(self, X, weights):
        """``(A, y, B, v, c)`` of the column restricted to its working sets."""
        X_S = X[:, self.support]
        return (X_S[self.fit_rows], self.y[self.fit_rows], X_S[self.rows], self.v[self.rows],
                weights[self.support])

    def absorb(self, found, X, weights, scale, share: float = 1.0):
        """``(w (N,), Lambda (P,), grew)``: the answer in full size, and whether a row it violates
        (first) or an entry whose dual correlation exceeds its weight joined the working sets."""
        P, N = X.shape
        w = np.zeros(N)
        w[self.support] = found.w
        Lambda = np.zeros(P)
        Lambda[self.fit_rows] = found.fit_dual
        Lambda[self.rows] = found.below_dual
        violated = self.below_rows & ~self.rows & (X @ w - self.v > BOUND_TOL * scale)
        if violated.any():
            self.rows = self.rows | violated
            return w, Lambda, True
        excess = np.abs(X.T @ Lambda) - weights * (1 + GROW_TOL)
        outside = ~self.support & (excess > 0)
        if outside.any():
            # ``share`` of them, the worst first (column generation): in a coupled program an early
            # dual from a poor support marks far more entries than the optimum needs.
            count = max(GROW_MIN, int(np.ceil(share * outside.sum())))
            worst = np.flatnonzero(outside)[np.argsort(-excess[outside])[:count]]
            self.support = self.support.copy()
            self.support[worst] = True
            return w, Lambda, True
        return w, Lambda, False
