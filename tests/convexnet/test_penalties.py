"""convexnet.penalties: value, prox (against a brute-force grid and, for L1, CVXPY), the CVXPY
lowering or its refusal, torch in/out, and bad input."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from convexnet import penalties
from convexnet.errors import InvalidInputError

PENALTIES = [
    (penalties.L1(0.7), lambda z: np.abs(z)),
    (penalties.L0(0.7), lambda z: (z != 0).astype(float)),
    (penalties.TransformedL1(0.7, a=0.5), lambda z: 1.5 * np.abs(z) / (0.5 + np.abs(z))),
    (penalties.TransformedL1(0.7, a=5.0), lambda z: 6.0 * np.abs(z) / (5.0 + np.abs(z))),
]
IDS = [repr(case[0]) for case in PENALTIES]
GRID = np.linspace(-6.0, 6.0, 120_001)


@pytest.mark.parametrize("penalty, rho", PENALTIES, ids=IDS)
@pytest.mark.parametrize("step", [0.1, 1.0, 3.0])
def test_prox_attains_the_brute_force_minimum(penalty, rho, step):
    """prox(x, step) minimizes 0.5 (z - x)^2 + step * strength * rho(z), entrywise."""
    xs = np.linspace(-4.0, 4.0, 23)
    zs = penalty.prox(xs, step=step)
    weight = step * penalty.strength
    for x, z in zip(xs, zs):
        best = np.min(0.5 * (GRID - x) ** 2 + weight * rho(GRID))
        assert 0.5 * (z - x) ** 2 + weight * rho(np.array(z)) <= best + 1e-7, (x, z)


@pytest.mark.parametrize("penalty, rho", PENALTIES, ids=IDS)
def test_value_is_the_strength_times_the_sum(penalty, rho):
    x = np.array([[0.0, -1.5], [2.0, 0.25]])
    assert penalty.value(x) == pytest.approx(penalty.strength * rho(x).sum(), rel=1e-15)
    assert isinstance(penalty.value(x), float)


@pytest.mark.parametrize("penalty, rho", PENALTIES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(penalty, rho, dtype):
    x = torch.linspace(-3.0, 3.0, 13, dtype=dtype)
    out = penalty.prox(x, step=0.8)
    assert isinstance(out, torch.Tensor) and out.dtype == dtype
    np.testing.assert_allclose(out.double().numpy(), penalty.prox(x.double().numpy(), step=0.8), atol=1e-5)
    value = penalty.value(x)
    assert isinstance(value, torch.Tensor) and value.ndim == 0
    assert float(value) == pytest.approx(penalty.value(x.double().numpy()), rel=1e-5)


@pytest.mark.parametrize("penalty", [penalties.L1(0.5), penalties.TransformedL1(0.5, a=1.0)], ids=repr)
def test_value_of_a_tensor_is_differentiable(penalty):
    x = torch.tensor([1.0, -2.0, 0.5], requires_grad=True)
    penalty.value(x).backward()
    assert x.grad is not None and torch.all(x.grad * x.detach().sign() > 0)


def test_l1_cvxpy_expression_and_prox_agree_with_cvxpy():
    penalty, x = penalties.L1(0.7), np.array([2.0, -0.3, 0.9, -1.5])
    z = cp.Variable(4)
    cp.Problem(cp.Minimize(0.5 * cp.sum_squares(z - x) + 1.3 * penalty.cvxpy(z))).solve(solver="CLARABEL")
    np.testing.assert_allclose(penalty.prox(x, step=1.3), z.value, atol=1e-6)
    W = cp.Constant(np.array([[1.0, -2.0], [0.0, 3.0]]))
    assert penalty.cvxpy(W).value == pytest.approx(penalty.value(W.value))


@pytest.mark.parametrize("penalty", [penalties.L0(1.0), penalties.TransformedL1(1.0, a=2.0)], ids=repr)
def test_nonconvex_penalties_refuse_cvxpy_and_name_the_alternative(penalty):
    with pytest.raises(InvalidInputError, match="nonconvex.*use L1"):
        penalty.cvxpy(cp.Variable(3))


def test_documented_formulas_at_their_thresholds():
    assert penalties.L1(2.0).prox(np.array([1.0, 3.0]), step=0.5).tolist() == [0.0, 2.0]
    # l0 keeps |x| > sqrt(2 step strength) = 1 only.
    assert penalties.L0(1.0).prox(np.array([1.0, 1.0000001]), step=0.5).tolist() == [0.0, 1.0000001]
    # Transformed l1, lam = 2 and a = 1: lam > a^2 / (2 (a + 1)), so t = sqrt(2 lam (a + 1)) - a / 2.
    t = np.sqrt(8.0) - 0.5
    out = penalties.TransformedL1(1.0, a=1.0).prox(np.array([t, t + 1e-3]), step=2.0)
    assert out[0] == 0.0 and out[1] > 0
    # lam = 0.1 <= a^2 / (2 (a + 1)) = 0.25: t = lam (a + 1) / a = 0.2.
    out = penalties.TransformedL1(1.0, a=1.0).prox(np.array([0.2, 0.2001]), step=0.1)
    assert out[0] == 0.0 and out[1] > 0


@pytest.mark.parametrize("make, argument", [
    (lambda: penalties.L1(-1.0), "strength"),
    (lambda: penalties.L0(float("nan")), "strength"),
    (lambda: penalties.L1(float("inf")), "strength"),
    (lambda: penalties.TransformedL1(1.0, a=0.0), "a"),
    (lambda: penalties.TransformedL1(1.0, a=float("inf")), "a"),
    (lambda: penalties.L1(1.0).prox(np.ones(2), step=-0.1), "step"),
    (lambda: penalties.L1(1.0).prox(np.ones(2), step=float("nan")), "step"),
    (lambda: penalties.L0(1.0).prox(np.array([1.0, np.nan]), step=1.0), "x has 1 NaN"),
    (lambda: penalties.TransformedL1(1.0, a=1.0).value(np.array([np.inf])), "x has 1 NaN"),
    (lambda: penalties.L1(1.0).value(np.array(["a"])), "x must hold real numbers"),
])
def test_bad_input_is_named(make, argument):
    with pytest.raises(InvalidInputError, match=argument):
        make()


@pytest.mark.parametrize("dtype", [np.float64, np.float32])
def test_transformed_l1_with_huge_a_is_l1_in_value_and_prox(dtype):
    """Issue 16: a = 1e150 gave NaN or wrong values. For a -> inf, rho_a(z) -> |z|."""
    x = np.array([-3.0, 0.5, 0.0, 2.0, 1e30], dtype=dtype)
    for a in (1e40, 1e150):
        penalty = penalties.TransformedL1(0.5, a=a)
        assert penalty.value(x) == pytest.approx(0.5 * float(np.abs(x.astype(float)).sum()), rel=1e-6)
        np.testing.assert_allclose(penalty.prox(x, step=2.0), np.sign(x) * np.maximum(np.abs(x) - 1.0, 0),
                                   rtol=1e-6)
        tensor = penalty.value(torch.tensor(x))
        assert torch.isfinite(tensor) and float(tensor) == pytest.approx(penalty.value(x), rel=1e-6)
    # Entries far beyond a: each term is about a + 1, not inf / inf.
    assert penalties.TransformedL1(1.0, a=1e150).value(np.array([1e160])) == pytest.approx(1e150, rel=1e-9)


def test_transformed_l1_with_tiny_a_counts_nonzeros():
    x = np.array([0.0, 1e-100, -2.0, 3.0])
    assert penalties.TransformedL1(1.0, a=1e-150).value(x) == pytest.approx(3.0, rel=1e-12)


@pytest.mark.parametrize("axis", [0, 1])
def test_group_l1_prox_is_scale_covariant_where_squares_overflow(axis):
    """prox_{s g}(c x) = c prox_{(s/c) g}(x) for the group norm: at c = 1e200 the groups' squared
    entries overflow float64, and the prox must still shrink (a naive norm is inf, a factor 1)."""
    rng = np.random.default_rng(3)
    x = rng.standard_normal((5, 4))
    penalty = penalties.GroupL1(1.0, axis=axis)
    reference = penalty.prox(x, step=0.8)
    big = penalty.prox(1e200 * x, step=0.8e200)
    np.testing.assert_allclose(big / 1e200, reference, rtol=1e-12, atol=1e-300)
    assert np.any(reference == 0) or np.all(np.abs(reference) < np.abs(x))
