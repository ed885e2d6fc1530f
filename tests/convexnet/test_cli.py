"""The `convexnet` command: demo, certify, and prune -> certify end to end; what it loads, imports
and writes (issue 16)."""

import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import convexnet as cn
from tests.models import TINY_ARCH, tiny_files
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
    assert "good.npz   ok" in out and "loose.npz  FAILED" in out
    # A looser tolerance than the solver reached is the user's call, and then it passes.
    assert cli.main(["certify", str(tmp_path / "loose.npz"), "--gap-tol", "1", "--feas-tol", "1"]) == 0


@pytest.mark.parametrize("argv, words", [
    (["certify", "missing.npz"], "does not exist"),
    (["certify", "empty"], "no .npz"),
])
def test_certify_missing_paths_are_one_line(tmp_path, monkeypatch, capsys, argv, words):
    monkeypatch.chdir(tmp_path)
    (tmp_path / "empty").mkdir()
    assert cli.main(argv) == 2
    err = capsys.readouterr().err.strip()
    assert words in err and len(err.splitlines()) == 1


def test_certify_reports_every_file_and_goes_on_past_unreadable_ones(tmp_path, capsys):
    X, W = layer()
    cn.NetTrimProblem.from_weights(X, W, lam=2.0).solve("clarabel").save(tmp_path / "a_good.npz")
    good = (tmp_path / "a_good.npz").read_bytes()
    # Damaged in three ways: cut short (a zip with no directory), not a zip, a zip without the keys.
    (tmp_path / "b_truncated.npz").write_bytes(good[: len(good) // 2])
    (tmp_path / "c_text.npz").write_text("plain text")
    np.savez(tmp_path / "d_other.npz", weights=np.ones(3))
    (tmp_path / "e_good.npz").write_bytes(good)
    assert cli.main(["certify", str(tmp_path)]) == 2
    captured = capsys.readouterr()
    rows = {Path(line.split()[0]).stem: line.split()[1] for line in captured.out.splitlines()[1:6]}
    assert rows == {"a_good": "ok", "b_truncated": "unreadable", "c_text": "unreadable",
                    "d_other": "unreadable", "e_good": "ok"}
    assert "2 certified" in captured.out and "3 unreadable" in captured.out
    assert "Traceback" not in captured.err


def test_certify_does_not_follow_links_out_of_its_directory(tmp_path, capsys):
    X, W = layer()
    outside = tmp_path / "elsewhere.npz"
    cn.NetTrimProblem.from_weights(X, W, lam=2.0).solve("clarabel").save(outside)
    results = tmp_path / "results"
    results.mkdir()
    shutil.copy(outside, results / "inside.npz")
    (results / "link_in.npz").symlink_to("inside.npz")
    (results / "link_out.npz").symlink_to(outside)
    assert cli.main(["certify", str(results)]) == 2
    out = capsys.readouterr().out
    assert "inside.npz" in out and "link_in.npz" in out
    link_row = next(line for line in out.splitlines() if "link_out.npz" in line)
    assert "skipped" in link_row and "a link out of" in link_row
    assert "2 certified" in out and "1 skipped" in out
    # Named as a file, the same link is the user's explicit choice and is read.
    assert cli.main(["certify", str(results / "link_out.npz")]) == 0


def test_prune_saves_results_that_certify_checks(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    torch.save(model, "model.pt")
    np.save("calibration.npy", np.random.default_rng(0).standard_normal((80, 4)).astype(np.float32))
    assert cli.main(["prune", "model.pt", "--calibration", "calibration.npy", "--rel-epsilon",
                     "0.05", "--backend", "clarabel", "--out", "pruned.pt", "--trust-pickle",
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


class _RunsCode:
    """Unpickling this runs code: it creates ``marker``."""

    def __init__(self, marker):
        self.marker = str(marker)

    def __reduce__(self):
        return exec, (f"open({self.marker!r}, 'w').close()",)


def test_prune_unpickles_nothing_without_trust_pickle(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny_files(tmp_path)
    torch.save(_RunsCode(tmp_path / "code_ran"), "model.pt")
    assert cli.main(["prune", "model.pt", "--calibration", "calibration.npy", "--rel-epsilon",
                     "0.1", "--out", "pruned.pt"]) == 2
    err = capsys.readouterr().err
    assert "--arch" in err and "--trust-pickle" in err and len(err.strip().splitlines()) == 1
    assert not (tmp_path / "code_ran").exists() and not (tmp_path / "pruned.pt").exists()
    # --arch reads the file with weights_only=True: refused, and the code does not run either.
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tiny_arch_for_pickle.py").write_text(TINY_ARCH)
    assert cli.main(["prune", "model.pt", "--arch", "tiny_arch_for_pickle:build", "--calibration",
                     "calibration.npy", "--rel-epsilon", "0.1", "--out", "pruned.pt"]) == 2
    assert not (tmp_path / "code_ran").exists()


def test_arch_is_not_imported_from_the_current_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny_files(tmp_path)
    (tmp_path / "arch_in_cwd_only.py").write_text(TINY_ARCH)
    assert cli.main(["prune", "model.pt", "--arch", "arch_in_cwd_only:build", "--calibration",
                     "calibration.npy", "--rel-epsilon", "0.1", "--out", "pruned.pt"]) == 2
    err = capsys.readouterr().err
    assert "cannot be imported" in err and "PYTHONPATH" in err
    assert not (tmp_path / "pruned.pt").exists()


class _NamesThatLeaveTheFolder(torch.nn.Module):
    """Layers whose names, used as file names, would leave a folder: an absolute path, and a
    subfolder that collides with a plain name once sanitized."""

    def __init__(self, absolute):
        super().__init__()
        # add_module refuses only names with dots; a slash goes through.
        self.add_module(absolute, torch.nn.Linear(3, 6))
        self.add_module("a/b", torch.nn.Linear(6, 4))
        self.add_module("a_b", torch.nn.Linear(4, 2))

    def forward(self, inputs):
        for module in self.children():
            inputs = module(inputs)
        return inputs


def test_save_results_names_stay_in_the_folder(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny_files(tmp_path)
    escaped = tmp_path / "escaped"
    torch.manual_seed(0)
    torch.save(_NamesThatLeaveTheFolder(str(escaped)), "model.pt")
    assert cli.main(["prune", "model.pt", "--trust-pickle", "--calibration", "calibration.npy",
                     "--rel-epsilon", "0.1", "--backend", "clarabel", "--out", "pruned.pt",
                     "--save-results", "results"]) == 0
    written = sorted(path.name for path in (tmp_path / "results").iterdir())
    assert written == sorted([str(escaped).replace("/", "_") + ".npz", "a_b.npz", "a_b-2.npz"])
    assert all((tmp_path / "results" / name).is_file() for name in written)
    assert not escaped.with_suffix(".npz").exists()
    assert "saved as a_b-2.npz" in capsys.readouterr().err
    assert cli.main(["certify", "results"]) == 0


def _run(argv, cwd, pythonpath):
    env = {**os.environ, "PYTHONPATH": str(pythonpath)}
    return subprocess.run(argv, cwd=cwd, env=env, capture_output=True, text=True, timeout=120)


@pytest.mark.parametrize("entry", ["script", "python -m"])
def test_command_runs_nothing_from_the_current_folder(tmp_path, entry):
    work, arch = tmp_path / "work", tmp_path / "arch"
    work.mkdir()
    arch.mkdir()
    tiny_files(work, arch)
    # The console script never has the current folder on its path; under `-m` the package drops
    # it before importing numpy.
    shadowed = ["tqdm", "torch", "numpy"]
    for name in shadowed:
        (work / f"{name}.py").write_text(f"open({str(tmp_path / name)!r} + '.ran', 'w').close()\n")
    command = ([str(Path(sys.executable).parent / "convexnet")] if entry == "script" else
               [sys.executable, "-m", "convexnet"])
    result = _run(command + ["prune", "model.pt", "--arch", "tiny_arch:build", "--calibration",
                             "calibration.npy", "--rel-epsilon", "0.1", "--backend", "clarabel",
                             "--out", "pruned.pt"], work, arch)
    assert result.returncode == 0, result.stderr
    assert (work / "pruned.pt").is_file()
    assert [name for name in shadowed if (tmp_path / f"{name}.ran").exists()] == []


def test_python_m_convexnet_is_the_command(tmp_path):
    result = _run([sys.executable, "-m", "convexnet", "certify", "--help"], tmp_path, tmp_path)
    assert result.returncode == 0, result.stderr
    assert "usage: convexnet certify" in result.stdout and "Exit status: 0" in result.stdout


def test_save_results_onto_a_file_is_refused_before_anything_is_written(tmp_path, monkeypatch,
                                                                         capsys):
    monkeypatch.chdir(tmp_path)
    tiny_files(tmp_path)
    (tmp_path / "results").write_text("a file, not a folder")
    assert cli.main(["prune", "model.pt", "--trust-pickle", "--calibration", "calibration.npy",
                     "--rel-epsilon", "0.1", "--out", "pruned.pt", "--save-results",
                     "results"]) == 2
    assert "--save-results" in capsys.readouterr().err
    assert not (tmp_path / "pruned.pt").exists()


def test_prune_refuses_unfinished_layers_unless_allowed(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    model = torch.nn.Sequential(torch.nn.Linear(4, 12), torch.nn.ReLU(), torch.nn.Linear(12, 2))
    torch.save(model, "model.pt")
    np.save("calibration.npy", np.random.default_rng(0).standard_normal((80, 4)).astype(np.float32))
    # ADMM stopped after 5 steps leaves the first layer at max_iterations.
    argv = ["prune", "model.pt", "--calibration", "calibration.npy", "--rel-epsilon", "0.05",
            "--backend", "admm", "--out", "pruned.pt", "--trust-pickle",
            "--solver-options", '{"max_iterations": 5, "polish": false}']
    assert cli.main(argv) == 2
    assert "max_iterations" in capsys.readouterr().err
    assert not (tmp_path / "pruned.pt").exists()
    assert cli.main(argv + ["--allow-inaccurate"]) == 0
    out = capsys.readouterr().out
    assert "max_iterations*" in out
    assert (tmp_path / "pruned.pt").exists()


GPT2_ARCH = '''
import transformers


def build():
    config = transformers.GPT2Config(vocab_size=256, n_positions=16, n_embd=8, n_layer=2, n_head=2)
    return transformers.GPT2LMHeadModel(config)
'''


def gpt2_arch(tmp_path, monkeypatch):
    """The architecture module, importable from a folder put on sys.path (not the current one)."""
    monkeypatch.chdir(tmp_path)
    arch = tmp_path / "arch"
    arch.mkdir()
    (arch / "tiny_gpt2_arch.py").write_text(GPT2_ARCH)
    monkeypatch.syspath_prepend(str(arch))
    import tiny_gpt2_arch

    return tiny_gpt2_arch


@pytest.mark.parametrize("target", [["--sparsity", "0.5"], ["--pattern", "2:4"]])
def test_prune_a_gpt2_state_dict_on_a_text_file_prints_a_line_per_block(tmp_path, monkeypatch,
                                                                       capsys, target):
    pytest.importorskip("transformers")
    pytest.importorskip("safetensors")
    from safetensors.torch import save_file

    tiny_gpt2_arch = gpt2_arch(tmp_path, monkeypatch)
    torch.manual_seed(0)
    model = tiny_gpt2_arch.build()
    save_file({key: value.clone() for key, value in model.state_dict().items()}, "gpt2.safetensors")
    Path("calibration.txt").write_text("def f(x):\n    return x + 1\n" * 20)
    assert cli.main(["prune", "gpt2.safetensors", "--arch", "tiny_gpt2_arch:build",
                     "--calibration", "calibration.txt", "--context", "16", *target,
                     "--out", "pruned.safetensors"]) == 0
    captured = capsys.readouterr()
    blocks = [line for line in captured.err.splitlines() if "] block " in line]
    assert len(blocks) == 2 and all("4/4 refits certified" in line for line in blocks)
    assert "blockwise mode, 50.0% of the weights pruned" in captured.out
    pruned = tiny_gpt2_arch.build()
    from safetensors.torch import load_file

    pruned.load_state_dict(load_file("pruned.safetensors"), strict=False)
    weight = pruned.transformer.h[1].mlp.c_fc.weight      # Conv1D: (inputs, outputs)
    assert int((weight == 0).sum()) == weight.numel() // 2


@pytest.mark.parametrize("argv, words", [
    (["--sparsity", "1.5"], "[0, 1)"), (["--pattern", "3:4", "--context", "0"], "--context"),
    (["--sparsity", "0.5", "--save-results", "results"], "--save-results")])
def test_prune_with_a_target_refuses_bad_options_before_writing(tmp_path, monkeypatch, capsys,
                                                                 argv, words):
    pytest.importorskip("transformers")
    tiny_gpt2_arch = gpt2_arch(tmp_path, monkeypatch)
    torch.save(tiny_gpt2_arch.build().state_dict(), "gpt2.pt")
    Path("calibration.txt").write_text("x = 1\n" * 40)
    assert cli.main(["prune", "gpt2.pt", "--arch", "tiny_gpt2_arch:build", "--calibration",
                     "calibration.txt", "--out", "pruned.pt", *argv]) == 2
    assert words in capsys.readouterr().err
    assert not Path("pruned.pt").exists() and not Path("results").exists()
