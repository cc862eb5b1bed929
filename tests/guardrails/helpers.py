"""Builders shared by the guardrails, diff, snapshots and runs CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec

Member = tuple[str, str, str]


def make_spec(**overrides: Any) -> AudienceSpec:
    """A valid daily ECID audience; ``overrides`` replace top-level fields (validated)."""
    raw: dict[str, Any] = {
        "id": "buyers",
        "name": "Buyers",
        "refresh": {"frequency": "daily", "lookback_days": 30, "start": "2026-01-01T02:00:00Z"},
        "filter": {"template": "buyers.sql.j2"},
    }
    raw.update(overrides)
    return AudienceSpec.model_validate(raw)


def make_settings(home: Path, **overrides: Any) -> Settings:
    return Settings(
        home=home, audiences_dir=home / "specs", filters_dir=home / "filters", **overrides
    )


def ecid(n: int) -> str:
    return f"{n:038d}"


def write_members(path: Path, members: list[Member]) -> Path:
    """Small member files, sorted by person id as compute writes them."""
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [dict(zip(MEMBER_SCHEMA.names, m, strict=True)) for m in sorted(members)],
        schema=MEMBER_SCHEMA,
    )
    pq.write_table(table, path)
    return path


def write_range(path: Path, count: int, namespace: str = "CRMID", start: int = 0) -> Path:
    """``count`` members generated inside DuckDB (no Python lists), sorted by person id."""
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET enable_progress_bar = false")
    con.execute(
        "COPY (SELECT printf('p%09d', i) AS person_id, $ns AS namespace, "
        "person_id AS identity FROM range($start, $stop) t(i)) "
        "TO $path (FORMAT parquet)",
        {"ns": namespace, "start": start, "stop": start + count, "path": str(path)},
    )
    con.close()
    return path


def read_members(path: Path) -> list[Member]:
    return [
        tuple(row.values()) for row in pq.read_table(path, columns=MEMBER_SCHEMA.names).to_pylist()
    ]
