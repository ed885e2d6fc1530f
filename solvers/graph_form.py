"""The graph-form contract between a pruning program and the ADMM engine.

A :class:`GraphForm` is the data of one batched program

.. math::

    \\min_{W, Z} \\; g(W) + f(Z) \\quad \\text{subject to} \\quad Z = X W,

with ``X`` of shape ``(P, N)`` (P samples, N features), ``W`` of shape ``(N, M)`` and ``Z`` of shape
``(P, M)``; the M columns are batched. The modeling layer builds it (``NetTrimProblem.to_graph_form()``);
:func:`solvers.admm.solve_graph_form` solves it. This module knows nothing about networks.

The helpers :meth:`GraphForm.objective` and :meth:`GraphForm.violation` evaluate a candidate ``W`` in
float64, whatever solver produced it, so that results are judged by one rule.
"""

from __future__ import annotations

import dataclasses
import math
import numbers

import numpy as np
import torch

from . import graph_terms

__all__ = ["GraphForm", "LOSSES"]

#: The three forms of ``f`` a :class:`GraphForm` may declare.
LOSSES = ("budget", "column_budget", "squared")



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


def _largest(x) -> float:
    """``max |x|`` (0 for an empty array), for numpy arrays and tensors."""
    if _is_tensor(x):
        return float(x.abs().max()) if x.numel() else 0.0
    return float(np.abs(x).max()) if x.size else 0.0


def _bool_array(name: str, x):
    if _is_tensor(x):
        return x.to(torch.bool)
    x = np.asarray(x)
    if x.dtype != np.bool_ and not np.isin(x, (0, 1)).all():
        raise ValueError(f"GraphForm.{name} must be boolean (or 0/1); got values other than 0 and 1.")
    return x.astype(bool)


@dataclasses.dataclass(frozen=True)
class GraphForm:
    """One batched program ``minimize g(W) + f(Z) subject to Z = X @ W``.

    .. math::

        g(W) = \\sum_{n, m} \\ell_n \\, |W_{nm}|, \\qquad \\ell = \\text{l1\\_weights} \\ge 0,

    and ``f`` one of, with ``A`` the active mask (Net-Trim's Omega) and ``r = Z - Y``:

    - ``loss="budget"``: indicator of ``sum over A of r^2 <= epsilon^2`` (one budget for the whole
      layer: the columns are coupled) and ``Z <= V`` off ``A``;
    - ``loss="column_budget"``: indicator of ``sum over A[:, m] of r[:, m]^2 <= epsilon[m]^2`` for
      every column ``m``, and ``Z <= V`` off ``A``;
    - ``loss="squared"``: ``lam * sum over A of r^2`` plus the indicator of ``Z <= V`` off ``A``.

    When ``A`` is all True there is no inequality (a linear layer). Arrays may be numpy arrays or torch
    tensors; numpy inputs are kept as floating numpy arrays, tensors as tensors.

    Parameters
    ----------
    X : array, shape (P, N)
        The layer input, one sample per row.
    Y : array, shape (P, M)
        The targets.
    active : array of bool, shape (P, M)
        ``A``: the entries where the loss applies; the inequality ``Z <= V`` applies elsewhere.
    V : array, shape (P, M), optional
        Thresholds of the inequality off ``A``. Default zeros.
    loss : {"budget", "column_budget", "squared"}
        The form of ``f``.
    epsilon : float or array of shape (M,), optional
        The budget: a float for ``"budget"``, one entry per column for ``"column_budget"``; None for
        ``"squared"``. Non-negative.
    lam : float, optional
        The weight of the squared loss, positive; only for ``"squared"``.
    l1_weights : array, shape (N,), optional
        Non-negative weights of the l1 penalty per row of ``W`` (0 for an unpenalized bias row).
        Default ones.

    Notes
    -----
    The relative violation of a candidate ``W`` (with ``Z = X @ W``) is the larger of

    - the budget part: ``max(0, ||r_A|| - epsilon) / max(epsilon, 1e-3 * ||Y_A||)`` (per column for
      ``"column_budget"``); the floor gives ``epsilon = 0`` a scale;
    - the inequality part: ``max(0, max over entries off A of (Z - V)) / s`` with
      ``s = max(max |Y|, max |V|)`` (1 when both are zero).

    Examples
    --------
    >>> import numpy as np
    >>> rng = np.random.default_rng(0)
    >>> X = rng.standard_normal((30, 5)); Y = np.maximum(X @ rng.standard_normal((5, 2)), 0)
    >>> form = GraphForm(X, Y, active=Y > 0, loss="budget", epsilon=0.1 * np.linalg.norm(Y))
    >>> form.violation(np.zeros((5, 2))) > 0
    True
    """

    X: object
    Y: object = None
    active: object = None
    V: object = None
    loss: str = "budget"
    epsilon: object = None
    lam: float | None = None
    l1_weights: object = None
    outputs: tuple = None
    weights: tuple = None
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
        if self.outputs is not None:
            self._check_terms()
            return
        X = _float_array("X", self.X, 2)
        Y = _float_array("Y", self.Y, 2)
        P, N = _shape(X)
        M = _shape(Y)[1]
        if _shape(Y)[0] != P:
            raise ValueError(f"GraphForm.Y must have P = {P} rows like X; got shape {_shape(Y)}.")
        active = _bool_array("active", self.active)
        if _shape(active) != (P, M):
            raise ValueError(f"GraphForm.active must have shape {(P, M)}; got {_shape(active)}.")
        V = self.V
        if V is None:
            V = torch.zeros_like(Y) if _is_tensor(Y) else np.zeros_like(Y)
        V = _float_array("V", V, 2)
        if _shape(V) != (P, M):
            raise ValueError(f"GraphForm.V must have shape {(P, M)}; got {_shape(V)}.")
        if self.loss not in LOSSES:
            raise ValueError(f"GraphForm.loss must be one of {LOSSES}; got {self.loss!r}.")
        epsilon = self._checked_epsilon(M)
        lam = self._checked_lam()
        weights = self.l1_weights
        if weights is None:
            weights = np.ones(N)
        weights = _float_array("l1_weights", weights, 1)
        if _shape(weights) != (N,):
            raise ValueError(f"GraphForm.l1_weights must have shape {(N,)}; got {_shape(weights)}.")
        if bool((weights < 0).any()):
            raise ValueError("GraphForm.l1_weights must be non-negative (0 leaves a row unpenalized).")
        for name, value in (("X", X), ("Y", Y), ("active", active), ("V", V), ("epsilon", epsilon),
                            ("lam", lam), ("l1_weights", weights)):
            object.__setattr__(self, name, value)
        # The three named losses are the Net-Trim layer's terms: a fit on the mask (a ball or the
        # squared loss) and the inequality off it.
        inactive = ~active if not _is_tensor(active) else ~active
        if self.loss == "squared":
            fit = graph_terms.QuadraticFit(Y, active, lam)
        else:
            fit = graph_terms.BallFit(Y, active, epsilon, per_column=self.loss == "column_budget")
        outputs = (fit,) if bool(active.all()) else (fit, graph_terms.UpperBound(V, inactive))
        scale = max(_largest(Y), _largest(V))
        object.__setattr__(self, "outputs", outputs)
        object.__setattr__(self, "weights", (graph_terms.WeightedL1(weights),))
        object.__setattr__(self, "violation_scale", scale if scale > 0 else 1.0)

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

    def _checked_epsilon(self, M: int):
        epsilon = self.epsilon
        if self.loss == "squared":
            if epsilon is not None:
                raise ValueError('GraphForm.epsilon must be None for loss="squared"; pass lam instead.')
            return None
        if epsilon is None:
            raise ValueError(f'GraphForm.epsilon is required for loss="{self.loss}".')
        if self.loss == "budget":
            scalar = isinstance(epsilon, numbers.Real) or (
                _is_tensor(epsilon) and epsilon.ndim == 0) or np.ndim(epsilon) == 0
            if not scalar:
                raise ValueError('GraphForm.epsilon must be one float for loss="budget"; '
                                 'use loss="column_budget" for one budget per column.')
            epsilon = float(epsilon)
            if not math.isfinite(epsilon) or epsilon < 0:
                raise ValueError(f"GraphForm.epsilon must be finite and >= 0; got {epsilon}.")
            return epsilon
        epsilon = _float_array("epsilon", epsilon, 1)
        if _shape(epsilon) != (M,):
            raise ValueError(f'GraphForm.epsilon must have shape {(M,)} for loss="column_budget"; '
                             f"got {_shape(epsilon)}.")
        if bool((epsilon < 0).any()):
            raise ValueError("GraphForm.epsilon must be >= 0 in every column.")
        return epsilon

    def _checked_lam(self):
        if self.loss != "squared":
            if self.lam is not None:
                raise ValueError(f'GraphForm.lam must be None for loss="{self.loss}"; pass epsilon.')
            return None
        if self.lam is None or not math.isfinite(float(self.lam)) or float(self.lam) <= 0:
            raise ValueError(f'GraphForm.lam must be a positive float for loss="squared"; got {self.lam}.')
        return float(self.lam)

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
