r"""Projection and prox kernels: one function per operator, numpy or torch in, the same kind out.

Every kernel takes the input first and its parameters as keyword arguments, states the exact problem
it solves, and returns a new array of the input's kind, dtype and device (a torch tensor stays on its
GPU). Kernels check their parameters and raise ``ValueError``; checking the data (NaN, infinities,
shapes against a model) is the modeling layer's job, done before a kernel is called.

Vector sets
    :func:`project_l1_ball`, :func:`project_l1_inf_ball` (a batch of l1 balls),
    :func:`project_sparse`, :func:`project_subspace`; the matrix sets (nuclear-norm ball, low rank,
    sum-of-max ball) are in :mod:`solvers.prox_matrix`.
Penalties
    :func:`prox_l1` (soft threshold), :func:`prox_group_l1` (group soft threshold),
    :func:`prox_l0` (hard threshold), :func:`prox_transformed_l1`; the prox of l1 plus a set is in
    :mod:`solvers.prox_constrained`.
"""

from __future__ import annotations

import math

import numpy as np

from . import _arrays, _l1_search, _l1_threshold, _l1_vector
from ._arrays import namespace

__all__ = [
    "project_l1_ball",
    "project_l1_inf_ball",
    "project_sparse",
    "project_subspace",
    "prox_l1",
    "prox_group_l1",
    "group_norms",
    "prox_l0",
    "prox_transformed_l1",
]


def _check_radius(radius) -> float:
    radius = float(radius)
    if not math.isfinite(radius) or radius < 0:
        raise ValueError(f"radius must be a finite number >= 0; got {radius}.")
    return radius


def _check_step(step) -> float:
    step = float(step)
    if not math.isfinite(step) or step < 0:
        raise ValueError(f"step must be a finite number >= 0; got {step}.")
    return step


def _three_axes(x, axis):
    """``x`` viewed as ``(before, n, after)`` with the reduced axis in the middle.

    ``axis=None`` makes the whole array one vector. The view keeps memory order, so reductions along
    a non-last axis (the columns of a C-ordered weight matrix) need no transposed copy.
    """
    if axis is None:
        return x.reshape(1, -1, 1)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {x.ndim} dimensions.")
    axis %= x.ndim
    before = math.prod(x.shape[:axis])
    return x.reshape(before, x.shape[axis], -1)


@_arrays.numpy_on_cpu
def project_l1_ball(x, *, radius: float, axis: int | None = None):
    r"""Euclidean projection onto the l1 ball, of the whole array or of each slice along ``axis``.

    For each vector ``v`` (the whole array when ``axis`` is None, else every slice along ``axis``)
    solves

    .. math:: P(v) = \operatorname{argmin}_z \tfrac12 \|z - v\|_2^2
              \quad\text{subject to}\quad \|z\|_1 \le r,

    whose solution is the soft threshold :math:`P(v)_i = \operatorname{sign}(v_i)\max(|v_i| - \tau, 0)`
    with :math:`\tau = 0` when :math:`\|v\|_1 \le r`, else the unique :math:`\tau > 0` with
    :math:`\sum_i \max(|v_i| - \tau, 0) = r`.

    The threshold is found without sorting the vector (:mod:`solvers._l1_search`): a strided
    sample gives a likely bracket ``lo < tau <= hi`` (Condat 2016's idea of starting close to the
    answer); one pass counts and sums the entries above ``hi`` and gathers those in between; and
    Michelot's fixed-point search (Michelot 1986) runs on those alone, in float64, to the exact
    active set ``K``, where ``tau = (sum_K |v_i| - r) / |K|``. A missed bracket is redone from one
    the miss proved. All slices are processed together (no Python loop over them), on the input's
    device; a CPU tensor is processed by the numpy form, on a view of its memory (see
    :func:`solvers._arrays.numpy_on_cpu`). One long numpy vector takes a leaner path with the same
    steps (:mod:`solvers._l1_vector`). When at most 1/64 of the entries survive, ``K`` is gathered
    and ``tau`` is the exact rational value rounded once
    (:func:`solvers._l1_threshold.rounded_thresholds`); otherwise its sums are float64 ones.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
        The point(s) to project.
    radius : float
        The ball's radius ``r >= 0``; 0 gives zeros.
    axis : int or None
        None: ``x`` is one vector. An int: every slice ``x[..., :, ...]`` along that axis is projected
        onto its own ball (``axis=0`` on an ``(N, M)`` matrix projects each column).

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
        A new array of ``x``'s kind, dtype and device. Slices already inside the ball are returned
        bitwise unchanged.

    Examples
    --------
    >>> project_l1_ball(np.array([3.0, -1.0, 0.5]), radius=2.0)
    array([2., 0., 0.])
    """
    radius = _check_radius(radius)
    x = _arrays.as_floating(x)
    xp = namespace(x)
    if _arrays.size(x) == 0:
        return _arrays.copy(x)
    if radius == 0:
        return xp.zeros_like(x)
    rows = _three_axes(x, axis)
    if not _arrays.is_tensor(x) and rows.shape[0] * rows.shape[2] == 1 \
            and rows.shape[1] >= _l1_vector.VECTOR_MIN:
        out = _project_vector(rows.reshape(-1), radius)
        if out is not None:
            return out.reshape(x.shape)
    # C order: the threshold search and the scatter address entries by their C-ordered position.
    magnitudes = _arrays.contiguous(xp.abs(rows))
    found = _l1_search.thresholds(rows, magnitudes, radius)
    if found is None:
        return _arrays.copy(x)
    tau, candidates, far = found
    # Scattering few survivors into fresh zeros beats three dense passes, up to about 1/64 of the entries.
    if candidates is not None:
        tau = _rounded_on_support(rows, tau, candidates, radius)
        out = _l1_threshold.soft_threshold_sparse(rows, tau, *candidates)
    else:
        out = _l1_threshold.soft_threshold_dense(rows, tau, out=magnitudes)
        if rows.shape[0] * rows.shape[2] > 1 and bool((tau == 0).any()):
            # Rows inside the ball come back bitwise, signed zeros included.
            out = xp.where(tau == 0, rows, out)
    if _arrays.size(far):
        out = _l1_threshold.reproject_rows(rows, out, far, radius)
    return out.reshape(x.shape)


def _rounded_on_support(rows, tau, candidates, radius: float):
    """``tau`` (``(before, 1, after)``) with every row outside the ball given its threshold rounded
    once from its active set (:func:`solvers._l1_threshold.rounded_thresholds`), when the search
    gathered the candidates (few survivors)."""
    xp = namespace(rows)
    positions, labels = candidates
    # A redone row lists its candidates twice (stale and new): each entry once for the sums.
    positions = xp.unique(positions)
    if labels is not None:
        before, n, after = rows.shape
        labels = (positions // (n * after)) * after + positions % after
    values = xp.abs(_arrays.to_float64(rows.reshape(-1)[positions]))
    flat = tau.reshape(-1)
    active = values > (flat if labels is None else flat[labels])
    rounded = _l1_threshold.rounded_thresholds(values[active], None if labels is None else labels[active],
                                               flat.shape[0], radius)
    return xp.where((flat > 0) & (rounded > 0), rounded, flat).reshape(tau.shape)


def _project_vector(x, radius: float):
    """:func:`project_l1_ball` of one long numpy vector by :mod:`solvers._l1_vector` (one buffer of
    the input's size, the output); None when that path defers to the general search.

    With few survivors the threshold is rounded once from the exact sum of the support
    (:func:`solvers._l1_threshold.rounded_thresholds`) and the survivors are written into the zeroed
    buffer; otherwise the closed formula on the active set, its sums in float64, is applied densely.
    """
    magnitudes = np.abs(x)
    found = _l1_vector.vector_threshold(magnitudes, radius)
    if found is None:
        return None
    tau, support = found
    if support is None:
        if x.dtype == np.float64:
            return _l1_vector.soft_threshold_into(np.ascontiguousarray(x), tau, magnitudes)
        return _l1_threshold.soft_threshold_dense(x, np.float64(tau), out=magnitudes)
    values = x[support].astype(np.float64)
    tau = float(_l1_threshold.rounded_thresholds(np.abs(values), None, 1, radius)[0])
    shrunk = np.abs(values) - tau
    written = shrunk > 0
    magnitudes.fill(0.0)
    magnitudes[support[written]] = np.copysign(shrunk[written], values[written])
    return magnitudes


def project_l1_inf_ball(x, *, radius: float):
    r"""Projection onto paper 001's L1,inf ball: every column of ``W`` in its own l1 ball.

    .. math:: P(W) = \operatorname{argmin}_Z \tfrac12 \|Z - W\|_F^2
              \quad\text{subject to}\quad \max_j \|Z_{:, j}\|_1 \le r.

    Column ``j`` holds the incoming weights of output neuron ``j`` (bias row included, in the
    design's ``(N, M)`` orientation). The set is a product of l1 balls, so the projection is one
    :func:`project_l1_ball` per column, all done in one batched call.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., N, M)
        The weight matrix (or a batch of them).
    radius : float
        The bound ``r >= 0`` on every column's l1 norm.

    Returns
    -------
    ndarray or torch.Tensor, shape (..., N, M)
        The projection, of ``x``'s kind, dtype and device.
    """
    if getattr(x, "ndim", np.ndim(x)) < 2:
        raise ValueError("x must have at least 2 dimensions (N, M): the columns are the neurons.")
    return project_l1_ball(x, radius=radius, axis=-2)


def project_sparse(x, *, k: int, axis: int | None = None):
    r"""Projection onto the k-sparse vectors (nonconvex): keep the ``k`` largest magnitudes.

    .. math:: P(v) \in \operatorname{argmin}_z \|z - v\|_2^2
              \quad\text{subject to}\quad \|z\|_0 \le k,

    for the whole array (``axis=None``) or each slice along ``axis``. Among entries of equal
    magnitude at the cut, the lowest index (in C order along the slice) is kept, so the result
    is deterministic.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    k : int
        How many entries to keep, ``k >= 0``; 0 gives zeros, ``k >= n`` returns ``x``.
    axis : int or None
        As in :func:`project_l1_ball`.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
        ``x`` with all but ``k`` entries (per slice) set to zero.
    """
    if isinstance(k, bool) or not isinstance(k, (int, np.integer)) or k < 0:
        raise ValueError(f"k must be an integer >= 0; got {k!r}.")
    x = _arrays.as_floating(x)
    xp = namespace(x)
    rows = _three_axes(x, axis) if _arrays.size(x) else x
    if _arrays.size(x) == 0 or k >= rows.shape[1]:
        return _arrays.copy(x)
    if k == 0:
        return xp.zeros_like(x)
    magnitudes = xp.abs(rows)
    cut = _arrays.kth_largest(magnitudes, k, axis=1)
    larger = magnitudes > cut
    places_left = k - xp.sum(larger, axis=1, keepdims=True)
    at_cut = magnitudes == cut
    keep = larger | (at_cut & (xp.cumsum(at_cut, axis=1) <= places_left))
    return xp.where(keep, rows, 0).reshape(x.shape)


def project_subspace(x, *, basis):
    r"""Orthogonal projection onto the span of the orthonormal columns of ``basis``.

    .. math:: P(v) = Q Q^\top v = \operatorname{argmin}_{z \in \operatorname{span}(Q)} \|z - v\|_2,
              \qquad Q^\top Q = I.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., n)
        Vectors (the last axis), e.g. flattened weight matrices.
    basis : ndarray or torch.Tensor, shape (n, d)
        ``Q``, with orthonormal columns (not checked here; the modeling layer checks it once).

    Returns
    -------
    ndarray or torch.Tensor, shape (..., n)
    """
    x = _arrays.as_floating(x)
    basis = _arrays.new_array(basis, x)
    if basis.ndim != 2 or basis.shape[0] != x.shape[-1]:
        raise ValueError(f"basis must have shape (n, d) with n = {x.shape[-1]}; got {tuple(basis.shape)}.")
    return (x @ basis) @ basis.T


def prox_l1(x, *, step: float):
    r"""Prox of the l1 norm (soft threshold): ``argmin_z 0.5 ||z - x||^2 + step ||z||_1``.

    .. math:: \operatorname{prox}(x)_i = \operatorname{sign}(x_i) \max(|x_i| - \text{step}, 0).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        The weight ``>= 0`` of the l1 term (a penalty's strength times the step size).

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    x = _arrays.as_floating(x)
    xp = namespace(x)
    threshold = _arrays.new_array(step, x, dtype=xp.float64)
    return _l1_threshold.soft_threshold_dense(x, threshold, out=xp.empty_like(x))


def group_norms(x, *, axis: int):
    r"""The l2 norms of the slices of ``x`` along ``axis`` (kept as a length-1 axis), in float64,
    without overflow or underflow: :math:`\|v\|_2 = c \|v / c\|_2` with :math:`c = \max_i |v_i|`
    (entries of 1e200 or 1e-200 give their norm, not inf or 0)."""
    xp = namespace(x)
    values = _arrays.to_float64(x)
    largest = xp.amax(xp.abs(values), axis=axis, keepdims=True)
    unit = xp.where(largest > 0, largest, _arrays.new_array(1.0, largest))
    return largest * xp.sqrt(xp.sum((values / unit) ** 2, axis=axis, keepdims=True))


def prox_group_l1(x, *, step, axis: int = 1):
    r"""Prox of the group l1 norm (group soft threshold), the groups being the slices along ``axis``.

    .. math:: \operatorname{prox}(x) = \operatorname{argmin}_z \tfrac12 \|z - x\|_2^2
              + \sum_g s_g \|z_g\|_2, \qquad
              \operatorname{prox}(x)_g = \max\Big(1 - \frac{s_g}{\|x_g\|_2}, 0\Big)\, x_g,

    where a group ``x_g`` is a slice along ``axis`` (``axis=1`` on ``W`` (N, M): the rows, input
    features, as :class:`convexnet.penalties.GroupL1` with its default; ``axis=0``: the columns,
    output units). The factor is formed as ``max(||x_g|| - s_g, 0) / ||x_g||`` (no cancellation
    in ``1 - s / ||x||`` next to the threshold) with overflow-free norms (:func:`group_norms`).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (..., N, M) or any shape with ``axis`` in it
    step : float or array
        ``s >= 0``: one weight for all groups, or one per group (an array broadcasting against
        the group norms, which keep ``axis`` as a length-1 axis: shape (N, 1) for rows, (1, M) for
        columns; the ADMM engine's per-column ``strength / rho``).
    axis : int
        The axis the norms run along.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
        Of ``x``'s kind, dtype and device; groups with ``||x_g|| <= s_g`` are exactly 0.

    Examples
    --------
    >>> prox_group_l1(np.array([[3.0, 4.0], [0.3, 0.4]]), step=1.0)
    array([[2.4, 3.2],
           [0. , 0. ]])
    """
    x = _arrays.as_floating(x)
    xp = namespace(x)
    if not -x.ndim <= axis < x.ndim:
        raise ValueError(f"axis {axis} is out of range for an array with {x.ndim} dimensions.")
    step = _check_steps(step, x)
    norms = group_norms(x, axis=axis)
    safe = xp.where(norms > 0, norms, _arrays.new_array(1.0, norms))
    factor = _arrays.clip_below_inplace(norms - step, 0.0) / safe
    return _arrays.cast_like(_arrays.to_float64(x) * factor, x)


def _check_steps(step, like):
    """``step`` as a float, or as a float64 array of ``like``'s kind and device, every entry finite
    and ``>= 0``."""
    if np.ndim(step) == 0 and not _arrays.is_tensor(step):
        return _check_step(step)
    if _arrays.is_tensor(step) and _arrays.is_tensor(like) and step.device == like.device:
        # Checked where it lies: the ADMM engine passes a step per entry at every iteration, and a
        # round trip through the host would cost more than the prox.
        step = step.detach().to(namespace(like).float64)
        if not bool((step >= 0).all() & step.isfinite().all()):
            raise ValueError("step must hold finite numbers >= 0.")
        return step
    host = np.asarray(step.detach().cpu() if _arrays.is_tensor(step) else step, dtype=np.float64)
    if not np.all(np.isfinite(host)) or np.any(host < 0):
        raise ValueError("step must hold finite numbers >= 0.")
    return _arrays.new_array(host, like, dtype=namespace(like).float64)


def prox_l0(x, *, step: float):
    r"""Prox of the l0 count (hard threshold): ``argmin_z 0.5 ||z - x||^2 + step ||z||_0``.

    .. math:: \operatorname{prox}(x)_i = x_i \text{ if } |x_i| > \sqrt{2\,\text{step}}, \text{ else } 0.

    At ``|x_i| = sqrt(2 step)`` both 0 and ``x_i`` minimize; 0 is returned. The comparison is exact
    (the float64 threshold is rounded down to ``x``'s dtype, not to nearest).

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        The weight ``>= 0`` of the l0 term.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    x = _arrays.as_floating(x)
    xp = namespace(x)
    threshold = _arrays.round_down(_arrays.new_array(math.sqrt(2.0 * step), x, dtype=xp.float64), x)
    return xp.where(xp.abs(x) > threshold, x, 0)


def prox_transformed_l1(x, *, step: float, a: float):
    r"""Prox of the transformed l1 penalty (Zhang and Xin 2017; paper 002's thresholding).

    Solves, entrywise, with :math:`\lambda = \text{step}` and
    :math:`\rho_a(z) = (a + 1)|z| / (a + |z|)`,

    .. math:: \operatorname{prox}(x) = \operatorname{argmin}_z \tfrac12 (z - x)^2 + \lambda \rho_a(z),

    whose solution is 0 when :math:`|x| \le t` and otherwise

    .. math:: \operatorname{sign}(x)\Big[\tfrac23 (a + |x|)\cos\tfrac{\varphi}{3} - \tfrac{2a}{3}
              + \tfrac{|x|}{3}\Big], \quad
              \varphi = \arccos\Big(1 - \frac{27 \lambda a (a + 1)}{2 (a + |x|)^3}\Big),

    with :math:`t = \lambda (a + 1) / a` if :math:`\lambda \le a^2 / (2 (a + 1))`, else
    :math:`t = \sqrt{2 \lambda (a + 1)} - a / 2`.

    The evaluation holds at any scale (``a``, ``step`` and ``x`` from 1e-150 to 1e150). The bracket is
    :math:`|x| - \tfrac43 (\sqrt{a + |x|}\,\sin(\varphi / 6))^2` (the same number, without the
    cancellation of the cosine form for large ``a``), and :math:`\varphi = \arccos(1 - \delta)` is
    :math:`2 \arcsin(\sqrt{\delta / 2})` (no rounding of :math:`\delta` next to 1), with
    :math:`\delta / 2 = (c\,a / (a + |x|))^3`, :math:`c^3 = 27 \lambda (a + 1) / (4 a^2)`, clamped to
    ``[0, 1]`` (the arccos argument clamped to ``[-1, 1]``): the cube ``(a + |x|)^3`` of the
    formula overflows for ``a = 1e150``. The work is done in float64 and the result cast back.

    Parameters
    ----------
    x : ndarray or torch.Tensor, shape (...)
    step : float
        ``lambda >= 0``, the weight of the penalty.
    a : float
        The shape parameter ``a > 0``: small ``a`` approaches l0, large ``a`` approaches l1.

    Returns
    -------
    ndarray or torch.Tensor, shape of ``x``
    """
    step = _check_step(step)
    a = float(a)
    if not math.isfinite(a) or a <= 0:
        raise ValueError(f"a must be a finite number > 0; got {a}.")
    x = _arrays.as_floating(x)
    xp = namespace(x)
    if step == 0:
        return _arrays.copy(x)
    threshold = _transformed_l1_threshold(step, a)
    # Each factor is formed apart so that none overflows: cbrt(step), cbrt(a + 1), cbrt(a)^2.
    cube_root = min(math.cbrt(6.75) * math.cbrt(step) * math.cbrt(a + 1) / math.cbrt(a) ** 2, 1e300)
    values = _arrays.to_float64(x)
    magnitudes = xp.abs(values)
    ratio = a / (a + magnitudes)
    half_root_delta = xp.clip(cube_root * ratio, 0.0, 1.0) ** 1.5
    phi = 2.0 * xp.arcsin(half_root_delta)
    shrunk = magnitudes - (4.0 / 3.0) * (xp.sqrt(a + magnitudes) * xp.sin(phi / 6.0)) ** 2
    out = xp.where(magnitudes > threshold, xp.copysign(shrunk, values), 0.0)
    return _arrays.cast_like(out, x)


def _transformed_l1_threshold(step: float, a: float) -> float:
    """Zhang and Xin's ``t`` (see :func:`prox_transformed_l1`), with no product that overflows."""
    if step <= a * (a / (2.0 * (a + 1.0))):
        return step * ((a + 1.0) / a)
    return math.sqrt(2.0) * math.sqrt(step) * math.sqrt(a + 1.0) - a / 2.0
