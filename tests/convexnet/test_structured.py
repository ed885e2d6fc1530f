"""trim(neurons=): whole units removed by the group-l1 path, consumers refit exactly and certified
(against an independent CVXPY solve), producers zeroed; shrink of the result; the group program
against CVXPY; bad input refused with the model untouched."""

import doctest
import importlib

import cvxpy as cp
import numpy as np
import pytest
import torch
from torch.nn.utils import prune

import convexnet as cn
import convexnet.nn as cnn
from convexnet.errors import InvalidInputError
from convexnet.nn.group_lasso import group_lasso, unit_support

from ..models import mlp

transformers = pytest.importorskip("transformers")


def state(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def test_two_layer_refit_matches_cvxpy_and_is_certified():
    model = mlp(seed=3, sizes=(6, 10, 4))
    x = torch.randn(80, 6, dtype=torch.float64)
    hidden = torch.relu(model[0](x)).detach().numpy()
    W0 = model[2].weight.detach().numpy().T.copy()
    b0 = model[2].bias.detach().numpy().copy()
    report = cnn.trim(model, x, neurons=0.4)
    removed = report.info["units"]["0"]["removed"]
    assert len(removed) == 4 and report.info["units"]["0"]["consumer"] == "2"
    row = report["2"]
    assert row.certificate == "ok" and cn.certificates.verify(row.result).ok
    # independent: min ||[h, 1] ([W; b] - [W0; b0])||^2 with the removed rows zero, by Clarabel
    A = np.hstack([hidden, np.ones((80, 1))])
    target = np.vstack([W0, b0])
    variable = cp.Variable(target.shape)
    cp.Problem(cp.Minimize(cp.sum_squares(A @ (variable - target))),
               [variable[removed, :] == 0]).solve(solver="CLARABEL", tol_gap_abs=1e-12,
                                                   tol_gap_rel=1e-12, tol_feas=1e-12)
    written = np.vstack([model[2].weight.detach().numpy().T, model[2].bias.detach().numpy()])
    assert np.abs(written - variable.value).max() <= 1e-6 * max(1.0, np.abs(target).max())
    # producers: the removed units' rows and biases are zero and masked
    assert prune.is_pruned(model)
    assert torch.all(model[0].weight[removed] == 0) and torch.all(model[0].bias[removed] == 0)
    assert torch.all(model[0].weight_mask[removed] == 0)


def test_mlp_units_removed_per_layer_and_shrink_equal():
    model = mlp(seed=1, sizes=(5, 16, 12, 3)).float()
    x = torch.randn(120, 5)
    report = cnn.trim(model, x, neurons=0.5)
    units = report.info["units"]
    assert {name: len(info["removed"]) for name, info in units.items()} == {"0": 8, "2": 6}
    assert all(row.certificate == "ok" for row in report)
    small = cnn.shrink(model)
    assert (small[0].out_features, small[2].in_features, small[2].out_features,
            small[4].in_features) == (8, 8, 6, 6)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)


def cnn_model():
    torch.manual_seed(4)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 8, 3, padding=1), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(8, 8, 3), torch.nn.ReLU(), torch.nn.Flatten(),
        torch.nn.Linear(8 * 2 * 2, 12), torch.nn.ReLU(), torch.nn.Linear(12, 3))
    model[1].running_mean.normal_()
    model[1].running_var.uniform_(0.5, 2.0)
    return model.eval()


def test_conv_channels_removed_and_shrunk():
    model = cnn_model()
    x = torch.randn(48, 1, 8, 8)
    report = cnn.trim(model, x, neurons=0.3)
    assert [len(report.info["units"][name]["removed"]) for name in ("0", "4", "7")] == [2, 2, 4]
    small = cnn.shrink(model)
    assert (small[0].out_channels, small[1].num_features, small[4].in_channels,
            small[7].in_features) == (6, 6, 6, 24)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)


def test_transformer_heads_and_units():
    torch.manual_seed(5)
    layer = torch.nn.TransformerEncoderLayer(8, 4, 16, dropout=0.0, batch_first=True).double().eval()
    x = torch.randn(6, 5, 8, dtype=torch.float64)
    report = cnn.trim(layer, x, neurons=0.5)
    units = report.info["units"]
    assert len(units["self_attn"]["removed"]) == 2 and len(units["linear1"]["removed"]) == 8
    assert all(row.certificate == "ok" for row in report)
    small = cnn.shrink(layer)
    assert small.self_attn.num_heads == 2 and small.linear1.out_features == 8
    with torch.no_grad():
        assert torch.allclose(small(x), layer(x), atol=1e-10)


def test_gpt2_blockwise_units_and_heads():
    torch.manual_seed(6)
    config = transformers.GPT2Config(vocab_size=32, n_positions=12, n_embd=8, n_layer=2, n_head=2,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).double().eval()
    ids = torch.randint(0, 32, (4, 12))
    report = cnn.trim(model, ids, neurons=0.5)
    assert report.mode == "blockwise"
    assert sorted(report.info["units"]) == ["transformer.h.0.attn", "transformer.h.0.mlp.c_fc",
                                            "transformer.h.1.attn", "transformer.h.1.mlp.c_fc"]
    small = cnn.shrink(model)
    assert small.transformer.h[1].attn.num_heads == 1 and small.transformer.h[0].mlp.c_fc.nf == 16
    with torch.no_grad():
        assert torch.allclose(small(ids).logits, model(ids).logits, atol=1e-9)


def test_group_program_against_cvxpy_regularized_and_budget():
    torch.manual_seed(7)
    X = torch.cat([torch.randn(60, 6, dtype=torch.float64), torch.ones(60, 1, dtype=torch.float64)], 1)
    W0 = torch.randn(7, 3, dtype=torch.float64)
    H = X.T @ X
    unit_of_row = torch.tensor([0, 0, 1, 1, 2, 2, -1])
    D = np.sqrt(np.diag(H.numpy()))
    for lam in (2.0, 30.0):
        W, _ = group_lasso(H, W0, unit_of_row, 3, lam=lam)
        variable = cp.Variable((7, 3))
        scaled = cp.multiply(D[:, None], variable)
        cp.Problem(cp.Minimize(cp.sum_squares(X.numpy() @ (variable - W0.numpy())) + lam * sum(
            cp.norm(scaled[2 * u:2 * u + 2, :], "fro") for u in range(3)))).solve(solver="CLARABEL")
        assert np.abs(W.numpy() - variable.value).max() <= 1e-4
    W, lam = group_lasso(H, W0, unit_of_row, 3, epsilon=4.0)
    assert abs(float((X @ (W - W0)).norm()) - 4.0) <= 1e-3
    with pytest.raises(InvalidInputError, match="exactly one"):
        group_lasso(H, W0, unit_of_row, 3)
    # the path reaches exact counts
    for remove in range(4):
        assert int((~unit_support(H, W0, unit_of_row, 3, remove=remove)).sum()) == remove


def test_select_callable_and_bad_input_leave_the_model_untouched():
    model = mlp(seed=2, sizes=(4, 6, 2))
    x = torch.randn(30, 4, dtype=torch.float64)
    before = state(model)
    for kwargs, message in (({"neurons": 1.0}, "fraction"), ({"neurons": 0.5, "rel_epsilon": 0.1},
                                                             "alone"),
                            ({"neurons": 0.5, "support": lambda units: torch.ones(6) > 0},
                             "3 True"),
                            ({"neurons": 0.5, "layers": ["2"]}, "cannot be removed")):
        with pytest.raises(InvalidInputError, match=message):
            cnn.trim(model, x, **kwargs)
        assert all(torch.equal(model.state_dict()[key], value) for key, value in before.items())
    assert not prune.is_pruned(model)

    def magnitude(units):
        kept = torch.zeros(units.count, dtype=torch.bool)
        kept[torch.argsort(-units.producer.norm(dim=1))[:units.count - units.remove]] = True
        return kept

    report = cnn.trim(model, x, neurons=0.5, support=magnitude, refit=False)
    norms = before["0.weight"].norm(dim=1) ** 2 + before["0.bias"] ** 2
    assert sorted(report.info["units"]["0"]["removed"]) == sorted(
        torch.argsort(norms)[:3].tolist())


@pytest.mark.parametrize("module", ["convexnet.nn.structure", "convexnet.nn.shrink",
                                    "convexnet.nn.group_lasso", "convexnet.nn.exporting"])
def test_docstring_examples_run(module):
    failures, tried = doctest.testmod(importlib.import_module(module))
    assert tried > 0 and failures == 0
