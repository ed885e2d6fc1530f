r"""Training torch models under constraint sets and sparsity penalties (papers 000, 001, 002).

``import convexnet.training`` (``convexnet.training`` also loads on first use; ``import convexnet``
alone does not import torch). Two wrappers around any ``torch.optim.Optimizer``:

:class:`ProjectedOptimizer`
    projected gradient descent (paper 000, eq. 1; paper 001, Algorithms 1-2): after every step of the
    wrapped optimizer, each listed layer's matrix ``[W; b]`` is projected onto its set.
:class:`RVSM`
    the relaxed variable splitting method (paper 002, Algorithm 1): a gradient step on the loss, a pull
    of the weights ``w`` towards their thresholded copy ``u``, and ``u`` refreshed by the penalty's
    prox. ``u`` is the sparse network that is evaluated and exported.

A layer is seen in the design's orientation (batch first): a ``Linear`` with ``weight`` of shape
``(M, N)`` is ``W = weight.T`` of shape ``(N, M)``, column ``j`` the incoming weights of output neuron
``j``; a convolution (``Conv1d``, ``Conv2d``, ``Conv3d``) is ``W = weight.reshape(C_out, -1).T`` of
shape ``(C_in / groups * kh * kw, C_out)``, each output channel a column. With a bias, ``b`` is a last
row: the layer's matrix is ``[W; b]`` of shape ``(N + 1, M)`` (:func:`design_matrix`), read and
written through the layer adapters of :mod:`convexnet.nn.layers`, as :func:`convexnet.nn.trim` does.

Both wrappers act on the parameters in place, under ``torch.no_grad()``: the ``Parameter`` objects
stay the same (an LR scheduler or a checkpoint that refers to them keeps working), on their device and
in their dtype (float32 or float64, CPU or CUDA; float16 and bfloat16 layers are projected and
thresholded in float32 and written back rounded).

A step is all or nothing. Gradients are checked before the optimizer reads them, and the stepped
weights, projections and thresholds before they are committed; a NaN or infinite gradient raises
:class:`~convexnet.errors.InvalidInputError`, a step that overflows
:class:`~convexnet.errors.SolverFailedError` (status ``"non_finite"``), and after either (or any other
exception inside the step) the parameters and the optimizer's state are as they were before it. This
costs one copy of the parameters and of the optimizer's state per step. LR schedulers take the wrapped optimizer,
``scheduler = StepLR(wrapper.optimizer, ...)``: the two share ``param_groups``, so the schedule is
what ``wrapper.step()`` uses.

Example
-------
>>> import torch
>>> from convexnet import sets, training
>>> layer = torch.nn.Linear(4, 3)
>>> optimizer = training.ProjectedOptimizer(torch.optim.SGD(layer.parameters(), lr=0.1),
...                                         [(layer, sets.L1InfBall(0.5))])
>>> optimizer.project_now()
>>> bool(sets.L1InfBall(0.5).contains(training.design_matrix(layer), tol=1e-6))
True
"""

from __future__ import annotations

import contextlib
from dataclasses import dataclass

import torch

from .nn import training_support as layer_tools
from .nn.layers import LayerUpdate, adapter_for
from .nn.write import write_all
from ._validation import check_bool, check_scalar
from .errors import InvalidInputError
from .penalties import Penalty
from .sets import ConstraintSet

__all__ = ["ProjectedOptimizer", "RVSM", "Split", "design_matrix"]


# ---------------------------------------------------------------------------- layer matrices
def design_matrix(module: torch.nn.Module) -> torch.Tensor:
    r"""The layer's matrix in the design's orientation: ``[W; b]``, a new tensor.

    Parameters
    ----------
    module : torch.nn.Linear, Conv1d / Conv2d / Conv3d, MultiheadAttention (its packed in_proj) or
        transformers' Conv1D

    Returns
    -------
    Tensor, shape (N, M) or (N + 1, M)
        ``W = weight.reshape(M, -1).T`` (``N = in_features``, or ``C_in / groups * prod(kernel)``;
        ``M = out_features`` or ``C_out``), with the bias as a last row when the module has one.
        Detached, in the weight's dtype, on its device. For a pruned layer, the weights it computes
        with (``weight_orig * weight_mask``).
    """
    layer_tools.check_layer("module", module, allow_pruned=True)
    return adapter_for(module).matrix().clone()


# -------------------------------------------------------------------------------- wrappers
class _OptimizerWrapper:
    """What a torch optimizer offers, delegated to the wrapped ``optimizer``; steps that undo.

    ``known`` names parameters (by ``id``) in the messages of a failed step.
    """

    def __init__(self, optimizer, known: dict[int, str] | None = None):
        self.optimizer = optimizer
        self._known = dict(known or {})

    @property
    def param_groups(self) -> list:
        """The wrapped optimizer's ``param_groups`` (the same list)."""
        return self.optimizer.param_groups

    @property
    def state(self):
        """The wrapped optimizer's per-parameter state."""
        return self.optimizer.state

    @property
    def defaults(self) -> dict:
        """The wrapped optimizer's default hyperparameters."""
        return self.optimizer.defaults

    def add_param_group(self, param_group: dict) -> None:
        """Add a parameter group to the wrapped optimizer."""
        self.optimizer.add_param_group(param_group)

    def zero_grad(self, set_to_none: bool = True) -> None:
        """Reset the gradients, as ``optimizer.zero_grad``."""
        self.optimizer.zero_grad(set_to_none=set_to_none)

    def state_dict(self) -> dict:
        """The wrapped optimizer's state dict."""
        return self.optimizer.state_dict()

    def _guarded_step(self, closure, commit):
        return layer_tools.guarded_step(self.optimizer, self._known, closure, commit)


class ProjectedOptimizer(_OptimizerWrapper):
    r"""Projected gradient training: every step of ``optimizer`` is followed by projections.

    For each listed layer with matrix ``V = [W; b]`` (:func:`design_matrix`, shape ``(N + 1, M)``
    with a bias, ``(N, M)`` without) and set ``C``,

    .. math:: V_{t+1} = P_C\big(\text{step}(V_t)\big), \qquad
              P_C(Z) = \operatorname{argmin}_{X \in C} \|X - Z\|_F,

    where ``step`` is the wrapped optimizer's update. With ``torch.optim.SGD`` (no momentum) this is
    paper 000's projected gradient descent ``W_{t+1} = P_C(W_t - mu grad L(W_t))`` (eq. 1) and paper
    001's Algorithm 1, whose per-neuron l1 bound ``max_j ||V[:, j]||_1 <= c`` (bias row included) is
    :class:`convexnet.sets.L1InfBall`; any other optimizer (momentum, Adam) gives the same projected
    iteration with its own step. The projections are the sets' own kernels.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Built over the model's parameters; every constrained layer's weight must be among them.
    constraints : list of (module, set)
        ``module`` a ``Linear`` or ``Conv1d/2d/3d`` layer (plain: not pruned or parametrized), each
        listed once; ``set`` a :mod:`convexnet.sets` set that takes the layer's matrix: ``L1Ball``,
        ``L1InfBall``, ``SumOfMaxBall``, ``NuclearBall``, ``Sparse``, ``LowRank``, ``Subspace``,
        ``ConvolutionSubspace`` (whose shape must be the layer's ``[W; b]`` shape; a bias row does not
        belong to a convolution's weight-sharing subspace, so build such layers with ``bias=False``).

    Raises
    ------
    InvalidInputError
        Before any work, naming the argument: not an optimizer, a layer that is not a
        ``Linear``/convolution or is pruned, a weight the optimizer does not train, a layer listed
        twice, a set of the wrong kind (a penalty, a ``NetTrimSet``, a class instead of an
        instance) or one that cannot take the layer's matrix shape.

    Notes
    -----
    The wrapper starts from the weights as they are: call :meth:`project_now` first for a feasible
    initial point. A projection is a new tensor copied into the existing parameters under
    ``torch.no_grad()``; the bias is projected jointly with the weights because it is a row of ``V``.
    ``state_dict`` / ``load_state_dict`` are the wrapped optimizer's (the wrapper keeps no state of
    its own).

    Examples
    --------
    >>> import torch
    >>> from convexnet import sets
    >>> model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> optimizer = ProjectedOptimizer(torch.optim.Adam(model.parameters(), lr=1e-2),
    ...                                [(model[0], sets.L1Ball(2.0)), (model[2], sets.Sparse(2))])
    >>> loss = model(torch.randn(8, 6)).square().mean()
    >>> loss.backward()
    >>> _ = optimizer.step()
    >>> optimizer.is_feasible(tol=1e-6)
    True
    """

    def __init__(self, optimizer, constraints):
        layer_tools.check_optimizer(optimizer)
        checked = tuple(layer_tools.check_constraints(optimizer, constraints))
        known = {}
        for constraint in checked:
            known[id(constraint.weight)] = f"{constraint.label}[0].weight"
            if constraint.bias is not None:
                known[id(constraint.bias)] = f"{constraint.label}[0].bias"
        super().__init__(optimizer, known)
        self.constraints: tuple[layer_tools.Constraint, ...] = checked

    def step(self, closure=None):
        """One step of the wrapped optimizer, then every projection; returns the closure's loss.

        All or nothing (module docstring): on failure the parameters and the optimizer's state
        are as before the step.
        """
        def commit():
            self._write(self._projections())
        return self._guarded_step(closure, commit)

    def project_now(self) -> None:
        """Project every listed layer onto its set now (e.g. to make the initial point feasible).

        Every projection is computed and checked before the first is written.
        """
        layer_tools.check_weights([(f"{c.label}[0]", c.layer.matrix())
                                   for c in self.constraints])
        self._write(self._projections())

    def _projections(self) -> list[torch.Tensor]:
        """Every layer's projection, checked finite, in the layer's dtype; nothing written."""
        projected = []
        with torch.no_grad():
            for c in self.constraints:
                matrix = c.layer.matrix()
                projected.append(c.set.project(layer_tools.compute_dtype(matrix)).to(matrix.dtype))
        layer_tools.check_finite("the projection", [
            (f"{c.label}[0]", matrix) for c, matrix in zip(self.constraints, projected)])
        return projected

    def _write(self, projected: list[torch.Tensor]) -> None:
        with torch.no_grad():
            for constraint, matrix in zip(self.constraints, projected):
                constraint.layer.write_matrix(matrix)

    def is_feasible(self, tol: float = 1e-6) -> bool:
        """Whether every layer's ``[W; b]`` lies in its set, by the set's ``contains(., tol)``."""
        return all(c.set.contains(layer_tools.compute_dtype(c.layer.matrix()),
                                  tol=tol) for c in self.constraints)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the wrapped optimizer's state dict."""
        self.optimizer.load_state_dict(state_dict)

    def __repr__(self) -> str:
        sets_ = ", ".join(f"{type(c.module).__name__}: {c.set!r}" for c in self.constraints)
        return f"ProjectedOptimizer({type(self.optimizer).__name__}, [{sets_}])"


# ------------------------------------------------------------------------------------- RVSM
@dataclass
class Split:
    """RVSM's state for one tensor: the trained ``weight`` (``w``) and its sparse copy ``u``.

    Attributes
    ----------
    name : str
        The key of the tensor in :meth:`RVSM.sparse_state_dict` (``"<layer>.weight"``).
    parameter : torch.nn.Parameter
        ``w``, trained by the optimizer (the same object as the layer's).
    u : Tensor
        ``prox_{(strength / beta) R}(w)``, same shape, dtype and device.
    """

    name: str
    parameter: torch.nn.Parameter
    u: torch.Tensor


class RVSM(_OptimizerWrapper):
    r"""Relaxed variable splitting (paper 002, Algorithm 1) around a torch optimizer.

    With ``f`` the training loss, ``R`` the penalty's ``rho`` summed over the entries, ``lambda`` its
    ``strength`` and ``beta > 0``, RVSM works on the augmented Lagrangian (paper 002, eq. 8)

    .. math:: \mathcal{L}_\beta(w, u) = f(w) + \lambda R(u) + \tfrac{\beta}{2}\|w - u\|^2

    and alternates an exact step in ``u`` with a gradient step in ``w`` (step size ``eta``):

    .. math:: u^{t+1} = \operatorname{argmin}_u \mathcal{L}_\beta(w^t, u)
              = \operatorname{prox}_{(\lambda/\beta) R}(w^t),\qquad
              w^{t+1} = w^t - \eta \nabla f(w^t) - \eta\beta\,(w^t - u^{t+1}).

    ``u = penalty.prox(w, step=1 / beta)``: the threshold is set by ``lambda / beta`` (the paper's
    ``S_{lambda/beta}``): soft threshold at ``lambda / beta`` for :class:`~convexnet.penalties.L1`,
    hard threshold at ``sqrt(2 lambda / beta)`` for :class:`~convexnet.penalties.L0`, the
    transformed-l1 thresholding with ``lam = lambda / beta`` for
    :class:`~convexnet.penalties.TransformedL1`.

    The wrapper keeps ``u = prox(w)`` at all times (at construction, ``u^0 = prox(w^0)``, the paper's
    initialization). :meth:`step` runs the wrapped optimizer's step (its ``- eta grad f``), then
    subtracts ``eta * beta * (w^t - u)`` with ``w^t`` the weights before the step and ``eta`` the
    current ``lr`` of the parameter's group, then refreshes ``u``. With plain ``torch.optim.SGD``
    this is Algorithm 1 exactly; with momentum or Adam the loss step is the optimizer's, while the
    coupling step stays the plain ``eta * beta`` pull (it does not enter the optimizer's momentum or
    scaling). Paper 002 proves convergence (Theorem 1) for ``eta <= 1 / (beta + L)`` and small
    ``beta`` (``beta <= delta sin(delta) / (k pi)``, ``lambda / beta < 1 / sqrt(d)``).

    **Bias.** Paper 002's model (eq. 1, Theorem 1) has no bias and its sparsity counts the network's
    weights, so by default only weights are split and penalized; biases are trained by the optimizer
    alone and exported as they are. ``penalize_bias=True`` splits every bias too. The penalties are
    separable, so the split of ``[W; b]`` is the split of ``W`` and of ``b`` separately.

    Parameters
    ----------
    optimizer : torch.optim.Optimizer
        Over the model's parameters; every split weight (and bias with ``penalize_bias``) must be in
        it; its ``lr`` is read at every step (schedulers apply).
    modules : torch.nn.Module, dict or list
        The layers to sparsify (``Linear`` and ``Conv1d/2d/3d``, plain): a model (every such layer in
        it, named as in ``model.named_modules()``, so that :meth:`sparse_state_dict` loads into the
        model), a ``{name: layer}`` dict, or a list of layers (named ``"0"``, ``"1"``, ...) or of
        ``(name, layer)`` pairs.
    penalty : convexnet.penalties.Penalty
        ``L1(strength)``, ``L0(strength)`` or ``TransformedL1(strength, a)``; ``strength`` is
        ``lambda``.
    beta : float
        ``> 0``, the coupling weight.
    penalize_bias : bool, default False

    Attributes
    ----------
    splits : list of Split
        The state: one ``(name, parameter w, u)`` per split tensor.

    Raises
    ------
    InvalidInputError
        Before any work, naming the argument (see :class:`ProjectedOptimizer`; also a penalty that
        is not a :mod:`convexnet.penalties` penalty, ``beta <= 0``, a split tensor the optimizer does
        not train).

    Notes
    -----
    ``u`` is a function of ``w``, so :meth:`state_dict` is the wrapped optimizer's: after loading
    weights into the model (or changing them in any way outside :meth:`step`), call :meth:`refresh`
    (``load_state_dict`` does). Evaluate ``u`` with :meth:`sparse_weights`, export it with
    :meth:`sparse_state_dict`, or write it into the model with :meth:`apply_to_model`.

    Examples
    --------
    >>> import torch
    >>> from convexnet import penalties
    >>> model = torch.nn.Sequential(torch.nn.Linear(6, 4), torch.nn.ReLU(), torch.nn.Linear(4, 1))
    >>> rvsm = RVSM(torch.optim.SGD(model.parameters(), lr=0.1), model, penalties.L0(1e-3), beta=0.1)
    >>> model(torch.randn(8, 6)).square().mean().backward()
    >>> _ = rvsm.step()
    >>> sorted(rvsm.sparse_state_dict())
    ['0.bias', '0.weight', '2.bias', '2.weight']
    """

    def __init__(self, optimizer, modules, penalty, beta: float, *, penalize_bias: bool = False):
        layer_tools.check_optimizer(optimizer)
        if isinstance(penalty, type) or not isinstance(penalty, Penalty):
            kind = penalty.__name__ if isinstance(penalty, type) else type(penalty).__name__
            advice = (" For a constraint set use convexnet.training.ProjectedOptimizer."
                      if isinstance(penalty, ConstraintSet) else "")
            raise InvalidInputError(
                "penalty must be a convexnet.penalties instance: L1(strength), L0(strength) or "
                f"TransformedL1(strength, a); got {kind}.{advice}")
        self.beta = check_scalar("beta", beta, low=0.0, low_inclusive=False)
        penalize_bias = check_bool("penalize_bias", penalize_bias)
        layers = layer_tools.named_layers(modules)
        for name, module in layers:
            layer_tools.check_layer(f"modules[{name!r}]", module)
        layer_tools.check_unique("modules", [module for _, module in layers])
        tensors = []
        for name, module in layers:
            prefix = f"{name}." if name else ""
            layer = adapter_for(module)
            weight, bias = layer_tools.tensors(module)
            tensors.append((prefix + layer.weight_name, weight))
            if penalize_bias and bias is not None:
                tensors.append((prefix + layer.bias_name, bias))
        for key, tensor in tensors:
            if not layer_tools.optimized(optimizer, tensor):
                raise InvalidInputError(
                    f"modules: {key} is not among the optimizer's parameters; build the optimizer "
                    "over the model's parameters (model.parameters()).")
        super().__init__(optimizer, {id(tensor): key for key, tensor in tensors})
        self.penalty = penalty
        self.penalize_bias = penalize_bias
        self.layers = layers
        self.splits = [Split(key, tensor, self._threshold(tensor)) for key, tensor in tensors]

    def _threshold(self, tensor: torch.Tensor) -> torch.Tensor:
        value = layer_tools.compute_dtype(tensor.detach())
        return self.penalty.prox(value, step=1.0 / self.beta).to(tensor.dtype)

    def _learning_rates(self) -> dict[int, float]:
        return {id(p): float(group["lr"]) for group in self.optimizer.param_groups
                for p in group["params"]}

    def step(self, closure=None):
        """Algorithm 1's iteration (class docstring); returns the closure's loss.

        All or nothing (module docstring): on failure the parameters, the optimizer's state and
        ``u`` are as before the step.
        """
        with torch.no_grad():
            couplings = [split.parameter - split.u for split in self.splits]
        thresholds = []

        def commit():
            rates = self._learning_rates()
            with torch.no_grad():
                for split, coupling in zip(self.splits, couplings):
                    split.parameter.sub_(coupling, alpha=rates[id(split.parameter)] * self.beta)
            layer_tools.check_finite("the coupling step", [(s.name, s.parameter) for s in self.splits])
            thresholds.extend(self._threshold(split.parameter) for split in self.splits)
            layer_tools.check_finite("the threshold", [
                (split.name, u) for split, u in zip(self.splits, thresholds)])

        loss = self._guarded_step(closure, commit)
        for split, u in zip(self.splits, thresholds):
            split.u = u
        return loss

    def refresh(self) -> None:
        """Recompute ``u = prox(w)`` from the current weights (after changing them outside ``step``)."""
        for split in self.splits:
            split.u = self._threshold(split.parameter)

    def load_state_dict(self, state_dict: dict) -> None:
        """Load the wrapped optimizer's state dict, then :meth:`refresh` ``u``."""
        self.optimizer.load_state_dict(state_dict)
        self.refresh()

    @property
    def sparsity(self) -> float:
        """Fraction of exact zeros in ``u`` over all split tensors."""
        size = sum(split.u.numel() for split in self.splits)
        zeros = sum(int((split.u == 0).sum()) for split in self.splits)
        return zeros / size if size else float("nan")

    def sparse_state_dict(self) -> dict[str, torch.Tensor]:
        """The sparse network: ``{"<layer>.weight": u, "<layer>.bias": b}`` (detached copies).

        The bias is ``u`` of the bias with ``penalize_bias``, else the trained bias. Keys follow the
        names of ``modules``; with a model they load by ``model.load_state_dict(sd, strict=False)``.
        """
        state = {split.name: split.u.clone() for split in self.splits}
        for name, module in self.layers:
            bias_name = adapter_for(module).bias_name
            key = f"{name}.{bias_name}" if name else bias_name
            bias = layer_tools.tensors(module)[1]
            if bias is not None and key not in state:
                state[key] = bias.detach().clone()
        return state

    @contextlib.contextmanager
    def sparse_weights(self):
        """Context in which the layers compute with ``u`` (to evaluate it); ``w`` is put back after.

        Do not step the optimizer inside the context.
        """
        saved = [split.parameter.detach().clone() for split in self.splits]
        try:
            with torch.no_grad():
                for split in self.splits:
                    split.parameter.copy_(split.u)
            yield self
        finally:
            with torch.no_grad():
                for split, weights in zip(self.splits, saved):
                    split.parameter.copy_(weights)

    def apply_to_model(self) -> None:
        """Write ``u`` into the layers, with its zeros registered as pruning masks (ends training).

        The values are copied into the existing parameters and each weight's zero pattern is
        registered with ``torch.nn.utils.prune.custom_from_mask``, exactly as
        :func:`convexnet.nn.trim` writes (see :mod:`convexnet.nn.write`): ``prune.is_pruned``
        holds, fine-tuning keeps the zeros, ``prune.remove`` makes them permanent. All layers are
        written or none. With ``penalize_bias`` the bias gets ``u``'s values (its zeros are not
        masked). Afterwards ``w = u``.
        """
        state = self.sparse_state_dict()
        updates = []
        for name, module in self.layers:
            prefix = f"{name}." if name else ""
            layer = adapter_for(module)
            weight = state[prefix + layer.weight_name]
            updates.append(LayerUpdate(weight, (weight != 0).to(weight.dtype),
                                       state.get(prefix + layer.bias_name)))
        write_all([module for _, module in self.layers], updates)

    def __repr__(self) -> str:
        return (f"RVSM({type(self.optimizer).__name__}, {len(self.layers)} layers, {self.penalty!r}, "
                f"beta={self.beta}, penalize_bias={self.penalize_bias})")
