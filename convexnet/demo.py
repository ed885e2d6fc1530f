"""``convexnet demo``: paper 004's Figure 1 on two nested spirals.

Trains a 2-200-200-2 ReLU network on 200 points of two nested spirals, prunes it with cascade
Net-Trim, prints a table (links per layer before and after, percent pruned, discrepancy against its
bound, training accuracy, agreement of predictions on a dense grid) and saves a PNG with the decision
regions and the hidden-to-hidden weight matrix before and after (Figure 1 (a), (b), (d)).
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from . import backends
from ._atomic import atomic_write
from .network import check_trim_options, forward, trim_network

__all__ = ["spirals", "train_spirals_network", "run_demo", "DemoReport"]


def spirals(n_points: int = 200, *, noise: float = 0.02, turns: float = 1.75,
            seed: int = 0) -> tuple[np.ndarray, np.ndarray]:
    """Two nested spirals in the plane.

    Returns
    -------
    X : ndarray, shape (n_points, 2)
        Points with radius in (0.1, 1].
    labels : ndarray of int, shape (n_points,)
        0 for one arm, 1 for the other (the first arm rotated by pi).
    """
    rng = np.random.default_rng(seed)
    half = n_points // 2
    t = np.sqrt(rng.uniform(0.02, 1.0, size=half))
    angle = 2 * np.pi * turns * t
    arm = np.stack([t * np.cos(angle), t * np.sin(angle)], axis=1)
    X = np.concatenate([arm, -arm]) + noise * rng.standard_normal((2 * half, 2))
    labels = np.concatenate([np.zeros(half, dtype=int), np.ones(half, dtype=int)])
    return X, labels


def train_spirals_network(X, labels, *, hidden: int = 200, steps: int = 2500, seed: int = 0,
                          log=None):
    """Train a 2-hidden-layer ReLU classifier with Adam, full batch, in float64.

    Returns
    -------
    weights : list of ndarray
        ``[(2, h), (h, h), (h, 2)]`` in the design orientation ``(N_in, N_out)``.
    biases : list of ndarray
    """
    import torch

    torch.manual_seed(seed)
    model = torch.nn.Sequential(
        torch.nn.Linear(X.shape[1], hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, hidden), torch.nn.ReLU(),
        torch.nn.Linear(hidden, 2)).double()
    inputs = torch.as_tensor(X)
    targets = torch.as_tensor(labels)
    optimizer = torch.optim.Adam(model.parameters(), lr=3e-3)
    for step in range(steps):
        optimizer.zero_grad()
        loss = torch.nn.functional.cross_entropy(model(inputs), targets)
        loss.backward()
        optimizer.step()
        if log is not None and (step + 1) % 500 == 0:
            log(f"  step {step + 1}/{steps}  loss {loss.item():.4f}")
    linears = [module for module in model if isinstance(module, torch.nn.Linear)]
    weights = [m.weight.detach().numpy().T.copy() for m in linears]
    biases = [m.bias.detach().numpy().copy() for m in linears]
    return weights, biases


def _predict(weights, biases, X) -> np.ndarray:
    return np.argmax(forward(weights, biases, X)[-1], axis=1)


@dataclass
class DemoReport:
    """What the demo measured (also returned for tests and notebooks)."""

    links_before: list
    links_after: list
    discrepancy: np.ndarray
    bound: np.ndarray
    accuracy_before: float
    accuracy_after: float
    grid_agreement: float
    hidden_pruned: float
    trim_time: float
    statuses: list
    figure: str | None

    def table(self) -> str:
        rows = [f"{'layer':<18}{'links before':>13}{'links after':>12}{'pruned':>9}"
                f"{'discrepancy':>13}{'bound':>10}  status"]
        names = ["input -> hidden1", "hidden1 -> hidden2", "hidden2 -> output"]
        for i, name in enumerate(names):
            pruned = 100 * (1 - self.links_after[i] / self.links_before[i])
            rows.append(f"{name:<18}{self.links_before[i]:>13}{self.links_after[i]:>12}"
                        f"{pruned:>8.1f}%{self.discrepancy[i]:>13.4f}{self.bound[i]:>10.4f}"
                        f"  {self.statuses[i]}")
        rows += ["",
                 f"training accuracy     before {100 * self.accuracy_before:.1f}%   "
                 f"after {100 * self.accuracy_after:.1f}%",
                 f"grid agreement        {100 * self.grid_agreement:.2f}% of a 250 x 250 grid "
                 "predicted alike",
                 f"hidden-to-hidden      {100 * self.hidden_pruned:.1f}% of links pruned "
                 "(paper 004, Figure 1: more than 93%)",
                 f"Net-Trim time         {self.trim_time:.1f} s"]
        return "\n".join(rows)


def run_demo(*, out: str | None = "convexnet_demo.png", rel_epsilon: float = 0.03,
             gamma: float = 1.05, backend: str = "auto", seed: int = 0, steps: int = 2500,
             hidden: int = 200, split_budget: bool = True, stream=sys.stderr) -> DemoReport:
    """Train, trim in cascade mode, report, and save the figure (``out=None`` skips it).

    ``hidden`` is the width of both hidden layers (the paper's 200; smaller for a quick look).
    ``split_budget`` gives each layer's budget to its columns in shares whose squares add up to
    ``epsilon_l^2`` (so Proposition 1 and Theorem 2 hold as for the coupled program): 200 small
    column programs solve in seconds, where the coupled 200 x 200 program takes minutes on Clarabel.
    """

    def log(message):
        if stream is not None:
            print(message, file=stream, flush=True)

    # Bad options fail here, before the training they would otherwise waste.
    check_trim_options(epsilon=None, rel_epsilon=rel_epsilon, lam=None, mode="cascade", gamma=gamma)
    backends.get(backend)
    X, labels = spirals(seed=seed)
    log(f"[1/3] training a 2-{hidden}-{hidden}-2 ReLU network on {len(X)} spiral points")
    weights, biases = train_spirals_network(X, labels, hidden=hidden, steps=steps, seed=seed,
                                            log=log)

    log(f"[2/3] cascade Net-Trim (rel_epsilon={rel_epsilon}, gamma={gamma}, backend={backend!r}, "
        f"{'per-column' if split_budget else 'one'} budget)")
    start = time.perf_counter()
    net = trim_network(weights, X, rel_epsilon=rel_epsilon, mode="cascade", gamma=gamma,
                       biases=biases, backend=backend, split_budget=split_budget,
                       progress=lambda i, n, layer: log(
                           f"  layer {i + 1}/{n}: {100 * layer.sparsity:.1f}% pruned, "
                           f"{layer.status}, {layer.wall_time:.2f} s ({layer.backend})"))
    trim_time = time.perf_counter() - start

    grid = np.stack(np.meshgrid(np.linspace(-1.2, 1.2, 250), np.linspace(-1.2, 1.2, 250)),
                    axis=-1).reshape(-1, 2)
    before, after = _predict(weights, biases, grid), _predict(net.weights, net.biases, grid)
    report = DemoReport(
        links_before=[int(np.count_nonzero(W)) for W in weights],
        links_after=[int(np.count_nonzero(W)) for W in net.weights],
        discrepancy=net.discrepancy, bound=net.bound,
        accuracy_before=float(np.mean(_predict(weights, biases, X) == labels)),
        accuracy_after=float(np.mean(_predict(net.weights, net.biases, X) == labels)),
        grid_agreement=float(np.mean(before == after)),
        hidden_pruned=float(np.mean(net.weights[1] == 0)),
        trim_time=trim_time, statuses=[layer.status for layer in net.layers], figure=None)
    if out is not None:
        log(f"[3/3] saving the figure to {out}")
        _figure(out, X, labels, grid, before, after, weights[1], net.weights[1], report)
        report.figure = out
    return report


def _figure(path, X, labels, grid, before, after, hidden_before, hidden_after, report) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    side = int(np.sqrt(len(grid)))
    fig, axes = plt.subplots(1, 4, figsize=(18, 5))
    for ax, pred, title in ((axes[0], before, "(a) trained network"),
                            (axes[3], after, "(d) after Net-Trim")):
        ax.contourf(grid[:, 0].reshape(side, side), grid[:, 1].reshape(side, side),
                    pred.reshape(side, side), levels=[-0.5, 0.5, 1.5], colors=["#c6dbef", "#fdd0a2"])
        ax.scatter(X[:, 0], X[:, 1], c=np.where(labels == 0, "#08519c", "#a63603"), s=8)
        ax.set_title(title)
        ax.set_aspect("equal")
    scale = np.abs(hidden_before).max()
    for ax, W, title in ((axes[1], hidden_before, "(b) hidden-to-hidden weights, trained"),
                         (axes[2], hidden_after,
                          f"(c) after Net-Trim: {100 * report.hidden_pruned:.1f}% pruned")):
        ax.imshow(W.T, cmap="RdBu_r", vmin=-scale, vmax=scale, interpolation="nearest")
        ax.set_title(title)
        ax.set_xlabel("hidden layer 1")
        ax.set_ylabel("hidden layer 2")
    fig.suptitle(f"convexnet demo: cascade Net-Trim, grid agreement "
                 f"{100 * report.grid_agreement:.1f}%")
    fig.tight_layout()
    # Written atomically, in the format of the suffix (matplotlib's default format, whose suffix it
    # then appends, when there is none).
    path = str(path)
    image_format = Path(path).suffix[1:] or matplotlib.rcParams["savefig.format"]
    if not Path(path).suffix:
        path = f"{path}.{image_format}"
    with atomic_write(path) as handle:
        fig.savefig(handle, dpi=90, format=image_format)
    plt.close(fig)
