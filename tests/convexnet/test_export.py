"""cnn.export / cnn.load: pruned weights (dense, CSR, 2:4) and shrunk models round trip to the same
outputs, with the JSON of what was pruned; `convexnet prune --neurons --shrink --out` end to end."""

import json

import numpy as np
import pytest
import torch
from safetensors import safe_open
from torch.nn.utils import prune

import convexnet.nn as cnn
from convexnet import cli
from convexnet.errors import InvalidInputError

from ..models import TINY_ARCH, mlp, tiny_files


def metadata(path):
    with safe_open(str(path), framework="pt") as handle:
        return json.loads(handle.metadata()["convexnet"])


def test_shrunk_export_round_trips_to_the_same_outputs(tmp_path):
    model = mlp(seed=0, sizes=(5, 12, 8, 3)).float()
    x = torch.randn(60, 5)
    report = cnn.trim(model, x, neurons=0.5)
    path = tmp_path / "small.safetensors"
    info = cnn.export(model, path, shrink=True)
    assert info == metadata(path)
    assert info["removed"] == {name: units["removed"] for name, units in
                               report.info["units"].items()}
    assert info["pruned"]["0.weight"]["nonzeros"] == 6 * 5
    loaded = cnn.load(path, mlp(seed=9, sizes=(5, 12, 8, 3)).float())
    assert (loaded[0].out_features, loaded[2].in_features, loaded[4].in_features) == (6, 6, 4)
    with torch.no_grad():
        assert torch.allclose(loaded(x), model(x), atol=1e-5)
    assert prune.is_pruned(model)                  # the exported model is left as it was


@pytest.mark.parametrize("sparse", [None, "csr", "2:4"])
def test_sparse_layouts_round_trip(tmp_path, sparse):
    model = mlp(seed=1, sizes=(8, 12, 4)).float()
    x = torch.randn(40, 8)
    cnn.trim(model, x, pattern="2:4")
    path = tmp_path / "pruned.safetensors"
    info = cnn.export(model, path, sparse=sparse)
    assert set(info["layouts"]) == (set() if sparse is None else {"0.weight", "2.weight"})
    with safe_open(str(path), framework="pt") as handle:
        keys = set(handle.keys())
    if sparse == "2:4":
        assert {"0.weight.values", "0.weight.positions"} <= keys and "0.weight" not in keys
    loaded = cnn.load(path, mlp(seed=2, sizes=(8, 12, 4)).float())
    with torch.no_grad():
        assert torch.equal(loaded(x), model(x))


def test_bad_export_input_is_refused_and_nothing_is_written(tmp_path):
    model = mlp(seed=3, sizes=(8, 12, 4)).float()
    cnn.trim(model, torch.randn(30, 8), sparsity=0.25)
    path = tmp_path / "out.safetensors"
    for kwargs, words in (({"sparse": "2:4"}, "more than 2 non-zeros"),
                          ({"sparse": "coo"}, "sparse must be"), ({"format": "onnx"}, "format")):
        with pytest.raises(InvalidInputError, match=words):
            cnn.export(model, path, **kwargs)
        assert not path.exists()
    torch.save({}, tmp_path / "plain.pt")
    from safetensors.torch import save_file
    save_file({"w": torch.zeros(2)}, str(tmp_path / "other.safetensors"))
    with pytest.raises(InvalidInputError, match="not written by convexnet"):
        cnn.load(tmp_path / "other.safetensors", model)
    cnn.export(model, path)
    with pytest.raises(InvalidInputError, match="do not fit"):
        cnn.load(path, mlp(sizes=(8, 10, 4)))


def test_cli_prune_neurons_shrink_out(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    tiny_files(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    (tmp_path / "tiny_arch_shrink.py").write_text(TINY_ARCH)
    argv = ["prune", "model.pt", "--arch", "tiny_arch_shrink:build", "--calibration",
            "calibration.npy", "--neurons", "0.5", "--shrink"]
    assert cli.main(argv + ["--out", "small.pt"]) == 2
    assert ".safetensors" in capsys.readouterr().err and not (tmp_path / "small.pt").exists()
    assert cli.main(argv + ["--out", "small.safetensors"]) == 0
    assert "3 units removed" in capsys.readouterr().out
    namespace: dict = {}
    exec(TINY_ARCH, namespace)
    original = namespace["build"]()
    original.load_state_dict(torch.load("model.pt"))
    loaded = cnn.load("small.safetensors", namespace["build"]())
    assert loaded[0].out_features == 3
    x = torch.as_tensor(np.load("calibration.npy"))
    pruned = namespace["build"]()
    pruned.load_state_dict(torch.load("model.pt"))
    cnn.trim(pruned, x, neurons=0.5)
    with torch.no_grad():
        assert torch.allclose(loaded(x), pruned(x), atol=1e-5)
        assert not torch.allclose(loaded(x), original(x), atol=1e-3)
