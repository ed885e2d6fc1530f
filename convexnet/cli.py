"""The ``convexnet`` command.

Subcommands:

* ``convexnet demo``: paper 004's Figure 1 on nested spirals (:mod:`convexnet.demo`).
"""

from __future__ import annotations

import argparse
import sys

from .errors import ConvexnetError

__all__ = ["main", "build_parser"]


def _demo(args) -> int:
    from .demo import run_demo

    report = run_demo(out=args.out, rel_epsilon=args.rel_epsilon, gamma=args.gamma,
                      backend=args.backend, seed=args.seed, steps=args.steps)
    print(report.table())
    if report.figure:
        print(f"\nfigure saved to {report.figure}")
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
