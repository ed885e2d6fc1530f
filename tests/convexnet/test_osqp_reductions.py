"""OSQP's reductions of programs that are not quadratic programs (convexnet/backends/osqp_splitting.py).

Group penalties (rows and columns), alone and with Net-Trim's budget, are solved on OSQP by splitting
and checked against an independent CVXPY formulation written here from the definitions and solved by
Clarabel; against the certificate; for exact zero groups; and for the refusals that remain.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest

import convexnet as cn
from convexnet import fits, penalties, sets
from convexnet.errors import BackendUnavailableError

P, N, M = 30, 8, 3


def _data(seed: int):
    """``X`` and a layer whose rows 0, 3 and 6 are zero (so that row groups vanish), its ReLU output."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M))
    W[[0, 3, 6]] = 0.0
    return X, X @ W, np.maximum(X @ W, 0.0)


def _group_norms(W, axis: int):
    return cp.sum(cp.norm(W, 2, axis=axis))


def _oracle(objective, constraints, W):
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10)
    assert problem.status == "optimal"
    return problem.value, W.value


def squared_group(axis: int, seed: int = 0, scale: float = 1.0):
    """``2 ||X W - Y||^2 + 3 sum_g ||W_g||`` (rows or columns)."""
    X, Y, _ = _data(seed)
    X, Y = X * scale, Y * scale
    program = cn.SparsityProgram(X, fit=fits.Squared(Y, weight=2.0),
                                 penalty=penalties.GroupL1(3.0 * scale ** 2, axis=axis))
    W = cp.Variable((N, M))
    value, W_value = _oracle(2.0 * cp.sum_squares(X @ W - Y) + 3.0 * scale ** 2 * _group_norms(W, axis),
                             [], W)
    return program, value, W_value


def budget_group(axis: int, seed: int = 1, per_column: bool = False, ball=None):
    """Net-Trim's constrained form with a group penalty: ``sum_g ||W_g||`` subject to the budget on
    Omega = {Y > 0} and ``X W <= 0`` off it (DESIGN.md section 11), optionally in an l1 ball."""
    X, _, Yr = _data(seed)
    omega = Yr > 0
    epsilon = 0.1 * np.linalg.norm(Yr)
    if per_column:
        epsilon = np.full(M, epsilon / np.sqrt(M))
    program = cn.SparsityProgram(X, fit=[fits.Budget(Yr, epsilon=epsilon, mask=omega),
                                         fits.Below(np.zeros_like(Yr), mask=~omega)],
                                 penalty=penalties.GroupL1(axis=axis),
                                 constraints=[] if ball is None else [sets.L1Ball(ball)])
    W = cp.Variable((N, M))
    Z = X @ W
    on = omega.astype(float)
    if per_column:
        budget = [cp.sum_squares(cp.multiply(on[:, j], Z[:, j] - Yr[:, j])) <= epsilon[j] ** 2
                  for j in range(M)]
    else:
        budget = [cp.sum_squares(cp.multiply(on, Z - Yr)) <= epsilon ** 2]
    constraints = budget + [cp.multiply(1.0 - on, Z) <= 0.0]
    if ball is not None:
        constraints.append(cp.sum(cp.abs(W)) <= ball)
    value, W_value = _oracle(_group_norms(W, axis), constraints, W)
    return program, value, W_value


CASES = {
    "squared+group_rows": lambda: squared_group(axis=1),
    "squared+group_columns": lambda: squared_group(axis=0),
    "budget+below+group_rows": lambda: budget_group(axis=1),
    "budget+below+group_columns": lambda: budget_group(axis=0),
    "column_budgets+group_rows+l1ball": lambda: budget_group(axis=1, per_column=True, ball=12.0),
}


@pytest.mark.parametrize("name", sorted(CASES))
def test_group_programs_solve_on_osqp_and_match_clarabel(name):
    program, expected, W_expected = CASES[name]()
    result = program.solve(backend="osqp")
    assert result.status == "optimal", result
    assert abs(result.objective - expected) <= 1e-5 * abs(expected)
    report = cn.certificates.verify(result)
    assert report.ok and report.relative_gap <= 1e-6 and report.primal_violation <= 1e-6, report
    assert report.dual <= expected * (1 + 1e-7) + 1e-9
    # Exact zero groups where the interior-point solution has (numerically) zero groups, none else.
    axis = program.penalties[0].axis
    zero = np.linalg.norm(result.W, axis=axis) == 0
    oracle_zero = np.linalg.norm(W_expected, axis=axis) <= 1e-6 * np.abs(W_expected).max()
    np.testing.assert_array_equal(zero, oracle_zero)
    if axis == 1:  # the data's zero rows 0, 3 and 6 make row groups vanish
        assert zero.any() and (result.W[zero] == 0).all()


def test_units_do_not_change_the_answer():
    """Data in units 1000 times larger (penalty scaled to match): the same W, still certified."""
    small = squared_group(axis=1)[0].solve(backend="osqp")
    large = squared_group(axis=1, scale=1e3)[0].solve(backend="osqp")
    assert large.status == "optimal"
    np.testing.assert_allclose(large.W, small.W, rtol=0, atol=1e-5 * np.abs(small.W).max())
    np.testing.assert_array_equal(large.W == 0, small.W == 0)


def test_no_optimal_without_certificate():
    """Two penalties whose dual split the certificate cannot close: the answer matches Clarabel, but
    the status says optimal only if the certificate holds."""
    X, Y, _ = _data(2)
    program = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=[penalties.GroupL1(3.0, axis=1),
                                                                  penalties.GroupL1(3.0, axis=0)])
    W = cp.Variable((N, M))
    expected, _ = _oracle(cp.sum_squares(X @ W - Y) + 3.0 * _group_norms(W, 1) + 3.0 * _group_norms(W, 0),
                          [], W)
    result = program.solve(backend="osqp")
    assert abs(result.objective - expected) <= 1e-6 * abs(expected)
    assert result.status == ("optimal" if result.certificate.ok else "optimal_inaccurate")


def test_infeasible_budget_is_reported():
    """A budget that the l1 ball makes unreachable: "infeasible" (as Clarabel says), no weights."""
    X, _, Yr = _data(1)
    omega = Yr > 0
    program = cn.SparsityProgram(X, fit=[fits.Budget(Yr, epsilon=0.01 * np.linalg.norm(Yr), mask=omega),
                                         fits.Below(np.zeros_like(Yr), mask=~omega)],
                                 penalty=penalties.GroupL1(), constraints=[sets.L1Ball(0.5)])
    assert program.solve(backend="clarabel").status == "infeasible"
    result = program.solve(backend="osqp")
    assert result.status == "infeasible" and result.W is None


@pytest.mark.parametrize("penalty", [penalties.GroupL1(), penalties.L1()])
def test_nuclear_ball_is_still_refused_on_osqp(penalty):
    X, Y, _ = _data(3)
    program = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalty,
                                 constraints=[sets.NuclearBall(1.0)])
    with pytest.raises(BackendUnavailableError, match="NuclearBall.*quadratic") as error:
        program.solve(backend="osqp")
    assert "clarabel" in str(error.value)
