"""Structure sets on W: sparsity and rank (nonconvex), subspaces (weight sharing), support masks."""

from __future__ import annotations

import numpy as np

from solvers import prox, prox_constrained, prox_matrix

from .._base import ConstraintSet, as_numpy
from .._validation import as_data, as_float_array, check_integer, is_tensor
from ..errors import InvalidInputError
from .balls import _check_axis

__all__ = ["Sparse", "LowRank", "Subspace", "ConvolutionSubspace", "Mask"]


class Sparse(ConstraintSet):
    r"""The k-sparse arrays ``{x : at most k nonzero entries}`` (nonconvex; paper 000's l0 constraint).

    Parameters
    ----------
    k : int
        ``k >= 0``. The projection keeps the ``k`` largest magnitudes; among equal magnitudes at
        the cut the lowest index (C order) wins. ``k = 0`` gives zeros, ``k >= n`` returns ``x``.
    axis : int or None
        None: at most ``k`` nonzeros in the whole array; an int: per slice along that axis.

    ``contains(x, tol)`` counts the entries with ``|x| > tol``. ``constraints`` raises: use
    :class:`L1Ball` in CVXPY.
    """

    convex = False
    cone = True
    relaxation = "L1Ball (the convex relaxation of sparsity)"

    def __init__(self, k: int, *, axis: int | None = None):
        self.k = check_integer("k", k, low=0)
        self.axis = None if axis is None else check_integer("axis", axis)

    def _parameters(self) -> dict:
        return {"k": self.k, "axis": self.axis}

    def _project(self, x):
        _check_axis(self.axis, x)
        return prox.project_sparse(x, k=self.k, axis=self.axis)

    def _contains(self, x, tol):
        _check_axis(self.axis, x)
        return bool(np.all(np.sum(np.abs(as_numpy(x)) > tol, axis=self.axis) <= self.k))


class LowRank(ConstraintSet):
    r"""The matrices of rank at most ``rank`` (nonconvex; paper 000's low-rank constraint).

    The projection is the truncated SVD (Eckart and Young), batched over leading axes.
    ``contains(x, tol)`` counts the singular values above ``tol * max(1, sigma_max)``.
    ``constraints`` raises: use :class:`NuclearBall` in CVXPY.
    """

    convex = False
    cone = True
    relaxation = "NuclearBall (the convex relaxation of low rank)"

    def __init__(self, rank: int):
        self.rank = check_integer("rank", rank, low=0)

    def _parameters(self) -> dict:
        return {"rank": self.rank}

    def _project(self, x):
        if x.ndim < 2:
            raise InvalidInputError(f"x must be a matrix; got shape {tuple(x.shape)}.")
        return prox_matrix.project_low_rank(x, rank=self.rank)

    def _contains(self, x, tol):
        singular = np.linalg.svd(as_numpy(x), compute_uv=False)
        scale = np.maximum(1.0, singular[..., :1])
        return bool(np.all(np.sum(singular > tol * scale, axis=-1) <= self.rank))


class Subspace(ConstraintSet):
    r"""The span of the orthonormal columns of ``basis``: ``{x : x = Q c}``, ``Q^T Q = I``.

    Parameters
    ----------
    basis : array, shape (n, d)
        ``Q``; its columns must be orthonormal (checked to 1e-8; orthonormalize a spanning set
        with ``numpy.linalg.qr(A)[0]``).
    shape : tuple of int, optional
        The shape of the set's elements, whose C-ordered flattening has ``n`` entries (default
        ``(n,)``). ``project`` accepts a batch ``(..., *shape)``.

    ``project`` is ``x -> Q Q^T x``; ``contains(x, tol)`` checks ``||x - Q Q^T x|| <= tol * max(1, ||x||)``;
    ``constraints(expr)`` introduces coefficients ``c`` (a new CVXPY variable of length ``d``) with
    ``vec(expr) == Q c`` (C order), which avoids forming the ``n x n`` complement projector.
    """

    subspace = True

    def __init__(self, basis, *, shape: tuple[int, ...] | None = None):
        basis = as_float_array("basis", basis, ndim=2)
        gram_error = float(np.max(np.abs(basis.T @ basis - np.eye(basis.shape[1])), initial=0.0))
        if gram_error > 1e-8:
            raise InvalidInputError(
                f"basis columns must be orthonormal (max |Q^T Q - I| = {gram_error:.2e}); "
                f"orthonormalize them first, e.g. basis = numpy.linalg.qr(basis)[0].")
        self.basis = basis
        self.shape = (basis.shape[0],) if shape is None else tuple(int(n) for n in shape)
        if int(np.prod(self.shape)) != basis.shape[0]:
            raise InvalidInputError(
                f"shape {self.shape} has {int(np.prod(self.shape))} entries but basis has "
                f"{basis.shape[0]} rows; they must match.")

    @property
    def dimension(self) -> int:
        """``d``, the dimension of the subspace."""
        return self.basis.shape[1]

    def _parameters(self) -> dict:
        return {"dimension": self.dimension, "shape": self.shape}

    def _flat(self, x):
        tail = len(self.shape)
        if tuple(x.shape[x.ndim - tail:]) != self.shape:
            raise InvalidInputError(
                f"x must have shape (..., {', '.join(map(str, self.shape))}); got {tuple(x.shape)}.")
        return x.reshape(*x.shape[:x.ndim - tail], self.basis.shape[0])

    def _project(self, x):
        return prox.project_subspace(self._flat(x), basis=self.basis).reshape(x.shape)

    def _contains(self, x, tol):
        flat = as_numpy(self._flat(x))
        residual = flat - (flat @ self.basis) @ self.basis.T
        return bool(np.all(np.linalg.norm(residual, axis=-1)
                           <= tol * np.maximum(1.0, np.linalg.norm(flat, axis=-1))))

    def _constraints(self, expr):
        import cvxpy as cp

        if tuple(expr.shape) != self.shape:
            raise InvalidInputError(f"expr must have shape {self.shape}; got {tuple(expr.shape)}.")
        coefficients = cp.Variable(self.dimension)
        flat = cp.vec(expr, order="C") if len(self.shape) > 1 else expr
        return [flat == self.basis @ coefficients]


class ConvolutionSubspace(Subspace):
    r"""Paper 000's weight-sharing subspace: the fully connected matrices of a 1-D convolution.

    ``n_kernels`` kernels ``K[i]`` of width ``kernel_width`` slide over an input of ``input_dim``
    entries with stride ``stride`` and no padding, at ``positions = (input_dim - kernel_width) //
    stride + 1`` places (paper 000, Section 4 and Definition 4.1). In the design's orientation the
    layer is ``W`` of shape ``(input_dim, n_kernels * positions)`` with

    .. math:: W[l s + t,\; i \cdot \text{positions} + l] = K[i, t]

    (kernel ``i``, position ``l``, tap ``t``) and zeros elsewhere: column ``i * positions + l`` is
    kernel ``i`` placed at position ``l`` (columns kernel-major). Paper 000's ``FC(K)`` is ``W.T``.
    The set is the subspace of such ``W``, of dimension ``n_kernels * kernel_width``.

    The basis has one column per weight ``K[i, t]``, in the order ``i * kernel_width + t``: the
    C-ordered flattening of the matrix with ``1 / sqrt(positions)`` at the entries that hold
    ``K[i, t]``. The supports are disjoint, so the columns are orthonormal, and the projection
    replaces every shared weight by the mean of the entries that hold it and zeroes the rest.

    Examples
    --------
    >>> space = ConvolutionSubspace(input_dim=5, kernel_width=3, stride=2, n_kernels=1)
    >>> space.weight_matrix(np.array([[1.0, 2.0, 3.0]])).T
    array([[1., 2., 3., 0., 0.],
           [0., 0., 1., 2., 3.]])
    """

    def __init__(self, input_dim: int, kernel_width: int, stride: int, n_kernels: int):
        self.input_dim = check_integer("input_dim", input_dim, low=1)
        self.kernel_width = check_integer("kernel_width", kernel_width, low=1)
        self.stride = check_integer("stride", stride, low=1)
        self.n_kernels = check_integer("n_kernels", n_kernels, low=1)
        if self.kernel_width > self.input_dim:
            raise InvalidInputError(
                f"kernel_width ({kernel_width}) must be <= input_dim ({input_dim}) without padding.")
        self.positions = (self.input_dim - self.kernel_width) // self.stride + 1
        super().__init__(self.basis_matrix(self.input_dim, self.kernel_width, self.stride, self.n_kernels),
                         shape=(self.input_dim, self.n_kernels * self.positions))

    @staticmethod
    def basis_matrix(input_dim: int, kernel_width: int, stride: int, n_kernels: int) -> np.ndarray:
        """The orthonormal basis, shape ``(input_dim * n_kernels * positions, n_kernels * kernel_width)``."""
        positions = (input_dim - kernel_width) // stride + 1
        columns = n_kernels * positions
        kernel, tap, position = np.meshgrid(np.arange(n_kernels), np.arange(kernel_width),
                                            np.arange(positions), indexing="ij")
        rows = (position * stride + tap) * columns + kernel * positions + position
        basis = np.zeros((input_dim * columns, n_kernels * kernel_width))
        basis[rows.ravel(), (kernel * kernel_width + tap).ravel()] = 1.0 / np.sqrt(positions)
        return basis

    def _parameters(self) -> dict:
        return {"input_dim": self.input_dim, "kernel_width": self.kernel_width, "stride": self.stride,
                "n_kernels": self.n_kernels}

    def weight_matrix(self, kernels):
        """The fully connected ``W`` (shape ``(input_dim, n_kernels * positions)``) of ``kernels``.

        ``kernels`` has shape ``(n_kernels, kernel_width)``; a tensor gives a tensor.
        """
        kernels = as_data("kernels", kernels, ndim=2)
        if tuple(kernels.shape) != (self.n_kernels, self.kernel_width):
            raise InvalidInputError(f"kernels must have shape ({self.n_kernels}, {self.kernel_width}); "
                                    f"got {tuple(kernels.shape)}.")
        entries, weights = np.nonzero(self.basis)
        flat = kernels.new_zeros(self.basis.shape[0]) if is_tensor(kernels) \
            else np.zeros(self.basis.shape[0], dtype=kernels.dtype)
        # A scatter, not a product with the basis: every weight is copied exactly.
        flat[entries] = kernels.reshape(-1)[weights]
        return flat.reshape(self.shape)

    def kernels(self, W):
        """The kernels ``(n_kernels, kernel_width)`` of the projection of ``W``: the shared-entry means."""
        W = as_data("W", W, ndim=2)
        flat = self._flat(W)
        return ((flat @ self._basis_like(W)) / float(np.sqrt(self.positions))).reshape(
            self.n_kernels, self.kernel_width)

    def _basis_like(self, x):
        if is_tensor(x):
            import torch

            return torch.as_tensor(self.basis, dtype=x.dtype, device=x.device)
        return self.basis.astype(x.dtype, copy=False)


class Mask(ConstraintSet):
    r"""Weights fixed to zero off a given support: ``{W : W[i, j] = 0 where support[i, j] is False}``.

    Parameters
    ----------
    support : array_like of bool, shape (N, M)
        True where a weight may be nonzero (a pruning mask: ``W != 0`` of a pruned layer).

    ``project`` zeroes the entries off the support; ``contains(W, tol)`` checks
    ``max |W| off the support <= tol * max(1, max |W|)``; ``constraints(expr)`` fixes those entries to
    0. As a program term it is one set per column and a subspace (its dual part is the complement).

    Example
    -------
    >>> import numpy as np
    >>> from convexnet import sets
    >>> sets.Mask(np.array([[True, False]])).project(np.array([[2.0, 3.0]]))
    array([[2., 0.]])
    """

    subspace = True
    separable = True
    row_scalable = True

    def __init__(self, support):
        if is_tensor(support):
            support = support.detach().cpu().numpy()
        support = np.asarray(support)
        if support.dtype != np.bool_:
            if support.dtype.kind not in "biu" or not np.isin(support, (0, 1)).all():
                raise InvalidInputError(f"support must be boolean (or 0/1); got dtype {support.dtype}.")
            support = support.astype(bool)
        if support.ndim != 2:
            raise InvalidInputError(f"support must be a matrix (N, M); got shape {support.shape}.")
        self.support_mask = support

    def _parameters(self) -> dict:
        return {"shape": self.support_mask.shape, "kept": int(self.support_mask.sum())}

    def _check(self, x) -> None:
        if tuple(x.shape[-2:]) != self.support_mask.shape:
            raise InvalidInputError(f"x must have the support's shape {self.support_mask.shape}; "
                                    f"got {tuple(x.shape)}.")

    def _project(self, x):
        self._check(x)
        if is_tensor(x):
            import torch

            return x * torch.as_tensor(self.support_mask, device=x.device).to(x.dtype)
        return np.where(self.support_mask, x, 0.0).astype(x.dtype, copy=False)

    def _contains(self, x, tol):
        self._check(x)
        values = np.abs(as_numpy(x))
        off = values[..., ~self.support_mask]
        return bool(np.all(off <= tol * max(1.0, float(values.max(initial=0.0)))))

    def _constraints(self, expr):
        self._check(expr)
        if self.support_mask.all():
            return []
        import cvxpy as cp

        return [cp.multiply((~self.support_mask).astype(float), expr) == 0]

    def select_columns(self, index) -> "Mask":
        return Mask(self.support_mask[:, index])

    def l1_prox(self):
        """``prox(x, step)``: :func:`solvers.prox_constrained.prox_l1_in_mask`."""
        return lambda x, step: prox_constrained.prox_l1_in_mask(x, step=step, mask=self.support_mask)

    def column_cvxpy(self, w, z):
        import cvxpy as cp

        off = cp.Parameter(w.shape[0], nonneg=True, name="off_support")

        def set_column(j):
            off.value = (~self.support_mask[:, j]).astype(float)

        return 0.0, [cp.multiply(off, w) == 0], set_column
