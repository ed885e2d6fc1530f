"""Pruning transformer language models to a target: exact sparsity, N:M patterns, the certified exact
refit (against CVXPY), block-by-block calibration against the whole-model cascade, bad inputs."""

import copy
import warnings

import cvxpy as cp
import numpy as np
import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from torch.nn.utils import prune  # noqa: E402

import convexnet as cn  # noqa: E402
import convexnet.nn as cnn  # noqa: E402
from convexnet.errors import InvalidInputError  # noqa: E402
from convexnet.nn.layers import model_adapters  # noqa: E402


def gpt2(layers=2, seed=0, embed=16):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=embed, n_layer=layers,
                                     n_head=2, resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).double().eval()


def llama(seed=0):
    torch.manual_seed(seed)
    config = transformers.LlamaConfig(vocab_size=64, hidden_size=16, intermediate_size=32,
                                      num_hidden_layers=2, num_attention_heads=2,
                                      num_key_value_heads=1, max_position_embeddings=16)
    return transformers.LlamaForCausalLM(config).double().eval()


def encoder(seed=0):
    torch.manual_seed(seed)
    layer = torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0, batch_first=True)
    return torch.nn.TransformerEncoder(layer, 2, enable_nested_tensor=False).double().eval()


def tokens(shape=(6, 16), seed=1):
    return torch.randint(0, 64, shape, generator=torch.Generator().manual_seed(seed))


def trim(model, data, **options):
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)       # GPT-2's tied lm_head is skipped
        return cnn.trim(model, data, **options)


def design_weights(model):
    """``{name: W (N, M)}`` of every pruned layer, read through an independent path (state)."""
    return {name: adapter.design(adapter.module.get_parameter(adapter.weight_name + "_orig")
                                 * getattr(adapter.module, adapter.weight_name + "_mask"))
            for name, adapter in model_adapters(model).items()
            if hasattr(adapter.module, adapter.weight_name + "_mask")}


# ------------------------------------------------------------------------------ targets
@pytest.mark.parametrize("build, data", [(gpt2, tokens()), (llama, tokens()),
                                         (encoder, torch.randn(4, 6, 8, dtype=torch.float64))],
                         ids=["gpt2", "llama", "encoder"])
def test_sparsity_half_gives_exactly_half_of_every_row(build, data):
    model = build()
    report = trim(model, data, sparsity=0.5)
    assert report.mode == "blockwise" and len(report) > 0
    for name, W in design_weights(model).items():
        assert ((W == 0).sum(0) == W.shape[0] // 2).all(), name
        assert prune.is_pruned(model.get_submodule(name))
    assert all(row.certificate == "ok" and row.status == "optimal" for row in report)
    assert all(row.result.certificate.relative_gap <= 1e-6 for row in report)


def test_sparsity_per_layer_counts_the_whole_layer():
    model = gpt2(layers=1)
    trim(model, tokens(), sparsity=0.3, per="layer")
    for W in design_weights(model).values():
        assert int((W == 0).sum()) == int(np.floor(0.3 * W.numel() + 0.5))


def semi_structured_ok(W, n=2, m=4):
    """PyTorch's semi-structured rule, checked directly: each group of m consecutive inputs of an
    output (a row of torch's (M, N) weight, a column of W) holds at most n non-zeros."""
    rows = W.T
    groups = rows.reshape(rows.shape[0], rows.shape[1] // m, m)
    return bool(((groups != 0).sum(-1) <= n).all())


@pytest.mark.parametrize("pattern, n, m", [("2:4", 2, 4), ("1:4", 1, 4), ("4:8", 4, 8)])
def test_pattern_meets_the_semi_structured_rule(pattern, n, m):
    model = gpt2()
    report = trim(model, tokens(), pattern=pattern)
    weights = design_weights(model)
    assert len(weights) == 8
    for W in weights.values():
        assert semi_structured_ok(W, n, m)
        assert (W == 0).sum() == W.numel() * (m - n) // m      # every group holds exactly n
    assert all(row.certificate == "ok" for row in report)


# ------------------------------------------------------------------------------- refit
def test_refit_of_a_fixed_mask_matches_cvxpy_and_is_certified():
    torch.manual_seed(3)
    model = torch.nn.Sequential(torch.nn.Linear(6, 4)).double()
    X = torch.randn(40, 6, dtype=torch.float64)
    mask = torch.rand(4, 6, generator=torch.Generator().manual_seed(4)) > 0.5
    W0, b0 = model[0].weight.detach().numpy().copy(), model[0].bias.detach().numpy().copy()
    report = cnn.refit(model, X, {"0": mask})
    # the oracle: min ||X (W - W0) + (b - b0)||^2 over the mask, written in CVXPY, solved by Clarabel
    Xn = X.numpy()
    W, b = cp.Variable((4, 6)), cp.Variable(4)
    residual = Xn @ (W - W0).T + np.ones((40, 1)) @ cp.reshape(b - b0, (1, 4), order="C")
    problem = cp.Problem(cp.Minimize(cp.sum_squares(residual)),
                         [cp.multiply(~mask.numpy(), W) == 0])
    problem.solve(solver="CLARABEL", tol_gap_abs=1e-12, tol_gap_rel=1e-12, tol_feas=1e-12)
    assert np.abs(model[0].weight.detach().numpy() - W.value).max() < 1e-6
    assert np.abs(model[0].bias.detach().numpy() - b.value).max() < 1e-6
    assert torch.equal(model[0].weight_mask != 0, mask)
    result = report["0"].result
    assert cn.certificates.verify(result).ok and report["0"].certificate == "ok"
    assert abs(result.objective - problem.value) <= 1e-6 * max(1.0, problem.value)


def test_refit_of_magnitude_masks_lowers_each_layers_error():
    model = gpt2()
    masks = {}
    for name, adapter in model_adapters(model).items():
        if name == "lm_head":
            continue
        W = adapter.design(adapter.module.weight.detach()).abs()
        keep = W >= W.median(0, keepdim=True).values
        masks[name] = keep if adapter.kind == "Conv1D" else keep.T
    masked = copy.deepcopy(model)
    with torch.no_grad():
        for name, mask in masks.items():
            masked.get_submodule(name).weight.mul_(mask)
    refit = copy.deepcopy(model)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        report = cnn.refit(refit, tokens(), masks)
    assert all(row.certificate == "ok" for row in report)
    data = tokens((6, 16), seed=1)
    dense = model(data).logits
    assert (refit(data).logits - dense).norm() < (masked(data).logits - dense).norm()


# ------------------------------------------------------------------ block by block
@pytest.mark.parametrize("options", [{"sparsity": 0.5}, {"pattern": "2:4"}])
def test_block_by_block_equals_the_whole_model_cascade(options):
    blockwise, whole = gpt2(), gpt2()
    rows_blockwise = trim(blockwise, tokens(), blockwise=True, **options)
    rows_whole = trim(whole, tokens(), blockwise=False, **options)
    assert rows_blockwise.mode == "blockwise" and rows_whole.mode == "cascade"
    assert [row.name for row in rows_blockwise] == [row.name for row in rows_whole]
    first, second = design_weights(blockwise), design_weights(whole)
    for name in first:
        assert torch.equal(first[name] != 0, second[name] != 0), name
        assert torch.allclose(first[name], second[name], rtol=1e-8, atol=1e-10), name
    data = tokens(seed=5)
    assert torch.allclose(blockwise(data).logits, whole(data).logits, atol=1e-8)


def test_block_progress_and_report_rows_name_their_block():
    seen = []
    report = trim(gpt2(), tokens(), sparsity=0.5, progress=lambda i, n, row: seen.append((i, n, row.block)))
    assert [block for _, _, block in seen] == [0, 0, 0, 0, 1, 1, 1, 1]
    assert seen[-1][:2] == (7, 8) and report.info["blocks"] == ["transformer.h.0", "transformer.h.1"]


# ------------------------------------------------------------------------- bad inputs
def state(model):
    return {key: value.clone() for key, value in model.state_dict().items()}


def unchanged(model, before):
    after = model.state_dict()
    return after.keys() == before.keys() and all(torch.equal(after[k], before[k]) for k in before) \
        and not prune.is_pruned(model)


@pytest.mark.parametrize("options, words", [
    ({"sparsity": 1.0}, "[0, 1)"), ({"sparsity": -0.1}, "[0, 1)"), ({"sparsity": True}, "[0, 1)"),
    ({"pattern": "2-4"}, "'n:m'"), ({"pattern": "4:2"}, "0 < n < m"),
    ({"pattern": "2:3"}, "does not divide"), ({"sparsity": 0.5, "rel_epsilon": 0.1}, "not both"),
    ({"sparsity": 0.5, "per": "column"}, "per must be")])
def test_bad_targets_are_refused_before_work(options, words):
    model = gpt2(layers=1)
    before = state(model)
    with pytest.raises(InvalidInputError, match=words.replace("[", r"\[").replace(")", r"\)")):
        trim(model, tokens(), **options)
    assert unchanged(model, before)


@pytest.mark.parametrize("data, words", [
    (torch.rand(6, 16), "dtype"), (torch.randint(0, 64, (16,)), "shape"),
    (torch.randint(0, 64, (2, 3, 4)), "shape"), (torch.full((2, 4), 64), "outside"),
    (torch.randint(0, 64, (2, 40)), "positions")])
def test_bad_calibration_is_refused_before_work(data, words):
    model = gpt2(layers=1)
    before = state(model)
    with pytest.raises(InvalidInputError, match=words):
        trim(model, data, sparsity=0.5)
    assert unchanged(model, before)


def test_a_model_without_supported_layers_is_refused():
    with pytest.raises(InvalidInputError, match="no .* layer"):
        cnn.trim(torch.nn.Sequential(torch.nn.ReLU(), torch.nn.Tanh()), torch.randn(3, 2),
                 sparsity=0.5)


def test_a_failure_in_block_3_leaves_the_model_as_it_was():
    model = gpt2(layers=4, embed=8)
    before = state(model)
    seen = []

    def support(layer):
        seen.append(layer.name)
        if layer.name.startswith("transformer.h.3."):
            raise RuntimeError("injected failure in block 3")
        largest = torch.topk(layer.W.abs(), layer.W.shape[0] // 2, dim=0).indices
        return torch.zeros_like(layer.W, dtype=torch.bool).scatter_(0, largest, True)

    with pytest.raises(RuntimeError, match="block 3"):
        trim(model, tokens(), sparsity=0.5, support=support)
    assert any(name.startswith("transformer.h.2.") for name in seen)
    assert unchanged(model, before)


def test_block_by_block_runs_the_whole_model_once_on_the_first_batch_only():
    """The calibration streams through one block at a time: past the first batch (the check that
    each block's output is the next one's input), the head never runs, and block b + 1 only runs
    once block b's layers are written."""
    model = gpt2(layers=2)
    batches = [tokens((3, 16), seed=seed) for seed in range(4)]
    calls, events = {"lm_head": 0}, []
    model.lm_head.register_forward_hook(lambda *args: calls.__setitem__("lm_head",
                                                                        calls["lm_head"] + 1))
    for index, block in enumerate(model.transformer.h):
        block.register_forward_pre_hook(lambda module, args, index=index: events.append(index))
    report = trim(model, batches, sparsity=0.5,
                  progress=lambda i, n, row: events.append(("written", row.name)))
    assert calls["lm_head"] == 2              # the check pass and the order pass, first batch only
    first_write = next(i for i, event in enumerate(events) if isinstance(event, tuple))
    assert events[:first_write].count(1) == 2     # block 1 ran in those two passes only
    block0_done = events.index(("written", "transformer.h.0.mlp.c_proj"))
    assert 1 not in events[first_write:block0_done]
    # then pruned block 0 runs once more (its outputs are block 1's inputs), and block 1 alone
    advance = block0_done + 1 + len(batches)
    assert events[block0_done + 1:advance] == [0] * len(batches) and 0 not in events[advance:]
    assert events[advance:].count(1) == 4 * len(batches)          # one pass per layer of block 1
    assert report.mode == "blockwise"
