"""Move staged partitions into the lake, one whole partition at a time.

Every writer stages its output in a hidden folder beside ``lake/events`` (readers glob
``date=*`` and never see it) and calls :func:`publish_partitions` only once everything is
written and checked. Each staged partition then replaces the live one whole: on Linux by an
atomic directory exchange (``renameat2(RENAME_EXCHANGE)``), elsewhere by two renames a few
microseconds apart. On object storage the staging folder is local and each partition is
published as a new generation behind a pointer (``lake.partitions``). Partitions that were
not staged are left alone, so a rerun for one day touches only that day.
"""

from __future__ import annotations

import ctypes
import ctypes.util
import os
import shutil
import tempfile
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pyarrow.parquet as pq

from cja_audiences.lake.partitions import publish_generation
from cja_audiences.lake.storage import LakePath, is_remote

_RENAME_EXCHANGE = 2
_AT_FDCWD = -100


def _load_renameat2():
    try:
        libc = ctypes.CDLL(ctypes.util.find_library("c") or "libc.so.6", use_errno=True)
        fn = libc.renameat2
    except (OSError, AttributeError):
        return None
    fn.argtypes = [ctypes.c_int, ctypes.c_char_p, ctypes.c_int, ctypes.c_char_p, ctypes.c_uint]
    fn.restype = ctypes.c_int
    return fn


_renameat2 = _load_renameat2()


def _exchange(a: Path, b: Path) -> bool:
    """Atomically swap two existing directories; False where the OS cannot."""
    if _renameat2 is None:
        return False
    rc = _renameat2(_AT_FDCWD, os.fsencode(a), _AT_FDCWD, os.fsencode(b), _RENAME_EXCHANGE)
    return rc == 0


def replace_dir(staged: Path, target: Path) -> None:
    """Make ``staged`` live at ``target``, replacing whatever was there, then drop the old one."""
    if not target.exists():
        os.replace(staged, target)
        return
    if _exchange(staged, target):
        shutil.rmtree(staged)
        return
    trash = target.with_name(f".trash-{target.name}-{uuid.uuid4().hex}")
    os.replace(target, trash)
    os.replace(staged, target)
    shutil.rmtree(trash)


@contextmanager
def staging_dir(events_dir: LakePath) -> Iterator[Path]:
    """A hidden folder beside the live partitions (a local one for object storage), removed
    whatever happens."""
    if is_remote(events_dir):
        staging = Path(tempfile.mkdtemp(prefix="cja-staging-"))
    else:
        events_dir.mkdir(parents=True, exist_ok=True)
        staging = events_dir / f".staging-{uuid.uuid4().hex}"
        staging.mkdir()
    try:
        yield staging
    finally:
        shutil.rmtree(staging, ignore_errors=True)


def staged_partitions(staging: Path) -> list[Path]:
    """The ``date=...`` folders written into ``staging``, in date order."""
    return sorted(p for p in staging.iterdir() if p.is_dir() and p.name.startswith("date="))


def publish_partitions(staging: Path, events_dir: LakePath) -> list[str]:
    """Replace each live partition that ``staging`` holds; returns the dates published."""
    dates = []
    for partition in staged_partitions(staging):
        if is_remote(events_dir):
            publish_generation(partition, events_dir / partition.name)
        else:
            replace_dir(partition, events_dir / partition.name)
        dates.append(partition.name.removeprefix("date="))
    return dates


def partition_rows(staging: Path) -> dict[str, int]:
    """Rows per staged date, read from the Parquet footers (no data is scanned)."""
    return {
        partition.name.removeprefix("date="): sum(
            pq.ParquetFile(f).metadata.num_rows for f in partition.glob("*.parquet")
        )
        for partition in staged_partitions(staging)
    }
