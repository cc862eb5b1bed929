"""Entry point: builds the parser from the command-group modules and runs one command."""

from __future__ import annotations

import argparse
from collections.abc import Sequence

from cja_audiences.cli import audiences, doctor, membership, reconcile, runs


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="python -m cja_audiences",
        description="Audiences from Customer Journey Analytics data, published to Adobe RTCDP.",
    )
    subparsers = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for group in (audiences, runs, membership, doctor, reconcile):
        group.register(subparsers)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; each command's handler is stored as ``func`` and returns an exit code."""
    args = build_parser().parse_args(argv)
    return args.func(args)
