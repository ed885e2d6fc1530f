"""Paper 004's Table 1 on scikit-learn's digits: Net-Trim against magnitude pruning at equal sparsity.

A 64-300-300-10 ReLU network (the paper's NN2 shape on 8x8 inputs) is trained on two thirds of
``sklearn.datasets.load_digits`` (seeded; no download). Then, for a low and a high budget:

* Net-Trim (:func:`convexnet.nn.trim`, on the training inputs as calibration data);
* magnitude pruning, ``torch.nn.utils.prune.l1_unstructured`` with, per layer, exactly as many
  weights removed as Net-Trim removed (the paper's HPTD baseline without its iterations);
* both again after the same short fine-tuning, which keeps the masks (the pruning hooks hold the
  zeros).

It prints the rows of Table 1 (accuracy before, total pruning, overall discrepancy, test accuracy
of each method without and with fine-tuning), the per-layer reports, and saves a picture of the
first layer's weights like the paper's Figure 3.

    python benchmarks/digits_table1.py [--backend auto] [--mode parallel] [--low 0.01] [--high 0.05]
"""

from __future__ import annotations

import argparse
import copy
import platform
import time

import numpy as np
import torch
from torch.nn.utils import prune

import convexnet.nn as cnn


def load_data(seed: int):
    from sklearn.datasets import load_digits
    from sklearn.model_selection import train_test_split

    digits = load_digits()
    X = (digits.data / 16.0).astype(np.float32)          # pixels in [0, 1]
    return train_test_split(X, digits.target, test_size=1 / 3, random_state=seed,
                            stratify=digits.target)


def upscaled_digits(seed: int, calibration: int = 4000):
    """The digits upscaled to 28 x 28 (bilinear), the training split grown to ``calibration`` images
    by random shifts of up to 2 pixels (the originals first): ``(X_train, X_test, y_train, y_test)``,
    784 float32 pixels per row."""
    X_train, X_test, y_train, y_test = load_data(seed)

    def upscale(X):
        images = torch.as_tensor(X).reshape(-1, 1, 8, 8)
        return torch.nn.functional.interpolate(images, size=(28, 28), mode="bilinear",
                                               align_corners=False)

    train_images, test_images = upscale(X_train), upscale(X_test)
    rng = np.random.default_rng(seed)
    extra = max(calibration - len(X_train), 0)
    picks = rng.integers(0, len(X_train), size=extra)
    shifts = rng.integers(-2, 3, size=(extra, 2))
    shifted = [torch.roll(train_images[i], shifts=(int(dy), int(dx)), dims=(1, 2))
               for i, (dy, dx) in zip(picks, shifts)]
    if shifted:
        train_images = torch.cat([train_images, torch.stack(shifted)])
    labels = np.concatenate([y_train, y_train[picks]])
    return (train_images.reshape(len(train_images), -1).numpy(),
            test_images.reshape(len(test_images), -1).numpy(), labels, y_test)


def network784() -> torch.nn.Sequential:
    """Paper 004's NN2 shape on 28 x 28 inputs: 784-300-300-10."""
    return torch.nn.Sequential(torch.nn.Linear(784, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 10))


def network() -> torch.nn.Sequential:
    return torch.nn.Sequential(torch.nn.Linear(64, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 300), torch.nn.ReLU(),
                               torch.nn.Linear(300, 10))


def train(model, X, y, *, epochs: int, lr: float, seed: int) -> None:
    """Adam on minibatches of 64, seeded; masks registered by pruning stay in force."""
    generator = torch.Generator().manual_seed(seed)
    inputs, labels = torch.as_tensor(X), torch.as_tensor(y)
    optimizer = torch.optim.Adam(model.parameters(), lr=lr)
    model.train()
    for _ in range(epochs):
        order = torch.randperm(len(inputs), generator=generator)
        for start in range(0, len(inputs), 64):
            batch = order[start:start + 64]
            optimizer.zero_grad()
            torch.nn.functional.cross_entropy(model(inputs[batch]), labels[batch]).backward()
            optimizer.step()
    model.eval()


def accuracy(model, X, y) -> float:
    with torch.no_grad():
        return 100.0 * float((model(torch.as_tensor(X)).argmax(1).numpy() == y).mean())


def discrepancy(model, original, X) -> float:
    """Overall discrepancy in percent: ``||f_pruned(X) - f(X)||_F / ||f(X)||_F`` on the outputs."""
    with torch.no_grad():
        reference = original(torch.as_tensor(X))
        return 100.0 * float(torch.linalg.norm(model(torch.as_tensor(X)) - reference)
                             / torch.linalg.norm(reference))


def linears(model):
    return [module for module in model if isinstance(module, torch.nn.Linear)]


def magnitude_pruned(original, zeros_per_layer):
    """``l1_unstructured`` removing ``zeros_per_layer[l]`` weights of layer ``l`` (biases kept)."""
    model = copy.deepcopy(original)
    for module, amount in zip(linears(model), zeros_per_layer):
        prune.l1_unstructured(module, "weight", amount=int(amount))
    return model


def run_setting(original, data, rel_epsilon, args):
    X_train, X_test, y_train, y_test = data
    trimmed = copy.deepcopy(original)
    start = time.perf_counter()
    report = cnn.trim(trimmed, torch.as_tensor(X_train), rel_epsilon=rel_epsilon, mode=args.mode,
                      gamma=args.gamma, backend=args.backend, split_budget=args.split_budget,
                      max_samples=args.calibration, certify=args.certify,
                      allow_inaccurate=args.allow_inaccurate)
    trim_time = time.perf_counter() - start
    zeros = [layer.size - layer.nonzeros for layer in report]
    magnitude = magnitude_pruned(original, zeros)
    row = {
        "rel_epsilon": rel_epsilon,
        "pruning": 100.0 * report.sparsity,
        "layer_pruning": [100.0 * layer.sparsity for layer in report],
        "disc_train": discrepancy(trimmed, original, X_train),
        "disc_test": discrepancy(trimmed, original, X_test),
        "disc_magnitude": discrepancy(magnitude, original, X_train),
        "nt": accuracy(trimmed, X_test, y_test),
        "magnitude": accuracy(magnitude, X_test, y_test),
        "trim_time": trim_time,
        "report": report,
        "models": (copy.deepcopy(trimmed), copy.deepcopy(magnitude)),
    }
    for name, model in (("nt_ft", trimmed), ("magnitude_ft", magnitude)):
        train(model, X_train, y_train, epochs=args.finetune_epochs, lr=args.finetune_lr,
              seed=args.seed + 1)
        row[name] = accuracy(model, X_test, y_test)
    row["masks_kept"] = all(torch.all(m.weight[m.weight_mask == 0] == 0)
                            for model in (trimmed, magnitude) for m in linears(model))
    return row


def table(initial, rows) -> str:
    header = f"{'':<28}" + "".join(f"{'rel_eps ' + format(r['rel_epsilon'], 'g'):>16}" for r in rows)
    lines = [header]

    def line(label, key, fmt="{:.2f}"):
        lines.append(f"{label:<28}" + "".join(f"{fmt.format(r[key]):>16}" for r in rows))

    lines.append(f"{'Init. model acc. (%)':<28}" + "".join(f"{initial:>16.2f}" for _ in rows))
    line("Total pruning (%)", "pruning")
    line("NT overall disc. (%)", "disc_train")
    line("NT no FT acc. (%)", "nt")
    line("Magnitude no FT acc. (%)", "magnitude")
    line("NT + FT acc. (%)", "nt_ft")
    line("Magnitude + FT acc. (%)", "magnitude_ft")
    line("  NT disc. on test (%)", "disc_test")
    line("  Magnitude disc. (%)", "disc_magnitude")
    lines.append(f"{'  pruning per layer (%)':<28}" + "".join(
        f"{'/'.join(f'{p:.0f}' for p in r['layer_pruning']):>16}" for r in rows))
    line("  Net-Trim time (s)", "trim_time", "{:.1f}")
    return "\n".join(lines)


def save_figure(path, rows) -> None:
    """Figure 3 on digits: the first layer's weights after Net-Trim and after magnitude pruning."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    row = rows[-1]
    figure, axes = plt.subplots(2, 2, figsize=(10, 6.6),
                                gridspec_kw={"width_ratios": [4.2, 1], "hspace": 0.4})
    for index, (label, model) in enumerate(zip(("Net-Trim", "magnitude pruning"), row["models"])):
        W = linears(model)[0].weight.detach().numpy()          # (300, 64): units x pixels
        axes[index, 0].imshow(np.abs(W).T, aspect="auto", cmap="Greys", interpolation="nearest")
        axes[index, 0].set_title(f"({'ab'[index]}) {label}: |W1| (pixels x hidden units), "
                                 f"{100 * np.mean(W == 0):.0f}% zero")
        axes[index, 0].set_ylabel("input pixel (row-major 8x8)")
        used = (W != 0).sum(axis=0).reshape(8, 8)
        image = axes[index, 1].imshow(used, cmap="viridis", vmin=0, vmax=W.shape[0])
        axes[index, 1].set_title("links per pixel")
        axes[index, 1].set_xticks([])
        axes[index, 1].set_yticks([])
    axes[1, 0].set_xlabel("hidden unit")
    figure.colorbar(image, ax=axes[:, 1], shrink=0.8)
    figure.suptitle(f"digits 64-300-300-10, first layer, rel_epsilon = {row['rel_epsilon']:g} "
                    "(paper 004, Figure 3)")
    figure.savefig(path, dpi=110, bbox_inches="tight")
    plt.close(figure)


def main(argv=None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--backend", default="auto")
    parser.add_argument("--mode", default="parallel", choices=["cascade", "parallel"])
    parser.add_argument("--gamma", type=float, default=1.0)
    parser.add_argument("--low", type=float, default=0.01, help="low rel_epsilon")
    parser.add_argument("--high", type=float, default=0.05, help="high rel_epsilon")
    parser.add_argument("--split-budget", action="store_true",
                        help="per-column budgets (columns solved independently)")
    parser.add_argument("--allow-inaccurate", action="store_true",
                        help="keep layers ADMM leaves at max_iterations (marked in the table)")
    parser.add_argument("--certify", action="store_true",
                        help="attach duality-gap certificates (slow on 300x300 layers)")
    parser.add_argument("--calibration", type=int, default=None,
                        help="cap on calibration samples (default: the whole training split)")
    parser.add_argument("--epochs", type=int, default=60)
    parser.add_argument("--finetune-epochs", type=int, default=10)
    parser.add_argument("--finetune-lr", type=float, default=1e-4)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (1 avoids oversubscription on a small shared box)")
    parser.add_argument("--figure", default="docs/img/digits_first_layer.png")
    parser.add_argument("--inputs", type=int, choices=(64, 784), default=64,
                        help="784: the digits upscaled to 28 x 28 and a 784-300-300-10 network, the "
                             "training split grown by shifts to --calibration images (default 4000)")
    args = parser.parse_args(argv)

    torch.set_num_threads(args.threads)
    torch.manual_seed(args.seed)
    if args.inputs == 784:
        args.calibration = args.calibration or 4000
        data = upscaled_digits(args.seed, args.calibration)
        original = network784()
    else:
        data = load_data(args.seed)
        original = network()
    X_train, X_test, y_train, y_test = data
    start = time.perf_counter()
    train(original, X_train, y_train, epochs=args.epochs, lr=1e-3, seed=args.seed)
    initial = accuracy(original, X_test, y_test)
    print(f"digits: {len(X_train)} training / {len(X_test)} test samples; {args.inputs}-300-300-10 "
          f"trained in {time.perf_counter() - start:.1f} s, test accuracy {initial:.2f}%")
    print(f"Net-Trim: mode={args.mode}, gamma={args.gamma}, backend={args.backend}, "
          f"split_budget={args.split_budget}, calibration = the training inputs; "
          f"fine-tuning: {args.finetune_epochs} epochs of Adam at lr {args.finetune_lr}, masks kept")
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch thread(s), "
          f"torch {torch.__version__}\n")

    rows = []
    for rel_epsilon in (args.low, args.high):
        row = run_setting(original, data, rel_epsilon, args)
        print(f"rel_epsilon = {rel_epsilon:g}:\n{row['report'].table()}\n")
        rows.append(row)
    print(table(initial, rows))
    print("\nmasks kept through fine-tuning:", all(row["masks_kept"] for row in rows))
    print("every layer certified:", all(layer.certificate == "ok" for row in rows for layer in row["report"]))
    if args.figure and args.inputs == 64:
        save_figure(args.figure, rows)
        print(f"figure saved to {args.figure}")


if __name__ == "__main__":
    main()
