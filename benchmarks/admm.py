"""ADMM (without and with polish) against Clarabel, side by side in one process, on four Net-Trim layers.

The cases of issue 13:

a. ``spirals``: the trained spirals network's 200 x 200 hidden layer, one budget for the layer
   (rel_epsilon 0.03, coupled columns). Clarabel solves it whole.
b. ``layer``: 784 x 300 from P = 10000 ReLU samples, per-column budgets (rel_epsilon 0.05). The peer,
   Net-Trim's original constrained ADMM (``benchmarks/nettrim_admm_peer.py``), runs here too.
c. ``cascade``: a cascade 300 x 300 ReLU layer: the second hidden layer of a 784-300-300-10 network
   trained on the digits upscaled to 28 x 28, whose input is the pruned first layer's output
   (thresholds and budgets of paper 004's eq. 7, per column), P = 4000.
d. ``gram``: a linear 1024 x 1024 layer from P = 100000 samples, streamed into ``cn.GramData`` in
   batches of 5000 and solved in Gram form (per-column budgets); the peak memory of the solve is
   printed against the size of ``H``.

Every row: wall time, status, relative duality gap and violation of the certificate at the
interior-point tolerances (1e-6), the share of zeros, and its difference to Clarabel's on the columns
Clarabel solved. Where Clarabel would take hours (b-d) it solves ``--clarabel-columns`` sampled
columns, and its time is the median per column times M ("extrapolated"). ADMM runs through the
library (``NetTrimProblem.solve("admm", solver_options={"polish": ...})``), and ``auto`` is the
default policy (ADMM + polish, Clarabel per column where ADMM does not certify).

    python benchmarks/admm.py [--case a b c d gpu] [--clarabel-columns 3]
"""

from __future__ import annotations

import argparse
import os
import platform
import statistics
import sys
import threading
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
sys.path.insert(0, str(Path(__file__).resolve().parent))

import convexnet as cn  # noqa: E402
import nettrim_admm_peer as peer  # noqa: E402
from solvers.admm import solve_graph_form  # noqa: E402

TOL = {"gap_tol": 1e-6, "feas_tol": 1e-6}


def relu_layer(P: int, N: int, M: int, seed: int = 0):
    """Activations X (P, N) >= 0 and targets Y = relu(X W0) (P, M)."""
    rng = np.random.default_rng(seed)
    X = np.maximum(rng.standard_normal((P, N)) @ (rng.standard_normal((N, N)) / np.sqrt(N)), 0.0)
    Y = np.maximum(X @ (rng.standard_normal((N, M)) / np.sqrt(N)), 0.0)
    return X, Y


class PeakMemory:
    """The peak resident set size over a block, sampled every 2 ms from /proc (Linux)."""

    def __enter__(self):
        self.base = self.peak = self._rss()
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._watch, daemon=True)
        self._thread.start()
        return self

    def __exit__(self, *exc):
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, self._rss())

    def _watch(self):
        while not self._stop.wait(0.002):
            self.peak = max(self.peak, self._rss())

    @staticmethod
    def _rss() -> int:
        with open("/proc/self/statm") as handle:
            return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE")

    @property
    def grown(self) -> int:
        return self.peak - self.base


def timed(problem, backend, options=None):
    start = time.perf_counter()
    result = problem.solve(backend, solver_options=options)
    return result, time.perf_counter() - start


def judged(result):
    """The certificate at the interior-point tolerances, whatever the backend's own."""
    report = cn.certificates.verify(result, **TOL)
    return report.relative_gap, report.primal_violation, report.ok


def row(label, result, seconds, zeros_reference=None, columns=None, note=""):
    gap, violation, ok = judged(result)
    W = result.W_design if columns is None else result.W_design[:, columns]
    zeros = 1.0 - np.count_nonzero(W) / W.size
    difference = "" if zeros_reference is None else f"{100 * (zeros - zeros_reference):+.1f} pp"
    polished = result.info.get("polished")
    polished = "" if polished is None else f"{int(np.sum(polished))}/{len(polished)}"
    line = (f"| {label} | {seconds:.2f}{note} | {result.status} | {gap:.1e} | {violation:.1e} | "
            f"{'yes' if ok else 'no'} | {polished} | {100 * zeros:.1f}% | {difference} |")
    print(line, flush=True)
    return line


HEADER = ["| solver | time (s) | status | rel. gap | violation | certified at 1e-6 | polished columns "
          "| zeros | zeros vs Clarabel |", "|---|---|---|---|---|---|---|---|---|"]


#: The "ADMM, no polish" rows' step limit (None: the engine's default, 20000); --plain-iterations.
PLAIN_LIMIT = None


def admm_rows(problem, zeros_reference=None, columns=None, threads=None):
    lines = []
    extra = {} if threads is None else {"threads": threads}
    plain = {"polish": False, **extra}
    label = "ADMM, no polish"
    if PLAIN_LIMIT is not None:
        plain["max_iterations"] = PLAIN_LIMIT
        label += f" ({PLAIN_LIMIT} steps at most)"
    for label, options in ((label, plain), ("ADMM + polish", {"polish": True, **extra})):
        result, seconds = timed(problem, "admm", options)
        lines.append(row(label, result, seconds, zeros_reference, columns))
    result, seconds = timed(problem, "auto", {"admm": extra} if extra else None)
    lines.append(row(f"auto ({result.backend})", result, seconds, zeros_reference, columns))
    return lines


def sampled_clarabel(make, M, count, seed):
    """Clarabel on ``count`` sampled columns: (columns, per-column median seconds, their zeros, rows)."""
    columns = np.sort(np.random.default_rng(seed).choice(M, size=count, replace=False))
    seconds, zeros, statuses, gaps = [], [], [], []
    for m in columns:
        result, elapsed = timed(make([m]), "clarabel")
        seconds.append(elapsed)
        zeros.append(1.0 - np.count_nonzero(result.W_design) / result.W_design.size)
        statuses.append(result.status)
        gaps.append(judged(result)[0])
    median = statistics.median(seconds)
    line = (f"| Clarabel, {count} sampled columns (median {median:.2f} s each) | {median * M:.0f} "
            f"(extrapolated) | {'/'.join(sorted(set(statuses)))} | {max(gaps):.1e} | | | | "
            f"{100 * np.mean(zeros):.1f}% | |")
    print(line, flush=True)
    return columns, median * M, float(np.mean(zeros)), line


# ---------------------------------------------------------------------------------------- cases
def case_a(args) -> list[str]:
    from polish import hidden_layer

    X, Y = hidden_layer(args.seed)
    problem = cn.NetTrimProblem(X, Y, bias=True, rel_epsilon=0.03)
    lines = ["### (a) trained spirals hidden layer, 200 x 200 (+ bias), P = 200, one budget "
             "(rel_epsilon 0.03)", ""] + HEADER
    reference, seconds = timed(problem, "clarabel")
    zeros = 1.0 - np.count_nonzero(reference.W_design) / reference.W_design.size
    lines.append(row("Clarabel (whole layer)", reference, seconds))
    lines += admm_rows(problem, zeros)
    result, seconds = timed(problem, "admm", {"polish": True, "threads": 2})
    lines.append(row("ADMM + polish, 2 torch threads", result, seconds, zeros))
    return lines


def case_b(args) -> list[str]:
    P, N, M = 10000, 784, 300
    X, Y = relu_layer(P, N, M, seed=args.seed)
    budgets = 0.05 * np.linalg.norm(Y, axis=0)
    problem = cn.NetTrimProblem(X, Y, epsilon=budgets, split_budget=True)
    lines = [f"### (b) layer {N} x {M}, P = {P}, per-column budgets (rel_epsilon 0.05)", ""] + HEADER

    def make(columns):
        return cn.NetTrimProblem(X, Y[:, columns], epsilon=budgets[columns], split_budget=True)

    columns, _, zeros, line = sampled_clarabel(make, M, args.clarabel_columns, args.seed)
    lines.append(line)
    lines += admm_rows(problem, zeros, columns)
    out = peer.solve(X, Y, budgets, iterations=args.peer_iterations)
    Q = out.Q
    line = (f"| peer: Net-Trim's ADMM (rho 1, {out.iterations} iterations, stop on weight change "
            f"1e-4) | {out.seconds:.2f} | budget violation {out.budget_violation:.1e}, inequality "
            f"violation {out.inequality_violation:.1e} | | | no | | "
            f"{100 * (1 - np.count_nonzero(Q) / Q.size):.1f}% | "
            f"{100 * ((1 - np.count_nonzero(Q[:, columns]) / Q[:, columns].size) - zeros):+.1f} pp |")
    print(line, flush=True)
    lines.append(line)
    return lines


def cascade_layer(seed: int, calibration: int = 4000, rel_epsilon: float = 0.02):
    """The cascade program of the second hidden layer of a 784-300-300-10 digits network."""
    from digits_table1 import upscaled_digits, train, network784

    data = upscaled_digits(seed, calibration)
    model = network784()
    train(model, data[0], data[2], epochs=30, lr=1e-3, seed=seed)
    X0 = data[0][:calibration].astype(np.float64)
    first, second = model[0], model[2]
    W1, b1 = first.weight.detach().double().numpy().T, first.bias.detach().double().numpy()
    W2, b2 = second.weight.detach().double().numpy().T, second.bias.detach().double().numpy()
    X1 = np.maximum(X0 @ W1 + b1, 0.0)
    layer1 = cn.NetTrimProblem(X0, X1, bias=True, rel_epsilon=rel_epsilon, split_budget=True)
    pruned = layer1.solve("auto")
    Xhat = np.maximum(X0 @ pruned.W + pruned.b, 0.0)
    Y = np.maximum(X1 @ W2 + b2, 0.0)
    V = Xhat @ W2 + b2
    budgets = np.sqrt(np.sum(np.where(Y > 0, V - Y, 0.0) ** 2, axis=0))
    return Xhat, Y, V, budgets


def case_c(args) -> list[str]:
    Xhat, Y, V, budgets = cascade_layer(args.seed)
    M = Y.shape[1]
    problem = cn.NetTrimProblem(Xhat, Y, V=V, bias=True, epsilon=budgets, split_budget=True)
    lines = [f"### (c) cascade ReLU layer 300 x 300 (+ bias), P = {Xhat.shape[0]}, eq. 7 budgets "
             "per column (digits 784-300-300-10, first layer pruned at rel_epsilon 0.02)", ""] + HEADER

    def make(columns):
        return cn.NetTrimProblem(Xhat, Y[:, columns], V=V[:, columns], bias=True,
                                 epsilon=budgets[columns], split_budget=True)

    columns, _, zeros, line = sampled_clarabel(make, M, args.clarabel_columns, args.seed)
    lines.append(line)
    lines += admm_rows(problem, zeros, columns)
    return lines


def gram_layer(P: int, N: int, M: int, seed: int, batch: int = 5000):
    """A linear layer's statistics from a stream: correlated inputs, Y = X W0 + noise."""
    rng = np.random.default_rng(seed)
    mixing = rng.standard_normal((N, N)) / np.sqrt(N)
    W0 = rng.standard_normal((N, M)) / np.sqrt(N)

    def batches():
        for _ in range(P // batch):
            X = rng.standard_normal((batch, N)) @ mixing
            yield X, X @ W0 + 0.3 * rng.standard_normal((batch, M))

    return cn.GramData.from_batches(batches())


def case_d(args) -> list[str]:
    P, N, M = args.gram_samples, 1024, 1024
    start = time.perf_counter()
    gram = gram_layer(P, N, M, args.seed)
    stream_time = time.perf_counter() - start
    budgets = 0.4 * np.sqrt(gram.y_squares)
    problem = cn.NetTrimProblem.from_gram(gram, epsilon=budgets, split_budget=True)
    H_bytes = gram.H.nbytes
    lines = [f"### (d) linear layer {N} x {M} from P = {P} samples in Gram form, per-column budgets "
             f"(rel_epsilon 0.4; statistics streamed in {stream_time:.1f} s)", ""] + HEADER

    def make(columns):
        sub = cn.GramData(gram.H, gram.XtY[:, columns], gram.y_squares[columns], gram.n,
                          gram.x_sum, gram.y_sum[columns])
        return cn.NetTrimProblem.from_gram(sub, epsilon=budgets[columns], split_budget=True)

    columns, _, zeros, line = sampled_clarabel(make, M, args.clarabel_columns, args.seed)
    lines.append(line)
    with PeakMemory() as memory:
        result, seconds = timed(problem, "auto")
    lines.append(row(f"auto ({result.backend})", result, seconds, zeros, columns))
    lines.append("")
    lines.append(f"Peak memory of the solve above what was held before it: {memory.grown / 2**20:.0f} MiB"
                 f" = {memory.grown / H_bytes:.1f} x the {H_bytes / 2**20:.0f} MiB of H; the P x N "
                 f"samples would take {P * N * 8 / 2**20:.0f} MiB.")
    print(lines[-1], flush=True)
    return lines


def column_problems(X, Y, *, rel_epsilon: float, lam: float) -> dict[str, cn.NetTrimProblem]:
    """The two column-separable Net-Trim forms: per-column budgets and the regularized form."""
    budgets = rel_epsilon * np.linalg.norm(Y, axis=0)
    return {"constrained (column budgets)": cn.NetTrimProblem(X, Y, epsilon=budgets),
            f"regularized (lam={lam:g})": cn.NetTrimProblem(X, Y, lam=lam)}


def case_gpu(args) -> list[str]:
    if not torch.cuda.is_available():
        print("Case 3 (GPU, N=1568, M=512, P=60000): skipped (no CUDA)")
        return ["### Case 3: GPU N=1568, M=512, P=60000", "", "skipped (no CUDA)"]
    P, N, M = 60000, 1568, 512
    X, Y = relu_layer(P, N, M, seed=args.seed)
    lines = [f"### Case 3: GPU ({torch.cuda.get_device_name()}) P={P}, N={N}, M={M}, float32", "",
             "| form | time (s) incl. setup | setup (s) | status | iterations (median / max) | "
             "violation |", "|---|---|---|---|---|---|"]
    for name, problem in column_problems(X, Y, rel_epsilon=args.rel_epsilon, lam=args.lam).items():
        form = problem.to_graph_form()
        solve_graph_form(form, dtype="float32", device="cuda", max_iterations=20)  # warm-up
        result = solve_graph_form(form, dtype="float32", device="cuda")
        lines.append(f"| {name} | {result.setup_time + result.solve_time:.2f} | {result.setup_time:.2f} "
                     f"| {result.status} | {np.median(result.iterations):.0f} / "
                     f"{result.iterations.max()} | {result.violation:.1e} |")
        print(lines[-1], flush=True)
    return lines


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--case", nargs="+", choices=("a", "b", "c", "d", "gpu"),
                        default=["a", "b", "c", "d", "gpu"])
    parser.add_argument("--clarabel-columns", type=int, default=3, help="sampled columns (b-d)")
    parser.add_argument("--peer-iterations", type=int, default=500, help="the peer's iteration cap (b)")
    parser.add_argument("--gram-samples", type=int, default=100_000, help="P of case d")
    parser.add_argument("--rel-epsilon", type=float, default=0.05, help="budgets of the GPU case")
    parser.add_argument("--lam", type=float, default=0.1, help="weight of the GPU case's regularized form")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--plain-iterations", type=int, default=None,
                        help="step limit of the 'ADMM, no polish' rows (default: the engine's 20000)")
    args = parser.parse_args(argv)
    global PLAIN_LIMIT
    PLAIN_LIMIT = args.plain_iterations
    print(f"{platform.processor() or platform.machine()}, {os.cpu_count()} cores, torch "
          f"{torch.__version__}, load average {os.getloadavg()[0]:.1f} at start", flush=True)
    runs = {"a": case_a, "b": case_b, "c": case_c, "d": case_d, "gpu": case_gpu}
    lines = []
    for case in args.case:
        lines += runs[case](args) + [""]
    print(f"load average {os.getloadavg()[0]:.1f} at end\n")
    print("\n".join(lines))


if __name__ == "__main__":
    main()
