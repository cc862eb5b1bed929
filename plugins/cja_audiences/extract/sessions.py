"""Write each event's session (``session_start``, ``session_number``) before partitions go live.

Why here: every sequence or session audience would otherwise re-sessionize up to 90 days of
events on every run. Sessions are a property of a person's whole history, so the extract
keeps them right whatever it lands:

* Across partition boundaries: a session that crosses midnight keeps one key and number; the
  state carried into the first staged date is each person's last earlier event (its time,
  session start and number), read from the live partitions' narrow columns.
* Late data and deliveries in any order: a late event can merge two sessions or split one,
  and renumbers the person's later sessions; every live partition after the earliest staged
  date is recomputed, and those whose session columns change are rewritten (staged and
  swapped in whole, like any other partition).
* Rules as configuration: the rules (timeout, session-start event types) are recorded in
  every file's footer; when the live history was built with other rules (or before sessions
  were kept), the whole lake is recomputed.

Two passes, both over narrow columns or one file at a time: a timeline of the affected dates
gives each (person, date) the session state before its first event; then each file's rows are
numbered from that state, file by file on every core.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences.extract.normalize import conform
from cja_audiences.extract.publish import publish_partitions, staged_partitions, staging_dir
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA
from cja_audiences.lake.sessions import SessionRules, sessionized, with_rules

ROW_GROUP_SIZE = 128 * 1024
_SEEDS = "__session_seeds"
_WINDOW = "WINDOW w AS (PARTITION BY person_id ORDER BY ts, eid)"


def _numbered(source: str, forced: str) -> str:
    """``source`` (person_id, ts, eid, seed_ts, seed_start, seed_number, ...) with each row's
    session ``number`` and ``start``: a new session when the gap to the previous event (the
    seed for the first row) is above the timeout, or on a session-start event."""
    return f"""
        SELECT *, coalesce(seed_number, 0) + sum(new::INT) OVER w AS number,
               coalesce(max(CASE WHEN new THEN ts END) OVER w, seed_start) AS start
          FROM (SELECT *, {forced} OR coalesce(
                    ts - coalesce(lag(ts) OVER w, seed_ts) > to_minutes($timeout), true) AS new
                  FROM {source} {_WINDOW})
        {_WINDOW}"""


def _forced(rules: SessionRules) -> str:
    return (
        "coalesce(list_contains($starts, event_type), false)"
        if rules.start_event_types
        else "false"
    )


def _params(rules: SessionRules, **extra: Any) -> dict[str, Any]:
    params: dict[str, Any] = {"timeout": rules.timeout_minutes, **extra}
    if rules.start_event_types:
        params["starts"] = list(rules.start_event_types)
    return params


def _files(partition: Path) -> list[Path]:
    return sorted(partition.glob("*.parquet"))


def sessionize_staged(
    lake: Lake, staging: Path, rules: SessionRules, *, everything: bool = False
) -> dict[str, Any]:
    """Give every staged partition its session columns; stage the live partitions whose
    sessions the staged data changes (``everything``: recompute the whole lake). Returns
    what was done and how long it took."""
    started = time.perf_counter()
    staged = {p.name.removeprefix("date="): p for p in staged_partitions(staging)}
    if not staged and not everything:
        return {"rewritten": [], "seconds": 0.0}
    live = {
        p.name.removeprefix("date="): p
        for p in sorted(lake.events.glob("date=*"))
        if p.is_dir() and p.name.removeprefix("date=") not in staged
    }
    first = min(staged, default="")
    earlier = [f for d, p in live.items() if d < first for f in _files(p)]
    # history built with other rules (or asked to): redo it all
    full = everything or not sessionized(earlier, rules)
    others = {d: p for d, p in live.items() if full or d > first}
    if full:
        earlier = []
    con = duckdb.connect()
    try:
        con.execute("SET TimeZone = 'UTC'")
        changed = _seed(con, rules, staged, others, earlier)
        jobs = [(f, f, d) for d, p in staged.items() for f in _files(p)]
        for day in changed:
            (staging / f"date={day}").mkdir()
            jobs += [(f, staging / f"date={day}" / f.name, day) for f in _files(others[day])]

        def number(job: tuple[Path, Path, str]) -> None:
            cursor = con.cursor()
            try:
                _number_file(cursor, rules, *job)
            finally:
                cursor.close()

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            list(pool.map(number, jobs))
        con.execute(f"DROP TABLE IF EXISTS {_SEEDS}")
    finally:
        con.close()
    return {
        "timeout_minutes": rules.timeout_minutes,
        "start_event_types": list(rules.start_event_types),
        "recomputed_history": full,
        "rewritten": changed,
        "seconds": round(time.perf_counter() - started, 3),
    }


def rebuild_sessions(lake: Lake, rules: SessionRules) -> dict[str, Any]:
    """Recompute every partition's sessions, e.g. after the session settings changed;
    partitions whose sessions do not change are left as they are."""
    with staging_dir(lake.events) as staging:
        summary = sessionize_staged(lake, staging, rules, everything=True)
        publish_partitions(staging, lake.events)
    return summary


def main(argv: list[str] | None = None) -> int:
    from cja_audiences.settings import get_settings

    settings = get_settings()
    parser = argparse.ArgumentParser(
        prog="python -m cja_audiences.extract.sessions",
        description="Recompute the lake's sessions with the configured session settings "
        "(CJA_AUDIENCES_SESSION_TIMEOUT_MINUTES, CJA_AUDIENCES_SESSION_START_EVENT_TYPES).",
    )
    parser.add_argument("--home", type=Path, default=settings.home, help="the lake root")
    args = parser.parse_args(argv)
    summary = rebuild_sessions(Lake(args.home), SessionRules.from_settings(settings))
    print(json.dumps(summary, indent=2))
    return 0


def _seed(
    con: duckdb.DuckDBPyConnection,
    rules: SessionRules,
    staged: dict[str, Path],
    others: dict[str, Path],
    earlier: list[Path],
) -> list[str]:
    """Build the (person, date) → state-before-the-date table; the other dates that change."""
    files = [str(f) for p in [*staged.values(), *others.values()] for f in _files(p)]
    event_type = ", event_type" if rules.start_event_types else ""
    if any(_has_sessions(Path(f)) for f in files):
        old = "session_start AS old_start, session_number AS old_number"
    else:
        old = "NULL::TIMESTAMPTZ AS old_start, NULL::INT AS old_number"
    if earlier:
        seed = (
            'SELECT person_id, max(struct_pack(t := "timestamp", e := event_id,'
            " s := session_start, n := session_number)) AS last"
            " FROM read_parquet($earlier, union_by_name = true, hive_partitioning = false)"
            " SEMI JOIN (SELECT DISTINCT person_id FROM rows) USING (person_id) GROUP BY person_id"
        )
    else:
        seed = (
            "SELECT NULL::VARCHAR AS person_id, NULL::STRUCT(t TIMESTAMPTZ, e VARCHAR,"
            " s TIMESTAMPTZ, n INTEGER) AS last WHERE false"
        )
    sql = f"""
        CREATE OR REPLACE TABLE {_SEEDS} AS
        WITH rows AS (
            SELECT person_id, "timestamp" AS ts, event_id AS eid, date::VARCHAR AS date,
                   {old}{event_type}
              FROM read_parquet($files, union_by_name = true, hive_partitioning = true)
        ), seed AS ({seed}),
        seeded AS (
            SELECT r.*, s.last.t AS seed_ts, s.last.s AS seed_start, s.last.n AS seed_number
              FROM rows r LEFT JOIN seed s USING (person_id)
        ), numbered AS ({_numbered("seeded", _forced(rules))}),
        carried AS (
            SELECT person_id, date, ts, eid,
                   coalesce(lag(ts) OVER w, seed_ts) AS p_ts,
                   CASE WHEN lag(ts) OVER w IS NULL THEN seed_start ELSE lag(start) OVER w END
                       AS p_start,
                   CASE WHEN lag(ts) OVER w IS NULL THEN seed_number ELSE lag(number) OVER w END
                       AS p_number,
                   old_start IS DISTINCT FROM start OR old_number IS DISTINCT FROM number
                       AS changed
              FROM numbered {_WINDOW}
        )
        SELECT person_id, date, min(struct_pack(t := ts, e := eid, pt := p_ts, ps := p_start,
                   pn := p_number)) AS first, bool_or(changed) AS changed
          FROM carried GROUP BY person_id, date
    """
    params = _params(rules, files=files)
    if earlier:
        params["earlier"] = [str(f) for f in earlier]
    con.execute(sql, params)
    rows = con.execute(
        f"SELECT DISTINCT date FROM {_SEEDS} WHERE changed AND list_contains($others, date)"
        " ORDER BY date",
        {"others": list(others) or [""]},
    ).fetchall()
    return [r[0] for r in rows]


def _has_sessions(path: Path) -> bool:
    return "session_number" in pq.read_schema(path).names


def _number_file(
    con: duckdb.DuckDBPyConnection, rules: SessionRules, source: Path, target: Path, day: str
) -> None:
    """Rewrite one partition file with its session columns (same rows, same order)."""
    old = " EXCLUDE (session_start, session_number)" if _has_sessions(source) else ""
    seeded = f"""(SELECT e.*{old}, e."timestamp" AS ts, e.event_id AS eid,
                     s.first.pt AS seed_ts, s.first.ps AS seed_start, s.first.pn AS seed_number
                FROM read_parquet($file, hive_partitioning = false) e
                LEFT JOIN (SELECT * FROM {_SEEDS} WHERE date = $day) s USING (person_id))"""
    sql = (
        "SELECT * EXCLUDE (ts, eid, seed_ts, seed_start, seed_number, new, number, start),"
        " start AS session_start, number::INT AS session_number"
        f" FROM ({_numbered(seeded, _forced(rules))})"
        ' ORDER BY person_id, "timestamp", event_id'
    )
    reader = con.sql(sql, params=_params(rules, file=str(source), day=day)).to_arrow_reader(
        ROW_GROUP_SIZE
    )
    schema = with_rules(EVENT_SCHEMA, rules)
    tmp = target.with_name(f".{target.name}.sessions.tmp")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        for batch in reader:
            table = conform(pa.Table.from_batches([batch])).replace_schema_metadata(schema.metadata)
            writer.write_table(table, row_group_size=ROW_GROUP_SIZE)
    os.replace(tmp, target)


if __name__ == "__main__":
    sys.exit(main())
