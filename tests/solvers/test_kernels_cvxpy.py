"""Every projection and prox kernel against an independent CVXPY formulation solved tightly.

Each kernel's problem is written out in CVXPY from its definition (never from the kernel's method)
and solved by Clarabel with its tolerances at 1e-10. The kernel must agree to 1e-8 on data of
order 1: that is the solver's accuracy (at 1e-9 some cases fail, with Clarabel's answers off; the
exact-arithmetic tests of test_prox_extreme.py hold the kernels to 1e-12). Three kinds of input:
numpy float64, torch tensors (the numpy form on CPU tensors) and the torch form that GPUs run.
"""

from __future__ import annotations

import cvxpy as cp
import numpy as np
import pytest
import torch

from solvers import _arrays
from solvers.prox import (project_l1_ball, project_l1_inf_ball, prox_group_l1, prox_l1)
from solvers.prox_constrained import (prox_l1_in_l1_ball, prox_l1_in_l1_inf_ball, prox_l1_in_mask,
                                      prox_l1_in_sum_of_max_ball)
from solvers.prox_matrix import project_nuclear_ball, project_sum_of_max_ball

TIGHT = dict(tol_gap_abs=1e-10, tol_gap_rel=1e-10, tol_feas=1e-10, tol_ktratio=1e-8,
             max_iter=500)
TOLERANCE = 1e-8


def solve(x, penalty=lambda Z: 0, constraints=lambda Z: []):
    """argmin_Z 0.5 ||Z - x||^2 + penalty(Z) subject to constraints(Z), by Clarabel."""
    Z = cp.Variable(x.shape)
    problem = cp.Problem(cp.Minimize(0.5 * cp.sum_squares(Z - x) + penalty(Z)), constraints(Z))
    problem.solve(solver="CLARABEL", **TIGHT)
    assert problem.status == cp.OPTIMAL
    return Z.value


def data(shape, seed):
    return np.random.default_rng(seed).standard_normal(shape)


RADIUS, STEP = 0.8, 0.15
MASK = data((6, 5), 99) > -0.3
WEIGHTS = np.abs(data((1, 5), 98)) * 0.3

# name, kernel(x), cvxpy penalty, cvxpy constraints, shape
CASES = [
    ("l1 ball", lambda x: project_l1_ball(x, radius=RADIUS), lambda Z: 0,
     lambda Z: [cp.sum(cp.abs(Z)) <= RADIUS], (12,)),
    ("l1 ball per row", lambda x: project_l1_ball(x, radius=RADIUS, axis=1), lambda Z: 0,
     lambda Z: [cp.sum(cp.abs(Z), axis=1) <= RADIUS], (4, 7)),
    ("L1,inf ball", lambda x: project_l1_inf_ball(x, radius=RADIUS), lambda Z: 0,
     lambda Z: [cp.sum(cp.abs(Z), axis=0) <= RADIUS], (6, 5)),
    ("sum-of-max ball", lambda x: project_sum_of_max_ball(x, radius=RADIUS), lambda Z: 0,
     lambda Z: [cp.sum(cp.max(cp.abs(Z), axis=1)) <= RADIUS], (6, 5)),
    ("nuclear ball", lambda x: project_nuclear_ball(x, radius=RADIUS), lambda Z: 0,
     lambda Z: [cp.normNuc(Z) <= RADIUS], (5, 4)),
    ("l1", lambda x: prox_l1(x, step=STEP), lambda Z: STEP * cp.sum(cp.abs(Z)),
     lambda Z: [], (6, 5)),
    ("group l1, rows", lambda x: prox_group_l1(x, step=3 * STEP, axis=1),
     lambda Z: 3 * STEP * cp.sum(cp.norm(Z, 2, axis=1)), lambda Z: [], (6, 5)),
    ("group l1, columns, per-column weights", lambda x: prox_group_l1(x, step=4 * WEIGHTS, axis=0),
     lambda Z: cp.sum(cp.multiply(4 * WEIGHTS.ravel(), cp.norm(Z, 2, axis=0))), lambda Z: [],
     (6, 5)),
    ("l1 in l1 ball", lambda x: prox_l1_in_l1_ball(x, step=STEP, radius=2 * RADIUS),
     lambda Z: STEP * cp.sum(cp.abs(Z)), lambda Z: [cp.sum(cp.abs(Z)) <= 2 * RADIUS], (12,)),
    ("l1 in L1,inf ball", lambda x: prox_l1_in_l1_inf_ball(x, step=WEIGHTS, radius=RADIUS),
     lambda Z: cp.sum(cp.multiply(np.broadcast_to(WEIGHTS, (6, 5)), cp.abs(Z))),
     lambda Z: [cp.sum(cp.abs(Z), axis=0) <= RADIUS], (6, 5)),
    ("l1 in sum-of-max ball", lambda x: prox_l1_in_sum_of_max_ball(x, step=STEP, radius=RADIUS),
     lambda Z: STEP * cp.sum(cp.abs(Z)),
     lambda Z: [cp.sum(cp.max(cp.abs(Z), axis=1)) <= RADIUS], (6, 5)),
    ("l1 in mask", lambda x: prox_l1_in_mask(x, step=STEP, mask=MASK),
     lambda Z: STEP * cp.sum(cp.abs(Z)), lambda Z: [Z[~MASK] == 0], (6, 5)),
]


@pytest.fixture(params=["numpy", "torch (numpy on CPU)", "torch (GPU form)"])
def kind(request, monkeypatch):
    if request.param == "torch (GPU form)":
        monkeypatch.setattr(_arrays, "HOST_NUMPY", False)
    return request.param


@pytest.mark.parametrize("case", CASES, ids=[case[0] for case in CASES])
@pytest.mark.parametrize("seed", [0, 1])
def test_kernel_matches_tight_cvxpy(case, seed, kind):
    _, kernel, penalty, constraints, shape = case
    x = data(shape, seed)
    expected = solve(x, penalty, constraints)
    out = kernel(x if kind == "numpy" else torch.tensor(x))
    if kind != "numpy":
        assert isinstance(out, torch.Tensor) and out.dtype == torch.float64
        out = out.numpy()
    np.testing.assert_allclose(out, expected, rtol=0, atol=TOLERANCE)
