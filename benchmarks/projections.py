"""Projection kernels side by side: medians of interleaved repeats, on the same data, with ratios.

1. ``L1Ball`` on 10^6 float64 entries: numpy, a torch CPU tensor, the torch form (the code a GPU
   runs) on the CPU, a sort-based numpy projection and ``np.sort`` alone (issue 18's targets: at
   most 0.3 times ``np.sort`` on numpy, torch CPU within 1.5 times numpy), at several radii, since
   the cost of a threshold search depends on how many entries survive.
2. ``SumOfMaxBall`` on a 1000 x 1000 matrix: numpy and a torch CPU tensor against ``np.sort`` of the
   same matrix (its rows; issue 18's target: at most 2 times).
3. ``L1InfBall`` on a 4096 x 4096 float32 matrix (every column projected, one call): numpy, torch
   on the CPU (target: no slower than numpy) and the torch form on the CPU, a sort-based numpy
   projection of every column, ``np.sort`` of the columns; and on the GPU when CUDA is available
   (synchronized around each timing), against ``torch.sort``.

torch runs on one thread throughout (``torch.set_num_threads(1)``): on a shared machine, OpenMP
threads that wait for a descheduled sibling cost more than the second core gives, and one setting
for every row keeps the comparison fair. Run: ``python benchmarks/projections.py`` (``--quick`` for
fewer repeats). Prints markdown tables.
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import time

import numpy as np
import torch

from convexnet import sets
from solvers import _arrays
from solvers.prox import project_l1_ball


def sort_based_l1(x, radius, axis=0):
    """The classical projection (Held, Wolfe and Crowder): sort, cumulative sums, threshold."""
    magnitudes = np.abs(x)
    ordered = -np.sort(-magnitudes, axis=axis)
    partial = np.cumsum(ordered, axis=axis, dtype=np.float64)
    shape = [1] * x.ndim
    shape[axis] = -1
    positions = np.arange(1, x.shape[axis] + 1).reshape(shape)
    count = np.sum(ordered * positions > partial - radius, axis=axis, keepdims=True)
    tau = (np.take_along_axis(partial, count - 1, axis=axis) - radius) / count
    tau = np.where(np.sum(magnitudes, axis=axis, keepdims=True, dtype=np.float64) > radius, tau, 0)
    return (np.sign(x) * np.maximum(magnitudes - tau, 0)).astype(x.dtype)


def medians(methods: dict, repeats: int, synchronize=lambda: None) -> dict:
    """Median wall time of each method. The methods are interleaved, and each round starts with the
    next one, so that machine noise and the allocator's state after the previous call hit all alike."""
    names = list(methods)
    times = {name: [] for name in names}
    for function in methods.values():
        function()
    synchronize()
    for repeat in range(repeats):
        for name in names[repeat % len(names):] + names[:repeat % len(names)]:
            start = time.perf_counter()
            methods[name]()
            synchronize()
            times[name].append(time.perf_counter() - start)
    return {name: statistics.median(values) for name, values in times.items()}


def torch_form(function):
    """``function`` run with CPU tensors through the torch form of the kernels (the code a GPU runs)
    instead of the numpy form on a view of their memory."""
    def run():
        _arrays.HOST_NUMPY = False
        try:
            return function()
        finally:
            _arrays.HOST_NUMPY = True
    return run


def table(title, rows, baseline, extra=None):
    """A markdown table: the timings, their ratios to ``baseline`` and, when ``extra`` = (name, of),
    the ratio of one column to another."""
    print(f"\n{title}\n")
    names = list(rows[0][1])
    others = [name for name in names if name != baseline]
    extra_header = f" | {extra[0]} / {extra[1]}" if extra else ""
    print("| radius | nonzeros | " + " | ".join(names) + f" | ratios to {baseline} ({', '.join(others)})"
          + extra_header + " |")
    print("|---" * (len(names) + 3 + bool(extra)) + "|")
    for (radius, nonzeros), timings in rows:
        ratios = ", ".join(f"{timings[name] / timings[baseline]:.2f}" for name in others)
        cells = " | ".join(f"{timings[name] * 1e3:.1f} ms" for name in names)
        extra_cell = f" | {timings[extra[0]] / timings[extra[1]]:.2f}" if extra else ""
        print(f"| {radius:g} | {nonzeros:.2%} | {cells} | {ratios}{extra_cell} |")


def l1_vector(repeats):
    x = np.random.default_rng(0).standard_normal(10**6)
    tensor = torch.from_numpy(x)
    rows = []
    for radius in (1.0, 100.0, 1e4, 1e5, 5e5):
        ball = sets.L1Ball(radius)
        projected = ball.project(x)
        assert np.allclose(projected, sort_based_l1(x, radius), atol=1e-10)
        assert np.array_equal(project_l1_ball(tensor, radius=radius).numpy(), projected)
        timings = medians({
            "L1Ball.project": lambda: ball.project(x),
            "kernel (numpy)": lambda: project_l1_ball(x, radius=radius),
            "kernel (torch CPU)": lambda: project_l1_ball(tensor, radius=radius),
            "torch form on CPU": torch_form(lambda: project_l1_ball(tensor, radius=radius)),
            "sort-based (numpy)": lambda: sort_based_l1(x, radius),
            "np.sort": lambda: np.sort(x),
        }, repeats)
        rows.append(((radius, np.count_nonzero(projected) / x.size), timings))
    table("1. L1Ball, 10^6 float64 entries (Gaussian)", rows, "np.sort",
          extra=("kernel (torch CPU)", "kernel (numpy)"))


def sum_of_max(repeats):
    W = np.random.default_rng(1).standard_normal((1000, 1000))
    tensor = torch.from_numpy(W)
    rows = []
    for radius in (10.0, 100.0, 1000.0):
        ball = sets.SumOfMaxBall(radius)
        projected = ball.project(W)
        timings = medians({"SumOfMaxBall.project": lambda: ball.project(W),
                           "torch CPU": lambda: ball.project(tensor),
                           "torch form on CPU": torch_form(lambda: ball.project(tensor)),
                           "np.sort (rows)": lambda: np.sort(W)}, repeats)
        rows.append(((radius, np.count_nonzero(projected.any(axis=1)) / W.shape[0]), timings))
    table("2. SumOfMaxBall, 1000 x 1000 float64 (nonzeros: the rows kept)", rows, "np.sort (rows)")


def l1_inf(repeats):
    W = np.random.default_rng(2).standard_normal((4096, 4096)).astype(np.float32)
    tensor = torch.from_numpy(W)
    gpu = torch.cuda.is_available()
    rows, gpu_rows = [], []
    for radius in (10.0, 100.0, 1000.0):
        ball = sets.L1InfBall(radius)
        projected = ball.project(W)
        reference = sort_based_l1(W, radius, axis=0)
        assert np.allclose(projected, reference, atol=1e-4)
        timings = medians({
            "numpy": lambda: ball.project(W),
            "torch CPU": lambda: ball.project(tensor),
            "torch form on CPU": torch_form(lambda: ball.project(tensor)),
            "sort-based (numpy)": lambda: sort_based_l1(W, radius, axis=0),
            "np.sort of the columns": lambda: np.sort(W, axis=0),
        }, repeats)
        nonzeros = np.count_nonzero(projected) / W.size
        rows.append(((radius, nonzeros), timings))
        if gpu:
            on_gpu = tensor.cuda()
            gpu_timings = medians({"torch (CUDA)": lambda: ball.project(on_gpu),
                                   "torch.sort of the columns": lambda: torch.sort(on_gpu, dim=0)},
                                  repeats, synchronize=torch.cuda.synchronize)
            gpu_rows.append(((radius, nonzeros), gpu_timings))
    table("3. L1InfBall, 4096 x 4096 float32, CPU", rows, "np.sort of the columns",
          extra=("torch CPU", "numpy"))
    if gpu:
        table(f"3b. L1InfBall on {torch.cuda.get_device_name()}", gpu_rows, "torch.sort of the columns")
    else:
        print("\nCUDA is not available: the GPU rows were not measured.")


def cpu_model() -> str:
    try:
        with open("/proc/cpuinfo") as info:
            return next(line.split(":", 1)[1].strip() for line in info if line.startswith("model name"))
    except (OSError, StopIteration):
        return platform.processor() or "unknown CPU"


def main():
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="fewer repeats")
    quick = parser.parse_args().quick
    torch.set_num_threads(1)
    print(f"# {cpu_model()}, {os.cpu_count()} cores, load average {os.getloadavg()[0]:.1f} at the start, "
          f"Python {platform.python_version()}, numpy {np.__version__}, torch {torch.__version__} "
          f"({torch.get_num_threads()} thread)")
    l1_vector(5 if quick else 41)
    sum_of_max(3 if quick else 15)
    l1_inf(2 if quick else 5)
    print(f"\n# load average {os.getloadavg()[0]:.1f} at the end")


if __name__ == "__main__":
    main()
