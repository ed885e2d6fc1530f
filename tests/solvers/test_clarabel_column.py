"""solvers.clarabel_column against an independent CVXPY formulation of the same column program."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

from solvers.clarabel_column import solve_l1_column, solve_l1_columns


def column_data(f, b, n, seed, rank=None):
    rng = np.random.default_rng(seed)
    A = rng.standard_normal((f, n))
    if rank is not None:  # dependent columns, as in a layer fed by upscaled images
        A = A[:, :rank] @ rng.standard_normal((rank, n))
    B = rng.standard_normal((b, n))
    w_true = np.where(rng.random(n) < 0.3, rng.standard_normal(n), 0.0)
    y = A @ w_true + 0.05 * rng.standard_normal(f)
    v = B @ w_true + np.abs(rng.standard_normal(b))  # w_true is feasible
    c = rng.uniform(0.5, 2.0, n)
    c[0] = 0.0  # a free entry (a bias)
    return A, y, B, v, c


def cvxpy_reference(A, y, B, v, c, *, lam=None, epsilon=None):
    w = cp.Variable(A.shape[1])
    constraints = [B @ w <= v]
    objective = c @ cp.abs(w)
    if epsilon is not None:
        constraints.append(cp.norm(A @ w - y) <= epsilon)
    else:
        objective = objective + lam * cp.sum_squares(A @ w - y)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    return problem.value, w.value


@pytest.mark.parametrize("form", ["squared", "budget"])
@pytest.mark.parametrize("shape", [(60, 30, 12, None), (8, 5, 12, None), (80, 40, 20, 9), (0, 25, 6, None)])
def test_column_matches_cvxpy_and_its_dual_is_the_certificates(form, shape):
    f, b, n, rank = shape
    A, y, B, v, c = column_data(f, b, n, seed=f + n, rank=rank)
    if form == "squared":
        keywords = {"lam": 3.0}
    else:
        # A budget between the least-squares residual and the residual at w = 0.
        least = np.linalg.norm(A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) if f else 0.0
        keywords = {"epsilon": least + 0.3 * (np.linalg.norm(y) - least) + 1e-3}
    value, w_ref = cvxpy_reference(A, y, B, v, c, **keywords)
    found = solve_l1_column(A, y, B, v, c, **keywords)
    assert found.status == "optimal"
    w = found.w
    objective = c @ np.abs(w) + (keywords["lam"] * np.sum((A @ w - y) ** 2) if form == "squared" else 0)
    assert objective == pytest.approx(value, rel=1e-7, abs=1e-9)
    assert (B @ w - v).max(initial=-1.0) <= 1e-8
    if form == "budget" and f:
        assert np.linalg.norm(A @ w - y) <= keywords["epsilon"] * (1 + 1e-8)
    # The duals: nonnegative multipliers, complementary slackness, and stationarity
    # A^T Lambda_fit + B^T mu in -c * sign(w) (|.| <= c where w = 0).
    mu = found.below_dual
    assert mu.min(initial=0.0) >= -1e-9
    assert np.abs(mu * (B @ w - v)).max(initial=0.0) <= 1e-7
    correlation = A.T @ found.fit_dual + B.T @ mu
    on = np.abs(w) > 1e-6 * np.abs(w).max(initial=0.0)
    # To an interior-point answer's accuracy (its w agrees with CVXPY's to about 1e-6).
    np.testing.assert_allclose(correlation[on], -c[on] * np.sign(w[on]), rtol=1e-4, atol=1e-6)
    assert (np.abs(correlation[~on]) <= c[~on] * (1 + 1e-6) + 1e-9).all()
    if form == "squared":
        np.testing.assert_allclose(found.fit_dual, 2 * 3.0 * (A @ w - y), atol=1e-10)


def test_a_budget_below_the_least_squares_residual_is_infeasible():
    A, y, B, v, c = column_data(60, 10, 12, seed=3)
    least = np.linalg.norm(A @ np.linalg.lstsq(A, y, rcond=None)[0] - y)
    assert solve_l1_column(A, y, B, v, c, epsilon=0.5 * least).status != "optimal"


def test_exactly_one_of_lam_and_epsilon():
    A, y, B, v, c = column_data(10, 3, 4, seed=0)
    with pytest.raises(ValueError, match="exactly one"):
        solve_l1_column(A, y, B, v, c)
    with pytest.raises(ValueError, match="exactly one"):
        solve_l1_column(A, y, B, v, c, lam=1.0, epsilon=1.0)


def test_columns_under_one_shared_budget_match_cvxpy():
    """A whole-layer budget: sum_m ||A_m w_m - y_m||^2 <= epsilon^2 couples the columns."""
    blocks = [column_data(50, 20, 10, seed=s, rank=7 if s == 1 else None) for s in range(3)]
    ws = [cp.Variable(A.shape[1]) for A, *_ in blocks]
    residual = cp.hstack([A @ w - y for (A, y, *_), w in zip(blocks, ws)])
    least = np.sqrt(sum(np.linalg.norm(A @ np.linalg.lstsq(A, y, rcond=None)[0] - y) ** 2
                        for A, y, *_ in blocks))
    total = np.sqrt(sum(np.linalg.norm(y) ** 2 for _, y, *_ in blocks))
    epsilon = least + 0.3 * (total - least)
    problem = cp.Problem(cp.Minimize(sum(c @ cp.abs(w) for (*_, c), w in zip(blocks, ws))),
                         [cp.norm(residual) <= epsilon] + [B @ w <= v for (_, _, B, v, _), w in zip(blocks, ws)])
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    found = solve_l1_columns(blocks, epsilon=epsilon)
    assert all(one.status == "optimal" for one in found)
    assert sum(c @ np.abs(one.w) for (*_, c), one in zip(blocks, found)) == pytest.approx(problem.value, rel=1e-7)
    residuals = [A @ one.w - y for (A, y, *_), one in zip(blocks, found)]
    assert np.sqrt(sum(r @ r for r in residuals)) <= epsilon * (1 + 1e-8)
    # One multiplier for every column: fit_dual_m = 2 nu r_m with the same nu > 0.
    nus = [one.fit_dual @ r / (2 * (r @ r)) for one, r in zip(found, residuals)]
    assert min(nus) > 0 and max(nus) == pytest.approx(min(nus), rel=1e-9)
    for (A, y, B, v, c), one in zip(blocks, found):
        correlation = A.T @ one.fit_dual + B.T @ one.below_dual
        assert (np.abs(correlation) <= c * (1 + 1e-5) + 1e-5).all()  # interior-point accuracy
