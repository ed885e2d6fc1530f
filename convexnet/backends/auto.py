"""``backend="auto"``: a policy over the other backends.

Clarabel (interior point, certified to 1e-9) for convex programs up to ``AUTO_ADMM_SIZE`` entries of
``P * N * M``, ADMM above it (where Clarabel takes a quarter of an hour or more, see
``docs/benchmarks.md``) and for nonconvex programs (only a prox method takes them). A program that the
preferred backend refuses goes to the other. When ADMM ran a convex separable program, the columns it
left unfinished (``max_iterations``, or a violation above its tolerance) are solved again with
Clarabel; the result's backend then reads ``"admm+clarabel"`` and ``info["refined_columns"]`` lists
them.
"""

from __future__ import annotations

import numpy as np

from . import Solution, get, worst_status

__all__ = ["AutoBackend", "AUTO_ADMM_SIZE", "by_size", "choose"]

#: Above this many entries of ``X`` times output columns (``P * N * M``), "auto" prefers ADMM.
AUTO_ADMM_SIZE = 1e8


def by_size(P: int, N: int, M: int) -> str:
    """What ``"auto"`` prefers for a convex program of ``P`` samples, ``N`` inputs, ``M`` outputs."""
    return "admm" if P * N * M > AUTO_ADMM_SIZE else "clarabel"


def choose(program) -> str:
    """The backend ``"auto"`` runs for ``program``."""
    preferred = "admm" if not program.convex else by_size(*program.shape)
    order = [preferred, "clarabel" if preferred == "admm" else "admm"]
    for name in order:
        if get(name).accepts(program) is None:
            return name
    return order[0]


class AutoBackend:
    name = "auto"


    def accepts(self, program) -> str | None:
        return get(choose(program)).accepts(program)

    def solve(self, program, options: dict, verbose: bool = False, executor=None) -> Solution:
        name = choose(program)
        solution = get(name).solve(program, _options_for(options, name), verbose, executor)
        solution.backend = name
        if name == "admm" and program.convex and program.separable and solution.W is not None:
            solution = _refine(program, solution, _options_for(options, "clarabel", keyed_only=True),
                               verbose, executor)
        return solution


def _options_for(options: dict, name: str, *, keyed_only: bool = False) -> dict:
    """The options meant for ``name``: a dict keyed by backend names gives its entry; a flat dict
    belongs to whichever backend runs first (the fallback then takes none)."""
    from .options import is_keyed, options_for

    if keyed_only and not is_keyed(options):
        return {}
    return dict(options_for(options, name) or {})


def _refine(program, solution: Solution, options: dict, verbose: bool, executor) -> Solution:
    """Re-solve with Clarabel the columns ADMM did not finish; keep ADMM's answer for the rest."""
    out = solution.info["admm"]
    unfinished = ~out.converged | (out.column_violation > solution.info["tolerance"])
    # A polished column is exact on its support whatever ADMM's own state was.
    redo = np.flatnonzero(unfinished & ~solution.info["polished"])
    if redo.size == 0:
        return solution
    sub = get("clarabel").solve(program.select_columns(redo), options, verbose, executor)
    if sub.W is None:
        return solution
    W, dual = solution.W.copy(), solution.dual.copy()
    W[:, redo], dual[:, redo] = sub.W, sub.dual
    kept = ["optimal"] if redo.size < W.shape[1] else []
    column_status = sub.info.get("column_status", [sub.status])
    return Solution(W, dual, worst_status(kept + list(column_status)),
                    solution.solve_time + sub.solve_time, solution.compile_time + sub.compile_time,
                    solution.iterations, {**solution.info, "refined_columns": redo,
                                          "refine_time": sub.solve_time + sub.compile_time,
                                          "refine_backend": "clarabel"},
                    solution.tolerances, backend="admm+clarabel")
