"""convexnet: convex sparsification of neural networks.

Declare pruning programs (Net-Trim for a layer or a network, norm balls, sparsity penalties) as
objects, verify dual certificates, and swap solver backends with one argument.
"""

from . import errors
from .errors import BackendUnavailableError, ConvexnetError, InvalidInputError, SolverFailedError
from .nettrim import NetTrimProblem, NetTrimResult
from .network import NetworkResult, trim_network

__version__ = "0.1.0"

__all__ = [
    "BackendUnavailableError",
    "ConvexnetError",
    "InvalidInputError",
    "NetTrimProblem",
    "NetTrimResult",
    "NetworkResult",
    "SolverFailedError",
    "errors",
    "trim_network",
]
