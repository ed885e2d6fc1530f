"""Net-Trim for ``torch.nn`` models: capture activations, solve each layer, write the weights back.

``import convexnet.nn`` (``import convexnet`` alone does not import torch). The one entry point is
:func:`trim`; it returns a :class:`TrimReport`. Layers become Net-Trim programs
(:class:`convexnet.NetTrimProblem`) as described in :mod:`convexnet.nn.capture`; the weights
are written back as described in :mod:`convexnet.nn.write`.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field

import numpy as np
import torch

from . import capture as capture_layers
from . import checks
from .. import backends
from ..backends.options import with_admm_defaults
from .write import build_update, write_all, write_update
from ..errors import SolverFailedError
from ..nettrim import NetTrimProblem, NetTrimResult
from ..network import (affine, cascade_budget, check_trim_options, layer_budget, next_bound,
                      raise_if_failed)

__all__ = ["trim", "TrimReport", "LayerReport"]


@dataclass
class LayerReport:
    """One trimmed layer.

    Attributes
    ----------
    name : str
        The module's name in ``model.named_modules()``.
    kind : {"Linear", "Conv2d"}
    weight_shape : tuple of int
        The module's weight shape (torch layout).
    relu : bool
        Whether it was trimmed as a ReLU layer.
    samples : int
        Rows of the layer's programs (calibration samples, times patch positions for a Conv2d),
        after the ``max_samples`` cap.
    results : list of NetTrimResult
        One per group (one for a Linear layer or a Conv2d with ``groups=1``).
    epsilon : float
        The layer's budget, ``sqrt(sum over groups of epsilon_g^2)``; NaN for the regularized form.
    discrepancy : float
        Measured ``||Yhat_l - Y_l||_F`` on the kept rows: the layer's output (after its ReLU for a
        ReLU layer) in the trimmed model against the original model.
    bound : float
        Theorem 1 (parallel) or Theorem 2 (cascade) bound on ``discrepancy`` in the form of
        :func:`convexnet.trim_network`: ``epsilon`` for the first layer, and chained from the
        previous layer when this layer's input is exactly that layer's output (Linear layers, as in
        an ``nn.Sequential`` of Linear and ReLU). NaN where no theorem applies (a Conv2d after the
        first layer, anything between two layers, the regularized form, a layer written unfinished
        and every layer chained after it).
    nonzeros, size : int
        Non-zero and total entries of the written weight.
    revived : int
        Entries that an earlier pruning had zeroed and that are non-zero again.
    time : float
        Seconds for this layer (capture and solve).
    accepted_inaccurate : bool
        True when the layer's solve did not finish (status ``"max_iterations"``) and it was written
        only because ``trim`` was called with ``allow_inaccurate=True``: its budget may not hold.
    """

    name: str
    kind: str
    weight_shape: tuple
    relu: bool
    samples: int
    results: list
    epsilon: float
    nonzeros: int
    size: int
    time: float
    discrepancy: float = float("nan")
    bound: float = float("nan")
    revived: int = 0
    accepted_inaccurate: bool = False

    @property
    def result(self) -> NetTrimResult:
        """The layer's single :class:`NetTrimResult` (the first group's for a grouped Conv2d)."""
        return self.results[0]

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros in the written weight."""
        return 1.0 - self.nonzeros / self.size if self.size else float("nan")

    @property
    def status(self) -> str:
        """The worst status over the layer's programs."""
        return backends.worst_status([result.status for result in self.results])

    @property
    def certificate(self) -> str:
        """``"ok"``/``"failed"`` from the results' certificates, ``"-"`` when none was computed."""
        certificates = [result.certificate for result in self.results]
        if any(c is None for c in certificates):
            return "-"
        return "ok" if all(bool(getattr(c, "ok", False)) for c in certificates) else "failed"


@dataclass
class TrimReport:
    """What :func:`trim` did, one :class:`LayerReport` per layer in execution order.

    ``str(report)`` and ``report.table()`` give a plain-text table; ``report["0"]`` is a layer's row.
    ``info`` holds the backend, ``max_samples`` and ``seed``, and under ``"skipped"`` the layers the
    default selection left out because they share a parameter with another module (``{name: why}``).
    """

    layers: list
    mode: str
    total_time: float = 0.0
    info: dict = field(default_factory=dict)

    def __getitem__(self, name: str) -> LayerReport:
        for layer in self.layers:
            if layer.name == name:
                return layer
        raise KeyError(name)

    def __iter__(self):
        return iter(self.layers)

    def __len__(self) -> int:
        return len(self.layers)

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros over all trimmed weights together."""
        size = sum(layer.size for layer in self.layers)
        return 1.0 - sum(layer.nonzeros for layer in self.layers) / size if size else float("nan")

    def table(self) -> str:
        """One row per layer, then the totals.

        The status of a layer written unfinished (``allow_inaccurate=True``) is marked ``*``.
        """
        rows = [f"{'layer':<16} {'type':<6} {'weight':>14} {'relu':>4} {'samples':>7} "
                f"{'nonzeros':>9} {'pruned':>7} {'epsilon':>10} {'discrepancy':>11} {'bound':>10} "
                f"{'status':>18} {'cert':>6} {'time (s)':>8}"]
        for layer in self.layers:
            shape = "x".join(str(size) for size in layer.weight_shape)
            rows.append(f"{layer.name:<16} {layer.kind:<6} {shape:>14} {'yes' if layer.relu else 'no':>4} "
                        f"{layer.samples:>7} {layer.nonzeros:>9} {100 * layer.sparsity:>6.1f}% "
                        f"{layer.epsilon:>10.4g} {layer.discrepancy:>11.4g} {layer.bound:>10.4g} "
                        f"{layer.status + ('*' if layer.accepted_inaccurate else ''):>18} "
                        f"{layer.certificate:>6} {layer.time:>8.2f}")
        rows.append(f"{len(self.layers)} layers, {self.mode} mode, {100 * self.sparsity:.1f}% of "
                    f"the weights pruned, {self.total_time:.1f} s")
        if any(layer.accepted_inaccurate for layer in self.layers):
            rows.append("* not finished, written because allow_inaccurate=True: its budget may not "
                        "hold, no bound is given")
        for name, why in self.info.get("skipped", {}).items():
            rows.append(f"skipped {name!r}: shares a parameter with another module ({why})")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()


# ----------------------------------------------------------------------------------- solving
@dataclass
class _Budget:
    epsilon: float | None
    rel_epsilon: float | None
    lam: float | None
    mode: str
    gamma: float
    split: bool


def _group_budget(budget: _Budget, X, Y, W, b, Y_layer_norm, n_groups, relu, first) -> dict:
    """The program keywords of one group: eq. 7 in cascade mode, otherwise the layer budget.

    An absolute ``epsilon`` is shared among groups as ``split_budget`` shares it among columns
    (``epsilon_g = epsilon ||Y_g|| / ||Y||``), so the squares add up to ``epsilon^2``.
    """
    if budget.mode == "cascade" and not first:
        pre = affine(X, W, b)
        return cascade_budget(pre, Y, relu=relu, gamma=budget.gamma, lam=budget.lam,
                              split=budget.split)
    if budget.epsilon is not None and n_groups > 1:
        share = np.linalg.norm(Y) / Y_layer_norm if Y_layer_norm > 0 else n_groups ** -0.5
        return {"epsilon": budget.epsilon * float(share)}
    return layer_budget(Y, epsilon=budget.epsilon, rel_epsilon=budget.rel_epsilon, lam=budget.lam)


#: Statuses whose solutions are written. "optimal_inaccurate" is a finished solve whose accuracy
#: assessment (or certificate) fell short of the backend's tolerance; "max_iterations" is not finished.
FINISHED = ("optimal", "optimal_inaccurate")


def _check_finished(result: NetTrimResult, label: str, allow_inaccurate: bool) -> None:
    """Raise :class:`SolverFailedError` for an unfinished solve, unless the caller accepts it."""
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


def _solve_layer(spec, module, X, target, *, first, budget, backend, device, solver_options,
                 executor, certify, problem_options, allow_inaccurate):
    """Solve every group's program; return the refit blocks and the results."""
    blocks = capture_layers.design_blocks(module)
    layer_norm = float(np.linalg.norm(target))
    refit, results = [], []
    for group, (inputs, outputs, W, b) in enumerate(blocks):
        X_group, Y_group = X[:, inputs], target[:, outputs]
        keywords = _group_budget(budget, X_group, Y_group, W, b, layer_norm, len(blocks),
                                 spec.relu, first)
        problem = NetTrimProblem(X_group, Y_group, relu=spec.relu, bias=b is not None,
                                 **keywords, **problem_options)
        options = solver_options
        if backends.resolve(problem.program, backend) == "admm":
            options = with_admm_defaults(solver_options, device=device)
        result = problem.solve(backend=backend, solver_options=options or None, executor=executor,
                               certify=certify)
        label = f"layer {spec.name!r}" + (f" (group {group})" if len(blocks) > 1 else "")
        _check_finished(result, label, allow_inaccurate)
        refit.append((inputs, outputs, result.W, result.b))
        results.append(result)
    return blocks, refit, results


def _chained(previous, current, originals, targets, calls) -> bool:
    """Whether ``current``'s input is exactly ``previous``'s output (the theorems' chain)."""
    if previous.kind != "Linear" or current.kind != "Linear" or calls[current.name] != 1:
        return False
    X, Y = originals[current.name]["X"], targets[previous.name]
    scale = float(np.abs(Y).max()) if Y.size else 0.0
    return X.shape == Y.shape and np.allclose(X, Y, rtol=1e-5, atol=1e-6 * scale)


def _bounds(specs, reports, originals, targets, calls, blocks, mode, gamma) -> None:
    for index, (spec, report) in enumerate(zip(specs, reports)):
        if report.accepted_inaccurate:
            # Theorems 1-2 need every layer's constraint to hold; NaN also voids the chain after it.
            report.bound = float("nan")
        elif index == 0:
            report.bound = report.epsilon if calls[spec.name] == 1 else float("nan")
        elif _chained(specs[index - 1], spec, originals, targets, calls):
            original, refit = blocks[spec.name]
            report.bound = next_bound(mode, reports[index - 1].bound, report.epsilon,
                                      original[0][2], refit[0][2], gamma)


# -------------------------------------------------------------------------------------- trim
def trim(model: torch.nn.Module, inputs, *, layers=None, epsilon=None, rel_epsilon=None, lam=None,
         mode: str = "cascade", gamma: float = 1.0, backend: str = "auto", device=None, relu=None,
         max_samples: int | None = 10_000, seed: int = 0, batch_size: int | None = None,
         split_budget: bool = False, penalize_bias: bool = True, solver_options=None,
         executor=None, certify=True, progress=None, allow_inaccurate: bool = False) -> TrimReport:
    """Prune a torch model's Linear and Conv2d layers with Net-Trim (paper 004), in place.

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
        Module names (``model.named_modules()``) to trim; default every ``Linear`` and ``Conv2d``
        except those sharing a parameter with another module (tied weights, such as an output
        layer tied to an embedding: skipped with a warning, listed in ``report.info["skipped"]``).
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
        Cap on a layer's rows (samples, times patch positions for a Conv2d): above it, the seeded
        subset ``numpy.random.default_rng(seed).choice(rows, max_samples, replace=False)`` is kept.
    seed : int, default 0
    batch_size : int, optional
        Split a single ``inputs`` tensor into batches of this size for the forward passes.
    split_budget, penalize_bias, solver_options, executor, certify
        Passed to each layer's :class:`convexnet.NetTrimProblem` / ``solve``; ``certify`` attaches
        the duality-gap certificate to every result (the report's "cert" column).
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
    :class:`~convexnet.errors.SolverFailedError` (its ``status`` attribute says why). The refit values are copied into the
    existing tensors, so each ``Parameter`` object survives (an optimizer built before trimming
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
    start = time.perf_counter()
    checks.check_model(model)
    gamma = check_trim_options(epsilon=epsilon, rel_epsilon=rel_epsilon, lam=lam, mode=mode,
                               gamma=gamma)
    backends.get(backend)
    options = checks.check_options(
        max_samples=max_samples, seed=seed, batch_size=batch_size, device=device,
        executor=executor, progress=progress, solver_options=solver_options, certify=certify,
        split_budget=split_budget, penalize_bias=penalize_bias, allow_inaccurate=allow_inaccurate)
    split = options["split_budget"] and lam is None
    budget = _Budget(epsilon, rel_epsilon, lam, mode, gamma, split)
    names, skipped = checks.choose_layers(model, layers)
    relus = capture_layers.resolve_relu(names, model, relu)
    reference = checks.reference_tensor(model)
    batches = checks.calibration_batches(inputs, batch_size, reference)
    device = reference.device if options["device"] is None else options["device"]
    problem_options = dict(split_budget=split, penalize_bias=options["penalize_bias"])

    working = capture_layers.working_copy(model)
    order, totals, calls = capture_layers.count_rows(working, names, batches)
    selections = {name: capture_layers.select_rows(totals[name], max_samples, seed)
                  for name in order}
    originals = capture_layers.capture(working, order, batches, selections, totals, inputs=True,
                                       outputs=True)
    targets = {name: np.maximum(originals[name]["Y"], 0.0) if relus[name] else originals[name]["Y"]
               for name in order}
    specs = [_spec(name, working.get_submodule(name), relus[name]) for name in order]

    reports, updates, blocks = [], [], {}
    for index, spec in enumerate(specs):
        layer_start = time.perf_counter()
        module = working.get_submodule(spec.name)
        X = originals[spec.name]["X"]
        if mode == "cascade" and index > 0:
            X = capture_layers.capture(working, [spec.name], batches, selections, totals,
                                       inputs=True, outputs=False)[spec.name]["X"]
        original, refit, results = _solve_layer(
            spec, module, X, targets[spec.name], first=index == 0, budget=budget,
            backend=backend, device=device, solver_options=solver_options, executor=executor,
            certify=certify, problem_options=problem_options,
            allow_inaccurate=options["allow_inaccurate"])
        update = build_update(module, refit)
        if mode == "cascade":
            write_update(module, update)
        blocks[spec.name] = (original, refit)
        updates.append(update)
        epsilons = [r.problem.epsilon for r in results]
        epsilon_layer = (float(np.sqrt(sum(e ** 2 for e in epsilons))) if None not in epsilons
                         else float("nan"))
        nonzeros = int(update.mask.count_nonzero())
        reports.append(LayerReport(spec.name, spec.kind, spec.weight_shape, spec.relu, X.shape[0],
                                   results, epsilon_layer, nonzeros, update.mask.numel(),
                                   time.perf_counter() - layer_start,
                                   accepted_inaccurate=any(r.status not in FINISHED
                                                           for r in results)))
        if progress is not None:
            progress(index, len(specs), reports[-1])

    if mode == "parallel":
        for spec, update in zip(specs, updates):
            write_update(working.get_submodule(spec.name), update)
    pruned = capture_layers.capture(working, order, batches, selections, totals, inputs=False,
                                    outputs=True)
    for spec, report in zip(specs, reports):
        output = pruned[spec.name]["Y"]
        output = np.maximum(output, 0.0) if spec.relu else output
        report.discrepancy = float(np.linalg.norm(output - targets[spec.name]))
    _bounds(specs, reports, originals, targets, calls, blocks, mode, gamma)

    own = [_fresh(update) for update in updates]
    revived = write_all([model.get_submodule(spec.name) for spec in specs], own)
    for report, count in zip(reports, revived):
        report.revived = count
    return TrimReport(reports, mode, time.perf_counter() - start,
                      info={"backend": backend, "max_samples": max_samples, "seed": seed,
                            "skipped": skipped})


def _fresh(update):
    """Fresh tensors for the user's model, so that nothing is shared with the working copy."""
    return type(update)(update.weight.clone(), update.mask.clone(),
                        None if update.bias is None else update.bias.clone())


def _spec(name: str, module, relu: bool) -> capture_layers.LayerSpec:
    kind = "Linear" if isinstance(module, torch.nn.Linear) else "Conv2d"
    shape = tuple((module.weight_orig if hasattr(module, "weight_orig") else module.weight).shape)
    return capture_layers.LayerSpec(name, kind, relu, shape)
