"""Layer adapters for transformers' GPT-2 ``Conv1D`` and ``nn.MultiheadAttention``: round trips
weight -> matrix -> weight, and inputs/outputs against hand-written references."""

import math

import pytest

torch = pytest.importorskip("torch")
transformers = pytest.importorskip("transformers")
from transformers.pytorch_utils import Conv1D  # noqa: E402

from convexnet.nn.layers import adapter_for, model_adapters  # noqa: E402


def double(module):
    return module.double().eval()


def round_trip(adapter):
    """weight -> [W; b] -> weight: writing the matrix back, scaled, scales the weights."""
    matrix = adapter.matrix().clone()
    with torch.no_grad():
        adapter.write_matrix(2.0 * matrix)
    assert torch.equal(adapter.matrix(), 2.0 * matrix)
    with torch.no_grad():
        adapter.write_matrix(matrix)
    assert torch.equal(adapter.matrix(), matrix)


@pytest.mark.parametrize("module", [
    torch.nn.Linear(5, 3), torch.nn.Linear(5, 3, bias=False), torch.nn.Conv1d(4, 6, 3, groups=2),
    torch.nn.Conv2d(2, 4, 3), torch.nn.Conv3d(2, 2, 2), Conv1D(3, 5)], ids=lambda m: type(m).__name__)
def test_round_trip_of_every_adapter(module):
    round_trip(adapter_for(double(module)))


def test_gpt2_conv1d_matrix_is_its_weight_and_rows_reproduce_it():
    torch.manual_seed(0)
    layer = double(Conv1D(7, 4)).requires_grad_(False)   # nf=7 outputs, nx=4 inputs: weight (4, 7)
    adapter = adapter_for(layer)
    W = adapter.matrix()
    assert adapter.kind == "Conv1D" and W.shape == (5, 7)
    assert torch.equal(W[:4], layer.weight) and torch.equal(W[4], layer.bias)
    x = torch.randn(2, 3, 4, dtype=torch.float64)
    X, Y = adapter.input_rows(x), adapter.output_rows(layer(x))
    # the reference: every token a sample, y = x @ weight + bias written out entry by entry
    reference = torch.tensor([[sum(float(x[b, t, i]) * float(layer.weight[i, j]) for i in range(4))
                               + float(layer.bias[j]) for j in range(7)]
                              for b in range(2) for t in range(3)], dtype=torch.float64)
    assert torch.allclose(Y, reference) and torch.allclose(X @ W[:4] + W[4], reference)
    assert adapter.design(layer.weight).shape == (4, 7)


def attention_by_hand(mha, x):
    """Multi-head self-attention before the output projection, written out (batch first)."""
    E, heads = mha.embed_dim, mha.num_heads
    d = E // heads
    qkv = x @ mha.in_proj_weight.T + mha.in_proj_bias
    q, k, v = qkv[..., :E], qkv[..., E:2 * E], qkv[..., 2 * E:]
    out = torch.empty_like(q)
    for h in range(heads):
        part = slice(h * d, (h + 1) * d)
        scores = q[..., part] @ k[..., part].transpose(1, 2) / math.sqrt(d)
        out[..., part] = torch.softmax(scores, dim=-1) @ v[..., part]
    return out


def test_multihead_attention_adapters_match_a_hand_written_attention():
    torch.manual_seed(1)
    mha = double(torch.nn.MultiheadAttention(6, 2, batch_first=True))
    adapters = model_adapters(torch.nn.Sequential(mha))
    inner, outer = adapters["0"], adapters["0.out_proj"]
    assert inner.matrix().shape == (7, 18) and outer.matrix().shape == (7, 6)
    assert torch.equal(inner.matrix()[:6], mha.in_proj_weight.T)
    round_trip(inner)
    round_trip(outer)
    x = torch.randn(3, 5, 6, dtype=torch.float64)
    seen = {}

    def hook(module, args, kwargs, output):
        seen["X_in"] = inner.call_inputs(args, kwargs)
        seen["Y_in"] = inner.call_outputs(args, kwargs, output)
        seen["X_out"] = outer.call_inputs(args, kwargs)
        seen["Y_out"] = outer.call_outputs(args, kwargs, output)
        seen["rows"] = (inner.call_rows(args, kwargs, output), outer.call_rows(args, kwargs, output))

    handle = outer.hooked.register_forward_hook(hook, with_kwargs=True)
    with torch.no_grad():
        y, _ = mha(x, x, x, need_weights=False)
    handle.remove()
    assert outer.hooked is mha and seen["rows"] == (15, 15)
    # rows are ordered (position, batch) in both; compare through the same layout
    by_hand = attention_by_hand(mha, x).transpose(0, 1).reshape(-1, 6)
    assert torch.allclose(seen["X_out"], by_hand, atol=1e-12)
    W_out = outer.matrix()
    assert torch.allclose(seen["X_out"] @ W_out[:6] + W_out[6], seen["Y_out"], atol=1e-12)
    assert torch.allclose(seen["Y_out"], y.transpose(0, 1).reshape(-1, 6), atol=1e-12)
    W_in = inner.matrix()
    assert torch.allclose(seen["X_in"] @ W_in[:6] + W_in[6], seen["Y_in"], atol=1e-12)


def test_cross_attention_is_refused():
    mha = double(torch.nn.MultiheadAttention(4, 1, batch_first=True))
    adapter = adapter_for(mha)
    x, memory = torch.randn(1, 2, 4, dtype=torch.float64), torch.randn(1, 3, 4, dtype=torch.float64)
    with pytest.raises(ValueError, match="cross-attention"):
        adapter.call_inputs((x, memory, memory), {})


def test_gpt2_model_layers_are_its_conv1d_modules():
    config = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=1, n_head=2)
    model = transformers.GPT2LMHeadModel(config)
    kinds = {name: adapter.kind for name, adapter in model_adapters(model).items()}
    assert kinds == {"transformer.h.0.attn.c_attn": "Conv1D", "transformer.h.0.attn.c_proj": "Conv1D",
                     "transformer.h.0.mlp.c_fc": "Conv1D", "transformer.h.0.mlp.c_proj": "Conv1D",
                     "lm_head": "Linear"}


def test_convexnet_nn_works_without_transformers():
    """``import convexnet.nn`` neither needs nor imports transformers (it is an optional extra)."""
    import subprocess
    import sys

    code = ("import sys; sys.modules['transformers'] = None\n"
            "import torch, convexnet.nn as cnn\n"
            "model = torch.nn.Sequential(torch.nn.Linear(8, 4))\n"
            "report = cnn.trim(model, torch.randn(32, 8), sparsity=0.5)\n"
            "print(report['0'].nonzeros, 'transformers.pytorch_utils' in sys.modules)\n")
    done = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, timeout=120)
    assert done.returncode == 0, done.stderr
    assert done.stdout.split() == ["16", "False"]


def test_training_projects_gpt2_and_attention_layers_through_the_same_adapters():
    """ProjectedOptimizer keeps a transformers Conv1D and a MultiheadAttention's packed in_proj
    in an l1,inf ball: the design matrix ``[W; b]`` (each output's incoming weights) is what is
    projected."""
    from convexnet import sets, training

    torch.manual_seed(2)
    conv = Conv1D(6, 4).double()
    mha = torch.nn.MultiheadAttention(4, 2, batch_first=True).double()
    radius = 0.5
    optimizer = training.ProjectedOptimizer(
        torch.optim.SGD([*conv.parameters(), *mha.parameters()], lr=0.1),
        [(conv, sets.L1InfBall(radius)), (mha, sets.L1InfBall(radius))])
    x = torch.randn(3, 5, 4, dtype=torch.float64)
    loss = conv(x).pow(2).sum() + mha(x, x, x, need_weights=False)[0].pow(2).sum()
    loss.backward()
    optimizer.step()
    for module in (conv, mha):
        matrix = training.design_matrix(module)
        assert float(matrix.abs().sum(0).max()) <= radius * (1 + 1e-9)
    assert training.design_matrix(conv).shape == (5, 6)
    assert training.design_matrix(mha).shape == (5, 12)
