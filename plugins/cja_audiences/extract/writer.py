"""Land a stream of candidate batches in the lake: all of it, atomically, or none of it.

Why this shape:

* Streaming: batches are checked (``normalize``), buffered (at most ``BUFFER_ROWS`` rows)
  and appended to one staging file per UTC date, so memory stays bounded whatever the size.
* All or nothing: nothing touches ``lake/events`` until :meth:`PartitionWriter.commit`, and
  commit refuses when the share of bad rows is above the limit. Rejected rows always go to
  ``quarantine/<source>/<run>/rejected.parquet`` with their reason, whether the extract
  passes or fails: nothing is dropped silently.
* Idempotent: each touched partition is rebuilt deduplicated by (``event_id``, person) and sorted by
  (person_id, timestamp, event_id), then swapped in whole (``publish``). The same input twice
  gives byte-identical files. Rows land by their own UTC date, so late data joins the right
  partition; in ``merge`` mode (the default) the rows already there are kept, and a re-sent
  event replaces its earlier version; ``replace`` mode makes the input the whole truth for
  each date it touches (a corrected re-export, a full-day API pull).
* Sessions, in the one write: a first pass over each date's narrow columns summarises it per
  person; from those and the live history ``extract.sessions`` plans each person's state at
  each date, and the finalize stream numbers the sessions as it writes. Live partitions whose
  sessions the new rows change are staged too.
* Persons: after landing, the persons seen in the touched partitions are merged into
  ``lake/persons/persons.parquet`` (``persons.update_persons``).
* Sharding: with ``buckets=N`` a partition holds one file per person bucket,
  ``part-b{bucket:04d}.parquet`` with bucket = ``hash(person_id) % N`` (DuckDB's hash);
  readers keep globbing ``date=*/*.parquet``, and a bucket's tasks glob its own file name.
"""

from __future__ import annotations

import os
import shutil
import time
from collections import Counter
from collections.abc import Callable
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Literal, TypeVar

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from cja_audiences.extract.normalize import (
    DEFAULT_LIST_SEPARATOR,
    DEFAULT_NAMESPACE,
    QUARANTINE_SCHEMA,
    conform,
    normalize,
)
from cja_audiences.extract.persons import update_persons
from cja_audiences.extract.publish import publish_partitions, staging_dir
from cja_audiences.extract.sessions import (
    StreamNumberer,
    dated_summary,
    finish_sessions,
    plan_sessions,
    summary_sql,
)
from cja_audiences.lake.layout import Lake, atomic_path, safe_name
from cja_audiences.lake.partitions import partition_files
from cja_audiences.lake.schema import EVENT_SCHEMA
from cja_audiences.lake.sessions import SessionRules, with_rules
from cja_audiences.lake.storage import connect, exclusive, naming_full_disk, parquet_rows

Mode = Literal["merge", "replace"]
MODES: tuple[Mode, ...] = ("merge", "replace")
ROW_GROUP_SIZE = 128 * 1024
LANDING_LOCK = ".landing.lock"  # lake/.landing.lock: held while a run merges and swaps dates
LANDING_WAIT_S = 1800.0  # object storage: how long a landing waits for (and holds) the lock
BUFFER_ROWS = 256 * 1024  # rows held in memory across dates before they go to staging
_INCOMING = EVENT_SCHEMA.append(pa.field("_seq", pa.int64()))
NO_SESSIONS: dict[str, Any] = {"rewritten": [], "seconds": 0.0}  # nothing landed
T = TypeVar("T")


class ExtractRejected(RuntimeError):
    """Too many bad rows: the extract wrote nothing to the lake (see the quarantine file)."""


def bucket_file(bucket: int | None) -> str:
    """The file name of one bucket inside a date partition (``part-0`` when unbucketed)."""
    return "part-0.parquet" if bucket is None else f"part-b{bucket:04d}.parquet"


class PartitionWriter:
    """Collects batches for one extract run; :meth:`commit` lands them.

    Use as a context manager: leaving the block without a commit (an exception) leaves the
    lake as it was.
    """

    def __init__(
        self,
        lake: Lake,
        *,
        source: str,
        run_id: str,
        mode: Mode = "merge",
        buckets: int | None = None,
        max_bad_row_share: float = 0.01,
        namespace: str = DEFAULT_NAMESPACE,
        list_separator: str = DEFAULT_LIST_SEPARATOR,
        sessions: SessionRules | None = None,
    ) -> None:
        if mode not in MODES:
            raise ValueError(f"mode {mode!r}: use one of {', '.join(MODES)}")
        if buckets is not None and buckets < 1:
            raise ValueError(f"buckets={buckets}: use a positive number or None")
        self.lake = lake
        self.source = source
        self.run_id = run_id
        self.mode = mode
        self.buckets = buckets
        self.max_bad_row_share = max_bad_row_share
        self.namespace = namespace
        self.list_separator = list_separator
        self.sessions = sessions or SessionRules()
        self.quarantine_path = lake.quarantine(source, safe_name(run_id)) / "rejected.parquet"
        self._con = connect(lake.root)
        self._con.execute("SET TimeZone = 'UTC'")
        self._incoming: dict[str, pq.ParquetWriter] = {}
        self._relations: dict[str, tuple[str, list[Any]]] = {}  # date -> rows as they land
        self._buffers: dict[str, list[pa.Table]] = {}
        self._buffered = 0
        self._rejects: pq.ParquetWriter | None = None
        self._reasons: Counter[str] = Counter()
        self._rows_in = 0
        self._seq = 0
        self._started = time.perf_counter()
        self._staging_cm = staging_dir(lake.events)
        self._staging: Path | None = None

    def __enter__(self) -> PartitionWriter:
        self._staging = self._staging_cm.__enter__()
        (self._staging / ".incoming").mkdir()
        return self

    def __exit__(self, *exc: object) -> None:
        try:
            self._close_writers()  # a full disk can fail a close: staging goes all the same
        finally:
            self._con.close()
            self._staging_cm.__exit__(*exc)

    # -- collecting -------------------------------------------------------------------------

    def write(self, candidate: pa.Table | pa.RecordBatch) -> None:
        """Check one candidate batch and stage its rows (good by date, bad to quarantine)."""
        if candidate.num_rows == 0:
            return
        checked = normalize(
            candidate, con=self._con, namespace=self.namespace, list_separator=self.list_separator
        )
        self._rows_in += candidate.num_rows
        if checked.bad.num_rows:
            self._reject(checked.bad)
        good = checked.good
        if not good.num_rows:
            return
        seq = pa.array(np.arange(self._seq, self._seq + good.num_rows, dtype=np.int64))
        self._seq += good.num_rows
        good = good.append_column("_seq", seq)
        dates = good.column("date")
        for date in pc.unique(dates).to_pylist():
            part = good.filter(pc.equal(dates, date)).drop_columns(["date"])
            self._buffers.setdefault(date, []).append(part)
        self._buffered += good.num_rows
        if self._buffered >= BUFFER_ROWS:
            self._flush()

    def _flush(self) -> None:
        """Append the buffered rows to each date's staging file (few, large row groups)."""
        for date, parts in self._buffers.items():
            writer = self._incoming_writer(date)
            with naming_full_disk(writer.where):
                writer.write_table(pa.concat_tables(parts).cast(_INCOMING))
        self._buffers.clear()
        self._buffered = 0

    def _incoming_writer(self, date: str) -> pq.ParquetWriter:
        writer = self._incoming.get(date)
        if writer is None:
            path = self._staging_path / ".incoming" / f"{date}.parquet"
            writer = pq.ParquetWriter(path, _INCOMING, compression="lz4")
            self._incoming[date] = writer
        return writer

    def _reject(self, bad: pa.Table) -> None:
        # count reasons by kind: the text without the quoted offending values
        kinds = pc.replace_substring_regex(bad.column("reason"), r" \(.*?\)(;|$)", r"\1")
        for kind in pc.value_counts(kinds).to_pylist():
            self._reasons[kind["values"]] += kind["counts"]
        if self._rejects is None:
            path = self._staging_path / ".incoming" / "rejected.parquet"
            self._rejects = pq.ParquetWriter(path, QUARANTINE_SCHEMA, compression="zstd")
        with naming_full_disk(self._rejects.where):
            self._rejects.write_table(bad)

    @property
    def _staging_path(self) -> Path:
        if self._staging is None:
            raise RuntimeError("PartitionWriter must be used as a context manager")
        return self._staging

    def _close_writers(self) -> None:
        """Close every staging file (each writes its footer); the first failure is raised
        once all are closed, and no writer is left to retry in its finalizer."""
        writers = [*self._incoming.values(), *([self._rejects] if self._rejects else [])]
        self._incoming.clear()
        self._rejects = None
        failed: BaseException | None = None
        for writer in writers:
            try:
                with naming_full_disk(writer.where):
                    writer.close()
            except Exception as exc:  # noqa: BLE001 - raised below, after the others
                writer.is_open = False
                failed = failed or exc
        if failed is not None:
            raise failed

    # -- landing ----------------------------------------------------------------------------

    def commit(self) -> dict[str, Any]:
        """Publish the staged dates, or raise :class:`ExtractRejected` having published none."""
        self._flush()
        dates = sorted(self._incoming)
        self._close_writers()
        rejected = self._keep_quarantine()
        bad_share = rejected / self._rows_in if self._rows_in else 0.0
        if bad_share > self.max_bad_row_share:
            raise ExtractRejected(self._rejection_message(rejected, bad_share))
        # one landing at a time: two extracts of the same date would each merge the live
        # partition as it was before the other, and the last swap would drop the other's rows
        lock = self.lake.root / "lake" / LANDING_LOCK
        with exclusive(lock, timeout_s=LANDING_WAIT_S, ttl_s=LANDING_WAIT_S):
            partitions, sessions = self._land(dates) if dates else ({}, NO_SESSIONS)
            publish_partitions(self._staging_path, self.lake.events)
            persons = update_persons(self.lake, list(partitions), self._con)
        return {
            "source": self.source,
            "run_id": self.run_id,
            "mode": self.mode,
            "rows_in": self._rows_in,
            "rows": sum(partitions.values()),
            "partitions": partitions,
            "persons": persons,
            "sessions": sessions,
            "quarantined": rejected,
            "bad_row_share": round(bad_share, 6),
            "quarantine_path": str(self.quarantine_path) if rejected else None,
            "reasons": dict(self._reasons.most_common(10)),
            "elapsed_s": round(time.perf_counter() - self._started, 3),
        }

    def _keep_quarantine(self) -> int:
        staged = self._staging_path / ".incoming" / "rejected.parquet"
        if not staged.exists():
            return 0
        with atomic_path(self.quarantine_path) as tmp:
            shutil.move(staged, tmp)
        return parquet_rows(self.quarantine_path)

    def _rejection_message(self, rejected: int, share: float) -> str:
        reasons = ", ".join(f"{reason!r} x{n}" for reason, n in self._reasons.most_common(5))
        return (
            f"{self.source} run {self.run_id}: {rejected:,} of {self._rows_in:,} rows "
            f"({share:.2%}) are bad, above the limit of {self.max_bad_row_share:.2%} "
            "(setting max_bad_row_share, CJA_AUDIENCES_MAX_BAD_ROW_SHARE); nothing was written "
            f"to the lake. Most common reasons: {reasons}. Every rejected row and its reason: "
            f"{self.quarantine_path}. Fix the delivery (or the column mapping) and rerun."
        )

    def _land(self, dates: list[str]) -> tuple[dict[str, int], dict[str, Any]]:
        """Stage ``dates`` (rows per date) with their sessions, planned from narrow summaries
        first so each file is written once, and the live dates whose sessions change."""
        started = time.perf_counter()
        summaries = self._per_date(self._summary, dates)
        plan = plan_sessions(self.lake, dict(zip(dates, summaries, strict=True)), self.sessions)
        plan.seconds = time.perf_counter() - started  # the summaries' pass included
        written = self._per_date(lambda d, c: self._finalize(d, c, plan.seeds_for(d)), dates)
        return dict(zip(dates, written, strict=True)), finish_sessions(plan, self._staging_path)

    def _per_date(
        self, func: Callable[[str, duckdb.DuckDBPyConnection], T], dates: list[str]
    ) -> list[T]:
        """``func`` for each date on every core, each worker with its own DuckDB cursor."""

        def run(date: str) -> T:
            cursor = self._con.cursor()
            try:
                return func(date, cursor)
            finally:
                cursor.close()

        with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
            return list(pool.map(run, dates))

    def _deduped(self, date: str, con: duckdb.DuckDBPyConnection) -> tuple[str, list[Any]]:
        """SQL of ``date``'s rows as they will land (deduped, merged) and its parameters."""
        if date in self._relations:
            return self._relations[date]
        incoming = self._staging_path / ".incoming" / f"{date}.parquet"
        live = self.lake.event_partition(date)
        live_files = partition_files(live) if self.mode == "merge" else []
        columns = ", ".join(f'"{f.name}"' for f in EVENT_SCHEMA)
        union = f"SELECT {columns}, 1 AS _new, _seq FROM read_parquet(?, hive_partitioning = false)"
        params: list[Any] = [str(incoming)]
        if live_files:
            # union_by_name: partitions written before a schema column existed still merge
            union += (
                " UNION ALL BY NAME SELECT *, 0 AS _new, 0 AS _seq"
                " FROM read_parquet(?, union_by_name = true, hive_partitioning = false)"
            )
            params.append([str(f) for f in live_files])
        deduped = f"""
            SELECT * EXCLUDE (_rank) FROM (
                SELECT *, row_number() OVER (
                    -- one event id of two persons is two events: never let one replace the other
                    PARTITION BY event_id, person_id ORDER BY _new DESC, _seq DESC) AS _rank
                FROM ({union}))
            WHERE _rank = 1"""
        if not live_files and _unique_ids(incoming, con):
            deduped = union  # a new date without repeated ids: nothing to dedupe
        self._relations[date] = (deduped, params)
        return deduped, params

    def _summary(self, date: str, con: duckdb.DuckDBPyConnection) -> list[pa.Table]:
        """``date``'s (person, date) session summary, from the narrow columns only."""
        deduped, params = self._deduped(date, con)
        sql, extra = summary_sql(deduped, self.sessions)
        return [dated_summary(con.sql(sql, params=[*params, *extra]).to_arrow_table(), date)]

    def _finalize(self, date: str, con: duckdb.DuckDBPyConnection, seeds: pa.Table) -> int:
        """Build the staged partition for ``date``: dedupe, merge, sort, bucket, number the
        sessions from each person's ``seeds``; its rows."""
        deduped, params = self._deduped(date, con)
        bucket = f"hash(person_id) % {int(self.buckets)}" if self.buckets else "NULL"
        con.register("session_seeds", seeds)
        query = f"""
            SELECT d.* EXCLUDE (_new, _seq), {bucket} AS _bucket,
                   s.p_ts AS _p_ts, s.p_start AS _p_start, s.p_number AS _p_number
              FROM ({deduped}) AS d LEFT JOIN session_seeds AS s USING (person_id)
            ORDER BY _bucket, person_id, "timestamp", event_id
        """
        target = self._staging_path / f"date={date}"
        target.mkdir()
        with naming_full_disk(target):
            reader = con.sql(query, params=params).to_arrow_reader(ROW_GROUP_SIZE)
            return _write_buckets(reader, target, self.sessions)


def _unique_ids(incoming: Path, con: duckdb.DuckDBPyConnection) -> bool:
    """True when no (event id, person) repeats in ``incoming`` (cheaper than deduping)."""
    [(total, distinct)] = con.execute(
        "SELECT count(*), count(DISTINCT (event_id, person_id)) FROM read_parquet(?)",
        [str(incoming)],
    ).fetchall()
    return total == distinct


def _write_buckets(reader: pa.RecordBatchReader, target: Path, rules: SessionRules) -> int:
    """Write the sorted stream into one file per bucket under ``target``, with its sessions
    (the footer records their ``rules``); rows written."""
    number = StreamNumberer(rules)
    schema = with_rules(EVENT_SCHEMA, rules)
    rows = 0
    writer: pq.ParquetWriter | None = None
    current: object = ...
    try:
        for batch in reader:
            table = number(pa.Table.from_batches([batch]))
            offset = 0
            for run in pc.run_end_encode(table.column("_bucket")).chunks:
                for bucket, end in zip(
                    run.values.to_pylist(), run.run_ends.to_pylist(), strict=True
                ):
                    if bucket != current:
                        if writer is not None:
                            writer.close()
                        writer = pq.ParquetWriter(
                            target / bucket_file(bucket), schema, compression="zstd"
                        )
                        current = bucket
                    part = conform(table.slice(offset, end - offset))
                    part = part.replace_schema_metadata(schema.metadata)
                    writer.write_table(part, row_group_size=ROW_GROUP_SIZE)
                    rows += part.num_rows
                    offset = end
    finally:
        if writer is not None:
            writer.close()
    return rows
