"""The sparsest-vertex move: every backend's optimum lands on a vertex of the optimal face.

The data repeat every feature twice (``X = [A, A]``), so each optimum can split a weight between the
two copies in any proportion with one sign: an interior-point solver returns the even split (both
copies nonzero), a vertex keeps one. Oracles: an independent CVXPY statement of the same program for
the value, the certificate for optimality, and the rank of the support's system for the vertex.
"""

import cvxpy as cp
import numpy as np
import pytest

import convexnet as cn
from convexnet import fits, penalties
from convexnet.programs.vertex import to_vertex

P, HALF, M = 60, 12, 4


def duplicated_layer(seed=0):
    rng = np.random.default_rng(seed)
    A = np.maximum(rng.standard_normal((P, HALF)), 0.0)
    X = np.hstack([A, A])
    Y = np.maximum(X @ rng.standard_normal((2 * HALF, M)) / np.sqrt(2 * HALF), 0.0)
    return X, Y


def both_copies(W):
    """Entries whose duplicate is nonzero too (a point inside the optimal face)."""
    return int(np.count_nonzero((W[:HALF] != 0) & (W[HALF:] != 0)))


FORMS = {"one budget": dict(rel_epsilon=0.05), "per-column budgets": dict(rel_epsilon=0.05, split_budget=True),
         "squared loss": dict(lam=10.0)}


def oracle_value(X, Y, form):
    """The Net-Trim program stated directly in CVXPY (Omega = Y > 0, Z <= 0 off it)."""
    W = cp.Variable((X.shape[1], M))
    on = (Y > 0).astype(float)
    residual = cp.multiply(on, X @ W - Y)
    constraints = [cp.multiply(1 - on, X @ W) <= 0]
    objective = cp.sum(cp.abs(W))
    if "lam" in form:
        objective = objective + form["lam"] * cp.sum_squares(residual)
    elif form.get("split_budget"):
        budgets = form["rel_epsilon"] * np.linalg.norm(Y, axis=0)
        constraints += [cp.norm(residual[:, m]) <= budgets[m] for m in range(M)]
    else:
        constraints.append(cp.norm(residual, "fro") <= form["rel_epsilon"] * np.linalg.norm(Y))
    problem = cp.Problem(cp.Minimize(objective), constraints)
    problem.solve(solver="CLARABEL")
    return problem.value


def support_system_rank_deficit(program, W):
    """``|S| - rank`` of a column's system (fit rows, tight inequality rows, sign row), largest."""
    X = program.X
    on = program.fits[0].mask
    deficit = 0
    for m in range(W.shape[1]):
        S = np.flatnonzero(W[:, m])
        if S.size == 0:
            continue
        Z = X @ W[:, m]
        tight = ~on[:, m] & (Z >= -1e-7)
        rows = np.vstack([X[on[:, m]][:, S], X[tight][:, S], np.sign(W[S, m])[None]])
        deficit = max(deficit, S.size - np.linalg.matrix_rank(rows, tol=1e-8))
    return deficit


@pytest.mark.parametrize("form", sorted(FORMS))
def test_interior_point_optimum_is_inside_the_face_without_the_move(form):
    X, Y = duplicated_layer()
    res = cn.NetTrimProblem(X, Y, **FORMS[form]).solve("clarabel", sparsest=False)
    assert res.status == "optimal"
    assert both_copies(res.W_design) > 0  # the even split: the data really are degenerate


@pytest.mark.parametrize("backend", ["clarabel", "scs", "admm", "auto"])
@pytest.mark.parametrize("form", sorted(FORMS))
def test_every_backend_lands_on_a_vertex_at_the_same_objective(form, backend):
    X, Y = duplicated_layer()
    problem = cn.NetTrimProblem(X, Y, **FORMS[form])
    res = problem.solve(backend)
    expected = oracle_value(X, Y, FORMS[form])
    assert res.objective == pytest.approx(expected, rel=1e-4 if backend == "scs" else 1e-5)
    assert res.certificate.ok, res.certificate
    assert both_copies(res.W_design) == 0
    assert support_system_rank_deficit(problem.program, res.W_design) == 0


def test_the_move_keeps_outputs_objective_and_dual():
    X, Y = duplicated_layer(1)
    problem = cn.NetTrimProblem(X, Y, rel_epsilon=0.05)
    inside = problem.solve("clarabel", sparsest=False)
    W, moved = to_vertex(problem.program, inside.W_design)
    assert moved.any()
    assert np.count_nonzero(W) < np.count_nonzero(inside.W_design)
    np.testing.assert_allclose(X @ W, X @ inside.W_design, atol=1e-9 * np.abs(X @ inside.W_design).max())
    assert problem.program.objective(W) == pytest.approx(problem.program.objective(inside.W_design), rel=1e-12)
    # The same dual certifies the moved point.
    inside.W_design = W
    assert cn.certificates.verify(inside, gap_tol=1e-6, feas_tol=1e-6).ok


def test_a_program_of_terms_moves_too_and_opting_out_keeps_the_solver_point():
    X, Y = duplicated_layer(2)
    program = cn.SparsityProgram(X, fit=fits.Squared(Y, weight=5.0), penalty=penalties.L1(1.0))
    moved = program.solve("clarabel")
    kept = program.solve("clarabel", sparsest=False)
    assert moved.info["vertex_columns"] > 0 and "vertex_columns" not in kept.info
    assert both_copies(moved.W) == 0 < both_copies(kept.W)
    assert moved.objective == pytest.approx(kept.objective, rel=1e-9)
    assert moved.certificate.ok


def test_sparsest_must_be_a_bool():
    X, Y = duplicated_layer()
    with pytest.raises(cn.errors.InvalidInputError, match="sparsest"):
        cn.NetTrimProblem(X, Y, rel_epsilon=0.05).solve("clarabel", sparsest="yes")
