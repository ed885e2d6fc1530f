"""The torch form of the kernels (what a GPU runs) on the CPU, against the numpy form and references.

CPU tensors normally go through the numpy form (``solvers._arrays.HOST_NUMPY``); these tests switch
that off, so that every branch of the torch form runs here: sparse and dense outputs, rows inside
the ball, missed brackets and their redo, far thresholds, float32 of large magnitude, ties and zero
rows of the sum-of-max ball, and the group and l1-plus-set proxes. The same checks run on a GPU when
one is present.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from hypothesis import given, settings
from hypothesis import strategies as st

from solvers import _arrays, _l1_search
from solvers.prox import project_l1_ball, project_l1_inf_ball, prox_group_l1
from solvers.prox_constrained import prox_l1_in_l1_inf_ball, prox_l1_in_sum_of_max_ball
from solvers.prox_matrix import project_sum_of_max_ball

from .test_prox import (adversarial, hidden_peaks, l1_reference, sampling_stride,
                         sum_of_max_reference)
from .test_prox_extreme import exponents, matrices, vectors

DEVICES = ["cpu"] + (["cuda"] if torch.cuda.is_available() else [])


@pytest.fixture(autouse=True)
def torch_form(monkeypatch):
    monkeypatch.setattr(_arrays, "HOST_NUMPY", False)


def on(device, x, dtype=torch.float64):
    return torch.tensor(x, dtype=dtype, device=device)


def back(tensor):
    return tensor.detach().cpu().double().numpy()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("radius", [1e-3, 1.0, 100.0, 3000.0, 7900.0, 1e5])
def test_l1_vector_matches_the_sort_reference(device, radius):
    """From a few survivors (sparse output) to most of them (dense), and inside (1e5)."""
    x = np.random.default_rng(0).standard_normal(10_000)
    out = project_l1_ball(on(device, x), radius=radius)
    assert out.device.type == device
    np.testing.assert_allclose(back(out), l1_reference(x, radius), rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("axis", [0, 1, 2])
def test_l1_batches_with_inside_rows_match_numpy(device, axis):
    x = np.random.default_rng(1).standard_normal((4, 300, 6))
    x[1, :, 2] *= 1e-4
    x[0, 0, 0] = -0.0
    x = np.moveaxis(x, 1, axis)
    out = project_l1_ball(on(device, x), radius=2.0, axis=axis)
    np.testing.assert_allclose(back(out), project_l1_ball(x, radius=2.0, axis=axis), rtol=0, atol=1e-14)
    inside = np.ascontiguousarray(np.moveaxis(x, axis, 1)[1, :, 2])
    assert back(torch.movedim(out, axis, 1)[1, :, 2]).tobytes() == inside.tobytes()


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("rows, n", [(1, 200_000), (3, 50_000)])
@pytest.mark.parametrize("layout, radius", [(adversarial, 5.0), (hidden_peaks, 50.0)],
                         ids=["bracket above", "bracket below"])
def test_l1_redo_after_a_missed_bracket(monkeypatch, device, rows, n, layout, radius):
    redone = []
    redo = _l1_search._redo
    monkeypatch.setattr(_l1_search, "_redo", lambda *args: redone.append(True) or redo(*args))
    batch = np.stack([layout(n, sampling_stride(rows, n)) * (-1) ** row for row in range(rows)])
    x = batch if rows > 1 else batch[0]
    out = back(project_l1_ball(on(device, x), radius=radius, axis=1 if rows > 1 else None))
    assert redone
    for row, result in zip(batch, out.reshape(rows, n)):
        np.testing.assert_allclose(result, l1_reference(row, radius), atol=1e-11)


@pytest.mark.parametrize("device", DEVICES)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_l1_far_thresholds_land_on_the_boundary(device, dtype):
    W = np.random.default_rng(2).standard_normal((40, 6)) * np.array([1e-20, 1e-5, 1, 1e5, 1e20, 1e30])
    out = project_l1_inf_ball(on(device, W, dtype), radius=1e-10)
    assert out.dtype == dtype
    sums = back(out.abs()).sum(axis=0)
    inside = np.abs(W.astype(np.float32 if dtype == torch.float32 else np.float64)).sum(axis=0) <= 1e-10
    np.testing.assert_allclose(sums[~inside], 1e-10, rtol=1e-6 if dtype == torch.float32 else 1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_l1_float32_of_large_magnitude(device):
    rng = np.random.default_rng(3)
    x = (np.float32(1e9) + np.float32(64) * rng.integers(0, 40, 5000).astype(np.float32))
    x[rng.random(5000) < 0.5] *= -1
    out = project_l1_ball(on(device, x, torch.float32), radius=100.0)
    assert out.dtype == torch.float32
    np.testing.assert_allclose(back(out), l1_reference(x.astype(np.float64), 100.0), rtol=1e-6, atol=1e-4)


@pytest.mark.parametrize("device", DEVICES)
def test_sum_of_max_matches_the_bisection_reference(device):
    rng = np.random.default_rng(4)
    W = np.round(rng.standard_normal((9, 5)), 1)
    W[3] = 0.0
    for radius in (0.05, 1.0, 4.0):
        np.testing.assert_allclose(back(project_sum_of_max_ball(on(device, W), radius=radius)),
                                   sum_of_max_reference(W, radius), atol=1e-9)
    large = rng.standard_normal((200, 150))
    np.testing.assert_allclose(back(project_sum_of_max_ball(on(device, large), radius=20.0)),
                               project_sum_of_max_ball(large, radius=20.0), rtol=0, atol=1e-12)


@pytest.mark.parametrize("device", DEVICES)
def test_group_and_constrained_proxes_match_numpy(device):
    W = np.random.default_rng(5).standard_normal((30, 8))
    weights = np.linspace(0.1, 2.0, 8)[None, :]
    for kernel in (lambda x: prox_group_l1(x, step=weights if isinstance(x, np.ndarray) else
                                           torch.tensor(weights, device=device), axis=0),
                   lambda x: prox_group_l1(x, step=1.5, axis=1),
                   lambda x: prox_l1_in_l1_inf_ball(x, step=0.2, radius=3.0),
                   lambda x: prox_l1_in_sum_of_max_ball(x, step=0.2, radius=3.0)):
        np.testing.assert_allclose(back(kernel(on(device, W))), kernel(W), rtol=0, atol=1e-13)


@pytest.mark.parametrize("kernel, points, tolerance", [
    (project_l1_ball, vectors, 1e-12), (project_sum_of_max_ball, matrices, 1e-10)],
    ids=["l1 ball", "sum-of-max ball"])
@settings(max_examples=40, deadline=None)
@given(data=st.data())
def test_torch_form_at_any_scale(kernel, points, tolerance, data):
    """Data and radii from 1e-150 to 1e150: the torch form agrees with the numpy form."""
    x = data.draw(points) * 10.0 ** data.draw(exponents)
    radius = 0.7 * 10.0 ** data.draw(exponents)
    out = back(kernel(torch.tensor(x), radius=radius))
    assert np.max(np.abs(out - kernel(x, radius=radius))) <= tolerance * radius
