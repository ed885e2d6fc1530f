"""Programs solved on a Dask cluster: data sent once, work split by cost, lost workers survived.

Pass a ``distributed.Client`` (or its ``get_executor()``) as ``executor`` to any solve
(:meth:`SparsityProgram.solve`, :meth:`NetTrimProblem.solve`, :func:`convexnet.trim_network`,
:func:`convexnet.nn.trim`) and the program runs here instead of through ``executor.submit``:

* **Data once.** The program (``X`` of shape (P, N) and the fit terms' targets, (P, M) each) is
  scattered to the cluster once; every task receives a reference to it and the column range
  ``[start, stop)`` it solves, and cuts its columns out on the worker. A task sends back its
  columns' weights ``W[:, start:stop]`` and dual ``Lambda[:, start:stop]`` (the certificate's dual
  point) and a few statuses and times; the certificate is checked once, on the caller's side.
* **Split by cost.** A separable program (every term per column) is cut into contiguous column
  ranges of equal cost, the cost of a column being ``P * N`` (samples times inputs): as many tasks
  as the work pays for (at least :data:`TASK_COST` entries ``P * N * columns`` each), at most
  :data:`TASKS_PER_THREAD` per worker thread (so that a slow or lost worker costs a small share),
  never more than ``M``. A program that couples its columns is one task.
* **GPU workers.** When the backend that runs is ADMM and some worker declares a ``GPU`` resource
  (``dask worker --resources GPU=1``), the tasks ask for ``{"GPU": 1}`` and run ADMM on that worker's
  ``cuda`` device; elsewhere on its CPU. Same task, same code path.
* **Faults.** A task whose worker dies is run again on another worker (the scheduler's own retry);
  if the scattered data was lost with it, it is scattered again and the unfinished tasks are
  submitted again (at most :data:`ATTEMPTS` times each). If the scheduler goes away, or no worker
  is left, :class:`~convexnet.errors.ClusterLostError` is raised: nothing has been written anywhere.

Each column's program is the one the in-process solve runs, with the same backend (``"auto"``'s
choice is made once, for the whole program), so the answers agree to the solvers' accuracy.
:func:`traffic` reports what was sent, per client.
"""

from __future__ import annotations

import contextlib
import math
from concurrent.futures import CancelledError
import pickle
import time
import uuid
import weakref
from dataclasses import dataclass

import numpy as np

from .errors import ClusterLostError

__all__ = ["ATTEMPTS", "TASK_COST", "TASKS_PER_THREAD", "Traffic", "column_ranges", "connect",
           "find_client",
           "payload_bytes", "solve", "threads", "traffic", "worker_device"]

#: Smallest task worth sending, in entries ``P * N * columns`` (about 0.2 s of solver work here:
#: a per-column solve of ``P * N = 6000`` entries took 5 ms in Clarabel).
TASK_COST = 2.5e5
#: Most tasks per worker thread: a lost or slow worker then costs at most this share of a layer.
TASKS_PER_THREAD = 4
#: Submissions of one column range before the cluster is declared lost.
ATTEMPTS = 4
#: Seconds between looks at the tasks and the client while waiting (lost data never completes).
POLL = 0.25


# ------------------------------------------------------------------------------ the client side
@contextlib.contextmanager
def connect(scheduler: str | None = None, workers: int | None = None, *, timeout: float = 30.0):
    """A ``distributed.Client``: of the running cluster at ``scheduler``, or of a local cluster.

    Parameters
    ----------
    scheduler : str, optional
        The scheduler's address, ``tcp://HOST:PORT`` (what ``dask scheduler`` prints).
    workers : int, optional
        Start a ``distributed.LocalCluster`` of this many process workers, one thread each (closed
        on exit). Give one of ``scheduler`` and ``workers``.
    timeout : float
        Seconds to reach the scheduler.

    Raises
    ------
    InvalidInputError
        Both or neither given, ``workers < 1``, or ``dask.distributed`` not installed.
    ClusterLostError
        The scheduler cannot be reached.
    """
    from .errors import InvalidInputError

    if (scheduler is None) == (workers is None):
        raise InvalidInputError("give a scheduler address (a running cluster) or a number of "
                                "local workers, exactly one of them.")
    if workers is not None and (isinstance(workers, bool) or not isinstance(workers, int)
                                or workers < 1):
        raise InvalidInputError(f"workers must be a whole number >= 1; got {workers!r}.")
    try:
        import distributed
    except ImportError:
        raise InvalidInputError("running on a cluster needs dask.distributed: "
                                "pip install 'dask[distributed]'.") from None
    with contextlib.ExitStack() as stack:
        if workers is not None:
            local = stack.enter_context(distributed.LocalCluster(
                n_workers=workers, threads_per_worker=1, processes=True, dashboard_address=":0"))
            scheduler = local.scheduler_address
        try:
            client = stack.enter_context(distributed.Client(scheduler, timeout=timeout))
        except (OSError, TimeoutError, ValueError) as error:
            raise ClusterLostError(f"cannot reach the Dask scheduler at {scheduler!r} ({error}); "
                                   "start it with `dask scheduler` and its workers with "
                                   "`dask worker ADDRESS`.") from None
        yield client


def find_client(executor):
    """The ``distributed.Client`` behind ``executor`` (a client or its ``get_executor()``), or None."""
    if executor is None or not type(executor).__module__.startswith("distributed"):
        return None
    import distributed

    if isinstance(executor, distributed.Client):
        return executor
    client = getattr(executor, "_client", None)
    return client if isinstance(client, distributed.Client) else None


@dataclass
class Traffic:
    """What convexnet sent to a cluster and got back, counted from the serialized payloads.

    Attributes
    ----------
    bytes_sent : int
        Scattered data plus every task's own arguments (pickle protocol 5, buffers included).
    bytes_received : int
        The arrays of the answers (``W`` and the dual of each task's columns).
    scattered : int
        Objects scattered (one per program, again after a loss).
    tasks, resubmitted : int
        Tasks submitted, and of them those submitted again after a loss.
    """

    bytes_sent: int = 0
    bytes_received: int = 0
    scattered: int = 0
    tasks: int = 0
    resubmitted: int = 0


_TRAFFIC: weakref.WeakKeyDictionary = weakref.WeakKeyDictionary()


def traffic(client, *, reset: bool = False) -> Traffic:
    """The :class:`Traffic` convexnet sent through ``client`` so far (``reset``: start again at 0)."""
    if reset or client not in _TRAFFIC:
        _TRAFFIC[client] = Traffic()
    return _TRAFFIC[client]


def payload_bytes(obj) -> int:
    """Bytes of ``obj`` serialized with pickle protocol 5, out-of-band buffers counted, not copied."""
    buffers = []
    header = pickle.dumps(obj, protocol=5, buffer_callback=buffers.append)
    return len(header) + sum(buffer.raw().nbytes for buffer in buffers)


def threads(client) -> int:
    """Worker threads of the cluster (1 when none has joined yet)."""
    workers = client.scheduler_info().get("workers", {})
    return max(1, sum(int(worker.get("nthreads", 1)) for worker in workers.values()))


def _gpu_workers(client) -> int:
    workers = client.scheduler_info().get("workers", {})
    return sum(1 for worker in workers.values() if worker.get("resources", {}).get("GPU", 0) > 0)


def column_ranges(P: int, N: int, M: int, slots: int, *, task_cost: float | None = None,
                  per_thread: int = TASKS_PER_THREAD) -> list[tuple[int, int]]:
    """Contiguous column ranges of equal cost for ``slots`` worker threads.

    Every column costs ``P * N`` (samples times inputs). The count of ranges is
    ``min(M, per_thread * slots, max(1, floor(P * N * M / task_cost)))``: as many as the work pays for,
    a few per thread for balance, one column at least each (``task_cost`` default: :data:`TASK_COST`).

    Returns
    -------
    list of (start, stop)
        Covering ``0 .. M`` in order; lengths differ by at most one.

    Examples
    --------
    >>> column_ranges(200, 30, 4096, 2)
    [(0, 512), (512, 1024), (1024, 1536), (1536, 2048), (2048, 2560), (2560, 3072), (3072, 3584), (3584, 4096)]
    >>> column_ranges(20, 5, 12, 2)
    [(0, 12)]
    """
    task_cost = TASK_COST if task_cost is None else task_cost
    count = int(min(M, per_thread * max(1, slots), max(1, math.floor(P * N * M / task_cost))))
    edges = np.linspace(0, M, count + 1).round().astype(int)
    return [(int(a), int(b)) for a, b in zip(edges[:-1], edges[1:])]


def solve(program, engine_name: str, options: dict, verbose: bool, sparsest: bool, client):
    """Solve ``program`` on the cluster of ``client``; a :class:`~convexnet.backends.Solution`.

    Parameters
    ----------
    program : SparsityProgram
        Shape ``(P, N, M)``.
    engine_name : str
        The registered backend the caller selected (``"auto"`` is resolved here, once).
    options : dict
        The options that backend takes (as :meth:`SparsityProgram.solve` prepared them).
    verbose, sparsest : bool
        As in :meth:`SparsityProgram.solve`; the vertex move runs on the workers.
    client : distributed.Client

    Returns
    -------
    Solution
        Its ``info["cluster"]`` holds the task count, the resources asked for, the devices the
        tasks ran on, and ``seconds`` from the scatter to the last answer stitched.

    Raises
    ------
    ClusterLostError
        The scheduler went away or no worker was left; nothing was changed.
    """
    from . import backends
    from .backends import auto

    _check_running(client, program)
    concrete = auto.choose(program) if engine_name == "auto" else engine_name
    P, N, M = program.shape
    ranges = (column_ranges(P, N, M, threads(client)) if program.separable and M > 1
              else [(0, M)])
    resources = {"GPU": 1} if concrete == "admm" and _gpu_workers(client) else None
    task = dict(engine=engine_name, choice=concrete, options=options, verbose=verbose,
                sparsest=sparsest)
    start = time.perf_counter()
    outputs = _Run(client, program, ranges, task, resources).results()
    solution = _stitch(outputs, ranges, backends.worst_status)
    solution.info["cluster"] = {"tasks": len(ranges), "resources": resources,
                                "devices": sorted({out["device"] for out in outputs}),
                                "seconds": time.perf_counter() - start}
    return solution


def _check_running(client, program, ranges=None):
    if client.status != "running":
        what = "" if ranges is None else f" (columns {ranges[0][0]}:{ranges[-1][1]})"
        raise ClusterLostError(
            f"the Dask cluster is not reachable (client status {client.status!r}) while solving a "
            f"program of shape (P, N, M) = {program.shape}{what}; nothing was changed. Check the "
            "scheduler and its workers, then run again (or run without executor=).")


class _Run:
    """The tasks of one program: scatter, submit, watch, resubmit what was lost."""

    def __init__(self, client, program, ranges, task, resources):
        self.client, self.program, self.ranges = client, program, ranges
        self.task, self.resources = task, resources
        self.ledger = traffic(client)
        self.token = uuid.uuid4().hex[:10]
        self.data = None
        self.attempts = [0] * len(ranges)

    def scatter(self) -> None:
        try:
            self.data = self.client.scatter(self.program, hash=False)
        except (OSError, TimeoutError) as error:
            raise self._lost(error) from error
        self.ledger.bytes_sent += payload_bytes(self.program)
        self.ledger.scattered += 1

    def submit(self, index: int):
        start, stop = self.ranges[index]
        self.attempts[index] += 1
        if self.attempts[index] > ATTEMPTS:
            raise self._lost(RuntimeError(f"columns {start}:{stop} were lost {ATTEMPTS} times"))
        arguments = dict(self.task, start=start, stop=stop)
        self.ledger.bytes_sent += payload_bytes(arguments)
        self.ledger.tasks += 1
        self.ledger.resubmitted += self.attempts[index] > 1
        key = f"convexnet-columns-{start}:{stop}-{self.token}-{self.attempts[index]}"
        return self.client.submit(solve_range, self.data, key=key, resources=self.resources,
                                  **arguments)

    def results(self) -> list:
        import distributed

        self.scatter()
        pending = {self.submit(index): index for index in range(len(self.ranges))}
        outputs = [None] * len(self.ranges)
        while pending:
            _check_running(self.client, self.program, self.ranges)
            try:
                distributed.wait(list(pending), timeout=POLL, return_when="FIRST_COMPLETED")
            except (TimeoutError, CancelledError):
                pass    # the statuses below say what happened; a lost scheduler is checked first
            except OSError as error:
                raise self._lost(error) from error
            _check_running(self.client, self.program, self.ranges)
            lost = []
            for future in list(pending):
                if future.status == "finished":
                    index = pending.pop(future)
                    outputs[index] = self._fetch(future)
                elif future.status == "error":
                    error = future.exception()
                    if not isinstance(error, distributed.KilledWorker):
                        raise error    # the solve itself failed: as it would in-process
                    lost.append(pending.pop(future))
                elif future.status in ("lost", "cancelled"):
                    lost.append(pending.pop(future))
            if lost:
                _check_running(self.client, self.program, self.ranges)
                if self.data.status != "finished":
                    # The scattered program went down with its workers: send it again.
                    for future in pending:
                        future.cancel()
                    lost += list(pending.values())
                    pending = {}
                    self.scatter()
                pending.update({self.submit(index): index for index in sorted(lost)})
        self.data.release()
        return outputs

    def _fetch(self, future) -> dict:
        try:
            output = future.result()
        except (OSError, TimeoutError) as error:
            raise self._lost(error) from error
        solution = output["solution"]
        self.ledger.bytes_received += sum(array.nbytes for array in (solution.W, solution.dual)
                                          if array is not None)
        return output

    def _lost(self, error) -> ClusterLostError:
        first, last = self.ranges[0][0], self.ranges[-1][1]
        return ClusterLostError(
            f"the Dask cluster was lost while solving columns {first}:{last} of a program of shape "
            f"(P, N, M) = {self.program.shape} ({type(error).__name__}: {error}); nothing was "
            "changed. Check the scheduler and its workers, then run again.")


# ------------------------------------------------------------------------------ the worker side
def worker_device(resources: dict, cuda_available: bool) -> str:
    """``"cuda"`` for a worker that declares a ``GPU`` resource on a machine with CUDA, else ``"cpu"``.

    Examples
    --------
    >>> worker_device({"GPU": 1}, cuda_available=True), worker_device({}, cuda_available=True)
    ('cuda', 'cpu')
    """
    return "cuda" if resources.get("GPU", 0) > 0 and cuda_available else "cpu"


def _this_worker_device() -> str:
    try:
        from distributed import get_worker

        resources = dict(get_worker().state.total_resources)
    except ValueError:      # not on a worker (a synchronous scheduler, a test)
        resources = {}
    if resources.get("GPU", 0) <= 0:
        return "cpu"
    import torch

    return worker_device(resources, torch.cuda.is_available())


def solve_range(program, *, start: int, stop: int, engine: str, choice: str, options: dict,
                verbose: bool, sparsest: bool) -> dict:
    """One task: the columns ``start:stop`` of ``program`` solved as in-process (on the worker).

    ADMM runs on the worker's device (:func:`worker_device`) unless the options name a CUDA device.
    Returns ``{"solution": Solution, "device": str}`` with the heavy solver state left out.
    """
    from . import backends
    from .programs.program import solve_here

    columns = None if (start, stop) == (0, program.M) else np.arange(start, stop)
    device = _this_worker_device()
    if choice == "admm" and not str(options.get("device", "cpu")).startswith("cuda"):
        options = {**options, "device": device}
    solution = solve_here(program, backends.get(engine), options, verbose, None, sparsest,
                          choice=choice, columns=columns)
    solution.info = {key: value for key, value in solution.info.items() if _light(value)}
    return {"solution": solution, "device": device}


def _light(value) -> bool:
    """Info worth sending back: numbers, strings, small lists, arrays of at most a column each."""
    if isinstance(value, (bool, int, float, str, np.number, np.bool_)) or value is None:
        return True
    if isinstance(value, np.ndarray):
        return value.ndim <= 1
    if isinstance(value, (list, tuple)):
        return all(isinstance(item, (bool, int, float, str, np.number)) for item in value)
    return isinstance(value, dict) and all(_light(item) for item in value.values())


# ------------------------------------------------------------------------------- the answers
def _stitch(outputs: list, ranges: list, worst_status):
    """One :class:`Solution` from the tasks' answers, columns in order."""
    from .backends import Solution

    solutions = [out["solution"] for out in outputs]
    if len(solutions) == 1:
        return solutions[0]
    statuses = [status for part, (a, b) in zip(solutions, ranges)
                for status in part.info.get("column_status", [part.status] * (b - a))]
    info = {"column_status": statuses, "chunks": len(solutions)}
    for key in set.intersection(*(set(part.info) for part in solutions)) - set(info):
        values = [part.info[key] for part in solutions]
        if key == "refined_columns":
            info[key] = np.concatenate([np.asarray(v) + a for v, (a, _) in zip(values, ranges)])
        elif all(isinstance(v, np.ndarray) and v.ndim == 1 for v in values):
            info[key] = np.concatenate(values)
        elif key.endswith("_time") or key == "vertex_columns":
            info[key] = sum(values)
        elif all(_same(v, values[0]) for v in values):
            info[key] = values[0]
    tolerances = {}
    for part in solutions:
        for key, value in part.tolerances.items():
            tolerances[key] = max(value, tolerances.get(key, value))
    status = worst_status([part.status for part in solutions])
    iterations = [part.iterations for part in solutions]
    if all(isinstance(v, np.ndarray) for v in iterations):
        iterations = np.concatenate(iterations)
    backend = solutions[0].backend if len({part.backend for part in solutions}) == 1 else \
        "+".join(sorted({part.backend for part in solutions if part.backend}))
    found = all(part.W is not None for part in solutions)
    return Solution(np.hstack([part.W for part in solutions]) if found else None,
                    np.hstack([part.dual for part in solutions]) if found and all(
                        part.dual is not None for part in solutions) else None,
                    status, sum(part.solve_time for part in solutions),
                    sum(part.compile_time for part in solutions), iterations, info, tolerances,
                    backend)


def _same(a, b) -> bool:
    try:
        return bool(np.all(a == b))
    except (TypeError, ValueError):
        return False
