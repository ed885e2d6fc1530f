"""Net-Trim for a whole network, parallel (Algorithm 1) and cascade (Algorithm 2) of paper 004: one loop.

:func:`convexnet.trim_network` (numpy weights) and :func:`convexnet.nn.trim` (torch modules) both
run :func:`run`. What differs between them is a :class:`Network`: how a layer's input ``X_l`` and
target ``Y_l`` are obtained (numpy forward passes, or forward hooks on the original model and on a
working copy of it) and where a refit goes. The loop owns the rest, once:

* the budget of every layer (:class:`Budget`): the given ``epsilon``, ``rel_epsilon * ||Y_l||_F`` or
  ``lam`` in parallel mode and for the first layer; eq. 7 for the later layers in cascade mode,
  ``V = Yhat_{l-1} @ W_l + b_l`` and ``epsilon_l^2 = gamma * sum_Omega (V - Y_l)^2``;
* the programs (one :class:`~convexnet.NetTrimProblem` per block: a layer, or one group of a
  grouped convolution) and their solves (:class:`Solving`): in parallel mode with an executor,
  one job per program; in cascade mode the executor takes column chunks of decoupled programs;
* which results are kept: a solution that finished (``"optimal"``, ``"optimal_inaccurate"``), or
  one stopped at its iteration limit when the caller allows it; anything else raises
  :class:`~convexnet.errors.SolverFailedError` before the next layer is solved;
* the progress calls, one per layer once it is solved and kept;
* the measured discrepancies ``||Yhat_l - Y_l||_F`` and the bounds of Theorems 1 and 2 (in the form
  valid for any network, see :func:`convexnet.trim_network`): the first layer's budget, then
  chained while a layer's input is exactly the previous layer's output; NaN for the regularized
  form, where the chain breaks, and from a layer whose solve did not finish on.
"""

from __future__ import annotations

import time
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import NamedTuple, Protocol

import numpy as np

from .. import backends, cluster
from .._numerics import stable_norm
from .._validation import check_exactly_one, check_scalar
from ..backends import auto
from ..backends import options as backend_options
from ..errors import ClusterLostError, InvalidInputError, SolverFailedError
from ..nettrim import NetTrimProblem, NetTrimResult

__all__ = ["MODES", "FINISHED", "Block", "LayerStep", "Network", "Budget", "Solving",
           "LayerOutcome", "CascadeRun", "run", "affine", "check_trim_options", "layer_budget",
           "cascade_budget", "next_bound", "raise_if_failed", "check_finished"]

MODES = ("parallel", "cascade")

#: Statuses whose solutions are kept. "optimal_inaccurate" is a finished solve whose accuracy
#: assessment (or certificate) fell short of the backend's tolerance; "max_iterations" is not finished.
FINISHED = ("optimal", "optimal_inaccurate")


# --------------------------------------------------------------------------------- the layers
class Block(NamedTuple):
    """One program of a layer: the whole layer, or one group of a grouped convolution.

    Attributes
    ----------
    inputs : slice
        The block's columns of the layer's input ``X``.
    outputs : slice
        The block's columns of the layer's output ``Y`` (and of the layer's ``W``).
    W : ndarray, shape (N_g, M_g)
        Weights in the design's orientation, without the bias row.
    b : ndarray, shape (M_g,), or None
    """

    inputs: slice
    outputs: slice
    W: np.ndarray
    b: np.ndarray | None


@dataclass(frozen=True)
class LayerStep:
    """What the loop knows about a layer before solving it.

    Attributes
    ----------
    label : str
        Names the layer in messages (``"layer 2"``, ``"layer 'features.0'"``).
    relu : bool
        Whether the layer has a ReLU (Omega is ``Y > 0``; otherwise every entry).
    blocks : list of Block
        The original weights, in float64.
    single_call : bool
        The layer is applied once per forward pass, so Proposition 1 bounds its output's
        discrepancy by its budget.
    chained : bool
        The layer's input is exactly the previous layer's output (the theorems' chain); ignored
        for the first layer.
    """

    label: str
    relu: bool
    blocks: list
    single_call: bool = True
    chained: bool = True


class Network(Protocol):
    """The side of the loop that differs between numpy weights and torch modules.

    ``steps`` lists the layers in order. :meth:`write` is called once per layer, in order, right
    after the layer is solved (in both modes): :meth:`pruned_input` of layer ``l`` may use the
    layers written before it, :meth:`pruned_outputs` is called after every layer is written.
    """

    steps: list

    def original(self, index: int) -> tuple[np.ndarray, np.ndarray]:
        """The original network's input ``X_l`` (P, N) and output ``Y_l`` after the activation (P, M)."""

    def pruned_input(self, index: int) -> np.ndarray:
        """Layer ``index``'s input (P, N) in the network whose earlier layers hold their refits."""

    def write(self, index: int, refit: list) -> None:
        """Take layer ``index``'s refit blocks (as its ``steps[index].blocks``, new ``W`` and ``b``)."""

    def pruned_outputs(self) -> list:
        """Every layer's output, after its activation, in the network with every refit written."""


# --------------------------------------------------------------------------------- the budget
def affine(X: np.ndarray, W: np.ndarray, b: np.ndarray | None) -> np.ndarray:
    """``X @ W + b`` (``b`` None: no bias), shapes (P, N) @ (N, M) + (M,)."""
    return X @ W if b is None else X @ W + b


def check_trim_options(*, epsilon, rel_epsilon, lam, mode: str, gamma) -> float:
    """Check the budget, mode and gamma shared by every network-level trim; return ``gamma``.

    Exactly one of ``epsilon``, ``rel_epsilon`` (``>= 0``) and ``lam`` (``> 0``) is given, ``mode`` is
    "cascade" or "parallel" and ``gamma >= 1`` (the inflation rate of eq. 7).
    """
    if mode not in MODES:
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


@dataclass(frozen=True)
class Budget:
    """The budget rule of a network trim (checked by :func:`check_trim_options` beforehand).

    Attributes
    ----------
    mode : {"parallel", "cascade"}
    gamma : float
        Eq. 7's inflation rate, ``>= 1``.
    epsilon, rel_epsilon, lam : float or None
        Exactly one is given.
    split : bool
        Per-column budgets (``split_budget``); meaningless, and off, for the regularized form.
    """

    mode: str
    gamma: float = 1.0
    epsilon: float | None = None
    rel_epsilon: float | None = None
    lam: float | None = None
    split: bool = False

    @property
    def split_columns(self) -> bool:
        """Whether the layer programs split their budget per column."""
        return self.split and self.lam is None

    def keywords(self, block: Block, X: np.ndarray, Y: np.ndarray, layer_Y: np.ndarray, *,
                 relu: bool, first: bool, groups: int) -> dict:
        """The budget keywords of one block's program (``V``, and ``epsilon`` or ``lam``).

        ``X`` and ``Y`` are the block's input and target, ``layer_Y`` the whole layer's target. In
        cascade mode after the first layer, eq. 7 for the block (:func:`cascade_budget`); otherwise
        :func:`layer_budget`, with an absolute ``epsilon`` shared among ``groups > 1`` blocks as
        ``split_budget`` shares it among columns (``epsilon_g = epsilon ||Y_g|| / ||Y||``), so that
        the squares add up to ``epsilon^2``.
        """
        if self.mode == "cascade" and not first:
            return cascade_budget(affine(X, block.W, block.b), Y, relu=relu, gamma=self.gamma,
                                  lam=self.lam, split=self.split_columns)
        if self.epsilon is not None and groups > 1:
            layer_norm = np.linalg.norm(layer_Y)
            share = np.linalg.norm(Y) / layer_norm if layer_norm > 0 else groups ** -0.5
            return {"epsilon": self.epsilon * float(share)}
        return layer_budget(Y, epsilon=self.epsilon, rel_epsilon=self.rel_epsilon, lam=self.lam)


# -------------------------------------------------------------------------------- the solves
def raise_if_failed(layer: NetTrimResult, label: str) -> None:
    """Raise :class:`SolverFailedError` naming ``label`` when ``layer`` holds no solution."""
    if layer.W_design is None:
        raise SolverFailedError(
            f"{label}: backend {layer.backend!r} returned no solution (status "
            f"{layer.status!r}); try another backend or a larger epsilon.", status=layer.status)


def check_finished(result: NetTrimResult, label: str, allow_inaccurate: bool) -> None:
    """Raise :class:`SolverFailedError` unless ``result`` is kept (module docstring)."""
    raise_if_failed(result, label)
    if result.status in FINISHED or (allow_inaccurate and result.status == "max_iterations"):
        return
    advice = ("pass allow_inaccurate=True to write unfinished layers anyway (the report flags "
              "them), " if result.status == "max_iterations" else "")
    raise SolverFailedError(
        f"{label}: backend {result.backend!r} did not finish (status {result.status!r}); nothing "
        f"was written to the model. Raise the iteration limit (solver_options="
        "{'max_iterations': ...} for 'admm'), use backend='clarabel', or " + advice
        + "loosen the budget.", status=result.status)


@dataclass(frozen=True)
class Solving:
    """How every layer program is solved, and which results are kept.

    Attributes
    ----------
    backend : str
    solver_options : dict or None
        Flat, or keyed by backend (:mod:`convexnet.backends.options`).
    device : optional
        Added to ADMM's options as its default ``device`` (torch: the model's device).
    certify : bool or dict
    executor : concurrent.futures.Executor or None
    penalize_bias : bool
    allow_inaccurate : bool
        Keep results stopped at their iteration limit (their bounds are NaN).
    """

    backend: str = "auto"
    solver_options: dict | None = None
    device: object = None
    certify: bool | dict = True
    executor: object = None
    penalize_bias: bool = True
    allow_inaccurate: bool = False

    def check(self, network: Network, budget: "Budget") -> None:
        """The backend, and the options for the backend each program will run on, before any solve."""
        name = backends.get(self.backend).name
        for index, step in enumerate(network.steps):
            samples = network.original(index)[0].shape[0]
            for block in step.blocks:
                rows, columns = block.W.shape[0] + (block.b is not None), block.W.shape[1]
                # A separable Net-Trim layer is a program polish makes exact: "auto" runs ADMM.
                separable = budget.lam is not None or budget.split
                chosen = (auto.preference(samples, rows, columns, polishable=separable)
                          if name == "auto" else name)
                backend_options.check(self.solver_options, chosen)

    def keywords(self, problem: NetTrimProblem, executor) -> dict:
        """The keywords of ``problem.solve``."""
        options = self.solver_options
        if self.device is not None and backends.resolve(problem.program, self.backend) == "admm":
            options = backend_options.with_admm_defaults(options, device=self.device)
        return dict(backend=self.backend, solver_options=options or None, executor=executor,
                    certify=self.certify)


def _solve_job(problem: NetTrimProblem, keywords: dict) -> NetTrimResult:
    return problem.solve(**keywords)


# ---------------------------------------------------------------------------------- the loop
@dataclass
class LayerOutcome:
    """One solved layer.

    Attributes
    ----------
    results : list of NetTrimResult
        One per block.
    refit : list of Block
        The blocks with the refit ``W`` and ``b``.
    epsilon : float
        The layer's budget, ``||(epsilon_g)_g||_2`` over its blocks; NaN for the regularized form.
    samples : int
        Rows of the layer's programs.
    time : float
        Seconds: obtaining the input, building and solving the programs, the write.
    accepted_inaccurate : bool
        Some block stopped at its iteration limit and was kept (``allow_inaccurate``).
    """

    results: list
    refit: list
    epsilon: float
    samples: int
    time: float
    accepted_inaccurate: bool


@dataclass
class CascadeRun:
    """The loop's answer: one :class:`LayerOutcome` per layer and the per-layer arrays."""

    layers: list
    discrepancy: np.ndarray
    bound: np.ndarray
    epsilons: np.ndarray


def run(network: Network, budget: Budget, solving: Solving, progress=None) -> CascadeRun:
    """Trim every layer of ``network`` (module docstring); return the outcomes, discrepancies, bounds.

    Parameters
    ----------
    network : Network
    budget : Budget
    solving : Solving
    progress : callable, optional
        ``progress(index, n_layers, outcome)`` after each layer is solved, kept and written.

    Raises
    ------
    SolverFailedError
        A layer without a solution, or not finished (unless ``solving.allow_inaccurate``): the
        layers after it are not solved.
    """
    steps = network.steps
    solving.check(network, budget)
    jobs = None
    client = cluster.find_client(solving.executor)
    threads = None
    if budget.mode == "parallel" and solving.executor is not None:
        # Every layer's input is known up front: each program is an independent job. On a Dask
        # cluster each program is solved from a thread of this process, which scatters its data
        # once and splits it into tasks by cost (convexnet.cluster), every layer in flight at once.
        jobs = []
        submit, inner = solving.executor.submit, None
        if client is not None:
            threads = ThreadPoolExecutor(max_workers=sum(len(step.blocks) for step in steps))
            submit, inner = threads.submit, solving.executor
        for index in range(len(steps)):
            X = network.original(index)[0]
            jobs.append((X, [submit(_solve_job, problem, solving.keywords(problem, inner))
                             for problem in _problems(network, index, X, budget, solving)]))
    try:
        return _layers(network, budget, solving, jobs, progress)
    finally:
        if threads is not None:
            threads.shutdown(wait=True, cancel_futures=True)


def _layers(network: Network, budget: Budget, solving: Solving, jobs, progress) -> CascadeRun:
    steps = network.steps
    outcomes = []
    for index, step in enumerate(steps):
        start = time.perf_counter()
        if jobs is not None:
            X, futures = jobs[index]
            solved = (future.result() for future in futures)
        else:
            first_input = budget.mode == "parallel" or index == 0
            X = network.original(index)[0] if first_input else network.pruned_input(index)
            solved = (problem.solve(**solving.keywords(problem, solving.executor))
                      for problem in _problems(network, index, X, budget, solving))
        results = []
        try:
            for group, result in enumerate(solved):
                label = step.label + (f" (group {group})" if len(step.blocks) > 1 else "")
                check_finished(result, label, solving.allow_inaccurate)
                results.append(result)
        except ClusterLostError as error:
            label = step.label + (f" (group {len(results)})" if len(step.blocks) > 1 else "")
            raise ClusterLostError(f"{label}: {error}") from error
        refit = [Block(block.inputs, block.outputs, result.W, result.b)
                 for block, result in zip(step.blocks, results)]
        network.write(index, refit)
        outcomes.append(LayerOutcome(results, refit, _layer_epsilon(results), X.shape[0],
                                     time.perf_counter() - start,
                                     any(result.status not in FINISHED for result in results)))
        if progress is not None:
            progress(index, len(steps), outcomes[-1])
    pruned = network.pruned_outputs()
    discrepancy = np.array([stable_norm(pruned[index] - network.original(index)[1])
                            for index in range(len(steps))])
    return CascadeRun(outcomes, discrepancy, _bounds(steps, outcomes, budget),
                      np.array([outcome.epsilon for outcome in outcomes]))


def _problems(network: Network, index: int, X: np.ndarray, budget: Budget,
              solving: Solving) -> list[NetTrimProblem]:
    step = network.steps[index]
    Y = network.original(index)[1]
    problems = []
    for block in step.blocks:
        X_block, Y_block = X[:, block.inputs], Y[:, block.outputs]
        keywords = budget.keywords(block, X_block, Y_block, Y, relu=step.relu, first=index == 0,
                                   groups=len(step.blocks))
        problems.append(NetTrimProblem(X_block, Y_block, relu=step.relu, bias=block.b is not None,
                                       split_budget=budget.split_columns,
                                       penalize_bias=solving.penalize_bias, **keywords))
    return problems


def _layer_epsilon(results: list) -> float:
    epsilons = [result.problem.epsilon for result in results]
    if any(epsilon is None for epsilon in epsilons):
        return float("nan")
    return float(epsilons[0]) if len(epsilons) == 1 else stable_norm(epsilons)


def _spectral_norm(W: np.ndarray) -> float:
    return float(np.linalg.norm(W, 2)) if W.size else 0.0


def next_bound(mode: str, previous: float, epsilon: float, W: np.ndarray, W_new: np.ndarray,
               gamma: float) -> float:
    """The bound on ``||Yhat_l - Y_l||_F`` given the bound ``previous`` on layer ``l - 1``.

    Theorem 1 (parallel) or Theorem 2 (cascade) in the form valid for any network (see
    :func:`convexnet.trim_network`); ``W`` and ``W_new`` are the original and pruned ``(N, M)``
    weights without the bias row, ``epsilon`` the layer's budget.
    """
    if mode == "parallel":
        return _spectral_norm(W_new) * previous + epsilon
    return float(np.sqrt(gamma)) * _spectral_norm(W) * previous


def _bounds(steps: list, outcomes: list, budget: Budget) -> np.ndarray:
    bound = np.full(len(steps), np.nan)
    for index, (step, outcome) in enumerate(zip(steps, outcomes)):
        if outcome.accepted_inaccurate:
            # Theorems 1-2 need every layer's constraint to hold; NaN also voids the chain after it.
            continue
        if index == 0:
            bound[0] = outcome.epsilon if step.single_call else np.nan
        elif step.chained:
            bound[index] = next_bound(budget.mode, bound[index - 1], outcome.epsilon,
                                      step.blocks[0].W, outcome.refit[0].W, budget.gamma)
    return bound
