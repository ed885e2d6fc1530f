"""Faults in models: a failure anywhere in ``nn.trim`` or in a training step leaves the model as it was.

Issue 16, items 5 (tied weights), 6 (unfinished layers), 10 (torch inputs: meta, bfloat16, devices,
executors, string flags) and 12 (NaN gradients), and exceptions injected inside each layer's solve.
Real torch modules, real solvers (Clarabel), tiny sizes.
"""

import warnings

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils import prune  # noqa: E402

import convexnet as cn  # noqa: E402
import convexnet.nn as cnn  # noqa: E402
from convexnet import penalties, sets, training  # noqa: E402
from convexnet.nn import capture as nn_capture  # noqa: E402
from tests.models import mlp  # noqa: E402


def convnet(seed=0):
    torch.manual_seed(seed)
    return torch.nn.Sequential(
        torch.nn.Conv2d(2, 4, 3, padding=1), torch.nn.ReLU(),
        torch.nn.Conv2d(4, 4, 3, stride=2, groups=2), torch.nn.ReLU(),
        torch.nn.Flatten(), torch.nn.Linear(4 * 3 * 3, 3)).double()


def data(shape=(40, 5), seed=1, dtype=torch.float64):
    return torch.randn(*shape, generator=torch.Generator().manual_seed(seed), dtype=dtype)


MODELS = {"mlp": (mlp, (40, 5)), "conv": (convnet, (4, 2, 8, 8))}


# ------------------------------------------------------------------------------ the oracle
def snapshot(model):
    """Everything a write could change: tensor objects and values, hooks, module attributes."""
    return {
        "parameters": {name: (p, p.detach().clone()) for name, p in
                       model.named_parameters(remove_duplicate=False)},
        "buffers": {name: (b, b.detach().clone()) for name, b in
                    model.named_buffers(remove_duplicate=False)},
        "hooks": {name: (dict(m._forward_pre_hooks), dict(m._forward_hooks))
                  for name, m in model.named_modules()},
        "attributes": {name: sorted(vars(m)) for name, m in model.named_modules()},
        "training": {name: m.training for name, m in model.named_modules()},
    }


def assert_bit_identical(model, before):
    after = snapshot(model)
    assert after["parameters"].keys() == before["parameters"].keys()
    for name, (tensor, values) in before["parameters"].items():
        now, _ = after["parameters"][name]
        assert now is tensor, name                                   # the same Parameter object
        assert now.dtype == values.dtype and torch.equal(now.detach(), values), name
    assert after["buffers"].keys() == before["buffers"].keys()
    for name, (tensor, values) in before["buffers"].items():
        assert torch.equal(after["buffers"][name][1], values), name
    assert after["hooks"] == before["hooks"]                         # no prune hook registered
    assert after["attributes"] == before["attributes"]
    assert after["training"] == before["training"]


def fail_on_call(monkeypatch, call, how="raise"):
    """Make the ``call``-th program solve (1-based) fail; returns the list of solved programs."""
    solve = cn.NetTrimProblem.solve
    calls = []

    def solve_or_fail(problem, *args, **kwargs):
        calls.append(problem)
        if len(calls) == call:
            if how == "raise":
                raise RuntimeError("injected fault")
            # A real backend that stops early: Clarabel after one iteration.
            kwargs.update(backend="clarabel", solver_options={"max_iter": 1})
        return solve(problem, *args, **kwargs)

    monkeypatch.setattr(cn.NetTrimProblem, "solve", solve_or_fail)
    return calls


# --------------------------------------------------------------------- faults inside a solve
@pytest.mark.parametrize("mode", ["cascade", "parallel"])
@pytest.mark.parametrize("where", ["first", "middle", "last"])
@pytest.mark.parametrize("how", ["raise", "max_iterations"])
def test_fault_in_any_layers_solve_leaves_the_model_bit_identical(monkeypatch, mode, where, how):
    model, X = mlp(), data()
    prune.l1_unstructured(model[2], "weight", amount=0.3)       # one layer pruned before
    before = snapshot(model)
    call = {"first": 1, "middle": 2, "last": 3}[where]
    calls = fail_on_call(monkeypatch, call, how)
    expected = RuntimeError if how == "raise" else cn.SolverFailedError
    with pytest.raises(expected, match="injected fault|max_iterations"):
        cnn.trim(model, X, rel_epsilon=0.1, mode=mode, backend="clarabel")
    assert len(calls) == call                                    # stopped at the failing layer
    assert_bit_identical(model, before)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
@pytest.mark.parametrize("call", [1, 3])                    # the first conv; its second group
def test_fault_in_a_convolution_group_leaves_the_model_bit_identical(monkeypatch, mode, call):
    make, shape = MODELS["conv"]
    model, X = make(), data(shape)
    before = snapshot(model)
    fail_on_call(monkeypatch, call)
    with pytest.raises(RuntimeError, match="injected fault"):
        cnn.trim(model, X, rel_epsilon=0.1, mode=mode, backend="clarabel")
    assert_bit_identical(model, before)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
@pytest.mark.parametrize("index", [0, 1, 2])
def test_progress_callback_that_raises_leaves_the_model_bit_identical(mode, index):
    model, X = mlp(), data()
    before = snapshot(model)

    def progress(i, n, layer):
        if i == index:
            raise KeyboardInterrupt                  # a user's Ctrl-C arrives in the callback

    with pytest.raises(KeyboardInterrupt):
        cnn.trim(model, X, rel_epsilon=0.1, mode=mode, backend="clarabel", progress=progress)
    assert_bit_identical(model, before)


# --------------------------------------------------------------------- item 6: unfinished
@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_unfinished_layer_is_not_written(monkeypatch, mode):
    model, X = mlp(), data()
    before = snapshot(model)
    calls = fail_on_call(monkeypatch, 2, how="max_iterations")
    with pytest.raises(cn.SolverFailedError, match="layer '2'.*allow_inaccurate=True") as caught:
        cnn.trim(model, X, rel_epsilon=0.1, mode=mode, backend="clarabel")
    assert caught.value.status == "max_iterations"
    assert len(calls) == 2
    assert_bit_identical(model, before)


@pytest.mark.parametrize("backend, options", [("clarabel", {"max_iter": 1}),
                                              ("admm", {"max_iterations": 3, "polish": False})])
def test_real_backend_stopped_early_is_refused_then_accepted_when_asked(backend, options):
    model, X = mlp(), data()
    before = snapshot(model)
    with pytest.raises(cn.SolverFailedError, match="layer '0'") as caught:
        cnn.trim(model, X, rel_epsilon=0.1, backend=backend, solver_options=options)
    assert caught.value.status == "max_iterations"
    assert_bit_identical(model, before)
    report = cnn.trim(model, X, rel_epsilon=0.1, backend=backend, solver_options=options,
                      allow_inaccurate=True)
    assert all(layer.status == "max_iterations" and layer.accepted_inaccurate for layer in report)
    assert prune.is_pruned(model)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_allow_inaccurate_writes_and_flags_the_layer(monkeypatch, mode):
    model, X = mlp(), data()
    fail_on_call(monkeypatch, 2, how="max_iterations")
    report = cnn.trim(model, X, rel_epsilon=0.1, mode=mode, backend="clarabel",
                      allow_inaccurate=True)
    assert [layer.accepted_inaccurate for layer in report] == [False, True, False]
    assert report["2"].status == "max_iterations" and prune.is_pruned(model[2])
    # The theorems need every constraint to hold: no bound for the unfinished layer or after it.
    assert report["0"].bound == report["0"].epsilon
    assert np.isnan(report["2"].bound) and np.isnan(report["4"].bound)
    table = report.table()
    assert "max_iterations*" in table and "allow_inaccurate=True" in table


@pytest.mark.parametrize("status, written", [("optimal_inaccurate", True), ("solver_error", False),
                                             ("infeasible", False)])
def test_which_statuses_are_written(monkeypatch, status, written):
    # "optimal_inaccurate" is a finished solve (its accuracy assessed below the tolerance): written
    # as before. A status that is no solution is refused even with allow_inaccurate=True.
    model, X = mlp(), data()
    before = snapshot(model)
    solve = cn.NetTrimProblem.solve

    def relabel(problem, *args, **kwargs):
        result = solve(problem, *args, **kwargs)
        result.status = status
        return result

    monkeypatch.setattr(cn.NetTrimProblem, "solve", relabel)
    if written:
        report = cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel")
        assert not any(layer.accepted_inaccurate for layer in report) and prune.is_pruned(model)
    else:
        with pytest.raises(cn.SolverFailedError, match=status) as caught:
            cnn.trim(model, X, rel_epsilon=0.1, backend="clarabel", allow_inaccurate=True)
        assert caught.value.status == status
        assert_bit_identical(model, before)


# ------------------------------------------------------------------- item 5: tied weights
class TiedMiddle(torch.nn.Module):
    """``a`` and ``b`` share one weight (tied); ``first`` and ``out`` are their own."""

    def __init__(self, share_storage=False):
        super().__init__()
        torch.manual_seed(0)
        # float64 from the start: .double() would give the two views of one memory separate copies.
        make = {"dtype": torch.float64}
        self.first, self.a, self.b = (torch.nn.Linear(5, 6, **make), torch.nn.Linear(6, 6, **make),
                                      torch.nn.Linear(6, 6, **make))
        self.out = torch.nn.Linear(6, 3, **make)
        if share_storage:           # two Parameter objects, one memory
            self.b.weight = torch.nn.Parameter(self.a.weight.data)
        else:
            self.b.weight = self.a.weight

    def forward(self, x):
        x = torch.relu(self.first(x))
        return self.out(torch.relu(self.b(torch.relu(self.a(x)))))


class TiedLanguageModel(torch.nn.Module):
    """An output layer tied to the embedding, as in GPT-2."""

    def __init__(self):
        super().__init__()
        torch.manual_seed(0)
        self.embedding = torch.nn.Embedding(10, 6)
        self.hidden = torch.nn.Linear(6, 6)
        self.head = torch.nn.Linear(6, 10, bias=False)
        self.head.weight = self.embedding.weight

    def forward(self, tokens):
        return self.head(torch.relu(self.hidden(self.embedding(tokens))))


def tokens():
    return torch.randint(0, 10, (8, 5), generator=torch.Generator().manual_seed(0))


@pytest.mark.parametrize("share_storage", [False, True])
def test_default_selection_skips_tied_layers_and_says_so(share_storage):
    model = TiedMiddle(share_storage)
    tied = model.a.weight.detach().clone()
    with pytest.warns(UserWarning, match=r"skips layers \['a', 'b'\].*a.weight is b.weight"):
        report = cnn.trim(model, data((40, 5)), rel_epsilon=0.1, backend="clarabel")
    assert [layer.name for layer in report] == ["first", "out"]
    assert set(report.info["skipped"]) == {"a", "b"} and "skipped 'a'" in report.table()
    assert not prune.is_pruned(model.a) and not prune.is_pruned(model.b)
    assert torch.equal(model.a.weight, tied) and torch.equal(model.b.weight, tied)


@pytest.mark.parametrize("layers", [["a"], ["b"], ["first", "a", "b"]])
def test_naming_a_tied_layer_is_refused_before_any_work(monkeypatch, layers):
    model = TiedMiddle()
    before = snapshot(model)
    monkeypatch.setattr(nn_capture, "working_copy", no_work)
    with pytest.raises(cn.InvalidInputError, match=r"'[ab]'.*[ab]\.weight.*untie"):
        cnn.trim(model, data((40, 5)), rel_epsilon=0.1, layers=layers, backend="clarabel")
    assert_bit_identical(model, before)


def test_output_layer_tied_to_the_embedding_is_skipped_or_refused():
    model = TiedLanguageModel().double()
    with pytest.warns(UserWarning, match="head.weight is embedding.weight"):
        report = cnn.trim(model, tokens(), rel_epsilon=0.1, backend="clarabel")
    assert [layer.name for layer in report] == ["hidden"]
    assert not prune.is_pruned(model.head) and model.head.weight is model.embedding.weight
    before = snapshot(model)
    with pytest.raises(cn.InvalidInputError, match="'head'.*embedding.weight"):
        cnn.trim(model, tokens(), rel_epsilon=0.1, layers=["head"], backend="clarabel")
    assert_bit_identical(model, before)


def test_a_module_registered_twice_is_not_tied_to_itself():
    class Aliased(torch.nn.Module):
        def __init__(self):
            super().__init__()
            self.net = mlp()
            self.alias = self.net[0]             # one module, two names: trimmed once, no warning

        def forward(self, x):
            return self.net(x)

    model = Aliased()
    with warnings.catch_warnings():
        warnings.simplefilter("error")
        report = cnn.trim(model, data(), rel_epsilon=0.1, backend="clarabel")
    assert [layer.name for layer in report] == ["net.0", "net.2", "net.4"]
    assert not report.info["skipped"]


def test_every_layer_tied_is_refused():
    model = TiedMiddle()
    del model.first, model.out
    model.forward = lambda x: model.b(torch.relu(model.a(x)))
    with pytest.raises(cn.InvalidInputError, match="every Linear and convolution layer.*Untie"):
        cnn.trim(model, data((40, 6)), rel_epsilon=0.1, backend="clarabel")


# -------------------------------------------------------------- item 10: inputs, checked first
def no_work(*args, **kwargs):
    raise AssertionError("trim started working before checking its arguments")


BAD_OPTIONS = {
    "device bogus": (dict(device="bogus"), "device"),
    "device meta": (dict(device="meta"), "device"),
    "executor string": (dict(executor="pool"), "executor.*Executor"),
    "split_budget string": (dict(split_budget="no"), "split_budget must be True or False"),
    "penalize_bias string": (dict(penalize_bias="False"), "penalize_bias must be True or False"),
    "certify string": (dict(certify="no"), "certify must be True, False or a dict"),
    "allow_inaccurate string": (dict(allow_inaccurate="yes"), "allow_inaccurate"),
    "progress int": (dict(progress=3), "progress must be None or a callable"),
    "meta inputs": (dict(inputs=torch.zeros(4, 5, device="meta")), "meta"),
    "complex inputs": (dict(inputs=torch.zeros(4, 5, dtype=torch.complex128)), "complex"),
}


@pytest.mark.parametrize("case", sorted(BAD_OPTIONS))
def test_bad_options_raise_typed_errors_before_any_work(monkeypatch, case):
    options, words = BAD_OPTIONS[case]
    model = mlp()
    before = snapshot(model)
    monkeypatch.setattr(nn_capture, "working_copy", no_work)
    arguments = {"inputs": data(), "rel_epsilon": 0.1, "backend": "clarabel", **options}
    with pytest.raises(cn.InvalidInputError, match=words):
        cnn.trim(model, **arguments)
    assert_bit_identical(model, before)


def test_meta_model_is_refused_naming_the_fix():
    model = mlp().to("meta")
    with pytest.raises(cn.InvalidInputError, match="meta device.*to_empty"):
        cnn.trim(model, data(), rel_epsilon=0.1)


@pytest.mark.parametrize("mode", ["cascade", "parallel"])
def test_bfloat16_model_is_solved_in_float64_and_written_in_bfloat16(mode):
    model = mlp().to(torch.bfloat16)
    report = cnn.trim(model, data(dtype=torch.float32), rel_epsilon=0.1, mode=mode,
                      backend="clarabel")
    for layer in report:
        module = model.get_submodule(layer.name)
        assert module.weight_orig.dtype == module.weight_mask.dtype == torch.bfloat16
        written = torch.as_tensor(layer.result.W.T).to(torch.bfloat16)
        assert torch.equal(module.weight_orig.detach(), written)
        assert torch.equal(module.weight_mask, (written != 0).to(torch.bfloat16))
        assert np.isfinite(layer.discrepancy)
    assert report.sparsity > 0


# ------------------------------------------------------------- item 12: training steps
def training_setup(kind, optimizer_class=torch.optim.Adam, device="cpu"):
    model = mlp(sizes=(5, 6, 3)).to(device)
    optimizer = optimizer_class(model.parameters(), lr=0.01)
    if kind == "projected":
        wrapper = training.ProjectedOptimizer(optimizer, [(model[0], sets.L1Ball(2.0)),
                                                          (model[2], sets.NuclearBall(1.0))])
    else:
        wrapper = training.RVSM(optimizer, model, penalties.L1(1e-2), beta=0.5)
    return model, wrapper


def loss_of(model):
    return model(data()).square().mean()


def optimizer_state(wrapper):
    return {id(p): {k: v.clone() if torch.is_tensor(v) else v for k, v in s.items()}
            for p, s in wrapper.optimizer.state.items()}


def assert_state_equal(a, b):
    assert a.keys() == b.keys()
    for key in a:
        assert a[key].keys() == b[key].keys()
        for name in a[key]:
            assert torch.equal(torch.as_tensor(a[key][name]), torch.as_tensor(b[key][name]))


@pytest.mark.parametrize("kind", ["projected", "rvsm"])
@pytest.mark.parametrize("closure", [False, True])
def test_nan_gradient_leaves_parameters_and_optimizer_state_unchanged(kind, closure):
    model, wrapper = training_setup(kind)
    loss_of(model).backward()
    wrapper.step()                                    # Adam has state now
    wrapper.zero_grad()
    before, state = snapshot(model), optimizer_state(wrapper)
    u_before = [split.u.clone() for split in getattr(wrapper, "splits", [])]

    def poisoned():
        wrapper.zero_grad()
        loss = loss_of(model)
        loss.backward()
        model[2].weight.grad[0, 1] = float("nan")
        return loss

    with pytest.raises(cn.InvalidInputError, match=r"gradient of .*weight.*not taken"):
        wrapper.step(poisoned) if closure else (poisoned(), wrapper.step())
    assert_bit_identical(model, before)
    assert_state_equal(optimizer_state(wrapper), state)
    assert all(torch.equal(a, split.u) for a, split in zip(u_before, getattr(wrapper, "splits", [])))
    wrapper.zero_grad()
    loss_of(model).backward()
    wrapper.step()                                    # training goes on after the refusal
    assert all(torch.isfinite(p).all() for p in model.parameters())


@pytest.mark.parametrize("kind", ["projected", "rvsm"])
def test_step_that_overflows_is_undone(kind):
    model, wrapper = training_setup(kind, torch.optim.SGD)
    loss_of(model).backward()
    before = snapshot(model)
    for parameter in model.parameters():
        parameter.grad.mul_(1e300)                    # finite gradients, an infinite step
    for group in wrapper.param_groups:
        group["lr"] = 1e10
    with pytest.raises(cn.SolverFailedError, match="NaN or infinite") as caught:
        wrapper.step()
    assert caught.value.status == "non_finite"
    assert_bit_identical(model, before)


def test_failing_projection_undoes_the_optimizer_step(monkeypatch):
    model, wrapper = training_setup("projected")
    loss_of(model).backward()
    before, state = snapshot(model), optimizer_state(wrapper)

    def broken(self, matrix):
        raise RuntimeError("projection failed")

    monkeypatch.setattr(sets.NuclearBall, "project", broken)
    with pytest.raises(RuntimeError, match="projection failed"):
        wrapper.step()
    assert_bit_identical(model, before)
    assert_state_equal(optimizer_state(wrapper), state)      # Adam's first step undone: no state


@pytest.mark.parametrize("make_set", [lambda: sets.NuclearBall(1.0), lambda: sets.LowRank(1)])
def test_bfloat16_layers_are_projected_in_float32(make_set):
    model = mlp(sizes=(5, 6, 3)).to(torch.bfloat16)
    wrapper = training.ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.1),
                                          [(model[0], make_set())])
    model(data(dtype=torch.bfloat16)).square().mean().backward()
    wrapper.step()
    assert model[0].weight.dtype == torch.bfloat16
    assert wrapper.is_feasible(tol=1e-2)                     # bfloat16 keeps about 3 digits


def test_meta_layers_are_refused_by_the_training_wrappers():
    model = mlp(sizes=(5, 6, 3)).to("meta")
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    with pytest.raises(cn.InvalidInputError, match="meta device"):
        training.ProjectedOptimizer(optimizer, [(model[0], sets.L1Ball(1.0))])
    with pytest.raises(cn.InvalidInputError, match="meta device"):
        training.RVSM(optimizer, model, penalties.L1(0.1), beta=0.1)
    model = mlp(sizes=(5, 6, 3))
    with pytest.raises(cn.InvalidInputError, match="penalize_bias must be True or False"):
        training.RVSM(torch.optim.SGD(model.parameters(), lr=0.1), model, penalties.L1(0.1),
                      beta=0.1, penalize_bias="no")


@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("kind", ["projected", "rvsm"])
def test_nan_gradient_on_cuda_leaves_the_model_unchanged(kind):
    model, wrapper = training_setup(kind, device="cuda")
    model(data().cuda()).square().mean().backward()
    model[0].bias.grad[0] = float("inf")
    before = snapshot(model)
    with pytest.raises(cn.InvalidInputError, match="0.bias|constraints"):
        wrapper.step()
    assert_bit_identical(model, before)


def test_a_refit_failing_in_block_3_of_a_gpt2_leaves_it_as_it_was(monkeypatch):
    """Issue 14: the convex support choice and refit run on a working copy; an exception in block
    3's refit (the 13th layer of a 4-block GPT-2) leaves every tensor, hook and attribute as it was."""
    transformers = pytest.importorskip("transformers")
    from convexnet.nn import pruning

    torch.manual_seed(0)
    config = transformers.GPT2Config(vocab_size=32, n_positions=8, n_embd=8, n_layer=4, n_head=2,
                                     bos_token_id=0, eos_token_id=0)
    model = transformers.GPT2LMHeadModel(config).eval()
    before = snapshot(model)
    calls = []
    real = pruning.masked_refit

    def failing(*args, **kwargs):
        calls.append(1)
        if len(calls) == 13:
            raise RuntimeError("injected refit failure in block 3")
        return real(*args, **kwargs)

    monkeypatch.setattr(pruning, "masked_refit", failing)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", UserWarning)
        with pytest.raises(RuntimeError, match="block 3"):
            cnn.trim(model, torch.randint(0, 32, (4, 8)), pattern="2:4")
    assert len(calls) == 13
    assert_bit_identical(model, before)
    assert not prune.is_pruned(model)
