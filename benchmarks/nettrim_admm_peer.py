r"""The peer: Net-Trim's original ADMM for the constrained layer program, re-implemented from paper 004.

The authors' solver splits the constrained program (4)

.. math:: \min_U \|U\|_1 \quad \text{s.t.} \quad XU \in \mathcal{C}
          = \{Z : \|(Z - Y)_{\Omega}\| \le \epsilon,\ Z_{\Omega^c} \le V_{\Omega^c}\}

into ``Z = X U`` (projected onto ``C``) and ``Q = U`` (soft-thresholded), with one fixed penalty ``rho``
and scaled duals ``A`` (for ``Z``) and ``B`` (for ``Q``):

.. math::

    U &\leftarrow (X^T X + I)^{-1}\big(X^T (Z - A) + (Q - B)\big)  \\
    Z &\leftarrow \Pi_{\mathcal{C}}(X U + A), \qquad Q \leftarrow \operatorname{soft}(U + B, 1/\rho) \\
    A &\leftarrow A + X U - Z, \qquad B \leftarrow B + U - Q

with the ``(X^T X + I)`` factor computed once (a Cholesky factor), a fixed number of iterations, and
a stop when the relative change of ``U`` falls below a tolerance; there is no residual balancing, no
polish and no certificate. The pruned weights are the sparse iterate ``Q``; this module reports its
budget and inequality violations as they are at the stop. Here ``C`` has per-column budgets (one
ball per column on its ``Omega``), the case the benchmark compares.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

import numpy as np
import scipy.linalg


@dataclass
class PeerResult:
    Q: np.ndarray
    iterations: int
    seconds: float
    budget_violation: float   # max over columns of (||(XQ - Y)_Omega|| - eps)_+ / eps
    inequality_violation: float  # max (XQ - V)_+ off Omega, relative to max |Y|


def _project(Z, Y, omega, epsilon, V):
    """Per column: the Omega part into the ball of radius eps around Y, the rest clipped at V."""
    out = np.where(omega, Z, np.minimum(Z, V))
    residual = np.where(omega, Z - Y, 0.0)
    norms = np.linalg.norm(residual, axis=0)
    shrink = np.where(norms > epsilon, epsilon / np.maximum(norms, 1e-300), 1.0)
    return np.where(omega, Y + residual * shrink, out)


def violations(X, Q, Y, omega, epsilon, V) -> tuple[float, float]:
    Z = X @ Q
    norms = np.linalg.norm(np.where(omega, Z - Y, 0.0), axis=0)
    budget = float(np.max(np.maximum(norms - epsilon, 0.0) / epsilon))
    above = np.where(omega, 0.0, np.maximum(Z - V, 0.0))
    return budget, float(above.max() / np.abs(Y).max())


def solve(X, Y, epsilon, *, V=None, rho: float = 1.0, iterations: int = 500, tol: float = 1e-4,
          dtype=np.float64) -> PeerResult:
    """Run the peer on ``X`` (P, N), ``Y`` (P, M), per-column budgets ``epsilon`` (M,)."""
    start = time.perf_counter()
    X = np.asarray(X, dtype=dtype)
    Y = np.asarray(Y, dtype=dtype)
    omega = Y > 0
    V = np.zeros_like(Y) if V is None else np.asarray(V, dtype=dtype)
    N, M = X.shape[1], Y.shape[1]
    factor = scipy.linalg.cho_factor(X.T @ X + np.eye(N, dtype=dtype))
    U = np.zeros((N, M), dtype=dtype)
    Q, B = U.copy(), U.copy()
    Z = X @ U
    A = np.zeros_like(Z)
    done = iterations
    for k in range(iterations):
        U_old = U
        U = scipy.linalg.cho_solve(factor, X.T @ (Z - A) + (Q - B))
        XU = X @ U
        Z = _project(XU + A, Y, omega, epsilon, V)
        Q = np.sign(U + B) * np.maximum(np.abs(U + B) - 1.0 / rho, 0.0)
        A += XU - Z
        B += U - Q
        change = np.linalg.norm(U - U_old) / max(np.linalg.norm(U_old), 1e-300)
        if k > 0 and change < tol:
            done = k + 1
            break
    seconds = time.perf_counter() - start
    budget, inequality = violations(X.astype(np.float64), Q.astype(np.float64), Y.astype(np.float64),
                                    omega, np.asarray(epsilon, dtype=np.float64), V.astype(np.float64))
    return PeerResult(Q.astype(np.float64), done, seconds, budget, inequality)
