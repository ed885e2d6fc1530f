"""Sparsity programs: ``minimize fit(X @ W) + penalty(W)`` over ``W`` in the given sets.

:class:`SparsityProgram` holds the terms (:mod:`convexnet.fits`, :mod:`convexnet.penalties`,
:mod:`convexnet.sets`) and knows its lowerings; :class:`ProgramResult` is what every backend returns.
"""

from .gram import GramData
from .program import ProgramResult, SparsityProgram

__all__ = ["GramData", "ProgramResult", "SparsityProgram"]
