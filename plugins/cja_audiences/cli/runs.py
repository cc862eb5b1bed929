"""Commands on an audience's runs and snapshots: list, show, rollback, prune."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the parser."""
