"""Tests of convexnet.certificates: duality-gap verification and Proposition 2's uniqueness certificate.

Oracles: independent CVXPY formulations solved by Clarabel (with their constraint duals), weak
duality on random instances, and exact recovery by an independent solve of program (8).
"""

from __future__ import annotations

import io
import types

import cvxpy as cp
import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

import convexnet
from convexnet.certificates import (
    CertificateReport,
    duality_gap,
    layer_uniqueness_certificate,
    uniqueness_certificate,
    verify,
)
from convexnet.errors import InvalidInputError

FORMS = ("regularized", "coupled", "per_column")
LAYERS = ("relu", "relu_shifted", "linear")


# ------------------------------------------------------------------------------------- helpers
def make_layer(seed, *, layer="relu", bias=False, P=30, N=8, M=3):
    """A trained layer: X (P, N[+1]), targets Y, mask, thresholds V, l1 weights (0 on the bias)."""
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    W_true = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.6)
    weights = np.ones(N)
    if bias:
        X = np.hstack([X, np.ones((P, 1))])
        W_true = np.vstack([W_true, rng.standard_normal((1, M))])
        weights = np.append(weights, 0.0)
    Z_true = X @ W_true
    if layer == "linear":
        return X, Z_true, np.ones((P, M), bool), np.zeros((P, M)), weights, W_true
    Y = np.maximum(Z_true, 0.0)
    # Cascade-like thresholds V = (original pre-activation) + a gap, so W_true stays feasible.
    V = (Z_true + 0.3 * np.abs(rng.standard_normal((P, M))) if layer == "relu_shifted"
         else np.zeros((P, M)))
    return X, Y, Y > 0, V, weights, W_true


def budgets_for(Y, active, form):
    epsilon = 0.3 * float(np.linalg.norm(Y[active]))
    if form == "regularized":
        return {"lam": 2.0}
    if form == "coupled":
        return {"epsilon": epsilon}
    return {"column_budgets": epsilon * np.linalg.norm(Y, axis=0) / np.linalg.norm(Y)}


def solve_with_cvxpy(X, Y, active, V, weights, *, lam=None, epsilon=None, column_budgets=None):
    """Independent formulation; Lambda assembled from the constraint duals (module convention)."""
    N, M = X.shape[1], Y.shape[1]
    W = cp.Variable((N, M))
    residual = cp.multiply(active.astype(float), X @ W - Y)
    objective = cp.sum(cp.multiply(weights[:, None], cp.abs(W)))
    constraints, budget_constraints, inequality = [], [], None
    if not active.all():
        inequality = cp.multiply((~active).astype(float), X @ W - V) <= 0
        constraints.append(inequality)
    if lam is not None:
        objective = objective + lam * cp.sum_squares(residual)
    elif epsilon is not None:
        budget_constraints = [cp.norm(residual, "fro") <= epsilon]
    else:
        budget_constraints = [cp.norm(residual[:, m]) <= column_budgets[m] for m in range(M)]
    cp.Problem(cp.Minimize(objective), constraints + budget_constraints).solve(solver="CLARABEL")
    W_value = W.value
    r = np.where(active, X @ W_value - Y, 0.0)
    if lam is not None:
        xi = 2.0 * lam * r
    elif epsilon is not None:
        xi = budget_constraints[0].dual_value * r / np.linalg.norm(r)
    else:
        xi = np.column_stack([c.dual_value * r[:, m] / np.linalg.norm(r[:, m])
                              for m, c in enumerate(budget_constraints)])
    mu = inequality.dual_value if inequality is not None else np.zeros_like(Y)
    return W_value, np.where(active, xi, mu)


def solve_program_8(X, y):
    """min ||w||_1 s.t. x_p.w = y_p on Omega, x_p.w <= 0 off Omega (Clarabel)."""
    w = cp.Variable(X.shape[1])
    omega = y > 0
    constraints = [X[omega] @ w == y[omega]]
    if (~omega).any():
        constraints.append(X[~omega] @ w <= 0)
    cp.Problem(cp.Minimize(cp.norm1(w)), constraints).solve(solver="CLARABEL")
    return w.value


def planted(seed, P, N, s):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    w0 = np.zeros(N)
    w0[rng.choice(N, s, replace=False)] = rng.standard_normal(s) + np.sign(rng.standard_normal(s))
    return X, np.maximum(X @ w0, 0.0), w0


def recovered(w_hat, w0):
    return np.linalg.norm(w_hat - w0) <= 1e-4 * max(1.0, np.linalg.norm(w0))


# ------------------------------------------------------------------------- duality gap: accepts
@pytest.mark.parametrize("bias", [False, True], ids=["no_bias", "unpenalized_bias"])
@pytest.mark.parametrize("layer", LAYERS)
@pytest.mark.parametrize("form", FORMS)
def test_cvxpy_solutions_are_certified(form, layer, bias):
    seed = 10 * FORMS.index(form) + 2 * LAYERS.index(layer) + int(bias)
    X, Y, active, V, weights, _ = make_layer(seed, layer=layer, bias=bias)
    budgets = budgets_for(Y, active, form)
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, **budgets)
    for dual in (Lambda, None):
        report = duality_gap(X, Y, active, V, W, dual, l1_weights=weights, **budgets)
        assert report.ok, str(report)
        assert report.relative_gap <= 1e-6
        assert report.gap >= -1e-7 * max(1.0, report.primal)
        assert report.dropped_columns == ()
        assert report.dual_source == ("supplied" if dual is not None else "constructed")


@pytest.mark.parametrize("form", ["regularized", "per_column", "coupled"])
def test_separable_forms_scale_each_columns_dual_on_its_own(form):
    """One column's dual 1.5x too large costs the whole layer under one scale, only itself otherwise."""
    X, Y, active, V, weights, _ = make_layer(41, layer="relu", M=4)
    budgets = budgets_for(Y, active, form)
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, **budgets)
    spoiled = Lambda.copy()
    spoiled[:, 0] *= 1.5
    report = duality_gap(X, Y, active, V, W, spoiled, l1_weights=weights, **budgets)
    exact = duality_gap(X, Y, active, V, W, Lambda, l1_weights=weights, **budgets)
    # Weak duality holds whatever the scaling: the dual value never exceeds the optimum.
    assert report.dual <= exact.primal * (1 + 1e-7)
    if form == "coupled":
        # The columns share one scale (about 1 / 1.5), so the bound is far from tight.
        assert report.dual_scale == pytest.approx(1 / 1.5, rel=1e-2)
        assert report.relative_gap > 1e-2
    else:
        assert report.dual_scale == pytest.approx(1 / 1.5, rel=1e-2)
        assert report.ok and report.relative_gap <= 1e-6


def test_supplied_dual_matches_graph_equality_dual():
    """CVXPY's dual of ``Z == X W`` is ``-Lambda``: the same point as the assembled constraint duals."""
    X, Y, active, V, weights, _ = make_layer(3, layer="relu")
    epsilon = budgets_for(Y, active, "coupled")["epsilon"]
    W_assembled, Lambda = solve_with_cvxpy(X, Y, active, V, weights, epsilon=epsilon)
    W, Z = cp.Variable((X.shape[1], Y.shape[1])), cp.Variable(Y.shape)
    graph = Z == X @ W
    constraints = [graph, cp.norm(cp.multiply(active.astype(float), Z - Y), "fro") <= epsilon,
                   cp.multiply((~active).astype(float), Z - V) <= 0]
    cp.Problem(cp.Minimize(cp.sum(cp.abs(W))), constraints).solve(solver="CLARABEL")
    # The assembled xi takes its direction from the primal residual, accurate to about 1e-5 only.
    np.testing.assert_allclose(-graph.dual_value, Lambda, atol=1e-4)
    report = duality_gap(X, Y, active, V, W.value, -graph.dual_value, epsilon=epsilon)
    assert report.ok and report.relative_gap <= 1e-7, str(report)


def test_zero_budget_linear_layer():
    """epsilon = 0: X W = Y exactly. The equality's dual certifies; without it, xi is free and the
    least-squares fit is only a valid bound (choosing xi well would take a linear program)."""
    rng = np.random.default_rng(5)
    X = rng.standard_normal((6, 12))
    Y = X @ (rng.standard_normal((12, 2)) * (rng.random((12, 2)) < 0.3))
    W = cp.Variable((12, 2))
    equality = X @ W - Y == 0
    cp.Problem(cp.Minimize(cp.sum(cp.abs(W))), [equality]).solve(solver="CLARABEL")
    supplied = duality_gap(X, Y, None, None, W.value, equality.dual_value, epsilon=0.0)
    assert supplied.ok, str(supplied)
    constructed = duality_gap(X, Y, None, None, W.value, epsilon=0.0)
    assert constructed.gap >= -1e-9 and constructed.dual > 0


def test_soft_threshold_closed_form():
    """X = I: the regularized solution is the soft threshold of Y at 1 / (2 lam)."""
    Y = np.array([[3.0, -0.1], [0.2, -2.0]])
    lam = 2.0
    W = np.sign(Y) * np.maximum(np.abs(Y) - 1 / (2 * lam), 0.0)
    report = duality_gap(np.eye(2), Y, None, None, W, lam=lam)
    assert report.ok and abs(report.gap) <= 1e-12, str(report)


# ------------------------------------------------------------------------- duality gap: rejects
@pytest.mark.parametrize("form", FORMS)
def test_feasible_but_suboptimal_primal_has_a_large_gap(form):
    X, Y, active, V, weights, W_true = make_layer(7, layer="relu_shifted")
    budgets = budgets_for(Y, active, form)
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, **budgets)
    report = duality_gap(X, Y, active, V, W_true, Lambda, **budgets)
    assert report.primal_violation == 0.0
    assert not report.ok and report.relative_gap > 1e-2, str(report)


@pytest.mark.parametrize("form", FORMS)
def test_perturbed_primal_is_rejected(form):
    X, Y, active, V, weights, _ = make_layer(8, layer="relu")
    budgets = budgets_for(Y, active, form)
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, **budgets)
    perturbed = W + 0.05 * np.random.default_rng(0).standard_normal(W.shape)
    for dual in (Lambda, None):
        report = duality_gap(X, Y, active, V, perturbed, dual, **budgets)
        assert not report.ok
        assert report.relative_gap > 1e-3 or report.primal_violation > 1e-3, str(report)


def test_infeasible_primal_is_flagged():
    X, Y, active, V, weights, _ = make_layer(9, layer="relu")
    epsilon = budgets_for(Y, active, "coupled")["epsilon"]
    over_budget = duality_gap(X, Y, active, V, np.zeros((X.shape[1], Y.shape[1])), epsilon=epsilon)
    assert not over_budget.ok
    expected = (np.linalg.norm(Y[active]) - epsilon) / epsilon
    assert over_budget.budget_violation == pytest.approx(expected)
    # Z > V off Omega: shift every output up by a constant through a fake bias-free W.
    W, _ = solve_with_cvxpy(X, Y, active, V, weights, epsilon=epsilon)
    lifted = duality_gap(X, Y + 0.0, active, V - 1.0, W, epsilon=epsilon)
    assert not lifted.ok and lifted.inequality_violation > 0.1, str(lifted)
    assert "NOT CERTIFIED" in str(lifted)


# --------------------------------------------------------------------- duality gap: properties
@settings(max_examples=40, deadline=None)
@given(seed=st.integers(0, 2**31 - 1), form=st.sampled_from(FORMS),
       layer=st.sampled_from(LAYERS), bias=st.booleans())
def test_gap_is_never_negative_for_feasible_primal_and_any_dual(seed, form, layer, bias):
    """Weak duality: any candidate Lambda, once repaired, bounds any feasible primal from below."""
    rng = np.random.default_rng(seed)
    X, Y, active, _, weights, _ = make_layer(seed, layer=layer, bias=bias, P=12, N=5, M=3)
    W = rng.standard_normal((X.shape[1], Y.shape[1])) * (rng.random((X.shape[1], Y.shape[1])) < 0.7)
    Z = X @ W
    V = Z + np.abs(rng.standard_normal(Z.shape))          # W satisfies Z <= V off Omega
    residual = np.where(active, Z - Y, 0.0)
    budgets = {"regularized": {"lam": float(rng.uniform(0.1, 10.0))},
               "coupled": {"epsilon": float(np.linalg.norm(residual)) * rng.uniform(1.0, 2.0)},
               "per_column": {"column_budgets": np.linalg.norm(residual, axis=0)
                              * rng.uniform(1.0, 2.0, Y.shape[1])}}[form]
    dual = 3.0 * rng.standard_normal(Y.shape)             # infeasible on purpose: mu < 0, big X^T Lambda
    report = duality_gap(X, Y, active, V, W, dual, l1_weights=weights, **budgets)
    assert report.primal_violation == 0.0
    assert report.gap >= -1e-10 * max(1.0, abs(report.primal)), str(report)
    Lambda = report.multiplier
    correlation = np.abs(X.T @ Lambda)
    assert (Lambda[~active] >= 0).all()
    assert (correlation <= weights[:, None] * (1 + 1e-12) + 1e-12).all()
    assert report.unpenalized_residual <= 1e-9


def test_column_without_active_rows_drops_its_dual_under_an_unpenalized_bias():
    """A dead unit with an unpenalized bias: sum_p mu_p = 0 with mu >= 0 forces mu = 0 there."""
    X, Y, active, V, weights, _ = make_layer(11, layer="relu", bias=True)
    Y[:, 0] = 0.0
    active = Y > 0
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, lam=2.0)
    Lambda[:, 0] = 1.0                                    # mu > 0 that cannot be cancelled by xi
    report = duality_gap(X, Y, active, V, W, Lambda, l1_weights=weights, lam=2.0)
    assert report.dropped_columns == (0,)
    assert np.all(report.multiplier[:, 0] == 0.0)
    assert report.ok, str(report)


# ----------------------------------------------------------------------------------- verify()
def _problem_fields(X, Y, active, V, weights, form, budgets):
    return {"X_design": X, "Y": Y, "active": active, "V": V, "penalty_weights": weights,
            "form": "regularized" if form == "regularized" else "constrained",
            "epsilon": budgets.get("epsilon"), "column_budgets": budgets.get("column_budgets"),
            "lam": budgets.get("lam")}


@pytest.mark.parametrize("form", FORMS)
def test_verify_reads_objects_mappings_and_npz(form):
    X, Y, active, V, weights, _ = make_layer(12, layer="relu", bias=True)
    budgets = budgets_for(Y, active, form)
    W, Lambda = solve_with_cvxpy(X, Y, active, V, weights, **budgets)
    fields = _problem_fields(X, Y, active, V, weights, form, budgets)
    result = types.SimpleNamespace(W_design=W, dual=Lambda, problem=types.SimpleNamespace(**fields))
    from_object = verify(result)
    assert from_object.ok, str(from_object)

    flat = {"W_design": W, "dual": Lambda, **{k: v for k, v in fields.items() if v is not None}}
    assert verify(flat).gap == pytest.approx(from_object.gap)
    buffer = io.BytesIO()
    np.savez(buffer, **flat)
    buffer.seek(0)
    with np.load(buffer) as saved:
        assert verify(saved).gap == pytest.approx(from_object.gap)
    nested = {"W_design": W, "dual": None, "problem": fields}
    assert verify(nested, gap_tol=1e-5).ok


def test_verify_a_nettrim_result():
    NetTrimProblem = getattr(convexnet, "NetTrimProblem", None)
    if NetTrimProblem is None:
        pytest.skip("convexnet.NetTrimProblem is not available yet")
    rng = np.random.default_rng(0)
    X = rng.standard_normal((40, 8))
    problem = NetTrimProblem.from_weights(X, rng.standard_normal((8, 3)), rng.standard_normal(3),
                                          rel_epsilon=0.05, penalize_bias=False)
    report = verify(problem.solve(backend="clarabel"))
    assert isinstance(report, CertificateReport)
    assert report.ok, str(report)


@pytest.mark.slow
def test_verify_an_admm_result_with_its_dual_and_without():
    """ADMM stops at about 1e-5 relative accuracy: certified at matching tolerances."""
    NetTrimProblem = getattr(convexnet, "NetTrimProblem", None)
    if NetTrimProblem is None:
        pytest.skip("convexnet.NetTrimProblem is not available yet")
    rng = np.random.default_rng(1)
    problem = NetTrimProblem.from_weights(rng.standard_normal((60, 10)), rng.standard_normal((10, 4)),
                                          rng.standard_normal(4), rel_epsilon=0.05,
                                          penalize_bias=False)
    try:
        result = problem.solve(backend="admm")
    except (ImportError, convexnet.BackendUnavailableError) as error:
        pytest.skip(f"ADMM backend unavailable: {error}")
    for dual in (result.dual, None):
        saved = {"W_design": result.W_design, "dual": dual, "problem": problem}
        report = verify(saved, gap_tol=1e-4, feas_tol=1e-4)
        assert report.ok, str(report)


def test_verify_refuses_a_result_without_weights():
    with pytest.raises(InvalidInputError, match="no solution"):
        verify({"W_design": None, "status": "infeasible"})


@pytest.mark.parametrize("change, match", [
    ({"Y": np.zeros((5, 2))}, "Y must have shape"),
    ({"W": np.zeros((3, 3))}, "W must have shape"),
    ({"dual": np.zeros((4, 4))}, "dual must have shape"),
    ({"X": np.full((4, 3), np.nan)}, "NaN"),
    ({"l1_weights": -np.ones(3)}, "l1_weights"),
    ({"active": np.full((4, 2), 2.0)}, "boolean mask"),
    ({"lam": 1.0, "epsilon": 1.0}, "exactly one"),
    ({"lam": None}, "exactly one"),
    ({"lam": -1.0}, "lam"),
])
def test_duality_gap_rejects_bad_input(change, match):
    arguments = {"X": np.ones((4, 3)), "Y": np.ones((4, 2)), "active": None, "V": None,
                 "W": np.zeros((3, 2)), "dual": None, "lam": 1.0}
    arguments.update(change)
    with pytest.raises(InvalidInputError, match=match):
        duality_gap(arguments.pop("X"), arguments.pop("Y"), arguments.pop("active"),
                    arguments.pop("V"), arguments.pop("W"), arguments.pop("dual"), **arguments)


# ------------------------------------------------------------------------- uniqueness (Prop. 2)
def check_conditions(X, y, w, certificate, tol=1e-9):
    """Conditions 1-4 of the docstring, recomputed from the returned nu."""
    nu = certificate.dual
    correlation = X.T @ nu
    support = np.zeros(X.shape[1], bool)
    support[certificate.support] = True
    np.testing.assert_allclose(correlation[support], np.sign(w[support]), atol=tol)
    assert np.abs(correlation[~support]).max(initial=0.0) < 1.0
    slack = X @ w
    off = y == 0
    zero = np.zeros(X.shape[0], bool)
    zero[certificate.zero_slack] = True
    assert np.all(nu[off & ~zero] == 0.0)
    assert np.all(nu[zero] < 0.0)
    assert np.all(slack[zero] >= -1e-7 * max(1.0, y.max()))


@pytest.mark.parametrize("method", ["lp", "least_squares"])
def test_recovery_regime_is_certified(method):
    X, y, w0 = planted(0, P=120, N=50, s=3)
    certificate = uniqueness_certificate(X, y, w0, method=method)
    assert certificate.unique and certificate.full_rank and certificate.margin > 0.1, str(certificate)
    check_conditions(X, y, w0, certificate)
    w_hat = solve_program_8(X, y)
    assert recovered(w_hat, w0)
    # A solver's answer, with its tiny non-zeros and slacks, is certified as well.
    assert uniqueness_certificate(X, y, w_hat, method=method).unique


def test_undersampled_regime_is_not_certified():
    X, y, w0 = planted(1, P=12, N=50, s=8)
    w_hat = solve_program_8(X, y)
    assert not recovered(w_hat, w0)
    for method in ("lp", "least_squares"):
        assert not uniqueness_certificate(X, y, w0, method=method).unique
    # w_hat has the smaller l1 norm; if it is certified unique, w0 cannot be a solution at all.
    assert np.abs(w_hat).sum() < np.abs(w0).sum()


def test_certificate_agrees_with_exact_recovery_across_the_transition():
    """unique => recovered always (it is a proof); least squares => LP; LP <=> recovery off the edge."""
    agreements = disagreements = 0
    for seed in range(24):
        X, y, w0 = planted(100 + seed, P=16 + 4 * (seed % 8), N=40, s=4)
        is_recovered = recovered(solve_program_8(X, y), w0)
        lp = uniqueness_certificate(X, y, w0, method="lp")
        least_squares = uniqueness_certificate(X, y, w0, method="least_squares")
        if lp.unique:
            assert is_recovered, (seed, str(lp))
            check_conditions(X, y, w0, lp)
        if least_squares.unique:
            assert lp.unique and is_recovered
        assert lp.margin >= least_squares.margin - 1e-9
        if abs(lp.margin) > 1e-3:
            agreements += lp.unique == is_recovered
            disagreements += lp.unique != is_recovered
    assert disagreements == 0 and agreements >= 18


def test_zero_slack_rows_need_strictly_negative_nu():
    """Rows orthogonal to w0 give y_p = 0 with s_p = 0: the LP must make nu_p < 0 there."""
    X, _, w0 = planted(2, P=100, N=40, s=3)
    for p in range(3):
        X[p] -= (X[p] @ w0) / (w0 @ w0) * w0
    y = np.maximum(X @ w0, 0.0)
    certificate = uniqueness_certificate(X, y, w0)
    assert set(range(3)) <= set(certificate.zero_slack)
    assert certificate.unique, str(certificate)
    check_conditions(X, y, w0, certificate)
    assert recovered(solve_program_8(X, y), w0)


def test_rank_deficiency_and_infeasibility_are_not_unique():
    X, y, w0 = planted(3, P=100, N=40, s=3)
    duplicate = X.copy()
    first = np.flatnonzero(w0)[0]
    duplicate[:, (first + 1) % 40] = duplicate[:, first]
    split = w0.copy()
    split[(first + 1) % 40] = 0.5 * w0[first]
    split[first] = 0.5 * w0[first]
    rank_deficient = uniqueness_certificate(duplicate, y, split)
    assert not rank_deficient.full_rank and not rank_deficient.unique
    infeasible = uniqueness_certificate(X, y, 1.1 * w0)
    assert not infeasible.feasible and not infeasible.unique


def test_layer_certificate_is_the_conjunction_of_columns():
    rng = np.random.default_rng(4)
    X = rng.standard_normal((110, 30))
    W = np.zeros((30, 3))
    for m in range(3):
        W[rng.choice(30, 2, replace=False), m] = rng.standard_normal(2) + 2.0
    Y = np.maximum(X @ W, 0.0)
    layer = layer_uniqueness_certificate(X, Y, W)
    assert layer.unique and layer.failed_columns == [] and len(layer.columns) == 3
    W_bad = W.copy()
    W_bad[:, 1] *= 1.05
    broken = layer_uniqueness_certificate(X, Y, W_bad)
    assert not broken.unique and broken.failed_columns == [1]
    assert "not certified on columns [1]" in str(broken)


@pytest.mark.parametrize("arguments, match", [
    ((np.ones((4, 3)), -np.ones(4), np.zeros(3)), "negative"),
    ((np.ones((4, 3)), np.ones(5), np.zeros(3)), "y must have shape"),
    ((np.ones((4, 3)), np.ones(4), np.zeros(2)), "w must have shape"),
    ((np.full((4, 3), np.inf), np.ones(4), np.zeros(3)), "infinite"),
])
def test_uniqueness_rejects_bad_input(arguments, match):
    with pytest.raises(InvalidInputError, match=match):
        uniqueness_certificate(*arguments)
    with pytest.raises(InvalidInputError, match="method"):
        uniqueness_certificate(np.ones((4, 3)), np.ones(4), np.zeros(3), method="simplex")
