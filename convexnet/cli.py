"""The ``convexnet`` command.

Subcommands:

* ``convexnet demo``: paper 004's Figure 1 on nested spirals (:mod:`convexnet.demo`).
* ``convexnet prune``: Net-Trim on a saved torch model (:func:`convexnet.nn.trim`; file formats in
  :mod:`convexnet._torch_io`).
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConvexnetError, InvalidInputError

__all__ = ["main", "build_parser"]


def _demo(args) -> int:
    from .demo import run_demo

    report = run_demo(out=args.out, rel_epsilon=args.rel_epsilon, gamma=args.gamma,
                      backend=args.backend, seed=args.seed, steps=args.steps)
    print(report.table())
    if report.figure:
        print(f"\nfigure saved to {report.figure}")
    return 0


def _progress_printer():
    """Per-layer progress on stderr: a tqdm bar when tqdm is installed, plain lines otherwise."""
    try:
        from tqdm import tqdm
    except ImportError:
        tqdm = None
    state = {}

    def progress(index, n_layers, layer):
        line = (f"{layer.name} ({layer.kind} {'x'.join(map(str, layer.weight_shape))}): "
                f"{100 * layer.sparsity:.1f}% pruned, {layer.status}, {layer.time:.1f} s")
        if tqdm is None:
            print(f"[{index + 1}/{n_layers}] {line}", file=sys.stderr, flush=True)
            return
        if "bar" not in state:
            state["bar"] = tqdm(total=n_layers, desc="layers", unit="layer", file=sys.stderr)
        state["bar"].set_postfix_str(line)
        state["bar"].update(1)
        if index + 1 == n_layers:
            state["bar"].close()

    return progress


def _names(text):
    return None if text is None else [name for name in text.split(",") if name]


def _prune(args) -> int:
    import torch

    from . import _torch_io
    from .nn import trim

    _torch_io.check_paths(args.model, args.calibration, args.out)
    loaded = _torch_io.load_model(args.model, args.arch)
    inputs = _torch_io.load_calibration(args.calibration)
    if args.device is not None:
        try:
            loaded.model.to(torch.device(args.device))
        except (RuntimeError, AssertionError) as exc:
            raise InvalidInputError(f"--device {args.device!r} cannot be used ({exc}).") from None
    relu = None if args.relu is None else set(_names(args.relu))
    report = trim(loaded.model, inputs, layers=_names(args.layers), epsilon=args.epsilon,
                  rel_epsilon=args.rel_epsilon, lam=args.lam, mode=args.mode, gamma=args.gamma,
                  backend=args.backend, device=args.device, relu=relu,
                  max_samples=args.max_samples or None, seed=args.seed,
                  batch_size=args.batch_size, split_budget=args.split_budget,
                  progress=_progress_printer())
    _torch_io.save_model(loaded, args.out, keep_masks=args.keep_masks)
    print(report.table())
    print(f"\npruned model saved to {args.out}" + (" (with masks)" if args.keep_masks else ""))
    return 0


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convexnet", description="Convex sparsification of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="Net-Trim on nested spirals (paper 004, Figure 1)")
    demo.add_argument("--out", default="convexnet_demo.png",
                      help="where to save the figure (default: %(default)s)")
    demo.add_argument("--rel-epsilon", type=float, default=0.02,
                      help="first layer's budget relative to ||Y_1||_F (default: %(default)s)")
    demo.add_argument("--gamma", type=float, default=1.5,
                      help="cascade inflation rate (default: %(default)s)")
    demo.add_argument("--backend", default="auto", help="solver backend (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=2500, help="training steps")
    demo.set_defaults(handler=_demo)

    prune = commands.add_parser(
        "prune", help="Net-Trim a saved torch model (paper 004)",
        description="Prune the Linear and Conv2d layers of a saved torch model with Net-Trim on "
                    "calibration inputs, print a per-layer report and save the pruned model in "
                    "the input's format.",
        epilog="MODEL: a whole module saved with torch.save(model), loaded with "
               "weights_only=False (it runs code from the file: trusted files only), or a state "
               "dict (.pt or .safetensors) with --arch. DATA: one tensor in .npy, .safetensors or "
               "a torch file. OUT: MODEL's format; pruning made permanent unless --keep-masks.")
    prune.add_argument("model", metavar="MODEL", help="the trained model (see below)")
    prune.add_argument("--calibration", required=True, metavar="DATA",
                       help="calibration inputs: one tensor (.npy, .safetensors or torch file)")
    prune.add_argument("--out", required=True, metavar="OUT", help="where to save the pruned model")
    budget = prune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--rel-epsilon", type=float,
                        help="budget relative to each layer's ||Y_l||_F (first layer in cascade)")
    budget.add_argument("--epsilon", type=float, help="absolute budget")
    budget.add_argument("--lam", type=float, help="regularized form with this weight")
    prune.add_argument("--mode", choices=["cascade", "parallel"], default="cascade",
                       help="default: %(default)s")
    prune.add_argument("--gamma", type=float, default=1.0,
                       help="cascade inflation rate, >= 1 (default: %(default)s)")
    prune.add_argument("--backend", default="auto", help="solver backend (default: %(default)s)")
    prune.add_argument("--arch", metavar="MODULE:CALLABLE",
                       help="builds the architecture when MODEL is a state dict")
    prune.add_argument("--layers", metavar="NAMES",
                       help="comma-separated module names to trim (default: every Linear/Conv2d)")
    prune.add_argument("--relu", metavar="NAMES",
                       help="comma-separated names of the layers followed by a ReLU (default: "
                            "detected in nn.Sequential)")
    prune.add_argument("--max-samples", type=int, default=10_000,
                       help="cap on rows per layer, seeded subset above it; 0: no cap "
                            "(default: %(default)s)")
    prune.add_argument("--seed", type=int, default=0)
    prune.add_argument("--batch-size", type=int, default=256,
                       help="calibration samples per forward pass (default: %(default)s)")
    prune.add_argument("--device", help="run the model (and the admm backend) here, e.g. cuda")
    prune.add_argument("--split-budget", action="store_true",
                       help="per-column budgets (columns solved independently)")
    prune.add_argument("--keep-masks", action="store_true",
                       help="save weight_orig/weight_mask instead of making the pruning permanent")
    prune.set_defaults(handler=_prune)
    return parser


def main(argv=None) -> int:
    """Entry point of the console script; bad input is reported as one line, exit status 2."""
    args = build_parser().parse_args(argv)
    try:
        return args.handler(args)
    except ConvexnetError as exc:
        print(f"convexnet {args.command}: error: {exc}", file=sys.stderr)
        return 2


if __name__ == "__main__":
    sys.exit(main())
