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
    found = solve_l1_columns([(A, y, B, v, c)], lam=lam, epsilon=epsilon, settings=settings)[0]
    if found.status != "optimal":
        return found
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    y, c = np.asarray(y, dtype=float).ravel(), np.asarray(c, dtype=float).ravel()
    residual = A @ found.w - y
    nu = float(lam) if epsilon is None else _multiplier(found.fit_dual, residual)
    nu, mu = _refine_dual(A, residual, B, found.below_dual, c, found.w, nu, epsilon is not None)
    return ColumnResult(found.w, 2.0 * nu * residual, mu, found.status)


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
    # form, multiplier z_0 of the cone) nu = z_0 / (2 epsilon) in scaled units.
    if budget:
        nu = z[f + 2 * p + b] / (2.0 * budget_scaled) if budget_scaled > 0 else 0.0
    else:
        nu = 0.0 if lam is None else float(lam) * scale
    out, at_w, at_b = [], 0, f + 2 * p
    for A, y, B, _, _ in data:
        w = x[at_w:at_w + A.shape[1]] * scale
        mu = z[at_b:at_b + B.shape[0]]
        residual = (A @ w - y) / scale
        out.append(ColumnResult(w, 2.0 * nu * residual, mu, status))
        at_w, at_b = at_w + A.shape[1], at_b + B.shape[0]
    return out


def _multiplier(fit_dual, residual) -> float:
    """``nu`` with ``fit_dual = 2 nu residual`` (least squares; 0 for a zero residual)."""
    size = float(residual @ residual)
    return float(fit_dual @ residual) / (2.0 * size) if size > 0 else 0.0


def _refine_dual(A, residual, B, mu, c, w, nu, budget):
    """The dual ``(nu, mu)`` made to satisfy stationarity on the support to round-off.

    The interior-point dual holds to the solver's tolerance (about 1e-6 relative for ``nu``, read
    from one cone entry). On the support ``S`` (entries clearly away from 0) stationarity is linear
    in the unknowns: ``2 nu A_S^T r + B_KS^T mu_K = -c_S sign(w_S)`` (``r`` the residual, ``K`` the
    rows with a positive multiplier; ``nu`` only for a budget). Its least-squares solution replaces
    the solver's when it is nonnegative and fits better; else the solver's dual stays.
    """
    on = np.abs(w) > SUPPORT_TOL * max(np.abs(w).max(initial=0.0), 1e-300)
    K = mu > SUPPORT_TOL * max(np.abs(mu).max(initial=0.0), 1e-300)
    target = -c[on] * np.sign(w[on])
    blocks = [2.0 * A[:, on].T @ residual[:, None]] if budget else []
    blocks.append(B[K][:, on].T)
    matrix = np.hstack(blocks)
    fixed = 0.0 if budget else 2.0 * nu * (A[:, on].T @ residual)
    before = np.abs(2.0 * nu * (A[:, on].T @ residual) + B[K][:, on].T @ mu[K] - target).max(initial=0.0)
    if matrix.shape[1] == 0 or matrix.shape[1] > matrix.shape[0]:
        return nu, mu
    solution = np.linalg.lstsq(matrix, target - fixed, rcond=None)[0]
    after = np.abs(matrix @ solution + fixed - target).max(initial=0.0)
    if not (after < before and (solution >= 0).all()):
        return nu, mu
    refined = np.zeros_like(mu)
    refined[K] = solution[1:] if budget else solution
    return (float(solution[0]) if budget else nu), refined
