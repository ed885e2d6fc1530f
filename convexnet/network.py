"""Net-Trim for a whole network: parallel (Algorithm 1) and cascade (Algorithm 2) of paper 004.

Batch-first: layer ``l`` maps ``Y_{l-1}`` (P, N_{l-1}) to ``Y_l = act(Y_{l-1} @ W_l + b_l)`` (P, N_l)
with ``Y_0 = X``; every layer but the last has a ReLU (``last_relu`` says for the last).
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import backends
from ._duality import stable_norm
from .backends import auto
from .backends import options as backend_options
from ._validation import (as_float_array, check_bool, check_exactly_one, check_executor,
                          check_scalar)
from .errors import InvalidInputError, SolverFailedError
from .nettrim import NetTrimProblem, NetTrimResult

__all__ = ["trim_network", "NetworkResult", "affine", "forward", "check_trim_options",
           "layer_budget", "cascade_budget", "next_bound", "raise_if_failed"]

_MODES = ("parallel", "cascade")


def affine(X: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``X @ W + b`` (``b`` None: no bias), shapes (P, N) @ (N, M) + (M,)."""
    return X @ W if b is None else X @ W + b


def forward(weights, biases, X, *, last_relu: bool = False) -> list[np.ndarray]:
    """Every layer's output ``[Y_1, ..., Y_L]`` of the network on ``X`` (P, N_0)."""
    outputs, Y = [], X
    for index, W in enumerate(weights):
        Z = affine(Y, W, biases[index])
        Y = np.maximum(Z, 0.0) if (index < len(weights) - 1 or last_relu) else Z
        outputs.append(Y)
    return outputs


def check_trim_options(*, epsilon, rel_epsilon, lam, mode: str, gamma) -> float:
    """Check the budget, mode and gamma shared by every network-level trim; return ``gamma``.

    Exactly one of ``epsilon``, ``rel_epsilon`` (``>= 0``) and ``lam`` (``> 0``) is given, ``mode`` is
    "cascade" or "parallel" and ``gamma >= 1`` (the inflation rate of eq. 7).
    """
    if mode not in _MODES:
        raise InvalidInputError(f"mode must be 'cascade' or 'parallel'; got {mode!r}.")
    check_exactly_one({"epsilon": epsilon, "rel_epsilon": rel_epsilon, "lam": lam})
    gamma = check_scalar("gamma", gamma)
    if gamma < 1.0:
        raise InvalidInputError(f"gamma must be >= 1 (the inflation rate of eq. 7); got {gamma}.")
    for name, value in (("epsilon", epsilon), ("rel_epsilon", rel_epsilon)):
        if value is not None:
            check_scalar(name, value, low=0.0)
    if lam is not None:
        check_scalar("lam", lam, low=0.0, low_inclusive=False)
    return gamma


def layer_budget(Y: np.ndarray, *, epsilon=None, rel_epsilon=None, lam=None) -> dict:
    """The budget keyword of a layer refit from the original activations.

    Every layer in parallel mode and the first in cascade mode: ``{"lam": lam}``,
    ``{"epsilon": rel_epsilon * ||Y||_F}`` or ``{"epsilon": epsilon}``, for the target ``Y`` (P, M).
    """
    if lam is not None:
        return {"lam": lam}
    if rel_epsilon is not None:
        return {"epsilon": rel_epsilon * stable_norm(Y)}
    return {"epsilon": epsilon}


def cascade_budget(pre: np.ndarray, Y: np.ndarray, *, relu: bool, gamma: float, lam=None,
                   split: bool = False) -> dict:
    """Thresholds and budget of a cascade layer ``l >= 2`` (Algorithm 2, eq. 7).

    Parameters
    ----------
    pre : ndarray, shape (P, M)
        ``Yhat_{l-1} @ W_l + b_l``: the ORIGINAL weights applied to the pruned network's input.
    Y : ndarray, shape (P, M)
        The original network's output of the layer (the target).
    relu : bool
        Whether the layer has a ReLU (Omega is ``Y > 0``, otherwise every entry).
    split : bool
        Per-column budgets: eq. 7 column by column, ``epsilon_m^2 = gamma sum_{Omega_m} (pre - Y)^2``.
        Their squares add up to the layer's ``epsilon^2``, and the original weights stay feasible for
        every column (a split in proportion to ``||Y[:, m]||`` would not guarantee that).

    Returns
    -------
    dict
        ``{"V": pre, "epsilon": sqrt(gamma * sum_Omega (pre - Y)^2)}`` (an (M,) array when ``split``),
        or ``{"V": pre, "lam": lam}`` for the regularized form; keywords of :class:`NetTrimProblem`.
    """
    if lam is not None:
        return {"V": pre, "lam": lam}
    omega = Y > 0 if relu else np.ones(Y.shape, dtype=bool)
    # Norms, not sums of squares: activations of 1e160 would overflow.
    norms = np.sqrt(gamma) * stable_norm(np.where(omega, pre - Y, 0.0), axis=0)
    return {"V": pre, "epsilon": norms if split else stable_norm(norms)}


@dataclass
class NetworkResult:
    """The outcome of :func:`trim_network`.

    Attributes
    ----------
    weights : list of ndarray
        Pruned ``W_l``, shapes as given.
    biases : list of ndarray or None
        Refit biases (None where the layer had none).
    layers : list of NetTrimResult
        One layer result per layer, in order.
    discrepancy : ndarray, shape (L,)
        Measured ``||Yhat_l - Y_l||_F`` of the pruned network against the original, per layer.
    bound : ndarray, shape (L,)
        The Theorem 1 (parallel) or Theorem 2 (cascade) bound on ``discrepancy``, per layer, in the
        form valid for any network (:func:`trim_network`); NaN for the regularized form.
    epsilons : ndarray, shape (L,)
        The budget each layer's program was given (NaN for the regularized form).
    mode : str
    total_time : float
    """

    weights: list
    biases: list
    layers: list
    discrepancy: np.ndarray
    bound: np.ndarray
    epsilons: np.ndarray
    mode: str
    total_time: float = 0.0
    info: dict = field(default_factory=dict)

    @property
    def sparsity(self) -> np.ndarray:
        """Fraction of exact zeros of each ``W_l``."""
        return np.array([float(np.mean(W == 0)) for W in self.weights])

    @property
    def certified(self) -> bool:
        """True when every layer carries a duality-gap certificate that is ``ok``."""
        return all(layer.certificate is not None and layer.certificate.ok for layer in self.layers)

    def summary(self) -> str:
        """A plain-text table, one row per layer (``gap`` is the certificate's relative gap)."""
        rows = [f"{'layer':>5} {'shape':>11} {'nonzeros':>9} {'pruned':>7} {'discrepancy':>12} "
                f"{'bound':>10} {'status':>18} {'gap':>9} {'time (s)':>9}"]
        for index, (W, layer) in enumerate(zip(self.weights, self.layers)):
            certificate = layer.certificate
            gap = "-" if certificate is None else (
                f"{certificate.relative_gap:.1e}" + ("" if certificate.ok else "!"))
            rows.append(f"{index + 1:>5} {str(W.shape):>11} {int(np.count_nonzero(W)):>9} "
                        f"{100 * np.mean(W == 0):>6.1f}% {self.discrepancy[index]:>12.4g} "
                        f"{self.bound[index]:>10.4g} {layer.status:>18} {gap:>9} "
                        f"{layer.wall_time:>9.2f}")
        if any(layer.certificate is not None for layer in self.layers):
            rows.append("all layers certified optimal" if self.certified else
                        "'!': certificate not ok (gap or violation above tolerance)")
        return "\n".join(rows)


def _check_network(weights, biases, X):
    if not isinstance(weights, (list, tuple)) or len(weights) == 0:
        raise InvalidInputError("weights must be a non-empty list of (N_{l-1}, N_l) arrays.")
    X = as_float_array("X", X, ndim=2)
    if X.shape[0] == 0:
        raise InvalidInputError("X has no rows (P = 0 samples); pass at least one calibration "
                                "sample, one per row.")
    weights = [as_float_array(f"weights[{i}]", W, ndim=2) for i, W in enumerate(weights)]
    if biases is None:
        biases = [None] * len(weights)
    elif not isinstance(biases, (list, tuple)) or len(biases) != len(weights):
        raise InvalidInputError(f"biases must be None or a list of {len(weights)} entries "
                                "(None for a layer without bias).")
    biases = [None if b is None else as_float_array(f"biases[{i}]", b, ndim=1)
              for i, b in enumerate(biases)]
    width = X.shape[1]
    for index, (W, b) in enumerate(zip(weights, biases)):
        if W.shape[0] != width:
            raise InvalidInputError(
                f"weights[{index}] has shape {W.shape} but its input has {width} features "
                f"({'X' if index == 0 else f'weights[{index - 1}]'} gives {width}); weights are "
                "(N_{l-1}, N_l), the transpose of torch's Linear.weight.")
        if W.shape[1] == 0:
            raise InvalidInputError(f"weights[{index}] has shape {W.shape}: a layer without "
                                    "outputs; every layer needs at least one unit.")
        if b is not None and b.shape[0] != W.shape[1]:
            raise InvalidInputError(f"biases[{index}] has shape {b.shape}; expected ({W.shape[1]},).")
        width = W.shape[1]
    return weights, biases, X


def _check_layer_backends(backend, solver_options, weights, biases, X, lam) -> None:
    """Check the backend and every layer's solver options before any layer is solved."""
    name = backends.get(backend).name
    for W, b in zip(weights, biases):
        P, N_design, M = X.shape[0], W.shape[0] + (b is not None), W.shape[1]
        layer_backend = auto.by_size(P, N_design, M) if name == "auto" else name
        backend_options.check(solver_options, layer_backend)


def trim_network(weights, X, *, epsilon=None, rel_epsilon=None, lam=None, mode: str = "cascade",
                 gamma: float = 1.0, biases=None, last_relu: bool = False, backend: str = "auto",
                 penalize_bias: bool = True, split_budget: bool = False, solver_options=None,
                 executor=None, progress=None) -> NetworkResult:
    """Prune every layer of a network with Net-Trim (paper 004, Algorithms 1 and 2).

    Parameters
    ----------
    weights : list of array_like
        ``weights[l]`` has shape ``(N_{l-1}, N_l)`` (torch's ``Linear.weight.T``).
    X : array_like, shape (P, N_0)
        The calibration inputs, one sample per row.
    epsilon, rel_epsilon, lam : float
        Exactly one. ``epsilon``: absolute budget (every layer in parallel mode, the first layer in
        cascade mode). ``rel_epsilon``: ``epsilon_l = rel_epsilon * ||Y_l||_F`` (parallel) or
        ``epsilon_1 = rel_epsilon * ||Y_1||_F`` (cascade). ``lam``: the regularized form everywhere.
    mode : {"cascade", "parallel"}
        Parallel: every layer is refit from the original network's activations (layers are
        independent jobs). Cascade: layer ``l >= 2`` takes the pruned network's ``Yhat_{l-1}`` as
        input, the original ``Y_l`` as target, thresholds ``V = Yhat_{l-1} @ W_l + b_l`` and the budget
        ``epsilon_l^2 = gamma * sum_{Omega} (Yhat_{l-1} @ W_l + b_l - Y_l)^2`` (eq. 7).
    gamma : float, default 1.0
        Cascade inflation rate, ``>= 1``.
    biases : list of array_like or None, optional
        ``biases[l]`` of shape ``(N_l,)`` or None; a layer with a bias is trimmed with a ones column.
    last_relu : bool, default False
        Whether the last layer has a ReLU (by default it is linear).
    backend : str, default "auto"
        As in :meth:`NetTrimProblem.solve`.
    penalize_bias, split_budget, solver_options
        Passed to every layer's program / solve.
    executor : concurrent.futures.Executor, optional
        Parallel mode: one job per layer. Cascade mode: column chunks of decoupled layers.
    progress : callable, optional
        Called as ``progress(layer_index, n_layers, layer_result)`` after each layer.

    Returns
    -------
    NetworkResult

    Notes
    -----
    **The bounds, for any network.** Theorems 1 and 2 are stated for link-normalized networks
    (``||W_l||_1 = 1``). Their proofs use only that a ReLU is 1-Lipschitz and that a weight matrix
    ``A`` stretches a difference of inputs by at most ``||A||_2`` (its largest singular value, bias row
    excluded since the ones columns cancel), so for any network the reported bounds are

    * parallel: ``B_1 = e_1``, ``B_l = ||What_l||_2 B_{l-1} + e_l``, with ``e_l = epsilon_l``;
    * cascade:  ``B_1 = e_1``, ``B_l = sqrt(gamma_l) ||W_l||_2 B_{l-1}`` (the original ``W_l``);

    For a link-normalized network ``||What_l||_2 <= ||What_l||_1 <= 1`` and these are at most the
    theorems' ``sum_j epsilon_j`` and ``epsilon_1 sqrt(prod gamma_j)``. They hold when every layer's
    program is satisfied (each layer result reports its ``violation``). The regularized form gives
    no such guarantee: its bound is NaN.
    """
    gamma = check_trim_options(epsilon=epsilon, rel_epsilon=rel_epsilon, lam=lam, mode=mode,
                               gamma=gamma)
    last_relu = check_bool("last_relu", last_relu)
    penalize_bias = check_bool("penalize_bias", penalize_bias)
    split_budget = check_bool("split_budget", split_budget)
    executor = check_executor("executor", executor)
    if progress is not None and not callable(progress):
        raise InvalidInputError(f"progress must be None or a callable taking (layer_index, "
                                f"n_layers, layer_result); got {progress!r}.")
    weights, biases, X = _check_network(weights, biases, X)
    _check_layer_backends(backend, solver_options, weights, biases, X, lam)

    start = time.perf_counter()
    n_layers = len(weights)
    relus = [index < n_layers - 1 or last_relu for index in range(n_layers)]
    originals = forward(weights, biases, X, last_relu=last_relu)
    options = dict(backend=backend, solver_options=solver_options)
    common = dict(penalize_bias=penalize_bias, split_budget=split_budget if lam is None else False)

    def budget(Y):
        return layer_budget(Y, epsilon=epsilon, rel_epsilon=rel_epsilon, lam=lam)

    layers: list[NetTrimResult] = []

    def finished(layer: NetTrimResult) -> None:
        layers.append(layer)
        if progress is not None:
            progress(len(layers) - 1, n_layers, layer)
        raise_if_failed(layer, f"layer {len(layers)}")

    if mode == "parallel":
        inputs = [X, *originals[:-1]]
        problems = [NetTrimProblem(inputs[i], originals[i], relu=relus[i], bias=biases[i] is not None,
                                   **budget(originals[i]), **common) for i in range(n_layers)]
        if executor is None:
            for problem in problems:
                finished(problem.solve(**options))
        else:
            futures = [executor.submit(_solve_problem, problem, options) for problem in problems]
            for future in futures:
                finished(future.result())
    else:
        current = X
        for i in range(n_layers):
            if i == 0:
                problem = NetTrimProblem(X, originals[0], relu=relus[0], bias=biases[0] is not None,
                                         **budget(originals[0]), **common)
            else:
                spec = cascade_budget(affine(current, weights[i], biases[i]), originals[i],
                                      relu=relus[i], gamma=gamma, lam=lam, split=split_budget)
                problem = NetTrimProblem(current, originals[i], relu=relus[i],
                                         bias=biases[i] is not None, **spec, **common)
            finished(problem.solve(executor=executor, **options))
            current = problem.activation(affine(current, layers[-1].W, layers[-1].b))

    new_weights = [layer.W for layer in layers]
    new_biases = [layer.b for layer in layers]
    pruned = forward(new_weights, new_biases, X, last_relu=last_relu)
    discrepancy = np.array([stable_norm(a - b) for a, b in zip(pruned, originals)])
    epsilons = np.array([np.nan if layer.problem.epsilon is None else layer.problem.epsilon
                         for layer in layers])
    bound = _bounds(mode, epsilons, weights, new_weights, gamma)
    return NetworkResult(new_weights, new_biases, layers, discrepancy, bound, epsilons, mode,
                         time.perf_counter() - start)


def _solve_problem(problem: NetTrimProblem, options: dict) -> NetTrimResult:
    return problem.solve(**options)


def raise_if_failed(layer: NetTrimResult, label: str) -> None:
    """Raise :class:`SolverFailedError` naming ``label`` when ``layer`` holds no solution."""
    if layer.W_design is None:
        raise SolverFailedError(
            f"{label}: backend {layer.backend!r} returned no solution (status "
            f"{layer.status!r}); try another backend or a larger epsilon.", status=layer.status)


def _spectral_norm(W: np.ndarray) -> float:
    return float(np.linalg.norm(W, 2)) if W.size else 0.0


def next_bound(mode: str, previous: float, epsilon: float, W: np.ndarray, W_new: np.ndarray,
               gamma: float) -> float:
    """The bound on ``||Yhat_l - Y_l||_F`` given the bound ``previous`` on layer ``l - 1``.

    Theorem 1 (parallel) or Theorem 2 (cascade) in the form valid for any network (see
    :func:`trim_network`); ``W`` and ``W_new`` are the original and pruned ``(N, M)`` weights
    without the bias row, ``epsilon`` the layer's budget.
    """
    if mode == "parallel":
        return _spectral_norm(W_new) * previous + epsilon
    return float(np.sqrt(gamma)) * _spectral_norm(W) * previous


def _bounds(mode, epsilons, weights, new_weights, gamma) -> np.ndarray:
    """Theorem 1 / Theorem 2 bounds in the form valid for any network (see trim_network)."""
    bound = np.empty(len(weights))
    bound[0] = epsilons[0]
    for i in range(1, len(weights)):
        bound[i] = next_bound(mode, bound[i - 1], epsilons[i], weights[i], new_weights[i], gamma)
    return bound
