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

__all__ = ["GraphForm", "LOSSES", "output_violation"]

#: The three forms of ``f`` a :class:`GraphForm` may declare.
LOSSES = ("budget", "column_budget", "squared")

# A budget smaller than this fraction of ||Y_A||_F is measured against the fraction instead, so that
# epsilon = 0 (exact interpolation of the active entries) still has a finite relative violation.
BUDGET_SCALE_FLOOR = 1e-3


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
    Y: object
    active: object
    V: object = None
    loss: str = "budget"
    epsilon: object = None
    lam: float | None = None
    l1_weights: object = None

    def __post_init__(self):
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
        return P, N, _shape(self.Y)[1]

    def tensors(self, device="cpu", dtype=torch.float64) -> dict[str, torch.Tensor]:
        """The data as tensors on ``device``: X, Y, V in ``dtype``, active as bool, and l1_weights.

        ``epsilon`` is returned as a tensor of shape (M,) for ``"column_budget"`` and a 0-d tensor for
        ``"budget"``.
        """
        def convert(x, kind):
            return _as_float64_tensor(x, device).to(kind)

        data = {name: convert(getattr(self, name), dtype) for name in ("X", "Y", "V", "l1_weights")}
        data["active"] = torch.as_tensor(self.active).to(device=device, dtype=torch.bool)
        if self.epsilon is not None:
            data["epsilon"] = convert(self.epsilon, dtype)
        return data

    def budget_scale(self, data: dict[str, torch.Tensor]) -> torch.Tensor:
        """The denominators of the budget part of the violation (see Notes of the class).

        Returns a 0-d tensor for ``"budget"`` and shape (M,) for ``"column_budget"``.
        """
        Y_active = torch.where(data["active"], data["Y"], torch.zeros_like(data["Y"]))
        tiny = torch.finfo(data["Y"].dtype).tiny
        if self.loss == "budget":
            norm = torch.linalg.vector_norm(Y_active)
        else:
            norm = torch.linalg.vector_norm(Y_active, dim=0)
        return torch.clamp(torch.maximum(data["epsilon"], BUDGET_SCALE_FLOOR * norm), min=tiny)

    def inequality_scale(self, data: dict[str, torch.Tensor]) -> float:
        """``max(max |Y|, max |V|)``, or 1 when both are zero: the scale of the inequality part."""
        scale = max((float(data[name].abs().max()) if data[name].numel() else 0.0)
                    for name in ("Y", "V"))
        return scale if scale > 0 else 1.0

    def _evaluate(self, W):
        device = W.device if _is_tensor(W) else "cpu"
        data = self.tensors(device=device)
        W = _as_float64_tensor(W, device)
        P, N, M = self.shape
        if tuple(W.shape) != (N, M):
            raise ValueError(f"W must have shape {(N, M)}; got {tuple(W.shape)}.")
        return data, W, data["X"] @ W

    def assess(self, W) -> tuple[float, np.ndarray, torch.Tensor]:
        """Objective, per-column relative violation and ``Z = X @ W`` of ``W``, in one float64 pass.

        Parameters
        ----------
        W : array or tensor, shape (N, M)

        Returns
        -------
        objective : float
            As :meth:`objective`.
        violation : numpy.ndarray, shape (M,)
            As :meth:`violation` with ``per_column=True``.
        Z : torch.Tensor, shape (P, M)
            float64, on ``W``'s device (the CPU for numpy input).
        """
        data, W, Z = self._evaluate(W)
        objective = float((data["l1_weights"][:, None] * W.abs()).sum())
        if self.loss == "squared":
            residual = torch.where(data["active"], Z - data["Y"], torch.zeros_like(Z))
            objective += self.lam * float((residual**2).sum())
        budget_scale = self.budget_scale(data) if self.loss != "squared" else None
        violation = output_violation(Z, data["Y"], data["active"], data["V"], loss=self.loss,
                                     epsilon=data.get("epsilon"), budget_scale=budget_scale,
                                     inequality_scale=self.inequality_scale(data))
        return objective, violation.cpu().numpy(), Z

    def objective(self, W) -> float:
        """``g(W)`` plus the finite part of ``f(X @ W)`` (the squared loss; budgets add nothing).

        Parameters
        ----------
        W : array or tensor, shape (N, M)

        Returns
        -------
        float
            Evaluated in float64; the indicators are left to :meth:`violation`.
        """
        return self.assess(W)[0]

    def violation(self, W, *, per_column: bool = False):
        """The relative constraint violation of ``W`` (see Notes of the class), in float64.

        Parameters
        ----------
        W : array or tensor, shape (N, M)
        per_column : bool
            Return one value per column (shape (M,) numpy array) instead of the maximum. For
            ``"budget"`` the layer's budget part is shared by every column.

        Returns
        -------
        float or numpy.ndarray of shape (M,)
        """
        values = self.assess(W)[1]
        return values if per_column else float(values.max(initial=0.0))


def output_violation(Z, Y, active, V, *, loss, epsilon, budget_scale, inequality_scale) -> torch.Tensor:
    """Relative violation of the constraints of ``f`` at ``Z``, one value per column.

    Parameters
    ----------
    Z, Y, V : torch.Tensor, shape (P, M)
    active : torch.Tensor of bool, shape (P, M)
    loss : {"budget", "column_budget", "squared"}
    epsilon : torch.Tensor, 0-d ("budget") or shape (M,) ("column_budget"); None for "squared"
    budget_scale : torch.Tensor like ``epsilon``
        The denominators of the budget part (:meth:`GraphForm.budget_scale`).
    inequality_scale : float
        The denominator of the inequality part (:meth:`GraphForm.inequality_scale`).

    Returns
    -------
    torch.Tensor, shape (M,)
        ``max(budget part, inequality part)`` per column; for ``"budget"`` the budget part is the
        layer's and is the same in every column.
    """
    excess = torch.where(active, torch.full_like(Z, -math.inf), Z - V)
    inequality = torch.clamp(excess.amax(dim=0), min=0.0) / inequality_scale if Z.shape[0] else \
        torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)
    if loss == "squared":
        return inequality
    residual = torch.where(active, Z - Y, torch.zeros_like(Z))
    norm = torch.linalg.vector_norm(residual) if loss == "budget" else \
        torch.linalg.vector_norm(residual, dim=0)
    budget = torch.clamp(norm - epsilon, min=0.0) / budget_scale
    return torch.maximum(inequality, budget.expand_as(inequality))
