"""The ``fastdiff`` command line: ``fastdiff demo`` (the main job) and ``fastdiff bench``.

Example:
    $ fastdiff demo --quick --out fastdiff-demo
    $ fastdiff bench --quick
"""
from __future__ import annotations

import argparse
import sys
from typing import Optional, Sequence

__all__ = ["main", "build_parser"]


def _commands() -> dict:
    """Subcommand name -> module with ``add_parser(subparsers)`` and ``run(args) -> int``."""
    from . import cli_bench, demo

    return {"demo": demo, "bench": cli_bench}


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(prog="fastdiff", description="Fused Triton kernels for diffusion sampling.")
    parser.add_argument("--version", action="store_true", help="print the version and exit")
    sub = parser.add_subparsers(dest="command")
    parser.set_defaults(_subparsers={})
    for name, module in _commands().items():
        parser.get_default("_subparsers")[name] = module.add_parser(sub)
    return parser


def main(argv: Optional[Sequence[str]] = None) -> int:
    parser = build_parser()
    args, extra = parser.parse_known_args(argv)
    if extra:  # reported by the sub-command's parser: "fastdiff <cmd>: error: ..." (status 2), as its own errors
        sub = parser.get_default("_subparsers").get(getattr(args, "command", None), parser)
        sub.error(f"unrecognized arguments: {' '.join(extra)}")
    if args.version:
        from . import __version__

        print(__version__)
        return 0
    if not getattr(args, "command", None):
        parser.print_help()
        return 2
    return int(_commands()[args.command].run(args) or 0)


if __name__ == "__main__":  # pragma: no cover
    sys.exit(main())
