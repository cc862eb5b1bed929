"""Is the lake fresh enough for a run? An audience waits for the last day of its window."""

from __future__ import annotations

from pathlib import Path


def partition_ready(events_dir: Path, date: str) -> bool:
    """True when ``date``'s events partition holds at least one Parquet file."""
    partition = events_dir / f"date={date}"
    return partition.is_dir() and any(partition.glob("*.parquet"))
