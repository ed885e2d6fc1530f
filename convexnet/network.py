"""Net-Trim for a whole network: parallel (Algorithm 1) and cascade (Algorithm 2) of paper 004.

Batch-first: layer ``l`` maps ``Y_{l-1}`` (P, N_{l-1}) to ``Y_l = act(Y_{l-1} @ W_l + b_l)`` (P, N_l)
with ``Y_0 = X``; every layer but the last has a ReLU (``last_relu`` says for the last). The loop
over the layers is :func:`convexnet.programs.cascade.run` (shared with :func:`convexnet.nn.trim`);
this module says how a network of arrays gives a layer's input and takes its refit.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np

from . import backends
from ._validation import as_float_array, check_bool, check_executor
from .errors import InvalidInputError
from .programs import cascade
from .programs.cascade import (Block, Budget, LayerStep, Solving, affine, cascade_budget,
                               check_trim_options, layer_budget, next_bound, raise_if_failed)

__all__ = ["trim_network", "NetworkResult", "affine", "forward", "check_trim_options",
           "layer_budget", "cascade_budget", "next_bound", "raise_if_failed"]


def forward(weights, biases, X, *, last_relu: bool = False) -> list[np.ndarray]:
    """Every layer's output ``[Y_1, ..., Y_L]`` of the network on ``X`` (P, N_0)."""
    outputs, Y = [], X
    for index, W in enumerate(weights):
        Z = affine(Y, W, biases[index])
        Y = np.maximum(Z, 0.0) if (index < len(weights) - 1 or last_relu) else Z
        outputs.append(Y)
    return outputs


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
        form valid for any network (:func:`trim_network`); NaN for the regularized form and from a
        layer whose solve did not finish (status ``"max_iterations"``) on.
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
        Called as ``progress(layer_index, n_layers, layer_result)`` after each layer is solved.

    Raises
    ------
    SolverFailedError
        A layer without a solution, or whose status is neither finished (``"optimal"``,
        ``"optimal_inaccurate"``) nor ``"max_iterations"``; later layers are not solved.

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
    no such guarantee: its bound is NaN; so is the bound of a layer stopped at its iteration limit
    (kept, with status ``"max_iterations"``) and of every layer after it.

    The loop is :func:`convexnet.programs.cascade.run`, shared with :func:`convexnet.nn.trim`.
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
    backends.get(backend)

    start = time.perf_counter()
    network = _ArrayNetwork(weights, biases, X, last_relu)
    budget = Budget(mode, gamma, epsilon, rel_epsilon, lam, split_budget)
    # A network of arrays has no model to protect: a layer stopped at its iteration limit is kept
    # and reported (its status, a NaN bound), as it always was.
    solving = Solving(backend, solver_options, certify=True, executor=executor,
                      penalize_bias=penalize_bias, allow_inaccurate=True)
    report = None if progress is None else (
        lambda index, n_layers, outcome: progress(index, n_layers, outcome.results[0]))
    outcome = cascade.run(network, budget, solving, progress=report)
    layers = [layer.results[0] for layer in outcome.layers]
    return NetworkResult([layer.W for layer in layers], [layer.b for layer in layers], layers,
                         outcome.discrepancy, outcome.bound, outcome.epsilons, mode,
                         time.perf_counter() - start)


class _ArrayNetwork:
    """The numpy side of :func:`convexnet.programs.cascade.run`: forward passes over arrays.

    Every layer is one block; its input is the previous layer's output, so the theorems' chain
    holds throughout.
    """

    def __init__(self, weights: list, biases: list, X: np.ndarray, last_relu: bool):
        self.X, self.biases, self.last_relu = X, biases, last_relu
        count = len(weights)
        self.relus = [index < count - 1 or last_relu for index in range(count)]
        self.originals = forward(weights, biases, X, last_relu=last_relu)
        self.steps = [LayerStep(f"layer {index + 1}", self.relus[index],
                                [Block(slice(None), slice(None), W, biases[index])])
                      for index, W in enumerate(weights)]
        self.refit: list = [None] * count
        self._pruned = (0, X)      # (index, that layer's input in the pruned network)

    def original(self, index: int):
        return (self.X if index == 0 else self.originals[index - 1]), self.originals[index]

    def pruned_input(self, index: int) -> np.ndarray:
        at, current = self._pruned
        for layer in range(at, index):
            Z = affine(current, self.refit[layer].W, self.refit[layer].b)
            current = np.maximum(Z, 0.0) if self.relus[layer] else Z
        self._pruned = (index, current)
        return current

    def write(self, index: int, refit: list) -> None:
        self.refit[index] = refit[0]

    def pruned_outputs(self) -> list:
        return forward([block.W for block in self.refit], [block.b for block in self.refit], self.X,
                       last_relu=self.last_relu)
