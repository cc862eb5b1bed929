"""The lake's layout (DESIGN §3) and the atomic writes every stage uses.

A stage reads its inputs from here and writes its outputs here. Writes go to a temporary
name in the same folder and are renamed into place, so a reader never sees half a file.
"""

from __future__ import annotations

import errno
import fcntl
import json
import os
import re
import shutil
import tempfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    import pyarrow as pa


class Lake:
    """Paths under one root (``CJA_AUDIENCES_HOME``)."""

    def __init__(self, root: Path | str) -> None:
        self.root = Path(root)

    @property
    def landing(self) -> Path:
        return self.root / "landing"

    @property
    def events(self) -> Path:
        return self.root / "lake" / "events"

    @property
    def persons(self) -> Path:
        return self.root / "lake" / "persons"

    def event_partition(self, date: str) -> Path:
        return self.events / f"date={date}"

    def quarantine(self, source: str, run_id: str) -> Path:
        return self.root / "quarantine" / source / run_id

    @property
    def audiences(self) -> Path:
        return self.root / "audiences"

    def audience_dir(self, audience_id: str) -> Path:
        """Refuses an id that is not a spec id (``../x`` would leave the lake)."""
        if not AUDIENCE_ID.fullmatch(audience_id):
            raise ValueError(
                f"{audience_id!r} is not an audience id (lower-case letters, digits and _, "
                "starting with a letter)"
            )
        return self.audiences / audience_id

    def run_dir(self, audience_id: str, run_id: str) -> Path:
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


@contextmanager
def atomic_path(path: Path) -> Iterator[Path]:
    """Yield a temporary path beside ``path``; rename it into place only on success.

    A full disk (from Python, PyArrow or DuckDB alike) becomes :class:`DiskFull` naming
    ``path``; the temporary file is removed, so nothing half-written stays behind.
    """
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    except OSError as exc:
        full = _disk_full(exc, path)
        if full is None:
            raise
        raise full from exc
    os.close(fd)
    tmp_path = Path(tmp)
    try:
        yield tmp_path
        os.replace(tmp_path, path)
    except Exception as exc:
        full = _disk_full(exc, path)
        if full is None:
            raise
        raise full from exc
    finally:
        tmp_path.unlink(missing_ok=True)


@contextmanager
def file_lock(path: Path) -> Iterator[None]:
    """An exclusive ``flock`` on ``path`` (created if needed): across processes and threads
    on one host; every open of the file is a separate lock holder."""
    path.parent.mkdir(parents=True, exist_ok=True)
    with path.open("w") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


class DiskFull(OSError):
    """No space left while writing a lake file; the message names the file and the fix."""


def _disk_full(exc: BaseException, path: Path) -> DiskFull | None:
    if isinstance(exc, DiskFull):
        return exc
    if getattr(exc, "errno", None) != errno.ENOSPC and "No space left" not in str(exc):
        return None
    try:
        free = f"{shutil.disk_usage(path.parent).free:,} bytes free there"
    except OSError:
        free = "its folder is not readable"
    return DiskFull(
        errno.ENOSPC,
        f"no space left on device writing {path} ({free}); nothing was half-written: free "
        f"space on that file system (or move CJA_AUDIENCES_HOME) and retry the task",
    )


def write_parquet(table: pa.Table, path: Path) -> Path:
    import pyarrow.parquet as pq  # here: paths alone (DAG parsing, the CLI) need no PyArrow

    with atomic_path(path) as tmp:
        pq.write_table(table, tmp)
    return path


def write_json(obj: Any, path: Path) -> Path:
    with atomic_path(path) as tmp:
        tmp.write_text(json.dumps(obj, indent=2, sort_keys=True, default=str) + "\n")
    return path


def read_json(path: Path, default: Any = None) -> Any:
    try:
        return json.loads(path.read_text())
    except FileNotFoundError:
        return default
