r"""The terms of a graph-form program, as the ADMM engine sees them.

:class:`solvers.graph_form.GraphForm` is ``minimize sum_i g_i(W) + sum_j f_j(Z) subject to Z = X W``
with ``W`` of shape ``(N, M)`` and ``Z`` of shape ``(P, M)``. The engine knows nothing about the
meaning of a term: it asks each one for its prox in the engine's scaled variables (see
:mod:`solvers.admm_state`), ``W_hat = W / (s * r)`` (``r`` one scale per row of ``W``, the
equilibration) and ``Z_hat = Z / s`` (``s`` the output scale). Every program is divided by ``s``.

Output terms (``f_j``), each on the entries where its ``mask`` is True; masks are disjoint:

- :class:`QuadraticFit`: ``weight * sum_mask (Z - Y)^2``;
- :class:`BallFit`: indicator of ``||(Z - Y)_mask|| <= epsilon`` (whole matrix, or one ball per column);
- :class:`UpperBound`: indicator of ``Z <= V`` on the mask.

Weight terms (``g_i``); with more than one, the engine gives each its own copy of ``W``:

- :class:`WeightedL1`: ``sum c * |W|`` (``c`` per row or per entry);
- :class:`GroupL2`: ``strength * sum of the l2 norms of the rows`` (``axis=1``) or columns (``axis=0``);
- :class:`Projection`: the indicator of a set, given by its Euclidean projection;
- :class:`ProjectedL1`: ``sum c * |W|`` plus the indicator of a set, as one term, given by the prox
  of the sum (a closed form for the sets of :mod:`solvers.prox_constrained`);
- :class:`Prox`: any penalty given by its prox (nonconvex ones included).

A term is ``separable`` when it is a sum of per-column terms; then the engine may give every column
its own ``rho`` and retire columns one by one. ``row_scalable`` says whether its scaled prox exists
for any positive row scaling ``r`` (otherwise the engine equilibrates with one scalar).
"""

from __future__ import annotations

import dataclasses
import math

import numpy as np
import torch

from .admm_operators import soft_threshold
from .prox import prox_group_l1

__all__ = ["QuadraticFit", "BallFit", "UpperBound", "WeightedL1", "GroupL2", "Projection",
           "ProjectedL1", "Prox", "BUDGET_SCALE_FLOOR"]

# A budget smaller than this fraction of ||Y_mask|| is measured against the fraction instead, so that
# epsilon = 0 (exact interpolation) still has a finite relative violation.
BUDGET_SCALE_FLOOR = 1e-3


def _tensor(x, device, dtype) -> torch.Tensor:
    if isinstance(x, torch.Tensor):
        return x.detach().to(device=device, dtype=dtype)
    return torch.as_tensor(np.asarray(x), device=device).to(dtype)


def _mask(x, device) -> torch.Tensor:
    return torch.as_tensor(np.asarray(x.cpu() if isinstance(x, torch.Tensor) else x),
                           device=device).to(torch.bool)


# ------------------------------------------------------------------------------------ outputs
class _OutputTerm:
    """Common data of an output term: a target (P, M) and a mask (P, M).

    ``fits_target`` says whether the target is something ``Z`` should come close to (a fit), as
    opposed to a bound; the output scale is the root mean square of the fits' targets.
    """

    separable = True
    fits_target = True

    def __init__(self, target, mask):
        self.target = target
        self.mask = mask

    @property
    def shape(self):
        return tuple(self.target.shape)

    def square_sum(self) -> float:
        """``sum over the mask of target^2``: the term's share of the output scale (0 for a bound)."""
        if not self.fits_target:
            return 0.0
        target = np.asarray(self.target.cpu() if isinstance(self.target, torch.Tensor) else self.target)
        mask = np.asarray(self.mask.cpu() if isinstance(self.mask, torch.Tensor) else self.mask)
        return float(np.sum(np.where(mask, target, 0.0) ** 2))

    def magnitude(self) -> float:
        """The largest ``|target|`` on the mask (the output scale of relative violations)."""
        target = np.asarray(self.target.cpu() if isinstance(self.target, torch.Tensor) else self.target)
        mask = np.asarray(self.mask.cpu() if isinstance(self.mask, torch.Tensor) else self.mask)
        values = np.abs(target[mask])
        return float(values.max()) if values.size else 0.0


class QuadraticFit(_OutputTerm):
    """``weight * sum_mask (Z - Y)^2``; prox ``(rho d + 2 w y) / (rho + 2 w)`` on the mask."""

    is_constraint = False

    def __init__(self, target, mask, weight: float):
        super().__init__(target, mask)
        self.weight = float(weight)

    def prepare(self, *, device, dtype, output_scale: float) -> "_PreparedOutput":
        return _PreparedOutput(kind=self, target=_tensor(self.target, device, dtype) / output_scale,
                               mask=_mask(self.mask, device), parameter=self.weight * output_scale)


class BallFit(_OutputTerm):
    """Indicator of ``||(Z - Y)_mask|| <= epsilon`` (one ball, or one per column)."""

    is_constraint = True

    def __init__(self, target, mask, epsilon, *, per_column: bool):
        super().__init__(target, mask)
        self.epsilon = epsilon
        self.per_column = bool(per_column)
        self.separable = self.per_column

    def prepare(self, *, device, dtype, output_scale: float) -> "_PreparedOutput":
        target = _tensor(self.target, device, dtype) / output_scale
        mask = _mask(self.mask, device)
        epsilon = _tensor(self.epsilon, device, torch.float64) / output_scale
        reference = torch.where(mask, target.to(torch.float64), 0.0)
        norm = (torch.linalg.vector_norm(reference, dim=0) if self.per_column
                else torch.linalg.vector_norm(reference))
        scale = torch.clamp(torch.maximum(epsilon, BUDGET_SCALE_FLOOR * norm),
                            min=torch.finfo(torch.float64).tiny)
        return _PreparedOutput(kind=self, target=target, mask=mask, parameter=epsilon.to(dtype),
                               budget_scale=scale.to(dtype))


class UpperBound(_OutputTerm):
    """Indicator of ``Z <= V`` on the mask; prox ``min(d, V)`` there."""

    is_constraint = True
    fits_target = False

    def prepare(self, *, device, dtype, output_scale: float) -> "_PreparedOutput":
        return _PreparedOutput(kind=self, target=_tensor(self.target, device, dtype) / output_scale,
                               mask=_mask(self.mask, device))


@dataclasses.dataclass(frozen=True)
class _PreparedOutput:
    """An output term on the engine's device, in scaled units, for the columns still solved."""

    kind: object
    target: torch.Tensor
    mask: torch.Tensor
    parameter: object = None
    budget_scale: torch.Tensor | None = None

    def select(self, keep: torch.Tensor) -> "_PreparedOutput":
        per_column = isinstance(self.kind, BallFit) and self.kind.per_column
        return dataclasses.replace(
            self, target=self.target[:, keep], mask=self.mask[:, keep],
            parameter=self.parameter[keep] if per_column else self.parameter,
            budget_scale=self.budget_scale[keep] if per_column else self.budget_scale)

    def prox(self, out: torch.Tensor, points: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """Write ``prox_{f/rho}(points)`` into ``out`` on the mask; ``rho`` has shape (1, Mw)."""
        kind = self.kind
        if isinstance(kind, UpperBound):
            return torch.where(self.mask, torch.minimum(points, self.target), out)
        residual = torch.where(self.mask, points - self.target, 0.0)
        if isinstance(kind, QuadraticFit):
            pull = (2.0 * self.parameter) / (rho + 2.0 * self.parameter)
        else:
            norm = (torch.linalg.vector_norm(residual, dim=0, keepdim=True) if kind.per_column
                    else torch.linalg.vector_norm(residual))
            # 1 - min(1, eps / norm), without dividing by a zero norm: a zero residual is inside.
            shrink = self.parameter.reshape(norm.shape) / torch.clamp(norm, min=torch.finfo(norm.dtype).tiny)
            pull = 1.0 - torch.clamp(shrink, max=1.0)
        return torch.where(self.mask, points - pull * residual, out)

    def violation(self, Z: torch.Tensor, scale: float) -> torch.Tensor:
        """Relative violation per column (shape (Mw,)); ``scale`` is the program's output scale."""
        kind = self.kind
        columns = Z.shape[1]
        if isinstance(kind, QuadraticFit):
            return torch.zeros(columns, dtype=Z.dtype, device=Z.device)
        if isinstance(kind, UpperBound):
            excess = torch.where(self.mask, Z - self.target, -math.inf)
            worst = excess.amax(dim=0) if Z.shape[0] else torch.zeros(columns, dtype=Z.dtype,
                                                                        device=Z.device)
            return torch.clamp(worst, min=0.0) / scale
        residual = torch.where(self.mask, Z - self.target, 0.0)
        norm = (torch.linalg.vector_norm(residual, dim=0) if kind.per_column
                else torch.linalg.vector_norm(residual))
        excess = torch.clamp(norm - self.parameter, min=0.0) / self.budget_scale
        return excess.expand(columns) if excess.ndim == 0 else excess

    def value(self, Z: torch.Tensor) -> torch.Tensor:
        """The finite part per column (the quadratic; 0 for indicators)."""
        if isinstance(self.kind, QuadraticFit):
            residual = torch.where(self.mask, Z - self.target, 0.0)
            return self.parameter * (residual * residual).sum(dim=0)
        return torch.zeros(Z.shape[1], dtype=Z.dtype, device=Z.device)


# ------------------------------------------------------------------------------------ weights
class WeightedL1:
    """``sum c * |W|`` with ``c >= 0`` of shape (N,) (per row) or (N, M); prox: soft threshold."""

    separable = True
    row_scalable = True
    is_constraint = False

    def __init__(self, weights):
        self.weights = weights

    def prepare(self, *, device, dtype, row_scale: torch.Tensor, output_scale: float):
        weights = _tensor(self.weights, device, torch.float64)
        if weights.ndim == 1:
            weights = weights[:, None]
        return _PreparedWeight(self, (weights * row_scale).to(dtype), row_scale, output_scale)


class GroupL2:
    """``strength * sum of the l2 norms`` of the rows (``axis=1``) or of the columns (``axis=0``)."""

    is_constraint = False

    def __init__(self, strength: float, axis: int):
        self.strength = float(strength)
        self.axis = int(axis)
        self.separable = self.axis == 0
        # Scaling row n by r_n scales a row group by r_n; a column group would become an ellipsoid.
        self.row_scalable = self.axis == 1

    def prepare(self, *, device, dtype, row_scale: torch.Tensor, output_scale: float):
        scale = row_scale if self.axis == 1 else row_scale.reshape(-1)[:1].reshape(1, 1)
        return _PreparedWeight(self, (self.strength * scale).to(dtype), row_scale, output_scale)


class Projection:
    """The indicator of a set, given by ``project(x) -> x`` (numpy or torch in, same out)."""

    is_constraint = True
    row_scalable = False

    def __init__(self, project, *, separable: bool, scale_invariant: bool = False, restrict=None):
        self.project = project
        self.separable = bool(separable)
        # restrict(index) -> the projection of the set on the columns ``index`` alone (separable
        # sets): the engine retires finished columns and projects the rest.
        self.restrict = restrict
        # Only a set closed under every positive row scaling of W (a coordinate cone, such as a
        # support mask) may be projected in the engine's row-scaled units as it is.
        self.row_scalable = bool(scale_invariant)

    def prepare(self, *, device, dtype, row_scale: torch.Tensor, output_scale: float):
        return _PreparedWeight(self, None, row_scale, output_scale)

    def select_columns(self, index: np.ndarray) -> "Projection":
        """The set on the columns ``index`` (of the full problem) alone."""
        if self.restrict is None:
            raise ValueError("this set couples the columns; it has no per-column projection.")
        # ``index`` counts columns of the full problem, so the original restriction serves again.
        return Projection(self.restrict(index), separable=True,
                          scale_invariant=self.row_scalable, restrict=self.restrict)


class ProjectedL1:
    r"""``sum c * |W|`` restricted to a set ``C``: an l1 penalty and a constraint as one term.

    .. math:: g(W) = \sum_{ij} c_{ij} |W_{ij}| + \iota_C(W), \qquad
              \operatorname{prox}(x, s) = \operatorname{argmin}_{z \in C}
              \tfrac12 \|z - x\|^2 + \textstyle\sum s \odot |z|,

    with ``c >= 0`` of shape (N,) (per row) or (N, M), and ``prox(x, step)`` (``step`` broadcasting
    to ``x``, numpy or torch in, same out) a closed form (:mod:`solvers.prox_constrained`). As one
    term the engine keeps one copy of ``W`` fewer than ``WeightedL1`` plus ``Projection``, and the
    point it reports is sparse and inside ``C`` at once. It is the first weight term of a program
    (the engine checks the sets among the later terms, and this one needs no check).
    """

    is_constraint = False

    def __init__(self, weights, prox, *, separable: bool, scale_invariant: bool = False,
                 restrict=None):
        self.weights = weights
        self.prox = prox
        self.separable = bool(separable)
        # restrict(index) -> the prox on the columns ``index`` of the full problem (separable sets).
        self.restrict = restrict
        # As for Projection: only a coordinate cone (a support mask) keeps its shape under every
        # positive row scaling; otherwise the engine equilibrates with one scalar.
        self.row_scalable = bool(scale_invariant)

    def prepare(self, *, device, dtype, row_scale: torch.Tensor, output_scale: float):
        weights = _tensor(self.weights, device, torch.float64)
        if weights.ndim == 1:
            weights = weights[:, None]
        return _PreparedWeight(self, (weights * row_scale).to(dtype), row_scale, output_scale)

    def select_columns(self, index: np.ndarray) -> "ProjectedL1":
        """The term on the columns ``index`` (of the full problem) alone."""
        if self.restrict is None:
            raise ValueError("this set couples the columns; it has no per-column prox.")
        return ProjectedL1(self.weights, self.restrict(index), separable=True,
                           scale_invariant=self.row_scalable, restrict=self.restrict)


class Prox:
    """A penalty given by ``prox(x, step) = argmin_z step * h(z) + 1/2 ||z - x||^2``."""

    is_constraint = False
    row_scalable = False

    def __init__(self, prox, *, separable: bool):
        self.prox = prox
        # A generic prox takes one scalar step, so the engine must give every column the same rho
        # (a per-column rho would need a per-column step): the term counts as coupling them.
        self.separable = False
        self.separable_penalty = bool(separable)

    def prepare(self, *, device, dtype, row_scale: torch.Tensor, output_scale: float):
        return _PreparedWeight(self, None, row_scale, output_scale)


@dataclasses.dataclass(frozen=True)
class _PreparedWeight:
    """A weight term in scaled units: ``g(s r W_hat) / s``."""

    kind: object
    thresholds: torch.Tensor | None
    row_scale: torch.Tensor
    output_scale: float
    # The columns of the full problem these are (for a separable set's restricted projection).
    columns: np.ndarray | None = None

    def select(self, keep: torch.Tensor) -> "_PreparedWeight":
        selected = self
        if self.thresholds is not None and self.thresholds.ndim == 2 and self.thresholds.shape[1] > 1:
            selected = dataclasses.replace(selected, thresholds=self.thresholds[:, keep])
        if isinstance(self.kind, (Projection, ProjectedL1)) and self.kind.restrict is not None:
            mask = keep.detach().cpu().numpy()
            columns = (np.arange(mask.shape[0]) if self.columns is None else self.columns)[mask]
            selected = dataclasses.replace(selected, kind=self.kind.select_columns(columns),
                                           columns=columns)
        return selected

    def prox(self, points: torch.Tensor, rho: torch.Tensor) -> torch.Tensor:
        """``argmin_W g(W) + rho/2 ||W - points||^2`` in scaled units; ``rho`` (1, Mw) or (1, 1)."""
        kind = self.kind
        if isinstance(kind, WeightedL1):
            return soft_threshold(points, self.thresholds / rho)
        if isinstance(kind, GroupL2):
            # The group soft threshold (one kernel for numpy and torch, overflow-free norms).
            return prox_group_l1(points, step=self.thresholds / rho, axis=kind.axis)
        # Sets and general penalties, with one scalar row scale r (see module docstring):
        # prox of (t/s) h(s r .) at v is prox_{t s r^2 h}(s r v) / (s r).
        factor = float(self.row_scale.reshape(-1)[0]) * self.output_scale
        if isinstance(kind, ProjectedL1):
            # Row-scaled units: the l1 term is already in the thresholds; a scalar r leaves the
            # prox of c |.| + iota_C in original units (x f, step f, then / f, with f = s r).
            step = self.thresholds / rho
            if kind.row_scalable:
                return kind.prox(points, step)
            return kind.prox(points * factor, step * factor) / factor
        if isinstance(kind, Projection):
            if kind.row_scalable:
                return kind.project(points)
            return kind.project(points * factor) / factor
        step = float(self.output_scale * float(self.row_scale.reshape(-1)[0]) ** 2 / float(rho.reshape(-1)[0]))
        return kind.prox(points * factor, step) / factor

    def value(self, W: torch.Tensor) -> float:
        """``g(W)`` in original units for the convex penalties (0 for sets)."""
        kind = self.kind
        if isinstance(kind, (WeightedL1, ProjectedL1)):
            weights = _tensor(kind.weights, W.device, W.dtype)
            weights = weights[:, None] if weights.ndim == 1 else weights
            return float((weights * W.abs()).sum())
        if isinstance(kind, GroupL2):
            return kind.strength * float(torch.linalg.vector_norm(W, dim=kind.axis).sum())
        return 0.0
