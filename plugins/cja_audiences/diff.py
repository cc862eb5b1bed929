"""Membership diff: who enters and who exits an audience between two runs (DESIGN §3, issue 6).

A member is the triple (person_id, namespace, identity), so a person whose published identity
changed exits with the old value and enters with the new one; a member whose split arm now
goes to another AEP audience (new shares or salt) exits the old one and enters the new one.
Both files also say why (issue 19): ``why`` (the filter-branch code now, legend in run.json
``compute.why``), ``why_before`` (the code in the previous run), ``reason``
(``cja_audiences.why.REASONS``) and ``split``. The diff is exact (full keys,
no hashes standing in for them) and bounded in memory at any audience size: both member
files are sorted by person_id, so their row-group statistics split the key space into ranges
of a few million rows, and each range is diffed with one full outer join. A range never holds
more than its share of rows, so the hash table stays small and nothing spills to disk.

The base is the committed snapshot *corrected* by what uncommitted runs may have sent
(:class:`Corrections`, from ``publish.sent``): a member one of them may have exited enters
again, and anyone one of them may have realized who is not a member exits. So AEP converges
to the new snapshot whatever an abandoned, failed or racing run left behind.
"""

from __future__ import annotations

import tempfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field, replace
from datetime import datetime
from itertools import pairwise
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences import why
from cja_audiences.lake.layout import atomic_path
from cja_audiences.lake.runs import (
    ENTERED,
    EXITED,
    MEMBERS,
    MEMBERSHIP,
    RENEWED,
    read_run_record,
    update_run_record,
)
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.lake.storage import LakePath, connect, is_remote, parquet_file, parquet_rows

# Rows (both sides together) per key range: ~2.5M keeps a range's hash table near 250 MB.
RANGE_ROWS = 5_000_000
# DuckDB spills instead of failing if a range is larger than expected (one huge person).
MEMORY_LIMIT = "1GB"
THREADS = 2

_KEY = "person_id, namespace, identity"
# Columns members.parquet may carry beyond the key (older runs have none: read as NULL).
_CARRIED = {"why": "BIGINT", "split": "VARCHAR"}
CHANGE_SCHEMA = pa.schema(
    [
        *MEMBER_SCHEMA,
        pa.field("why", pa.int64()),
        pa.field("why_before", pa.int64()),
        pa.field("reason", pa.string()),
        pa.field("split", pa.string()),
    ]
)
# Given the persons who exited (not for another identity), their code now and reason.
ExitExplainer = Callable[[list[str]], pa.Table]


@dataclass(frozen=True)
class Corrections:
    """Sends no committed snapshot accounts for: member files sent as realized or exited."""

    realized: list[LakePath] = field(default_factory=list)
    exited: list[LakePath] = field(default_factory=list)
    run_ids: list[str] = field(default_factory=list)
    where: str = "true"  # SQL predicate on the sent rows: one bucket's persons (``buckets``)

    def __bool__(self) -> bool:
        return bool(self.realized or self.exited)

    def only(self, where: str) -> Corrections:
        """The same sends, restricted to the persons ``where`` selects."""
        return replace(self, where=where)


def diff_members(
    run_dir: LakePath,
    previous_run_dir: LakePath | None,
    explain_exits: ExitExplainer | None = None,
    renew_before: datetime | None = None,
    *,
    previous_members: LakePath | None = None,
    corrections: Corrections | None = None,
) -> dict[str, Any]:
    """Write entered/exited.parquet (CHANGE_SCHEMA, sorted by person_id) and renewed.parquet;
    record the counts.

    ``previous_run_dir`` is the last *committed* run (``snapshots.current_run_dir``); None means
    the audience was never published, so every member enters. ``explain_exits`` evaluates
    the exits on the lake (``why.exit_reasons``); without it their reason is ``left``.
    ``previous_members`` replaces that run's members file (a bucket diffs against its slice).
    ``corrections`` are the uncommitted sends to supersede (module doc).
    Renewed: unchanged members whose ``valid_until`` in the previous run's membership file is
    before ``renew_before`` (all unchanged ones when that run has no such file); none when
    ``renew_before`` is None. A member a correction enters again is sent as entered, not
    renewed.
    """
    started = time.perf_counter()
    corrections = corrections or Corrections()
    members = run_dir / MEMBERS
    size = _rows(members)
    previous_size = _rows(previous_run_dir / MEMBERS) if previous_run_dir else 0
    if previous_run_dir is None and not corrections:
        _first_run(members, run_dir)
        entered, exited, corrected = size, 0, (0, 0)
    else:
        previous = previous_members or (previous_run_dir / MEMBERS if previous_run_dir else None)
        previous_size = _rows(previous) if previous is not None else 0
        entered, exited, corrected = _diff_files(
            members, previous, run_dir, explain_exits, corrections
        )
    renewed = write_renewals(run_dir, previous_run_dir, renew_before, skip_entered=corrected[0] > 0)
    record = {
        "entered": entered,
        "exited": exited,
        "renewed": renewed,
        "renew_before": renew_before.isoformat() if renew_before else None,
        "unchanged": size - (entered - corrected[0]),
        "size": size,
        "previous_size": previous_size,
        "previous_run_id": previous_run_dir.name if previous_run_dir else None,
        "corrections": {
            "run_ids": corrections.run_ids,
            "entered": corrected[0],
            "exited": corrected[1],
        },
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    update_run_record(run_dir, diff=record)
    return record


def _rows(path: LakePath) -> int:
    """Row count from the Parquet footer: no data is read."""
    return parquet_rows(path)


def _first_run(members: LakePath, run_dir: LakePath) -> None:
    """Everybody enters (streamed batch by batch: members are sorted already); an empty
    exited file keeps publish's reading uniform."""
    source = parquet_file(members)
    names = source.schema_arrow.names
    with (
        atomic_path(run_dir / ENTERED) as tmp,
        pq.ParquetWriter(tmp, CHANGE_SCHEMA, compression="zstd") as writer,
    ):
        for batch in source.iter_batches(batch_size=1 << 20):
            rows = batch.num_rows
            columns = {name: batch.column(name) for name in names}
            values = {
                "why_before": pa.nulls(rows, pa.int64()),
                "reason": pa.repeat(pa.scalar(why.FIRST_RUN), rows),
            }
            arrays = [
                columns.get(f.name)
                if f.name in columns
                else values.get(f.name, pa.nulls(rows, f.type))
                for f in CHANGE_SCHEMA
            ]
            writer.write_batch(pa.RecordBatch.from_arrays(arrays, schema=CHANGE_SCHEMA))
    with atomic_path(run_dir / EXITED) as tmp:
        pq.write_table(CHANGE_SCHEMA.empty_table(), tmp)


def _member_sql(path: LakePath, param: str, where: str = "true") -> str:
    """The key and the carried columns of a member file (NULL where an older file has none)."""
    names = set(parquet_file(path).schema_arrow.names)
    carried = [
        name if name in names else f"CAST(NULL AS {kind}) AS {name}"
        for name, kind in _CARRIED.items()
    ]
    return f"SELECT {_KEY}, {', '.join(carried)} FROM read_parquet(${param}) WHERE {where}"


def write_renewals(
    run_dir: LakePath,
    previous_run_dir: LakePath | None,
    renew_before: datetime | None,
    *,
    skip_entered: bool = False,
) -> int:
    """Unchanged members due for renewal (see ``lifetime``), written to renewed.parquet;
    ``skip_entered`` leaves out those entered.parquet sends already (corrections)."""
    members = run_dir / MEMBERS
    query, params = "SELECT * FROM read_parquet($members) WHERE false", {"members": str(members)}
    if previous_run_dir is not None and renew_before is not None:
        membership = previous_run_dir / MEMBERSHIP
        if membership.exists():
            query = (
                f"SELECT m.* FROM read_parquet($members) AS m JOIN read_parquet($previous) "
                f"AS p USING ({_KEY}) WHERE p.valid_until < $cutoff"
            )
            params |= {"previous": str(membership), "cutoff": renew_before}
        else:  # published before validUntil existed: AEP keeps them 30 days at most
            query = (
                f"SELECT m.* FROM read_parquet($members) AS m "
                f"SEMI JOIN read_parquet($previous) AS p USING ({_KEY})"
            )
            params |= {"previous": str(previous_run_dir / MEMBERS)}
        if skip_entered:
            query = f"SELECT * FROM ({query}) ANTI JOIN read_parquet($entered) USING ({_KEY})"
            params |= {"entered": str(run_dir / ENTERED)}
    spill_parent = None if is_remote(run_dir) else run_dir
    with tempfile.TemporaryDirectory(prefix=".renew-", dir=spill_parent) as spill:
        con = _connect(Path(spill), run_dir)
        try:
            with atomic_path(run_dir / RENEWED) as tmp:
                con.execute(
                    f"COPY (SELECT * FROM ({query}) ORDER BY {_KEY}) "
                    "TO $path (FORMAT parquet, COMPRESSION zstd)",
                    params | {"path": str(tmp)},
                )
        finally:
            con.close()
    return _rows(run_dir / RENEWED)


def _connect(spill_dir: Path, run_dir: LakePath) -> duckdb.DuckDBPyConnection:
    con = connect(
        run_dir,
        config={
            "threads": THREADS,
            "memory_limit": MEMORY_LIMIT,
            "preserve_insertion_order": False,
            "temp_directory": str(spill_dir),
        },
    )
    con.execute("SET enable_progress_bar = false")
    return con


def _diff_files(
    current: LakePath,
    previous: LakePath | None,
    run_dir: LakePath,
    explain_exits: ExitExplainer | None,
    corrections: Corrections,
) -> tuple[int, int, tuple[int, int]]:
    """(entered, exited, (of which corrections entered, exited))."""
    spill_parent = None if is_remote(run_dir) else run_dir
    with tempfile.TemporaryDirectory(prefix=".diff-", dir=spill_parent) as spill:
        if previous is None:  # first publish, but another run already sent some of it
            previous = Path(spill) / "empty.parquet"
            pq.write_table(MEMBER_SCHEMA.empty_table(), previous)
        con = _connect(Path(spill), run_dir)
        try:
            con.execute(
                "CREATE TEMP TABLE changes (person_id VARCHAR NOT NULL, namespace VARCHAR NOT "
                "NULL, identity VARCHAR NOT NULL, entered BOOLEAN NOT NULL, why BIGINT, "
                "split VARCHAR)"
            )
            target = _target_sql(read_run_record(run_dir).get("compute", {}))
            for low, high in key_ranges([current, previous], RANGE_ROWS):
                _diff_range(con, current, previous, low, high, target)
            corrected = _correct(con, current, corrections)
            _explain(con, explain_exits)
            entered = _copy_side(con, True, run_dir / ENTERED)
            exited = _copy_side(con, False, run_dir / EXITED)
        finally:
            con.close()
    return entered, exited, corrected


def _correct(
    con: duckdb.DuckDBPyConnection, current: LakePath, corrections: Corrections
) -> tuple[int, int]:
    """Add the members an uncommitted run may have exited (they enter again) and the
    non-members one may have realized (they exit); returns how many of each were added."""
    added = []
    for files, entered in ((corrections.exited, True), (corrections.realized, False)):
        if not files:
            added.append(0)
            continue
        # enter again: sent exited AND members; exit: sent realized EXCEPT members
        members = "INTERSECT" if entered else "EXCEPT"
        before = con.execute("SELECT count(*) FROM changes").fetchone()[0]
        con.execute(
            f"""
            INSERT INTO changes
            SELECT k.person_id, k.namespace, k.identity, $entered, m.why, m.split FROM (
              (SELECT {_KEY} FROM read_parquet($sent, union_by_name = true)
               WHERE {corrections.where}
               {members} SELECT {_KEY} FROM read_parquet($current))
              EXCEPT SELECT {_KEY} FROM changes) AS k
            LEFT JOIN ({_member_sql(current, "current")}) AS m
              USING (person_id, namespace, identity)
            """,
            {"sent": [str(f) for f in files], "current": str(current), "entered": entered},
        )
        added.append(con.execute("SELECT count(*) FROM changes").fetchone()[0] - before)
    return added[0], added[1]


def _diff_range(
    con: duckdb.DuckDBPyConnection,
    current: LakePath,
    previous: LakePath,
    low: str | None,
    high: str | None,
    target: tuple[str, dict[str, Any]],
) -> None:
    """One full outer join over person_id in (low, high]: unmatched rows are the changes."""
    where, bounds = _range_filter(low, high)
    sql, targets = target
    con.execute(
        f"""
        INSERT INTO changes
        SELECT coalesce(c.person_id, p.person_id), coalesce(c.namespace, p.namespace),
               coalesce(c.identity, p.identity), c.person_id IS NOT NULL,
               coalesce(c.why, p.why), coalesce(c.split, p.split)
        FROM ({_member_sql(current, "current", where)}) AS c
        FULL OUTER JOIN ({_member_sql(previous, "previous", where)}) AS p
          ON c.person_id = p.person_id AND c.namespace = p.namespace
         AND c.identity = p.identity
         AND {sql.format(side="c")} IS NOT DISTINCT FROM {sql.format(side="p")}
        WHERE c.person_id IS NULL OR p.person_id IS NULL
        """,
        {"current": str(current), "previous": str(previous), **bounds, **targets},
    )


def _explain(con: duckdb.DuckDBPyConnection, explain_exits: ExitExplainer | None) -> None:
    """``exit_why``: code now and reason of each person who left (not for another identity)."""
    exits = [
        r[0]
        for r in con.execute(
            "SELECT DISTINCT person_id FROM changes WHERE NOT entered AND person_id NOT IN "
            "(SELECT person_id FROM changes WHERE entered) ORDER BY person_id"
        ).fetchall()
    ]
    table = why.EXIT_SCHEMA.empty_table()
    if explain_exits is not None and exits:
        table = explain_exits(exits)
    con.register("exit_why", table)


def _target_sql(compute: dict[str, Any]) -> tuple[str, dict[str, Any]]:
    """Where a member's row is published (``{side}``: the join side): the AEP audience of
    their split arm (run.json ``compute.split_targets``), or the arm itself."""
    targets = compute.get("split_targets") or {}
    if not targets:
        return "{side}.split", {}
    params: dict[str, Any] = {}
    whens = []
    for i, (arm, audience) in enumerate(targets.items()):
        params[f"arm_{i}"], params[f"target_{i}"] = arm, audience
        whens.append(f"WHEN $arm_{i} THEN $target_{i}")
    return "(CASE {side}.split " + " ".join(whens) + " ELSE {side}.split END)", params


def _range_filter(low: str | None, high: str | None) -> tuple[str, dict[str, str]]:
    terms, bounds = [], {}
    if low is not None:
        terms.append("person_id > $low")
        bounds["low"] = low
    if high is not None:
        # NULL keys break the member schema: keep them in a range so the insert fails loudly
        terms.append("(person_id <= $high" + (" OR person_id IS NULL)" if low is None else ")"))
        bounds["high"] = high
    return " AND ".join(terms) or "true", bounds


def _copy_side(con: duckdb.DuckDBPyConnection, entered: bool, path: LakePath) -> int:
    """One side with its reason: the same person on the other side moved to another split or
    changed identity; else
    entered members now hold, exited ones have the explainer's reason (or ``left``)."""
    with atomic_path(path) as tmp:
        con.execute(
            f"""
            COPY (
              SELECT c.person_id, c.namespace, c.identity,
                     CASE WHEN $entered THEN c.why ELSE coalesce(x.why, o.why) END AS why,
                     CASE WHEN $entered THEN o.why ELSE c.why END AS why_before,
                     CASE WHEN o.identity = c.identity THEN $moved
                          WHEN o.person_id IS NOT NULL THEN $changed
                          WHEN $entered THEN $holds ELSE coalesce(x.reason, $left) END AS reason,
                     c.split
                FROM changes AS c
                LEFT JOIN (SELECT person_id, any_value(why) AS why,
                                  any_value(identity) AS identity FROM changes
                            WHERE entered != $entered GROUP BY person_id) AS o USING (person_id)
                LEFT JOIN exit_why AS x ON NOT $entered AND x.person_id = c.person_id
               WHERE c.entered = $entered
               ORDER BY {_KEY}
            ) TO $path (FORMAT parquet, COMPRESSION zstd)
            """,
            {
                "entered": entered,
                "path": str(tmp),
                "changed": why.IDENTITY_CHANGED,
                "moved": why.SPLIT_CHANGED,
                "holds": why.NOW_HOLDS,
                "left": why.LEFT,
            },
        )
    return _rows(path)


def key_ranges(paths: list[LakePath], range_rows: int) -> list[tuple[str | None, str | None]]:
    """Split person_id into (low, high] ranges of about ``range_rows`` rows over all ``paths``.

    Uses only the Parquet footers (row-group min/max), never the data. When a file is not
    sorted by person_id its row groups overlap and a range filter would rescan every row
    group, so the whole key space becomes one range (still exact; DuckDB may spill).
    """
    groups: list[tuple[str, int]] = []
    for path in paths:
        file_groups = _row_group_bounds(path)
        if file_groups is None:
            return [(None, None)]
        groups.extend((high, rows) for _low, high, rows in file_groups)
    groups.sort()
    cuts: list[str] = []
    rows_in_range = 0
    for high, rows in groups:
        rows_in_range += rows
        if rows_in_range >= range_rows and (not cuts or high > cuts[-1]):
            cuts.append(high)
            rows_in_range = 0
    edges: list[str | None] = [None, *cuts, None]
    return list(pairwise(edges))


def _row_group_bounds(path: LakePath) -> list[tuple[str, str, int]] | None:
    """(min, max, rows) of person_id per row group, or None when unsorted or without stats."""
    metadata = parquet_file(path).metadata
    column = metadata.schema.names.index("person_id")
    bounds = []
    for index in range(metadata.num_row_groups):
        group = metadata.row_group(index)
        if group.num_rows == 0:
            continue
        stats = group.column(column).statistics
        if stats is None or not stats.has_min_max:
            return None
        if bounds and stats.min < bounds[-1][1]:
            return None
        bounds.append((stats.min, stats.max, group.num_rows))
    return bounds
