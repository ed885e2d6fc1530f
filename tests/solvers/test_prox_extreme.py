"""The kernels' invariants at extreme scales: data, radii and strengths from 1e-150 to 1e150.

Hypothesis draws a small vector, a scale for it and a scale for the parameter, each a power of ten
in [-150, 150]. Oracles: exact rational arithmetic (``fractions``) for the l1-ball projection; the
defining properties of a projection (inside returned exactly, outside on the boundary, idempotent,
non-expansive); scale covariance; and a brute-force 1-D minimizer of the prox objective (a grid
refined by ``scipy.optimize.minimize_scalar``) for the nonconvex proxes, at scales where a grid
can resolve the answer.
"""

from __future__ import annotations

import math
from fractions import Fraction

import numpy as np
import pytest
import torch
from hypothesis import assume, example, given, settings
from hypothesis import strategies as st
from scipy.optimize import minimize_scalar

from solvers import _arrays, _l1_search
from solvers.prox import (project_l1_ball, project_l1_inf_ball, prox_l0, prox_l1,
                          prox_transformed_l1)
from solvers.prox_matrix import project_nuclear_ball, project_sum_of_max_ball

EXTREME = settings(max_examples=60, deadline=None)

exponents = st.integers(-150, 150)
units = st.floats(-1.0, 1.0, allow_subnormal=False).filter(lambda v: v == 0 or abs(v) > 1e-3)
vectors = st.lists(units, min_size=1, max_size=12).map(np.array)


def l1_projection_exact(v, radius):
    """The projection onto the l1 ball in exact rational arithmetic (sort, Held-Wolfe-Crowder)."""
    magnitudes = [Fraction(abs(float(e))) for e in v]
    radius = Fraction(float(radius))
    if sum(magnitudes) <= radius:
        return [Fraction(float(e)) for e in v]
    ordered = sorted(magnitudes, reverse=True)
    partial, tau = Fraction(0), Fraction(0)
    for count, value in enumerate(ordered, start=1):
        partial += value
        level = (partial - radius) / count
        if value > level:
            tau = level
    return [math.copysign(1, e) * max(m - tau, Fraction(0)) for e, m in zip(v, magnitudes)]


def relative_error(actual, exact, scale):
    return max(abs(Fraction(float(a)) - e) for a, e in zip(actual, exact)) / Fraction(scale)


# ------------------------------------------------------------------------------------ l1 ball

@EXTREME
@given(vectors, exponents, exponents)
def test_l1_ball_matches_exact_arithmetic_at_any_scale(unit, data_exponent, radius_exponent):
    x = unit * 10.0 ** data_exponent
    radius = 0.7 * 10.0 ** radius_exponent
    out = project_l1_ball(x, radius=radius)
    assert np.all(np.isfinite(out))
    if np.abs(x).sum() <= radius:
        assert np.array_equal(out, x)
        return
    exact = l1_projection_exact(x, radius)
    # Every entry within 1e-12 of the radius (the answer's scale) of the exact projection ...
    assert relative_error(out, exact, radius) <= 1e-12
    # ... so the result lies on the boundary, and a second projection changes nothing.
    assert abs(np.abs(out).sum() - radius) <= 1e-12 * radius
    again = project_l1_ball(out, radius=radius)
    assert np.max(np.abs(again - out)) <= 1e-12 * radius


@EXTREME
@given(vectors, st.integers(-140, 140), exponents, st.floats(-1e-3, 1e-3))
def test_l1_ball_is_non_expansive_at_any_scale(unit, data_exponent, radius_exponent, shift):
    scale = 10.0 ** data_exponent
    x, y = unit * scale, (unit + shift * np.cos(np.arange(unit.size))) * scale
    radius = 0.7 * 10.0 ** radius_exponent
    moved = np.linalg.norm(project_l1_ball(x, radius=radius) - project_l1_ball(y, radius=radius))
    assert moved <= np.linalg.norm(x - y) * (1 + 1e-12) + 1e-12 * radius


@EXTREME
@given(vectors, exponents, st.integers(-100, 100))
def test_l1_ball_is_scale_covariant(unit, radius_exponent, scale_exponent):
    """P_{s r}(s x) = s P_r(x): the same answer in other units."""
    radius, scale = 0.7 * 10.0 ** radius_exponent, 10.0 ** scale_exponent
    assume(abs(radius_exponent + scale_exponent) <= 150)
    base = project_l1_ball(unit, radius=radius)
    scaled = project_l1_ball(unit * scale, radius=radius * scale)
    assert np.max(np.abs(scaled / scale - base)) <= 1e-12 * max(radius, np.abs(unit).max())


@pytest.mark.parametrize("radius", [1e16, 1e-150, 1e150])
def test_l1_ball_radius_far_below_the_data_lands_on_the_boundary(radius):
    """The issue's case: L1Ball(1e16) of data near 1e32 came back inside (0.9 r), and data 1e16
    times the radius or more came back as zeros."""
    rng = np.random.default_rng(0)
    for ratio in (1e8, 1e16, 1e30, 1e100):
        x = rng.standard_normal(50) * radius * ratio
        if not np.all(np.isfinite(x)):
            continue
        out = project_l1_ball(x, radius=radius)
        assert abs(np.abs(out).sum() - radius) <= 1e-12 * radius
        assert np.max(np.abs(out)) <= radius


@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_ball_extreme_ratio_in_torch_and_in_batches(dtype):
    rng = np.random.default_rng(1)
    W = rng.standard_normal((40, 6)) * np.array([1e-20, 1e-5, 1, 1e5, 1e20, 1e30])
    radius = 1e-10
    out = project_l1_inf_ball(torch.tensor(W, dtype=dtype), radius=radius)
    assert out.dtype == dtype and torch.isfinite(out).all()
    sums = out.double().abs().sum(dim=0).numpy()
    inside = np.abs(W.astype(np.float32 if dtype == torch.float32 else np.float64)).sum(axis=0) <= radius
    tol = 1e-6 if dtype == torch.float32 else 1e-12
    np.testing.assert_allclose(sums[~inside], radius, rtol=tol)
    for column in range(6):  # each column as its own vector gives the same answer
        alone = project_l1_ball(torch.tensor(W[:, column], dtype=dtype), radius=radius)
        torch.testing.assert_close(out[:, column], alone, rtol=tol, atol=0)


# ------------------------------------------------------------------------ matrix balls

matrices = st.integers(2, 5).flatmap(
    lambda rows: st.lists(st.lists(units, min_size=3, max_size=3), min_size=rows, max_size=rows)
).map(np.array)


@EXTREME
@given(matrices, exponents, exponents)
def test_sum_of_max_ball_at_any_scale(unit, data_exponent, radius_exponent):
    x = unit * 10.0 ** data_exponent
    radius = 0.7 * 10.0 ** radius_exponent
    out = project_sum_of_max_ball(x, radius=radius)
    assert np.all(np.isfinite(out))
    value = np.abs(out).max(axis=1).sum()
    if np.abs(x).max(axis=1).sum() <= radius:
        assert np.array_equal(out, x)
        return
    assert abs(value - radius) <= 1e-10 * radius
    # The answer clips each row at its cap: |out| <= |x| with the sign kept.
    assert np.all(np.abs(out) <= np.abs(x)) and np.all(out * x >= 0)
    again = project_sum_of_max_ball(out, radius=radius)
    assert np.max(np.abs(again - out)) <= 1e-10 * radius


@EXTREME
@given(matrices, exponents, exponents)
def test_nuclear_ball_at_any_scale(unit, data_exponent, radius_exponent):
    x = unit * 10.0 ** data_exponent
    radius = 0.7 * 10.0 ** radius_exponent
    out = project_nuclear_ball(x, radius=radius)
    assert np.all(np.isfinite(out))
    singular = np.linalg.svd(x, compute_uv=False)
    if singular.sum() <= radius:
        assert np.array_equal(out, x)
        return
    # The SVD is exact to ~1e-15 of the largest singular value only, so the tolerance is relative
    # to the data's size, not to the radius.
    assert np.linalg.svd(out, compute_uv=False).sum() <= radius + 1e-12 * max(radius, singular[0])
    assert np.linalg.svd(out, compute_uv=False).sum() >= radius - 1e-12 * max(radius, singular[0])


# ------------------------------------------------------------------------------- l1 and l0

@EXTREME
@given(vectors, exponents, exponents)
def test_soft_threshold_at_any_scale(unit, data_exponent, step_exponent):
    x = unit * 10.0 ** data_exponent
    step = 0.7 * 10.0 ** step_exponent
    naive = np.array([math.copysign(max(abs(e) - step, 0.0), e) for e in x])
    np.testing.assert_array_equal(prox_l1(x, step=step), naive)
    # float32 data: the float64 threshold, however far outside float32's range, is applied exactly.
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    assume(np.all(np.isfinite(x32)))
    naive32 = np.array([math.copysign(max(float(abs(e)) - step, 0.0), e) for e in x32],
                       dtype=np.float32)
    out32 = prox_l1(x32, step=step)
    assert out32.dtype == np.float32 and np.all(np.isfinite(out32))
    np.testing.assert_array_equal(out32, naive32)
    np.testing.assert_array_equal(prox_l1(torch.tensor(x32), step=step).numpy(), naive32)


@EXTREME
@given(vectors, exponents, st.integers(-300, 300))
def test_hard_threshold_at_any_scale(unit, data_exponent, step_exponent):
    x = unit * 10.0 ** data_exponent
    step = 0.7 * 10.0 ** step_exponent
    # 0.5 (z - x)^2 + step [z != 0]: keep x exactly when 0.5 x^2 > step, compared without squaring.
    keep = np.abs(x) > math.sqrt(2.0) * math.sqrt(step)
    np.testing.assert_array_equal(prox_l0(x, step=step), np.where(keep, x, 0.0))
    with np.errstate(over="ignore"):
        x32 = x.astype(np.float32)
    assume(np.all(np.isfinite(x32)))
    keep32 = np.abs(x32.astype(np.float64)) > math.sqrt(2.0) * math.sqrt(step)
    np.testing.assert_array_equal(prox_l0(x32, step=step), np.where(keep32, x32, np.float32(0)))


# -------------------------------------------------------------------------- transformed l1

def transformed_l1_objective(z, x, step, a):
    return 0.5 * (z - x) ** 2 + step * (a + 1) * abs(z) / (a + abs(z))


def brute_force_prox(x, step, a):
    """The minimizer over [0, |x|] (where the prox lies), by a fine grid then a bounded search."""
    magnitude = abs(x)
    if magnitude == 0:
        return 0.0
    grid = np.linspace(0.0, magnitude, 4001)
    values = transformed_l1_objective(grid, magnitude, step, a)
    best = int(np.argmin(values))
    low, high = grid[max(best - 1, 0)], grid[min(best + 1, grid.size - 1)]
    found = minimize_scalar(transformed_l1_objective, bounds=(low, high), method="bounded",
                            args=(magnitude, step, a), options={"xatol": 1e-14 * magnitude})
    candidates = [0.0, grid[best], found.x]
    return math.copysign(min(candidates, key=lambda z: transformed_l1_objective(z, magnitude, step, a)), x)


@EXTREME
@given(vectors, st.integers(-6, 6), st.integers(-6, 6), st.integers(-6, 6))
def test_transformed_l1_attains_the_brute_force_minimum(unit, data_exponent, step_exponent, a_exponent):
    x, step, a = unit * 10.0 ** data_exponent, 0.7 * 10.0 ** step_exponent, 0.9 * 10.0 ** a_exponent
    out = prox_transformed_l1(x, step=step, a=a)
    for value, z in zip(x, out):
        reference = brute_force_prox(value, step, a)
        scale = transformed_l1_objective(0.0, abs(value), step, a) + 1e-300
        # Compare objective values: at the threshold both 0 and the shrunk value minimize.
        assert transformed_l1_objective(abs(z), abs(value), step, a) <= (
            transformed_l1_objective(abs(reference), abs(value), step, a) + 1e-9 * scale)
        assert z * value >= 0 and abs(z) <= abs(value)


@EXTREME
@given(vectors, exponents, exponents, exponents)
@example(np.array([1.0, -0.5]), 150, 150, 150)  # NaN before: (a + |x|)^3 and lam a (a + 1) overflowed
def test_transformed_l1_is_finite_and_covariant_at_any_scale(unit, data_exponent, step_exponent,
                                                              a_exponent):
    """With x -> s x and a -> s a the prox scales by s when step -> s^2 step (a + 1) / (s a + 1):
    the same objective in other units. Checked from the 1e0 problem to the extreme one."""
    step, a = 0.7 * 10.0 ** step_exponent, 0.9 * 10.0 ** a_exponent
    x = unit * 10.0 ** data_exponent
    out = prox_transformed_l1(x, step=step, a=a)
    assert np.all(np.isfinite(out)) and np.all(np.abs(out) <= np.abs(x)) and np.all(out * x >= 0)
    scale = 10.0 ** data_exponent
    assume(abs(step_exponent - 2 * data_exponent) <= 300 and abs(a_exponent - data_exponent) <= 150)
    base_a = a / scale
    base_step = step / scale / scale * (a + 1) / (base_a + 1)
    assume(np.isfinite(base_step) and base_step > 1e-300)
    base = prox_transformed_l1(unit, step=base_step, a=base_a)
    # Near the threshold the prox jumps: the two problems may round to different sides of it.
    threshold = _threshold(base_step, base_a)
    clear = np.abs(np.abs(unit) - threshold) > 1e-9 * max(threshold, 1e-300)
    np.testing.assert_allclose(out[clear] / scale, base[clear], rtol=1e-9, atol=1e-12 * np.abs(unit).max())


def _threshold(step, a):
    """Zhang and Xin's threshold t (DESIGN section 6), without overflow."""
    if step <= a * (a / (2 * (a + 1))):
        return step * ((a + 1) / a)
    return math.sqrt(2 * step) * math.sqrt(a + 1) - a / 2


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transformed_l1_with_huge_a_is_the_soft_threshold(dtype):
    """The issue's case: a = 1e150 gave NaN or |x| unchanged. For a -> inf, rho_a -> |z|."""
    x = np.array([-3.0, -0.5, 0.0, 0.9, 1.5, 2.0, 1e10, 1e30], dtype=dtype)
    for a in (1e20, 1e150, 1e300):
        out = prox_transformed_l1(x, step=1.0, a=a)
        assert out.dtype == dtype
        np.testing.assert_allclose(out, np.sign(x) * np.maximum(np.abs(x) - 1.0, 0),
                                   rtol=1e-6 if dtype == np.float32 else 1e-12)
    # A huge strength with a huge a: everything up to about sqrt(2 step (a + 1)) is zeroed.
    np.testing.assert_array_equal(prox_transformed_l1(x, step=1e150, a=1e150), np.zeros_like(x))
    out = prox_transformed_l1(torch.tensor(x), step=1.0, a=1e150)
    assert out.dtype == torch.from_numpy(x).dtype and torch.isfinite(out).all()


def test_transformed_l1_with_tiny_a_is_the_hard_threshold():
    """For a -> 0, rho_a -> [z != 0]: the prox keeps x beyond sqrt(2 step) (DESIGN's second t)."""
    x = np.array([-3.0, -1.0, 0.5, 1.5, 1e10])
    for a in (1e-20, 1e-150, 1e-300):
        out = prox_transformed_l1(x, step=1.0, a=a)
        np.testing.assert_allclose(out, np.where(np.abs(x) > math.sqrt(2), x, 0.0), rtol=1e-12)


@pytest.mark.parametrize("distribution", ["standard_normal", "exponential", "standard_cauchy"])
@pytest.mark.parametrize("n", [2000, 50_000])
@pytest.mark.parametrize("fraction", [1e-4, 0.01, 0.3, 0.9])
def test_l1_threshold_is_the_closed_formula_on_the_exact_active_set(distribution, n, fraction):
    """The search identifies the active set K exactly, and the threshold is (sum_K v - r) / |K|
    evaluated in float64: within a few units of eps sum_K v / |K| of the exact rational threshold
    (the float64 sum of K limits it; where the threshold is small next to the kept entries this is
    several units in its last place)."""
    rng = np.random.default_rng(n + int(fraction * 1e4))
    x = getattr(rng, distribution)(size=n)
    magnitudes = np.abs(x)
    radius = float(fraction * magnitudes.sum())
    ordered = np.sort(magnitudes)[::-1]
    partial = np.cumsum(ordered)
    count = int(np.count_nonzero(ordered * np.arange(1, n + 1) > partial - radius))
    total = sum(Fraction(float(v)) for v in ordered[:count])
    exact = (total - Fraction(radius)) / count
    # The float64 count above is right: exact arithmetic agrees on both sides of the cut.
    assert Fraction(float(ordered[count - 1])) > exact
    assert count == n or Fraction(float(ordered[count])) <= exact
    out = project_l1_ball(x, radius=radius)
    np.testing.assert_array_equal(out != 0, magnitudes > exact)
    tau, _, _ = _l1_search.thresholds(x.reshape(1, -1, 1), magnitudes.reshape(1, -1, 1).copy(), radius)
    error = abs(Fraction(float(tau.reshape(()))) - exact)
    assert error <= 8 * np.finfo(float).eps * total / count + Fraction(math.ulp(float(exact)))


def sum_of_max_by_bisection(x, radius):
    """An independent reference: bisection on the common level ``theta``; each row's cap is the
    l1-ball threshold of the row for the radius ``theta`` (Held-Wolfe-Crowder on the sorted row)."""
    ordered = -np.sort(-np.abs(x), axis=1)
    partial = np.cumsum(ordered, axis=1)
    positions = np.arange(1, x.shape[1] + 1)

    def caps(theta):
        count = np.maximum(np.sum(ordered * positions > partial - theta, axis=1), 1)
        mu = (partial[np.arange(x.shape[0]), count - 1] - theta) / count
        return np.where(partial[:, -1] > theta, mu, 0.0)

    low, high = 0.0, float(partial[:, -1].max())
    for _ in range(200):
        middle = 0.5 * (low + high)
        low, high = (middle, high) if caps(middle).sum() > radius else (low, middle)
    mu = caps(high)[:, None]
    return np.sign(x) * np.minimum(np.abs(x), mu)


@pytest.mark.parametrize("distribution, shape", [("standard_normal", (80, 50)),
                                                 ("standard_cauchy", (80, 50)),
                                                 ("standard_normal", (700, 30))])
@pytest.mark.parametrize("fraction", [1e-3, 0.02, 0.2, 0.6])
def test_sum_of_max_ball_with_pruned_rows_and_a_started_newton_matches_bisection(distribution, shape,
                                                                                 fraction, monkeypatch):
    """Small radii zero most rows before any sort (the norms' bound) and Newton starts from the
    sorted rows' bound: the answer is still the projection, in numpy and in the torch form."""
    x = getattr(np.random.default_rng(7), distribution)(size=shape)
    radius = fraction * float(np.abs(x).max(axis=1).sum())
    out = project_sum_of_max_ball(x, radius=radius)
    reference = sum_of_max_by_bisection(x, radius)
    np.testing.assert_allclose(out, reference, rtol=0, atol=1e-9 * np.abs(x).max())
    assert abs(np.abs(out).max(axis=1).sum() - radius) <= 1e-12 * radius
    tensor = project_sum_of_max_ball(torch.tensor(x), radius=radius)
    np.testing.assert_array_equal(tensor.numpy(), out)
    monkeypatch.setattr(_arrays, "HOST_NUMPY", False)
    torch_form = project_sum_of_max_ball(torch.tensor(x), radius=radius).numpy()
    np.testing.assert_allclose(torch_form, reference, rtol=0, atol=1e-9 * np.abs(x).max())
