"""The ``normlab`` command line."""

from __future__ import annotations

import argparse
import os
import sys

__all__ = ["main"]


def _positive_int(text: str) -> int:
    try:
        value = int(text)
    except ValueError:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {text!r}") from None
    if value < 1:
        raise argparse.ArgumentTypeError(f"expected a positive integer, got {value}")
    return value


def _cmd_bench(args: argparse.Namespace) -> int:
    import torch

    from . import bench

    if args.threads:
        torch.set_num_threads(args.threads)
    if args.json:
        parent = os.path.dirname(os.path.abspath(args.json))
        if not os.path.isdir(parent) or not os.access(parent, os.W_OK):
            print(f"normlab bench: cannot write --json {args.json}: {parent} is not a writable directory",
                  file=sys.stderr)
            return 2
    cases = [c.strip() for c in args.cases.split(",")] if args.cases else None
    log = None if args.silent else (lambda msg: print(msg, file=sys.stderr, flush=True))
    try:
        result = bench.run_bench(quick=args.quick, compile=not args.no_compile, repeats=args.repeats,
                                 cases=cases, log=log)
    except ValueError as e:
        print(f"normlab bench: {e}", file=sys.stderr)
        return 2
    print(bench.format_table(result))
    if args.json:
        bench.save(result, args.json)
        print(f"\nwrote {args.json}")
    return 0


def build_parser() -> argparse.ArgumentParser:
    from . import __version__

    parser = argparse.ArgumentParser(prog="normlab", description="Normalization layers as one family, "
                                     "and the evidence for how they behave.")
    parser.add_argument("--version", action="version", version=f"normlab {__version__}")
    sub = parser.add_subparsers(dest="command", required=True)
    b = sub.add_parser("bench", help="time normlab's layers against torch.nn, torch.compile and a memory copy",
                       description="Time normlab's layers against torch.nn's, torch.compile and x.clone() "
                                   "(the bandwidth limit) on CPU; print a table of medians and ratios.")
    b.add_argument("--quick", action="store_true", help="small shapes and few repeats (seconds, for smoke tests)")
    b.add_argument("--no-compile", action="store_true", help="skip the torch.compile anchor (saves ~30 s)")
    b.add_argument("--repeats", type=_positive_int, default=None, help="timed runs per measurement")
    b.add_argument("--cases", default=None, help="comma-separated case names (default: all)")
    b.add_argument("--threads", type=_positive_int, default=None, help="torch CPU threads (default: torch's)")
    b.add_argument("--json", default=None, metavar="PATH", help="also write the results as JSON")
    b.add_argument("--silent", action="store_true", help="no progress lines on stderr")
    b.set_defaults(func=_cmd_bench)
    return parser


def main(argv: list[str] | None = None) -> int:
    args = build_parser().parse_args(argv)
    return args.func(args)


if __name__ == "__main__":
    sys.exit(main())
