"""Linear layers from sufficient statistics (GramData): same programs as the sample form."""

from __future__ import annotations

import numpy as np
import pytest

import convexnet as cn
from convexnet.errors import InvalidInputError


def linear_layer(seed=0, P=2000, N=15, M=4, bias=False):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N)) @ rng.standard_normal((N, N)) / np.sqrt(N)
    W = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.5)
    Y = X @ W + 0.05 * rng.standard_normal((P, M))
    if bias:
        Y += rng.standard_normal(M)
    return X, Y


def batches(X, Y, size=300):
    return ((X[i:i + size], Y[i:i + size]) for i in range(0, X.shape[0], size))


def test_a_stream_of_batches_gives_the_statistics_of_one_batch():
    X, Y = linear_layer(1)
    streamed = cn.GramData.from_batches(batches(X, Y, size=137))
    whole = cn.GramData.from_arrays(X, Y)
    np.testing.assert_allclose(streamed.H, X.T @ X, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(streamed.XtY, whole.XtY, rtol=1e-12, atol=1e-9)
    np.testing.assert_allclose(streamed.y_squares, (Y ** 2).sum(axis=0), rtol=1e-12)
    assert streamed.n == whole.n == X.shape[0]


@pytest.mark.parametrize("bias", [False, True])
@pytest.mark.parametrize("budget", [dict(rel_epsilon=0.1), dict(rel_epsilon=0.1, split_budget=True),
                                    dict(lam=0.5)])
def test_gram_form_matches_the_sample_form(budget, bias):
    X, Y = linear_layer(2, bias=bias)
    sample = cn.NetTrimProblem(X, Y, relu=False, bias=bias, **budget).solve("clarabel")
    problem = cn.NetTrimProblem.from_gram(cn.GramData.from_batches(batches(X, Y)), bias=bias, **budget)
    assert problem.X_design.shape[0] <= X.shape[1] + bias     # r <= N rows, whatever P
    assert problem.shape[0] == X.shape[0]
    gram = problem.solve("clarabel")
    assert gram.status == "optimal" and gram.certificate.ok
    assert gram.objective == pytest.approx(sample.objective, rel=1e-8)
    assert gram.discrepancy == pytest.approx(sample.discrepancy, rel=1e-7)
    # The discrepancy is the full one, recomputed from the samples.
    full = np.linalg.norm(X @ gram.W + (gram.b if bias else 0.0) - Y)
    assert gram.discrepancy == pytest.approx(full, rel=1e-7)
    if "rel_epsilon" in budget:
        assert full <= 0.1 * np.linalg.norm(Y) * (1 + 1e-6)


def test_gram_form_runs_on_admm():
    X, Y = linear_layer(3)
    problem = cn.NetTrimProblem.from_gram(cn.GramData.from_arrays(X, Y), rel_epsilon=0.1)
    clarabel = problem.solve("clarabel")
    admm = problem.solve("admm")
    assert admm.status == "optimal"
    assert admm.objective == pytest.approx(clarabel.objective, rel=1e-4)


def test_bad_gram_input_is_refused():
    X, Y = linear_layer(4)
    gram = cn.GramData.from_arrays(X, Y)
    with pytest.raises(InvalidInputError, match="floor"):
        cn.NetTrimProblem.from_gram(gram, epsilon=1e-6)
    with pytest.raises(InvalidInputError, match="GramData"):
        cn.NetTrimProblem.from_gram((X.T @ X, X.T @ Y), rel_epsilon=0.1)
    with pytest.raises(InvalidInputError, match="no samples"):
        cn.GramData.from_batches([])
    with pytest.raises(InvalidInputError, match="batch 1"):
        cn.GramData.from_batches([(X[:10], Y[:10]), (X[:10, :-1], Y[:10])])
    with pytest.raises(InvalidInputError, match="pair"):
        cn.GramData.from_batches([X])
