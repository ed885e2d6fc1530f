"""The graph-form contract between a sparsity program and the ADMM engine.

A :class:`GraphForm` is the data of one batched program

.. math::

    \\min_{W, Z} \\; \\sum_i g_i(W) + \\sum_j f_j(Z) \\quad \\text{subject to} \\quad Z = X W,

with ``X`` of shape ``(P, N)`` (P samples, N features), ``W`` of shape ``(N, M)`` and ``Z`` of shape
``(P, M)``; the M columns are batched. The terms ``g_i`` (on the weights) and ``f_j`` (on the outputs,
disjoint masks) are objects of :mod:`solvers.graph_terms` that own their proxes. The modeling layer
builds the form (``SparsityProgram.to_graph_form()``); :func:`solvers.admm.solve_graph_form` solves
it. This module knows nothing about networks.

:meth:`GraphForm.assess` evaluates a candidate ``W`` in float64, whatever solver produced it.
"""

from __future__ import annotations

import dataclasses

import numpy as np
import torch

from . import graph_terms

__all__ = ["GraphForm"]


def _is_tensor(x) -> bool:
    return isinstance(x, torch.Tensor)


def _as_float64_tensor(x, device) -> torch.Tensor:
    if _is_tensor(x):
        return x.detach().to(device=device, dtype=torch.float64)
    return torch.as_tensor(np.asarray(x, dtype=np.float64), device=device)


def _shape(x) -> tuple[int, ...]:
    return tuple(x.shape)


def _check_finite(name: str, x) -> None:
    finite = torch.isfinite(x).all() if _is_tensor(x) else np.isfinite(np.asarray(x)).all()
    if not bool(finite):
        raise ValueError(f"GraphForm.{name} has NaN or infinite entries; clean them before solving.")


def _float_array(name: str, x, ndim: int):
    """Keep tensors as tensors and turn anything else into a floating numpy array."""
    if x is None:
        raise ValueError(f"GraphForm.{name} is None; pass an array.")
    if _is_tensor(x):
        if not x.is_floating_point():
            x = x.to(torch.float64)
    else:
        x = np.asarray(x)
        if not np.issubdtype(x.dtype, np.floating):
            x = x.astype(np.float64)
    if x.ndim != ndim:
        raise ValueError(f"GraphForm.{name} must be {ndim}-D; got shape {_shape(x)}.")
    _check_finite(name, x)
    return x


@dataclasses.dataclass(frozen=True)
class GraphForm:
    """One batched program ``minimize sum_i g_i(W) + sum_j f_j(Z) subject to Z = X @ W``.

    Build it with :meth:`from_terms`. Arrays may be numpy arrays or torch tensors.

    Attributes
    ----------
    X : array, shape (P, N)
    outputs : tuple of output terms
        :class:`~solvers.graph_terms.QuadraticFit`, :class:`~solvers.graph_terms.BallFit`,
        :class:`~solvers.graph_terms.UpperBound`, each of shape (P, M), masks disjoint.
    weights : tuple of weight terms
        :class:`~solvers.graph_terms.WeightedL1`, :class:`~solvers.graph_terms.GroupL2`,
        :class:`~solvers.graph_terms.Projection`, :class:`~solvers.graph_terms.Prox`; none means
        ``g = 0``.
    violation_scale : float
        The output scale of relative violations: the largest magnitude of the output terms' data
        (1 when all are 0).

    Notes
    -----
    The relative violation of a candidate ``W`` (with ``Z = X @ W``) is the largest over the output
    terms, per column:

    - a ball: ``max(0, ||r|| - epsilon) / max(epsilon, 1e-3 * ||Y_mask||)`` (per column for per-column
      balls); the floor gives ``epsilon = 0`` a scale;
    - an upper bound: ``max(0, max over the mask of (Z - V)) / violation_scale``.

    Examples
    --------
    >>> import numpy as np
    >>> from solvers import graph_terms
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((30, 5)); Y = np.maximum(X @ rng.standard_normal((5, 2)), 0)
    >>> fit = graph_terms.BallFit(Y, Y > 0, 0.1 * np.linalg.norm(Y), per_column=False)
    >>> form = GraphForm.from_terms(X, [fit, graph_terms.UpperBound(np.zeros_like(Y), Y <= 0)],
    ...                             [graph_terms.WeightedL1(np.ones(5))])
    >>> form.violation(np.zeros((5, 2))) > 0
    True
    """

    X: object
    outputs: tuple = ()
    weights: tuple = ()
    violation_scale: float = None

    @classmethod
    def from_terms(cls, X, outputs, weights) -> "GraphForm":
        """The program ``min sum g_i(W) + sum f_j(Z) s.t. Z = X W`` from :mod:`solvers.graph_terms`.

        Parameters
        ----------
        X : array, shape (P, N)
        outputs : sequence of output terms (``QuadraticFit``, ``BallFit``, ``UpperBound``)
            Each of shape (P, M), with disjoint masks.
        weights : sequence of weight terms (``WeightedL1``, ``GroupL2``, ``Projection``, ``Prox``)
        """
        return cls(X=X, outputs=tuple(outputs), weights=tuple(weights))

    def __post_init__(self):
        self._check_terms()

    def _check_terms(self) -> None:
        X = _float_array("X", self.X, 2)
        P, N = _shape(X)
        if not self.outputs:
            raise ValueError("GraphForm.outputs is empty; a program needs at least one output term.")
        M = self.outputs[0].shape[1]
        coverage = np.zeros((P, M), dtype=np.int64)
        for term in self.outputs:
            if term.shape != (P, M):
                raise ValueError(f"every output term must have shape {(P, M)}; got {term.shape}.")
            mask = term.mask.cpu().numpy() if _is_tensor(term.mask) else np.asarray(term.mask)
            coverage += mask.astype(np.int64)
        if (coverage > 1).any():
            raise ValueError("the output terms' masks overlap; each entry of Z may belong to one term.")
        weights = tuple(self.weights or ()) or (graph_terms.WeightedL1(np.zeros(N)),)
        scale = max(term.magnitude() for term in self.outputs)
        object.__setattr__(self, "X", X)
        object.__setattr__(self, "outputs", tuple(self.outputs))
        object.__setattr__(self, "weights", weights)
        object.__setattr__(self, "violation_scale", scale if scale > 0 else 1.0)

    @property
    def coupled(self) -> bool:
        """Whether some term couples the columns (then one ``rho`` serves them all)."""
        return not all(term.separable for term in (*self.outputs, *self.weights))

    @property
    def row_scalable(self) -> bool:
        """Whether every weight term takes a per-row equilibration (else a scalar one is used)."""
        return all(term.row_scalable for term in self.weights)

    @property
    def shape(self) -> tuple[int, int, int]:
        """``(P, N, M)``: samples, features, columns."""
        P, N = _shape(self.X)
        return P, N, self.outputs[0].shape[1]

    def assess(self, W) -> tuple[float, np.ndarray, torch.Tensor]:
        """Objective, per-column relative violation and ``Z = X @ W`` of ``W``, in one float64 pass.

        Parameters
        ----------
        W : array or tensor, shape (N, M)

        Returns
        -------
        objective : float
            The weight terms' values plus the output terms' finite parts (indicators add nothing).
        violation : numpy.ndarray, shape (M,)
            The largest relative violation of the output terms per column (see Notes of the class);
            a coupled term's violation is the same in every column.
        Z : torch.Tensor, shape (P, M)
            float64, on ``W``'s device (the CPU for numpy input).
        """
        device = W.device if _is_tensor(W) else "cpu"
        W = _as_float64_tensor(W, device)
        P, N, M = self.shape
        if tuple(W.shape) != (N, M):
            raise ValueError(f"W must have shape {(N, M)}; got {tuple(W.shape)}.")
        Z = _as_float64_tensor(self.X, device) @ W
        outputs = [term.prepare(device=device, dtype=torch.float64, output_scale=1.0)
                   for term in self.outputs]
        ones = torch.ones((N, 1), dtype=torch.float64, device=device)
        objective = sum(float(output.value(Z).sum()) for output in outputs)
        objective += sum(term.prepare(device=device, dtype=torch.float64, row_scale=ones,
                                      output_scale=1.0).value(W) for term in self.weights)
        violation = torch.zeros(M, dtype=torch.float64, device=device)
        for output in outputs:
            violation = torch.maximum(violation, output.violation(Z, self.violation_scale))
        return objective, violation.cpu().numpy(), Z

    def objective(self, W) -> float:
        """The weight terms plus the finite part of the output terms at ``W`` (N, M), in float64."""
        return self.assess(W)[0]

    def violation(self, W, *, per_column: bool = False):
        """The relative constraint violation of ``W`` (see Notes of the class), in float64.

        Parameters
        ----------
        W : array or tensor, shape (N, M)
        per_column : bool
            Return one value per column (shape (M,) numpy array) instead of the maximum. A coupled
            term's violation is shared by every column.

        Returns
        -------
        float or numpy.ndarray of shape (M,)
        """
        values = self.assess(W)[1]
        return values if per_column else float(values.max(initial=0.0))
