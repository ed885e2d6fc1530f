"""convexnet.nn.trim: torch's pruning invariants, unfold, Proposition 1, atomicity, the command."""

import copy
import io
import os
import pickle
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils import prune  # noqa: E402

import convexnet as cn  # noqa: E402
import convexnet.nn as cnn  # noqa: E402
from convexnet import cli  # noqa: E402
from convexnet.nn import capture as nn_capture  # noqa: E402
from convexnet.nn.layers import adapter_for  # noqa: E402
from tests.models import mlp  # noqa: E402


def convnet(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 6, 3, padding=1), torch.nn.ReLU(inplace=True),
        torch.nn.Conv2d(6, 4, 3, stride=2, groups=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3)).double()


def conv1d_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv1d(2, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv1d(4, 4, 3, stride=2, groups=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3, 3)).double()


def conv3d_net(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(torch.nn.Conv3d(2, 3, 2), torch.nn.ReLU(), torch.nn.Flatten(),
                               torch.nn.Linear(3 * 3 * 3 * 3, 2)).double()


def inputs(seed=1, shape=(60, 5), dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


def linears(model):
    return [m for m in model.modules() if isinstance(m, torch.nn.Linear)]


def activations(model, x):
    """Each Linear/ConvNd module's input and output on ``x`` (an oracle independent of trim)."""
    seen = {}

    def record(module, args, output):
        seen[module] = (args[0].clone(), output.clone())

    hooks = [m.register_forward_hook(record)
             for m in model.modules()
             if isinstance(m, (torch.nn.Linear, torch.nn.Conv1d, torch.nn.Conv2d, torch.nn.Conv3d))]
    with torch.no_grad():
        model(x)
    for hook in hooks:
        hook.remove()
    return seen


# ------------------------------------------------------------------------- the same as numpy
@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_linear_model_gives_trim_network_weights(mode):
    model, X = mlp(), inputs()
    weights = [m.weight.detach().numpy().T.copy() for m in linears(model)]
    biases = [m.bias.detach().numpy().copy() for m in linears(model)]
    net = cn.trim_network(weights, X.numpy(), biases=biases, rel_epsilon=0.05, mode=mode,
                          gamma=1.2, backend="clarabel")
    report = cnn.trim(model, X, rel_epsilon=0.05, mode=mode, gamma=1.2, backend="clarabel")
    for W, b, module in zip(net.weights, net.biases, linears(model)):
        np.testing.assert_allclose(module.weight.detach().numpy().T, W, atol=1e-8)
        np.testing.assert_allclose(module.bias.detach().numpy(), b, atol=1e-8)
    np.testing.assert_allclose([layer.discrepancy for layer in report], net.discrepancy, rtol=1e-6)
    np.testing.assert_allclose([layer.bound for layer in report], net.bound, rtol=1e-6)
    np.testing.assert_allclose([layer.epsilon for layer in report], net.epsilons, rtol=1e-9)
    assert all(layer.discrepancy <= layer.bound * (1 + 1e-6) for layer in report)
    assert [layer.name for layer in report] == ["0", "2", "4"]
    assert [layer.relu for layer in report] == [True, True, False]


# --------------------------------------------------------------------- torch's invariants
def test_pruning_invariants_parameter_identity_and_optimizer():
    model, X = mlp(), inputs()
    weight_params = [m.weight for m in linears(model)]
    bias_params = [m.bias for m in linears(model)]
    optimizer = torch.optim.SGD(model.parameters(), lr=0.05, momentum=0.9, weight_decay=1e-3)
    report = cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    assert prune.is_pruned(model)
    for module, weight, bias, layer in zip(linears(model), weight_params, bias_params, report):
        assert module.weight_orig is weight and module.bias is bias      # the same objects
        assert "weight" not in module._parameters and "weight_mask" in module._buffers
        assert torch.equal(module.weight, module.weight_orig * module.weight_mask)
        assert torch.equal(module.weight_mask, (module.weight_orig != 0).to(module.weight.dtype))
        assert layer.nonzeros == int(module.weight_mask.sum())
    assert report.sparsity > 0
    masks = [module.weight_mask.clone() for module in linears(model)]
    targets = torch.randint(0, 3, (len(X),))
    for _ in range(3):      # the optimizer made before trimming updates the same tensors
        optimizer.zero_grad()
        torch.nn.functional.cross_entropy(model(X), targets).backward()
        optimizer.step()
    for module, mask, weight in zip(linears(model), masks, weight_params):
        assert weight.grad is not None
        assert torch.all(module.weight[mask == 0] == 0)


def test_remove_keeps_outputs_and_state_dict_loads_into_a_fresh_model():
    model, X = mlp(), inputs()
    cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    with torch.no_grad():
        before = model(X)
    for module in linears(model):
        prune.remove(module, "weight")
    assert not prune.is_pruned(model)
    with torch.no_grad():
        torch.testing.assert_close(model(X), before)
    fresh = mlp(seed=5)
    fresh.load_state_dict(model.state_dict())
    with torch.no_grad():
        torch.testing.assert_close(fresh(X), before)


def test_pickle_and_torch_save_round_trip():
    model, X = mlp(), inputs()
    cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    with torch.no_grad():
        before = model(X)
    buffer = io.BytesIO()
    torch.save(model, buffer)
    buffer.seek(0)
    for copied in (pickle.loads(pickle.dumps(model)), torch.load(buffer, weights_only=False)):
        assert prune.is_pruned(copied)
        with torch.no_grad():
            torch.testing.assert_close(copied(X), before)


# ------------------------------------------------------------------------------- unfold
CONVOLUTIONS = {
    "2d stride": (torch.nn.Conv2d, (3, 2), dict(stride=2, padding=1), (3, 4, 9, 7)),
    "2d dilation": (torch.nn.Conv2d, (3, 2), dict(stride=(2, 1), padding=(1, 2), dilation=(1, 2)),
                    (3, 4, 9, 7)),
    "2d groups": (torch.nn.Conv2d, (3, 2), dict(padding=2, dilation=2, groups=2), (3, 4, 9, 7)),
    "2d same reflect": (torch.nn.Conv2d, (3, 2), dict(padding="same", groups=2,
                                                      padding_mode="reflect", bias=False),
                        (3, 4, 9, 7)),
    "2d valid circular": (torch.nn.Conv2d, (3, 2), dict(padding="valid", stride=3, groups=4,
                                                        padding_mode="circular"), (3, 4, 9, 7)),
    "2d replicate": (torch.nn.Conv2d, (3, 2), dict(padding=1, padding_mode="replicate"),
                     (3, 4, 9, 7)),
    "2d unbatched": (torch.nn.Conv2d, 3, dict(padding=1), (4, 6, 5)),
    "1d": (torch.nn.Conv1d, 3, dict(stride=2, padding=1, dilation=2, groups=2), (3, 4, 11)),
    "1d same": (torch.nn.Conv1d, 4, dict(padding="same", padding_mode="reflect"), (3, 4, 11)),
    "3d": (torch.nn.Conv3d, (2, 3, 2), dict(stride=(1, 2, 1), padding=(1, 0, 1), groups=2),
           (2, 4, 5, 6, 4)),
    "3d same": (torch.nn.Conv3d, 3, dict(padding="same", dilation=(1, 2, 1), bias=False),
                (2, 4, 5, 6, 4)),
}


@pytest.mark.parametrize("case", sorted(CONVOLUTIONS))
def test_unfold_form_equals_the_convolution(case):
    kind, kernel, options, shape = CONVOLUTIONS[case]
    torch.manual_seed(0)
    conv = kind(4, 8, kernel, **options).double()
    x = torch.randn(*shape, dtype=torch.float64)
    with torch.no_grad():
        y = conv(x)
    layer = adapter_for(conv)
    X, Y = layer.input_rows(x), layer.output_rows(y)
    blocks = layer.blocks()
    assert len(blocks) == conv.groups and layer.row_count(y) == X.shape[0] == Y.shape[0]
    Z = np.zeros(Y.shape)
    for ins, outs, W, b in blocks:
        Z[:, outs] = X[:, ins].numpy() @ W + (0.0 if b is None else b)
    np.testing.assert_allclose(Z, Y.numpy(), atol=1e-12)
    # Refit blocks written back give the module's own tensors.
    update = layer.update(blocks)
    torch.testing.assert_close(update.weight, conv.weight.detach(), rtol=0, atol=0)
    assert (update.bias is None) == (conv.bias is None)


# -------------------------------------------------------------------------- Proposition 1
@pytest.mark.parametrize("make, shape, kinds", [
    (mlp, (60, 5), ["Linear"] * 3),
    (convnet, (6, 2, 8, 8), ["Conv2d", "Conv2d", "Linear"]),
    (conv1d_net, (6, 2, 8), ["Conv1d", "Conv1d", "Linear"]),
    (conv3d_net, (4, 2, 4, 4, 4), ["Conv3d", "Linear"]),
])
def test_proposition_1_per_layer_through_the_module_in_parallel_mode(make, shape, kinds):
    model, X = make(), inputs(shape=shape)
    original = copy.deepcopy(model)
    seen = activations(original, X)
    report = cnn.trim(model, X, rel_epsilon=0.1, mode="parallel", backend="clarabel")
    pruned = dict(model.named_modules())
    for name, module in original.named_modules():
        if module not in seen:
            continue
        layer, (x, y) = report[name], seen[module]
        with torch.no_grad():
            z = pruned[name](x)
        if layer.relu:
            z, y = torch.relu(z), torch.relu(y)
        assert float(torch.linalg.norm(z - y)) <= layer.epsilon * (1 + 1e-6)
        assert layer.epsilon == pytest.approx(0.1 * float(torch.linalg.norm(y)))
    assert [layer.kind for layer in report] == kinds and prune.is_pruned(model)


def test_parallel_mode_with_an_executor_gives_the_in_process_weights():
    from concurrent.futures import ThreadPoolExecutor

    model, X = convnet(), inputs(shape=(6, 2, 8, 8))
    twin = copy.deepcopy(model)
    local = cnn.trim(model, X, rel_epsilon=0.1, mode="parallel", backend="clarabel")
    with ThreadPoolExecutor(max_workers=2) as pool:
        jobs = cnn.trim(twin, X, rel_epsilon=0.1, mode="parallel", backend="clarabel",
                        executor=pool)
    for a, b in zip(model.state_dict().values(), twin.state_dict().values()):
        torch.testing.assert_close(a, b)
    np.testing.assert_allclose([layer.bound for layer in jobs], [layer.bound for layer in local])


def test_conv_model_in_cascade_mode_and_sample_cap():
    model, X = convnet(), inputs(shape=(6, 2, 8, 8))
    report = cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel", max_samples=200, seed=3)
    first = report["0"]
    assert first.samples == 200 and report["2"].samples == 6 * 3 * 3 and first.kind == "Conv2d"
    assert len(report["2"].results) == 2                 # one program per group
    assert first.discrepancy <= first.epsilon * (1 + 1e-6) and first.bound == first.epsilon
    assert np.isnan(report["5"].bound)                   # no theorem across Flatten after a conv
    again = convnet()
    cnn.trim(again, X, rel_epsilon=0.1, backend="clarabel", max_samples=200, seed=3)
    for a, b in zip(model.parameters(), again.parameters()):
        torch.testing.assert_close(a, b)                 # the seeded subset is reproducible


# ------------------------------------------------------------------------------ atomicity
def state_of(model):
    return ({name: p for name, p in model.named_parameters()},
            {k: v.clone() for k, v in model.state_dict().items()},
            {name: dict(m._forward_pre_hooks) for name, m in model.named_modules()})


def assert_unchanged(model, state):
    params, values, hooks = state
    assert dict(model.named_parameters()) == params          # same names, same objects
    assert all(a is b for a, b in zip(dict(model.named_parameters()).values(), params.values()))
    now = model.state_dict()
    assert now.keys() == values.keys()
    assert all(torch.equal(now[k], values[k]) for k in values)
    assert {name: dict(m._forward_pre_hooks) for name, m in model.named_modules()} == hooks


@pytest.mark.parametrize("failure", ["exception", "infeasible"])
def test_failure_in_the_last_layer_leaves_the_model_as_it_was(monkeypatch, failure):
    model, X = mlp(), inputs()
    state = state_of(model)
    solve = cn.NetTrimProblem.solve
    calls = []

    def failing_solve(problem, *args, **kwargs):
        calls.append(problem)
        result = solve(problem, *args, **kwargs)
        if len(calls) == 3:                                  # the last layer
            if failure == "exception":
                raise RuntimeError("solver crashed")
            result.W_design, result.status = None, "infeasible"
        return result

    monkeypatch.setattr(cn.NetTrimProblem, "solve", failing_solve)
    expected = RuntimeError if failure == "exception" else cn.SolverFailedError
    with pytest.raises(expected, match="crashed|'4'"):
        cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    assert len(calls) == 3 and not prune.is_pruned(model)
    assert_unchanged(model, state)


def test_failure_while_writing_restores_every_module(monkeypatch):
    model, X = mlp(), inputs()
    prune.l1_unstructured(linears(model)[1], "weight", amount=0.3)     # one already pruned
    state = state_of(model)
    real = prune.custom_from_mask
    count = []

    def flaky(module, name, mask):
        count.append(module)
        # Calls 1-2 prune the working copy (layer "2" is already pruned: no call); call 4 is the
        # user's last layer, after layers "0" and "2" have been written.
        if len(count) == 4:
            raise RuntimeError("disk on fire")
        return real(module, name, mask)

    monkeypatch.setattr(prune, "custom_from_mask", flaky)
    with pytest.raises(RuntimeError, match="disk on fire"):
        cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    assert_unchanged(model, state)
    assert not prune.is_pruned(linears(model)[0]) and prune.is_pruned(linears(model)[1])


# ------------------------------------------------------------------------ already pruned
def test_already_pruned_module_gets_weight_orig_written_and_mask_replaced():
    model, X = mlp(), inputs()
    first = linears(model)[0]
    prune.l1_unstructured(first, "weight", amount=0.25)
    original, hook_count = first.weight_orig, len(first._forward_pre_hooks)
    old_mask = first.weight_mask.clone()
    with torch.no_grad():
        x, y = activations(model, X)[first]
    report = cnn.trim(model, X, rel_epsilon=0.05, layers=["0"], backend="clarabel")
    assert first.weight_orig is original and len(first._forward_pre_hooks) == hook_count
    assert torch.equal(first.weight_mask, (first.weight_orig != 0).to(first.weight_mask.dtype))
    assert torch.equal(first.weight, first.weight_orig * first.weight_mask)
    revived = int(((old_mask == 0) & (first.weight_mask != 0)).sum())
    assert report["0"].revived == revived
    with torch.no_grad():                # Net-Trim started from the pruned layer's responses
        z = first(x)
    assert float(torch.linalg.norm(torch.relu(z) - torch.relu(y))) <= report["0"].epsilon * (1 + 1e-6)


# ---------------------------------------------------------------------- dtypes and inputs
def test_float32_model_is_written_in_float32():
    model, X = mlp(dtype=torch.float32), inputs(dtype=torch.float32)
    seen = activations(copy.deepcopy(model), X)
    report = cnn.trim(model, X, rel_epsilon=0.1, mode="parallel", backend="clarabel")
    for (name, layer), (x, y) in zip(((l.name, l) for l in report), seen.values()):
        module = model.get_submodule(name)
        assert module.weight_orig.dtype == torch.float32 and module.weight_mask.dtype == torch.float32
        with torch.no_grad():
            z = module(x)
        if layer.relu:
            z, y = torch.relu(z), torch.relu(y)
        assert float(torch.linalg.norm(z - y)) <= layer.epsilon * (1 + 1e-4)


def test_iterable_of_batches_and_dataloader_pairs_give_the_single_tensor_answer():
    X = inputs()
    whole, batched, loaded = mlp(), mlp(), mlp()
    cnn.trim(whole, X, rel_epsilon=0.1, backend="clarabel")
    cnn.trim(batched, list(torch.split(X, 25)), rel_epsilon=0.1, backend="clarabel")
    dataset = torch.utils.data.TensorDataset(X, torch.zeros(len(X)))
    cnn.trim(loaded, torch.utils.data.DataLoader(dataset, batch_size=16), rel_epsilon=0.1,
             backend="clarabel")
    for a, b, c in zip(whole.parameters(), batched.parameters(), loaded.parameters()):
        torch.testing.assert_close(a, b)
        torch.testing.assert_close(a, c)


def test_relu_detection_and_explicit_relu():
    model = torch.nn.Sequential(torch.nn.Linear(4, 6), torch.nn.Dropout(0.1),
                                torch.nn.ReLU(inplace=True), torch.nn.Linear(6, 6),
                                torch.nn.Tanh(), torch.nn.Linear(6, 2))
    assert nn_capture.detect_relu(model) == {"0"}
    names = ["0", "3", "5"]
    assert nn_capture.resolve_relu(names, model, None) == {"0": True, "3": False, "5": False}
    assert nn_capture.resolve_relu(names, model, {"3": True}) == {"0": True, "3": True,
                                                                       "5": False}
    assert nn_capture.resolve_relu(names, model, {"5"}) == {"0": False, "3": False, "5": True}


class FunctionalRelu(torch.nn.Module):
    def __init__(self):
        super().__init__()
        self.hidden, self.out = torch.nn.Linear(5, 8), torch.nn.Linear(8, 2)

    def forward(self, x):
        return self.out(torch.relu(self.hidden(x)))


def test_functional_relu_needs_saying_and_report_table():
    model, X = FunctionalRelu().double(), inputs()
    report = cnn.trim(model, X, rel_epsilon=0.1, relu={"hidden"}, backend="clarabel")
    assert report["hidden"].relu and not report["out"].relu
    assert report["out"].bound == pytest.approx(report["out"].bound)      # chained: finite
    text = str(report)
    assert text == report.table() and "hidden" in text and "cascade mode" in text
    assert report["hidden"].certificate == "ok" and " ok " in text      # duality-gap certificates
    report["hidden"].results[0].certificate = SimpleNamespace(ok=False)
    assert report["hidden"].certificate == "failed"
    uncertified = cnn.trim(FunctionalRelu().double(), X, rel_epsilon=0.1, relu={"hidden"},
                           backend="clarabel", certify=False)
    assert uncertified["hidden"].certificate == "-"


# -------------------------------------------------------------------------------- bad input
def bad_cases():
    model = mlp()
    X = inputs()
    nan = X.clone()
    nan[3, 1] = float("nan")
    return [
        (dict(model=torch.nn.Sequential(torch.nn.ReLU()), inputs=X, rel_epsilon=0.1),
         cn.InvalidInputError, "no torch.nn.Linear"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, layers=["7"]), cn.InvalidInputError,
         "'7'.*can be trimmed"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, layers=["1"]), cn.InvalidInputError, "ReLU"),
        (dict(model=model, inputs="data.pt", rel_epsilon=0.1), cn.InvalidInputError, "inputs"),
        (dict(model=model, inputs=[X, "x"], rel_epsilon=0.1), cn.InvalidInputError, "batch 1"),
        (dict(model=model, inputs=[], rel_epsilon=0.1), cn.InvalidInputError, "no samples"),
        (dict(model=model, inputs=nan, rel_epsilon=0.1), cn.InvalidInputError, "NaN"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, epsilon=0.1), cn.InvalidInputError,
         "exactly one"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, mode="serial"), cn.InvalidInputError, "mode"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, relu={"9"}), cn.InvalidInputError, "'9'"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, max_samples=0), cn.InvalidInputError,
         "max_samples"),
        (dict(model=model, inputs=inputs(shape=(10, 7)), rel_epsilon=0.1), cn.InvalidInputError,
         "calibration inputs"),
        (dict(model=model, inputs=X, rel_epsilon=0.1, backend="osqp",
          solver_options={"no_such_option": 1}), cn.InvalidInputError, "no_such_option"),
        (dict(model=np.eye(3), inputs=X, rel_epsilon=0.1), cn.InvalidInputError, "torch.nn.Module"),
    ]


@pytest.mark.parametrize("index", range(len(bad_cases())))
def test_bad_input_raises_typed_error_and_leaves_the_model(index):
    kwargs, error, words = bad_cases()[index]
    model = kwargs["model"]
    state = state_of(model) if isinstance(model, torch.nn.Module) else None
    with pytest.raises(error, match=words):
        cnn.trim(**kwargs)
    if state is not None:
        assert_unchanged(model, state)


def test_layer_not_called_is_reported():
    model = FunctionalRelu().double()
    model.unused = torch.nn.Linear(3, 3).double()
    with pytest.raises(cn.InvalidInputError, match="unused.*not called"):
        cnn.trim(model, inputs(), rel_epsilon=0.1)


def test_import_convexnet_stays_torch_free_and_nn_is_lazy():
    code = "import sys, convexnet; assert 'torch' not in sys.modules"
    subprocess.run([sys.executable, "-c", code], check=True)
    assert cn.nn is cnn and cn.nn.trim is cnn.trim


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs CUDA")
def test_cuda_model_is_written_on_its_device():
    model, X = mlp().cuda(), inputs().cuda()
    cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
    assert all(m.weight_mask.is_cuda and m.weight_orig.is_cuda for m in linears(model))


# -------------------------------------------------------------------------------- the command
def write_architecture(folder: Path) -> None:
    (folder / "tiny_nets.py").write_text(
        "import torch\n\n\ndef build():\n"
        "    return torch.nn.Sequential(torch.nn.Linear(5, 16), torch.nn.ReLU(),\n"
        "                               torch.nn.Linear(16, 3))\n")


def test_prune_command_torch_file_and_safetensors(tmp_path, monkeypatch, capsys):
    safetensors_torch = pytest.importorskip("safetensors.torch")
    monkeypatch.chdir(tmp_path)
    write_architecture(tmp_path)
    monkeypatch.syspath_prepend(str(tmp_path))
    import tiny_nets

    torch.manual_seed(0)
    model = tiny_nets.build()
    torch.save(model, "whole.pt")
    safetensors_torch.save_file(model.state_dict(), "weights.safetensors")
    X = inputs(dtype=torch.float32)
    np.save("calibration.npy", X.numpy())
    with torch.no_grad():
        before = model(X)

    assert cli.main(["prune", "whole.pt", "--trust-pickle", "--calibration", "calibration.npy",
                     "--rel-epsilon", "0.05", "--backend", "clarabel", "--out", "pruned.pt"]) == 0
    out = capsys.readouterr()
    assert "pruned model saved to pruned.pt" in out.out and "2/2" in out.err     # progress
    pruned = torch.load("pruned.pt", weights_only=False)
    assert not prune.is_pruned(pruned) and (pruned[2].weight == 0).sum() >= 5
    with torch.no_grad():
        assert float(torch.linalg.norm(pruned(X) - before)) < 0.5 * float(torch.linalg.norm(before))

    assert cli.main(["prune", "weights.safetensors", "--arch", "tiny_nets:build", "--calibration",
                     "calibration.npy", "--rel-epsilon", "0.05", "--mode", "parallel",
                     "--keep-masks", "--out", "pruned.safetensors"]) == 0
    state = safetensors_torch.load_file("pruned.safetensors")
    assert "0.weight_orig" in state and "0.weight_mask" in state
    torch.testing.assert_close(state["0.weight_orig"] * state["0.weight_mask"],
                               pruned[0].weight.detach(), atol=1e-5, rtol=1e-4)


def test_prune_command_errors_are_one_line(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    torch.save(mlp().state_dict(), "state.pt")
    np.save("calibration.npy", inputs().numpy())
    for argv, words in [
        (["state.pt", "--out", "o.pt"], "--arch"),
        (["missing.pt", "--out", "o.pt"], "not a file"),
        (["state.pt", "--out", "o.safetensors"], "suffix .pt"),
        (["state.pt", "--arch", "no_such_module:build", "--out", "o.pt"], "cannot be imported"),
    ]:
        code = cli.main(["prune", *argv, "--calibration", "calibration.npy", "--rel-epsilon", "0.1"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and err.count("\n") == 0 and words in err and "Traceback" not in err


def test_installed_script_runs_end_to_end(tmp_path):
    write_architecture(tmp_path)
    script = Path(sys.executable).parent / "convexnet"
    torch.save(mlp(sizes=(5, 16, 3), dtype=torch.float32).state_dict(), tmp_path / "state.pt")
    np.save(tmp_path / "x.npy", np.random.default_rng(0).standard_normal((40, 5)))
    done = subprocess.run([str(script), "prune", "state.pt", "--arch", "tiny_nets:build",
                           "--calibration", "x.npy", "--rel-epsilon", "0.1", "--out", "out.pt"],
                          cwd=tmp_path, capture_output=True, text=True,
                          # The command never imports from the current folder: say where to look.
                          env={**os.environ, "PYTHONPATH": str(tmp_path)})
    assert done.returncode == 0, done.stderr
    assert "pruned model saved" in done.stdout
    state = torch.load(tmp_path / "out.pt", weights_only=True)
    assert set(state) == {"0.weight", "0.bias", "2.weight", "2.bias"}


# Polish off: it would make the stopped iterate exact, and these tests are about the stopped iterate.
@pytest.mark.parametrize("options", [{"max_iterations": 3, "polish": False},
                                     {"admm": {"max_iterations": 3, "polish": False},
                                      "clarabel": {"max_iter": 50}}])
def test_admm_options_flat_or_keyed_reach_admm_in_the_torch_adapter(options):
    # The adapter adds the model's device to ADMM's options; it must not break the keyed form.
    model, X = mlp(), inputs()
    report = cnn.trim(model, X, rel_epsilon=0.1, backend="admm", solver_options=options,
                      allow_inaccurate=True)
    for layer in report:
        (result,) = layer.results
        assert result.backend == "admm" and result.status == "max_iterations"
        assert (result.iterations == 3).all()
        assert layer.accepted_inaccurate and np.isnan(layer.bound)


def test_every_dropout_between_a_layer_and_its_relu_is_skipped():
    from convexnet.nn.capture import detect_relu

    for dropout in (torch.nn.Dropout3d(), torch.nn.FeatureAlphaDropout(), torch.nn.Dropout1d()):
        model = torch.nn.Sequential(torch.nn.Conv3d(1, 2, 2), dropout, torch.nn.ReLU())
        assert detect_relu(model) == {"0"}
