"""A full disk during extract, compute, diff, publish and commit: the error names the file, nothing
half-written stays behind, the snapshot does not move, and freeing space lets the task retry.

The lake lives on a small tmpfs when the tests may mount one (root); otherwise ENOSPC is
injected by a fault hook on the lake's atomic rename, and the tests say so in their id.
"""

from __future__ import annotations

import errno
import gzip
import os
import subprocess
import threading
import time
from pathlib import Path

import pytest

from cja_audiences import snapshots
from cja_audiences.airflow.operators.cja import CJAExtractOperator
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import DiskFull, Lake, write_parquet
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.ledger import Ledger
from cja_audiences.publish.streaming import publish_run
from tests.extract.conftest import query
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    write_members,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
DISK_BYTES = 8 * 1024 * 1024


class Disk:
    """A folder whose file system can be filled to the last few KB, then freed."""

    def __init__(self, root: Path, tmpfs: bool, monkeypatch: pytest.MonkeyPatch) -> None:
        self.root, self.tmpfs, self.monkeypatch = root, tmpfs, monkeypatch
        self.filler = root / "filler"

    def fill(self, leave: int = 0) -> None:
        if not self.tmpfs:  # the fault hook: every rename into the lake fails as a full disk

            def full(src, dst):
                raise OSError(errno.ENOSPC, os.strerror(errno.ENOSPC), str(dst))

            self.monkeypatch.setattr(os, "replace", full)
            return
        with self.filler.open("wb") as handle:
            try:
                while True:
                    handle.write(b"\0" * 65536)
                    handle.flush()
            except OSError:
                pass
        os.truncate(self.filler, max(self.filler.stat().st_size - leave, 0))

    def free(self) -> None:
        self.monkeypatch.undo()
        self.filler.unlink(missing_ok=True)

    def leftovers(self) -> list[Path]:
        return [p for p in self.root.rglob(".*.tmp")]


def _mount(path: Path) -> bool:
    path.mkdir()
    result = subprocess.run(
        ["mount", "-t", "tmpfs", "-o", f"size={DISK_BYTES}", "tmpfs", str(path)],
        capture_output=True,
    )
    return result.returncode == 0


@pytest.fixture
def disk(tmp_path, monkeypatch):
    root = tmp_path / "disk"
    tmpfs = _mount(root)
    yield Disk(root, tmpfs, monkeypatch)
    if tmpfs:
        subprocess.run(["umount", "-l", str(root)], check=False)


def run_dir(disk: Disk, run_id: str) -> Path:
    path = disk.root / "audiences" / "high_value" / "runs" / run_id
    path.mkdir(parents=True, exist_ok=True)
    return path


def test_compute_output_on_a_full_disk(disk):
    run = run_dir(disk, "r1")
    disk.fill()
    with pytest.raises(DiskFull, match=r"writing .*members\.parquet.*free space"):
        write_parquet(member_table(range(50_000)), run / "members.parquet")
    assert not (run / "members.parquet").exists() and disk.leftovers() == []
    disk.free()
    write_parquet(member_table(range(50_000)), run / "members.parquet")


def test_diff_on_a_full_disk(disk):
    run = run_dir(disk, "r1")
    write_members(run / "members.parquet", range(60_000))
    previous = run_dir(disk, "r0")
    write_members(previous / "members.parquet", range(30_000, 90_000))
    disk.fill(leave=4096)
    with pytest.raises(DiskFull, match=r"writing .*(entered|exited)\.parquet"):
        diff_members(run, previous)
    assert not (run / "entered.parquet").exists() or not (run / "exited.parquet").exists()
    assert disk.leftovers() == []
    disk.free()
    assert diff_members(run, previous)["entered"] == 30_000


def test_publish_and_commit_on_a_full_disk_then_retry(emu, disk):
    audience = disk.root / "audiences" / "high_value"
    run = run_dir(disk, "r1")
    write_members(run / "members.parquet", range(3_000))
    diff_members(run, None)
    config, options = emu.adobe_config(rate_limit=0), fast_options(chunk_size=500)
    emu.faults(latency_ms=30, paths=["/collection/batch/"])
    errors: list[BaseException] = []

    def publish() -> None:
        try:
            publish_run(config, make_spec(), run, options=options)
        except BaseException as exc:  # noqa: BLE001 - checked below
            errors.append(exc)

    worker = threading.Thread(target=publish)
    worker.start()
    deadline = time.monotonic() + 60
    while len(list((run / "ledger").glob("entered-*.json"))) < 2 and time.monotonic() < deadline:
        time.sleep(0.005)
    disk.fill()  # the disk fills up part-way through the publish
    worker.join(timeout=60)
    assert len(errors) == 1 and isinstance(errors[0], DiskFull), errors
    assert str(audience) in str(errors[0]) and "free space" in str(errors[0])
    assert disk.leftovers() == []
    disk.free()
    emu.clear_faults()
    before = {e["chunk"] for e in Ledger(run).entries()}
    summary = publish_run(config, make_spec(), run, options=options)
    assert summary["skipped"] == 500 * len(before) and summary["chunks"]["complete"]
    assert held(emu, status="realized") == identities(member_table(range(3_000)))

    disk.fill()
    with pytest.raises(DiskFull, match="current.json|run.json"):
        snapshots.commit(audience, run)
    assert snapshots.current_run(audience) is None and disk.leftovers() == []
    disk.free()
    assert snapshots.commit(audience, run)["run_id"] == "r1"
    assert read_run_record(run)["publish"]["status"] == "ok"


def test_extract_on_a_full_disk_then_retry(disk, monkeypatch):
    """The staging files fill the disk: DiskFull names the file, no partition (not even a
    staging folder) stays behind, the delivery stays in landing, and the retry lands it."""
    lake = Lake(disk.root / "home")
    lake.landing.mkdir(parents=True)
    rows = "".join(
        f"e{i},p{i % 5000},2026-11-{20 + i % 7}T10:00:00Z,page {i}\n" for i in range(60_000)
    )
    data = gzip.compress(f"Event ID,Person ID,Timestamp,Page Name\n{rows}".encode())
    (lake.landing / "cja-export-full-0.csv.gz").write_bytes(data)
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(lake.root))
    extract = CJAExtractOperator(task_id="extract")
    context = {"params": {"source": "export", "delivery_id": "full"}, "run_id": "manual__1"}
    disk.fill(leave=200_000)
    with pytest.raises(
        DiskFull, match=r"writing .*(\.parquet|date=2026-11-2\d|events).*free space"
    ):
        extract.execute(context=context)
    assert not list(lake.events.glob("date=*")) and not list(lake.events.glob(".staging-*"))
    assert disk.leftovers() == [] and (lake.landing / "cja-export-full-0.csv.gz").exists()
    disk.free()
    summary = extract.execute(context=context)
    assert summary["rows"] == 60_000 and len(summary["partitions"]) == 7
    assert query(lake, "SELECT count(*) FROM events") == [(60_000,)]
