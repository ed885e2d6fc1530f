"""Bad input to the modeling layer: a typed error naming the argument, raised before any work.

Each case was accepted or failed with an untyped error (or after solving a layer) before issue 16:
complex data read as its real part, strings read as True, empty data, meta and bfloat16 tensors,
unknown solver options, devices and executors, a progress callback that is not callable.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

import convexnet as cn
from convexnet import certificates
from convexnet.errors import InvalidInputError


def layer(seed=0, P=20, N=4, M=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    return X, np.maximum(X @ rng.standard_normal((N, M)), 0.0)


def network(seed=0):
    rng = np.random.default_rng(seed)
    return [rng.standard_normal((4, 5)), rng.standard_normal((5, 2))], rng.standard_normal((20, 4))


def raises_naming(argument):
    """``pytest.raises`` for an InvalidInputError whose message names ``argument``."""
    return pytest.raises(InvalidInputError, match=argument)


# ------------------------------------------------------------------------------- array contents

@pytest.mark.parametrize("bad, word", [
    (np.ones((3, 2)) + 1j, "complex"),
    (np.ones((3, 2)).astype(str), "real numbers"),
    (np.array([[1.0, None], [2.0, 3.0]], dtype=object), "real numbers"),
    (np.array([["2020-01-01"]], dtype="datetime64[D]"), "real numbers"),
    (torch.ones(3, 2, dtype=torch.complex64), "complex"),
    (torch.empty(3, 2, device="meta"), "meta"),
])
def test_data_that_is_not_real_is_refused(bad, word):
    # Every array argument is read by the same check; a fit term's target is one of them.
    with pytest.raises(InvalidInputError, match=f"(?s)V.*{word}|{word}"):
        cn.fits.Below(bad)


def test_low_precision_tensors_are_read_exactly():
    values = torch.tensor([[1.5, -2.25], [0.0078125, 3.0]])
    for dtype in (torch.bfloat16, torch.float16):
        out = cn.fits.Below(values.to(dtype)).target
        assert out.dtype == np.float64 and np.array_equal(out, values.numpy())


def test_complex_data_is_refused_where_it_was_truncated():
    X, Y = layer()
    W = np.zeros((X.shape[1], Y.shape[1]))
    with raises_naming("X is complex"):
        cn.NetTrimProblem(X + 1e-3j, Y, rel_epsilon=0.1)
    with raises_naming("Y is complex"):
        cn.NetTrimProblem(X, Y + 0j, rel_epsilon=0.1)
    with raises_naming("V is complex"):
        cn.NetTrimProblem(X, Y, rel_epsilon=0.1, V=np.zeros(Y.shape) + 1j)
    with raises_naming("W is complex"):
        certificates.duality_gap(X, Y, None, None, W + 1j, lam=1.0)
    saved = {"W_design": W + 1j, "X_design": X, "Y": Y, "V": np.zeros(Y.shape),
             "active": Y > 0, "form": "regularized", "lam": 1.0, "penalty_weights": np.ones(4)}
    with raises_naming("W is complex"):
        certificates.verify(saved)
    with raises_naming("X is complex"):
        certificates.uniqueness_certificate(X + 1j, Y[:, 0], W[:, 0])
    with raises_naming("weights\\[0\\] is complex"):
        cn.trim_network([network()[0][0] + 1j, network()[0][1]], network()[1], rel_epsilon=0.1)


def test_tensors_as_layer_data():
    X, Y = layer()
    with raises_naming("X is a tensor on the 'meta' device"):
        cn.NetTrimProblem(torch.empty(X.shape, device="meta"), Y, rel_epsilon=0.1)
    with raises_naming("Y is a tensor on the 'meta' device"):
        cn.NetTrimProblem(X, torch.empty(Y.shape, device="meta"), rel_epsilon=0.1)
    # bfloat16 is read (through float32, exactly) and solved like its float64 values.
    X16, Y16 = torch.tensor(X).bfloat16(), torch.tensor(Y).bfloat16()
    prob = cn.NetTrimProblem(X16, Y16, rel_epsilon=0.1)
    assert np.array_equal(prob.X, X16.float().numpy()) and np.array_equal(prob.Y, Y16.float().numpy())


@pytest.mark.parametrize("P, M", [(0, 3), (20, 0)])
def test_empty_layer_data_is_refused(P, M):
    X, Y = layer()
    with raises_naming("no rows" if P == 0 else "no columns"):
        cn.NetTrimProblem(X[:P], Y[:P, :M], rel_epsilon=0.1)


def test_empty_network_data_is_refused_before_layer_one_is_solved():
    weights, X = network()
    with raises_naming("X has no rows"):
        cn.trim_network(weights, X[:0], rel_epsilon=0.1, backend="clarabel")
    # The empty layer is the second: the error must come before the first is solved.
    with raises_naming("weights\\[1\\] has shape \\(5, 0\\)"):
        cn.trim_network([weights[0], np.zeros((5, 0))], X, rel_epsilon=0.1, backend="clarabel",
                        progress=lambda *_: pytest.fail("a layer was solved"))


# ------------------------------------------------------------------------------------ flags

@pytest.mark.parametrize("flag", ["relu", "bias", "penalize_bias", "split_budget"])
@pytest.mark.parametrize("value", ["no", "False", 0, None, 1.0])
def test_problem_flags_take_only_booleans(flag, value):
    X, Y = layer()
    with raises_naming(f"{flag} must be True or False"):
        cn.NetTrimProblem(X, Y, rel_epsilon=0.1, **{flag: value})


def test_problem_flags_accept_numpy_booleans():
    X, Y = layer()
    prob = cn.NetTrimProblem(X, Y, rel_epsilon=0.1, relu=np.bool_(True), bias=np.bool_(False))
    assert prob.relu is True and prob.bias is False


@pytest.mark.parametrize("flag", ["last_relu", "penalize_bias", "split_budget"])
def test_network_flags_take_only_booleans(flag):
    weights, X = network()
    with raises_naming(f"{flag} must be True or False"):
        cn.trim_network(weights, X, rel_epsilon=0.1, backend="clarabel", **{flag: "no"})


def test_solve_flags_and_certify_tolerances():
    X, Y = layer()
    prob = cn.NetTrimProblem(X, Y, lam=1.0)
    with raises_naming("verbose must be True or False"):
        prob.solve("clarabel", verbose="no")
    with raises_naming("certify has unknown keys \\['gap'\\]"):
        prob.solve("clarabel", certify={"gap": 1e-3})
    with raises_naming("certify\\['gap_tol'\\] must be >= 0"):
        prob.solve("clarabel", certify={"gap_tol": -1.0})


# ------------------------------------------------------------------ executors, progress, options

def test_executor_must_have_submit():
    X, Y = layer()
    with raises_naming("executor must be a concurrent.futures.Executor"):
        cn.NetTrimProblem(X, Y, lam=1.0).solve("clarabel", executor="pool")
    weights, X = network()
    with raises_naming("executor must be a concurrent.futures.Executor"):
        cn.trim_network(weights, X, rel_epsilon=0.1, backend="clarabel", executor="pool")


def test_progress_must_be_callable_and_is_checked_before_layer_one():
    weights, X = network()
    with raises_naming("progress must be None or a callable"):
        cn.trim_network(weights, X, rel_epsilon=0.1, backend="clarabel", progress=3)


@pytest.mark.parametrize("backend, options, named", [
    ("scs", {"bogus": 1}, "bogus"),
    ("scs", {"max_iters": "many"}, "max_iters"),
    ("scs", {"eps_abs": -1.0}, "eps_abs"),
    ("osqp", {"bogus": 1}, "bogus"),
    ("osqp", {"eps_abs": -1.0}, "eps_abs"),
    ("clarabel", {"verbose": True}, "verbose"),
    ("admm", {"device": "bogus"}, "device='bogus'"),
    ("admm", {"device": 3}, "device must be a torch device"),
])
def test_bad_solver_options_are_refused_before_solving(backend, options, named):
    X, Y = layer()
    prob = cn.NetTrimProblem(X, Y, lam=1.0)
    with pytest.raises(InvalidInputError, match=f"backend={backend!r}.*{named}|{named}.*"):
        prob.solve(backend, solver_options=options)


def test_known_scs_and_osqp_options_still_run():
    X, Y = layer()
    prob = cn.NetTrimProblem(X, Y, lam=1.0)
    assert prob.solve("scs", solver_options={"eps": 1e-7, "max_iters": 50_000}).W is not None
    assert prob.solve("osqp", solver_options={"max_iter": 50_000, "polishing": True}).W is not None


def test_a_keyed_bad_scs_option_is_refused_under_auto():
    X, Y = layer()
    with raises_naming("backend='scs'"):
        cn.NetTrimProblem(X, Y, lam=1.0).solve("auto", solver_options={"scs": {"bogus": 1}})
