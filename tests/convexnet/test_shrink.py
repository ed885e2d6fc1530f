"""cnn.shrink: physically smaller copies whose outputs equal the pruned model's (float32, 1e-5),
the input model untouched; typed errors naming the module when a pruned unit's uses are unknown."""

import copy

import pytest
import torch
import torch.nn.functional as F
from torch.nn.utils import prune

import convexnet.nn as cnn
from convexnet.errors import InvalidInputError
from convexnet.nn.pruned_attention import PrunedAttention

transformers = pytest.importorskip("transformers")


def state(model):
    return {key: value.detach().clone() for key, value in model.state_dict().items()}


def assert_unchanged(model, before):
    after = model.state_dict()
    assert after.keys() == before.keys()
    assert all(torch.equal(after[key], before[key]) for key in before)


def parameters(model):
    return sum(p.numel() for p in model.parameters())


def cnn_chain():
    torch.manual_seed(0)
    model = torch.nn.Sequential(
        torch.nn.Conv2d(1, 6, 3, padding=1), torch.nn.BatchNorm2d(6), torch.nn.ReLU(),
        torch.nn.MaxPool2d(2), torch.nn.Conv2d(6, 8, 3), torch.nn.BatchNorm2d(8), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(8 * 2 * 2, 10), torch.nn.ReLU(), torch.nn.Dropout(0.1),
        torch.nn.Linear(10, 3))
    for norm in (model[1], model[5]):
        norm.running_mean.normal_()
        norm.running_var.uniform_(0.5, 2.0)
        norm.weight.data.normal_()
        norm.bias.data.normal_()
    return model.eval()


def test_conv_chain_with_batchnorm_shrinks_to_equal_outputs():
    model = cnn_chain()
    # units removed through the consumers (pruning masks on their input columns / channels) ...
    prune.custom_from_mask(model[4], "weight", torch.ones_like(model[4].weight).index_fill_(
        1, torch.tensor([1, 4]), 0))
    mask = torch.ones_like(model[8].weight)
    mask[:, 4 * 2:4 * 3] = 0                        # channel 2 of conv 4, its 2x2 positions
    prune.custom_from_mask(model[8], "weight", mask)
    # ... and through a producer with nothing but a ReLU after it (its rows and bias zero)
    with torch.no_grad():
        model[8].weight_orig[[0, 7]] = 0
        model[8].bias[[0, 7]] = 0
    before = state(model)
    small = cnn.shrink(model)
    assert_unchanged(model, before)
    assert prune.is_pruned(model) and not prune.is_pruned(small)
    assert (small[0].out_channels, small[1].num_features, small[4].in_channels) == (4, 4, 4)
    assert (small[4].out_channels, small[5].running_mean.shape[0]) == (7, 7)
    assert (small[8].in_features, small[8].out_features, small[11].in_features) == (28, 8, 8)
    assert parameters(small) < parameters(model)
    x = torch.randn(16, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5, rtol=1e-5)
    assert not small.training


def test_batchnorm_shift_keeps_a_unit_whose_producer_alone_is_zero():
    model = cnn_chain()
    with torch.no_grad():
        model[0].weight[2] = 0
        model[0].bias[2] = 0                   # BatchNorm still outputs a constant for channel 2
    small = cnn.shrink(model)
    assert small[0].out_channels == 6
    x = torch.randn(4, 1, 8, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), model(x), atol=1e-5)


def test_linear_chain_in_training_mode_keeps_the_mode_and_gradients_flow():
    torch.manual_seed(1)
    model = torch.nn.Sequential(torch.nn.Linear(5, 12), torch.nn.ReLU(), torch.nn.Linear(12, 9),
                                torch.nn.GELU(), torch.nn.Linear(9, 2))
    with torch.no_grad():
        model[2].weight[:, ::3] = 0
        model[4].weight[:, [1, 2]] = 0
    small = cnn.shrink(model)
    assert small.training
    assert [small[0].out_features, small[2].in_features, small[2].out_features] == [8, 8, 7]
    x = torch.randn(6, 5)
    assert torch.allclose(small(x), model(x), atol=1e-5)
    small(x).sum().backward()
    assert small[0].weight.grad is not None


def test_transformer_encoder_layer_with_heads_and_units_removed():
    torch.manual_seed(2)
    layer = torch.nn.TransformerEncoderLayer(16, 4, 32, dropout=0.0, batch_first=True).eval()
    with torch.no_grad():
        layer.self_attn.out_proj.weight[:, 4:12] = 0           # heads 1 and 2 of 4 (head_dim 4)
        layer.linear2.weight[:, ::2] = 0
    before = state(layer)
    small = cnn.shrink(layer)
    assert_unchanged(layer, before)
    assert isinstance(small.self_attn, PrunedAttention) and small.self_attn.num_heads == 2
    assert small.self_attn.in_proj_weight.shape == (24, 16)
    assert small.linear1.out_features == 16
    x = torch.randn(3, 7, 16)
    padding = torch.zeros(3, 7, dtype=torch.bool)
    padding[:, 5:] = True
    causal = torch.nn.Transformer.generate_square_subsequent_mask(7)
    with torch.no_grad():
        for kwargs in ({}, {"src_key_padding_mask": padding}, {"src_mask": causal}):
            assert torch.allclose(small(x, **kwargs), layer(x, **kwargs), atol=1e-5), kwargs


def test_transformer_encoder_stack_batch_second():
    torch.manual_seed(3)
    encoder = torch.nn.TransformerEncoder(
        torch.nn.TransformerEncoderLayer(8, 2, 16, dropout=0.0), num_layers=2,
        enable_nested_tensor=False).eval()
    with torch.no_grad():
        encoder.layers[1].self_attn.out_proj.weight[:, :4] = 0
    small = cnn.shrink(encoder)
    x = torch.randn(5, 2, 8)
    with torch.no_grad():
        assert torch.allclose(small(x), encoder(x), atol=1e-5)
    assert small.layers[1].self_attn.num_heads == 1 and small.layers[0].self_attn.num_heads == 2


def gpt2(seed=0):
    torch.manual_seed(seed)
    config = transformers.GPT2Config(vocab_size=64, n_positions=16, n_embd=16, n_layer=2, n_head=4,
                                     resid_pdrop=0.0, embd_pdrop=0.0, attn_pdrop=0.0,
                                     bos_token_id=0, eos_token_id=0)
    return transformers.GPT2LMHeadModel(config).eval()


def test_gpt2_model_and_block_shrink_to_equal_outputs():
    model = gpt2()
    block = model.transformer.h[0]
    with torch.no_grad():
        block.attn.c_proj.weight[4:8] = 0                    # head 1 (head_dim 4)
        block.mlp.c_proj.weight[:20] = 0                     # 20 of the 64 MLP units
        model.transformer.h[1].mlp.c_fc.weight[:, 3:7] = 0   # units 3..6 from the producer side
        model.transformer.h[1].mlp.c_fc.bias[3:7] = 0
    before = state(model)
    small = cnn.shrink(model)
    assert_unchanged(model, before)
    attention = small.transformer.h[0].attn
    assert (attention.num_heads, attention.split_size, attention.c_attn.nf) == (3, 12, 36)
    assert small.transformer.h[0].mlp.c_fc.nf == 44 and small.transformer.h[1].mlp.c_proj.nx == 60
    ids = torch.randint(0, 64, (2, 10))
    with torch.no_grad():
        assert torch.allclose(small(ids).logits, model(ids).logits, atol=1e-5)
        hidden = torch.randn(2, 10, 16)
        small_block = cnn.shrink(block)
        out_small, out = small_block(hidden), block(hidden)
        out_small = out_small[0] if isinstance(out_small, tuple) else out_small
        out = out[0] if isinstance(out, tuple) else out
        assert torch.allclose(out_small, out, atol=1e-5)
    assert parameters(small) < parameters(model)


class Residual(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down, self.head = (torch.nn.Linear(4, 6), torch.nn.Linear(6, 4),
                                         torch.nn.Linear(4, 3))

    def forward(self, x):
        return self.head(x + self.down(torch.relu(self.up(x))))


class Functional(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.up, self.down = torch.nn.Linear(4, 6), torch.nn.Linear(6, 3)

    def forward(self, x):
        return F.linear(torch.relu(self.up(x)), self.down.weight, self.down.bias)


def test_residual_whose_sides_disagree_names_the_module_and_copies_nothing():
    model = Residual()
    prune.ln_structured(model.down, "weight", amount=0.5, n=2, dim=0)
    with torch.no_grad():
        model.down.bias.zero_()
    before = state(model)
    with pytest.raises(InvalidInputError, match=r"module 'down'.*add"):
        cnn.shrink(model)
    assert_unchanged(model, before)
    # the residual itself is fine when the removed units are inside the branch
    model = Residual()
    prune.ln_structured(model.down, "weight", amount=0.5, n=2, dim=1)
    small = cnn.shrink(model)
    x = torch.randn(5, 4)
    assert small.up.out_features == 3 and torch.allclose(small(x), model(x), atol=1e-6)


def test_functional_call_in_forward_names_the_module():
    model = Functional()
    with torch.no_grad():
        model.up.weight[:2] = 0
        model.up.bias[:2] = 0
    with pytest.raises(InvalidInputError, match=r"module 'up'.*linear"):
        cnn.shrink(model)
    untouched = copy.deepcopy(Functional())        # nothing pruned: nothing to remove, no error
    assert parameters(cnn.shrink(untouched)) == parameters(untouched)


def test_shrink_refuses_what_is_not_a_module():
    with pytest.raises(InvalidInputError, match="torch.nn.Module"):
        cnn.shrink("model.pt")
