"""The lake's layout (DESIGN §3) and the atomic writes every stage uses.

A stage reads its inputs from here and writes its outputs here. The root is a local folder
or object storage (``lake.storage``); every write is atomic on both, so a reader never sees
half a file.
"""

from __future__ import annotations

import json
import re
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa

from cja_audiences.lake.storage import DiskFull, LakePath, atomic_path, lake_path

__all__ = ["DiskFull", "Lake", "atomic_path", "read_json", "write_json", "write_parquet"]


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
        """Refuses an id that is not a spec id (``../x`` would leave the lake)."""
        if not AUDIENCE_ID.fullmatch(audience_id):
            raise ValueError(
                f"{audience_id!r} is not an audience id (lower-case letters, digits and _, "
                "starting with a letter)"
            )
        return self.audiences / audience_id

    def run_dir(self, audience_id: str, run_id: str) -> LakePath:
        return self.audience_dir(audience_id) / "runs" / safe_name(run_id)


AUDIENCE_ID = re.compile(r"[a-z][a-z0-9_]{1,62}")


def safe_name(run_id: str) -> str:
    """Airflow run ids hold ':' and '+'; keep folder names portable to object storage.

    A name of dots only (``.``, ``..``) would be the runs folder or its parent, and a
    leading dot would hide the run among temporary files: both are refused or replaced.
    """
    name = "".join(c if c.isalnum() or c in "-_." else "_" for c in run_id)
    if not name.strip("."):
        raise ValueError(f"run id {run_id!r} cannot name a run folder; use letters or digits")
    return "_" + name[1:] if name.startswith(".") else name


def is_safe_name(name: str) -> bool:
    """True when ``name`` is already a run folder name (``safe_name`` leaves it unchanged)."""
    try:
        return bool(name) and safe_name(name) == name
    except ValueError:
        return False


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
