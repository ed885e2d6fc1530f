"""convexnet.training: projections after every step, RVSM's splitting, torch invariants, bad input."""

import copy
import re

import numpy as np
import pytest

torch = pytest.importorskip("torch")
from torch.nn.utils import prune  # noqa: E402

from convexnet import penalties, sets  # noqa: E402
from convexnet import training  # noqa: E402
from convexnet.nn.layers import adapter_for  # noqa: E402
from convexnet.errors import InvalidInputError  # noqa: E402

DTYPES = [torch.float32, torch.float64]


# Round-off of a projection in the layer's dtype (the kernels solve in float64, write in the dtype).
TOL = {torch.float32: 1e-5, torch.float64: 1e-10}


def mlp(seed=0, dtype=torch.float64, sizes=(6, 5, 3), bias=True):
    torch.manual_seed(seed)
    layers = []
    for index, (a, b) in enumerate(zip(sizes[:-1], sizes[1:])):
        layers.append(torch.nn.Linear(a, b, bias=bias))
        if index < len(sizes) - 2:
            layers.append(torch.nn.ReLU())
    return torch.nn.Sequential(*layers).to(dtype)


def batch(seed=1, shape=(16, 6), dtype=torch.float64):
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(*shape, generator=generator, dtype=dtype), torch.randn(shape[0], 3,
                                                                                 generator=generator,
                                                                                 dtype=dtype)


def backward(model, X, Y):
    loss = (model(X) - Y).square().mean()
    loss.backward()
    return loss


# Every projection set, with a layer whose [W; b] it takes: (N + 1, M) = (7, 5) for Linear(6, 5).
SETS = {
    "l1": lambda: sets.L1Ball(1.5),
    "l1inf": lambda: sets.L1InfBall(0.4),
    "sum_of_max": lambda: sets.SumOfMaxBall(0.8),
    "nuclear": lambda: sets.NuclearBall(1.0),
    "sparse": lambda: sets.Sparse(6),
    "low_rank": lambda: sets.LowRank(2),
    "subspace": lambda: sets.Subspace(np.linalg.qr(np.random.default_rng(0).standard_normal((35, 9)))[0],
                                      shape=(7, 5)),
}


# ------------------------------------------------------------------------------ the matrices
def test_design_matrix_linear_has_bias_row():
    layer = torch.nn.Linear(4, 3).double()
    V = training.design_matrix(layer)
    assert V.shape == (5, 3)
    torch.testing.assert_close(V[:4], layer.weight.detach().T)
    torch.testing.assert_close(V[4], layer.bias.detach())
    X = torch.randn(7, 4, dtype=torch.float64)
    torch.testing.assert_close(torch.cat([X, torch.ones(7, 1, dtype=X.dtype)], 1) @ V, layer(X).detach())
    V.zero_()     # a copy: the layer is untouched
    assert layer.weight.abs().sum() > 0


def test_design_matrix_conv2d_is_the_unfolded_layer():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(4, 6, 3, stride=2, groups=2).double()
    V = training.design_matrix(conv)
    assert V.shape == (2 * 3 * 3 + 1, 6)
    x = torch.randn(2, 4, 7, 7, dtype=torch.float64)
    output = conv(x).detach()
    patches = adapter_for(conv).input_rows(x)
    for group in range(2):
        rows = slice(group * 18, (group + 1) * 18)
        columns = slice(group * 3, (group + 1) * 3)
        expected = output[:, columns].permute(0, 2, 3, 1).reshape(-1, 3)
        torch.testing.assert_close(patches[:, rows] @ V[:18, columns] + V[18, columns], expected)


# --------------------------------------------------------------------- projected optimizer
@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(SETS))
def test_every_step_is_the_sets_projection_of_the_optimizer_step(name, dtype):
    """Oracle: the plain optimizer's step on a copy, then the set's own projection of [W; b]."""
    model = mlp(dtype=dtype)
    twin = copy.deepcopy(model)
    constraint = SETS[name]()
    wrapped = training.ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.3, momentum=0.5),
                                          [(model[0], constraint)])
    plain = torch.optim.SGD(twin.parameters(), lr=0.3, momentum=0.5)
    X, Y = batch(dtype=dtype)
    wrapped.project_now()
    with torch.no_grad():
        twin[0].weight.copy_(model[0].weight)
        twin[0].bias.copy_(model[0].bias)
    for _ in range(4):
        for net, optimizer in ((model, wrapped), (twin, plain)):
            optimizer.zero_grad()
            backward(net, X, Y)
            optimizer.step()
        expected = constraint.project(training.design_matrix(twin[0]))
        with torch.no_grad():      # the twin follows the same projected path
            twin[0].weight.copy_(expected[:6].T)
            twin[0].bias.copy_(expected[6])
        torch.testing.assert_close(training.design_matrix(model[0]), expected, rtol=0, atol=0)
        assert constraint.contains(training.design_matrix(model[0]), tol=TOL[dtype])
        assert wrapped.is_feasible(tol=TOL[dtype])
    torch.testing.assert_close(model[2].weight, twin[2].weight)    # unconstrained layer: plain step


def test_bias_row_is_part_of_every_neurons_l1_bound():
    layer = torch.nn.Linear(3, 2).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.1, 0.0, 0.0], [0.0, 0.1, 0.1]]))
        layer.bias.copy_(torch.tensor([2.0, 0.0]))
    optimizer = training.ProjectedOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1),
                                            [(layer, sets.L1InfBall(0.5))])
    optimizer.project_now()
    # Column 0 has l1 norm 2.1 > 0.5 because of its bias: the bias is shrunk, column 1 is untouched.
    V = training.design_matrix(layer)
    torch.testing.assert_close(V.abs().sum(0), torch.tensor([0.5, 0.2], dtype=torch.float64))
    assert layer.bias[0].item() == pytest.approx(0.5)
    assert layer.weight[0, 0].item() == 0.0


def test_conv2d_layer_is_projected_per_output_channel():
    torch.manual_seed(0)
    conv = torch.nn.Conv2d(2, 4, 3).double()
    optimizer = training.ProjectedOptimizer(torch.optim.SGD(conv.parameters(), lr=0.5),
                                            [(conv, sets.L1InfBall(0.3))])
    x = torch.randn(3, 2, 6, 6, dtype=torch.float64)
    for _ in range(3):
        optimizer.zero_grad()
        conv(x).square().mean().backward()
        optimizer.step()
        norms = training.design_matrix(conv).abs().sum(0)
        assert norms.shape == (4,) and bool((norms <= 0.3 + 1e-12).all())


def test_convolution_subspace_on_a_fully_connected_layer():
    space = sets.ConvolutionSubspace(input_dim=9, kernel_width=3, stride=3, n_kernels=2)
    layer = torch.nn.Linear(9, 6, bias=False).double()
    optimizer = training.ProjectedOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1),
                                            [(layer, space)])
    optimizer.project_now()
    kernels = space.kernels(training.design_matrix(layer))
    torch.testing.assert_close(space.weight_matrix(kernels), training.design_matrix(layer))


def test_parameters_keep_their_identity_and_memory():
    model = mlp()
    before = [(p, p.data_ptr()) for p in model.parameters()]
    optimizer = training.ProjectedOptimizer(torch.optim.Adam(model.parameters(), lr=0.1),
                                            [(model[0], sets.Sparse(4)), (model[2], sets.L1Ball(1.0))])
    X, Y = batch()
    backward(model, X, Y)
    optimizer.step()
    assert [(p, p.data_ptr()) for p in model.parameters()] == before
    assert all(isinstance(p, torch.nn.Parameter) and p.requires_grad for p in model.parameters())
    assert optimizer.param_groups is optimizer.optimizer.param_groups


def test_projected_training_converges_to_a_sparse_teacher():
    """A tiny regression: loss falls, the constraint holds at every step."""
    generator = torch.Generator().manual_seed(0)
    teacher = torch.zeros(10, 1, dtype=torch.float64)
    teacher[[1, 4, 7]] = torch.tensor([[1.5], [-2.0], [1.0]], dtype=torch.float64)
    X = torch.randn(60, 10, generator=generator, dtype=torch.float64)
    y = X @ teacher
    layer = torch.nn.Linear(10, 1, bias=False).double()
    ball = sets.L1Ball(4.5)
    optimizer = training.ProjectedOptimizer(torch.optim.SGD(layer.parameters(), lr=0.05), [(layer, ball)])
    optimizer.project_now()
    losses = []
    for _ in range(300):
        optimizer.zero_grad()
        loss = (layer(X) - y).square().mean()
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        assert ball.contains(training.design_matrix(layer), tol=1e-10)
    assert losses[-1] < 1e-6 * losses[0]
    torch.testing.assert_close(layer.weight.detach().T, teacher, atol=1e-4, rtol=0)


def test_step_returns_the_closures_loss_and_state_dict_round_trips():
    model = mlp()
    X, Y = batch()
    optimizer = training.ProjectedOptimizer(torch.optim.Adam(model.parameters(), lr=0.01),
                                            [(model[0], sets.L1Ball(2.0))])

    def closure():
        optimizer.zero_grad()
        return backward(model, X, Y)

    loss = optimizer.step(closure)
    assert loss.item() == pytest.approx((model(X) - Y).square().mean().item(), rel=0.5)
    state = copy.deepcopy(optimizer.state_dict())
    other = training.ProjectedOptimizer(torch.optim.Adam(model.parameters(), lr=0.5),
                                        [(model[0], sets.L1Ball(2.0))])
    other.load_state_dict(state)
    assert other.param_groups[0]["lr"] == 0.01
    torch.testing.assert_close(other.state[model[0].weight]["exp_avg"],
                               optimizer.state[model[0].weight]["exp_avg"])


# -------------------------------------------------------------------------------------- RVSM
PENALTIES = {
    "l1": lambda: penalties.L1(0.02),
    "l0": lambda: penalties.L0(0.02),
    "transformed_l1": lambda: penalties.TransformedL1(0.02, a=1.0),
}


@pytest.mark.parametrize("dtype", DTYPES)
@pytest.mark.parametrize("name", sorted(PENALTIES))
def test_rvsm_step_is_algorithm_1(name, dtype):
    """u = prox of the penalty at step 1/beta; w <- w - lr grad f - lr beta (w - u) with plain SGD."""
    penalty, beta, lr = PENALTIES[name](), 0.5, 0.2
    model = mlp(dtype=dtype)
    rvsm = training.RVSM(torch.optim.SGD(model.parameters(), lr=lr), model, penalty, beta)
    X, Y = batch(dtype=dtype)
    for split in rvsm.splits:      # u^0 = prox(w^0)
        torch.testing.assert_close(split.u, penalty.prox(split.parameter.detach(), step=1 / beta))
    for _ in range(3):
        weights = [layer.weight.detach().clone() for layer in (model[0], model[2])]
        biases = [layer.bias.detach().clone() for layer in (model[0], model[2])]
        rvsm.zero_grad()
        backward(model, X, Y)
        gradients = [layer.weight.grad.clone() for layer in (model[0], model[2])]
        bias_gradients = [layer.bias.grad.clone() for layer in (model[0], model[2])]
        rvsm.step()
        for layer, w, g, b, gb, split in zip((model[0], model[2]), weights, gradients, biases,
                                            bias_gradients, rvsm.splits):
            expected = w - lr * g - lr * beta * (w - penalty.prox(w, step=1 / beta))
            torch.testing.assert_close(layer.weight.detach(), expected)
            torch.testing.assert_close(layer.bias.detach(), b - lr * gb)      # not penalized
            torch.testing.assert_close(split.u, penalty.prox(layer.weight.detach(), step=1 / beta),
                                       rtol=0, atol=0)
            assert split.u.dtype == dtype


def test_rvsm_thresholds_match_paper_002():
    """S_{lambda/beta}: soft at lambda/beta (l1), hard at sqrt(2 lambda/beta) (l0)."""
    layer = torch.nn.Linear(4, 1, bias=False).double()
    with torch.no_grad():
        layer.weight.copy_(torch.tensor([[0.05, -0.15, 0.3, -1.0]]))
    optimizer = torch.optim.SGD(layer.parameters(), lr=0.1)
    u_l1 = training.RVSM(optimizer, [layer], penalties.L1(0.01), beta=0.1).splits[0].u
    torch.testing.assert_close(u_l1, torch.tensor([[0.0, -0.05, 0.2, -0.9]], dtype=torch.float64))
    u_l0 = training.RVSM(optimizer, [layer], penalties.L0(0.001), beta=0.1).splits[0].u
    torch.testing.assert_close(u_l0, torch.tensor([[0.0, -0.15, 0.3, -1.0]], dtype=torch.float64))


def test_rvsm_bias_is_split_only_when_asked():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    default = training.RVSM(optimizer, model, penalties.L1(0.5), beta=1.0)
    assert [s.name for s in default.splits] == ["0.weight", "2.weight"]
    state = default.sparse_state_dict()
    torch.testing.assert_close(state["0.bias"], model[0].bias.detach())
    with_bias = training.RVSM(optimizer, model, penalties.L1(0.5), beta=1.0, penalize_bias=True)
    assert [s.name for s in with_bias.splits] == ["0.weight", "0.bias", "2.weight", "2.bias"]
    torch.testing.assert_close(with_bias.sparse_state_dict()["0.bias"],
                               penalties.L1(0.5).prox(model[0].bias.detach(), step=1.0))


def test_rvsm_names_from_a_dict_and_from_pairs():
    model = mlp()
    optimizer = torch.optim.SGD(model.parameters(), lr=0.1)
    rvsm = training.RVSM(optimizer, {"first": model[0]}, penalties.L0(1e-3), beta=0.1)
    assert sorted(rvsm.sparse_state_dict()) == ["first.bias", "first.weight"]
    rvsm = training.RVSM(optimizer, [model[2]], penalties.L0(1e-3), beta=0.1)
    assert sorted(rvsm.sparse_state_dict()) == ["0.bias", "0.weight"]
    rvsm = training.RVSM(optimizer, list(model.named_children())[:1], penalties.L0(1e-3), beta=0.1)
    assert sorted(rvsm.sparse_state_dict()) == ["0.bias", "0.weight"]


def digits_like(seed=0, samples=120):
    generator = torch.Generator().manual_seed(seed)
    X = torch.randn(samples, 6, generator=generator, dtype=torch.float64)
    labels = (X[:, 0] + X[:, 1] > 0).long() + (X[:, 2] > 0.5).long()
    return X, labels


def test_rvsm_training_gives_a_sparse_accurate_network_and_exports_it():
    X, labels = digits_like()
    model = mlp(sizes=(6, 16, 3))
    rvsm = training.RVSM(torch.optim.SGD(model.parameters(), lr=0.5, momentum=0.5), model,
                         penalties.L0(2e-3), beta=0.5)
    losses = []
    for _ in range(150):
        rvsm.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(X), labels)
        loss.backward()
        rvsm.step()
        losses.append(loss.item())
    assert losses[-1] < 0.5 * losses[0]
    assert rvsm.sparsity > 0.3
    trained = [p.detach().clone() for p in model.parameters()]
    with rvsm.sparse_weights():
        accuracy = (model(X).argmax(1) == labels).double().mean().item()
        torch.testing.assert_close(model[0].weight.detach(), rvsm.splits[0].u)
    assert accuracy > 0.85
    for parameter, saved in zip(model.parameters(), trained):      # w is back
        torch.testing.assert_close(parameter.detach(), saved, rtol=0, atol=0)

    state = rvsm.sparse_state_dict()
    weight_parameter = model[0].weight
    rvsm.apply_to_model()
    assert prune.is_pruned(model) and model[0].weight_orig is weight_parameter
    for index in (0, 2):
        torch.testing.assert_close(model[index].weight.detach(), state[f"{index}.weight"])
        torch.testing.assert_close(model[index].weight_mask, (state[f"{index}.weight"] != 0).double())
    V = training.design_matrix(model[0])         # a pruned layer: the weights it computes with
    torch.testing.assert_close(V, torch.cat([state["0.weight"].T, state["0.bias"][None]]))
    with torch.no_grad():
        assert (model(X).argmax(1) == labels).double().mean().item() == pytest.approx(accuracy)
    fresh = mlp(sizes=(6, 16, 3))
    fresh.load_state_dict(state)
    torch.testing.assert_close(fresh(X), model(X))


def test_rvsm_follows_a_scheduler_on_the_wrapped_optimizer():
    model = mlp()
    rvsm = training.RVSM(torch.optim.SGD(model.parameters(), lr=1.0), [model[0]], penalties.L1(0.1),
                         beta=0.5)
    scheduler = torch.optim.lr_scheduler.StepLR(rvsm.optimizer, step_size=1, gamma=0.1)
    X, Y = batch()
    rvsm.zero_grad()
    backward(model, X, Y)
    rvsm.step()
    scheduler.step()
    w = model[0].weight.detach().clone()
    u = rvsm.splits[0].u.clone()
    rvsm.zero_grad()
    backward(model, X, Y)
    gradient = model[0].weight.grad.clone()
    rvsm.step()
    torch.testing.assert_close(model[0].weight.detach(), w - 0.1 * gradient - 0.1 * 0.5 * (w - u))


def test_rvsm_state_dict_round_trip_refreshes_u():
    model = mlp()
    rvsm = training.RVSM(torch.optim.Adam(model.parameters(), lr=0.1), model, penalties.L1(0.1), beta=1.0)
    X, Y = batch()
    backward(model, X, Y)
    rvsm.step()
    state = copy.deepcopy(rvsm.state_dict())
    with torch.no_grad():
        model[0].weight.mul_(3.0)          # weights changed outside step()
    rvsm.load_state_dict(state)
    torch.testing.assert_close(rvsm.splits[0].u, penalties.L1(0.1).prox(model[0].weight.detach(), step=1.0))


# ------------------------------------------------------------------------------------- CUDA
@pytest.mark.cuda
@pytest.mark.skipif(not torch.cuda.is_available(), reason="needs a CUDA GPU")
@pytest.mark.parametrize("dtype", DTYPES)
def test_cuda_matches_cpu(dtype):
    cpu = mlp(dtype=dtype)
    gpu = copy.deepcopy(cpu).cuda()
    X, Y = batch(dtype=dtype)
    results = []
    for model, data in ((cpu, (X, Y)), (gpu, (X.cuda(), Y.cuda()))):
        projected = training.ProjectedOptimizer(torch.optim.SGD(model.parameters(), lr=0.2),
                                                [(model[0], sets.L1InfBall(0.3)), (model[2], sets.NuclearBall(0.5))])
        for _ in range(3):
            projected.zero_grad()
            backward(model, *data)
            projected.step()
        assert projected.is_feasible(tol=TOL[dtype])
        rvsm = training.RVSM(torch.optim.SGD(model.parameters(), lr=0.2), model,
                             penalties.TransformedL1(0.01, a=1.0), beta=0.5)
        rvsm.zero_grad()
        backward(model, *data)
        rvsm.step()
        assert all(s.u.device == model[0].weight.device and s.u.dtype == dtype for s in rvsm.splits)
        results.append([p.detach().cpu() for p in model.parameters()])
    for a, b in zip(*results):
        torch.testing.assert_close(a, b, rtol=1e-4 if dtype == torch.float32 else 1e-9,
                                   atol=1e-5 if dtype == torch.float32 else 1e-12)


# -------------------------------------------------------------------------------- bad input
def _optimizer(model):
    return torch.optim.SGD(model.parameters(), lr=0.1)


BAD_PROJECTED = {
    "not an optimizer": (lambda m: ([p for p in m.parameters()], [(m[0], sets.L1Ball(1.0))]), "optimizer"),
    "a wrapper": (lambda m: (training.ProjectedOptimizer(_optimizer(m), [(m[0], sets.L1Ball(1.0))]),
                             [(m[0], sets.L1Ball(1.0))]), "optimizer"),
    "not a list": (lambda m: (_optimizer(m), sets.L1Ball(1.0)), "constraints"),
    "empty": (lambda m: (_optimizer(m), []), "constraints"),
    "not a pair": (lambda m: (_optimizer(m), [m[0]]), "constraints[0]"),
    "no weight": (lambda m: (_optimizer(m), [(m[1], sets.L1Ball(1.0))]), "constraints[0][0]"),
    "container": (lambda m: (_optimizer(m), [(m, sets.L1Ball(1.0))]), "constraints[0][0]"),
    "listed twice": (lambda m: (_optimizer(m), [(m[0], sets.L1Ball(1.0)), (m[0], sets.Sparse(2))]),
                     "twice"),
    "not optimized": (lambda m: (torch.optim.SGD(m[2].parameters(), lr=0.1), [(m[0], sets.L1Ball(1.0))]),
                      "not among the optimizer"),
    "penalty": (lambda m: (_optimizer(m), [(m[0], penalties.L1(1.0))]), "RVSM"),
    "set class": (lambda m: (_optimizer(m), [(m[0], sets.L1Ball)]), "instance"),
    "not a set": (lambda m: (_optimizer(m), [(m[0], 1.0)]), "constraints[0][1]"),
    "net-trim set": (lambda m: (_optimizer(m), [(m[0], sets.NetTrimSet(np.ones((3, 6)), np.ones((3, 5)),
                                                                       epsilon=0.1))]), "NetTrimSet"),
    "wrong shape": (lambda m: (_optimizer(m), [(m[0], sets.Subspace(np.eye(30)[:, :2], shape=(6, 5)))]),
                    "(7, 5)"),
    "axis out of range": (lambda m: (_optimizer(m), [(m[0], sets.L1Ball(1.0, axis=3))]), "axis"),
}


@pytest.mark.parametrize("case", sorted(BAD_PROJECTED))
def test_projected_optimizer_rejects_bad_input_before_work(case):
    model = mlp()
    before = [p.detach().clone() for p in model.parameters()]
    build, message = BAD_PROJECTED[case]
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        training.ProjectedOptimizer(*build(model))
    for parameter, saved in zip(model.parameters(), before):
        assert torch.equal(parameter.detach(), saved)


def test_pruned_layers_are_rejected():
    model = mlp()
    prune.l1_unstructured(model[0], "weight", amount=0.5)
    with pytest.raises(InvalidInputError, match="prune.remove"):
        training.ProjectedOptimizer(_optimizer(model), [(model[0], sets.L1Ball(1.0))])
    with pytest.raises(InvalidInputError, match="prune.remove"):
        training.RVSM(_optimizer(model), model, penalties.L1(0.1), beta=1.0)


BAD_RVSM = {
    "not an optimizer": (lambda m: dict(optimizer="sgd"), "optimizer"),
    "beta zero": (lambda m: dict(beta=0.0), "beta"),
    "beta negative": (lambda m: dict(beta=-1.0), "beta"),
    "beta nan": (lambda m: dict(beta=float("nan")), "beta"),
    "penalty is a set": (lambda m: dict(penalty=sets.L1Ball(1.0)), "ProjectedOptimizer"),
    "penalty class": (lambda m: dict(penalty=penalties.L1), "penalty"),
    "no layers": (lambda m: dict(modules=torch.nn.Sequential(torch.nn.ReLU())), "no Linear"),
    "empty": (lambda m: dict(modules=[]), "empty"),
    "no weight": (lambda m: dict(modules=[m[1]]), "ReLU"),
    "twice": (lambda m: dict(modules=[m[0], m[0]]), "twice"),
    "not optimized": (lambda m: dict(optimizer=torch.optim.SGD(m[2].parameters(), lr=0.1)),
                      "0.weight is not among"),
    "bias not optimized": (lambda m: dict(optimizer=torch.optim.SGD([m[0].weight, m[2].weight], lr=0.1),
                                          penalize_bias=True), "0.bias is not among"),
    "penalize_bias not bool": (lambda m: dict(penalize_bias="yes"), "penalize_bias"),
    "modules a string": (lambda m: dict(modules="0"), "modules"),
}


@pytest.mark.parametrize("case", sorted(BAD_RVSM))
def test_rvsm_rejects_bad_input(case):
    model = mlp()
    arguments = dict(optimizer=_optimizer(model), modules=model, penalty=penalties.L1(0.1), beta=1.0)
    build, message = BAD_RVSM[case]
    arguments.update(build(model))
    penalize_bias = arguments.pop("penalize_bias", False)
    with pytest.raises(InvalidInputError, match=re.escape(message)):
        training.RVSM(arguments["optimizer"], arguments["modules"], arguments["penalty"], arguments["beta"],
                      penalize_bias=penalize_bias)
