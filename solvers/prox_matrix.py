r"""Projection kernels onto sets of matrices: nuclear-norm ball, low rank, sum-of-max (l1,inf) ball.

Same contract as :mod:`solvers.prox`: the input first, parameters as keywords, numpy or torch in and
the same kind, dtype and device out, ``ValueError`` for bad parameters. Matrices are the last two
axes; the SVD-based kernels are batched over any leading axes.
"""

from __future__ import annotations


import numpy as np

from . import _arrays
from ._arrays import namespace
from .prox import _check_radius, project_l1_ball

__all__ = [
    "project_nuclear_ball",
    "project_low_rank",
    "project_sum_of_max_ball",
]


def _check_matrices(x):
    x = _arrays.as_floating(x)
    if x.ndim < 2:
        raise ValueError(f"x must be a matrix (or a batch of them); got shape {tuple(x.shape)}.")
    return x


def project_nuclear_ball(x, *, radius: float):
    r"""Projection onto the nuclear-norm ball (the convex hull of low-rank matrices, paper 000).

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \|Z\|_* = \textstyle\sum_i \sigma_i(Z) \le r.

    With ``W = U diag(s) V^T``, the answer is ``U diag(p) V^T`` where ``p`` is the projection of the
    singular values ``s`` onto the l1 ball of radius ``r`` (von Neumann's trace inequality).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., m, n)
    radius : float
        ``r >= 0``; 0 gives zeros.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., m, n)
        The projection; matrices already inside come back bitwise unchanged.
    """
    radius = _check_radius(radius)
    x = _check_matrices(x)
    xp = namespace(x)
    if radius == 0:
        return xp.zeros_like(x)
    left, singular, right = xp.linalg.svd(x, full_matrices=False)
    inside = xp.sum(_arrays.to_float64(singular), axis=-1) <= radius
    if bool(inside.all()):
        return _arrays.copy(x)
    shrunk = project_l1_ball(singular, radius=radius, axis=-1)
    projected = (left * shrunk[..., None, :]) @ right
    return xp.where(inside[..., None, None], x, projected)


def project_low_rank(x, *, rank: int):
    r"""Projection onto the matrices of rank at most ``rank`` (nonconvex): the truncated SVD.

    .. math:: P(W) \in \operatorname{argmin}_Z \|Z - W\|_F \quad\text{subject to}\quad
              \operatorname{rank}(Z) \le k,
              \qquad P(W) = \textstyle\sum_{i \le k} \sigma_i u_i v_i^\top

    (Eckart and Young). When ``sigma_k = sigma_{k+1}`` the minimizer is not unique; the one kept
    is the one the SVD orders first.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., m, n)
    rank : int
        ``k >= 0``; 0 gives zeros, ``k >= min(m, n)`` returns ``x``.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., m, n)
    """
    if isinstance(rank, bool) or not isinstance(rank, (int, np.integer)) or rank < 0:
        raise ValueError(f"rank must be an integer >= 0; got {rank!r}.")
    x = _check_matrices(x)
    xp = namespace(x)
    if rank >= min(x.shape[-2:]):
        return _arrays.copy(x)
    if rank == 0:
        return xp.zeros_like(x)
    left, singular, right = xp.linalg.svd(x, full_matrices=False)
    return (left[..., :rank] * singular[..., None, :rank]) @ right[..., :rank, :]


def project_sum_of_max_ball(x, *, radius: float):
    r"""Projection onto the l1,inf ball of Quattoni et al. (2009): ``sum_i max_j |W[i, j]| <= r``.

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \textstyle\sum_i \max_j |Z_{ij}| \le r.

    The answer clips each row: ``P(W)[i, j] = sign(W[i, j]) min(|W[i, j]|, mu_i)``, with row caps
    ``mu_i >= 0`` summing to ``r`` and one common level ``theta`` such that every row with
    ``mu_i > 0`` loses exactly ``sum_j max(|W[i, j]| - mu_i, 0) = theta``, and rows with
    ``||W[i, :]||_1 <= theta`` are zeroed. Each cap is a decreasing, piecewise-linear function of
    ``theta`` whose breakpoints come from the row sorted by magnitude; so is their sum ``g(theta)``.
    The kernel sorts all breakpoints, accumulates the slopes and intercepts of ``g`` along them,
    finds the piece where ``g`` crosses ``r`` and solves on it: exact after a finite number of
    steps, ``O(N M log(N M))``.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (N, M)
    radius : float
        ``r >= 0``; 0 gives zeros.

    Returns
    -------
    ndarray or torch.Tensor, shape (N, M)
        The projection; a matrix already inside comes back bitwise unchanged.
    """
    radius = _check_radius(radius)
    x = _arrays.as_floating(x)
    if x.ndim != 2:
        raise ValueError(f"x must be a matrix of shape (N, M); got shape {tuple(x.shape)}.")
    xp = namespace(x)
    rows, columns = x.shape
    if rows * columns == 0:
        return _arrays.copy(x)
    magnitudes = _arrays.to_float64(xp.abs(x))
    if float(xp.sum(xp.amax(magnitudes, axis=1))) <= radius:
        return _arrays.copy(x)
    if radius == 0:
        return xp.zeros_like(x)
    caps = _arrays.cast_like(_sum_of_max_caps(magnitudes, radius), x)
    return _arrays.clip_into(x, -caps, caps, out=xp.empty_like(x))


def _sum_of_max_caps(magnitudes, radius):
    """The row caps ``mu`` (shape ``(N, 1)``, float64) of :func:`project_sum_of_max_ball`.

    On the piece where row ``i`` keeps its ``k`` largest entries above the cap,
    ``mu_i(theta) = (S_i(k) - theta) / k`` with ``S_i(k)`` the sum of those entries; the piece ends at
    ``theta_i(k) = S_i(k) - k v_i(k + 1)`` (``v_i`` sorted descending, ``v_i(M + 1) = 0``), and after
    ``theta_i(M) = ||row||_1`` the row is zero. Writing ``g(theta) = A - B theta``, crossing
    ``theta_i(k)`` changes ``A`` by ``S_i(k+1)/(k+1) - S_i(k)/k`` and ``B`` by ``1/(k+1) - 1/k``
    (with ``S/(M+1)`` and ``1/(M+1)`` read as 0: the row leaves).
    """
    xp = namespace(magnitudes)
    rows, columns = magnitudes.shape
    ordered = _arrays.sort_descending(magnitudes, axis=1)
    partial_sums = xp.cumsum(ordered, axis=1)
    sizes = _arrays.new_array(np.arange(1, columns + 1, dtype=np.float64), ordered)
    breakpoints = xp.empty_like(partial_sums)
    breakpoints[:, :-1] = partial_sums[:, :-1] - sizes[:-1] * ordered[:, 1:]
    breakpoints[:, -1] = partial_sums[:, -1]
    intercepts = partial_sums / sizes
    slopes = 1.0 / sizes + xp.zeros_like(partial_sums)
    intercept_steps, slope_steps = xp.zeros_like(intercepts), xp.zeros_like(slopes)
    intercept_steps[:, :-1] = intercepts[:, 1:]
    slope_steps[:, :-1] = slopes[:, 1:]
    intercept_steps -= intercepts
    slope_steps -= slopes

    order = _arrays.argsort(breakpoints.reshape(-1))
    at = breakpoints.reshape(-1)[order]
    intercept_steps = intercept_steps.reshape(-1)[order]
    slope_steps = slope_steps.reshape(-1)[order]
    # Coefficients of g on the piece that ends at each sorted breakpoint (exclusive running sums).
    intercept = xp.sum(ordered[:, 0]) + xp.cumsum(intercept_steps, axis=0) - intercept_steps
    slope = rows + xp.cumsum(slope_steps, axis=0) - slope_steps
    # g decreases along the breakpoints and is 0 at the last one, so it crosses r on the piece
    # ending at the first breakpoint where it is <= r.
    # (Rounding can leave g a hair above a tiny r even at the last breakpoint.)
    piece = min(int(xp.sum(intercept - slope * at > radius)), rows * columns - 1)
    level = (float(intercept[piece]) - radius) / float(slope[piece])

    # Redo the last step from each row's own piece, so that the running sums' rounding drops out.
    kept = xp.sum(breakpoints < level, axis=1, keepdims=True)
    # The rows of largest l1 norm are active for every r > 0, even when rounding puts the level at
    # or above their norm (r far below the data's spacing); their piece is then the last one that
    # counts their nonzero entries.
    norms = partial_sums[:, -1:]
    active = (kept < columns) | (norms == xp.amax(norms))
    nonzero = xp.sum(magnitudes > 0, axis=1, keepdims=True)
    index = xp.clip(xp.minimum(kept, nonzero - 1), 0, columns - 1)
    row_sums = _arrays.take_along_axis(partial_sums, index, axis=1)
    row_sizes = _arrays.to_float64(index + 1)
    # Relative to the largest active row sum P: with d_i = S_i - P, the level is P + level' and the
    # caps (d_i - level') / k_i. Forming S_i - level directly cancels: a radius 1e-7 of the data's
    # size came out 3e-10 off the boundary, and one 1e-16 of it not at all.
    pivot = float(xp.amax(xp.where(active, row_sums, -np.inf)))
    offsets = row_sums - pivot
    level = (float(xp.sum(xp.where(active, offsets / row_sizes, 0))) - radius) \
        / float(xp.sum(xp.where(active, 1.0 / row_sizes, 0)))
    return xp.where(active, _arrays.clip_below_inplace((offsets - level) / row_sizes, 0.0), 0.0)
