"""Hostile deliveries: timestamps far in the past or future, one event id for two persons,
manifests naming paths or files whose MD5 never matches, a truncated gzip whose MD5 matches,
bytes that are not UTF-8, lines of 9 and 20 MB. Each row or delivery is kept with its reason,
or refused loudly naming the file and line (an unreadable delivery is set aside in
landing/rejected/ and the newer ones land); nothing is lost or waited for forever."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest
from airflow.sdk.exceptions import AirflowFailException

from cja_audiences.airflow.operators.cja import REJECTED_REASON, CJAExtractOperator
from cja_audiences.extract.exports import (
    DeliveryRejected,
    DeliveryUnreadable,
    ExportSource,
    check_delivery,
    complete_deliveries,
)
from cja_audiences.extract.lines import MAX_LINE_BYTES
from cja_audiences.extract.source import run_extract
from cja_audiences.lake.layout import Lake
from tests.extract.conftest import query

pytestmark = pytest.mark.reliability


def gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


def extract(landing: Path, tmp_path: Path, **options) -> tuple[Lake, dict]:
    lake = Lake(tmp_path / "home")
    [delivery] = complete_deliveries(landing, require_manifest=False)
    return lake, run_extract(ExportSource(delivery), lake, run_id="t", **options)


def test_timestamps_of_year_1_or_99999_are_quarantined_with_their_reason(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    rows = "".join(f"e{i},p{i},2026-11-27T10:00:00Z\n" for i in range(400))
    bad = "x1,p1,0001-01-01T00:00:00Z\nx2,p2,99999-01-01T00:00:00Z\n"
    gz(landing / "cja-export-t-0.csv.gz", "Event ID,Person ID,Timestamp\n" + rows + bad)
    lake, summary = extract(landing, tmp_path, max_bad_row_share=0.01)
    assert summary["rows"] == 400 and summary["quarantined"] == 2
    assert all(r.startswith("timestamp: outside") for r in summary["reasons"])
    assert [p.name for p in lake.events.iterdir()] == ["date=2026-11-27"]


def test_one_event_id_of_two_persons_keeps_both_rows(tmp_path):
    landing = tmp_path / "landing"
    landing.mkdir()
    gz(
        landing / "cja-export-d-0.csv.gz",
        "Event ID,Person ID,Timestamp\nsame,alice,2026-11-27T10:00:00Z\n"
        "same,bob,2026-11-27T11:00:00Z\nsame,alice,2026-11-27T10:00:00Z\n",
    )
    lake, _summary = extract(landing, tmp_path)
    rows = query(lake, "SELECT event_id, person_id FROM events ORDER BY person_id")
    assert rows == [("same", "alice"), ("same", "bob")]  # the resent alice row is one row


def manifest(landing: Path, instance: str, entries: list[dict]) -> Path:
    return gz(landing / f"cja-export-{instance}-9.json.gz", json.dumps({"files": entries}))


@pytest.mark.parametrize(
    "name",
    [
        "../cja-export-m-0.csv.gz",
        "/etc/cja-export-m-0.csv.gz",
        "sub/cja-export-m-0.csv.gz",
        "passwd",
    ],
)
def test_a_manifest_naming_paths_is_refused_and_surfaced(tmp_path, caplog, name):
    landing = tmp_path / "landing"
    landing.mkdir()
    data = gz(landing / "cja-export-m-0.csv.gz", "Person ID,Timestamp\np,2026-11-27\n")
    manifest(landing, "m", [{"name": name, "md5": hashlib.md5(data.read_bytes()).hexdigest()}])
    with pytest.raises(DeliveryRejected, match="not a file of this landing folder"):
        check_delivery("m", sorted(landing.iterdir()))
    with caplog.at_level(logging.WARNING):
        assert complete_deliveries(landing) == []
    assert "cja-export-m-9.json.gz" in caplog.text and repr(name) in caplog.text


def test_a_wrong_md5_that_never_settles_is_surfaced(tmp_path, caplog):
    landing = tmp_path / "landing"
    landing.mkdir()
    data = gz(landing / "cja-export-w-0.csv.gz", "Person ID,Timestamp\np,2026-11-27\n")
    manifest(landing, "w", [{"name": data.name, "md5": "0" * 32}])
    assert complete_deliveries(landing) == [] and "MD5" not in caplog.text  # may be uploading
    old = time.time() - 3600
    os.utime(data, (old, old))
    with caplog.at_level(logging.WARNING):
        assert complete_deliveries(landing) == []
    assert f"{data} has MD5" in caplog.text and "corrupt" in caplog.text


HEADER = "Event ID,Person ID,Timestamp,Page Name\n"


def rows(prefix: str, n: int) -> str:
    return "".join(f"{prefix}{i},p{i},2026-11-27T10:00:00Z,home\n" for i in range(n))


def deliver(landing: Path, instance: str, files: list[bytes], age_s: float = 0) -> list[Path]:
    """Gzipped files and a manifest with their MD5s (so the delivery is complete)."""
    landing.mkdir(parents=True, exist_ok=True)
    paths = []
    for idx, data in enumerate(files):
        path = landing / f"cja-export-{instance}-{idx}.csv.gz"
        path.write_bytes(data)
        paths.append(path)
    entries = [{"name": p.name, "md5": hashlib.md5(p.read_bytes()).hexdigest()} for p in paths]
    paths.append(manifest(landing, instance, entries))
    moment = time.time() - age_s
    for path in paths:
        os.utime(path, (moment, moment))
    return paths


def extract_task(home: Path, monkeypatch) -> dict:
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(home))
    return CJAExtractOperator(task_id="extract").execute(
        context={"params": {"source": "export"}, "run_id": "scheduled__1"}
    )


def test_a_truncated_gzip_whose_md5_matches_is_set_aside_and_newer_deliveries_land(
    tmp_path, monkeypatch
):
    lake = Lake(tmp_path / "home")
    good = gzip.compress((HEADER + rows("a", 200_000)).encode())  # > one 8 MiB batch
    cut = gzip.compress((HEADER + rows("b", 50_000)).encode())
    deliver(lake.landing, "old", [good, cut[: len(cut) // 2]], age_s=600)
    deliver(lake.landing, "new", [gzip.compress((HEADER + rows("n", 300)).encode())])
    with pytest.raises(AirflowFailException) as failed:
        extract_task(lake.root, monkeypatch)
    message = str(failed.value)
    assert "1 of 2 deliveries rejected" in message
    assert "cja-export-old-1.csv.gz, line " in message and "gzip stream ends early" in message
    [folder] = (lake.landing / "rejected").iterdir()
    reason = (folder / REJECTED_REASON).read_text()
    assert "cja-export-old-1.csv.gz, line" in reason and "ends early after" in reason
    assert sorted(p.name for p in folder.glob("*.gz")) == [
        "cja-export-old-0.csv.gz",
        "cja-export-old-1.csv.gz",
        "cja-export-old-9.json.gz",
    ]
    # the newer delivery landed; nothing of the old one (not even its sound first file)
    assert query(lake, "SELECT count(*), min(event_id) FROM events") == [(300, "n0")]
    assert not list(lake.events.glob(".staging-*"))
    assert [p.name for p in (lake.landing / "processed").iterdir()][0].startswith("new-")
    assert complete_deliveries(lake.landing) == []  # nothing left to block the next run


def huge(n: int) -> str:
    return f"h1,p1,2026-11-27T10:00:00Z,{'x' * n}\n"


@pytest.mark.parametrize(
    ("data", "line", "problem"),
    [
        (
            (HEADER + rows("a", 10) + "e,p,2026-11-27T10:00:00Z,caf").encode() + b"\xe9\n",
            12,
            "not UTF-8: byte 0xe9 at column",
        ),
        (
            HEADER.encode().replace(b"Page", b"P\xe2ge") + rows("a", 10).encode(),
            1,
            "not UTF-8: byte 0xe2",
        ),
        # 20 MB: Arrow cannot read it; 9 MB: Arrow could, the limit refuses it all the same
        (
            (HEADER + rows("a", 10) + huge(20 << 20) + rows("b", 10)).encode(),
            12,
            f"over the maximum line length of {MAX_LINE_BYTES:,}",
        ),
        (
            (HEADER + huge(9 << 20) + rows("b", 10)).encode(),
            2,
            f"over the maximum line length of {MAX_LINE_BYTES:,}",
        ),
    ],
    ids=["latin-1-row", "latin-1-header", "20-mb-line", "9-mb-line"],
)
def test_unreadable_csv_rows_name_file_and_line(tmp_path, data, line, problem):
    landing = tmp_path / "landing"
    [path, _manifest] = deliver(landing, "u", [gzip.compress(data, compresslevel=1)])
    [delivery] = complete_deliveries(landing)
    lake = Lake(tmp_path / "home")
    with pytest.raises(DeliveryUnreadable) as failed:
        run_extract(ExportSource(delivery), lake, run_id="t")
    assert str(failed.value).startswith(f"{path}, line {line:,}: {problem}")
    assert not list(lake.events.rglob("*.parquet")) and not list(lake.events.glob(".*"))


@pytest.mark.parametrize(
    ("line", "problem"),
    [
        (b'{"Person ID": "p", "Page Name": "caf\xe9"}', "not UTF-8: byte 0xe9 at column 37"),
        (b'{"Person ID": "p", "Page Name": "' + b"x" * (20 << 20) + b'"}', "over the maximum"),
    ],
    ids=["latin-1", "20-mb-line"],
)
def test_unreadable_json_lines_name_file_and_line(tmp_path, line, problem):
    landing = tmp_path / "landing"
    landing.mkdir()
    good = b"".join(b'{"Person ID": "p%d", "Timestamp": "2026-11-27"}\n' % i for i in range(5))
    gz_path = landing / "cja-export-j-0.json.gz"
    gz_path.write_bytes(gzip.compress(good + line + b"\n" + good, compresslevel=1))
    [delivery] = complete_deliveries(landing, require_manifest=False)
    with pytest.raises(DeliveryUnreadable, match=rf"^{gz_path}, line 6: {problem}"):
        run_extract(ExportSource(delivery), Lake(tmp_path / "home"), run_id="t")
