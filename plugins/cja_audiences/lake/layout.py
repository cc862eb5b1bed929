"""The lake's layout (DESIGN §3) and the atomic writes every stage uses.

A stage reads its inputs from here and writes its outputs here. The root is a local folder
or object storage (``lake.storage``); every write is atomic on both, so a reader never sees
half a file.
"""

from __future__ import annotations

import json
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from cja_audiences.lake.storage import LakePath, atomic_path, lake_path

__all__ = ["Lake", "atomic_path", "read_json", "write_json", "write_parquet"]


class Lake:
    """Paths under one root (``CJA_AUDIENCES_HOME``): ``Path`` locally, ``UPath`` for URLs."""

    def __init__(self, root: LakePath | str) -> None:
        self.root = lake_path(root)

    @property
    def landing(self) -> LakePath:
        return self.root / "landing"

    @property
    def events(self) -> LakePath:
        return self.root / "lake" / "events"

    @property
    def persons(self) -> LakePath:
        return self.root / "lake" / "persons"

    def event_partition(self, date: str) -> LakePath:
        return self.events / f"date={date}"

    def quarantine(self, source: str, run_id: str) -> LakePath:
        return self.root / "quarantine" / source / run_id

    @property
    def audiences(self) -> LakePath:
        return self.root / "audiences"

    def audience_dir(self, audience_id: str) -> LakePath:
        return self.audiences / audience_id

    def run_dir(self, audience_id: str, run_id: str) -> LakePath:
        return self.audience_dir(audience_id) / "runs" / safe_name(run_id)


def safe_name(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keep folder names portable to object storage."""
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)


def write_parquet(table: pa.Table, path: LakePath) -> LakePath:
    import pyarrow.parquet as pq  # here: paths alone (DAG parsing, the CLI) need no PyArrow

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_json(obj: Any, path: LakePath) -> LakePath:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_json(path: LakePath, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
