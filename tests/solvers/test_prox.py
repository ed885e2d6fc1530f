"""Projection and prox kernels against three oracles: a naive reference, CVXPY, and a certificate.

Norm balls share one battery (CVXPY projection, dual-norm identity, hypothesis properties, edge
cases, torch in/out); each kernel also meets an independent naive implementation, and the
nonconvex proxes meet a brute-force grid minimum.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra.numpy import arrays

from solvers import _l1_search
from solvers.prox import (prox_l0, prox_l1, prox_transformed_l1, project_l1_ball, project_l1_inf_ball,
                          project_sparse, project_subspace)
from solvers.prox_matrix import project_low_rank, project_nuclear_ball, project_sum_of_max_ball

FAST = settings(max_examples=25, deadline=None)


# ----------------------------------------------------------------------------- naive references

def l1_threshold_reference(magnitudes, radius):
    """The level tau with sum_i max(m_i - tau, 0) = radius, by sorting (Held, Wolfe and Crowder)."""
    ordered = np.sort(magnitudes)[::-1]
    partial = np.cumsum(ordered)
    count = np.count_nonzero(ordered * np.arange(1, ordered.size + 1) > partial - radius)
    return (partial[count - 1] - radius) / count


def l1_reference(v, radius):
    """Sort-based projection of one vector onto the l1 ball, in float64."""
    v = np.asarray(v, dtype=np.float64)
    if np.abs(v).sum() <= radius:
        return v.copy()
    return np.sign(v) * np.maximum(np.abs(v) - l1_threshold_reference(np.abs(v), radius), 0)


def sum_of_max_reference(W, radius):
    """Bisection on the common level theta that every active row loses; each row's cap mu solves
    sum_j max(|w_j| - mu, 0) = theta, which is an l1 threshold (of radius theta)."""
    magnitudes = np.abs(W)
    if magnitudes.max(axis=1).sum() <= radius:
        return W.copy()

    def caps(theta):
        return np.array([l1_threshold_reference(row, theta) if row.sum() > theta else 0.0
                         for row in magnitudes])

    low, high = 0.0, magnitudes.sum(axis=1).max()
    for _ in range(100):
        theta = (low + high) / 2
        low, high = (theta, high) if caps(theta).sum() > radius else (low, theta)
    return np.sign(W) * np.minimum(magnitudes, caps((low + high) / 2)[:, None])


def sparse_reference(v, k):
    """Keep the k largest magnitudes; a stable sort makes the lowest index win ties."""
    keep = np.argsort(-np.abs(v), kind="stable")[:k]
    out = np.zeros_like(v)
    out[keep] = v[keep]
    return out


def cvxpy_projection(x, constraint):
    """argmin ||Z - x||^2 subject to constraint(Z), by Clarabel."""
    Z = cp.Variable(x.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(Z - x)), constraint(Z)).solve(solver="CLARABEL")
    return Z.value


# ----------------------------------------------------------------------------- the norm-ball battery

class Ball:
    def __init__(self, name, project, constraint, norm, dual_norm, shape):
        self.name, self.project, self.constraint = name, project, constraint
        self.norm, self.dual_norm, self.shape = norm, dual_norm, shape

    def __repr__(self):
        return self.name


BALLS = [
    Ball("l1", lambda x, r: project_l1_ball(x, radius=r),
         lambda Z, r: [cp.sum(cp.abs(Z)) <= r],
         lambda x: np.abs(x).sum(), lambda x: np.abs(x).max(), (9,)),
    Ball("l1 per column", lambda x, r: project_l1_inf_ball(x, radius=r),
         lambda Z, r: [cp.sum(cp.abs(Z), axis=0) <= r],
         lambda x: np.abs(x).sum(axis=0).max(), lambda x: np.abs(x).max(axis=0).sum(), (6, 4)),
    Ball("sum of max", lambda x, r: project_sum_of_max_ball(x, radius=r),
         lambda Z, r: [cp.sum(cp.max(cp.abs(Z), axis=1)) <= r],
         lambda x: np.abs(x).max(axis=1).sum(), lambda x: np.abs(x).sum(axis=1).max(), (5, 4)),
    Ball("nuclear", lambda x, r: project_nuclear_ball(x, radius=r),
         lambda Z, r: [cp.normNuc(Z) <= r],
         lambda x: np.linalg.svd(x, compute_uv=False).sum(), lambda x: np.linalg.norm(x, 2), (5, 3)),
]


def outside_point(ball, seed):
    x = np.random.default_rng(seed).standard_normal(ball.shape)
    return x, 0.4 * ball.norm(x)


@pytest.mark.parametrize("ball", BALLS, ids=repr)
@pytest.mark.parametrize("seed", [0, 1])
def test_ball_matches_cvxpy(ball, seed):
    x, radius = outside_point(ball, seed)
    expected = cvxpy_projection(x, lambda Z: ball.constraint(Z, radius))
    np.testing.assert_allclose(ball.project(x, radius), expected, atol=2e-5)


@pytest.mark.parametrize("ball", BALLS, ids=repr)
@pytest.mark.parametrize("seed", [0, 1, 2])
def test_ball_dual_norm_identity(ball, seed):
    """For x outside, r ||x - P||_* = <x - P, P> and ||P|| = r (P is on the boundary)."""
    x, radius = outside_point(ball, seed)
    projected = ball.project(x, radius)
    residual = x - projected
    assert ball.norm(projected) == pytest.approx(radius, rel=1e-10)
    assert radius * ball.dual_norm(residual) == pytest.approx(np.sum(residual * projected), rel=1e-9)


@pytest.mark.parametrize("ball", BALLS, ids=repr)
def test_ball_inside_is_returned_bitwise(ball):
    x = np.random.default_rng(3).standard_normal(ball.shape)
    x.flat[0] = -0.0
    out = ball.project(x, ball.norm(x) * 1.5)
    assert out is not x and out.tobytes() == x.tobytes()


@pytest.mark.parametrize("ball", BALLS, ids=repr)
def test_ball_radius_zero_gives_zeros(ball):
    x = np.random.default_rng(4).standard_normal(ball.shape)
    assert not ball.project(x, 0.0).any()


@pytest.mark.parametrize("ball", BALLS, ids=repr)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_ball_torch_in_torch_out(ball, dtype):
    x, radius = outside_point(ball, 5)
    out = ball.project(torch.tensor(x, dtype=dtype), radius)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device.type == "cpu"
    np.testing.assert_allclose(out.double().numpy(), ball.project(x, radius),
                               atol=1e-5 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("ball", BALLS, ids=repr)
def test_ball_float32_stays_float32(ball):
    x, radius = outside_point(ball, 6)
    out = ball.project(x.astype(np.float32), radius)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, ball.project(x, radius), atol=1e-5)


@pytest.mark.parametrize("ball", BALLS, ids=repr)
@FAST
@given(data=st.data())
def test_ball_properties(ball, data):
    """Contained, idempotent and non-expansive, on arbitrary points (ties and zeros included)."""
    elements = st.floats(-10, 10, allow_nan=False).map(lambda v: round(v, 1))
    x = data.draw(arrays(np.float64, ball.shape, elements=elements))
    y = data.draw(arrays(np.float64, ball.shape, elements=elements))
    radius = data.draw(st.floats(0.0, 20.0))
    px, py = ball.project(x, radius), ball.project(y, radius)
    assert ball.norm(px) <= radius * (1 + 1e-9) + 1e-12
    np.testing.assert_allclose(ball.project(px, radius), px, atol=1e-9)
    assert np.linalg.norm(px - py) <= np.linalg.norm(x - y) * (1 + 1e-9) + 1e-9


# ----------------------------------------------------------------------------- l1 ball in detail

@pytest.mark.parametrize("radius", [1e-3, 1.0, 30.0, 2000.0, 7000.0])
def test_l1_long_vectors_match_sort_reference(radius):
    """Long enough for the sampled start, the sparse output (small radii) and the dense phase (large)."""
    x = np.random.default_rng(7).standard_normal(10_000)
    np.testing.assert_allclose(project_l1_ball(x, radius=radius), l1_reference(x, radius), atol=1e-11)


def adversarial(n, stride):
    """Large entries exactly where a strided sample looks, so that the sampled start overshoots."""
    x = np.zeros(n)
    x[::stride] = 10.0 + np.linspace(0, 1, len(x[::stride]))
    return x


def sampling_stride(rows, n):
    """The stride of the kernel's sample along rows of length n, for this many rows."""
    return n // min(n, max(_l1_search.SAMPLE_PER_ROW, _l1_search.SAMPLE_TOTAL // rows))


@pytest.mark.parametrize("rows, n", [(1, 200_000), (3, 50_000)])
def test_l1_recovers_when_the_sampled_bracket_misses(monkeypatch, rows, n):
    """Every sampled entry is large, so the sampled bracket lies above the threshold; the redo must
    run and be exact."""
    redone = []
    redo = _l1_search._redo

    def spy(*args):
        redone.append(True)
        return redo(*args)

    monkeypatch.setattr(_l1_search, "_redo", spy)
    stride = sampling_stride(rows, n)
    batch = np.stack([adversarial(n, stride) * (-1) ** row for row in range(rows)])
    out = project_l1_ball(batch if rows > 1 else batch[0], radius=5.0, axis=1 if rows > 1 else None)
    assert any(redone)
    for row, result in zip(batch, out.reshape(rows, n)):
        np.testing.assert_allclose(result, l1_reference(row, 5.0), atol=1e-11)


def hidden_peaks(n, stride):
    """Small entries where a strided sample looks and large ones between: the sampled bracket lies
    below the threshold."""
    x = np.zeros(n)
    x[::stride] = 0.1
    x[1::stride] = 10.0 + np.linspace(0, 1, len(x[1::stride]))
    return x


@pytest.mark.parametrize("rows, n", [(1, 200_000), (3, 50_000)])
def test_l1_recovers_when_the_sampled_bracket_lies_below(monkeypatch, rows, n):
    redone = []
    redo = _l1_search._redo
    monkeypatch.setattr(_l1_search, "_redo", lambda *args: redone.append(True) or redo(*args))
    batch = np.stack([hidden_peaks(n, sampling_stride(rows, n)) for _ in range(rows)])
    out = project_l1_ball(batch if rows > 1 else batch[0], radius=50.0, axis=1 if rows > 1 else None)
    assert redone
    for row, result in zip(batch, out.reshape(rows, n)):
        np.testing.assert_allclose(result, l1_reference(row, 50.0), atol=1e-11)


def test_l1_inside_with_a_misleading_sample_is_still_returned_bitwise():
    """The sample sees only the large entries, so it guesses a positive threshold for a point inside."""
    x = adversarial(200_000, sampling_stride(1, 200_000))
    out = project_l1_ball(x, radius=np.abs(x).sum() * 1.0001)
    assert out.tobytes() == x.tobytes()


@pytest.mark.parametrize("axis", [0, 1, 2, -1])
def test_l1_batched_axis_matches_a_loop(axis):
    x = np.random.default_rng(8).standard_normal((3, 400, 5))
    x = np.moveaxis(x, 1, axis)
    radius = 4.0
    out = project_l1_ball(x, radius=radius, axis=axis)
    moved, moved_out = np.moveaxis(x, axis, -1), np.moveaxis(out, axis, -1)
    for index in np.ndindex(moved.shape[:-1]):
        np.testing.assert_allclose(moved_out[index], l1_reference(moved[index], radius), atol=1e-11)


def test_l1_any_memory_layout():
    x = np.asfortranarray(np.random.default_rng(16).standard_normal((3, 400, 5)))
    expected = project_l1_ball(np.ascontiguousarray(x), radius=1.0, axis=1)
    np.testing.assert_array_equal(project_l1_ball(x, radius=1.0, axis=1), expected)
    # torch sums the rows in another order than numpy: equal up to the rounding of those sums.
    permuted = torch.tensor(np.ascontiguousarray(x.transpose(2, 1, 0))).permute(2, 1, 0)
    np.testing.assert_allclose(project_l1_ball(permuted, radius=1.0, axis=1).numpy(), expected,
                               rtol=0, atol=1e-15)
    strided = x[:, ::2]
    np.testing.assert_allclose(project_l1_ball(strided, radius=1.0),
                               l1_reference(strided.ravel(), 1.0).reshape(strided.shape), atol=1e-12)


def test_l1_batch_mixing_inside_and_outside_rows():
    rng = np.random.default_rng(9)
    W = rng.standard_normal((50, 6))
    W[:, 2] *= 1e-3
    W[0, 2] = -0.0
    out = project_l1_ball(W, radius=1.0, axis=0)
    assert out[:, 2].tobytes() == W[:, 2].tobytes()
    for j in range(6):
        np.testing.assert_allclose(out[:, j], l1_reference(W[:, j], 1.0), atol=1e-12)


def test_l1_ties():
    x = np.array([3.0, -3.0, 3.0, 1.0, -1.0, 0.0, 3.0])
    np.testing.assert_allclose(project_l1_ball(x, radius=2.0), l1_reference(x, 2.0), atol=1e-15)
    assert project_l1_ball(np.full(1000, 2.0), radius=10.0) == pytest.approx(np.full(1000, 0.01))


@pytest.mark.parametrize("n", [10, 5000])
def test_l1_float32_of_large_magnitude_stays_exact(n):
    """Entries near 1e9 in float32 (spacing 64): the small differences must not be rounded to 64."""
    rng = np.random.default_rng(10)
    x = (np.float32(1e9) + np.float32(64) * rng.integers(0, 40, n).astype(np.float32)).astype(np.float32)
    x[rng.random(n) < 0.5] *= -1
    reference = l1_reference(x.astype(np.float64), 100.0)
    out = project_l1_ball(x, radius=100.0)
    assert out.dtype == np.float32
    np.testing.assert_allclose(out, reference, rtol=1e-6, atol=1e-4)
    assert np.abs(out.astype(np.float64)).sum() == pytest.approx(100.0, rel=1e-6)


def test_l1_float32_columns_of_large_magnitude():
    rng = np.random.default_rng(11)
    W = np.float32(1e9) + np.float32(64) * rng.integers(0, 40, (600, 3)).astype(np.float32)
    out = project_l1_inf_ball(W, radius=50.0)
    for j in range(3):
        np.testing.assert_allclose(out[:, j], l1_reference(W[:, j].astype(np.float64), 50.0),
                                   rtol=1e-6, atol=1e-4)


def test_l1_edge_shapes_and_bad_parameters():
    assert project_l1_ball(np.zeros(0), radius=1.0).shape == (0,)
    assert project_l1_ball(np.array(5.0), radius=2.0) == pytest.approx(2.0)
    assert project_l1_ball([1, -3], radius=1.0).dtype == np.float64
    tiny = project_l1_ball(np.array([0.0, 0.0, 1.0]), radius=1e-300)
    assert np.abs(tiny).sum() <= 1e-300
    for radius in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="radius"):
            project_l1_ball(np.ones(3), radius=radius)
    with pytest.raises(ValueError, match="axis"):
        project_l1_ball(np.ones(3), radius=1.0, axis=1)


def test_cpu_tensors_of_every_kind_take_the_numpy_form():
    """Lazily negated, integer and half tensors: the numpy form where numpy can read the tensor,
    the torch form otherwise; the same answers, of the tensor's own kind."""
    x = torch.tensor([3.0, -1.0, 0.5, 2.0], dtype=torch.float64)
    expected = torch.tensor(l1_reference(-x.numpy(), 2.0))
    torch.testing.assert_close(project_l1_ball(torch._neg_view(x), radius=2.0), expected)
    integer = project_l1_ball(torch.tensor([3, -1, 0, 2]), radius=2.0)
    assert integer.dtype == torch.get_default_dtype()
    half = project_l1_ball(x.to(torch.float16), radius=2.0)
    assert half.dtype == torch.float16
    torch.testing.assert_close(half.double(), -expected, atol=2e-3, rtol=0)


def test_l1_torch_keeps_gradients_out():
    x = torch.randn(20, requires_grad=True)
    out = project_l1_ball(x, radius=1.0)
    assert not out.requires_grad and out.dtype == x.dtype


# ----------------------------------------------------------------------------- other sets

def test_sum_of_max_matches_bisection_reference():
    rng = np.random.default_rng(12)
    for W, radius in [(rng.standard_normal((6, 5)), 2.0), (np.round(rng.standard_normal((7, 4))), 3.0),
                      (rng.standard_normal((3, 8)), 0.05)]:
        np.testing.assert_allclose(project_sum_of_max_ball(W, radius=radius),
                                   sum_of_max_reference(W, radius), atol=1e-9)


def test_sum_of_max_zero_rows_and_bad_shape():
    W = np.zeros((4, 3))
    W[1] = [5.0, -1.0, 0.5]
    np.testing.assert_allclose(project_sum_of_max_ball(W, radius=2.0), sum_of_max_reference(W, 2.0))
    with pytest.raises(ValueError, match="matrix"):
        project_sum_of_max_ball(np.ones(3), radius=1.0)


def test_nuclear_matches_svd_reference_and_batches():
    rng = np.random.default_rng(13)
    batch = rng.standard_normal((3, 5, 4))
    batch[1] *= 1e-3
    out = project_nuclear_ball(batch, radius=1.5)
    for W, P in zip(batch, out):
        U, s, Vt = np.linalg.svd(W, full_matrices=False)
        np.testing.assert_allclose(P, (U * l1_reference(s, 1.5)) @ Vt, atol=1e-12)
    assert out[1].tobytes() == batch[1].tobytes()


@pytest.mark.parametrize("k", [0, 1, 3, 5, 9, 12])
def test_sparse_matches_stable_sort_reference_with_ties(k):
    x = np.array([1.0, -2.0, 2.0, 0.0, -1.0, 2.0, 0.5, -2.0, 1.0])
    np.testing.assert_array_equal(project_sparse(x, k=k), sparse_reference(x, k) if k < 9 else x)


@FAST
@given(arrays(np.float64, (4, 6), elements=st.integers(-3, 3).map(float)), st.integers(0, 7))
def test_sparse_properties_per_row(x, k):
    out = project_sparse(x, k=k, axis=1)
    for row, result in zip(x, out):
        np.testing.assert_array_equal(result, sparse_reference(row, min(k, 6)))
    np.testing.assert_array_equal(project_sparse(out, k=k, axis=1), out)


def test_sparse_torch_and_bad_k():
    x = torch.tensor([[3.0, -1.0], [0.5, -4.0]], dtype=torch.float32)
    out = project_sparse(x, k=2)
    assert out.dtype == torch.float32 and out.tolist() == [[3.0, 0.0], [0.0, -4.0]]
    for k in (-1, 1.5, True):
        with pytest.raises(ValueError, match="k"):
            project_sparse(np.ones(3), k=k)


@pytest.mark.parametrize("rank", [0, 1, 2, 3, 5])
def test_low_rank_is_the_eckart_young_truncation(rank):
    W = np.random.default_rng(14).standard_normal((5, 3))
    out = project_low_rank(W, rank=rank)
    singular = np.linalg.svd(W, compute_uv=False)
    assert np.linalg.matrix_rank(out) == min(rank, 3)
    assert np.linalg.norm(W - out) == pytest.approx(np.sqrt(np.sum(singular[rank:] ** 2)), abs=1e-12)
    np.testing.assert_allclose(project_low_rank(out, rank=rank), out, atol=1e-12)


def test_subspace_matches_least_squares_and_is_idempotent():
    rng = np.random.default_rng(15)
    spanning = rng.standard_normal((7, 3))
    basis = np.linalg.qr(spanning)[0]
    x = rng.standard_normal((4, 7))
    coefficients = np.linalg.lstsq(spanning, x.T, rcond=None)[0]
    out = project_subspace(x, basis=basis)
    np.testing.assert_allclose(out, (spanning @ coefficients).T, atol=1e-12)
    np.testing.assert_allclose(project_subspace(out, basis=basis), out, atol=1e-12)
    assert isinstance(project_subspace(torch.tensor(x), basis=basis), torch.Tensor)


# ----------------------------------------------------------------------------- proxes

GRID = np.linspace(-8.0, 8.0, 160_001)


def grid_minimum(x, step, penalty):
    objective = 0.5 * (GRID - x) ** 2 + step * penalty(GRID)
    return objective.min()


PENALTIES = {
    "l1": (lambda x, step: prox_l1(x, step=step), lambda z: np.abs(z)),
    "l0": (lambda x, step: prox_l0(x, step=step), lambda z: (z != 0).astype(float)),
    "transformed l1, a=0.2": (lambda x, step: prox_transformed_l1(x, step=step, a=0.2),
                              lambda z: 1.2 * np.abs(z) / (0.2 + np.abs(z))),
    "transformed l1, a=1": (lambda x, step: prox_transformed_l1(x, step=step, a=1.0),
                            lambda z: 2.0 * np.abs(z) / (1.0 + np.abs(z))),
    "transformed l1, a=20": (lambda x, step: prox_transformed_l1(x, step=step, a=20.0),
                             lambda z: 21.0 * np.abs(z) / (20.0 + np.abs(z))),
}


@pytest.mark.parametrize("name", PENALTIES)
@pytest.mark.parametrize("step", [0.05, 0.5, 2.0])
def test_prox_attains_the_grid_minimum(name, step):
    """Both regimes of the transformed-l1 threshold t are covered by the steps and shapes above."""
    prox, penalty = PENALTIES[name]
    xs = np.linspace(-5.0, 5.0, 37)
    zs = prox(xs, step)
    for x, z in zip(xs, zs):
        value = 0.5 * (z - x) ** 2 + step * penalty(np.array(z))
        assert value <= grid_minimum(x, step, penalty) + 1e-7, (x, z)


@pytest.mark.parametrize("name", PENALTIES)
def test_prox_float32_and_torch(name):
    prox, _ = PENALTIES[name]
    xs = np.linspace(-5.0, 5.0, 41)
    reference = prox(xs, 0.7)
    out32 = prox(xs.astype(np.float32), 0.7)
    assert out32.dtype == np.float32
    np.testing.assert_allclose(out32, reference, atol=1e-5)
    out_tensor = prox(torch.tensor(xs, dtype=torch.float32), 0.7)
    assert isinstance(out_tensor, torch.Tensor) and out_tensor.dtype == torch.float32
    np.testing.assert_allclose(out_tensor.numpy(), out32, atol=1e-6)


def test_transformed_l1_large_a_in_float32_is_close_to_soft_threshold():
    """For a -> inf, rho_a -> |z|: the float32 evaluation must not cancel to garbage."""
    xs = np.linspace(-3.0, 3.0, 25, dtype=np.float32)
    out = prox_transformed_l1(xs, step=0.5, a=1e6)
    np.testing.assert_allclose(out, np.sign(xs) * np.maximum(np.abs(xs) - 0.5, 0), atol=1e-5)


def test_prox_thresholds_are_exact():
    assert prox_l0(np.array([1.0, -1.0000001]), step=0.5).tolist() == [0.0, -1.0000001]
    assert prox_l1(np.array([0.5, 0.6]), step=0.5)[0] == 0.0
    a, step = 1.0, 0.1  # step <= a^2 / (2 (a + 1)): t = step (a + 1) / a = 0.2
    assert prox_transformed_l1(np.array([0.2, 0.2001]), step=step, a=a)[0] == 0.0
    assert prox_transformed_l1(np.array([0.2001]), step=step, a=a)[0] > 0


def test_prox_bad_parameters():
    for bad in (-1.0, float("nan"), float("inf")):
        with pytest.raises(ValueError, match="step"):
            prox_l1(np.ones(2), step=bad)
    with pytest.raises(ValueError, match="a must"):
        prox_transformed_l1(np.ones(2), step=1.0, a=0.0)
    assert prox_transformed_l1(np.array([0.3]), step=0.0, a=1.0)[0] == 0.3


def test_docstring_examples_of_the_constrained_proxes_run():
    import doctest

    from solvers import prox_constrained

    failures, tried = doctest.testmod(prox_constrained)
    assert tried > 0 and failures == 0
