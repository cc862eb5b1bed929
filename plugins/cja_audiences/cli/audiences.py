"""Commands on audience specs: validate, render, preview, compute."""

from __future__ import annotations

import argparse


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the parser."""
