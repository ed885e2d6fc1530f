"""Faults while convexnet writes a file (issue 16): a kill or an error in the middle of
``convexnet prune --out`` or of ``NetTrimResult.save`` leaves the old file or the complete new one,
never a broken one.

The kills run in a subprocess that replaces a writer with one that writes half of the content and
then calls ``os._exit(1)`` (no cleanup, no ``finally``: as a power cut or ``SIGKILL`` would), or
that lets ``os.replace`` happen and then dies.
"""

import io
import os
import pickle
import subprocess
import sys

import numpy as np
import pytest
import torch

import convexnet as cn
from tests.models import tiny_files
from convexnet import cli


# argv: KILL_POINT ("mid-write" or "after-replace"), then "prune" and the command's arguments, or
# "save" PICKLED_RESULT TARGET.
KILLER = '''
import io, os, pickle, sys

import numpy as np
import torch

point, action, *rest = sys.argv[1:]


def half_then_die(real):
    is_torch = real is torch.save

    def writer(obj_or_file, *args, **kwargs):
        # torch.save(obj, f) and np.savez_compressed(file, **arrays) name their target differently.
        obj, target = (obj_or_file, args[0]) if is_torch else (None, obj_or_file)
        buffer = io.BytesIO()
        if is_torch:
            real(obj, buffer)
        else:
            real(buffer, *args, **kwargs)
        data = buffer.getvalue()
        handle = target if hasattr(target, "write") else open(target, "wb")
        handle.write(data[: len(data) // 2])
        handle.flush()
        os._exit(1)
    return writer


if point == "mid-write":
    torch.save = half_then_die(torch.save)
    np.savez_compressed = half_then_die(np.savez_compressed)
else:
    real_replace = os.replace

    def replace_then_die(*args, **kwargs):
        real_replace(*args, **kwargs)
        os._exit(1)

    os.replace = replace_then_die

if action == "prune":
    from convexnet.cli import main

    sys.exit(main(["prune", *rest]))
with open(rest[0], "rb") as handle:
    result = pickle.load(handle)
result.save(rest[1])
'''


def tiny_model(folder):
    """TINY_ARCH's files in ``folder``, its builder in ``folder/arch``."""
    (folder / "arch").mkdir()
    tiny_files(folder, folder / "arch")


def prune_argv(out="model.pt", *extra):
    return ["prune", "model.pt", "--arch", "tiny_arch:build", "--calibration", "calibration.npy",
            "--rel-epsilon", "0.1", "--backend", "clarabel", "--out", out, *extra]


def kill(point, argv, folder):
    env = {**os.environ, "PYTHONPATH": str(folder / "arch")}
    return subprocess.run([sys.executable, "-c", KILLER, point, *argv], cwd=folder, env=env,
                          capture_output=True, text=True, timeout=120)


def zeros(state):
    return sum(int((tensor == 0).sum()) for tensor in state.values())


@pytest.mark.parametrize("point", ["mid-write", "after-replace"])
def test_kill_during_prune_out_onto_its_own_input(tmp_path, point):
    tiny_model(tmp_path)
    original = (tmp_path / "model.pt").read_bytes()
    run = kill(point, prune_argv("model.pt"), tmp_path)
    assert run.returncode == 1, run.stderr       # killed by the injected os._exit, not an error
    state = torch.load(tmp_path / "model.pt", weights_only=True)
    if point == "mid-write":
        assert (tmp_path / "model.pt").read_bytes() == original
        assert zeros(state) == 0
    else:
        assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"} and zeros(state) > 0


def two_results():
    rng = np.random.default_rng(0)
    X, W = rng.standard_normal((40, 6)), rng.standard_normal((6, 3))
    return (cn.NetTrimProblem.from_weights(X, W, lam=2.0).solve("clarabel"),
            cn.NetTrimProblem.from_weights(X, W, lam=0.5).solve("clarabel"))


@pytest.mark.parametrize("point", ["mid-write", "after-replace"])
def test_kill_during_result_save(tmp_path, point):
    old, new = two_results()
    old.save(tmp_path / "result.npz")
    before = (tmp_path / "result.npz").read_bytes()
    (tmp_path / "new.pkl").write_bytes(pickle.dumps(new))
    run = kill(point, ["save", "new.pkl", "result.npz"], tmp_path)
    assert run.returncode == 1, run.stderr
    with np.load(tmp_path / "result.npz") as saved:
        kept = saved["W_design"]
        assert cn.certificates.verify(dict(saved)).ok
    if point == "mid-write":
        assert (tmp_path / "result.npz").read_bytes() == before
    else:
        np.testing.assert_array_equal(kept, new.W_design)


def test_failed_prune_does_not_touch_its_input_given_as_out(tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    tiny_model(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path / "arch"))
    original = (tmp_path / "model.pt").read_bytes()
    listing = sorted(os.listdir(tmp_path))
    assert cli.main(prune_argv("model.pt", "--layers", "no_such_layer")) == 2
    assert (tmp_path / "model.pt").read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == listing

    # A write that fails half-way (a full disk): the input stays, and no temporary file either.
    real_save = torch.save

    def half_then_fail(obj, target, *args, **kwargs):
        buffer = io.BytesIO()
        real_save(obj, buffer)
        handle = target if hasattr(target, "write") else open(target, "wb")
        handle.write(buffer.getvalue()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(torch, "save", half_then_fail)
    assert cli.main(prune_argv("model.pt")) == 2
    assert (tmp_path / "model.pt").read_bytes() == original
    assert sorted(os.listdir(tmp_path)) == listing


def test_failed_result_save_keeps_the_old_file(tmp_path, monkeypatch):
    old, new = two_results()
    old.save(tmp_path / "result.npz")
    before = (tmp_path / "result.npz").read_bytes()
    real_savez = np.savez_compressed

    def half_then_fail(file, *args, **kwargs):
        buffer = io.BytesIO()
        real_savez(buffer, *args, **kwargs)
        handle = file if hasattr(file, "write") else open(file, "wb")
        handle.write(buffer.getvalue()[:100])
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(np, "savez_compressed", half_then_fail)
    with pytest.raises(OSError, match="No space"):
        new.save(tmp_path / "result.npz")
    assert (tmp_path / "result.npz").read_bytes() == before
    assert os.listdir(tmp_path) == ["result.npz"]


def test_result_save_names_and_modes_as_a_plain_write(tmp_path):
    result, _ = two_results()
    # numpy's rule: ".npz" is appended unless the name ends with it; an open file is used as is.
    result.save(tmp_path / "plain")
    result.save(str(tmp_path / "other.bin"))
    with open(tmp_path / "handle.npz", "wb") as handle:
        result.save(handle)
    assert sorted(os.listdir(tmp_path)) == ["handle.npz", "other.bin.npz", "plain.npz"]
    umask = os.umask(0o022)
    os.umask(umask)
    assert (tmp_path / "plain.npz").stat().st_mode & 0o777 == 0o666 & ~umask
    # Replacing a file keeps its permissions (the temporary file starts private).
    (tmp_path / "plain.npz").chmod(0o640)
    result.save(tmp_path / "plain.npz")
    assert (tmp_path / "plain.npz").stat().st_mode & 0o777 == 0o640
