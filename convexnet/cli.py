"""The ``convexnet`` command.

Subcommands:

* ``convexnet demo``: paper 004's Figure 1 on nested spirals (:mod:`convexnet.demo`).
* ``convexnet prune``: Net-Trim, a sparsity target (``--sparsity``, ``--pattern``) or whole
  units (``--neurons``; ``--shrink`` writes the smaller model), on a saved torch model
  (:func:`convexnet.nn.trim`; file formats in :mod:`convexnet.nn.io`, a text file as byte-level
  calibration for a language model); ``--save-results DIR`` keeps every Net-Trim layer program
  and solution; targets print one progress line per block; ``--scheduler tcp://HOST:PORT``
  solves the layer programs on a running Dask cluster, ``--workers N`` on a local one of N processes.
* ``convexnet certify``: duality-gap certificates of saved results (``NetTrimResult.save`` files, or
  the directory ``prune --save-results`` wrote), checked independently of the solver.

Safety: nothing is imported from the current folder, a file's code runs only with
``--trust-pickle``, every file is replaced atomically (``convexnet._atomic``), result names cannot
leave ``--save-results DIR``, and ``certify DIR`` does not follow links out of DIR.
"""

from __future__ import annotations

import argparse
import re
import sys
from pathlib import Path

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


def _solver_options(text):
    """``--solver-options``: a JSON object, flat or keyed by backend (as ``solver_options=``)."""
    if text is None:
        return None
    import json

    try:
        options = json.loads(text)
    except json.JSONDecodeError as exc:
        raise InvalidInputError(f"--solver-options must be a JSON object, e.g. "
                                f"'{{\"max_iterations\": 5000}}'; got {text!r} ({exc}).") from None
    if not isinstance(options, dict):
        raise InvalidInputError(f"--solver-options must be a JSON object; got {text!r}.")
    return options


def _prune(args) -> int:
    import torch

    from .nn import io as torch_io
    from .nn import trim

    if args.shrink:
        _check_shrink_paths(args)
    else:
        torch_io.check_paths(args.model, args.calibration, args.out)
    if args.save_results is not None and Path(args.save_results).exists() \
            and not Path(args.save_results).is_dir():
        raise InvalidInputError(f"--save-results {args.save_results!r} is a file; give a folder "
                                "(created if missing).")
    targeted = args.sparsity is not None or args.pattern is not None or args.neurons is not None
    if targeted and (args.scheduler is not None or args.workers is not None):
        raise InvalidInputError("--scheduler and --workers run Net-Trim's layer programs on a "
                                "cluster; --sparsity and --pattern refits run in this process.")
    if args.workers is not None and args.workers < 1:
        raise InvalidInputError(f"--workers must be >= 1; got {args.workers}.")
    if targeted and args.save_results is not None:
        raise InvalidInputError("--save-results keeps Net-Trim layer programs; with --sparsity, "
                                "--pattern or --neurons every layer's refit is certified in the "
                                "table instead.")
    loaded = torch_io.load_model(args.model, args.arch, trust_pickle=args.trust_pickle)
    if Path(args.calibration).suffix in torch_io.TEXT_SUFFIXES:
        inputs = torch_io.load_text_calibration(args.calibration, context=args.context,
                                                sequences=args.sequences)
    else:
        inputs = torch_io.load_calibration(args.calibration)
    if args.device is not None:
        try:
            loaded.model.to(torch.device(args.device))
        except (RuntimeError, AssertionError) as exc:
            raise InvalidInputError(f"--device {args.device!r} cannot be used ({exc}).") from None
    relu = None if args.relu is None else set(_names(args.relu))
    if args.neurons is not None:
        report = trim(loaded.model, inputs, layers=_names(args.layers), neurons=args.neurons,
                      batch_size=args.batch_size, progress=_block_printer())
        return _finish(report, loaded, args)
    if targeted:
        report = trim(loaded.model, inputs, layers=_names(args.layers), sparsity=args.sparsity,
                      pattern=args.pattern, per=args.per, batch_size=args.batch_size,
                      progress=_block_printer())
        return _finish(report, loaded, args)
    with _cluster(args) as client:
        report = trim(loaded.model, inputs, layers=_names(args.layers), epsilon=args.epsilon,
                      rel_epsilon=args.rel_epsilon, lam=args.lam, mode=args.mode,
                      gamma=args.gamma, backend=args.backend, device=args.device, relu=relu,
                      max_samples=args.max_samples or None, seed=args.seed,
                      batch_size=args.batch_size, split_budget=args.split_budget,
                      allow_inaccurate=args.allow_inaccurate, executor=client,
                      solver_options=_solver_options(args.solver_options),
                      progress=_progress_printer())
    if args.save_results is not None:
        torch_io.save_model(loaded, args.out, keep_masks=args.keep_masks)
        _save_results(report, args.save_results)
        print(report.table())
        print(f"\npruned model saved to {args.out}" + (" (with masks)" if args.keep_masks else ""))
        return 0
    return _finish(report, loaded, args)


def _cluster(args):
    """The Dask client of ``--scheduler`` or of ``--workers`` local workers (None without them)."""
    import contextlib

    if args.scheduler is None and args.workers is None:
        return contextlib.nullcontext(None)
    from .cluster import connect

    return connect(args.scheduler, args.workers)


def _check_shrink_paths(args) -> None:
    """``--shrink`` writes a convexnet export (safetensors) whatever MODEL's format."""
    for label, path in (("MODEL", args.model), ("--calibration", args.calibration)):
        if not Path(path).is_file():
            raise InvalidInputError(f"{label} {str(path)!r} is not a file.")
    out = Path(args.out)
    if not out.parent.is_dir():
        raise InvalidInputError(f"--out {args.out!r}: the folder {str(out.parent)!r} does not "
                                "exist.")
    if out.suffix != ".safetensors":
        raise InvalidInputError(f"--shrink writes a safetensors export; give --out the suffix "
                                f".safetensors (got {args.out!r}).")
    if args.keep_masks:
        raise InvalidInputError("--shrink cuts the pruned units out: there are no masks left to "
                                "keep; drop --keep-masks.")


def _finish(report, loaded, args) -> int:
    from .nn import io as torch_io

    if args.shrink:
        from .nn import export

        info = export(loaded.model, args.out, shrink=True)
        print(report.table())
        removed = sum(len(units) for units in info["removed"].values())
        print(f"\nshrunk model saved to {args.out} ({removed} units removed; load it with "
              "convexnet.nn.load(OUT, architecture))")
        return 0
    torch_io.save_model(loaded, args.out, keep_masks=args.keep_masks)
    print(report.table())
    print(f"\npruned model saved to {args.out}" + (" (with masks)" if args.keep_masks else ""))
    return 0


def _block_printer():
    """One line on stderr per block (per layer for a model without repeated blocks)."""
    state = {"rows": []}

    def flush(n_layers, done):
        rows = state["rows"]
        block = rows[0].block
        certified = sum(row.certificate == "ok" for row in rows)
        pruned = 1.0 - sum(row.nonzeros for row in rows) / sum(row.size for row in rows)
        what = f"block {block}" if block is not None else rows[0].name
        print(f"[{done}/{n_layers} layers] {what}: {len(rows)} layer{'s' * (len(rows) > 1)}, "
              f"{100 * pruned:.1f}% pruned, {certified}/{len(rows)} refits certified, "
              f"{sum(row.time for row in rows):.1f} s", file=sys.stderr, flush=True)
        state["rows"] = []

    def progress(index, n_layers, layer):
        if state["rows"] and (layer.block != state["rows"][0].block or layer.block is None):
            flush(n_layers, index)
        state["rows"].append(layer)
        if index + 1 == n_layers:
            flush(n_layers, index + 1)

    return progress


_UNSAFE_CHARACTERS = re.compile(r"[^A-Za-z0-9._-]")


def _file_stem(name: str, used: set) -> str:
    """A file name for a module name that stays inside the folder: only ``[A-Za-z0-9._-]``, no
    ``..``, no leading dot or dash, and distinct from ``used`` (compared case-insensitively, for
    file systems that are)."""
    stem = re.sub(r"\.{2,}", "_", _UNSAFE_CHARACTERS.sub("_", name or "model"))
    if stem[0] in ".-":
        stem = "_" + stem[1:]
    unique, count = stem, 1
    while unique.lower() in used:
        count += 1
        unique = f"{stem}-{count}"
    used.add(unique.lower())
    return unique


def _save_results(report, directory) -> None:
    folder = Path(directory)
    folder.mkdir(parents=True, exist_ok=True)
    used: set = set()
    for layer in report.layers:
        for group, result in enumerate(layer.results):
            name = layer.name if len(layer.results) == 1 else f"{layer.name or 'model'}.group{group}"
            stem = _file_stem(name, used)
            if stem != (name or "model"):
                print(f"layer {name!r} saved as {stem}.npz", file=sys.stderr)
            result.save(folder / f"{stem}.npz")
    print(f"layer programs and solutions saved to {folder}/ (check them: convexnet certify "
          f"{folder})", file=sys.stderr)


def _result_files(paths) -> list:
    """``(file, why it is skipped or None)`` for the PATH arguments; typed errors for missing ones."""
    files = []
    for text in paths:
        path = Path(text)
        if path.is_dir():
            found = sorted(path.glob("*.npz"))
            if not found:
                raise InvalidInputError(f"{path} holds no .npz result files.")
            root = path.resolve()
            for file in found:
                # A link in DIR may point anywhere; certify reads only what DIR itself holds.
                target = file.resolve()
                outside = file.is_symlink() and not target.is_relative_to(root)
                files.append((file, f"a link out of {path} (to {target})" if outside else None))
        elif path.is_file():
            files.append((path, None))
        else:
            raise InvalidInputError(f"{path} does not exist; give .npz files written by "
                                    "NetTrimResult.save or a directory of them.")
    return files


def _certify_one(path, args):
    """``(status, report or None, why)``: status "ok", "FAILED", "unreadable" or "skipped"."""
    import numpy as np

    from .certificates import verify

    try:
        with np.load(path, allow_pickle=False) as saved:
            arrays = {key: saved[key] for key in saved.files}
        report = verify(arrays, gap_tol=args.gap_tol, feas_tol=args.feas_tol)
    except Exception as exc:
        # A damaged file fails in many ways (BadZipFile, OSError, EOFError, zlib.error, a missing
        # or malformed key): each is this file's problem, reported on its row; the others go on.
        first = str(exc).strip().splitlines()[0] if str(exc).strip() else ""
        kind = "" if isinstance(exc, ConvexnetError) else f"{type(exc).__name__}: "
        return "unreadable", None, f"not a saved result ({kind}{first})"
    return ("ok" if report.ok else "FAILED"), report, ""


def _certify(args) -> int:
    files = _result_files(args.paths)
    width = max(len("result"), *(len(str(path)) for path, _ in files)) + 2
    rows = [f"{'result':<{width}}{'status':<12}{'gap':>10}{'relative gap':>14}{'violation':>11}"]
    counts = {"ok": 0, "FAILED": 0, "unreadable": 0, "skipped": 0}
    for path, skipped in files:
        status, report, why = ("skipped", None, skipped) if skipped else _certify_one(path, args)
        counts[status] += 1
        row = f"{str(path):<{width}}{status:<12}"
        if report is None:
            row += why
        else:
            row += (f"{report.gap:>10.3e}{report.relative_gap:>14.3e}"
                    f"{report.primal_violation:>11.2e}")
        rows.append(row)
    print("\n".join(rows))
    if counts["ok"] == len(files):
        print("\nall certified")
        return 0
    print(f"\n{counts['ok']} certified, {counts['FAILED']} not certified at gap_tol={args.gap_tol}, "
          f"feas_tol={args.feas_tol}, {counts['unreadable']} unreadable, {counts['skipped']} "
          "skipped")
    return 2 if counts["unreadable"] or counts["skipped"] else 1


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
        "prune", help="prune a saved torch model: Net-Trim (paper 004) or a sparsity target",
        description="Prune the layers of a saved torch model on calibration inputs (Net-Trim with "
                    "a budget, or --sparsity / --pattern with a certified exact refit, block by "
                    "block for transformers), print a per-layer report and save the pruned model "
                    "in the input's format.",
        epilog="MODEL: a state dict (.pt or .safetensors) with --arch, or, with --trust-pickle, "
               "a whole module saved with torch.save(model) (unpickling runs code from the file: "
               "trusted files only). Modules are imported from installed packages and PYTHONPATH, "
               "never from the current folder. DATA: one tensor in .npy, .safetensors or a torch "
               "file. OUT: MODEL's format, replaced atomically (the old file or the complete new "
               "one, nothing written on failure); pruning made permanent unless --keep-masks.")
    prune.add_argument("model", metavar="MODEL", help="the trained model (see below)")
    prune.add_argument("--calibration", required=True, metavar="DATA",
                       help="calibration inputs: one tensor (.npy, .safetensors or torch file), "
                            "or a text file (.txt, .py, .md) for a byte-level language model")
    prune.add_argument("--out", required=True, metavar="OUT", help="where to save the pruned model")
    budget = prune.add_mutually_exclusive_group(required=True)
    budget.add_argument("--rel-epsilon", type=float,
                        help="budget relative to each layer's ||Y_l||_F (first layer in cascade)")
    budget.add_argument("--epsilon", type=float, help="absolute budget")
    budget.add_argument("--lam", type=float, help="regularized form with this weight")
    budget.add_argument("--sparsity", type=float,
                        help="target: this fraction of zeros in every output's weights (e.g. 0.5), "
                             "support by the l1 path, then the certified exact refit")
    budget.add_argument("--pattern", metavar="N:M",
                        help="target: at most N non-zeros in each M consecutive inputs (e.g. 2:4)")
    budget.add_argument("--neurons", type=float,
                        help="structured: remove this fraction of the units (features, channels, "
                             "heads) of every layer whose units can be removed (e.g. 0.3)")
    prune.add_argument("--per", choices=["row", "layer"], default="row",
                       help="--sparsity counted per output row or per layer (default: %(default)s)")
    prune.add_argument("--context", type=int, default=128,
                       help="tokens per sequence when DATA is a text file (default: %(default)s)")
    prune.add_argument("--sequences", type=int, default=128,
                       help="sequences taken from a text DATA file (default: %(default)s)")
    prune.add_argument("--mode", choices=["cascade", "parallel"], default="cascade",
                       help="default: %(default)s")
    prune.add_argument("--gamma", type=float, default=1.0,
                       help="cascade inflation rate, >= 1 (default: %(default)s)")
    prune.add_argument("--backend", default="auto", help="solver backend (default: %(default)s)")
    prune.add_argument("--arch", metavar="MODULE:CALLABLE",
                       help="builds the architecture when MODEL is a state dict")
    prune.add_argument("--trust-pickle", action="store_true",
                       help="MODEL is a whole pickled module: unpickle it (runs code from the file; "
                            "trusted files only)")
    prune.add_argument("--layers", metavar="NAMES",
                       help="comma-separated module names to trim (default: every Linear and Conv1d/2d/3d)")
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
    prune.add_argument("--solver-options", metavar="JSON",
                       help="the backend's options as a JSON object, flat or keyed by backend, "
                            "e.g. '{\"admm\": {\"max_iterations\": 50000}}'")
    prune.add_argument("--allow-inaccurate", action="store_true",
                       help="write layers the solver left unfinished (max_iterations); the table "
                            "marks them and their bounds are not claimed (default: refuse)")
    prune.add_argument("--keep-masks", action="store_true",
                       help="save weight_orig/weight_mask instead of making the pruning permanent")
    prune.add_argument("--shrink", action="store_true",
                       help="cut the pruned units out and write OUT as a smaller model: a "
                            "safetensors export with a JSON of what was removed (load it with "
                            "convexnet.nn.load(OUT, architecture))")
    prune.add_argument("--save-results", metavar="DIR",
                       help="also save every layer's program and solution here (for certify)")
    where = prune.add_mutually_exclusive_group()
    where.add_argument("--scheduler", metavar="tcp://HOST:PORT",
                       help="solve the layer programs on this running Dask cluster "
                            "(docs/cluster.md)")
    where.add_argument("--workers", type=int, metavar="N",
                       help="solve the layer programs on a local Dask cluster of N processes")
    prune.set_defaults(handler=_prune)

    certify = commands.add_parser(
        "certify", help="check saved results by their duality-gap certificates",
        description="Recompute the duality-gap certificate of saved Net-Trim results (numpy only, "
                    "independent of the solver that produced them). Every file gets a row: ok, "
                    "FAILED (not certified), unreadable (not a saved result), or skipped (a link "
                    "in a directory PATH that points out of it: not followed).",
        epilog="Exit status: 0 when every file is certified; 1 when one is not certified and all "
               "were read; 2 when one is unreadable or skipped, or a PATH is missing or holds no "
               ".npz files.")
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
