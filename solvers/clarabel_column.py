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
    import clarabel

    if (lam is None) == (epsilon is None):
        raise ValueError("give exactly one of lam and epsilon")
    A, B = np.asarray(A, dtype=float), np.asarray(B, dtype=float)
    y, v, c = (np.asarray(a, dtype=float).ravel() for a in (y, v, c))
    rows, n = A.shape
    b = B.shape[0]
    scale = max(np.abs(y).max(initial=0.0), np.abs(v).max(initial=0.0),
                0.0 if epsilon is None else float(epsilon))
    scale = scale if scale > 0 else 1.0
    A_fit, y_fit = A, y
    y, v = y / scale, v / scale
    if rows > n:
        # Compress the fit: A = Q R gives ||A w - y||^2 = ||R w - Q^T y||^2 + ||y_perp||^2.
        Q, A = np.linalg.qr(A)
        projected = Q.T @ y
        perp = float(np.linalg.norm(y - Q @ projected))
        y = projected
        if epsilon is not None:
            if perp > float(epsilon) / scale:
                return ColumnResult(np.zeros(n), np.zeros(rows), np.zeros(b), "infeasible")
            epsilon = scale * np.sqrt((float(epsilon) / scale) ** 2 - perp ** 2)
    f = A.shape[0]
    penalized = np.flatnonzero(c > 0)
    p = penalized.size
    budget = epsilon is not None and f > 0
    columns = n + p + f
    select = sp.csc_matrix((np.ones(p), (np.arange(p), penalized)), shape=(p, n))
    I_p, I_f = sp.identity(p, format="csc"), sp.identity(f, format="csc")
    blocks = [[sp.csc_matrix(-A), None, I_f],
              [select, -I_p, None],
              [-select, -I_p, None],
              [sp.csc_matrix(B), None, None]]
    h = [-y, np.zeros(2 * p), v]
    cones = [clarabel.ZeroConeT(f), clarabel.NonnegativeConeT(2 * p + b)]
    if budget:
        blocks.append([None, None, sp.vstack([sp.csc_matrix((1, f)), -I_f])])
        h.append(np.concatenate([[float(epsilon) / scale], np.zeros(f)]))
        cones.append(clarabel.SecondOrderConeT(1 + f))
    # Empty blocks still need their widths: give the first row explicit zero blocks.
    blocks[0][1] = sp.csc_matrix((f, p))
    blocks[1][2] = sp.csc_matrix((p, f))
    G = sp.bmat(blocks, format="csc")
    q = np.concatenate([np.zeros(n), c[penalized], np.zeros(f)])
    quadratic = 0.0 if budget or lam is None else 2.0 * float(lam) * scale
    P = sp.diags(np.concatenate([np.zeros(n + p), np.full(f, quadratic)]), format="csc")
    P = sp.triu(P, format="csc")
    options = clarabel.DefaultSettings()
    options.verbose = False
    for key, value in {**DEFAULT_SETTINGS, **(settings or {})}.items():
        if hasattr(options, key):
            setattr(options, key, value)
    cones = [cone for cone, size in zip(cones, [f, 2 * p + b, 1 + f]) if size > 0]
    solver = clarabel.DefaultSolver(P, q, G, np.concatenate(h), cones, options)
    solution = solver.solve()
    status = _STATUS.get(str(solution.status).split(".")[-1], str(solution.status))
    x, z = np.asarray(solution.x, dtype=float), np.asarray(solution.z, dtype=float)
    if x.shape[0] != columns or not np.all(np.isfinite(x)):
        return ColumnResult(np.zeros(n), np.zeros(rows), np.zeros(b), "solver_error")
    w = x[:n] * scale
    # The fit's dual 2 nu (A w - y) on the original rows: nu = lam, or for the budget (in its norm
    # form, multiplier z_0 of the cone) nu = z_0 / (2 epsilon) in scaled units.
    if budget:
        nu = z[f + 2 * p + b] / (2.0 * float(epsilon) / scale) if epsilon > 0 else 0.0
    else:
        nu = 0.0 if lam is None else float(lam) * scale
    residual = (A_fit @ w - y_fit) / scale
    mu = z[f + 2 * p:f + 2 * p + b]
    nu, mu = _refine_dual(A_fit, residual, B, mu, c, w, nu, budget)
    return ColumnResult(w, 2.0 * nu * residual, mu, status)


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
