"""Tiny hand-made event tables and a runner for compiled filters (no lake, no files)."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from cja_audiences.filters.compiler import QueryBuilder
from cja_audiences.filters.ir import Node
from cja_audiences.filters.rules import parse_rules
from cja_audiences.lake.layout import Lake, write_parquet
from cja_audiences.lake.schema import EVENT_SCHEMA, PERSON_SCHEMA

T0 = datetime(2026, 11, 20, 8, 0, tzinfo=UTC)
VIEW = "commerce.productViews"
ADD = "commerce.productListAdds"
CHECKOUT = "commerce.checkouts"
BUY = "commerce.purchases"
PAGE = "web.webpagedetails.pageViews"


def ev(person: str, minute: float, event_type: str = PAGE, **fields: Any) -> dict[str, Any]:
    """One event ``minute`` minutes after T0."""
    return {
        "person_id": person,
        "timestamp": T0 + timedelta(minutes=minute),
        "event_type": event_type,
        **fields,
    }


def event_table(rows: list[dict[str, Any]]) -> pa.Table:
    """The rows as lake events, with the session columns the extract would write."""
    from tests.compute.reference import sessionize

    full_rows = [
        {"event_id": f"e{i:04d}", "person_namespace": "ECID", **row}  # row may override
        for i, row in enumerate(rows)
    ]
    starts: dict[tuple[str, int], datetime] = {}
    numbered = {}
    for event in sessionize(full_rows):
        key = (event["person_id"], event["session_no"])
        starts.setdefault(key, event["timestamp"])
        numbered[event["event_id"]] = (starts[key], event["session_no"])
    columns: dict[str, list[Any]] = {f.name: [] for f in EVENT_SCHEMA}
    for full in full_rows:
        start, number = numbered[full["event_id"]]
        full = {"session_start": start, "session_number": number, **full}
        for name in columns:
            columns[name].append(full.get(name))
    return pa.table(columns, schema=EVENT_SCHEMA)


def person_table(persons: dict[str, dict[str, Any]]) -> pa.Table:
    columns: dict[str, list[Any]] = {f.name: [] for f in PERSON_SCHEMA}
    for pid, attrs in persons.items():
        full = {"person_id": pid, "person_namespace": "ECID", "ecid": f"ECID-{pid}", **attrs}
        for name in columns:
            columns[name].append(full.get(name))
    return pa.table(columns, schema=PERSON_SCHEMA)


def run(
    tree: Node | dict[str, Any],
    rows: list[dict[str, Any]],
    *,
    persons: dict[str, dict[str, Any]] | None = None,
    params: dict[str, Any] | None = None,
    computed: dict[str, str] | None = None,
    sessions_in_lake: bool = True,
) -> set[str]:
    """Members selected by a filter tree (or rules mapping) on ``rows``; sessions from the
    rows' session columns (as the lake keeps them) or computed by the query."""
    node = parse_rules(tree) if isinstance(tree, dict) else tree
    builder = QueryBuilder(
        params=params, computed_fields=computed, sessions_in_lake=sessions_in_lake
    )
    query = builder.build(f"SELECT person_id FROM {builder.tree(node)}")
    return execute(query.sql, query.params, rows, persons)


def execute(
    sql: str,
    params: dict[str, Any],
    rows: list[dict[str, Any]],
    persons: dict[str, dict[str, Any]] | None = None,
) -> set[str]:
    con = duckdb.connect()
    try:
        con.from_arrow(event_table(rows)).create_view("raw_events")
        con.from_arrow(person_table(persons or {})).create_view("raw_persons")
        return {r[0] for r in con.execute(sql, params).fetchall()}
    finally:
        con.close()


def write_lake(root: Path, rows: list[dict[str, Any]], persons: dict[str, dict[str, Any]]) -> Lake:
    """A lake with ``rows`` split into daily partitions by their timestamp's UTC date."""
    lake = Lake(root)
    by_day: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        by_day.setdefault(row["timestamp"].date().isoformat(), []).append(
            {"event_id": f"e{i:04d}", **row}
        )
    for day, day_rows in by_day.items():
        write_parquet(event_table(day_rows), lake.event_partition(day) / "part-0.parquet")
    write_parquet(person_table(persons), lake.persons / "persons.parquet")
    return lake
