"""Solving on a real Dask cluster (issue 17): the in-process answer, data sent once, lost workers.

One module-scoped ``distributed.LocalCluster`` of two process workers serves every test that leaves
it whole; the lost-scheduler test closes a cluster of its own. Tasks are made small (``TASK_COST``)
so that tiny layers still go out as several tasks.
"""

import os
import signal
import threading
import time

import numpy as np
import pytest

distributed = pytest.importorskip("distributed")
torch = pytest.importorskip("torch")

import convexnet as cn  # noqa: E402
import convexnet.nn as cnn  # noqa: E402
from convexnet import cluster  # noqa: E402
from tests.faults.test_models import assert_bit_identical, snapshot  # noqa: E402
from tests.models import mlp  # noqa: E402


@pytest.fixture(scope="module")
def client():
    with distributed.LocalCluster(n_workers=2, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local, \
            distributed.Client(local) as client:
        yield client


@pytest.fixture(autouse=True)
def small_tasks(monkeypatch):
    monkeypatch.setattr(cluster, "TASK_COST", 1.0)


def make_layer(seed=0, P=120, N=10, M=40):
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    return cn.NetTrimProblem(X, np.maximum(X @ rng.standard_normal((N, M)), 0), rel_epsilon=0.05,
                             split_budget=True)


def make_network(seed=7, sizes=(4, 12, 12, 2), P=80):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    return weights, biases, rng.standard_normal((P, sizes[0]))


# --------------------------------------------------------------------------- without a cluster
def test_column_ranges_are_contiguous_equal_and_sized_by_cost():
    ranges = cluster.column_ranges(200, 30, 4096, 2, task_cost=1e5)
    assert len(ranges) == 8                                          # 4 per worker thread
    assert ranges[0][0] == 0 and ranges[-1][1] == 4096
    assert all(a[1] == b[0] for a, b in zip(ranges, ranges[1:]))
    assert {b - a for a, b in ranges} == {512}
    assert len(cluster.column_ranges(200, 30, 4096, 2, task_cost=6e6)) == 4   # what the work pays for
    assert cluster.column_ranges(20, 5, 12, 8, task_cost=1e9) == [(0, 12)]
    assert len(cluster.column_ranges(20, 5, 3, 8, task_cost=1.0)) == 3       # never more than M


def test_find_client_takes_a_client_or_its_executor_and_nothing_else(client):
    assert cluster.find_client(client) is client
    assert cluster.find_client(client.get_executor()) is client
    from concurrent.futures import ThreadPoolExecutor

    with ThreadPoolExecutor(1) as pool:
        assert cluster.find_client(pool) is None


# ------------------------------------------------------------------------------ the answers
@pytest.mark.parametrize("backend, columns", [("clarabel", 40), ("auto", 16)])
def test_layer_on_the_cluster_is_the_in_process_answer_with_its_data_sent_once(client, backend,
                                                                               columns):
    problem = make_layer(M=columns)
    local = problem.solve(backend)
    cluster.traffic(client, reset=True)
    remote = problem.solve(backend, executor=client.get_executor())
    np.testing.assert_allclose(remote.W, local.W, atol=1e-7)
    assert remote.status == local.status == "optimal" and remote.certificate.ok
    assert remote.backend == local.backend
    assert remote.info["cluster"]["tasks"] == 8 and remote.info["chunks"] == 8
    sent = cluster.traffic(client)
    assert sent.scattered == 1 and sent.tasks == 8 and sent.resubmitted == 0
    program_bytes = cluster.payload_bytes(problem.program)
    assert program_bytes <= sent.bytes_sent <= 1.2 * program_bytes   # the program once, tasks tiny


def test_network_in_both_modes_is_the_in_process_answer(client):
    weights, biases, X = make_network()
    for mode in ("parallel", "cascade"):
        local = cn.trim_network(weights, X, lam=3.0, mode=mode, biases=biases, backend="clarabel")
        remote = cn.trim_network(weights, X, lam=3.0, mode=mode, biases=biases, backend="clarabel",
                                 executor=client)
        for a, b in zip(local.weights, remote.weights):
            np.testing.assert_allclose(a, b, atol=1e-7)
        assert all(layer.info["chunks"] > 1 for layer in remote.layers)


def test_admm_tasks_ask_for_a_gpu_where_a_worker_declares_one(client):
    async def declare(dask_worker, count):
        await dask_worker.set_resources(GPU=count)

    problem = make_layer(seed=1, M=16)
    local = problem.solve("admm")
    worker = sorted(client.scheduler_info()["workers"])[0]
    client.run(declare, count=1, workers=[worker])
    try:
        remote = problem.solve("admm", executor=client)
    finally:
        client.run(declare, count=0, workers=[worker])
    assert remote.info["cluster"]["resources"] == {"GPU": 1}
    # This machine's worker has no CUDA: the same task ran ADMM on its CPU.
    expected = "cuda" if torch.cuda.is_available() else "cpu"
    assert remote.info["cluster"]["devices"] == [expected]
    np.testing.assert_allclose(remote.W, local.W, atol=1e-7)
    assert cluster.worker_device({"GPU": 1}, cuda_available=False) == "cpu"


# ------------------------------------------------------------------------------------ faults
def test_a_worker_killed_mid_layer_costs_only_its_tasks(client):
    problem = make_layer(seed=2, P=100, N=12, M=240)
    local = problem.solve("clarabel")
    pids = client.run(os.getpid)
    cluster.traffic(client, reset=True)
    answer = {}
    solving = threading.Thread(target=lambda: answer.update(
        result=problem.solve("clarabel", executor=client)))
    solving.start()
    victim, deadline = None, time.monotonic() + 30
    while victim is None and time.monotonic() < deadline:
        for worker, keys in client.processing().items():
            if any(str(key).startswith("convexnet-columns") for key in keys):
                victim = worker
                break
        time.sleep(0.01)
    assert victim is not None, "no task was seen running"
    os.kill(pids[victim], signal.SIGKILL)
    solving.join(timeout=120)
    assert not solving.is_alive()
    np.testing.assert_allclose(answer["result"].W, local.W, atol=1e-7)
    assert answer["result"].status == "optimal"
    # The killed process is gone; the task it was running ran again elsewhere, by the scheduler's
    # own retry or, when the scattered program died with it, by convexnet's resubmission (counted
    # in traffic.tasks beyond the first 8): which of the two is a race, the complete answer is not.
    assert pids[victim] not in client.run(os.getpid).values()
    assert cluster.traffic(client).tasks >= 8


def test_a_lost_scheduler_leaves_the_model_bit_identical_and_names_the_layer():
    model = mlp(seed=3)
    calibration = torch.randn(60, 5, generator=torch.Generator().manual_seed(4), dtype=torch.float64)
    before = snapshot(model)
    local = distributed.LocalCluster(n_workers=1, threads_per_worker=1, processes=True,
                                     dashboard_address=":0")
    client = distributed.Client(local)
    try:
        def lose_the_cluster(index, n_layers, row):
            if index == 0:
                local.close()

        with pytest.raises(cn.errors.ClusterLostError, match="layer '2'") as caught:
            cnn.trim(model, calibration, rel_epsilon=0.05, split_budget=True, backend="clarabel",
                     executor=client, progress=lose_the_cluster)
        assert caught.value.status == "cluster_lost"
        assert isinstance(caught.value, cn.SolverFailedError)
    finally:
        client.close()
        local.close()
    assert_bit_identical(model, before)


# ------------------------------------------------------------------------------- the command
def test_prune_command_on_a_running_scheduler_writes_the_in_process_model(client, tmp_path,
                                                                         monkeypatch, capsys):
    from convexnet import cli

    monkeypatch.chdir(tmp_path)
    torch.save(mlp(seed=5, sizes=(4, 12, 2)), "model.pt")
    np.save("calibration.npy", np.random.default_rng(5).standard_normal((60, 4)))
    argv = ["prune", "model.pt", "--calibration", "calibration.npy", "--rel-epsilon", "0.05",
            "--split-budget", "--backend", "clarabel", "--trust-pickle"]
    assert cli.main(argv + ["--out", "here.pt"]) == 0
    assert cli.main(argv + ["--out", "there.pt", "--scheduler", client.scheduler.address]) == 0
    here = torch.load("here.pt", weights_only=False)
    there = torch.load("there.pt", weights_only=False)
    here, there = (m.state_dict() if isinstance(m, torch.nn.Module) else m for m in (here, there))
    assert here.keys() == there.keys()
    for name in here:
        torch.testing.assert_close(here[name], there[name], atol=1e-7, rtol=0)
    capsys.readouterr()
    assert cli.main(argv + ["--out", "x.pt", "--workers", "0"]) == 2
    assert "--workers must be >= 1" in capsys.readouterr().err
    targeted = [word for word in argv if word not in ("--rel-epsilon", "0.05")]
    assert cli.main(targeted + ["--out", "x.pt", "--sparsity", "0.5", "--workers", "2"]) == 2
    assert "--sparsity and --pattern refits run in this process" in capsys.readouterr().err
    with pytest.raises(SystemExit):
        cli.main(argv + ["--out", "x.pt", "--workers", "2", "--scheduler", "tcp://nowhere:1"])
