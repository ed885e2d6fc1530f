"""The batched graph-form ADMM (:mod:`solvers.admm`) as a backend.

The program is handed over as its graph form (:meth:`SparsityProgram.to_graph_form`): each fit term
becomes an output term with a closed-form prox, each penalty and set a weight term with its own copy of
``W`` (no closed form of the prox of their sum is assumed). The reported ``W`` is the first weight
term's prox (the soft-thresholded iterate for an l1 penalty: exact zeros). Nonconvex terms run through
their prox too; such a result is ``"stationary"``, never ``"optimal"``.
"""

from __future__ import annotations

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
        program that polish applies to runs in stages: ``POLISH_AFTER`` steps (in
        ``FIRST_STAGE_DTYPE`` unless ``dtype`` is given), a polish, and only if some column did not
        polish, the remaining steps from there (warm-started) and a polish again; most columns
        polish long before ADMM alone would reach its tolerances. On the CPU,
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
        stages = [POLISH_AFTER, limit] if polish and limit > POLISH_AFTER else [limit]
        # Before a polish the iterations need only find the support: float32 (half the cost of the
        # products) unless the user chose; any later stage runs in the dtype asked for.
        dtypes = ([FIRST_STAGE_DTYPE] + [options.get("dtype", "float64")] * (len(stages) - 1)
                  if polish and "dtype" not in options else [options.get("dtype", "float64")] * len(stages))
        options.pop("dtype", None)
        form = program.to_graph_form()
        warm = options.pop("warm_start", None)
        tol = options["violation_tol"]
        solve_time = setup_time = polish_time = 0.0
        polished = None
        for stage, dtype in zip(stages, dtypes):
            out = admm.solve_graph_form(form, verbose=verbose, max_iterations=stage,
                                        warm_start=warm, dtype=dtype, **options)
            solve_time += out.solve_time
            setup_time += out.setup_time
            W = _onto_sets(program, np.asarray(out.W, dtype=float))
            dual = np.asarray(out.dual, dtype=float)
            if polish:
                start = time.perf_counter()
                with one_blas_thread():
                    polished = polish_solution(program, W, dual)
                polish_time += time.perf_counter() - start
                if polished is not None and polished.columns.all():
                    break
            warm = out
        status = out.status
        if not program.convex and status in ("optimal", "optimal_inaccurate"):
            status = "stationary"
        info = {"primal_residual": out.primal_residual, "dual_residual": out.dual_residual,
                "admm": out, "tolerance": tol, "polished": np.zeros(M, dtype=bool),
                "polish_time": polish_time, "stages": len(stages)}
        tolerances = {"gap_tol": tol, "feas_tol": tol}
        if polished is not None:
            W, dual = polished.W, polished.dual
            info["polished"] = polished.columns
            if polished.columns.all():
                # Exact on its support: judged as the interior-point backends are.
                tolerances = {"gap_tol": POLISHED_TOL, "feas_tol": POLISHED_TOL}
                status = "optimal"
        return Solution(W, dual, status, solve_time + polish_time, setup_time, out.iterations, info,
                        tolerances)


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
