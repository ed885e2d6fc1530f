"""How programs are solved: scaling, separable programs column by column (with an executor), auto's
fallback, options checked before work. Oracles: independent CVXPY solves and the certificate."""

from __future__ import annotations

from concurrent.futures import ThreadPoolExecutor

import numpy as np
import pytest

import convexnet as cn
from convexnet import fits, penalties, sets
from convexnet.errors import InvalidInputError


def relu_layer(seed=0, P=50, N=10, M=4):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    Y = np.maximum(X @ rng.standard_normal((N, M)), 0.0)
    return X, Y, Y > 0


def per_column_program(X, Y, omega, rel=0.1):
    budgets = rel * np.linalg.norm(Y, axis=0)
    return cn.SparsityProgram(X, fit=[fits.Budget(Y, budgets, mask=omega),
                                      fits.Below(np.zeros_like(Y), mask=~omega)],
                              penalty=penalties.L1(), constraints=[sets.L1InfBall(50.0)])


@pytest.mark.parametrize("scale", [1e-150, 1e150])
def test_extreme_scales_give_the_covariant_solution(scale):
    X, Y, omega = relu_layer(1)
    reference = per_column_program(X, Y, omega).solve("clarabel")
    scaled = per_column_program(X * scale, Y * scale, omega).solve("clarabel")
    assert scaled.status == "optimal" and scaled.certificate.ok
    # X -> s X and Y -> s Y (budgets -> s budgets) leave W as it was.
    np.testing.assert_allclose(scaled.W, reference.W, rtol=1e-5, atol=1e-7 * np.abs(reference.W).max())


def test_columns_on_an_executor_match_the_whole_solve(monkeypatch):
    from convexnet import cluster

    monkeypatch.setattr(cluster, "TASK_COST", 1.0)   # tasks are sized by cost: make tiny ones pay
    X, Y, omega = relu_layer(2, M=6)
    program = per_column_program(X, Y, omega)
    alone = program.solve("clarabel")
    with ThreadPoolExecutor(2) as pool:
        spread = program.solve("clarabel", executor=pool)
    assert spread.info["chunks"] == 6 and alone.info["chunks"] == 1
    np.testing.assert_allclose(spread.W, alone.W, atol=1e-9)
    # An independent whole-matrix CVXPY solve of the same program agrees.
    problem, W = program.to_cvxpy()
    problem.solve(solver="CLARABEL")
    assert abs(problem.value - alone.objective) <= 1e-6 * problem.value


def test_auto_refines_unfinished_admm_columns_with_clarabel(monkeypatch):
    from convexnet.backends import auto

    X, Y, omega = relu_layer(3)
    program = per_column_program(X, Y, omega)
    monkeypatch.setattr(auto, "AUTO_ADMM_SIZE", 0)  # make this tiny program "large"
    result = program.solve("auto", solver_options={"admm": {"max_iterations": 20}})
    assert result.backend == "admm+clarabel"
    assert len(result.info["refined_columns"]) > 0
    clarabel = program.solve("clarabel")
    assert result.status == "optimal"
    assert abs(result.objective - clarabel.objective) <= 1e-4 * clarabel.objective


def test_options_are_checked_before_work():
    X, Y, omega = relu_layer(4)
    program = per_column_program(X, Y, omega)
    with pytest.raises(InvalidInputError, match="Clarabel has no setting"):
        program.solve("clarabel", solver_options={"no_such_setting": 1})
    with pytest.raises(InvalidInputError, match="alpha"):
        program.solve("admm", solver_options={"alpha": 3.0})
    # A flat dict goes to the backend auto picks (Clarabel here); the message shows the keyed form.
    with pytest.raises(InvalidInputError, match="no setting 'alpha'.*'admm': {...}"):
        program.solve("auto", solver_options={"alpha": 1.5})
    with pytest.raises(InvalidInputError, match="admm"):
        program.solve("auto", solver_options={"admm": {"alpha": 3.0}})
    with pytest.raises(InvalidInputError, match="executor"):
        program.solve("clarabel", executor="pool")
    with pytest.raises(InvalidInputError, match="certify"):
        program.solve("clarabel", certify="yes")


def _small(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((40, 8))
    W0 = rng.standard_normal((8, 3)) * (rng.random((8, 3)) < 0.6)
    return X, W0, X @ W0, rng


def test_mask_holds_exactly_on_every_backend_and_columns_retire_on_admm():
    X, W0, Y, _ = _small()
    Y = Y * np.array([1.0, 30.0, 0.03])      # columns of very different sizes finish apart
    program = cn.SparsityProgram(X, fit=fits.Squared(Y, weight=10.0), penalty=penalties.L1(1.0),
                                 constraints=[sets.Mask(W0 != 0)])
    reference = program.solve("clarabel")
    for backend in ("clarabel", "osqp", "admm"):
        result = program.solve(backend)
        assert np.all(result.W[W0 == 0] == 0)
        assert result.objective == pytest.approx(reference.objective, rel=1e-4)
    iterations = program.solve("admm").info["admm"].iterations
    assert iterations.min() < iterations.max()


def test_least_squares_and_unpenalized_rows_are_certified():
    X, _, Y, rng = _small(1)
    noisy = Y + 0.1 * rng.standard_normal(Y.shape)
    plain = cn.SparsityProgram(X, fit=fits.Squared(noisy, weight=10.0))
    weights = np.ones(8)
    weights[-1] = 0.0
    partly = cn.SparsityProgram(X, fit=fits.Squared(noisy), penalty=penalties.L1(weights=weights))
    for program in (plain, partly):
        for backend in ("clarabel", "scs", "osqp"):
            result = program.solve(backend)
            assert result.status == "optimal" and result.certificate.relative_gap <= 1e-6


def test_a_set_made_of_data_is_refused_as_a_program_term():
    X, _, Y, _ = _small(2)
    with pytest.raises(InvalidInputError, match="fits.Budget"):
        cn.SparsityProgram(X, fit=fits.Squared(Y), constraints=[sets.NetTrimSet(X, np.maximum(Y, 0), epsilon=1.0)])


def test_a_set_that_does_not_say_how_it_scales_is_solved_in_its_own_units():
    from convexnet.sets import ConstraintSet

    class Box(ConstraintSet):
        """|W| <= 0.1 entrywise, without scaled()."""

        separable = True

        def _project(self, x):
            return np.clip(x, -0.1, 0.1)

        def _contains(self, x, tol):
            return bool(np.all(np.abs(x) <= 0.1 + tol))

        def _constraints(self, expr):
            import cvxpy as cp

            return [cp.abs(expr) <= 0.1]

    X, _, Y, _ = _small(3)
    program = cn.SparsityProgram(5 * X, fit=fits.Squared(5 * Y), penalty=penalties.L1(), constraints=[Box()])
    result = program.solve("clarabel", certify=False)
    assert result.status == "optimal" and result.violation <= 1e-7


def test_a_penalty_that_does_not_say_how_it_scales_is_solved_in_its_own_units():
    import cvxpy as cp

    class Ridge(penalties.Penalty):
        """strength * ||W||^2 (not a norm: it does not keep its strength in other units)."""

        def _value(self, x):
            return x * x

        def _prox(self, x, weight):
            return x / (1.0 + 2.0 * weight)

        def _cvxpy(self, expr):
            return self.strength * cp.sum_squares(expr)

    X, _, Y, _ = _small(4)
    program = cn.SparsityProgram(30 * X, fit=fits.Squared(Y), penalty=Ridge(50.0))
    W = cp.Variable((8, 3))
    oracle = cp.Problem(cp.Minimize(cp.sum_squares(30 * X @ W - Y) + 50.0 * cp.sum_squares(W)))
    oracle.solve(solver="CLARABEL")
    for backend in ("clarabel", "scs", "osqp"):
        result = program.solve(backend, certify=False)
        assert result.objective == pytest.approx(oracle.value, rel=1e-5)


def test_a_custom_fit_a_backend_cannot_take_is_refused_before_work():
    import cvxpy as cp

    class Huber(fits.FitTerm):
        """sum of Huber losses on the mask: convex, not a QP term here, no ADMM prox."""

        def __init__(self, Y):
            super().__init__(Y, None, "Y")

        def value(self, Z):
            return float(np.sum(np.where(np.abs(Z - self.target) <= 1, (Z - self.target) ** 2,
                                         2 * np.abs(Z - self.target) - 1)))

        def violation(self, Z, scale):
            return np.zeros(self.shape[1])

        def cvxpy(self, Z):
            return cp.sum(cp.huber(Z - self.target)), []

    X, _, Y, _ = _small(5)
    program = cn.SparsityProgram(X, fit=Huber(Y), penalty=penalties.L1())
    with pytest.raises(cn.BackendUnavailableError, match="Huber.*quadratic"):
        program.solve("osqp")
    with pytest.raises(cn.BackendUnavailableError, match="Huber has no ADMM term"):
        program.solve("admm")
    assert program.solve("clarabel", certify=False).status == "optimal"
