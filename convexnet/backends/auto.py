"""``backend="auto"``: a policy over the other backends.

Clarabel (interior point, certified to 1e-9) for convex programs up to ``AUTO_ADMM_SIZE`` entries of
``P * N * M``, ADMM above it (where Clarabel takes a quarter of an hour or more, see
``docs/benchmarks.md``) and for nonconvex programs (only a prox method takes them). A program that the
preferred backend refuses goes to the other.
"""

from __future__ import annotations

from . import get

__all__ = ["AutoBackend", "AUTO_ADMM_SIZE", "choose"]

#: Above this many entries of ``X`` times output columns (``P * N * M``), "auto" prefers ADMM.
AUTO_ADMM_SIZE = 1e8


def choose(program) -> str:
    """The backend ``"auto"`` runs for ``program``."""
    P, N, M = program.shape
    order = ["admm", "clarabel"] if (not program.convex or P * N * M > AUTO_ADMM_SIZE) else \
        ["clarabel", "admm"]
    for name in order:
        if get(name).accepts(program) is None:
            return name
    return order[0]


class AutoBackend:
    name = "auto"

    def accepts(self, program) -> str | None:
        return get(choose(program)).accepts(program)

    def solve(self, program, options: dict, verbose: bool = False):
        name = choose(program)
        solution = get(name).solve(program, options, verbose)
        solution.backend = name
        return solution
