"""convexnet: convex sparsification of neural networks.

Declare pruning programs (Net-Trim for a layer or a network, norm balls, sparsity penalties) as
objects, verify dual certificates, and swap solver backends with one argument.
"""

import os as _os
import sys as _sys


def _launched_by_dash_m() -> bool:
    """Whether ``python -m convexnet`` is importing this package in order to run it."""
    argv = list(getattr(_sys, "orig_argv", ()))
    return (_sys.argv[:1] == ["-m"] and "-m" in argv
            and argv[argv.index("-m") + 1:][:1] == [__name__])


# `python -m convexnet` puts the current folder first on sys.path, then imports this package (and
# numpy, scipy and cvxpy through it) before convexnet/__main__.py runs: a numpy.py lying there would
# be executed. When this package is the -m target, the folder is dropped before any other import;
# a program that imports convexnet is left alone.
if (_launched_by_dash_m() and not _sys.flags.safe_path and _sys.path
        and _sys.path[0] in ("", _os.getcwd())):
    del _sys.path[0]

from . import certificates, errors, fits, penalties, sets  # noqa: E402
from .errors import (BackendUnavailableError, ClusterLostError, ConvexnetError, InvalidInputError,
                     SolverFailedError)
from .nettrim import NetTrimProblem, NetTrimResult
from .network import NetworkResult, trim_network
from .programs import GramData, ProgramResult, SparsityProgram

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ClusterLostError",
    "ConvexnetError",
    "GramData",
    "InvalidInputError",
    "NetTrimProblem",
    "NetTrimResult",
    "NetworkResult",
    "ProgramResult",
    "SolverFailedError",
    "SparsityProgram",
    "certificates",
    "errors",
    "fits",
    "penalties",
    "sets",
    "trim_network",
]

# Submodules that import torch load on first use, so that `import convexnet` stays torch-free.
_LAZY = ("nn", "training")


def __getattr__(name):
    if name in _LAZY:
        import importlib

        return importlib.import_module(f".{name}", __name__)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
