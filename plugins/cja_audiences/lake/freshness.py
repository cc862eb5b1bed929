"""Is the lake fresh enough for a run? An audience waits for the last day of its window."""

from __future__ import annotations

from cja_audiences.lake.partitions import partition_files
from cja_audiences.lake.storage import LakePath, lake_path


def partition_ready(events_dir: LakePath | str, date: str) -> bool:
    """True when ``date``'s events partition holds at least one Parquet file."""
    return bool(partition_files(lake_path(events_dir) / f"date={date}"))
