"""Backends: the engines a :class:`~convexnet.SparsityProgram` can be solved with, in a registry.

A backend is a small object with

- ``name``: the string users pass (``backend="clarabel"``);
- ``accepts(program) -> str | None``: None when it can solve the program, else the reason it cannot
  (asked before any work, so that a refusal names the backends that can);
- ``solve(program, options, verbose) -> Solution``: the answer before the program checks it.

Registered here: ``clarabel``, ``scs`` and ``osqp`` through :meth:`SparsityProgram.to_cvxpy`
(:mod:`convexnet.backends.cvxpy_route`; OSQP reaches budget constraints through a root search on the
multiplier), ``admm`` through the graph form (:mod:`convexnet.backends.admm_route`), and ``auto``, a
policy over the others (:mod:`convexnet.backends.auto`). Backends ask the program's terms; they never
look at a program's class.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import numpy as np

from ..errors import BackendUnavailableError

__all__ = ["Solution", "SEVERITY", "register", "get", "names", "resolve", "select", "worst_status"]

_REGISTRY: dict = {}

# Worst first: a result's status is the worst of its columns' (or layers').
SEVERITY = ["solver_error", "unbounded", "infeasible", "max_iterations", "optimal_inaccurate",
            "stationary", "optimal"]


def worst_status(statuses) -> str:
    """The most severe of ``statuses`` in the order of :data:`SEVERITY`."""
    return min(statuses, key=SEVERITY.index)


@dataclass
class Solution:
    """A backend's answer: ``W`` (N, M) and the dual of ``Z`` (P, M), before checking."""

    W: np.ndarray | None
    dual: np.ndarray | None
    status: str
    solve_time: float = 0.0
    compile_time: float = 0.0
    iterations: object = None
    info: dict = field(default_factory=dict)
    tolerances: dict = field(default_factory=dict)
    backend: str | None = None


def register(backend) -> None:
    """Add ``backend`` (an object with ``name``, ``accepts`` and ``solve``) to the registry."""
    _REGISTRY[backend.name] = backend


def names() -> list[str]:
    """The registered backends' names."""
    return list(_REGISTRY)


def get(name) -> object:
    """The backend called ``name`` (case-insensitive), or :class:`BackendUnavailableError`."""
    if not isinstance(name, str) or name.lower() not in _REGISTRY:
        raise BackendUnavailableError(f"unknown or uninstalled backend {name!r}; available here: "
                                      f"{', '.join(names())}.")
    return _REGISTRY[name.lower()]


def resolve(program, name) -> str:
    """The concrete backend ``name`` runs for ``program`` (``"auto"`` decided by its policy)."""
    from . import auto

    backend = get(name)
    return auto.choose(program) if backend.name == "auto" else backend.name


def select(program, name) -> object:
    """The backend ``name`` after it accepted ``program``; a refusal names the backends that can."""
    backend = get(name)
    reason = backend.accepts(program)
    if reason is None:
        return backend
    able = [other for other in names() if other != backend.name and other != "auto"
            and _REGISTRY[other].accepts(program) is None]
    advice = (f"use backend={able[0]!r}" + "".join(f" or {other!r}" for other in able[1:])
              if able else "no installed backend takes it")
    raise BackendUnavailableError(f"backend {backend.name!r} cannot solve this program: {reason}; "
                                  f"{advice}.")


def _register_defaults() -> None:
    from . import admm_route, auto, cvxpy_route

    for backend in (*cvxpy_route.backends(), admm_route.ADMMBackend(), auto.AutoBackend()):
        register(backend)


_register_defaults()
