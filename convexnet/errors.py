"""The error hierarchy of convexnet.

Every error raised on bad user input is an :class:`InvalidInputError` (also a ``ValueError``, so
code written against plain Python conventions keeps working). Messages name the argument, say what
is wrong with it and how to fix it. Errors are raised before any work starts.
"""

from __future__ import annotations

__all__ = [
    "ConvexnetError",
    "InvalidInputError",
    "BackendUnavailableError",
    "SolverFailedError",
    "ClusterLostError",
]


class ConvexnetError(Exception):
    """Base class of every error raised by convexnet."""


class InvalidInputError(ConvexnetError, ValueError):
    """An argument is malformed: wrong shape, NaN/inf, out of range, or inconsistent with another."""


class BackendUnavailableError(ConvexnetError):
    """The requested backend is unknown, not installed, or cannot take this kind of program."""


class SolverFailedError(ConvexnetError):
    """A backend ran but returned no usable solution.

    Attributes
    ----------
    status : str
        The status in convexnet's words (``"infeasible"``, ``"unbounded"``, ``"solver_error"``, ...).
    """

    def __init__(self, message: str, status: str = "solver_error"):
        super().__init__(message)
        self.status = status


class ClusterLostError(SolverFailedError):
    """The Dask cluster went away while solving: the scheduler, or every worker, was lost.

    Nothing was written: a network or model being pruned is left as it was, and the message names
    the layer that was being solved. ``status`` is ``"cluster_lost"``.
    """

    def __init__(self, message: str):
        super().__init__(message, status="cluster_lost")
