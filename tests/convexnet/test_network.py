"""trim_network: Algorithms 1 and 2, the theorem bounds, executors and bad input."""

import numpy as np
import pytest

import convexnet as cn
from convexnet.network import forward


def make_network(seed, sizes=(5, 24, 24, 3), P=150, bias=True):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) if bias else None for b in sizes[1:]]
    return weights, biases, rng.standard_normal((P, sizes[0]))


@pytest.mark.parametrize("seed", [0, 1, 2])
@pytest.mark.parametrize("mode, gamma", [("parallel", 1.0), ("cascade", 1.0), ("cascade", 1.3)])
def test_measured_discrepancy_within_theorem_bound(seed, mode, gamma):
    weights, biases, X = make_network(seed)
    net = cn.trim_network(weights, X, rel_epsilon=0.08, mode=mode, gamma=gamma, biases=biases,
                          backend="clarabel")
    assert np.all(net.discrepancy <= net.bound * (1 + 1e-6) + 1e-9)
    assert [W.shape for W in net.weights] == [W.shape for W in weights]
    assert [b.shape for b in net.biases] == [b.shape for b in biases]
    # Theorem statements for link-normalized networks are no tighter than the general form:
    # in cascade mode the last bound is epsilon_1 * sqrt(gamma^(L-1)) * prod ||W_l||_2.
    if mode == "cascade":
        expected = net.epsilons[0] * np.sqrt(gamma ** 2) * np.prod(
            [np.linalg.norm(W, 2) for W in weights[1:]])
        assert net.bound[-1] == pytest.approx(expected)


def test_link_normalized_bounds_are_the_theorems():
    weights, biases, X = make_network(3, bias=False)
    weights = [W / np.abs(W).sum() for W in weights]
    parallel = cn.trim_network(weights, X, rel_epsilon=0.1, mode="parallel", backend="clarabel")
    assert np.all(parallel.bound <= np.cumsum(parallel.epsilons) * (1 + 1e-9))
    assert np.all(parallel.discrepancy <= parallel.bound * (1 + 1e-6))
    cascade = cn.trim_network(weights, X, rel_epsilon=0.1, mode="cascade", gamma=1.2,
                              backend="clarabel")
    theorem2 = cascade.epsilons[0] * np.sqrt(1.2 ** np.arange(3))
    assert np.all(cascade.bound <= theorem2 * (1 + 1e-9))
    assert np.all(cascade.discrepancy <= cascade.bound * (1 + 1e-6))


def test_cascade_layer_programs_follow_algorithm_2():
    weights, biases, X = make_network(4)
    gamma = 1.1
    net = cn.trim_network(weights, X, rel_epsilon=0.05, mode="cascade", gamma=gamma, biases=biases,
                          backend="clarabel")
    originals = forward(weights, biases, X)
    first = net.layers[0].problem
    assert first.epsilon == pytest.approx(0.05 * np.linalg.norm(originals[0]))
    # Layer 2: input = pruned layer 1's output; V = Yhat_1 W_2 + b_2; eps^2 = gamma * sum_Omega (.)^2.
    Yhat1 = np.maximum(X @ net.weights[0] + net.biases[0], 0)
    second = net.layers[1].problem
    np.testing.assert_allclose(second.X, Yhat1)
    V = Yhat1 @ weights[1] + biases[1]
    np.testing.assert_allclose(second.V, V)
    omega = originals[1] > 0
    assert second.epsilon ** 2 == pytest.approx(gamma * np.sum((V - originals[1])[omega] ** 2))
    assert not net.layers[2].problem.relu  # the last layer is linear by default


def test_parallel_layers_use_original_activations_and_regularized_has_no_bound():
    weights, biases, X = make_network(5)
    net = cn.trim_network(weights, X, lam=5.0, mode="parallel", biases=biases, backend="osqp")
    originals = forward(weights, biases, X)
    np.testing.assert_allclose(net.layers[1].problem.X, originals[0])
    assert np.all(np.isnan(net.bound))
    assert all(layer.problem.form == "regularized" for layer in net.layers)


def test_progress_callback_sees_every_layer():
    weights, biases, X = make_network(7, sizes=(3, 6, 2), P=40)
    seen = []
    cn.trim_network(weights, X, rel_epsilon=0.1, biases=biases, backend="clarabel",
                    progress=lambda i, n, layer: seen.append((i, n, layer.status)))
    assert seen == [(0, 2, "optimal"), (1, 2, "optimal")]


def test_iteration_cap_is_reported_per_layer_not_hidden():
    weights, _, X = make_network(8, sizes=(3, 6, 2), P=40, bias=False)
    net = cn.trim_network(weights, X, rel_epsilon=0.1, backend="clarabel",
                          solver_options={"max_iter": 1})
    assert [layer.status for layer in net.layers] == ["max_iterations", "max_iterations"]
    assert "max_iterations" in net.summary()
    # The theorems need every layer's constraint to hold: no bound from an unfinished layer on.
    assert np.all(np.isnan(net.bound)) and np.all(np.isfinite(net.discrepancy))


W_OK, B_OK, X_OK = make_network(0, sizes=(3, 5, 2), P=20)


@pytest.mark.parametrize("kwargs, error, words", [
    (dict(weights=[W_OK[0], W_OK[0]], X=X_OK, rel_epsilon=0.1), cn.InvalidInputError, "weights\\[1\\]"),
    (dict(weights=[], X=X_OK, rel_epsilon=0.1), cn.InvalidInputError, "non-empty"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, mode="serial"), cn.InvalidInputError, "mode"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, gamma=0.5), cn.InvalidInputError, "gamma"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, lam=1.0), cn.InvalidInputError, "exactly one"),
    (dict(weights=W_OK, X=X_OK, epsilon=-1.0), cn.InvalidInputError, "epsilon"),
    (dict(weights=W_OK, X=X_OK, lam=0.0), cn.InvalidInputError, "lam"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, biases=[B_OK[0]]), cn.InvalidInputError, "biases"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, biases=[B_OK[1], B_OK[0]]), cn.InvalidInputError,
     "biases\\[0\\]"),
    (dict(weights=W_OK, X=X_OK * np.nan, rel_epsilon=0.1), cn.InvalidInputError, "NaN"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, backend="mosek"), cn.BackendUnavailableError,
     "available"),
    (dict(weights=W_OK, X=X_OK, rel_epsilon=0.1, backend="osqp",
          solver_options={"no_such_option": 1}), cn.InvalidInputError, "no_such_option"),
])
def test_bad_network_input_raises_before_work(kwargs, error, words):
    with pytest.raises(error, match=words):
        cn.trim_network(**kwargs)


def test_solver_options_are_checked_for_every_layer_before_the_first_is_solved():
    weights, biases, X = make_network(7, sizes=(3, 6, 2), P=40)
    # With per-column budgets every layer goes to ADMM (then polish, and Clarabel for what does not
    # polish) under "auto".
    seen = []
    with pytest.raises(cn.InvalidInputError, match="'bogus'"):
        cn.trim_network(weights, X, rel_epsilon=0.1, biases=biases, split_budget=True,
                        solver_options={"admm": {"rel_tol": 1e-5}, "clarabel": {"bogus": 1}},
                        progress=lambda *args: seen.append(args))
    assert seen == []
    # A flat dict goes to the backend "auto" runs (ADMM): a Clarabel setting there is refused.
    with pytest.raises(cn.InvalidInputError, match="max_iter.*'admm': {...}, 'clarabel': {...}"):
        cn.trim_network(weights, X, rel_epsilon=0.1, biases=biases, split_budget=True,
                        solver_options={"max_iter": 5}, progress=lambda *args: seen.append(args))
    assert seen == []
    with pytest.raises(cn.InvalidInputError, match="solver_options\\['admm'\\] must be a dict"):
        cn.trim_network(weights, X, rel_epsilon=0.1, solver_options={"admm": 3})
    # Keyed options reach each backend: ADMM stopped after 2 steps without polish leaves every
    # column to Clarabel, which stops after 1 iteration.
    net = cn.trim_network(weights, X, rel_epsilon=0.1, biases=biases, split_budget=True,
                          solver_options={"admm": {"max_iterations": 2, "polish": False},
                                          "clarabel": {"max_iter": 1}})
    assert net.layers[0].info["admm"].iterations.max() == 2
    assert net.layers[0].backend == "admm+clarabel" and net.layers[0].status == "max_iterations"


def test_cascade_split_budget_uses_eq7_per_column_and_stays_feasible():
    weights, biases, X = make_network(9)
    gamma = 1.0  # the tightest case: the trained weights sit exactly on every column's budget
    net = cn.trim_network(weights, X, rel_epsilon=0.05, mode="cascade", gamma=gamma, biases=biases,
                          split_budget=True, backend="clarabel")
    originals = forward(weights, biases, X)
    Yhat1 = np.maximum(X @ net.weights[0] + net.biases[0], 0)
    pre = Yhat1 @ weights[1] + biases[1]
    per_column = np.sqrt(gamma * np.sum(np.where(originals[1] > 0, pre - originals[1], 0) ** 2, 0))
    np.testing.assert_allclose(net.layers[1].problem.column_budgets, per_column)
    assert net.layers[1].problem.epsilon == pytest.approx(np.linalg.norm(per_column))
    assert all(layer.status == "optimal" for layer in net.layers)
    assert np.all(net.discrepancy <= net.bound * (1 + 1e-6))
