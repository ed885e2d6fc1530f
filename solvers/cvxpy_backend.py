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
# Arguments solve_problem passes to CVXPY itself: in the options they would collide with them.
_RESERVED_KEYS = {"solver": "backend", "verbose": "verbose", "warm_start": "warm_start"}


def check_options(backend: str, options: dict) -> None:
    """Reject, before any solve, options that the backend's solver would refuse.

    Clarabel: each option is set on a fresh ``clarabel.DefaultSettings()`` as CVXPY does. SCS and
    OSQP: the solver is set up on a one-variable problem with the options, after the renames CVXPY
    makes (SCS's ``eps``, ``use_indirect``); that costs about a millisecond and raises for an unknown
    name or a bad value here, not after compilation (SCS would raise a bare ``TypeError`` mid-solve
    and OSQP's refusal would come back as status ``"solver_error"``).

    Raises
    ------
    TypeError
        Naming the setting, for an unknown name or a wrong type.
    ValueError
        For a value the solver refuses.
    """
    for key, argument in _RESERVED_KEYS.items():
        if key in options:
            raise TypeError(f"{key!r} is not a solver option here; it is set by convexnet (use "
                            f"the {argument}= argument of solve).")
    if backend == "clarabel":
        _check_clarabel_options(options)
    elif backend == "scs":
        _check_scs_options(options)
    elif backend == "osqp":
        _check_osqp_options(options)


def _check_clarabel_options(options: dict) -> None:
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


def _tiny_program():
    """``minimize x s.t. x >= 0`` as sparse data, for setting a solver up with given options."""
    import numpy as np
    import scipy.sparse as sp

    return sp.csc_matrix(np.ones((1, 1))), np.zeros(1), np.ones(1)


def _check_scs_options(options: dict) -> None:
    import scs
    from cvxpy.reductions.solvers.conic_solvers.scs_conif import SCS

    A, b, c = _tiny_program()
    settings = SCS.parse_solver_options({**default_options("scs"), **options})
    try:
        scs.SCS({"A": -A, "b": b, "c": c}, {"l": 1}, **{**settings, "verbose": False})
    except TypeError as error:
        raise TypeError(f"SCS refuses the options {sorted(options)}: {error}.") from None
    except ValueError as error:
        raise ValueError(f"SCS refuses the options {sorted(options)}: {error}.") from None


def _check_osqp_options(options: dict) -> None:
    import osqp

    A, b, c = _tiny_program()
    try:
        osqp.OSQP().setup(None, c, A, b, b + 1.0, **{**default_options("osqp"), **options,
                                                   "verbose": False})
    except TypeError as error:
        raise TypeError(f"OSQP refuses the options {sorted(options)}: {error}.") from None
    except Exception as error:  # OSQP reports a bad value as an OSQPException holding a code
        raise ValueError(f"OSQP refuses the options {sorted(options)} ({type(error).__name__} "
                         f"{error}); see OSQP's settings for names and ranges.") from None


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
