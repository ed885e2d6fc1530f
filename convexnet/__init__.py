"""convexnet: convex sparsification of neural networks.

Declare pruning programs (Net-Trim for a layer or a network, norm balls, sparsity penalties) as
objects, verify dual certificates, and swap solver backends with one argument.
"""

from . import certificates, errors, fits, penalties, sets
from .errors import BackendUnavailableError, ConvexnetError, InvalidInputError, SolverFailedError
from .nettrim import NetTrimProblem, NetTrimResult
from .network import NetworkResult, trim_network
from .programs import GramData, ProgramResult, SparsityProgram

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
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
