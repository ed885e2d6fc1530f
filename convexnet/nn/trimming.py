"""Net-Trim for ``torch.nn`` models: capture activations, solve each layer, write the weights back.

:func:`trim` runs the loop of :func:`convexnet.programs.cascade.run` (the same as
:func:`convexnet.trim_network`) on a :class:`ModelNetwork`: the layers of a working copy of the
model, seen through their adapters (:mod:`convexnet.nn.layers`), with inputs and targets captured by
forward hooks (:mod:`convexnet.nn.capture`). Once every layer is solved, the refits are written into
the model itself (:mod:`convexnet.nn.write`).
"""

from __future__ import annotations

import time

import numpy as np
import torch

from .. import backends
from ..programs import cascade
from ..programs.cascade import Budget, LayerStep, Solving, check_trim_options
from ..errors import InvalidInputError
from . import capture, checks, pruning, structured
from .targets import check_target
from .report import LayerReport, TrimReport
from .write import write_all, write_update

__all__ = ["trim", "refit", "ModelNetwork"]


class ModelNetwork:
    """The torch side of :func:`convexnet.programs.cascade.run`: a working copy of a model.

    One pass counts each layer's rows (and fixes the order, the forward pass's), one captures every
    layer's original input and output; in cascade mode a layer's input is captured again from the
    working copy, in which the layers before it hold their refits. A layer's target is its original
    output after its ReLU (if it has one).

    Parameters
    ----------
    working : torch.nn.Module
        The working copy (:func:`convexnet.nn.capture.working_copy`), changed by :meth:`write`.
    names : list of str
        The layers to trim.
    relus : dict
        ``{name: bool}``: which are ReLU layers.
    batches : list of Tensor
        The calibration batches.
    max_samples, seed
        The row cap (:func:`convexnet.nn.capture.select_rows`).
    """

    def __init__(self, working, names: list, relus: dict, batches: list, max_samples, seed: int):
        self.working, self.batches = working, batches
        self.names, self.totals, calls = capture.count_rows(working, names, batches)
        self.selections = {name: capture.select_rows(self.totals[name], max_samples, seed)
                           for name in self.names}
        self.originals = capture.capture(working, self.names, batches, self.selections,
                                         self.totals, inputs=True, outputs=True)
        self.relus = relus
        self.targets = {name: self._activate(name, self.originals[name]["Y"]) for name in self.names}
        adapters = capture.layer_adapters(working, self.names)
        self.adapters = [adapters[name] for name in self.names]
        self.steps = [LayerStep(f"layer {name!r}", relus[name], adapter.blocks(),
                                single_call=calls[name] == 1,
                                chained=index > 0 and self._chained(index, calls))
                      for index, (name, adapter) in enumerate(zip(self.names, self.adapters))]
        self.updates: list = []

    def _activate(self, name: str, Y: np.ndarray) -> np.ndarray:
        return np.maximum(Y, 0.0) if self.relus[name] else Y

    def _chained(self, index: int, calls: dict) -> bool:
        """Whether the layer's input is exactly the previous layer's output (the theorems' chain)."""
        previous, current = self.names[index - 1], self.names[index]
        if (self.adapters[index - 1].kind != "Linear" or self.adapters[index].kind != "Linear"
                or calls[current] != 1):
            return False
        X, Y = self.originals[current]["X"], self.targets[previous]
        scale = float(np.abs(Y).max()) if Y.size else 0.0
        return X.shape == Y.shape and np.allclose(X, Y, rtol=1e-5, atol=1e-6 * scale)

    def original(self, index: int):
        name = self.names[index]
        return self.originals[name]["X"], self.targets[name]

    def pruned_input(self, index: int) -> np.ndarray:
        name = self.names[index]
        return capture.capture(self.working, [name], self.batches, self.selections, self.totals,
                               inputs=True, outputs=False)[name]["X"]

    def write(self, index: int, refit: list) -> None:
        update = self.adapters[index].update(refit)
        write_update(self.adapters[index].module, update)
        self.updates.append(update)

    def pruned_outputs(self) -> list:
        pruned = capture.capture(self.working, self.names, self.batches, self.selections,
                                 self.totals, inputs=False, outputs=True)
        return [self._activate(name, pruned[name]["Y"]) for name in self.names]

    def report(self, index: int, outcome: cascade.LayerOutcome) -> LayerReport:
        """The report row of layer ``index`` once it is written."""
        adapter, mask = self.adapters[index], self.updates[index].mask
        return LayerReport(self.names[index], adapter.kind, adapter.weight_shape,
                           self.steps[index].relu, outcome.samples, outcome.results,
                           outcome.epsilon, int(mask.count_nonzero()), mask.numel(), outcome.time,
                           accepted_inaccurate=outcome.accepted_inaccurate)


# -------------------------------------------------------------------------------------- trim
def trim(model: torch.nn.Module, inputs, *, layers=None, epsilon=None, rel_epsilon=None, lam=None,
         sparsity=None, pattern=None, per: str = "row", neurons=None, support="l1",
         refit: bool = True,
         damping: float = 0.0, blockwise=None,
         mode: str = "cascade", gamma: float = 1.0, backend: str = "auto", device=None, relu=None,
         max_samples: int | None = 10_000, seed: int = 0, batch_size: int | None = None,
         split_budget: bool = False, penalize_bias: bool = True, solver_options=None,
         executor=None, certify=True, progress=None, allow_inaccurate: bool = False) -> TrimReport:
    """Prune a torch model's layers in place: to a sparsity target, or with Net-Trim (paper 004).

    **Targets** (``sparsity=`` or ``pattern=``; :mod:`convexnet.nn.pruning`): layer after layer in
    the forward pass's order (block by block for a model of repeated blocks), the support is chosen
    by the weighted, reweighted l1 path (:func:`convexnet.nn.targets.l1_support`) on the Gram
    matrix ``H = X^T X`` of the layer's input in the model pruned so far, then the kept weights
    (and the bias) are refit exactly, ``min ||X (W - W0)||^2`` on the support, and certified
    (:mod:`convexnet.nn.least_squares`). Only ``layers``, ``batch_size``, ``progress`` and the
    arguments below apply then; report rows hold the refits as
    :class:`~convexnet.ProgramResult` (their ``cert`` the duality-gap certificate).

    sparsity : float in [0, 1), optional
        Fraction of zeros: exactly ``round(sparsity * N)`` in each output's ``N`` incoming weights
        (``per="row"``), or ``round(sparsity * N * M)`` in each layer (``per="layer"``).
    pattern : str, optional
        ``"n:m"``, e.g. ``"2:4"``: at most ``n`` non-zeros in each group of ``m`` consecutive
        inputs of every output (PyTorch's semi-structured layout); ``m`` must divide ``N``.
    per : {"row", "layer"}, default "row"
    support : "l1" or callable, default "l1"
        A callable ``support(layer)`` gets a :class:`convexnet.nn.pruning.LayerData` (``H``,
        ``W`` (N, M), ``rows``, ``target``) and returns a bool mask ``(N, M)`` meeting the target,
        weights whose zeros are the mask, or a pair ``(mask, weights)``: any pruning method, with
        convexnet's calibration.
    refit : bool, default True
        Refit the kept weights exactly; False keeps the original weights (or the callable's) on
        the mask (still certified: the certificate then says whether they are the optimal refit).
    damping : float, default 0.0
        Adds ``damping * mean(diag H) * ||W - W0||^2`` to the refit (0: the exact least squares).
    blockwise : None, True or False
        Calibrate one repeated block at a time (None: when the model has repeated blocks: GPT-2's
        ``transformer.h``, LLaMA's ``model.layers``, ``TransformerEncoder.layers``; the layers
        outside them are then left as they are, listed in ``report.info["skipped"]``).

    **Units** (``neurons=``; :mod:`convexnet.nn.structured`): whole units removed, layer by layer
    in the forward pass's order: features of a ``Linear``, channels of a convolution, attention
    heads, wherever one ``Linear`` or convolution reads them (through activations, ``BatchNorm``,
    pooling or ``flatten``). The units kept are chosen by the group-l1 path on the consumer's rows
    grouped by unit (:mod:`convexnet.nn.group_lasso`), the consumer is refit exactly on them and
    certified, and the removed units' producer rows are zeroed too, so that
    :func:`~convexnet.nn.shrink` can cut them out. ``layers`` names producers then, ``support``
    may be a callable ``select(units)`` (:class:`~convexnet.nn.structured.UnitData`) returning the
    kept units, and ``report.info["units"]`` lists the removed units per group.

    neurons : float in [0, 1), optional
        Fraction of each group's units removed: ``round(neurons * count)``.

    **Net-Trim** (``epsilon=``, ``rel_epsilon=`` or ``lam=``): the arguments below.

    Parameters
    ----------
    model : torch.nn.Module
        float32, float64, float16 or bfloat16, on any device (not ``meta``). Not modified unless
        every layer is solved.
    inputs : Tensor or iterable of Tensor
        Calibration inputs: one tensor (split into ``batch_size`` chunks when given) or batches
        (a list, a ``DataLoader``; a batch that is a tuple ``(inputs, targets)`` gives its first
        element). Each is passed as ``model(batch)``; floating batches are cast to the model's dtype
        and moved to its device. Materialized once: every pass sees the same batches.
    layers : list of str, optional
        Module names (``model.named_modules()``) to trim; default every supported layer
        (``Linear``, ``Conv1d``, ``Conv2d``, ``Conv3d``; :mod:`convexnet.nn.layers`) except those
        sharing a parameter with another module (tied weights, such as an output layer tied to an
        embedding: skipped with a warning, listed in ``report.info["skipped"]``).
        Naming a layer with a shared parameter is an error. They are processed in the order the
        forward pass first calls them.
    epsilon, rel_epsilon, lam : float
        Exactly one, as in :func:`convexnet.trim_network`: ``epsilon`` the absolute budget (every
        layer in parallel mode, the first in cascade mode), ``rel_epsilon`` the budget
        ``rel_epsilon * ||Y_l||_F``, ``lam`` the regularized form everywhere.
    mode : {"cascade", "parallel"}
        Parallel: every layer is refit from the original model's activations. Cascade: layer
        ``l``'s input is captured from a working copy in which the layers before it are already
        pruned; its target is the original output, ``V = Xhat_l @ W_l + b_l`` and
        ``epsilon_l^2 = gamma * sum_Omega (V - Y_l)^2`` (eq. 7), exactly as in ``trim_network``.
    gamma : float, default 1.0
        Cascade inflation rate, ``>= 1``.
    backend : str, default "auto"
        As in :meth:`convexnet.NetTrimProblem.solve`.
    device : str or torch.device, optional
        Where the ``"admm"`` backend computes (default: the model's device). The CVXPY backends
        run on the CPU; the forward passes run where the model is.
    relu : None, dict or set, optional
        Which layers have a ReLU. None: a layer whose next module in an ``nn.Sequential`` is an
        ``nn.ReLU`` (skipping ``Identity``/``Dropout``). ``{name: bool}`` overrides that per layer;
        a set of names says exactly which layers are ReLU layers. Others are trimmed as linear.
    max_samples : int or None, default 10000
        Cap on a layer's rows (samples, times patch positions for a convolution): above it, the
        seeded subset ``numpy.random.default_rng(seed).choice(rows, max_samples, replace=False)``
        is kept.
    seed : int, default 0
    batch_size : int, optional
        Split a single ``inputs`` tensor into batches of this size for the forward passes.
    split_budget, penalize_bias, solver_options, certify
        Passed to each layer's :class:`convexnet.NetTrimProblem` / ``solve``; ``certify`` attaches
        the duality-gap certificate to every result (the report's "cert" column).
    executor : concurrent.futures.Executor, optional
        As in :func:`convexnet.trim_network`: in parallel mode one job per layer program (per group
        of a grouped convolution); in cascade mode the column chunks of decoupled programs.
    progress : callable, optional
        ``progress(index, n_layers, layer_report)`` after each layer is solved (its
        ``discrepancy`` and ``bound`` are filled in once every layer is).
    allow_inaccurate : bool, default False
        Write layers whose solve did not finish (status ``"max_iterations"``) instead of raising
        :class:`~convexnet.errors.SolverFailedError`; their rows say ``accepted_inaccurate`` (a
        ``*`` in the table) and their bounds are NaN. ``"optimal"`` and ``"optimal_inaccurate"``
        (finished; accuracy assessed below the backend's tolerance) are always written.

    Returns
    -------
    TrimReport

    Notes
    -----
    **What is written.** Only when every layer is solved: a layer without a solution, or whose
    backend stopped before finishing (unless ``allow_inaccurate``), raises
    :class:`~convexnet.errors.SolverFailedError` (its ``status`` attribute says why). The refit
    values are copied into the existing tensors, so each ``Parameter`` object survives (an optimizer built before trimming
    keeps working): ``torch.nn.utils.prune.custom_from_mask`` re-registers the ``weight`` parameter
    object as ``weight_orig`` and adds the buffer ``weight_mask``; ``module.weight`` becomes
    ``weight_orig * weight_mask``. Then ``prune.is_pruned(model)`` holds, training keeps the zeros,
    and ``prune.remove(module, "weight")`` makes them permanent (``weight`` is then a new Parameter
    holding the product). A module that was already pruned keeps its hook; its ``weight_orig`` is
    overwritten and its ``weight_mask`` replaced by the new support (``LayerReport.revived`` counts
    entries zeroed before and used again). Biases are copied into their parameter. Values are
    computed in float64 and written in the module's dtype on its device (rounded, for float16 and
    bfloat16 models; the discrepancy is measured after rounding).

    **All or nothing.** Captures and trial writes happen on a deep copy of the model, in evaluation
    mode (dropout off, batch norm on running statistics); a bad argument, a solver failure or any
    exception leaves ``model`` exactly as it was.

    Examples
    --------
    >>> import torch, convexnet.nn
    >>> torch.manual_seed(0)                                        # doctest: +SKIP
    >>> model = torch.nn.Sequential(torch.nn.Linear(4, 8), torch.nn.ReLU(), torch.nn.Linear(8, 2))
    >>> report = convexnet.nn.trim(model, torch.randn(64, 4), rel_epsilon=0.05)  # doctest: +SKIP
    >>> print(report)                                               # doctest: +SKIP
    """
    if neurons is not None:
        given = [name for name, value in (("epsilon", epsilon), ("rel_epsilon", rel_epsilon),
                                          ("lam", lam), ("sparsity", sparsity),
                                          ("pattern", pattern)) if value is not None]
        if given:
            raise InvalidInputError(f"neurons= removes whole units; give it alone, not with "
                                    f"{given[0]}= (prune the weights of the units kept in a "
                                    f"second call).")
        return structured.prune_units(model, inputs, neurons=neurons, layers=layers,
                                      select=support, refit=refit, blockwise=blockwise,
                                      batch_size=batch_size, progress=progress)
    if sparsity is not None or pattern is not None:
        given = [name for name, value in (("epsilon", epsilon), ("rel_epsilon", rel_epsilon),
                                          ("lam", lam)) if value is not None]
        if given:
            raise InvalidInputError(f"give a target (sparsity= or pattern=) or a Net-Trim budget "
                                    f"({given[0]}=), not both.")
        target = check_target(sparsity=sparsity, pattern=pattern, per=per)
        return pruning.prune(model, inputs, target=target, support=support, layers=layers,
                             refit=refit, damping=damping, blockwise=blockwise,
                             batch_size=batch_size, progress=progress)
    start = time.perf_counter()
    checks.check_model(model)
    gamma = check_trim_options(epsilon=epsilon, rel_epsilon=rel_epsilon, lam=lam, mode=mode,
                               gamma=gamma)
    backends.get(backend)
    options = checks.check_options(
        max_samples=max_samples, seed=seed, batch_size=batch_size, device=device,
        executor=executor, progress=progress, solver_options=solver_options, certify=certify,
        split_budget=split_budget, penalize_bias=penalize_bias, allow_inaccurate=allow_inaccurate)
    names, skipped = checks.choose_layers(model, layers)
    relus = capture.resolve_relu(names, model, relu)
    reference = checks.reference_tensor(model)
    batches = checks.calibration_batches(inputs, batch_size, reference)
    budget = Budget(mode, gamma, epsilon, rel_epsilon, lam, options["split_budget"])
    solving = Solving(backend, solver_options,
                      device=reference.device if options["device"] is None else options["device"],
                      certify=certify, executor=executor, penalize_bias=options["penalize_bias"],
                      allow_inaccurate=options["allow_inaccurate"])

    network = ModelNetwork(capture.working_copy(model), names, relus, batches, max_samples, seed)
    reports = []

    def report(index, n_layers, outcome):
        reports.append(network.report(index, outcome))
        if progress is not None:
            progress(index, n_layers, reports[-1])

    outcome = cascade.run(network, budget, solving, progress=report)
    for row, discrepancy, bound in zip(reports, outcome.discrepancy, outcome.bound):
        row.discrepancy, row.bound = float(discrepancy), float(bound)
    revived = write_all([model.get_submodule(name) for name in network.names],
                        [_fresh(update) for update in network.updates])
    for row, count in zip(reports, revived):
        row.revived = count
    return TrimReport(reports, mode, time.perf_counter() - start,
                      info={"backend": backend, "max_samples": max_samples, "seed": seed,
                            "skipped": skipped})


def _fresh(update):
    """Fresh tensors for the user's model, so that nothing is shared with the working copy."""
    return type(update)(update.weight.clone(), update.mask.clone(),
                        None if update.bias is None else update.bias.clone())


def refit(model: torch.nn.Module, calibration, masks: dict | None = None, *, layers=None,
          damping: float = 0.0, blockwise=None, batch_size: int | None = None,
          progress=None) -> TrimReport:
    """Refit the weights kept by given masks exactly, and certify them, in place.

    Layer after layer (block by block for a model of repeated blocks), on the model refit so far:
    ``min ||X (W - W0)||^2`` over the weights a mask keeps (and the bias), with ``X`` the layer's
    calibration input and ``W0`` its current weights, solved from ``H = X^T X`` and certified by
    its duality gap (:mod:`convexnet.nn.least_squares`).

    Parameters
    ----------
    model : torch.nn.Module
    calibration : Tensor or iterable of Tensor
        As ``trim``'s ``inputs``; token ids ``(B, T)`` for a language model.
    masks : dict, optional
        ``{layer name: bool tensor in the weight's layout}`` (True: kept), from any method. A layer
        without one keeps its ``torch.nn.utils.prune`` mask (``weight_mask``) or, unpruned, its
        non-zeros.
    layers, damping, blockwise, batch_size, progress
        As in :func:`trim`.

    Returns
    -------
    TrimReport
        Written under the ``torch.nn.utils.prune`` contract of :func:`trim`, all or nothing.

    Examples
    --------
    >>> import torch, convexnet.nn as cnn
    >>> model = torch.nn.Sequential(torch.nn.Linear(8, 4))
    >>> report = cnn.refit(model, torch.randn(32, 8), {"0": torch.rand(4, 8) > 0.5})
    >>> report["0"].certificate
    'ok'
    """
    return pruning.prune(model, calibration, target=None, masks={} if masks is None else masks,
                         layers=layers, damping=damping, blockwise=blockwise,
                         batch_size=batch_size, progress=progress)