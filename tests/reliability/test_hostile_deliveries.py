"""Hostile deliveries: timestamps far in the past or future, one event id for two persons,
manifests naming paths or files whose MD5 never matches. Each row or delivery is kept with
its reason, or refused loudly naming the file; nothing is lost or waited for forever."""

from __future__ import annotations

import gzip
import hashlib
import json
import logging
import os
import time
from pathlib import Path

import pytest

from cja_audiences.extract.exports import (
    DeliveryRejected,
    ExportSource,
    check_delivery,
    complete_deliveries,
)
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
