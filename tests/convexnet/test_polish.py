"""ADMM + polish: the approximate answer made exact on its support, then certified.

Oracle: Clarabel on the same program (objective), and the duality-gap certificate (gap and
violation at the interior-point tolerances)."""

from __future__ import annotations

import numpy as np
import pytest

import convexnet as cn
from convexnet import fits, penalties, sets


def relu_layer(P, N, M, seed, relu=True):
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((P, N)), 0.0)
    Z = X @ rng.standard_normal((N, M)) - 0.5
    return X, np.maximum(Z, 0.0) if relu else Z


FORMS = {
    "coupled": dict(rel_epsilon=0.05),
    "split": dict(rel_epsilon=0.05, split_budget=True),
    "regularized": dict(lam=5.0),
    "bias": dict(rel_epsilon=0.05, bias=True, penalize_bias=False),
    "linear": dict(rel_epsilon=0.05, relu=False),
}


@pytest.mark.parametrize("shape", [(200, 40, 10), (300, 60, 6)])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_polished_admm_matches_clarabel_to_interior_point_accuracy(form, shape):
    X, Y = relu_layer(*shape, seed=sum(shape), relu=FORMS[form].get("relu", True))
    problem = cn.NetTrimProblem(X, Y, **FORMS[form])
    clarabel = problem.solve("clarabel")
    admm = problem.solve("admm", solver_options={"threads": 1})
    assert admm.info["polished"].all()
    assert admm.status == "optimal"
    assert admm.certificate.ok and admm.certificate.gap_tol == 1e-6
    assert admm.certificate.relative_gap <= 1e-6 and admm.violation <= 1e-7
    assert admm.objective == pytest.approx(clarabel.objective, rel=1e-6)


def test_without_polish_the_admm_tolerance_applies():
    X, Y = relu_layer(200, 40, 10, seed=1)
    problem = cn.NetTrimProblem(X, Y, lam=5.0)
    rough = problem.solve("admm", solver_options={"polish": False, "threads": 1})
    assert not rough.info["polished"].any() and rough.certificate.gap_tol == 1e-4
    with pytest.raises(cn.InvalidInputError, match="polish"):
        problem.solve("admm", solver_options={"polish": "yes"})


def test_a_generic_prox_gets_one_rho_for_every_column():
    """L1 through its generic prox (one scalar step) must solve the same program as the l1 term."""
    class ProxL1(penalties.L1):
        graph_term = penalties.Penalty.graph_term

    rng = np.random.default_rng(2)
    X = rng.standard_normal((80, 10))
    Y = X @ (rng.standard_normal((10, 5)) * (rng.random((10, 5)) < 0.5))
    reference = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.L1(3.0)).solve("clarabel")
    generic = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=ProxL1(3.0)).solve(
        "admm", solver_options={"polish": False})
    assert generic.objective == pytest.approx(reference.objective, rel=1e-4)


def test_a_subspace_is_projected_in_the_original_units():
    rng = np.random.default_rng(3)
    X = rng.standard_normal((80, 6)) * np.array([1.0, 10.0, 0.1, 1.0, 3.0, 0.3])
    Y = X @ rng.standard_normal((6, 2))
    basis = np.linalg.qr(rng.standard_normal((12, 4)))[0]
    program = cn.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.L1(1.0),
                                 constraints=[sets.Subspace(basis, shape=(6, 2))])
    reference = program.solve("clarabel")
    admm = program.solve("admm")
    # Before, the engine projected row-scaled weights onto the subspace as if it were a mask and
    # answered a different program (objective 90x Clarabel's).
    assert admm.info["admm"].status == "optimal" and admm.violation <= 1e-4
    assert admm.objective == pytest.approx(reference.objective, rel=1e-4)


def test_columns_solved_again_on_their_support_match_clarabel():
    """The fallback for columns the polish leaves: Clarabel on ADMM's likely support, checked off it."""
    from convexnet.backends.restricted import restricted

    X, Y = relu_layer(200, 40, 10, seed=7)
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=0.05, split_budget=True)
    rough = problem.solve("admm", solver_options={"polish": False, "threads": 1})
    found = restricted(problem.program, rough.W_design, rough.dual, np.arange(10))
    assert found.columns.all()
    reference = problem.solve("clarabel")
    assert problem.objective(found.W) == pytest.approx(reference.objective, rel=1e-7)
    assert problem.violation(found.W) <= 1e-7
    report = cn.certificates.duality_gap(problem.X_design, problem.Y, problem.active, problem.V,
                                         found.W, found.dual, column_budgets=problem.column_budgets)
    assert report.ok
    # Starting from ADMM's nonzeros only (no entries near their weight), entries the optimum needs
    # are found by the check off the support and added: the same answer.
    grown = restricted(problem.program, rough.W_design, rough.dual, np.arange(10), margin=2.0)
    assert grown.columns.all()
    assert problem.objective(grown.W) == pytest.approx(reference.objective, rel=1e-7)
    # A support on which the budget cannot be met (one entry, no dual to grow it from) is refused.
    wrong = np.zeros_like(rough.W_design)
    wrong[0, 0] = 1.0
    assert not restricted(problem.program, wrong, np.zeros_like(rough.dual), [0], margin=2.0).columns[0]


def test_the_closed_form_multiplier_meets_the_budget_and_agrees_with_a_root_search():
    """For fixed active sets the budget's multiplier is the root of a quadratic; the result must
    put the residual exactly on the budget, as an independent root finder (scipy's brentq) does."""
    from scipy.optimize import brentq

    from convexnet.backends import polish as pl

    X, Y = relu_layer(200, 40, 1, seed=7)
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=0.05)
    reference = problem.solve("clarabel", sparsest=False)
    program = problem.program
    fit, below = program.fits
    column = pl._Column(X, fit.mask[:, 0], fit.target[:, 0], below.mask[:, 0], below.target[:, 0],
                        np.ones(X.shape[1]))
    w = reference.W_design[:, 0]
    S, signs = w != 0, np.sign(w)
    K = column.B @ w >= column.v - 1e-7 * program.output_scale
    budget = float(fit.epsilon)
    nu, ((w_closed, _),) = pl._closed_form_multiplier([column], [(S, signs, K)], budget)

    def norm(trial):
        return float(np.linalg.norm(column.A @ column.solve(S, signs, K, trial)[0] - column.y))

    nu_search = brentq(lambda trial: norm(trial) - budget, nu / 100, nu * 100, xtol=1e-300, rtol=1e-14)
    assert np.linalg.norm(column.A @ w_closed - column.y) == pytest.approx(budget, rel=1e-10)
    assert nu == pytest.approx(nu_search, rel=1e-8)
    np.testing.assert_allclose(w_closed, w, atol=1e-5 * np.abs(w).max())  # Clarabel: ~1e-6


def test_dependent_tight_rows_and_an_inactive_budget_still_polish():
    """Degenerate vertices: every sample twice (each tight row has a twin, so the tight
    rows' matrix loses rank) and, in a second layer, budgets loose enough to be inactive (the
    optimum is a vertex of the linear program, nu = 0). The polish keeps an independent subset of
    the tight rows and takes the vertex; the answer is Clarabel's."""
    X, Y = relu_layer(150, 30, 8, seed=11)
    X2, Y2 = np.vstack([X, X]), np.vstack([Y, Y])
    # Inactive samples held below -0.3 (w = 0 is infeasible) and a budget twice the outputs' size.
    V = np.where(Y == 0, -0.3, 0.0)
    for problem in (cn.NetTrimProblem(X2, Y2, rel_epsilon=0.05, split_budget=True),
                    cn.NetTrimProblem(X, Y, rel_epsilon=2.0, split_budget=True, V=V)):
        clarabel = problem.solve("clarabel")
        admm = problem.solve("admm", solver_options={"threads": 1})
        assert admm.info["polished"].all()
        assert admm.status == "optimal" and admm.certificate.ok
        assert admm.objective == pytest.approx(clarabel.objective, rel=1e-6, abs=1e-9)
    # The second program's optimum is the linear program's: no column's budget carries a multiplier.
    assert (np.abs(np.where(Y > 0, admm.dual, 0.0)).max(axis=0) == 0).all()


def test_a_whole_layer_budget_is_solved_again_on_every_columns_support():
    """restricted_coupled: the columns of a whole-layer budget in one conic program on their
    likely supports, grown from ADMM's rough point, then moved to a vertex and polished; the answer
    is Clarabel's and its certificate passes at the interior-point tolerances (the interior point's
    own dual, with stationarity errors about 5e-5 here, did not)."""
    from convexnet.backends.restricted import restricted_coupled
    from convexnet.certificates.programs import certify_program

    X, Y = relu_layer(200, 40, 10, seed=5)
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=0.05)
    rough = problem.solve("admm", solver_options={"polish": False, "threads": 1,
                                                  "max_iterations": 300},
                          certify=False, sparsest=False)
    found = restricted_coupled(problem.program, rough.W_design, rough.dual)
    assert found is not None and found.columns.all()
    reference = problem.solve("clarabel", sparsest=False)
    assert problem.objective(found.W) == pytest.approx(reference.objective, rel=1e-6)
    assert problem.violation(found.W) <= 1e-7
    report = certify_program(problem.program, found.W, found.dual, gap_tol=1e-6, feas_tol=1e-6)
    assert report.ok and report.relative_gap <= 1e-6
    # A separable program is not of this kind.
    split = cn.NetTrimProblem(X, Y, rel_epsilon=0.05, split_budget=True)
    assert restricted_coupled(split.program, rough.W_design, rough.dual) is None


def test_auto_runs_admm_on_a_whole_layer_budget_with_dead_units_and_a_degenerate_face():
    """A whole-layer budget on data with duplicated features (an optimal face, not a point) and
    units that are never active (columns without fit rows): auto runs ADMM, whose polish does not
    settle; Clarabel on the supports, the vertex move and the polish give a certified answer with
    Clarabel's objective, sparser than Clarabel's own centre of the face."""
    X, Y = relu_layer(200, 30, 10, seed=11)
    X = np.hstack([X, X[:, :10]])                       # 10 duplicated features
    Y[:, :2] = 0.0                                      # two dead units: no fit rows
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=0.05)
    assert cn.backends.auto.choose(problem.program) == "admm"
    found = problem.solve("auto", solver_options={"admm": {"threads": 1}})
    reference = problem.solve("clarabel", sparsest=False)
    assert found.status == "optimal" and found.backend.startswith("admm")
    assert found.certificate.ok and found.certificate.relative_gap <= 1e-6
    assert found.violation <= 1e-7
    assert found.objective == pytest.approx(reference.objective, rel=1e-6)
    assert np.all(found.W_design[:, :2] == 0)
    assert np.count_nonzero(found.W_design) <= np.count_nonzero(
        np.abs(reference.W_design) > 1e-9 * np.abs(reference.W_design).max())


def test_the_support_gram_updated_round_by_round_equals_the_direct_product():
    """_Column.gram reuses the last support's entries: after supports that grow, shrink and change,
    it equals A_S^T A_S and A_S^T y computed from scratch (naive oracle)."""
    from convexnet.backends import polish as pl

    rng = np.random.default_rng(3)
    X = rng.standard_normal((50, 30))
    fit_rows = rng.random(50) < 0.6
    column = pl._Column(X, fit_rows, rng.standard_normal(50), ~fit_rows, np.zeros(50), np.ones(30))
    A, y = X[fit_rows], column.y
    supports = [rng.random(30) < share for share in (0.2, 0.3, 0.5, 0.1, 0.9, 0.9, 0.4)]
    supports.insert(3, supports[2] & ~np.eye(30, dtype=bool)[4])   # one entry leaves
    for S in supports:
        gram, correlation = column.gram(S)
        np.testing.assert_allclose(gram, A[:, S].T @ A[:, S], rtol=1e-12, atol=1e-12)
        np.testing.assert_allclose(correlation, A[:, S].T @ y, rtol=1e-12, atol=1e-12)


def test_units_never_active_polish_to_exact_zeros_in_every_form():
    """A column without fit rows whose zero is feasible (Y = 0 on every sample, bounds 0) is 0 with
    a zero dual in the separable and the coupled polish alike; the certificate holds at 1e-6."""
    X, Y = relu_layer(200, 30, 8, seed=13)
    Y[:, :2] = 0.0
    for form in (dict(rel_epsilon=0.05, split_budget=True, bias=True, penalize_bias=False),
                 dict(lam=5.0), dict(rel_epsilon=0.05)):
        problem = cn.NetTrimProblem(X, Y, **form)
        found = problem.solve("auto", solver_options={"admm": {"threads": 1}})
        assert found.status == "optimal" and found.certificate.relative_gap <= 1e-6
        assert np.all(found.W_design[:, :2] == 0) and np.all(found.dual[:, :2] == 0)
