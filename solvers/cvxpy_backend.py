"""Solve a CVXPY problem with Clarabel, OSQP or SCS: options, statuses, timing.

This module knows nothing about networks: it receives a ``cvxpy.Problem`` and returns what the
solver said, in a fixed vocabulary. Modeling code (``convexnet``) builds the problems and reads the
variables and constraint duals afterwards.

Status vocabulary (the words used throughout convexnet):

================================  ==========================
CVXPY status                      convexnet status
================================  ==========================
``optimal``                       ``"optimal"``
``optimal_inaccurate``            ``"optimal_inaccurate"``
``infeasible``, ``..._inaccurate`` ``"infeasible"``
``unbounded``, ``..._inaccurate``  ``"unbounded"``
``user_limit``                    ``"max_iterations"``
a raised ``cvxpy.SolverError``    ``"solver_error"``
================================  ==========================
"""

from __future__ import annotations

import time
import warnings
from dataclasses import dataclass

import cvxpy as cp

__all__ = [
    "BACKENDS",
    "CVXPYSolveInfo",
    "check_options",
    "default_options",
    "installed_backends",
    "map_status",
    "program_kind",
    "solve_problem",
    "supports",
]

#: convexnet backend name -> CVXPY solver name.
BACKENDS = {"clarabel": "CLARABEL", "osqp": "OSQP", "scs": "SCS"}

#: The cone programs each backend accepts: OSQP takes quadratic programs only.
_ACCEPTS = {"clarabel": {"qp", "socp"}, "osqp": {"qp"}, "scs": {"qp", "socp"}}

# Tight defaults: the library promises answers that match to many digits, so the first-order
# solvers are asked for far more than their own defaults (OSQP 1e-3, SCS 1e-4).
_DEFAULT_OPTIONS = {
    "clarabel": {"tol_gap_abs": 1e-9, "tol_gap_rel": 1e-9, "tol_feas": 1e-9},
    "osqp": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iter": 100_000,
             "polishing": True},
    "scs": {"eps_abs": 1e-8, "eps_rel": 1e-8, "max_iters": 200_000},
}

_STATUS = {
    cp.OPTIMAL: "optimal",
    cp.OPTIMAL_INACCURATE: "optimal_inaccurate",
    cp.INFEASIBLE: "infeasible",
    cp.INFEASIBLE_INACCURATE: "infeasible",
    cp.UNBOUNDED: "unbounded",
    cp.UNBOUNDED_INACCURATE: "unbounded",
    cp.USER_LIMIT: "max_iterations",
}


@dataclass
class CVXPYSolveInfo:
    """What one solve reported.

    Attributes
    ----------
    status : str
        The status in convexnet's vocabulary (module docstring).
    raw_status : str
        CVXPY's own status string, or the error message when the solver raised.
    solve_time : float
        Seconds spent inside the solver.
    compile_time : float
        Seconds CVXPY spent canonicalizing (small when a DPP problem is re-solved).
    iterations : int or None
        The solver's iteration count when it reports one.
    """

    status: str
    raw_status: str
    solve_time: float
    compile_time: float
    iterations: int | None


def installed_backends() -> list[str]:
    """The convexnet names of the CVXPY backends importable here, in preference order."""
    available = set(cp.installed_solvers())
    return [name for name, solver in BACKENDS.items() if solver in available]


def default_options(backend: str) -> dict:
    """A copy of the tolerances convexnet passes to ``backend`` unless told otherwise."""
    return dict(_DEFAULT_OPTIONS[backend])


# Keys CVXPY's Clarabel interface consumes itself instead of passing them to Clarabel's settings.
_CLARABEL_CVXPY_KEYS = ("use_quad_obj", "accept_unknown")


def check_options(backend: str, options: dict) -> None:
    """Reject, before any solve, Clarabel options that Clarabel's settings would refuse.

    Each option is set on a fresh ``clarabel.DefaultSettings()`` as CVXPY does, so an unknown name or
    a value of the wrong type raises here, not after compilation. OSQP and SCS options are checked by
    the solvers themselves when they run.

    Raises
    ------
    TypeError
        Naming the setting, for an unknown name or a wrong type.
    """
    if backend != "clarabel":
        return
    import clarabel

    settings = clarabel.DefaultSettings()
    for name, value in options.items():
        if name in _CLARABEL_CVXPY_KEYS:
            continue
        try:
            setattr(settings, name, value)
        except AttributeError:
            raise TypeError(f"Clarabel has no setting {name!r}.") from None
        except TypeError:
            raise TypeError(f"Clarabel's setting {name!r} cannot take {value!r}.") from None


def map_status(raw_status: str | None) -> str:
    """Translate a CVXPY status string into convexnet's vocabulary."""
    return _STATUS.get(raw_status, "solver_error")


def program_kind(problem: cp.Problem) -> str:
    """``"qp"`` when ``problem`` is a quadratic program, else ``"socp"`` (second-order cones)."""
    return "qp" if problem.is_qp() else "socp"


def supports(backend: str, kind: str) -> bool:
    """Whether ``backend`` accepts programs of ``kind`` (``"qp"`` or ``"socp"``)."""
    return kind in _ACCEPTS[backend]


def solve_problem(problem: cp.Problem, backend: str, *, options: dict | None = None,
                  warm_start: bool = False, verbose: bool = False) -> CVXPYSolveInfo:
    """Solve ``problem`` with one backend and report status and timing.

    Parameters
    ----------
    problem : cvxpy.Problem
        Any problem the backend accepts. DPP problems are re-solved without recompiling.
    backend : {"clarabel", "osqp", "scs"}
    options : dict, optional
        Solver keyword arguments; they override convexnet's tight defaults.
    warm_start : bool
        Passed to CVXPY (OSQP and SCS use the previous solution).
    verbose : bool
        Print the solver's log.

    Returns
    -------
    CVXPYSolveInfo
        A raised ``cvxpy.SolverError`` is reported as status ``"solver_error"``, not raised.
    """
    settings = default_options(backend)
    settings.update(options or {})
    start = time.perf_counter()
    try:
        with warnings.catch_warnings():
            # The status already says "optimal_inaccurate"; CVXPY's warning would repeat it.
            warnings.filterwarnings("ignore", message="Solution may be inaccurate")
            problem.solve(solver=BACKENDS[backend], warm_start=warm_start, verbose=verbose,
                          **settings)
    except cp.error.SolverError as exc:
        elapsed = time.perf_counter() - start
        return CVXPYSolveInfo("solver_error", str(exc), elapsed, 0.0, None)
    stats = problem.solver_stats
    compile_time = float(problem.compilation_time or 0.0)
    solve_time = stats.solve_time if stats.solve_time is not None else (
        time.perf_counter() - start - compile_time)
    return CVXPYSolveInfo(map_status(problem.status), str(problem.status), float(solve_time),
                          compile_time, stats.num_iters)
