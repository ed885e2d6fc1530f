"""The `convexnet` command: demo, certify, and prune -> certify end to end."""

import numpy as np
import pytest
import torch

import convexnet as cn
from convexnet import cli


def layer(seed=0):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((60, 10))
    return X, rng.standard_normal((10, 4))


def test_certify_accepts_solver_results_and_rejects_loose_ones(tmp_path, capsys):
    X, W = layer()
    cn.NetTrimProblem.from_weights(X, W, lam=2.0).solve("clarabel").save(tmp_path / "good.npz")
    assert cli.main(["certify", str(tmp_path / "good.npz")]) == 0
    assert "all certified" in capsys.readouterr().out
    loose = cn.NetTrimProblem.from_weights(X, W, rel_epsilon=0.1).solve(
        "scs", solver_options={"eps_abs": 1e-2, "eps_rel": 1e-2})
    loose.save(tmp_path / "loose.npz")
    assert cli.main(["certify", str(tmp_path)]) == 1
    out = capsys.readouterr().out
    assert "good" in out and "loose" in out and "NO" in out
    # A looser tolerance than the solver reached is the user's call, and then it passes.
    assert cli.main(["certify", str(tmp_path / "loose.npz"), "--gap-tol", "1", "--feas-tol", "1"]) == 0


@pytest.mark.parametrize("argv, words", [
    (["certify", "missing.npz"], "does not exist"),
    (["certify", "empty"], "no .npz"),
    (["certify", "not_a_result.npz"], "not a saved result"),
])
def test_certify_bad_input_is_one_line(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "not_a_result.npz").write_text("plain text")
    (tmp_path / "empty").mkdir()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_prune_saves_results_that_certify_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    torch.save(model, "model.pt")
    np.save("calibration.npy", np.random.default_rng(0).standard_normal((80, 4)).astype(np.float32))
    assert cli.main(["prune", "model.pt", "--calibration", "calibration.npy", "--rel-epsilon",
                     "0.05", "--backend", "clarabel", "--out", "pruned.pt",
                     "--save-results", "results"]) == 0
    assert sorted(p.name for p in (tmp_path / "results").iterdir()) == ["0.npz", "2.npz"]
    capsys.readouterr()
    assert cli.main(["certify", "results"]) == 0
    assert "all certified" in capsys.readouterr().out


def test_demo_runs_end_to_end_at_small_width(tmp_path, capsys):
    assert cli.main(["demo", "--hidden", "16", "--steps", "300", "--backend", "clarabel",
                     "--out", str(tmp_path / "demo.png")]) == 0
    out = capsys.readouterr()
    assert "hidden1 -> hidden2" in out.out and "grid agreement" in out.out
    assert "[2/3] cascade Net-Trim" in out.err and "layer 3/3" in out.err
    assert (tmp_path / "demo.png").stat().st_size > 10_000


@pytest.mark.parametrize("argv, words", [
    (["demo", "--backend", "gurobi"], "available here"),
    (["demo", "--gamma", "0.5"], "gamma"),
    (["demo", "--rel-epsilon", "-1"], "rel_epsilon"),
])
def test_demo_rejects_bad_options_before_training(argv, words, capsys):
    assert cli.main(argv) == 2
    captured = capsys.readouterr()
    assert words in captured.err and "[1/3]" not in captured.err
