"""Shared helpers for the extract tests: small real lakes and digests of their files."""

from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA

END = date(2026, 11, 27)


def lake_digest(lake: Lake) -> dict[str, str]:
    """Relative path -> MD5 of every Parquet file of the events lake."""
    return {
        str(f.relative_to(lake.root)): hashlib.md5(f.read_bytes()).hexdigest()
        for f in sorted(lake.events.rglob("*.parquet"))
    }


def query(lake: Lake, sql: str, params: list | None = None) -> list[tuple]:
    """Run ``sql`` against a view ``events`` over the lake's partitions (hive ``date``)."""
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    glob = str(lake.events / "*" / "*.parquet")
    con.read_parquet(glob, hive_partitioning=True, filename=True).create_view("events")
    return con.execute(sql, params or []).fetchall()


@pytest.fixture(scope="session")
def source_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """A small synthetic lake (1,000 persons, 5 days) used as the data to export and re-read."""
    lake = Lake(tmp_path_factory.mktemp("source-lake"))
    generate_synthetic(lake, persons=1000, days=5, end=END, seed=21)
    return lake


@pytest.fixture()
def source_glob(source_lake: Lake) -> str:
    return str(source_lake.events / "*" / "*.parquet")


def parquet_files(root: Path) -> list[Path]:
    return sorted(root.rglob("*.parquet"))


def write_events(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A lake root holding ``rows`` (EVENT_SCHEMA fields) in UTC date partitions."""
    by_date: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        ts = row["timestamp"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        ts = ts.astimezone(UTC)
        full = {"event_id": f"ev{i}", "person_namespace": "ECID", **row, "timestamp": ts}
        by_date.setdefault(ts.date().isoformat(), []).append(full)
    for day, day_rows in by_date.items():
        folder = root / "lake" / "events" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(day_rows, schema=EVENT_SCHEMA)
        pq.write_table(table, folder / "part-0.parquet")
    return root
