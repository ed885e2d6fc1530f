"""The l1-ball projection of one long vector (solvers._l1_vector) and the batched thresholds rounded
once (solvers._l1_threshold.rounded_thresholds), against exact rational arithmetic.

Oracles: the sort-based rule (Held, Wolfe and Crowder) in float64 for the answer; the active set and
the threshold in exact rational arithmetic (``fractions``) for the support and, when few entries
survive, for the threshold to the last bit; the general search for the cases this path defers.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch

from solvers import _arrays, _l1_threshold, _l1_vector
from solvers.prox import project_l1_ball

N = 1 << 17


def sort_based(x, radius):
    magnitudes = np.abs(x).astype(np.float64)
    ordered = np.sort(magnitudes)[::-1]
    partial = np.cumsum(ordered)
    count = int(np.count_nonzero(ordered * np.arange(1, ordered.size + 1) > partial - radius))
    tau = (partial[count - 1] - radius) / count
    return np.sign(x) * np.maximum(magnitudes - tau, 0.0), ordered, count


def exact_tau(ordered, count, radius):
    total = sum((Fraction(float(v)) for v in ordered[:count]), Fraction(0))
    return (total - Fraction(float(radius))) / count


@pytest.mark.parametrize("distribution", ["standard_normal", "exponential", "standard_cauchy"])
@pytest.mark.parametrize("fraction", [1e-5, 1e-3, 0.05, 0.4, 0.9])
def test_long_vector_matches_the_sort_based_rule_and_the_exact_support(distribution, fraction):
    x = getattr(np.random.default_rng(3), distribution)(size=N)
    radius = fraction * float(np.abs(x).sum())
    reference, ordered, count = sort_based(x, radius)
    out = project_l1_ball(x, radius=radius)
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-12 * np.abs(x).max())
    exact = exact_tau(ordered, count, radius)
    # The active set is exact: an entry survives if and only if it lies above the rational threshold.
    assert Fraction(float(ordered[count - 1])) > exact
    np.testing.assert_array_equal(out != 0, np.abs(x) > float(exact))
    assert np.all(np.sign(out[out != 0]) == np.sign(x[out != 0]))
    assert abs(np.abs(out).sum() - radius) <= 1e-12 * radius


@pytest.mark.parametrize("distribution", ["standard_normal", "exponential"])
@pytest.mark.parametrize("fraction", [1e-5, 1e-4, 1e-3])
def test_few_survivors_give_the_threshold_to_the_last_bit(distribution, fraction):
    """With the support gathered, the threshold is the exact rational one rounded once."""
    x = getattr(np.random.default_rng(4), distribution)(size=N)
    magnitudes = np.abs(x)
    radius = fraction * float(magnitudes.sum())
    _, ordered, count = sort_based(x, radius)
    tau, support = _l1_vector.vector_threshold(magnitudes, radius)
    assert support is not None and support.size == count
    rounded = float(_l1_threshold.rounded_thresholds(magnitudes[support], None, 1, radius)[0])
    assert rounded == float(exact_tau(ordered, count, radius))
    # The float64 formula alone is within a few units in the last place; the rounded one is exact.
    assert abs(tau - rounded) <= 64 * math.ulp(rounded)
    survivors = project_l1_ball(x, radius=radius)[support]
    np.testing.assert_array_equal(np.abs(survivors), np.maximum(magnitudes[support] - rounded, 0.0))


def test_exact_threshold_survives_cancellation_and_wide_ranges():
    values = np.array([1e16, 1.0, 1.0, 3.0, 2.0 ** -40])
    radius = 1e16 - 7.0
    exact = (sum(Fraction(float(v)) for v in values) - Fraction(radius)) / values.size
    assert float(_l1_threshold.rounded_thresholds(values, None, 1, radius)[0]) == float(exact)


@pytest.mark.parametrize("case", ["float32", "strided", "reversed", "torch", "inside", "far"])
def test_long_vector_variants_agree_with_the_general_search(case, monkeypatch):
    rng = np.random.default_rng(5)
    x = rng.standard_normal(2 * N)
    radius = 0.1 * float(np.abs(x[:N]).sum())
    if case == "float32":
        x = x[:N].astype(np.float32)
    elif case == "strided":
        x = x[::2]
    elif case == "reversed":
        x = x[::-1][:N]
    elif case == "inside":
        x, radius = x[:N], 2.0 * float(np.abs(x[:N]).sum())
    elif case == "far":
        # A threshold far above the outputs: the general search's shifted redo decides.
        x = np.concatenate([[1e32, -1e32 * (1 + 2 ** -40)], 1e31 * rng.random(N)])
        radius = 1e16
    else:
        x = x[:N]
    data = torch.tensor(x) if case == "torch" else x
    out = project_l1_ball(data, radius=radius)
    monkeypatch.setattr(_l1_vector, "VECTOR_MIN", 1 << 40)
    general = project_l1_ball(data, radius=radius)
    if case == "torch":
        assert isinstance(out, torch.Tensor)
        out, general = out.numpy(), general.numpy()
    assert out.dtype == general.dtype == np.asarray(x).dtype
    scale = float(np.abs(x).max())
    np.testing.assert_allclose(out, general, rtol=0, atol=(1e-6 if case == "float32" else 1e-12) * scale)
    if case == "inside":
        assert np.array_equal(out, x)
    if case == "far":
        assert abs(np.abs(out).sum() - radius) <= 1e-6 * radius


@pytest.mark.parametrize("kind", ["numpy", "torch form"])
def test_batched_columns_with_few_survivors_get_the_threshold_to_the_last_bit(kind, monkeypatch):
    """Every column of a matrix (the general, batched search) with few survivors: each survivor is
    ``|x| - tau`` for the exact rational threshold rounded once."""
    # Columns of similar sizes: each keeps 5 to 30 entries (none far, none inside; the far rows'
    # shifted redo is tested in test_prox_extreme.py).
    x = np.random.default_rng(6).standard_normal((4000, 6)) * np.array([1.0, 1.3, 0.8, 1.1, 0.9, 1.2])
    radius = 5.0
    if kind == "torch form":
        monkeypatch.setattr(_arrays, "HOST_NUMPY", False)
        out = project_l1_ball(torch.tensor(x), radius=radius, axis=0).numpy()
    else:
        out = project_l1_ball(x, radius=radius, axis=0)
    for column in range(x.shape[1]):
        _, ordered, count = sort_based(x[:, column], radius)
        tau = float(exact_tau(ordered, count, radius))
        expected = np.sign(x[:, column]) * np.maximum(np.abs(x[:, column]) - tau, 0.0)
        np.testing.assert_array_equal(out[:, column], expected)


def test_rounded_thresholds_count_a_redone_column_once():
    """400 columns with few survivors: one column's sampled bracket misses (seed 2) and is searched
    again; its candidates are listed twice, and its threshold still comes out exact."""
    from solvers import _l1_search

    calls = []
    redo = _l1_search._redo

    def spy(*arguments):
        calls.append(arguments)
        return redo(*arguments)

    x = np.random.default_rng(2).standard_normal((3000, 400))
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(_l1_search, "_redo", spy)
        out = project_l1_ball(x, radius=4.0, axis=0)
    assert calls
    for column in range(x.shape[1]):
        _, ordered, count = sort_based(x[:, column], 4.0)
        tau = float(exact_tau(ordered, count, 4.0))
        np.testing.assert_array_equal(out[:, column],
                                      np.sign(x[:, column]) * np.maximum(np.abs(x[:, column]) - tau, 0.0))


def test_dense_output_without_torch_out_form_is_the_same(monkeypatch):
    """The dense output uses torch's private ``softshrink(out=)``; without it numpy's two passes
    give the same numbers."""
    x = np.random.default_rng(8).standard_normal(N)
    radius = 0.5 * float(np.abs(x).sum())
    with_torch = project_l1_ball(x, radius=radius)
    monkeypatch.delattr(torch._C._nn, "softshrink")
    np.testing.assert_array_equal(project_l1_ball(x, radius=radius), with_torch)
