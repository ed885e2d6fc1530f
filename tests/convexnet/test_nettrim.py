"""NetTrimProblem against an independent CVXPY formulation, on every CVXPY backend."""

import cvxpy as cp
import numpy as np
import pytest

import convexnet as cn
from convexnet.backends.cvxpy_columns import ColumnProblem

# Objective agreement with the Clarabel oracle, relative, per backend (first-order solvers are
# asked for 1e-8 but stop a little short of an interior point method).
RTOL = {"clarabel": 1e-6, "scs": 1e-4, "osqp": 1e-5}


def make_layer(seed, *, P=50, N=8, M=4, relu=True, bias=True):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M))
    b = 0.3 * rng.standard_normal(M) if bias else None
    Z = X @ W + (0 if b is None else b)
    return X, (np.maximum(Z, 0) if relu else Z), W, b


def oracle(X, Y, *, relu, bias, epsilon=None, lam=None, V=None, extra=None, penalize_bias=True):
    """Net-Trim written entry by entry from paper 004's (4)/(11), solved by Clarabel."""
    P, M = Y.shape
    Xd = np.hstack([X, np.ones((P, 1))]) if bias else X
    U = cp.Variable((Xd.shape[1], M))
    V = np.zeros_like(Y) if V is None else V
    on = [(p, m) for p in range(P) for m in range(M) if (Y[p, m] > 0 or not relu)]
    off = [(p, m) for p in range(P) for m in range(M) if relu and Y[p, m] <= 0]
    # A dead unit of a ReLU layer (Y[:, m] = 0) has no residual at all.
    residuals = cp.hstack([Xd[p] @ U[:, m] - Y[p, m] for p, m in on] or [cp.Constant(0.0)])
    constraints = [Xd[p] @ U[:, m] <= V[p, m] for p, m in off]
    objective = cp.sum(cp.abs(U if penalize_bias or not bias else U[:-1]))
    if lam is not None:
        objective = objective + lam * cp.sum_squares(residuals)
    else:
        constraints.append(cp.norm(residuals, 2) <= epsilon)
    if extra is not None:
        constraints += extra(U)
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="CLARABEL")
    assert problem.status == "optimal"
    return problem.value, U.value


FORMS = {
    "constrained": dict(rel_epsilon=0.1),
    "regularized": dict(lam=2.0),
}


@pytest.mark.parametrize("backend", ["clarabel", "scs", "osqp"])
@pytest.mark.parametrize("form", ["constrained", "regularized"])
@pytest.mark.parametrize("relu", [True, False])
def test_backend_matches_independent_oracle(backend, form, relu):
    if backend == "osqp" and form == "constrained":
        pytest.skip("OSQP takes QPs only; covered by test_osqp_rejects_constrained_form")
    X, Y, _, _ = make_layer(1, relu=relu)
    prob = cn.NetTrimProblem(X, Y, relu=relu, bias=True, **FORMS[form])
    res = prob.solve(backend=backend)
    value, _ = oracle(X, Y, relu=relu, bias=True, epsilon=prob.epsilon, lam=prob.lam)
    assert res.status == "optimal"
    assert res.objective == pytest.approx(value, rel=RTOL[backend])
    assert res.violation <= 1e-5
    assert res.W.shape == (8, 4) and res.b.shape == (4,)
    # Proposition 1: the constrained solution keeps the layer within epsilon of Y.
    if form == "constrained":
        assert res.discrepancy <= prob.epsilon * (1 + 1e-5)


def test_thresholds_V_and_unpenalized_bias_match_oracle():
    X, Y, W, b = make_layer(2)
    V = 0.2 * np.random.default_rng(3).standard_normal(Y.shape)
    prob = cn.NetTrimProblem(X, Y, epsilon=1.0, V=V, bias=True)
    res = prob.solve(backend="clarabel")
    value, _ = oracle(X, Y, relu=True, bias=True, epsilon=1.0, V=V)
    assert res.objective == pytest.approx(value, rel=1e-6)
    free = cn.NetTrimProblem(X, Y, lam=1.0, bias=True, penalize_bias=False).solve("clarabel")
    assert free.objective == pytest.approx(float(np.abs(free.W).sum())
                                           + np.sum(np.where(Y > 0, X @ free.W + free.b - Y, 0) ** 2),
                                           rel=1e-9)


def test_split_budget_is_per_column_program():
    X, Y, _, _ = make_layer(4, bias=False)
    prob = cn.NetTrimProblem(X, Y, rel_epsilon=0.1, split_budget=True)
    assert np.sum(prob.column_budgets ** 2) == pytest.approx(prob.epsilon ** 2)
    res = prob.solve(backend="clarabel")
    total = 0.0
    for m in range(Y.shape[1]):
        value, _ = oracle(X, Y[:, [m]], relu=True, bias=False, epsilon=prob.column_budgets[m])
        total += value
    assert res.objective == pytest.approx(total, rel=1e-6)
    residual = np.where(Y > 0, X @ res.W - Y, 0)
    assert np.all(np.linalg.norm(residual, axis=0) <= prob.column_budgets * (1 + 1e-6))


def test_exact_zeros_and_cleaning_keeps_feasibility():
    X, Y, _, _ = make_layer(5, P=80, N=20, M=3)
    res = cn.NetTrimProblem(X, Y, rel_epsilon=0.3, bias=True).solve(backend="clarabel")
    assert res.sparsity > 0.2  # a loose budget prunes; zeros are exact, not tiny
    assert np.count_nonzero(res.W) == np.count_nonzero(np.abs(res.W) > 1e-12)
    assert res.violation <= res.problem.feas_tol


@pytest.mark.parametrize("form", [dict(rel_epsilon=0.1), dict(rel_epsilon=0.1, split_budget=True),
                                  dict(lam=2.0), dict(epsilon=0.0)])
@pytest.mark.parametrize("bias, relu", [(False, True), (True, True), (True, False)])
def test_a_dead_unit_prunes_to_exact_zeros(form, bias, relu):
    """A column with Y = 0 has the unique solution 0 (0 is feasible, any other column costs l1);
    Clarabel leaves ~1e-10 there, which a rule relative to the column's largest entry keeps."""
    X, Y, _, _ = make_layer(20, bias=bias, relu=relu)
    if form.get("epsilon") == 0.0:
        Y = X @ np.random.default_rng(21).standard_normal((8, 4))  # reachable exactly
        Y = np.maximum(Y, 0) if relu else Y
    Y[:, 2] = 0.0
    res = cn.NetTrimProblem(X, Y, bias=bias, relu=relu, **form).solve("clarabel")
    assert res.status == "optimal" and res.certificate.ok
    assert np.all(res.W_design[:, 2] == 0)
    assert np.count_nonzero(res.W_design[:, [0, 1, 3]]) > 0


@pytest.mark.parametrize("scale", [1e-4, 1.0, 1e4])
def test_all_zero_targets_give_all_zero_weights(scale):
    X, _, _, _ = make_layer(22, bias=False)
    res = cn.NetTrimProblem(scale * X, np.zeros((50, 3)), rel_epsilon=0.1).solve("clarabel")
    assert res.status == "optimal" and np.all(res.W == 0) and res.discrepancy == 0.0


@pytest.mark.parametrize("scale, form", [
    *[(scale, form) for scale in (1e-150, 1e150, 1e-160, 1e160) for form in ("constrained", "split")],
    # lam scales as 1 / scale^2, which float64 holds for 1e+-150 only.
    (1e-150, "regularized"), (1e150, "regularized")])
@pytest.mark.parametrize("bias", [False, True])
def test_extreme_data_scales_are_solved_covariantly(scale, form, bias):
    """X and Y times 1e+-150 or 1e+-160 (whose squares leave float64): the same program in other
    units. Its answer, compared with the entrywise CVXPY oracle on the unscaled data: the same W
    (the bias, in Y's units, times the scale), the same objective, status optimal and an ok
    certificate. (A penalized bias is not covariant: |b| changes units; the unpenalized bias is.)"""
    X, Y, _, _ = make_layer(23, relu=True, bias=bias)
    Y[:, 1] = 0.0  # a dead unit too
    budget = {"constrained": dict(rel_epsilon=0.1), "split": dict(rel_epsilon=0.1, split_budget=True),
              "regularized": dict(lam=2.0)}[form]
    reference = cn.NetTrimProblem(X, Y, bias=bias, penalize_bias=False, **budget)
    scaled_budget = dict(budget, lam=2.0 / scale / scale) if form == "regularized" else budget
    prob = cn.NetTrimProblem(scale * X, scale * Y, bias=bias, penalize_bias=False, **scaled_budget)
    res = prob.solve("clarabel")
    assert res.status == "optimal" and res.certificate.ok
    if form == "split":
        value = sum(oracle(X, Y[:, [m]], relu=True, bias=bias, epsilon=budget_m, penalize_bias=False)[0]
                    for m, budget_m in enumerate(reference.column_budgets))
        U = None
    else:
        value, U = oracle(X, Y, relu=True, bias=bias, epsilon=reference.epsilon, lam=reference.lam,
                          penalize_bias=False)
    assert res.objective == pytest.approx(value, rel=1e-6)
    assert np.all(res.W[:, 1] == 0) and np.all(np.isfinite(res.W_design))
    if U is not None:
        np.testing.assert_allclose(res.W, U[:X.shape[1]], atol=1e-5)
        if bias:
            # The dead unit's unpenalized bias is any b <= 0 (then X 0 + b <= 0): not unique.
            live = [0, 2, 3]
            np.testing.assert_allclose(res.b[live] / scale, U[-1, live], atol=1e-5)
            assert res.b[1] <= 0
    assert res.discrepancy / scale == pytest.approx(
        np.linalg.norm(np.maximum(X @ res.W + (0 if res.b is None else res.b / scale), 0) - Y),
        rel=1e-9)
    if form != "regularized":
        assert res.discrepancy <= prob.epsilon * (1 + 1e-6)


def test_dual_is_the_gradient_of_the_loss():
    X, Y, _, _ = make_layer(6)
    res = cn.NetTrimProblem(X, Y, lam=3.0, bias=True).solve(backend="clarabel")
    Z = res.problem.X_design @ res.W_design
    active = res.problem.active
    # On Omega the dual is 2 lam (Z - Y); off Omega it is a nonnegative multiplier.
    np.testing.assert_allclose(res.dual[active], 6.0 * (Z - Y)[active], atol=1e-6)
    assert res.dual[~active].min() >= -1e-7
    stationarity = res.problem.X_design.T @ res.dual
    support = res.W_design != 0
    np.testing.assert_allclose(stationarity[support], -np.sign(res.W_design[support]), atol=1e-5)
    assert np.abs(stationarity).max() <= 1 + 1e-6


def test_regularized_compiles_one_column_program(monkeypatch):
    built = []
    original = ColumnProblem.__init__

    def counting(self, *args, **kwargs):
        built.append(1)
        original(self, *args, **kwargs)

    monkeypatch.setattr(ColumnProblem, "__init__", counting)
    X, Y, _, _ = make_layer(7, M=6)
    problem = cn.NetTrimProblem(X, Y, lam=1.0)
    res = problem.solve(backend="clarabel")
    assert len(built) == 1 and len(res.column_status) == 6
    assert ColumnProblem(problem.program).problem.is_dpp()


def test_to_cvxpy_composes_with_user_constraints():
    X, Y, W, _ = make_layer(8, bias=False)
    prob = cn.NetTrimProblem(X, Y, rel_epsilon=0.2)
    problem, U = prob.to_cvxpy()
    # Pin the first input's weights to the trained ones (feasible: W itself satisfies the rest).
    composed = cp.Problem(problem.objective, problem.constraints + [U[0, :] == W[0, :]])
    composed.solve(solver="CLARABEL")
    value, _ = oracle(X, Y, relu=True, bias=False, epsilon=prob.epsilon,
                      extra=lambda V: [V[0, :] == W[0, :]])
    assert composed.value == pytest.approx(value, rel=1e-6)
    np.testing.assert_allclose(U.value[0], W[0], atol=1e-8)
    assert composed.value >= prob.solve("clarabel").objective - 1e-6


def test_infeasible_program_reports_status_without_weights():
    rng = np.random.default_rng(9)
    X = rng.standard_normal((30, 3))
    Y = np.abs(rng.standard_normal((30, 2))) + 0.1  # not reachable by any X @ U
    res = cn.NetTrimProblem(X, Y, epsilon=0.0).solve(backend="clarabel")
    assert res.status == "infeasible" and res.W is None and res.objective == np.inf


def test_solve_leaves_inputs_untouched():
    X, Y, _, _ = make_layer(10)
    X0, Y0 = X.copy(), Y.copy()
    cn.NetTrimProblem(X, Y, lam=1.0, bias=True).solve("clarabel")
    np.testing.assert_array_equal(X, X0)
    np.testing.assert_array_equal(Y, Y0)


def test_from_weights_rebuilds_the_layer():
    X, Y, W, b = make_layer(11)
    prob = cn.NetTrimProblem.from_weights(X, W, b, epsilon=0.5)
    np.testing.assert_allclose(prob.Y, Y)
    assert prob.bias and prob.X_design.shape == (50, 9)


# ----------------------------------------------------------------------------- bad input
X_OK, Y_OK, _, _ = make_layer(0)


@pytest.mark.parametrize("kwargs, words", [
    (dict(X=np.where(np.eye(50, 8) > 0, np.nan, X_OK), Y=Y_OK, epsilon=1.0), "X has"),
    (dict(X=X_OK, Y=np.where(np.eye(50, 4) > 0, np.inf, Y_OK), epsilon=1.0), "Y has"),
    (dict(X=X_OK[:40], Y=Y_OK, epsilon=1.0), "rows"),
    (dict(X=X_OK[:, 0], Y=Y_OK, epsilon=1.0), "2-D"),
    (dict(X=X_OK, Y=Y_OK, epsilon=1.0, lam=1.0), "exactly one"),
    (dict(X=X_OK, Y=Y_OK), "exactly one"),
    (dict(X=X_OK, Y=Y_OK, epsilon=-1.0), "epsilon"),
    (dict(X=X_OK, Y=Y_OK, rel_epsilon=float("nan")), "rel_epsilon"),
    (dict(X=X_OK, Y=Y_OK, lam=0.0), "lam"),
    (dict(X=X_OK, Y=Y_OK, lam=-2.0), "lam"),
    (dict(X=X_OK, Y=Y_OK, epsilon=1.0, V=np.zeros((50, 3))), "V must"),
    (dict(X=X_OK, Y=-Y_OK - 1, epsilon=1.0), "relu=False"),
    (dict(X=X_OK, Y=Y_OK, lam=1.0, split_budget=True), "split_budget"),
])
def test_bad_problem_input_raises_typed_error(kwargs, words):
    with pytest.raises(cn.InvalidInputError, match=words):
        cn.NetTrimProblem(**kwargs)


def test_osqp_solves_the_constrained_form_by_its_multiplier():
    """The budget form is the squared-loss form at the right multiplier (OSQP takes QPs only)."""
    X, Y, _, _ = make_layer(18)
    for options in ({"rel_epsilon": 0.05}, {"rel_epsilon": 0.05, "split_budget": True}):
        prob = cn.NetTrimProblem(X, Y, bias=True, **options)
        reference = prob.solve(backend="clarabel")
        result = prob.solve(backend="osqp")
        assert result.status == "optimal" and result.certificate.ok
        assert result.objective == pytest.approx(reference.objective, rel=1e-5)
        assert result.info["multiplier_steps"] > 1


def test_backend_errors_name_the_alternatives():
    prob = cn.NetTrimProblem(X_OK, Y_OK, epsilon=1.0)
    with pytest.raises(cn.BackendUnavailableError, match="clarabel"):
        prob.solve(backend="gurobi")
    with pytest.raises(cn.InvalidInputError, match="solver_options"):
        prob.solve(backend="clarabel", solver_options=["max_iter"])
    with pytest.raises(cn.InvalidInputError, match="threads"):
        prob.solve(backend="admm", solver_options={"threads": 0})
    with pytest.raises(cn.InvalidInputError, match="max_iter"):
        prob.solve(backend="admm", solver_options={"max_iter": 10})
    # Keyed options are all checked, also those of a backend this solve does not use.
    with pytest.raises(cn.InvalidInputError, match="backend='admm'.*threads"):
        prob.solve(backend="clarabel", solver_options={"admm": {"threads": 0}, "clarabel": {}})


@pytest.mark.parametrize("backend", ["clarabel", "scs", "osqp"])
def test_every_solve_carries_an_ok_certificate(backend):
    X, Y, _, _ = make_layer(12)
    res = cn.NetTrimProblem(X, Y, lam=2.0, bias=True).solve(backend=backend)
    assert res.certificate.ok and res.certificate.relative_gap <= 1e-6


def test_loose_solver_is_flagged_not_called_optimal():
    X, Y, _, _ = make_layer(13, P=80, N=12)
    prob = cn.NetTrimProblem(X, Y, rel_epsilon=0.05, bias=True)
    loose = prob.solve(backend="scs", solver_options={"eps_abs": 1e-2, "eps_rel": 1e-2})
    assert not loose.certificate.ok
    assert loose.status == "optimal_inaccurate"
    assert prob.solve(backend="scs", certify=False).certificate is None


def test_saved_result_is_certified_from_disk(tmp_path):
    X, Y, _, _ = make_layer(14)
    res = cn.NetTrimProblem(X, Y, rel_epsilon=0.1, split_budget=True, bias=True).solve("clarabel")
    res.save(tmp_path / "layer.npz")
    report = cn.certificates.verify(np.load(tmp_path / "layer.npz"))
    assert report.ok and report.gap == pytest.approx(res.certificate.gap, abs=1e-9)


def test_epsilon_array_gives_per_column_budgets():
    X, Y, _, _ = make_layer(15, bias=False)
    budgets = np.array([0.5, 1.0, 0.2, 0.8])
    prob = cn.NetTrimProblem(X, Y, epsilon=budgets)
    assert prob.decoupled and prob.epsilon == pytest.approx(np.linalg.norm(budgets))
    res = prob.solve(backend="clarabel")
    expected = sum(oracle(X, Y[:, [m]], relu=True, bias=False, epsilon=budgets[m])[0]
                   for m in range(4))
    assert res.objective == pytest.approx(expected, rel=1e-6)
    with pytest.raises(cn.InvalidInputError, match="one budget per column"):
        cn.NetTrimProblem(X, Y, epsilon=budgets[:3])
    with pytest.raises(cn.InvalidInputError, match="every column"):
        cn.NetTrimProblem(X, Y, epsilon=-budgets)


def test_auto_runs_polished_admm_on_layers_and_clarabel_on_small_other_programs(monkeypatch):
    from convexnet import fits, penalties, sets
    from convexnet.backends import auto

    X, Y, _, _ = make_layer(16)
    prob = cn.NetTrimProblem(X, Y, lam=1.0, bias=True)
    assert auto.choose(prob.program) == "admm"
    result = prob.solve(backend="auto")
    reference = prob.solve(backend="clarabel")
    # Polished (or refined by Clarabel per column): certified as an interior-point result is.
    assert result.status == "optimal" and result.certificate.gap_tol == 1e-6
    assert result.objective == pytest.approx(reference.objective, rel=1e-6)
    # A program polish does not apply to goes by size.
    other = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.L1(), constraints=[sets.L1InfBall(3.0)])
    assert auto.choose(other) == "clarabel"
    monkeypatch.setattr(auto, "AUTO_ADMM_SIZE", X.size * Y.shape[1] / 2)
    assert auto.choose(other) == "admm"


def test_auto_solves_the_columns_admm_leaves_unfinished_with_clarabel(monkeypatch):
    from convexnet.backends import auto

    X, Y, _, _ = make_layer(17, P=60, M=8)
    prob = cn.NetTrimProblem(X, Y, rel_epsilon=0.05, bias=True, split_budget=True)
    reference = prob.solve(backend="clarabel")
    # A step cap below the slowest columns' needs but above the fastest's.
    free = prob.solve(backend="admm")
    cap = int(np.sort(free.iterations)[len(free.iterations) // 2])
    # Polish off: it would make the capped columns exact, and the fallback is what is tested.
    capped = prob.solve(backend="admm", solver_options={"max_iterations": cap, "polish": False})
    assert capped.status == "max_iterations" and capped.backend == "admm"
    monkeypatch.setattr(auto, "AUTO_ADMM_SIZE", 0)
    result = prob.solve(backend="auto", solver_options={"max_iterations": cap, "polish": False})
    refined = result.info["refined_columns"]
    admm = capped.info["admm"]
    unfinished = np.flatnonzero(~admm.converged | (admm.column_violation > 1e-4))
    assert result.backend == "admm+clarabel" and result.status == "optimal"
    np.testing.assert_array_equal(refined, unfinished)
    assert 0 < refined.size < Y.shape[1]
    # Re-solved columns are Clarabel's; the others stay ADMM's; the whole is as good as Clarabel's.
    kept = np.setdiff1d(np.arange(Y.shape[1]), refined)
    np.testing.assert_allclose(result.W_design[:, refined], reference.W_design[:, refined], atol=1e-5)
    np.testing.assert_array_equal(result.W_design[:, kept], capped.W_design[:, kept])
    assert result.objective == pytest.approx(reference.objective, rel=1e-4)
    assert result.violation <= 1e-4 and result.certificate.ok
