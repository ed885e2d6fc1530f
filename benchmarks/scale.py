"""Scale out on Dask (issue 17): in-process against local clusters of 1 and 2 process workers.

Two workloads, each solved three ways in one run (in this process on one torch thread; on a
``distributed.LocalCluster`` of one process worker; of two), on the same data:

* **layer**: one Net-Trim layer with per-column budgets (``split_budget``, ``rel_epsilon`` 0.05),
  ``X`` of shape (P, N) = (400, 64) plus the bias column, 4096 output columns, ``backend="auto"``
  (ADMM, polish, the sparsest vertex); on a cluster its columns go out as tasks of equal cost;
* **network**: four ReLU layers (32 -> 256 -> 256 -> 256 -> 10, 800 samples) trimmed in parallel
  mode, every layer in flight at once.

For each it prints the wall time (workers started and warmed up beforehand: imports are not
timed), the bytes convexnet sent to the workers (:func:`convexnet.cluster.traffic`: the scattered
programs plus every task's arguments, pickled) against the bytes of ``X`` and of the whole program,
the peak memory of each worker process (``ru_maxrss``, and its growth over the warmed-up worker),
the largest difference from the in-process weights, and the speedup of 2 workers over 1.

Then a **model on paper**: a 7B-parameter language model (32 blocks of 7 projections: q, k, v, o
and gate, up of 4096 -> 4096 / 11008, down of 11008 -> 4096) pruned block by block in Gram form on
``nodes`` nodes of 8 GPUs. Its inputs are this run's measured figures (seconds per column-entry of
one worker, seconds per column of client-side work, bytes per program) and three stated
assumptions (``--gpu-speedup``, ``--bandwidth``, ``--tokens``); it prints hours against nodes and
where the time goes.

Run: ``python benchmarks/scale.py`` (about 3 minutes on 2 quiet cores; ``--columns`` and
``--samples`` shrink it). Quote the load average (``uptime``) with the figures.
"""

from __future__ import annotations

import argparse
import os
import platform
import resource
import time

import numpy as np
import torch

import convexnet as cn
from convexnet import cluster

#: A 7B language model's block: (name, inputs N, outputs M); 32 such blocks.
LM_BLOCK = [("q", 4096, 4096), ("k", 4096, 4096), ("v", 4096, 4096), ("o", 4096, 4096),
            ("gate", 4096, 11008), ("up", 4096, 11008), ("down", 11008, 4096)]
LM_BLOCKS = 32
#: Projections that read the same input share one Gram matrix H = X^T X (scattered once).
LM_SHARED_INPUTS = [("q", "k", "v"), ("o",), ("gate", "up"), ("down",)]


# ------------------------------------------------------------------------------ the workloads
def make_layer(P: int, N: int, M: int, seed: int = 0) -> cn.NetTrimProblem:
    rng = np.random.default_rng(seed)
    X = rng.standard_normal((P, N))
    W = rng.standard_normal((N, M)) / np.sqrt(N)
    b = 0.1 * rng.standard_normal(M)
    return cn.NetTrimProblem(X, np.maximum(X @ W + b, 0.0), rel_epsilon=0.05, split_budget=True,
                             bias=True)


def make_network(P: int, sizes=(32, 256, 256, 256, 10), seed: int = 1):
    rng = np.random.default_rng(seed)
    weights = [rng.standard_normal((a, b)) / np.sqrt(a) for a, b in zip(sizes[:-1], sizes[1:])]
    biases = [0.1 * rng.standard_normal(b) for b in sizes[1:]]
    return weights, biases, rng.standard_normal((P, sizes[0]))


LAST = {}


def solve_layer(problem, executor):
    result = problem.solve("auto", executor=executor)
    # The caller's own share: everything but the wait for the cluster (checks, clean, certificate).
    LAST["client"] = result.wall_time - result.info.get("cluster", {}).get("seconds", 0.0)
    return result.W_design


def solve_network(network, executor):
    weights, biases, X = network
    result = cn.trim_network(weights, X, rel_epsilon=0.05, split_budget=True, mode="parallel",
                             biases=biases, backend="auto", executor=executor)
    return np.concatenate([np.append(W.ravel(), b) for W, b in zip(result.weights, result.biases)])


# ------------------------------------------------------------------------------ measurements
def peak_rss_mib() -> float:
    """This process's peak resident memory (Linux reports ``ru_maxrss`` in KiB)."""
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


def warm_up(client) -> None:
    """Import everything a task needs on every worker (one tiny solve per worker)."""
    tiny = make_layer(40, 4, 2 * len(client.scheduler_info()["workers"]), seed=9)
    tiny.solve("auto", executor=client)
    tiny.solve("clarabel", executor=client)


def measure(name, solve, workload, workers, reference):
    """One row: wall time, bytes, worker memory and the difference from ``reference``."""
    import distributed

    if workers == 0:
        start = time.perf_counter()
        answer = solve(workload, None)
        return dict(name=name, workers=0, seconds=time.perf_counter() - start, answer=answer,
                    sent=0, tasks=0, peak=peak_rss_mib(), growth=float("nan"),
                    difference=0.0 if reference is None else np.abs(answer - reference).max())
    with distributed.LocalCluster(n_workers=workers, threads_per_worker=1, processes=True,
                                  dashboard_address=":0") as local, \
            distributed.Client(local) as client:
        warm_up(client)
        before = client.run(peak_rss_mib)
        cluster.traffic(client, reset=True)
        start = time.perf_counter()
        answer = solve(workload, client)
        seconds = time.perf_counter() - start
        client_seconds = LAST.pop("client", float("nan"))
        after = client.run(peak_rss_mib)
        sent = cluster.traffic(client)
    return dict(name=name, workers=workers, seconds=seconds, client=client_seconds,
                answer=answer, sent=sent.bytes_sent,
                tasks=sent.tasks, peak=max(after.values()),
                growth=max(after[key] - before[key] for key in after),
                difference=np.abs(answer - reference).max())


def compare(name, solve, workload) -> list:
    """``workload`` in this process, then on 1 and 2 workers, each checked against the first."""
    rows = []
    for workers in (0, 1, 2):
        rows.append(measure(name, solve, workload, workers, rows[0]["answer"] if rows else None))
    return rows


def table(rows, x_bytes: int, program_bytes: int) -> None:
    print(f"  {'where':>18} {'wall (s)':>9} {'tasks':>6} {'sent (MB)':>10} {'sent/X':>7} "
          f"{'sent/program':>13} {'worker peak (MiB)':>18} {'growth':>7} {'max |dW|':>9}")
    for row in rows:
        where = "in-process" if row["workers"] == 0 else f"cluster, {row['workers']} worker(s)"
        print(f"  {where:>18} {row['seconds']:9.1f} {row['tasks']:6d} {row['sent'] / 1e6:10.2f} "
              f"{row['sent'] / x_bytes:7.2f} {row['sent'] / program_bytes:13.2f} "
              f"{row['peak']:18.0f} {row['growth']:7.0f} {row['difference']:9.1e}")
    one, two = rows[1]["seconds"], rows[2]["seconds"]
    print(f"  speedup, 2 workers over 1: {one / two:.2f}x; 2 workers over in-process: "
          f"{rows[0]['seconds'] / two:.2f}x")


# ------------------------------------------------------------------------------ the paper model
def cpu_flop_rate() -> float:
    """Measured: one torch thread's float64 flops per second on a (2048, 512) Gram product."""
    A = torch.randn(2048, 512, dtype=torch.float64)
    A.T @ A
    start = time.perf_counter()
    for _ in range(5):
        A.T @ A
    return 5 * 2 * 2048 * 512 ** 2 / (time.perf_counter() - start)


def paper_model(per_entry: float, client_per_entry: float, cpu_flops: float, gpu_speedup: float,
                bandwidth: float, tokens: int, nodes_list) -> None:
    """Hours to prune a 7B LM block by block on ``nodes`` nodes of 8 GPUs.

    Per block: the Gram statistics are built on the GPUs from ``tokens`` calibration tokens
    (``2 * tokens * N^2`` flops per distinct input, at ``gpu_speedup`` times one measured CPU
    core's rate), sent once to every node (``H`` of ``8 N^2`` bytes and ``X^T Y`` of ``8 N M``
    bytes per projection, at ``bandwidth`` bytes/s into each node, one sender), then the columns:
    a column of ``N`` inputs costs ``per_entry * N^2`` seconds on one CPU worker (Gram form: the
    work per column grows with ``N^2`` where this run's sample form grew with ``P * N``), divided
    by ``gpu_speedup`` on a GPU, spread over ``8 * nodes`` GPUs. The client's own work (the
    checks, the clean-up and the certificate of each layer, in this process) is
    ``client_per_entry * N^2`` per column, serial, on one CPU core as measured.
    ``cpu_flops`` is one CPU worker's measured rate on a Gram product.
    """
    blocks = LM_BLOCKS
    compute = sum(M * per_entry * N ** 2 for _, N, M in LM_BLOCK) / gpu_speedup
    inputs = {name: N for name, N, _ in LM_BLOCK}
    outputs = {name: M for name, _, M in LM_BLOCK}
    gram_bytes = sum(8 * inputs[group[0]] ** 2 + sum(8 * inputs[n] * outputs[n] for n in group)
                     for group in LM_SHARED_INPUTS)
    gram_flops = sum(2 * tokens * inputs[group[0]] ** 2 for group in LM_SHARED_INPUTS)
    statistics = gram_flops / (cpu_flops * gpu_speedup) / 8    # the 8 GPUs of the first node
    client = sum(M * client_per_entry * N ** 2 for _, N, M in LM_BLOCK)
    print(f"  per block: {sum(M for _, _, M in LM_BLOCK)} columns, {gram_bytes / 1e9:.2f} GB of "
          f"Gram statistics, {compute / 3600:.2f} GPU-hours of column solves, "
          f"{statistics:.1f} s of statistics on 8 GPUs, {client:.1f} s of client work")
    print(f"  {'nodes':>6} {'GPUs':>5} {'hours':>7} {'columns':>8} {'transfer':>9} "
          f"{'statistics':>11} {'client':>7} {'hours, client work on the workers':>34}")
    for nodes in nodes_list:
        columns = compute / (8 * nodes)
        transfer = gram_bytes * nodes / bandwidth if nodes > 1 else 0.0
        total = blocks * (columns + transfer + statistics + client)
        share = lambda part: f"{100 * blocks * part / total:5.1f}%"  # noqa: E731
        # The same work with the clean-up and certificate done by each task on its columns.
        spread = blocks * (columns * (1 + client / compute) + transfer + statistics)
        print(f"  {nodes:6d} {8 * nodes:5d} {total / 3600:7.2f} {share(columns):>8} "
              f"{share(transfer):>9} {share(statistics):>11} {share(client):>7} "
              f"{spread / 3600:34.2f}")


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--samples", type=int, default=400, help="P of the layer")
    parser.add_argument("--inputs", type=int, default=64, help="N of the layer")
    parser.add_argument("--columns", type=int, default=4096, help="M of the layer")
    parser.add_argument("--network-samples", type=int, default=800)
    parser.add_argument("--gpu-speedup", type=float, default=100.0,
                        help="one GPU's speed on the column solves relative to one CPU worker "
                             "(assumed, not measured here)")
    parser.add_argument("--bandwidth", type=float, default=12.5e9,
                        help="bytes/s into a node (assumed: 100 Gb/s)")
    parser.add_argument("--tokens", type=int, default=128 * 2048, help="calibration tokens")
    args = parser.parse_args()
    torch.set_num_threads(1)
    load = os.getloadavg()
    print(f"machine: {platform.machine()}, {os.cpu_count()} cores, python "
          f"{platform.python_version()}; load average {load[0]:.2f} {load[1]:.2f} {load[2]:.2f}")

    problem = make_layer(args.samples, args.inputs, args.columns)
    P, N, M = problem.program.shape
    x_bytes, program_bytes = problem.program.X.nbytes, cluster.payload_bytes(problem.program)
    print(f"\nlayer: X ({P}, {N}) with the bias column, {M} columns, per-column budgets, auto; "
          f"X {x_bytes / 1e6:.2f} MB, the program {program_bytes / 1e6:.2f} MB")
    layer_rows = compare("layer", solve_layer, problem)
    table(layer_rows, x_bytes, program_bytes)

    network = make_network(args.network_samples)
    x_bytes = sum(P_ * (n + 1) * 8 for P_, n in [(args.network_samples, a)
                                                  for a in (32, 256, 256, 256)])
    print(f"\nnetwork: 32 -> 256 -> 256 -> 256 -> 10, {args.network_samples} samples, parallel "
          f"mode, per-column budgets, auto; the four X {x_bytes / 1e6:.2f} MB")
    table(compare("network", solve_network, network), x_bytes, x_bytes)

    # Measured inputs of the model: one worker's seconds per column-entry (P * N), and the
    # client's own seconds per column-entry (with two workers: checks, clean, certificate).
    one = layer_rows[1]
    client_per_entry = layer_rows[2]["client"] / (M * P * N)
    per_entry = (one["seconds"] - one["client"]) / (M * P * N)
    print(f"\nmeasured: {per_entry * 1e9:.2f} ns per column-entry on one worker; the client's own "
          f"work {layer_rows[2]['client']:.1f} s of {layer_rows[2]['seconds']:.1f} s with 2 "
          f"workers, {client_per_entry * 1e9:.2f} ns per column-entry")
    print(f"\n7B LM on paper: 32 blocks x 7 projections, Gram form, {args.tokens} tokens, "
          f"GPU = {args.gpu_speedup:g} CPU workers, {args.bandwidth / 1e9:g} GB/s per node")
    flops = cpu_flop_rate()
    print(f"measured: one torch thread's Gram product rate {flops / 1e9:.1f} GFLOP/s")
    paper_model(per_entry, client_per_entry, flops, args.gpu_speedup, args.bandwidth,
                args.tokens, [1, 2, 4, 8, 16, 32, 64])


if __name__ == "__main__":
    main()
