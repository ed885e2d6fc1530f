"""convexnet.sets: one battery over every set (projection, membership, CVXPY constraints, torch,
bad data), then what is particular to each: parameter checks, the convolution layout, Net-Trim's set."""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

import convexnet
from convexnet import sets
from convexnet.errors import BackendUnavailableError, InvalidInputError


def orthonormal(n, d, seed=0):
    return np.linalg.qr(np.random.default_rng(seed).standard_normal((n, d)))[0]


CASES = [
    (sets.L1Ball(2.0), (6,)),
    (sets.L1Ball(1.5, axis=0), (5, 3)),
    (sets.L1InfBall(1.5), (5, 3)),
    (sets.SumOfMaxBall(2.0), (4, 3)),
    (sets.NuclearBall(1.0), (4, 3)),
    (sets.Sparse(3), (6,)),
    (sets.Sparse(1, axis=1), (3, 4)),
    (sets.LowRank(1), (4, 3)),
    (sets.Subspace(orthonormal(12, 4), shape=(4, 3)), (4, 3)),
    (sets.ConvolutionSubspace(input_dim=7, kernel_width=3, stride=2, n_kernels=2), (7, 6)),
]
CONVEX = [case for case in CASES if case[0].convex]
IDS = [repr(case[0]) for case in CASES]


def random_point(shape, seed=0):
    return 3.0 * np.random.default_rng(seed).standard_normal(shape)


@pytest.mark.parametrize("constraint_set, shape", CASES, ids=IDS)
def test_projection_lands_in_the_set_and_stays(constraint_set, shape):
    x = random_point(shape)
    projected = constraint_set.project(x)
    assert projected.shape == shape and projected.dtype == np.float64
    assert not constraint_set.contains(x)
    assert constraint_set.contains(projected)
    np.testing.assert_allclose(constraint_set.project(projected), projected, atol=1e-12)


@pytest.mark.parametrize("constraint_set, shape", CONVEX, ids=[repr(c[0]) for c in CONVEX])
@pytest.mark.parametrize("seed", [1, 2])
def test_projection_matches_cvxpy_with_the_sets_own_constraints(constraint_set, shape, seed):
    x = random_point(shape, seed)
    Z = cp.Variable(shape)
    problem = cp.Problem(cp.Minimize(cp.sum_squares(Z - x)), constraint_set.constraints(Z))
    problem.solve(solver="CLARABEL")
    np.testing.assert_allclose(constraint_set.project(x), Z.value, atol=1e-5)


@pytest.mark.parametrize("constraint_set, shape", [c for c in CASES if not c[0].convex],
                         ids=[repr(c[0]) for c in CASES if not c[0].convex])
def test_nonconvex_sets_refuse_cvxpy_and_name_the_relaxation(constraint_set, shape):
    with pytest.raises(InvalidInputError, match=f"nonconvex.*{constraint_set.relaxation.split()[0]}"):
        constraint_set.constraints(cp.Variable(shape))


@pytest.mark.parametrize("constraint_set, shape", CASES, ids=IDS)
@pytest.mark.parametrize("dtype", [torch.float32, torch.float64])
def test_torch_in_torch_out(constraint_set, shape, dtype):
    x = random_point(shape, 3)
    out = constraint_set.project(torch.tensor(x, dtype=dtype))
    assert isinstance(out, torch.Tensor) and out.dtype == dtype and out.device.type == "cpu"
    np.testing.assert_allclose(out.double().numpy(), constraint_set.project(x), atol=1e-4)
    assert constraint_set.contains(out, tol=1e-5)


@pytest.mark.parametrize("constraint_set, shape", CASES, ids=IDS)
@pytest.mark.parametrize("bad", [np.nan, np.inf, -np.inf])
def test_bad_data_is_refused_before_work(constraint_set, shape, bad):
    x = random_point(shape, 4)
    x.flat[1] = bad
    with pytest.raises(InvalidInputError, match="x has 1 NaN or infinite"):
        constraint_set.project(x)
    with pytest.raises(InvalidInputError, match="x has"):
        constraint_set.contains(x)


@pytest.mark.parametrize("constraint_set, shape", CASES, ids=IDS)
def test_tol_is_checked_and_repr_names_the_class(constraint_set, shape):
    with pytest.raises(InvalidInputError, match="tol"):
        constraint_set.contains(np.zeros(shape), tol=-1.0)
    assert repr(constraint_set).startswith(type(constraint_set).__name__ + "(")


@pytest.mark.parametrize("make, argument", [
    (lambda: sets.L1Ball(-1.0), "radius"),
    (lambda: sets.L1Ball(float("nan")), "radius"),
    (lambda: sets.L1InfBall(float("inf")), "radius"),
    (lambda: sets.SumOfMaxBall("two"), "radius"),
    (lambda: sets.NuclearBall(-0.1), "radius"),
    (lambda: sets.L1Ball(1.0, axis=0.5), "axis"),
    (lambda: sets.Sparse(2.0), "k"),
    (lambda: sets.Sparse(-1), "k"),
    (lambda: sets.LowRank(True), "rank"),
    (lambda: sets.Subspace(np.ones((4, 2))), "orthonormal"),
    (lambda: sets.Subspace(orthonormal(6, 2), shape=(4, 2)), "shape"),
    (lambda: sets.ConvolutionSubspace(input_dim=3, kernel_width=4, stride=1, n_kernels=1), "kernel_width"),
    (lambda: sets.ConvolutionSubspace(input_dim=8, kernel_width=3, stride=0, n_kernels=1), "stride"),
])
def test_bad_parameters_are_named(make, argument):
    with pytest.raises(InvalidInputError, match=argument):
        make()


def test_the_modules_are_importable_as_submodules():
    from convexnet import penalties

    assert convexnet.sets.L1Ball is sets.L1Ball and penalties.L1.__name__ == "L1"


def test_l1_ball_edges():
    ball = sets.L1Ball(1.0)
    inside = np.array([0.5, -0.25, -0.0])
    assert ball.project(inside).tobytes() == inside.tobytes()
    assert not sets.L1Ball(0.0).project(np.array([1.0, -2.0])).any()
    assert ball.contains(np.array([0.5, 0.5])) and not ball.contains(np.array([0.5, 0.5 + 1e-6]))
    for bad_axis in (sets.L1Ball(1.0, axis=2), sets.Sparse(1, axis=-3)):
        for method in (bad_axis.project, bad_axis.contains):
            with pytest.raises(InvalidInputError, match="axis"):
                method(np.ones((2, 2)))


def test_l1_inf_ball_bounds_every_column_in_one_call():
    W = np.random.default_rng(5).standard_normal((9, 4))
    W[:, 1] *= 0.01
    projected = sets.L1InfBall(1.0).project(W)
    np.testing.assert_allclose(np.abs(projected).sum(axis=0)[[0, 2, 3]], 1.0)
    assert projected[:, 1].tobytes() == W[:, 1].tobytes()
    batch = sets.L1InfBall(1.0).project(np.stack([W, -W]))
    np.testing.assert_allclose(batch[1], -projected)


def test_sparse_and_low_rank_membership_counts():
    assert sets.Sparse(2).contains(np.array([0.0, 3.0, 1e-12, -1.0]))
    assert not sets.Sparse(2).contains(np.array([1.0, 3.0, 1e-12, -1.0]))
    assert sets.LowRank(1).contains(np.outer([1.0, 2.0], [3.0, 4.0, 5.0]))
    np.testing.assert_array_equal(sets.Sparse(0).project(np.ones(3)), np.zeros(3))


# ----------------------------------------------------------------------------- convolution subspace

def convolution_matrix_loop(kernels, input_dim, stride):
    """Paper 000, Definition 4.1, written out entry by entry (in the design's (N, M) orientation)."""
    n_kernels, width = kernels.shape
    positions = (input_dim - width) // stride + 1
    W = np.zeros((input_dim, n_kernels * positions))
    for i in range(n_kernels):
        for position in range(positions):
            for tap in range(width):
                W[position * stride + tap, i * positions + position] = kernels[i, tap]
    return W


def test_convolution_subspace_of_paper_000_section_5():
    space = sets.ConvolutionSubspace(input_dim=81, kernel_width=15, stride=6, n_kernels=4)
    assert space.positions == 12 and space.shape == (81, 48) and space.dimension == 60
    kernels = np.random.default_rng(6).standard_normal((4, 15))
    W = space.weight_matrix(kernels)
    np.testing.assert_array_equal(W, convolution_matrix_loop(kernels, 81, 6))
    assert space.contains(W)
    np.testing.assert_allclose(space.project(W), W, atol=1e-12)
    np.testing.assert_allclose(space.kernels(W), kernels, atol=1e-12)
    as_tensor = space.weight_matrix(torch.tensor(kernels, dtype=torch.float32))
    assert as_tensor.dtype == torch.float32 and np.array_equal(as_tensor.numpy(), W.astype(np.float32))


def test_convolution_projection_averages_shared_weights():
    space = sets.ConvolutionSubspace(input_dim=9, kernel_width=3, stride=3, n_kernels=2)
    W = np.random.default_rng(7).standard_normal(space.shape)
    means = np.zeros((2, 3))
    for i in range(2):
        for tap in range(3):
            means[i, tap] = np.mean([W[l * 3 + tap, i * 3 + l] for l in range(3)])
    np.testing.assert_allclose(space.project(W), convolution_matrix_loop(means, 9, 3), atol=1e-12)
    np.testing.assert_allclose(space.kernels(torch.tensor(W)).numpy(), means, atol=1e-12)
    basis = space.basis_matrix(9, 3, 3, 2)
    np.testing.assert_allclose(basis.T @ basis, np.eye(6), atol=1e-15)


# ----------------------------------------------------------------------------- Net-Trim's set

def layer(seed=8, P=30, N=6, M=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    U = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.5)
    return X, np.maximum(X @ U, 0), U


def test_net_trim_set_membership():
    X, Y, U = layer()
    assert sets.NetTrimSet(X, Y, epsilon=0.0).contains(U)
    moved = U + 0.05
    discrepancy = sets.NetTrimSet(X, Y, epsilon=0.0).discrepancy(moved)
    assert discrepancy > 0
    assert sets.NetTrimSet(X, Y, epsilon=discrepancy * 1.01, V=np.full(Y.shape, 10.0)).contains(moved)
    assert not sets.NetTrimSet(X, Y, epsilon=discrepancy * 0.99, V=np.full(Y.shape, 10.0)).contains(moved)
    assert sets.NetTrimSet(X, X @ U, epsilon=1e-9, relu=False).contains(U)


@pytest.mark.parametrize("relu", [True, False])
def test_net_trim_constraints_match_an_entrywise_formulation(relu):
    """Minimize ||U||_1 over the set's constraints and over paper 004's (4) written entry by entry."""
    X, Y, _ = layer(9)
    Y = Y if relu else X @ layer(9)[2]
    V = np.full(Y.shape, -0.1)
    constraint_set = sets.NetTrimSet(X, Y, V=V, epsilon=0.3, relu=relu)
    U = cp.Variable((X.shape[1], Y.shape[1]))
    cp.Problem(cp.Minimize(cp.sum(cp.abs(U))), constraint_set.constraints(U)).solve(solver="CLARABEL")
    assert constraint_set.contains(U.value, tol=1e-6)

    oracle = cp.Variable(U.shape)
    on = [(p, m) for p in range(Y.shape[0]) for m in range(Y.shape[1]) if Y[p, m] > 0 or not relu]
    off = [(p, m) for p in range(Y.shape[0]) for m in range(Y.shape[1]) if relu and Y[p, m] <= 0]
    residuals = cp.hstack([X[p] @ oracle[:, m] - Y[p, m] for p, m in on])
    constraints = [cp.norm(residuals, 2) <= 0.3] + [X[p] @ oracle[:, m] <= V[p, m] for p, m in off]
    best = cp.Problem(cp.Minimize(cp.sum(cp.abs(oracle))), constraints).solve(solver="CLARABEL")
    assert np.abs(U.value).sum() == pytest.approx(best, rel=1e-6)


def test_net_trim_set_has_no_projection_and_checks_its_data():
    X, Y, U = layer()
    with pytest.raises(BackendUnavailableError, match="constraints"):
        sets.NetTrimSet(X, Y, epsilon=0.1).project(U)
    with pytest.raises(InvalidInputError, match="same number of rows"):
        sets.NetTrimSet(X, Y[:-1], epsilon=0.1)
    with pytest.raises(InvalidInputError, match="V must"):
        sets.NetTrimSet(X, Y, V=np.zeros((2, 2)), epsilon=0.1)
    with pytest.raises(InvalidInputError, match="epsilon"):
        sets.NetTrimSet(X, Y)
    with pytest.raises(InvalidInputError, match="epsilon"):
        sets.NetTrimSet(X, Y, epsilon=-1.0)
    with pytest.raises(InvalidInputError, match="Y has 1 NaN"):
        sets.NetTrimSet(X, np.where(Y == Y.max(), np.nan, Y), epsilon=0.1)
    with pytest.raises(InvalidInputError, match="U must have shape"):
        sets.NetTrimSet(X, Y, epsilon=0.1).contains(U[:-1])


@pytest.mark.parametrize("radius", [1e16, 1e-150, 1e150])
def test_l1_ball_far_outside_lands_on_the_boundary(radius):
    """Issue 16: L1Ball(1e16).project of data near 1e32 came back 10% inside, and data 1e16 times
    the radius or more came back as zeros."""
    x = np.random.default_rng(0).standard_normal(10) * radius * 1e16
    out = sets.L1Ball(radius).project(x)
    assert abs(np.abs(out).sum() - radius) <= 1e-12 * radius
    assert sets.L1Ball(radius).contains(out) and np.all(np.sign(out) * np.sign(x) >= 0)


# ---------------------------------------------------------------- an L1 penalty and a set on ADMM
def _layer(seed=0, P=40, N=8, M=3):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    W0 = rng.standard_normal((N, M)) * (rng.random((N, M)) < 0.6)
    return X, X @ W0 + 0.05 * rng.standard_normal((P, M)), W0 != 0


# The set, and its constraint on the CVXPY variable written out from its definition.
FUSED = [
    ("l1 ball", lambda support: sets.L1Ball(3.0), lambda W: [cp.sum(cp.abs(W)) <= 3.0]),
    ("l1 ball per column", lambda support: sets.L1Ball(1.0, axis=0),
     lambda W: [cp.sum(cp.abs(W), axis=0) <= 1.0]),
    ("L1,inf ball", lambda support: sets.L1InfBall(1.5), lambda W: [cp.sum(cp.abs(W), axis=0) <= 1.5]),
    ("sum-of-max ball", lambda support: sets.SumOfMaxBall(2.0),
     lambda W: [cp.sum(cp.max(cp.abs(W), axis=1)) <= 2.0]),
    ("mask", lambda support: sets.Mask(support), None),
]


@pytest.mark.parametrize("name, make_set, written", FUSED, ids=[case[0] for case in FUSED])
def test_l1_and_a_set_with_a_closed_form_prox_are_one_admm_term_and_match_cvxpy(name, make_set, written):
    from solvers import graph_terms

    from convexnet import fits, penalties

    X, Y, support = _layer()
    # A last row left unpenalized (a bias row), so that the per-row weights reach the fused prox.
    weights = np.r_[np.ones(X.shape[1] - 1), 0.0]
    constraint = make_set(support)
    program = convexnet.SparsityProgram(X, fit=fits.Squared(Y, weight=10.0),
                                        penalty=penalties.L1(0.7, weights=weights),
                                        constraints=[constraint])
    terms = program.to_graph_form().weights
    assert len(terms) == 1 and isinstance(terms[0], graph_terms.ProjectedL1)
    W = cp.Variable((X.shape[1], Y.shape[1]))
    objective = 10.0 * cp.sum_squares(X @ W - Y) + 0.7 * cp.sum(cp.multiply(weights[:, None], cp.abs(W)))
    constraints = written(W) if written else [W[~support] == 0]
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-11, tol_gap_rel=1e-11, tol_feas=1e-11)
    result = program.solve("admm", solver_options={"abs_tol": 1e-10, "rel_tol": 1e-10})
    assert result.status == "optimal" and result.violation == 0.0
    assert abs(result.objective - problem.value) <= 1e-9 * problem.value
    np.testing.assert_allclose(result.W, W.value, rtol=0, atol=1e-6)


def test_only_the_first_fusable_pair_fuses_and_other_sets_stay_terms():
    from solvers import graph_terms

    from convexnet import fits, penalties

    X, Y, support = _layer(1)
    program = convexnet.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.L1(0.5),
                                        constraints=[sets.NuclearBall(5.0), sets.L1InfBall(2.0),
                                                     sets.Mask(support)])
    kinds = [type(term) for term in program.to_graph_form().weights]
    assert kinds == [graph_terms.ProjectedL1, graph_terms.Projection, graph_terms.Projection]
    # Without a penalty, or with a set that has no closed form with l1, nothing fuses.
    plain = convexnet.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.L1(0.5),
                                      constraints=[sets.NuclearBall(5.0)])
    assert [type(term) for term in plain.to_graph_form().weights] == [graph_terms.WeightedL1,
                                                                      graph_terms.Projection]
    group = convexnet.SparsityProgram(X, fit=fits.Squared(Y), penalty=penalties.GroupL1(0.5),
                                      constraints=[sets.L1InfBall(2.0)])
    assert [type(term) for term in group.to_graph_form().weights] == [graph_terms.GroupL2,
                                                                      graph_terms.Projection]
