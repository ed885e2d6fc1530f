"""The result of a Net-Trim layer (:class:`NetTrimResult`): weights, status, figures, saving."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import TYPE_CHECKING

import numpy as np

from .errors import InvalidInputError

if TYPE_CHECKING:
    from .nettrim import NetTrimProblem

__all__ = ["NetTrimResult"]


@dataclass
class NetTrimResult:
    """The outcome of :meth:`NetTrimProblem.solve`.

    Attributes
    ----------
    W : ndarray, shape (N, M) or None
        The pruned weights (bias row removed); exact zeros. None when no solution was found.
    b : ndarray, shape (M,) or None
        The refit bias when the problem has ``bias=True``.
    W_design : ndarray, shape (N_design, M) or None
        ``W`` with the bias row: the program's variable.
    status : str
        ``"optimal"``, ``"optimal_inaccurate"``, ``"infeasible"``, ``"unbounded"``,
        ``"max_iterations"`` or ``"solver_error"`` (the worst over columns for decoupled forms).
    objective : float
        The program's objective at ``W_design`` (``inf`` without a solution).
    discrepancy : float
        ``||act(X @ W + b) - Y||_F``; Proposition 1 gives ``<= epsilon`` when ``V = 0``.
    violation : float
        Relative constraint violation after cleaning (:meth:`NetTrimProblem.violation`).
    dual : ndarray, shape (P, M) or None
        ``Lambda``, the gradient of the loss part at ``Z``: ``X_design^T Lambda`` lies in
        ``-d||W||_1`` at optimality; on Omega the residual's multiplier, off Omega ``mu >= 0``.
    solve_time, compile_time, wall_time : float
        Seconds in the solver, in CVXPY's compilation, and for the whole call.
    column_status : list of str or None
        Per-column statuses for decoupled forms.
    iterations : ndarray or int or None
        Iterations (per column when columns were solved separately).
    backend : str
        The backend that solved it; ``"admm+clarabel"`` when ``"auto"`` ran ADMM and re-solved the
        columns it left unfinished with Clarabel (listed in ``info["refined_columns"]``).
    problem : NetTrimProblem
    certificate : object or None
        The duality-gap certificate, when one was computed.
    info : dict
        Backend-specific extras.
    """

    problem: "NetTrimProblem"
    backend: str
    status: str
    solve_time: float = 0.0
    compile_time: float = 0.0
    wall_time: float = 0.0
    W_design: np.ndarray | None = None
    objective: float = float("inf")
    discrepancy: float = float("nan")
    violation: float = float("nan")
    dual: np.ndarray | None = None
    column_status: list | None = None
    iterations: object = None
    certificate: object = None
    info: dict = field(default_factory=dict)

    @property
    def W(self) -> np.ndarray | None:
        if self.W_design is None:
            return None
        return self.W_design[:-1] if self.problem.bias else self.W_design

    @property
    def b(self) -> np.ndarray | None:
        if self.W_design is None or not self.problem.bias:
            return None
        return self.W_design[-1]

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros in ``W`` (bias excluded)."""
        return float(np.mean(self.W == 0)) if self.W is not None else float("nan")

    @property
    def epsilon(self) -> float | None:
        """The layer budget of the program (None for the regularized form)."""
        return self.problem.epsilon

    def save(self, path) -> None:
        """Write the result and its program to an ``.npz`` file that :func:`verify` and
        ``convexnet certify`` read back (keys: ``W_design``, ``dual``, ``status``, ``X_design``, ``Y``,
        ``V``, ``active``, ``form``, ``penalty_weights`` and the budget: ``epsilon``,
        ``column_budgets`` or ``lam``).

        ``.npz`` is appended to a path that does not end with it (as :func:`numpy.savez_compressed`
        does); an open binary file is written to as is. A path is written atomically: the file is
        either left as it was (on any failure, even a kill) or replaced by the complete result."""
        if self.W_design is None:
            raise InvalidInputError(f"this result has no solution to save (status {self.status!r}).")
        problem = self.problem
        arrays = {"W_design": self.W_design, "status": np.array(self.status),
                  "X_design": problem.X_design, "Y": problem.Y, "V": problem.V,
                  "active": problem.active, "form": np.array(problem.form),
                  "penalty_weights": problem.penalty_weights}
        if self.dual is not None:
            arrays["dual"] = self.dual
        for name in ("epsilon", "column_budgets", "lam"):
            if getattr(problem, name) is not None:
                arrays[name] = np.asarray(getattr(problem, name))
        if hasattr(path, "write"):
            np.savez_compressed(path, **arrays)
            return
        import os

        from ._atomic import atomic_write

        target = os.fspath(path)
        with atomic_write(target if target.endswith(".npz") else target + ".npz") as handle:
            np.savez_compressed(handle, **arrays)

    def __repr__(self) -> str:
        P, N, M = self.problem.shape
        return (f"NetTrimResult(status={self.status!r}, backend={self.backend!r}, shape=({N}, {M}), "
                f"sparsity={self.sparsity:.3f}, objective={self.objective:.6g}, "
                f"discrepancy={self.discrepancy:.6g}, epsilon={self.epsilon}, "
                f"violation={self.violation:.2e}, solve_time={self.solve_time:.3f}s)")
