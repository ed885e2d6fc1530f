"""What :func:`convexnet.nn.trim` returns: a :class:`TrimReport` of :class:`LayerReport` rows."""

from __future__ import annotations

from dataclasses import dataclass, field

from .. import backends

__all__ = ["LayerReport", "TrimReport"]


@dataclass
class LayerReport:
    """One trimmed layer.

    Attributes
    ----------
    name : str
        The module's name in ``model.named_modules()``.
    kind : str
        The module's type: ``"Linear"``, ``"Conv1d"``, ``"Conv2d"`` or ``"Conv3d"``.
    weight_shape : tuple of int
        The module's weight shape (torch layout).
    relu : bool
        Whether it was trimmed as a ReLU layer.
    samples : int
        Rows of the layer's programs (calibration samples, times patch positions for a
        convolution), after the ``max_samples`` cap.
    results : list of NetTrimResult or ProgramResult
        One per group (one for a Linear layer or a convolution with ``groups=1``).
    epsilon : float
        The layer's budget, ``sqrt(sum over groups of epsilon_g^2)``; NaN for the regularized form.
    discrepancy : float
        Measured ``||Yhat_l - Y_l||_F`` on the kept rows: the layer's output (after its ReLU for a
        ReLU layer) in the trimmed model against the original model.
    bound : float
        Theorem 1 (parallel) or Theorem 2 (cascade) bound on ``discrepancy`` in the form of
        :func:`convexnet.trim_network`: ``epsilon`` for the first layer, and chained from the
        previous layer when this layer's input is exactly that layer's output (Linear layers, as in
        an ``nn.Sequential`` of Linear and ReLU). NaN where no theorem applies (a convolution after
        the first layer, anything between two layers, the regularized form, a layer written unfinished
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
    block : int or None
        The repeated block holding the layer, when the model was calibrated block by block.

    For a target (``sparsity=``, ``pattern=``) or :func:`~convexnet.nn.refit`, ``results`` hold one
    :class:`~convexnet.ProgramResult` per group (the certified refit), ``epsilon`` and ``bound``
    are NaN and ``discrepancy`` is the refit's residual ``||X (W - W0)||_F`` on the layer's input.
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
    block: int | None = None

    @property
    def result(self):
        """The layer's first result (the only one unless the layer is a grouped convolution)."""
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
            reason = why if why.startswith("outside") or "units" in self.info else \
                f"shares a parameter with another module ({why})"
            rows.append(f"skipped {name!r}: {reason}")
        return "\n".join(rows)

    def __str__(self) -> str:
        return self.table()
