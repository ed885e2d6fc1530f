"""``backend="auto"``: a policy over the other backends.

ADMM with polish (:mod:`convexnet.backends.polish`) for every program polish applies to (Net-Trim's
layers, whatever their size: polish makes ADMM's answer exact and certified), and for nonconvex
programs (only a prox method takes them); otherwise Clarabel (interior point, certified to 1e-9) for
convex programs up to ``AUTO_ADMM_SIZE`` entries of ``P * N * M`` and ADMM above it. A program that
the preferred backend refuses goes to the other. When ADMM ran a convex separable program, the
columns it left unpolished are solved again on their likely support by Clarabel, then whole; the
result's backend then reads ``"admm+clarabel"`` and ``info["refined_columns"]`` lists those solved
whole. A whole-layer budget that does not polish is solved again by Clarabel on every column's
likely support at once, moved to a vertex and polished, and only if that does not certify, whole.
"""

from __future__ import annotations

import time

import numpy as np

from . import Solution, get, worst_status

__all__ = ["AutoBackend", "AUTO_ADMM_SIZE", "choose", "preference"]

#: Above this many entries of ``X`` times output columns (``P * N * M``), "auto" prefers ADMM.
AUTO_ADMM_SIZE = 1e8


def preference(P: int, N: int, M: int, *, convex: bool = True, polishable: bool = False) -> str:
    """What ``"auto"`` prefers for a program of ``P`` samples, ``N`` inputs, ``M`` outputs: ADMM
    for nonconvex programs and for those polish makes exact (a Net-Trim layer: the squared loss,
    per-column budgets or one budget for the layer), else ADMM above ``AUTO_ADMM_SIZE`` and
    Clarabel below. A whole-layer budget whose polish does not settle from ADMM's point is solved
    by Clarabel on every column's support at once, moved to a vertex and polished there
    (:func:`~convexnet.backends.restricted.restricted_coupled`): the spirals hidden layer in about
    7 s, certified to 6e-9, against 83 s or more for Clarabel whole."""
    if not convex or polishable:
        return "admm"
    return "admm" if P * N * M > AUTO_ADMM_SIZE else "clarabel"


def choose(program) -> str:
    """The backend ``"auto"`` runs for ``program``."""
    from .polish import applies

    preferred = preference(*program.shape, convex=program.convex, polishable=applies(program))
    order = [preferred, "clarabel" if preferred == "admm" else "admm"]
    for name in order:
        if get(name).accepts(program) is None:
            return name
    return order[0]


class AutoBackend:
    name = "auto"

    def accepts(self, program) -> str | None:
        return get(choose(program)).accepts(program)

    def solve(self, program, options: dict, verbose: bool = False, executor=None, *,
              choice: str | None = None) -> Solution:
        """Run the backend :func:`choose` picks (or ``choice``), then refine what it left."""
        from .admm_route import POLISH_AFTER
        from .polish import applies

        name = choice or choose(program)
        run_options = _options_for(options, name)
        polishing = (name == "admm" and program.convex and applies(program)
                     and run_options.get("polish", True) is not False)
        if polishing:
            # One stage: ADMM's first steps and a polish; what does not polish goes to Clarabel.
            run_options.setdefault("max_iterations", POLISH_AFTER)
        solution = get(name).solve(program, run_options, verbose, executor)
        solution.backend = name
        if name == "admm" and program.convex and solution.W is not None:
            fallback = _options_for(options, "clarabel", keyed_only=True)
            if program.separable:
                solution = _refine(program, solution, fallback, verbose, executor, polishing)
            elif polishing and not solution.info["polished"].all():
                solution = _coupled(program, solution, fallback, verbose, executor)
        return solution


def _options_for(options: dict, name: str, *, keyed_only: bool = False) -> dict:
    """The options meant for ``name``: a dict keyed by backend names gives its entry; a flat dict
    belongs to whichever backend runs first (the fallback then takes none)."""
    from .options import is_keyed, options_for

    if keyed_only and not is_keyed(options):
        return {}
    return dict(options_for(options, name) or {})


def _coupled(program, solution: Solution, options: dict, verbose: bool, executor) -> Solution:
    """A program whose columns are coupled and that did not polish: Clarabel on every column's
    likely support at once (:func:`~convexnet.backends.restricted.restricted_coupled`), else
    Clarabel on the whole program."""
    from .._numerics import one_blas_thread
    from .restricted import restricted_coupled

    from ..certificates.programs import certify_program

    start = time.perf_counter()
    with one_blas_thread():
        found = restricted_coupled(program, solution.W, solution.dual, options=options)
    elapsed = time.perf_counter() - start
    # Where the vertex's polish does not pass, the interior-point dual can miss the 1e-6 gap (the
    # spirals hidden layer: 1.2e-6 to 1.1e-5): only a certified answer is kept.
    if found is None or not certify_program(program, found.W, found.dual, gap_tol=1e-6,
                                            feas_tol=1e-6).ok:
        return _whole(program, solution, options, verbose, executor)
    return Solution(found.W, found.dual, "optimal", solution.solve_time + elapsed,
                    solution.compile_time, solution.iterations,
                    {**solution.info, "refine_time": elapsed,
                     "refine_backend": "clarabel (on supports)"},
                    {"gap_tol": 1e-6, "feas_tol": 1e-6}, backend="admm+clarabel")


def _whole(program, solution: Solution, options: dict, verbose: bool, executor) -> Solution:
    """A program whose columns are coupled and that did not polish: Clarabel solves it whole."""
    whole = get("clarabel").solve(program, options, verbose, executor)
    if whole.W is None:
        return solution
    whole.backend = "admm+clarabel"
    whole.solve_time += solution.solve_time
    whole.info = {**whole.info, "admm_time": solution.solve_time, "polished": solution.info["polished"]}
    return whole


def _refine(program, solution: Solution, options: dict, verbose: bool, executor,
            polishing: bool = False) -> Solution:
    """Re-solve with Clarabel the columns ADMM did not finish (or, where polish applies, did not
    polish: ADMM's own 1e-4 answer is not Clarabel's accuracy); keep ADMM's answer for the rest."""
    out = solution.info["admm"]
    unfinished = ~out.converged | (out.column_violation > solution.info["tolerance"])
    # A polished column is exact on its support whatever ADMM's own state was.
    redo = np.flatnonzero((unfinished | polishing) & ~solution.info["polished"])
    if redo.size == 0:
        return solution
    W, dual = solution.W.copy(), solution.dual.copy()
    refine_time = 0.0
    if polishing:
        from .._numerics import one_blas_thread
        from .restricted import restricted

        start = time.perf_counter()
        # The likely support, then every entry (margin 0): still a conic program of |S| + a few
        # rows per column (QR-compressed fit, working set of rows), where CVXPY's whole column on a
        # 4000 x 785 digits layer took minutes.
        for margin in (0.9, 0.0):
            with one_blas_thread():
                found = restricted(program, W, dual, redo, options=options, margin=margin)
            if found is not None:
                W, dual = found.W, found.dual
                redo = redo[~found.columns[redo]]
            if redo.size == 0:
                break
        refine_time += time.perf_counter() - start
    if redo.size == 0:
        return Solution(W, dual, "optimal", solution.solve_time + refine_time,
                        solution.compile_time, solution.iterations,
                        {**solution.info, "refined_columns": np.zeros(0, dtype=int),
                         "refine_time": refine_time, "refine_backend": "clarabel (on supports)"},
                        {"gap_tol": 1e-6, "feas_tol": 1e-6}, backend="admm+clarabel")
    sub = get("clarabel").solve(program.select_columns(redo), options, verbose, executor)
    if sub.W is None:
        return solution
    W[:, redo], dual[:, redo] = sub.W, sub.dual
    kept = ["optimal"] if redo.size < W.shape[1] else []
    column_status = sub.info.get("column_status", [sub.status])
    tolerances = solution.tolerances
    if polishing:
        # Every column is now polished or Clarabel's: judged as the interior-point backends are.
        tolerances = dict(sub.tolerances)
    return Solution(W, dual, worst_status(kept + list(column_status)),
                    solution.solve_time + refine_time + sub.solve_time,
                    solution.compile_time + sub.compile_time,
                    solution.iterations, {**solution.info, "refined_columns": redo,
                                          "refine_time": refine_time + sub.solve_time + sub.compile_time,
                                          "refine_backend": "clarabel"},
                    tolerances, backend="admm+clarabel")
