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

How, cheaply: each (person, date) gets a summary (first and last event, sessions opened
inside the date): for live files one vectorised pass (they are sorted by person and time),
for what the writer lands one narrow DuckDB pass before anything is written. Chaining the
summaries date by date (a small DuckDB window over person-days) gives the state each
(person, date) starts from (:func:`plan_sessions`); the writer's finalize stream numbers its
rows from that state as it writes them (:class:`StreamNumberer`), so a landed file is written
once; a live file is rewritten only when its sessions change (:func:`finish_sessions`).
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Callable, Iterable
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cja_audiences.extract.normalize import conform
from cja_audiences.extract.publish import publish_partitions, staged_partitions, staging_dir
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA, TIMESTAMP
from cja_audiences.lake.sessions import SessionRules, sessionized, with_rules
from cja_audiences.lake.storage import parquet_file

ROW_GROUP_SIZE = 128 * 1024
_ORDER = [("person_id", "ascending"), ("timestamp", "ascending"), ("event_id", "ascending")]
_SUMMARY = pa.schema(
    [
        ("person_id", pa.string()),
        ("date", pa.string()),
        ("first_ts", pa.int64()),
        ("last_ts", pa.int64()),
        ("first_forced", pa.bool_()),
        ("opened", pa.int64()),  # sessions opened inside the date after its first event
        ("last_open", pa.int64()),  # start of the last of those (null: none)
    ]
)
T = TypeVar("T")


def _files(partition: Path) -> list[Path]:
    return sorted(partition.glob("*.parquet"))


def _parallel(func: Callable[[Any], T], items: Iterable[Any]) -> list[T]:
    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        return list(pool.map(func, items))


class _Rows:
    """One file's rows with the vectors sessions need, computed in (person, time, event)
    order (``view``); results go back to the file's own row order, so a file is never
    reordered (a sort of its narrow columns only, when it is not in that order already)."""

    def __init__(self, table: pa.Table, rules: SessionRules) -> None:
        self.table = table
        keys = [c for c in (*_NARROW, "event_type") if c in table.column_names]
        view = table.select(keys)
        self.order: np.ndarray | None = None
        if not _sorted(view):
            indices = pc.sort_indices(view, sort_keys=_ORDER)
            view = view.take(indices)
            self.order = indices.to_numpy()
        self.view = view
        table = view
        n = table.num_rows
        pid = table.column("person_id")
        self.ts = table.column("timestamp").cast(pa.int64()).to_numpy()
        firsts = np.ones(n, dtype=bool)
        if n > 1:
            firsts[1:] = ~pc.equal(pid.slice(1), pid.slice(0, n - 1)).to_numpy(zero_copy_only=False)
        self.starts = np.flatnonzero(firsts)  # each person's first row
        self.ends = np.append(self.starts[1:] - 1, n - 1) if n else self.starts
        self.group = np.cumsum(firsts) - 1
        self.pids = pc.take(pid, pa.array(self.starts)) if n else pa.array([], pa.string())
        self.forced = np.zeros(n, dtype=bool)
        if rules.start_event_types and "event_type" in table.column_names:
            starts = pa.array(list(rules.start_event_types), pa.string())
            self.forced = pc.fill_null(pc.is_in(table.column("event_type"), starts), False)
            self.forced = self.forced.to_numpy(zero_copy_only=False)
        timeout = rules.timeout_minutes * 60_000_000
        gap = np.zeros(n, dtype=bool)
        gap[1:] = self.ts[1:] - self.ts[:-1] > timeout
        # a new session inside the file: not the person's first row, and a gap or a start event
        self.inner_new = (gap | self.forced) & ~firsts
        self.timeout = timeout

    def summary(self, date: str) -> pa.Table:
        opened = (
            np.add.reduceat(self.inner_new.astype(np.int64), self.starts)
            if len(self.starts)
            else np.array([], np.int64)
        )
        last_idx = (
            np.maximum.reduceat(np.where(self.inner_new, np.arange(len(self.ts)), -1), self.starts)
            if len(self.starts)
            else np.array([], np.int64)
        )
        last_open = pa.array(
            np.where(last_idx >= 0, self.ts[np.maximum(last_idx, 0)], 0), mask=last_idx < 0
        )
        return pa.table(
            [
                self.pids,
                pa.array([date] * len(self.starts), pa.string()),
                pa.array(self.ts[self.starts]),
                pa.array(self.ts[self.ends]),
                pa.array(self.forced[self.starts]),
                pa.array(opened),
                last_open,
            ],
            schema=_SUMMARY,
        )

    def numbered(self, seeds: pa.Table) -> tuple[np.ndarray, np.ndarray]:
        """(session start in µs, session number) per row, from each person's seed state
        (``person_id, p_ts, p_start, p_number``: the event before this date's first)."""
        at = pc.index_in(self.pids, seeds.column("person_id")).to_numpy(zero_copy_only=False)
        known = ~np.isnan(at) if at.dtype.kind == "f" else np.ones(len(at), dtype=bool)
        at = np.nan_to_num(at, nan=0).astype(np.int64) if at.dtype.kind == "f" else at

        def seed(name: str) -> tuple[np.ndarray, np.ndarray]:
            column = seeds.column(name)
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            valid = pc.is_valid(column).to_numpy(zero_copy_only=False)
            taken = values[at] if len(values) else np.zeros(len(at), np.int64)
            ok = (valid[at] if len(valid) else np.zeros(len(at), bool)) & known
            return taken, ok

        p_ts, has_prev = seed("p_ts")
        p_start, has_start = seed("p_start")
        p_number, _ = seed("p_number")
        return self.number(p_ts, has_prev, p_start, has_start, p_number)

    def number(
        self,
        p_ts: np.ndarray,
        has_prev: np.ndarray,
        p_start: np.ndarray,
        has_start: np.ndarray,
        p_number: np.ndarray,
    ) -> tuple[np.ndarray, np.ndarray]:
        """(session start in µs, session number) per row, from each person's state before
        their first row here (arrays over persons, in row order)."""
        first_new = (
            ~has_prev | (self.ts[self.starts] - p_ts > self.timeout) | self.forced[self.starts]
        )
        new = self.inner_new.copy()
        new[self.starts] = first_new
        counts = np.cumsum(new)
        before = counts[self.starts] - new[self.starts]
        number = np.where(has_prev, p_number, 0)[self.group] + counts - before[self.group]
        last_new = np.maximum.accumulate(np.where(new, np.arange(len(new)), -1))
        inside = last_new >= self.starts[self.group]
        carried = np.where(has_start, p_start, 0)[self.group]
        start = np.where(inside, self.ts[np.maximum(last_new, 0)], carried)
        if self.order is not None:  # back to the file's row order
            start[self.order], number[self.order] = start.copy(), number.copy()
        return start, number


def _sorted(table: pa.Table) -> bool:
    """Each person's rows together and in (time, event) order: the writer's order, and the
    synthetic source's (persons in generation order), so neither needs a sort."""
    n = table.num_rows
    if n < 2:
        return True
    pid = table.column("person_id")
    same = pc.equal(pid.slice(0, n - 1), pid.slice(1))
    changes = n - 1 - int(pc.sum(same.cast(pa.int64())).as_py() or 0)
    if changes + 1 != pc.count_distinct(pid).as_py():
        return False  # a person's rows are split
    ts, eid = table.column("timestamp"), table.column("event_id")
    ta, tb = ts.slice(0, n - 1), ts.slice(1)
    in_order = pc.or_(
        pc.less(ta, tb),
        pc.and_(pc.equal(ta, tb), pc.less_equal(eid.slice(0, n - 1), eid.slice(1))),
    )
    return bool(pc.all(pc.or_(pc.invert(same), in_order)).as_py())


_NARROW = ["person_id", "timestamp", "event_id"]


def _read(path: Path, rules: SessionRules, *, full: bool = False, stored: bool = False) -> _Rows:
    parquet = parquet_file(path)  # live files may be in object storage
    names = parquet.schema_arrow.names
    columns = None if full else [*_NARROW, *(["event_type"] if rules.start_event_types else [])]
    if stored and not full:
        columns += [c for c in ("session_start", "session_number") if c in names]
    return _Rows(parquet.read(columns=columns), rules)


@dataclass
class SessionPlan:
    """Sessions of one landing, decided before anything is written: the state each
    (person, staged or later live date) starts from, and the live dates to recheck."""

    rules: SessionRules
    seeds: dict[str, pa.Table]  # date -> person_id, p_ts, p_start, p_number
    others: dict[str, Path]  # live dates whose sessions the landing may change
    full: bool
    seconds: float  # spent on sessions so far

    def seeds_for(self, day: str) -> pa.Table:
        return self.seeds.get(day) or _empty_seeds()


def plan_sessions(
    lake: Lake, staged: dict[str, list[pa.Table]], rules: SessionRules, *, everything: bool = False
) -> SessionPlan:
    """The session plan for landing ``staged`` (date -> its (person, date) summaries, see
    :func:`summary_sql`); ``everything``: recompute the whole lake."""
    started = time.perf_counter()
    live = {
        p.name.removeprefix("date="): p
        for p in sorted(lake.events.glob("date=*"))
        if p.is_dir() and p.name.removeprefix("date=") not in staged
    }
    first = min(staged, default="")
    earlier = {d: p for d, p in live.items() if d < first}
    # history built with other rules (or asked to): redo it all
    full = everything or not sessionized([f for p in earlier.values() for f in _files(p)], rules)
    others = {d: p for d, p in live.items() if full or d > first}
    jobs = [(d, f) for d, p in sorted(others.items()) for f in _files(p)]
    summaries = [t for tables in staged.values() for t in tables]
    summaries += _parallel(lambda job: _read(job[1], rules).summary(job[0]), jobs)
    seed = _earlier_state(summaries, [] if full else sorted(earlier.items(), reverse=True), rules)
    con = duckdb.connect()
    try:
        seeds = _chain(con, summaries, seed, rules)
    finally:
        con.close()
    return SessionPlan(rules, _split(seeds), others, full, time.perf_counter() - started)


def finish_sessions(plan: SessionPlan, staging: Path) -> dict[str, Any]:
    """Stage the live partitions whose sessions the plan changes (whole); what was done."""
    started = time.perf_counter()
    rules = plan.rules
    dated = [(d, f) for d, p in sorted(plan.others.items()) for f in _files(p)]

    def number(job: tuple[str, Path]) -> bool:
        day, path = job
        rows = _read(path, rules, stored=True)
        start, number = rows.numbered(plan.seeds_for(day))
        if _unchanged(rows.table, start, number):
            return False
        target = staging / f"date={day}" / path.name
        target.parent.mkdir(exist_ok=True)
        _write(_read(path, rules, full=True), plan.seeds_for(day), target, rules)
        return True

    changed = _parallel(number, dated)
    rewritten = sorted({day for (day, _), hit in zip(dated, changed, strict=True) if hit})
    for day in rewritten:  # a changed partition goes live whole: stage its other files too
        for path in _files(plan.others[day]):
            target = staging / f"date={day}" / path.name
            if not target.exists():
                _write(_read(path, rules, full=True), plan.seeds_for(day), target, rules)
    return {
        "timeout_minutes": rules.timeout_minutes,
        "start_event_types": list(rules.start_event_types),
        "recomputed_history": plan.full,
        "rewritten": rewritten,
        "seconds": round(plan.seconds + time.perf_counter() - started, 3),
    }


def sessionize_staged(
    lake: Lake, staging: Path, rules: SessionRules, *, everything: bool = False
) -> dict[str, Any]:
    """Give every staged partition written without sessions its session columns (a second
    write of each file: the partition writer numbers while it writes instead), and stage
    the live partitions whose sessions the staged data changes (``everything``: recompute
    the whole lake). Returns what was done and how long it took."""
    started = time.perf_counter()
    staged = {p.name.removeprefix("date="): p for p in staged_partitions(staging)}
    if not staged and not everything:
        return {"rewritten": [], "seconds": 0.0}
    jobs = [(d, f) for d, p in sorted(staged.items()) for f in _files(p)]
    summaries: dict[str, list[pa.Table]] = {d: [] for d in staged}
    for (day, _), table in zip(
        jobs, _parallel(lambda job: _read(job[1], rules).summary(job[0]), jobs), strict=True
    ):
        summaries[day].append(table)
    plan = plan_sessions(lake, summaries, rules, everything=everything)
    _parallel(
        lambda job: _write(_read(job[1], rules, full=True), plan.seeds_for(job[0]), job[1], rules),
        jobs,
    )
    plan.seconds = time.perf_counter() - started  # the staged files' second write included
    return finish_sessions(plan, staging)


def summary_sql(relation: str, rules: SessionRules) -> tuple[str, list[Any]]:
    """SQL of one date's (person, date) summaries (``_SUMMARY`` without ``date``) over the
    events ``relation`` selects, and the parameters it appends: what the writer computes
    before it writes, so each file is written once with its sessions."""
    params: list[Any] = []
    forced = "false"
    if rules.start_event_types:
        forced = "coalesce(list_contains(?::VARCHAR[], event_type), false)"
        params.append(list(rules.start_event_types))
    timeout = int(rules.timeout_minutes) * 60_000_000
    return (
        f"""
        WITH d AS ({relation}), o AS (
            SELECT person_id, "timestamp" AS ts, event_id, {forced} AS forced,
                   lag("timestamp") OVER (PARTITION BY person_id ORDER BY "timestamp", event_id)
                     AS prev
              FROM d
        ), n AS (
            SELECT *, prev IS NOT NULL AND (epoch_us(ts) - epoch_us(prev) > {timeout} OR forced)
                     AS new
              FROM o
        )
        SELECT person_id, epoch_us(min(ts)) AS first_ts, epoch_us(max(ts)) AS last_ts,
               arg_min(forced, struct_pack(t := ts, e := event_id)) AS first_forced,
               count_if(new)::BIGINT AS opened, epoch_us(max(CASE WHEN new THEN ts END)) AS last_open
          FROM n GROUP BY person_id""",
        params,
    )


def dated_summary(table: pa.Table, date: str) -> pa.Table:
    """:func:`summary_sql`'s result as the planner's summary of ``date``."""
    table = table.append_column("date", pa.array([date] * table.num_rows, pa.string()))
    return table.select(_SUMMARY.names).cast(_SUMMARY)


SEED_COLUMNS = ("_p_ts", "_p_start", "_p_number")


class StreamNumberer:
    """Session columns for a stream of batches sorted by person, then time and event id
    (the writer's order), each row carrying its person's seed in ``SEED_COLUMNS``; a person's
    rows may span batches (the last row of one batch is the next one's state)."""

    def __init__(self, rules: SessionRules) -> None:
        self.rules = rules
        self.carry: tuple[Any, int, int, int] | None = None  # person, ts, start, number

    def __call__(self, table: pa.Table) -> pa.Table:
        if not table.num_rows:
            return table
        rows = _Rows(table, self.rules)
        firsts = rows.starts if rows.order is None else rows.order[rows.starts]
        at = pa.array(firsts)

        def seed(name: str) -> tuple[np.ndarray, np.ndarray]:
            column = pc.take(table.column(name), at)
            values = pc.fill_null(column, 0).to_numpy(zero_copy_only=False).astype(np.int64)
            return values, pc.is_valid(column).to_numpy(zero_copy_only=False)

        (p_ts, has_prev), (p_start, has_start), (p_number, _) = map(seed, SEED_COLUMNS)
        if self.carry is not None and rows.pids[0].as_py() == self.carry[0]:
            _, p_ts[0], p_start[0], p_number[0] = self.carry
            has_prev[0] = has_start[0] = True
        start, number = rows.number(p_ts, has_prev, p_start, has_start, p_number)
        last = len(start) - 1 if rows.order is None else int(rows.order[-1])
        pid = table.column("person_id")[last].as_py()
        self.carry = (pid, int(rows.ts[-1]), int(start[last]), int(number[last]))
        table = table.drop_columns(
            [c for c in ("session_start", "session_number") if c in table.column_names]
        )
        table = table.append_column("session_start", pa.array(start).cast(TIMESTAMP))
        return table.append_column("session_number", pa.array(number.astype(np.int32)))


def _earlier_state(
    summaries: list[pa.Table], earlier: list[tuple[str, Path]], rules: SessionRules
) -> pa.Table:
    """Each affected person's last event before the first staged date (newest dates first,
    stopping when everyone is found): ``person_id, t, s, n``."""
    needed = pc.unique(pa.chunked_array([s.column("person_id") for s in summaries], pa.string()))
    found: list[pa.Table] = []
    for _, partition in earlier:
        if not len(needed):
            break
        for path in _files(partition):
            columns = [*_NARROW, "session_start", "session_number"]
            table = parquet_file(path).read(columns=columns)
            rows = _Rows(table, rules)
            ends = rows.ends if rows.order is None else rows.order[rows.ends]
            last = table.take(pa.array(ends))
            last = last.filter(pc.is_in(last.column("person_id"), needed))
            found.append(
                pa.table(
                    {
                        "person_id": last.column("person_id"),
                        "t": last.column("timestamp").cast(pa.int64()),
                        "s": last.column("session_start").cast(pa.int64()),
                        "n": last.column("session_number").cast(pa.int64()),
                    }
                )
            )
            needed = needed.filter(pc.invert(pc.is_in(needed, last.column("person_id"))))
    schema = pa.schema(
        [("person_id", pa.string()), ("t", pa.int64()), ("s", pa.int64()), ("n", pa.int64())]
    )
    return pa.concat_tables(found).cast(schema) if found else schema.empty_table()


def _chain(
    con: duckdb.DuckDBPyConnection, summaries: list[pa.Table], seed: pa.Table, rules: SessionRules
) -> pa.Table:
    """The state before each (person, date)'s first event: the previous event's time, the
    session it was in (start) and that session's number."""
    con.register("summary", pa.concat_tables(summaries) if summaries else _SUMMARY.empty_table())
    con.register("seed", seed)
    return con.sql(
        """
        WITH s AS (
            SELECT m.*, e.t AS seed_t, e.s AS seed_s, e.n AS seed_n,
                   coalesce(lag(last_ts) OVER w, e.t) AS p_ts
              FROM summary m LEFT JOIN seed e USING (person_id)
            WINDOW w AS (PARTITION BY person_id ORDER BY date)
        ), f AS (
            SELECT *, first_forced OR p_ts IS NULL OR first_ts - p_ts > $timeout AS first_new
              FROM s
        ), g AS (
            SELECT *, first_new::BIGINT + opened AS count,
                   CASE WHEN opened > 0 THEN last_open WHEN first_new THEN first_ts END AS open_at
              FROM f
        )
        SELECT person_id, date, p_ts,
               coalesce(max(open_at) OVER before, seed_s) AS p_start,
               coalesce(seed_n, 0) + coalesce(sum(count) OVER before, 0) AS p_number
          FROM g
        WINDOW before AS (PARTITION BY person_id ORDER BY date
                          ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
        ORDER BY date, person_id
        """,
        params={"timeout": rules.timeout_minutes * 60_000_000},
    ).to_arrow_table()


def _empty_seeds() -> pa.Table:
    return pa.table(
        {
            "person_id": pa.array([], pa.string()),
            "p_ts": pa.array([], pa.int64()),
            "p_start": pa.array([], pa.int64()),
            "p_number": pa.array([], pa.int64()),
        }
    )


def _split(seeds: pa.Table) -> dict[str, pa.Table]:
    out: dict[str, pa.Table] = {}
    dates = seeds.column("date")
    for day in pc.unique(dates).to_pylist():
        out[day] = seeds.filter(pc.equal(dates, day)).drop_columns(["date"])
    return out


def _unchanged(table: pa.Table, start: np.ndarray, number: np.ndarray) -> bool:
    if "session_number" not in table.column_names:
        return False
    old_n = table.column("session_number")
    old_s = table.column("session_start")
    if old_n.null_count or old_s.null_count:
        return False
    same_n = np.array_equal(old_n.to_numpy().astype(np.int64), number)
    return same_n and np.array_equal(old_s.cast(pa.int64()).to_numpy(), start)


def _write(rows: _Rows, seeds: pa.Table | None, target: Path, rules: SessionRules) -> None:
    """``rows`` with their session columns, atomically at ``target`` (may be their file)."""
    start, number = rows.numbered(seeds if seeds is not None else _empty_seeds())
    table = rows.table
    for name in ("session_start", "session_number"):
        if name in table.column_names:
            table = table.drop_columns([name])
    table = table.append_column("session_start", pa.array(start).cast(TIMESTAMP))
    table = table.append_column("session_number", pa.array(number.astype(np.int32)))
    schema = with_rules(EVENT_SCHEMA, rules)
    tmp = target.with_name(f".{target.name}.sessions.tmp")
    with pq.ParquetWriter(tmp, schema, compression="zstd") as writer:
        writer.write_table(
            conform(table).replace_schema_metadata(schema.metadata), row_group_size=ROW_GROUP_SIZE
        )
    os.replace(tmp, target)


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


if __name__ == "__main__":
    sys.exit(main())
