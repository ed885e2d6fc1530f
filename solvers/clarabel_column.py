r"""One l1 column program handed to Clarabel directly, without a modelling layer.

The program, for one column of ``n`` weights, ``f`` fit rows ``A`` (target ``y``), ``b`` inequality
rows ``B`` (bound ``v``) and l1 weights ``c >= 0``:

.. math::

    \min_w \; c^T |w| + \lambda \|A w - y\|^2 \quad \text{(or s.t. } \|A w - y\| \le \epsilon)
    \quad \text{s.t.} \; B w \le v.

It is written as a conic program over ``x = [w (n), t (p), r (f)]`` (``t`` bounds ``|w|`` on the
``p`` entries with ``c > 0``, ``r = A w - y``): Clarabel's standard form ``min x^T P x / 2 + q^T x``
s.t. ``G x + s = h``, ``s`` in a product of cones, with the rows

=====================  ===========================================  ==================
rows                   ``G x + s = h``                               cone
=====================  ===========================================  ==================
``r = A w - y``        ``[-A, 0, I] x + s = -y``                     zero (f)
``w - t <= 0``         ``[E, -I, 0] x + s = 0``                      nonnegative (p)
``-w - t <= 0``        ``[-E, -I, 0] x + s = 0``                     nonnegative (p)
``B w <= v``           ``[B, 0, 0] x + s = v``                       nonnegative (b)
``||r|| <= eps``       ``[0; [0, 0, -I]] x + s = [eps; 0]``          second order (1 + f)
=====================  ===========================================  ==================

(``E`` selects the penalized entries; the last block only for a budget, and the squared fit puts
``P = 2 lam I`` on ``r``.) Stationarity in ``r`` gives the fit's dual: with ``z_0`` the zero cone's
multipliers, ``Lambda_fit = -z_0`` equals ``2 lam (A w - y)`` for the squared fit and ``2 nu (A w - y)``
for a budget with multiplier ``nu``; the inequality rows' multipliers are their cone's ``z``; and
stationarity in ``w`` reads ``A^T Lambda_fit + B^T mu in -c * sign(w)`` (``|.| <= c`` off the support):
the dual of the Net-Trim certificate. The data are divided by an output scale first (``y``, ``v`` and
``eps``, with ``lam`` multiplied by it), which leaves the dual unchanged and the weights to scale back.
Building the matrices costs well under a millisecond for a few hundred rows, where compiling the
same column through CVXPY costs about 20 ms.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import scipy.sparse as sp

__all__ = ["ColumnResult", "solve_l1_column"]

#: Clarabel's tolerances unless told otherwise (those convexnet gives it through CVXPY).
DEFAULT_SETTINGS = {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9}
#: Entries (and multipliers) above this fraction of the largest count as the support (the active
#: rows) when the dual is refined: an interior-point answer's zeros are about 1e-9 of the largest.
SUPPORT_TOL = 1e-6
_STATUS = {"Solved": "optimal", "AlmostSolved": "optimal_inaccurate"}


@dataclass
class ColumnResult:
    """``w`` (n,), the fit rows' dual ``fit_dual`` (f,), the inequality rows' ``below_dual`` (b,),
    and ``status`` (``"optimal"``, ``"optimal_inaccurate"`` or Clarabel's own word for a failure)."""

    w: np.ndarray
    fit_dual: np.ndarray
    below_dual: np.ndarray
    status: str


def solve_l1_column(A, y, B, v, c, *, lam: float | None = None, epsilon: float | None = None,
                    settings: dict | None = None) -> ColumnResult:
    """Solve the module's column program with Clarabel.

    Parameters
    ----------
    A : ndarray, shape (f, n)
        Fit rows (``f`` may be 0).
    y : ndarray, shape (f,)
    B : ndarray, shape (b, n)
        Inequality rows ``B w <= v`` (``b`` may be 0).
    v : ndarray, shape (b,)
    c : ndarray, shape (n,)
        Nonnegative l1 weights; entries with ``c = 0`` are free.
    lam : float, optional
        The squared fit's weight (give exactly one of ``lam`` and ``epsilon``).
    epsilon : float, optional
        The budget on ``||A w - y||``.
    settings : dict, optional
        Clarabel settings by name, over :data:`DEFAULT_SETTINGS`.

    Returns
    -------
    ColumnResult
    """
    return solve_l1_columns([(A, y, B, v, c)], lam=lam, epsilon=epsilon, settings=settings)[0]


def solve_l1_columns(columns, *, lam: float | None = None, epsilon: float | None = None,
                     settings: dict | None = None) -> list:
    """Several column programs in one conic program; with ``epsilon``, under ONE shared budget
    ``sum_m ||A_m w_m - y_m||^2 <= epsilon^2`` (a whole-layer budget), else each with its own
    squared fit ``lam ||A_m w_m - y_m||^2``.

    Parameters
    ----------
    columns : list of tuple ``(A, y, B, v, c)``
        One per column, as in :func:`solve_l1_column`.
    lam, epsilon, settings
        As in :func:`solve_l1_column` (``epsilon`` the shared budget).

    Returns
    -------
    list of ColumnResult
        One per column, in order; the status is the whole program's.
    """
    import clarabel

    if (lam is None) == (epsilon is None):
        raise ValueError("give exactly one of lam and epsilon")
    data = [(np.asarray(A, dtype=float), np.asarray(y, dtype=float).ravel(),
             np.asarray(B, dtype=float), np.asarray(v, dtype=float).ravel(),
             np.asarray(c, dtype=float).ravel()) for A, y, B, v, c in columns]
    scale = max([np.abs(y).max(initial=0.0) for _, y, _, _, _ in data]
                + [np.abs(v).max(initial=0.0) for _, _, _, v, _ in data]
                + [0.0 if epsilon is None else float(epsilon)])
    scale = scale if scale > 0 else 1.0
    fits, targets, perp2 = [], [], 0.0
    for A, y, _, _, _ in data:
        y = y / scale
        if A.shape[0] > A.shape[1]:
            # Compress the fit: A = Q R gives ||A w - y||^2 = ||R w - Q^T y||^2 + ||y_perp||^2.
            Q, A = np.linalg.qr(A)
            projected = Q.T @ y
            perp2 += float(np.sum((y - Q @ projected) ** 2))
            y = projected
        fits.append(A)
        targets.append(y)
    n = [A.shape[1] for A, *_ in data]
    failed = [ColumnResult(np.zeros(A.shape[1]), np.zeros(A.shape[0]), np.zeros(B.shape[0]),
                           "infeasible") for A, _, B, _, _ in data]
    budget_scaled = None
    if epsilon is not None:
        if perp2 > (float(epsilon) / scale) ** 2:
            return failed
        budget_scaled = float(np.sqrt((float(epsilon) / scale) ** 2 - perp2))
    penalized = [np.flatnonzero(c > 0) for *_, c in data]
    f, p, b = (sum(A.shape[0] for A in fits), sum(k.size for k in penalized),
               sum(B.shape[0] for _, _, B, _, _ in data))
    N = sum(n)
    budget = epsilon is not None and f > 0
    select = sp.block_diag([sp.csc_matrix((np.ones(k.size), (np.arange(k.size), k)),
                                          shape=(k.size, width)) for k, width in zip(penalized, n)],
                           format="csc")
    fit_rows = sp.block_diag([sp.csc_matrix(A) for A in fits], format="csc")
    below_rows = sp.block_diag([sp.csc_matrix(B) for _, _, B, _, _ in data], format="csc")
    I_p, I_f = sp.identity(p, format="csc"), sp.identity(f, format="csc")
    blocks = [[-fit_rows, sp.csc_matrix((f, p)), I_f],
              [select, -I_p, sp.csc_matrix((p, f))],
              [-select, -I_p, None],
              [below_rows, None, None]]
    h = [-np.concatenate(targets + [np.zeros(0)]), np.zeros(2 * p),
         np.concatenate([v for _, _, _, v, _ in data] + [np.zeros(0)]) / scale]
    cones = [(clarabel.ZeroConeT, f), (clarabel.NonnegativeConeT, 2 * p + b)]
    if budget:
        blocks.append([None, None, sp.vstack([sp.csc_matrix((1, f)), -I_f])])
        h.append(np.concatenate([[budget_scaled], np.zeros(f)]))
        cones.append((clarabel.SecondOrderConeT, 1 + f))
    G = sp.bmat(blocks, format="csc")
    q = np.concatenate([np.zeros(N)] + [c[k] for (*_, c), k in zip(data, penalized)] + [np.zeros(f)])
    quadratic = 0.0 if budget or lam is None else 2.0 * float(lam) * scale
    P = sp.triu(sp.diags(np.concatenate([np.zeros(N + p), np.full(f, quadratic)]), format="csc"),
                format="csc")
    options = clarabel.DefaultSettings()
    options.verbose = False
    for key, value in {**DEFAULT_SETTINGS, **(settings or {})}.items():
        if hasattr(options, key):
            setattr(options, key, value)
    solver = clarabel.DefaultSolver(P, q, G, np.concatenate(h),
                                    [cone(size) for cone, size in cones if size > 0], options)
    solution = solver.solve()
    status = _STATUS.get(str(solution.status).split(".")[-1], str(solution.status))
    x, z = np.asarray(solution.x, dtype=float), np.asarray(solution.z, dtype=float)
    if x.shape[0] != N + p + f or not np.all(np.isfinite(x)):
        return [ColumnResult(r.w, r.fit_dual, r.below_dual, "solver_error") for r in failed]
    # The fits' duals 2 nu (A w - y) on the original rows: nu = lam, or for the budget (in its norm
    # form, multiplier z_0 of the cone) nu = z_0 / (2 epsilon) in scaled units, z_0 / (2 epsilon
    # scale) in the original ones.
    if budget:
        nu = z[f + 2 * p + b] / (2.0 * budget_scaled * scale) if budget_scaled > 0 else 0.0
    else:
        nu = 0.0 if lam is None else float(lam)
    out, at_w, at_b = [], 0, f + 2 * p
    for A, y, B, _, _ in data:
        out.append(ColumnResult(x[at_w:at_w + A.shape[1]] * scale, np.zeros(A.shape[0]),
                                z[at_b:at_b + B.shape[0]], status))
        at_w, at_b = at_w + A.shape[1], at_b + B.shape[0]
    if status == "optimal":
        nu, mus = _refine_duals(data, out, nu, budget)
        for one, mu in zip(out, mus):
            one.below_dual = mu
    for (A, y, *_), one in zip(data, out):
        one.fit_dual = 2.0 * nu * (A @ one.w - y)
    return out


def _refine_duals(data, results, nu: float, budget: bool):
    r"""The dual ``(nu, [mu_m])`` made to satisfy stationarity on the supports to round-off.

    The interior-point dual holds to the solver's tolerance (about 1e-6 relative for ``nu``, read
    from one cone entry). On column ``m``'s support ``S_m`` (entries clearly away from 0)
    stationarity is linear in the unknowns:

    .. math:: \nu g_m + B_{m,K S}^T \mu_{m,K} = t_m, \quad
              g_m = 2 A_{m,S}^T r_m, \; t_m = -c_S \operatorname{sign}(w_S)

    (``r_m`` the residual, ``K`` the rows with a positive multiplier). ``nu`` is fixed for the
    squared fit and shared by every column under one budget: with ``Pi_m`` the projection off the
    range of ``B_{m,KS}^T``, the least-squares ``nu = sum <Pi g, Pi t> / sum ||Pi g||^2``; then each
    ``mu_m`` is its column's least-squares solution. The refined dual replaces the solver's when it
    is nonnegative and its worst error (stationarity on the supports, dual feasibility
    ``|A^T Lambda + B^T mu| <= c`` off them) is smaller; else the solver's dual stays.

    Returns
    -------
    nu : float
    mus : list of ndarray, shape (b_m,)
    """
    pieces = []
    for (A, y, B, _, c), one in zip(data, results):
        w, mu = one.w, one.below_dual
        on = np.abs(w) > SUPPORT_TOL * max(np.abs(w).max(initial=0.0), 1e-300)
        K = mu > SUPPORT_TOL * max(np.abs(mu).max(initial=0.0), 1e-300)
        gradient = 2.0 * A.T @ (A @ w - y)                                  # (n,)
        pieces.append((gradient, -c * np.sign(w), B[K].T, K, mu, on, c))
    refined = nu
    if budget:
        num = den = 0.0
        for gradient, target, Bt, _, _, on, _ in pieces:
            g_off, t_off = _off_range(Bt[on], gradient[on]), _off_range(Bt[on], target[on])
            num, den = num + float(g_off @ t_off), den + float(g_off @ g_off)
        refined = num / den if den > 0 else nu
    mus = []
    for gradient, target, Bt, K, mu, on, _ in pieces:
        new = mu.copy()
        if Bt.shape[1]:
            new[K] = np.linalg.lstsq(Bt[on], target[on] - refined * gradient[on], rcond=None)[0]
        mus.append(new)

    def error(value, multipliers):
        # Stationarity on the support, dual feasibility |A^T Lambda + B^T mu| <= c off it.
        worst = 0.0
        for (gradient, target, Bt, K, _, on, c), mu in zip(pieces, multipliers):
            correlation = value * gradient + Bt @ mu[K]
            worst = max(worst, np.abs(correlation[on] - target[on]).max(initial=0.0),
                        (np.abs(correlation[~on]) - c[~on]).max(initial=0.0))
        return worst

    solvers_mus = [mu for *_, mu, _, _ in pieces]
    if (refined >= 0 and all((mu >= 0).all() for mu in mus)
            and error(refined, mus) < error(nu, solvers_mus)):
        return float(refined), mus
    return nu, solvers_mus


def _off_range(M, x):
    """``x`` minus its least-squares projection onto the range of ``M`` (``x`` if ``M`` has no
    columns)."""
    if M.shape[1] == 0:
        return x
    return x - M @ np.linalg.lstsq(M, x, rcond=None)[0]
