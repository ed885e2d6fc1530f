"""The ``convexnet`` command.

Subcommands:

* ``convexnet demo``: paper 004's Figure 1 on nested spirals (:mod:`convexnet.demo`).
* ``convexnet prune``: Net-Trim on a saved torch model (:func:`convexnet.nn.trim`; file formats in
  :mod:`convexnet._torch_io`); ``--save-results DIR`` keeps every layer program and solution.
* ``convexnet certify``: duality-gap certificates of saved results (``NetTrimResult.save`` files, or
  the directory ``prune --save-results`` wrote), checked independently of the solver.
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConvexnetError, InvalidInputError

__all__ = ["main", "build_parser"]


def _demo(args) -> int:
    from .demo import run_demo

    report = run_demo(out=args.out, rel_epsilon=args.rel_epsilon, gamma=args.gamma,
                      backend=args.backend, seed=args.seed, steps=args.steps, hidden=args.hidden)
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
    if args.save_results is not None:
        _save_results(report, args.save_results)
    print(report.table())
    print(f"\npruned model saved to {args.out}" + (" (with masks)" if args.keep_masks else ""))
    return 0


def _save_results(report, directory) -> None:
    from pathlib import Path

    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    for layer in report.layers:
        for group, result in enumerate(layer.results):
            suffix = "" if len(layer.results) == 1 else f".group{group}"
            result.save(folder / f"{layer.name or 'model'}{suffix}.npz")
    print(f"layer programs and solutions saved to {folder}/ (check them: convexnet certify "
          f"{folder})", file=sys.stderr)


def _result_files(paths) -> list:
    from pathlib import Path

    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise InvalidInputError(f"{path} holds no .npz result files.")
            files += found
        elif path.is_file():
            files.append(path)
        else:
            raise InvalidInputError(f"{path} does not exist; give .npz files written by "
                                    "NetTrimResult.save or a directory of them.")
    return files


def _certify(args) -> int:
    import numpy as np

    from .certificates import verify

    rows = [f"{'result':<32}{'ok':>4}{'gap':>12}{'relative gap':>14}{'violation':>11}"]
    all_ok = True
    for path in _result_files(args.paths):
        try:
            with np.load(path, allow_pickle=False) as saved:
                report = verify(dict(saved), gap_tol=args.gap_tol, feas_tol=args.feas_tol)
        except (OSError, ValueError) as exc:
            if isinstance(exc, ConvexnetError):
                raise
            raise InvalidInputError(f"{path} is not a saved result ({exc}).") from None
        all_ok &= report.ok
        rows.append(f"{path.stem:<32}{'yes' if report.ok else 'NO':>4}{report.gap:>12.3e}"
                    f"{report.relative_gap:>14.3e}{report.primal_violation:>11.2e}")
    print("\n".join(rows))
    print("\nall certified" if all_ok else
          f"\nnot certified at gap_tol={args.gap_tol}, feas_tol={args.feas_tol}")
    return 0 if all_ok else 1


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="convexnet", description="Convex sparsification of neural networks.")
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    demo = commands.add_parser("demo", help="Net-Trim on nested spirals (paper 004, Figure 1)")
    demo.add_argument("--out", default="convexnet_demo.png",
                      help="where to save the figure (default: %(default)s)")
    demo.add_argument("--rel-epsilon", type=float, default=0.03,
                      help="first layer's budget relative to ||Y_1||_F (default: %(default)s)")
    demo.add_argument("--gamma", type=float, default=1.05,
                      help="cascade inflation rate (default: %(default)s)")
    demo.add_argument("--backend", default="auto", help="solver backend (default: %(default)s)")
    demo.add_argument("--seed", type=int, default=0)
    demo.add_argument("--steps", type=int, default=2500, help="training steps")
    demo.add_argument("--hidden", type=int, default=200,
                      help="width of both hidden layers (default: the paper's %(default)s)")
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
    prune.add_argument("--save-results", metavar="DIR",
                       help="also save every layer's program and solution here (for certify)")
    prune.set_defaults(handler=_prune)

    certify = commands.add_parser(
        "certify", help="check saved results by their duality-gap certificates",
        description="Recompute the duality-gap certificate of saved Net-Trim results (numpy only, "
                    "independent of the solver that produced them). Exit status 0 when every "
                    "result is certified, 1 when one is not, 2 on bad input.")
    certify.add_argument("paths", nargs="+", metavar="PATH",
                         help=".npz files from NetTrimResult.save, or directories of them "
                              "(prune --save-results)")
    certify.add_argument("--gap-tol", type=float, default=1e-6,
                         help="relative duality gap accepted (default: %(default)s)")
    certify.add_argument("--feas-tol", type=float, default=1e-6,
                         help="relative constraint violation accepted (default: %(default)s)")
    certify.set_defaults(handler=_certify)
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
