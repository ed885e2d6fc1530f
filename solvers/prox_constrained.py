r"""Prox of the l1 norm plus the indicator of a set: a soft threshold, then the set's projection.

For a closed convex set :math:`C` and weights :math:`s \ge 0` (one, or one per entry),

.. math:: \operatorname{prox}(x) = \operatorname{argmin}_{z \in C} \tfrac12 \|z - x\|_2^2
          + \textstyle\sum_i s_i |z_i|.

When the projection onto :math:`C` keeps every sign and every zero (``P_C(y)_i`` is 0 or has the
sign of ``y_i``, and is 0 where ``y_i = 0``), the prox is the composition
:math:`P_C(\operatorname{soft}(x, s))`: the subdifferential of the l1 term at ``P_C(y)`` then
contains its subdifferential at ``y``, which is Yu's (2013) condition for
:math:`\operatorname{prox}_{f + g} = \operatorname{prox}_f \circ \operatorname{prox}_g`. The l1 ball,
the L1,inf ball (an l1 ball per column), the sum-of-max ball (a cap per row) and a support mask
all qualify; the nuclear-norm ball and a subspace do not (their projections mix entries), and
have no such closed form.

Same contract as :mod:`solvers.prox`: the input first, parameters as keywords, numpy or torch in
and the same kind, dtype and device out, ``ValueError`` for bad parameters.
"""

from __future__ import annotations

import numpy as np

from . import _arrays, _l1_threshold
from ._arrays import namespace
from .prox import _check_steps, project_l1_ball, project_l1_inf_ball
from .prox_matrix import project_sum_of_max_ball

__all__ = [
    "prox_l1_in_l1_ball",
    "prox_l1_in_l1_inf_ball",
    "prox_l1_in_sum_of_max_ball",
    "prox_l1_in_mask",
]


def _soft_threshold(x, step):
    """``sign(x) max(|x| - step, 0)`` for one weight or per-entry weights (broadcasting to ``x``)."""
    x = _arrays.as_floating(x)
    xp = namespace(x)
    step = _check_steps(step, x)
    threshold = _arrays.new_array(step, x, dtype=xp.float64) if isinstance(step, float) else step
    return _l1_threshold.soft_threshold_dense(x, threshold, out=xp.empty_like(x))


def prox_l1_in_l1_ball(x, *, step, radius: float, axis: int | None = None):
    r"""Prox of ``s ||z||_1`` restricted to the l1 ball: ``argmin_{||z||_1 <= r} 0.5 ||z - x||^2 + s ||z||_1``.

    .. math:: \operatorname{prox}(x) = P_{\|z\|_1 \le r}\big(\operatorname{soft}(x, s)\big)
              = \operatorname{soft}\big(x, \max(s, \tau_r(x))\big) \text{ (one weight)},

    with :math:`\tau_r(x)` the l1-ball threshold of ``x`` (see :func:`solvers.prox.project_l1_ball`);
    per slice along ``axis`` when it is set.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float or array
        ``s >= 0``: one weight, or one per entry (broadcasting to ``x``).
    radius : float
        ``r >= 0``.
    axis : int or None
        As in :func:`solvers.prox.project_l1_ball`.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``

    Examples
    --------
    >>> prox_l1_in_l1_ball(np.array([3.0, -1.0, 0.5]), step=0.25, radius=2.0)
    array([2., 0., 0.])
    """
    return project_l1_ball(_soft_threshold(x, step), radius=radius, axis=axis)


def prox_l1_in_l1_inf_ball(x, *, step, radius: float):
    r"""Prox of ``s ||Z||_1`` restricted to paper 001's L1,inf ball (every column in its l1 ball).

    .. math:: \operatorname{prox}(W) = \operatorname{argmin}_{\max_j \|Z_{:, j}\|_1 \le r}
              \tfrac12 \|Z - W\|_F^2 + \textstyle\sum_{ij} s_{ij} |Z_{ij}|
              = P_{L1,\infty}\big(\operatorname{soft}(W, s)\big).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., N, M)
    step : float or array
        ``s >= 0``: one weight, or weights broadcasting to ``x`` (per column: shape (1, M)).
    radius : float
        The bound ``r >= 0`` on every column's l1 norm.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., N, M)
    """
    return project_l1_inf_ball(_soft_threshold(x, step), radius=radius)


def prox_l1_in_sum_of_max_ball(x, *, step, radius: float):
    r"""Prox of ``s ||Z||_1`` restricted to the sum-of-max (l1,inf) ball of Quattoni et al.

    .. math:: \operatorname{prox}(W) = \operatorname{argmin}_{\sum_i \max_j |Z_{ij}| \le r}
              \tfrac12 \|Z - W\|_F^2 + \textstyle\sum_{ij} s_{ij} |Z_{ij}|
              = P_{\text{sum-of-max}}\big(\operatorname{soft}(W, s)\big)

    (the projection caps each row, keeping signs and zeros).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (N, M)
    step : float or array
        ``s >= 0``: one weight, or weights broadcasting to ``x``.
    radius : float
        ``r >= 0``.

    Returns
    -------
    ndarray or torch.Tensor, shape (N, M)
    """
    return project_sum_of_max_ball(_soft_threshold(x, step), radius=radius)


def prox_l1_in_mask(x, *, step, mask):
    r"""Prox of ``s ||z||_1`` restricted to the arrays supported on ``mask`` (zero elsewhere).

    .. math:: \operatorname{prox}(x) = \operatorname{argmin}_{z:\ z_i = 0 \text{ off the mask}}
              \tfrac12 \|z - x\|_2^2 + \textstyle\sum_i s_i |z_i|
              = \mathbb{1}_{\text{mask}} \odot \operatorname{soft}(x, s).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float or array
        ``s >= 0``: one weight, or weights broadcasting to ``x``.
    mask : array of bool, broadcasting to ``x``
        Where ``z`` may be nonzero.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    shrunk = _soft_threshold(x, step)
    xp = namespace(shrunk)
    host = np.asarray(mask.detach().cpu() if _arrays.is_tensor(mask) else mask, dtype=bool)
    try:
        np.broadcast_shapes(host.shape, tuple(shrunk.shape))
    except ValueError:
        raise ValueError(f"mask of shape {host.shape} does not broadcast to x of shape "
                         f"{tuple(shrunk.shape)}.") from None
    keep = _arrays.new_array(host, shrunk, dtype=xp.bool)
    return xp.where(keep, shrunk, _arrays.new_array(0.0, shrunk))
