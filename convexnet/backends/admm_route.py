"""The batched graph-form ADMM (:mod:`solvers.admm`) as a backend.

The program is handed over as its graph form (:meth:`SparsityProgram.to_graph_form`): each fit term
becomes an output term with a closed-form prox, each penalty and set a weight term with its own copy of
``W`` (no closed form of the prox of their sum is assumed). The reported ``W`` is the first weight
term's prox (the soft-thresholded iterate for an l1 penalty: exact zeros). Nonconvex terms run through
their prox too; such a result is ``"stationary"``, never ``"optimal"``.
"""

from __future__ import annotations

import dataclasses
import time

import numpy as np

from .._numerics import one_blas_thread
from ..errors import InvalidInputError
from . import Solution
from .polish import applies as polish_applies
from .polish import polish as polish_solution

__all__ = ["ADMMBackend", "VIOLATION_TOL"]

#: The ADMM backend's default relative violation tolerance (``solvers.admm``'s ``violation_tol``).
VIOLATION_TOL = 1e-4
#: The certificate's tolerances for a polished result (those of the interior-point backends).
POLISHED_TOL = 1e-6
#: ADMM steps before the first polish of a separable program; the columns it does not settle run on
#: to ``POLISH_AFTER`` (on the spirals demo's hidden layer 95 of 200 columns polish after 300 steps,
#: 167 after 1000).
POLISH_FIRST = 300
#: Active-set rounds of that first polish (and one start): a column it does not settle quickly is
#: left to the next stage rather than corrected at length from a rough point.
EARLY_ROUNDS = 6
#: ADMM steps before the first polish. On the spirals demo's trained hidden layer (per-column
#: budgets) 500 / 1000 / 2000 steps let 156 / 179 / 193 of 200 columns polish, in 2.8 / 2.3 / 3.5 s.
POLISH_AFTER = 1000
#: The iterations' dtype before the first polish, unless ``dtype`` is given: the stage only has to
#: find each column's support and tight rows (the polish then solves in float64). On the spirals
#: demo's hidden layer float32 took the Net-Trim step from 5.4 s to 3.4 s, same supports.
FIRST_STAGE_DTYPE = "float32"
#: solvers.admm's default step limit.
DEFAULT_MAX_ITERATIONS = 20000
#: Up to this many entries P * N * M, a CPU solve runs on one torch thread: on the shared 2-core
#: box two threads took 5 s on a quiet machine and 52 to 233 s with one other process running on
#: the same layer, one thread 8 to 10 s (issue 13); small products gain little from a second thread.
ONE_THREAD_SIZE = 1e8


class ADMMBackend:
    """``backend="admm"``: every term that has a prox or a projection."""

    name = "admm"

    def accepts(self, program) -> str | None:
        for term in program.fits:
            if not callable(getattr(term, "graph_term", None)):
                return f"the fit {type(term).__name__} has no ADMM term (graph_term)"
        for term in program.weight_terms:
            try:
                term.graph_term()
            except Exception as error:  # a set without a projection says why
                return f"{type(term).__name__} has no prox or projection here ({error})"
        return None

    def check_options(self, options: dict) -> None:
        """ADMM's options by name and value, as :class:`InvalidInputError` before any work."""
        from solvers import admm

        engine_options = dict(options)
        polish = engine_options.pop("polish", True)
        if not isinstance(polish, (bool, np.bool_)):
            raise InvalidInputError(f"solver_options for backend='admm': polish must be True or "
                                    f"False; got {polish!r}.")
        try:
            admm.check_options(**engine_options)
        except (TypeError, ValueError) as error:
            raise InvalidInputError(f"solver_options for backend='admm': {error}") from None

    def solve(self, program, options: dict, verbose: bool = False, executor=None) -> Solution:
        """Run the engine, then polish (:mod:`convexnet.backends.polish`) where the program allows.

        Options are :func:`solvers.admm.solve_graph_form`'s, plus ``polish`` (default True). A
        program that polish applies to runs in stages, each followed by a polish: ``POLISH_FIRST``
        steps (separable programs), up to ``POLISH_AFTER`` (both in ``FIRST_STAGE_DTYPE`` unless
        ``dtype`` is given), then up to ``max_iterations``, each warm-started from the last and,
        for a separable program, run only on the columns no polish settled yet; most columns polish
        long before ADMM alone would reach its tolerances. On the CPU,
        layers up to ``ONE_THREAD_SIZE`` entries run on one torch thread unless ``threads`` is given.
        """
        from solvers import admm

        options = {"violation_tol": VIOLATION_TOL, **options}
        polish = bool(options.pop("polish", True)) and program.convex and polish_applies(program)
        P, N, M = program.shape
        on_cpu = str(options.get("device", "cpu")).startswith("cpu")
        if "threads" not in options and on_cpu and P * N * M <= ONE_THREAD_SIZE:
            options["threads"] = 1
        limit = int(options.pop("max_iterations", DEFAULT_MAX_ITERATIONS))
        first = (POLISH_FIRST,) if program.separable else ()
        ends = ([end for end in first + (POLISH_AFTER,) if end < limit] + [limit]
                if polish else [limit])
        # Before a polish the iterations need only find the support: float32 (half the cost of the
        # products) unless the user chose; a stage past POLISH_AFTER runs in the dtype asked for.
        chosen = options.pop("dtype", None)
        dtypes = [chosen or (FIRST_STAGE_DTYPE if polish and end <= POLISH_AFTER else "float64")
                  for end in ends]
        warm = options.pop("warm_start", None)
        tol = options["violation_tol"]
        solve_time = setup_time = polish_time = 0.0
        # Separable programs: each stage runs only the columns no earlier polish settled.
        active = np.arange(M)
        W_all, dual_all = None, None
        polished_all = np.zeros(M, dtype=bool)
        record = _Record(M)
        done = 0
        for end, dtype in zip(ends, dtypes):
            part = program if active.size == M else program.select_columns(active)
            out = admm.solve_graph_form(part.to_graph_form(), verbose=verbose,
                                        max_iterations=end - done, warm_start=warm, dtype=dtype,
                                        **options)
            done = end
            solve_time += out.solve_time
            setup_time += out.setup_time
            W = _onto_sets(part, np.asarray(out.W, dtype=float))
            dual = np.asarray(out.dual, dtype=float)
            settled = np.zeros(active.size, dtype=bool)
            if polish:
                started = time.perf_counter()
                early = end < limit and end <= POLISH_FIRST
                with one_blas_thread():
                    polished = (polish_solution(part, W, dual, rounds=EARLY_ROUNDS, starts=1)
                                if early else polish_solution(part, W, dual))
                polish_time += time.perf_counter() - started
                if polished is not None:
                    W, dual, settled = polished.W, polished.dual, polished.columns
            if W_all is None:
                W_all, dual_all = np.zeros((N, M)), np.zeros((dual.shape[0], M))
            W_all[:, active], dual_all[:, active] = W, dual
            polished_all[active] = settled
            record.add(active, out)
            if settled.all():
                break
            if not program.separable:
                settled = np.zeros_like(settled)  # coupled columns: all of them go on together
            keep = ~settled
            warm = _Warm(np.asarray(out.W)[:, keep], np.asarray(out.dual)[:, keep],
                         np.asarray(out.rho)[keep])
            active = active[keep]
        out = record.result(out)
        W, dual = W_all, dual_all
        status = out.status
        if not program.convex and status in ("optimal", "optimal_inaccurate"):
            status = "stationary"
        info = {"primal_residual": out.primal_residual, "dual_residual": out.dual_residual,
                "admm": out, "tolerance": tol, "polished": polished_all,
                "polish_time": polish_time, "stages": record.stages}
        tolerances = {"gap_tol": tol, "feas_tol": tol}
        if polish and polished_all.all():
            # Exact on its support: judged as the interior-point backends are.
            tolerances = {"gap_tol": POLISHED_TOL, "feas_tol": POLISHED_TOL}
            status = "optimal"
        return Solution(W, dual, status, solve_time + polish_time, setup_time, out.iterations, info,
                        tolerances)


@dataclasses.dataclass
class _Warm:
    """A warm start for the columns that go on to the next stage."""

    W: np.ndarray
    dual: np.ndarray
    rho: np.ndarray


class _Record:
    """The per-column diagnostics of the stages, written into full-size arrays (M,)."""

    FIELDS = ("primal_residual", "dual_residual", "converged", "rho", "column_violation")

    def __init__(self, M: int):
        self.iterations = np.zeros(M, dtype=np.int64)
        self.values = {}
        self.stages = 0

    def add(self, columns: np.ndarray, out) -> None:
        self.stages += 1
        self.iterations[columns] += np.asarray(out.iterations)
        for name in self.FIELDS:
            value = np.asarray(getattr(out, name))
            if name not in self.values:
                self.values[name] = np.zeros(self.iterations.shape[0], dtype=value.dtype)
            self.values[name][columns] = value

    def result(self, last):
        """The last stage's ``ADMMResult`` with every column's diagnostics (its status is that
        stage's, over the columns it ran)."""
        return dataclasses.replace(last, iterations=self.iterations,
                                   **{name: value for name, value in self.values.items()})


def _onto_sets(program, W: np.ndarray) -> np.ndarray:
    """The reported point moved onto the program's sets, when that lowers its violation.

    ADMM reports the first weight term's prox (exact zeros for an l1 penalty), which meets the sets
    only to the solver's tolerance. Projecting it onto the set (for the balls of the catalog, a
    projection that keeps zeros) makes it feasible; with several sets a few rounds of alternating
    projections are tried. The point is kept only if its violation drops.
    """
    if not program.sets:
        return W
    candidate = W
    for _ in range(1 if len(program.sets) == 1 else 10):
        for term in program.sets:
            candidate = np.asarray(term.project(candidate), dtype=float)
    return candidate if program.violation(candidate) < program.violation(W) else W
