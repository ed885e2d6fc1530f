"""Sparsity programs: ``minimize fit(X @ W) + penalty(W)`` over ``W`` in the given sets.

:class:`SparsityProgram` holds the terms (:mod:`convexnet.fits`, :mod:`convexnet.penalties`,
:mod:`convexnet.sets`) and knows its lowerings; :class:`ProgramResult` is what every backend returns.
"""

from .program import ProgramResult, SparsityProgram

__all__ = ["ProgramResult", "SparsityProgram"]
