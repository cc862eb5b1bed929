"""The partition writer: quarantine, the bad-row limit, idempotence, late data, buckets."""

from __future__ import annotations

import re
from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cja_audiences.extract.writer import ExtractRejected, PartitionWriter
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA
from tests.extract.conftest import END, generate_synthetic, lake_digest, query


def _rows(n: int, *, day: str = "2026-11-27", prefix: str = "e", page: str = "home") -> pa.Table:
    return pa.table(
        {
            "event_id": [f"{prefix}{i}" for i in range(n)],
            "timestamp": [f"{day}T{i % 24:02d}:00:00Z" for i in range(n)],
            "person_id": [f"p{i % 7}" for i in range(n)],
            "page_name": [page] * n,
            "revenue": [str(i) for i in range(n)],
            "_origin": [f"test:{i}" for i in range(n)],
        }
    )


def _land(lake: Lake, *batches: pa.Table, run_id: str = "run-1", **options) -> dict:
    with PartitionWriter(lake, source="test", run_id=run_id, **options) as writer:
        for batch in batches:
            writer.write(batch)
        return writer.commit()


def _bad_rows() -> pa.Table:
    return pa.table(
        {
            "event_id": ["b1", "b2", "b3"],
            "timestamp": ["2026-11-27T10:00:00Z", "yesterday-ish", "2026-11-27T11:00:00Z"],
            "person_id": ["", "p1", "p2"],
            "revenue": ["1", "2", "12,50 EUR"],
            "_origin": ["bad:1", "bad:2", "bad:3"],
        }
    )


def test_bad_rows_go_to_quarantine_with_their_reason(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    summary = _land(lake, _rows(997), _bad_rows(), max_bad_row_share=0.01)
    assert summary["rows"] == 997 and summary["quarantined"] == 3
    assert summary["reasons"] == {
        "person_id: missing": 1,
        "timestamp: cannot parse": 1,
        "revenue: not a number": 1,
    }
    quarantine = pq.read_table(lake.quarantine("test", "run-1") / "rejected.parquet")
    assert quarantine.column_names == ["reason", "origin", "raw"]
    by_origin = dict(
        zip(quarantine["origin"].to_pylist(), quarantine["reason"].to_pylist(), strict=True)
    )
    assert by_origin["bad:2"] == "timestamp: cannot parse (yesterday-ish)"
    assert by_origin["bad:3"] == "revenue: not a number (12,50 EUR)"
    assert '"person_id":""' in quarantine["raw"].to_pylist()[0]


def test_above_the_limit_the_extract_fails_and_writes_nothing(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _rows(50))
    before = lake_digest(lake)
    late = _rows(20, day="2026-11-20", prefix="late")
    with pytest.raises(ExtractRejected) as failure:
        _land(lake, _rows(100, prefix="x"), late, _bad_rows(), run_id="run-2")
    message = str(failure.value)
    assert "3 of 123 rows (2.44%) are bad, above the limit of 1.00%" in message
    assert "nothing was written to the lake" in message
    assert str(lake.quarantine("test", "run-2") / "rejected.parquet") in message
    assert lake_digest(lake) == before
    assert not [p for p in lake.events.iterdir() if p.name.startswith(".")]
    assert pq.read_metadata(lake.quarantine("test", "run-2") / "rejected.parquet").num_rows == 3


def test_running_twice_leaves_identical_files(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    batches = [_rows(300), _rows(200, day="2026-11-26", prefix="y")]
    first = _land(lake, *batches)
    digest = lake_digest(lake)
    second = _land(lake, *batches, run_id="run-2")
    assert first["partitions"] == second["partitions"] == {"2026-11-26": 200, "2026-11-27": 300}
    assert lake_digest(lake) == digest


def test_files_have_the_exact_event_schema_and_sorted_rows(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _rows(100))
    table = pq.read_table(lake.event_partition("2026-11-27") / "part-0.parquet")
    assert table.schema.equals(EVENT_SCHEMA)
    keys = list(zip(table["person_id"].to_pylist(), table["timestamp"].to_pylist(), strict=True))
    assert keys == sorted(keys)


def test_late_data_lands_in_its_own_partition_and_keeps_what_is_there(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _rows(40, day="2026-11-20"), _rows(30, day="2026-11-27", prefix="n"))
    late = _rows(5, day="2026-11-20", prefix="late")
    resent = _rows(3, day="2026-11-20", page="resent")  # e0..e2 again, corrected
    summary = _land(lake, late, resent, run_id="late-run")
    assert summary["partitions"] == {"2026-11-20": 45}
    counts = dict(query(lake, "SELECT date::VARCHAR, count(*) FROM events GROUP BY 1"))
    assert counts == {"2026-11-20": 45, "2026-11-27": 30}
    pages = query(lake, "SELECT event_id, page_name FROM events WHERE event_id IN ('e0', 'e3')")
    assert dict(pages) == {"e0": "resent", "e3": "home"}


def test_replace_mode_makes_the_input_the_whole_partition(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _rows(40))
    _land(lake, _rows(10, prefix="z"), run_id="run-2", mode="replace")
    assert query(lake, "SELECT count(*) FROM events") == [(10,)]


def test_buckets_shard_each_partition_by_person(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _rows(500), buckets=4)
    files = sorted(p.name for p in lake.event_partition("2026-11-27").iterdir())
    assert files and all(re.fullmatch(r"part-b000[0-3]\.parquet", f) for f in files)
    files_per_person = query(
        lake, "SELECT DISTINCT count(DISTINCT filename) FROM events GROUP BY person_id"
    )
    assert files_per_person == [(1,)]
    assert query(lake, "SELECT count(*) FROM events") == [(500,)]


def test_old_partitions_without_a_new_column_still_merge_and_read(tmp_path: Path) -> None:
    """A partition written before a schema column existed keeps loading next to new ones."""
    lake = Lake(tmp_path)
    old = lake.event_partition("2026-11-26")
    old.mkdir(parents=True)
    _land(lake, _rows(10, day="2026-11-26"))
    written = pq.read_table(old / "part-0.parquet").drop_columns(["browser"])
    pq.write_table(written, old / "part-0.parquet")
    with_new_dimension = _rows(5, day="2026-11-26", prefix="d").append_column(
        "dimensions",
        pa.array([[("new_dimension", "v")]] * 5, pa.map_(pa.string(), pa.string())),
    )
    _land(lake, with_new_dimension, _rows(5, day="2026-11-27"), run_id="run-2")
    merged = pq.read_table(old / "part-0.parquet")
    assert merged.schema.equals(EVENT_SCHEMA) and merged.num_rows == 15
    assert query(lake, "SELECT count(*) FROM events") == [(20,)]


def test_a_seven_day_lookback_reads_only_its_partitions(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    generate_synthetic(lake, persons=200, days=30, end=END, seed=4)
    plan = duckdb.execute(
        "EXPLAIN ANALYZE SELECT count(DISTINCT person_id)"
        " FROM read_parquet(?, hive_partitioning = true)"
        " WHERE date BETWEEN DATE '2026-11-27' - INTERVAL 7 DAY AND DATE '2026-11-27'",
        [str(lake.events / "*" / "*.parquet")],
    ).fetchall()[0][1]
    assert re.search(r"Scanning Files: 8/30", plan), plan
    assert re.search(r"Total Files Read: 8\b", plan), plan


def test_an_event_sent_twice_in_one_delivery_keeps_its_last_version(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    summary = _land(lake, _rows(5), _rows(2, page="corrected"))
    assert summary["rows_in"] == 7 and summary["partitions"] == {"2026-11-27": 5}
    pages = dict(query(lake, "SELECT event_id, page_name FROM events"))
    assert pages == {"e0": "corrected", "e1": "corrected", "e2": "home", "e3": "home", "e4": "home"}
