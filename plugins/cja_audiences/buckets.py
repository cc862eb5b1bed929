"""Person buckets: one audience split by ``hash(person_id) % N`` (DESIGN §3, scale-out).

Membership is decided per person, so each bucket computes, diffs and publishes on its own
(Airflow maps one task per bucket across the workers), in its own folder
``runs/<run>/buckets/bNNNN/`` with its own members, entered, exited, run.json and publish
ledger, so a crashed bucket resumes alone. Between diff and guardrails the buckets are
merged into the run's own members / entered / exited (sorted by person_id, exactly what an
unbucketed run writes) and its diff is the sum, so the guardrails judge the whole audience
before any bucket publishes; after every bucket's publish the run's publish record is their
sum, and commit moves ``current.json`` once.

The previous run is sliced by the same hash, so the bucket count may change between runs.
Filters must be person-local (rules and CJA segments are; a template comparing persons with
each other, e.g. a percentile over everybody, is not and must not be bucketed).
"""

from __future__ import annotations

from typing import Any

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
from cja_audiences.lake.storage import LakePath, connect, makedirs, parquet_rows

BUCKETS_DIR = "buckets"
PREVIOUS_DIR = "previous"  # in a bucket folder: the previous run's members of this bucket
SUMMED = ("records", "sent", "acknowledged", "retried", "dead_lettered", "requests")


def bucket_filter(bucket: int, buckets: int) -> str:
    """The SQL predicate of one bucket (DuckDB's ``hash``, as the extract's bucketed files)."""
    return f"hash(person_id) % {int(buckets)} = {int(bucket)}"


def bucket_dir(run_dir: LakePath, bucket: int) -> LakePath:
    return run_dir / BUCKETS_DIR / f"b{bucket:04d}"


def slice_previous(previous_run_dir: LakePath, target: LakePath, bucket: int, buckets: int) -> None:
    """The previous run's members of one bucket, as ``target/members.parquet``."""
    makedirs(target)
    con = connect(previous_run_dir, target)
    try:
        with atomic_path(target / MEMBERS) as tmp:
            con.execute(
                f"COPY (SELECT * FROM read_parquet($src) WHERE {bucket_filter(bucket, buckets)} "
                "ORDER BY person_id) TO $dst (FORMAT parquet, COMPRESSION zstd)",
                {"src": str(previous_run_dir / MEMBERS), "dst": str(tmp)},
            )
    finally:
        con.close()


def merge_buckets(run_dir: LakePath, buckets: int, previous_run_dir: LakePath | None) -> dict:
    """Write the run's members / entered / exited from its buckets; record the summed diff."""
    folders = [bucket_dir(run_dir, b) for b in range(buckets)]
    _concat(run_dir, folders, (MEMBERS, ENTERED, EXITED, RENEWED))
    records = [read_run_record(f) for f in folders]
    counted = ("entered", "exited", "unchanged", "renewed")
    diff = {key: sum(r["diff"].get(key, 0) for r in records) for key in counted}
    size = parquet_rows(run_dir / MEMBERS)
    diff |= {
        "size": size,
        "previous_size": parquet_rows(previous_run_dir / MEMBERS) if previous_run_dir else 0,
        "previous_run_id": previous_run_dir.name if previous_run_dir else None,
        "buckets": buckets,
        "corrections": _summed_corrections(r["diff"].get("corrections") or {} for r in records),
        "elapsed_s": round(sum(r["diff"]["elapsed_s"] for r in records), 3),
    }
    compute = records[0]["compute"] | {
        "size": size,
        "size_by_namespace": _summed(r["compute"]["size_by_namespace"] for r in records),
        "missing_identity": sum(r["compute"].get("missing_identity", 0) for r in records),
        "members_path": str(run_dir / MEMBERS),
        "elapsed_s": round(sum(r["compute"]["elapsed_s"] for r in records), 3),
        "buckets": buckets,
    }
    update_run_record(run_dir, compute=compute, diff=diff)
    return diff


def collect_publish(run_dir: LakePath, buckets: int) -> dict[str, Any]:
    """The run's publish record: every bucket's summed; ``ok`` only if every bucket is."""
    records = [read_run_record(bucket_dir(run_dir, b)).get("publish") for b in range(buckets)]
    missing = [b for b, r in enumerate(records) if not r]
    if missing:
        raise RuntimeError(
            f"{run_dir}: buckets {missing} were not published; rerun their publish tasks"
        )
    ok = all(r.get("status") == "ok" and r.get("chunks", {}).get("complete", True) for r in records)
    summary = {key: sum(r.get(key, 0) for r in records) for key in SUMMED}
    summary |= {
        "status": "ok" if ok else "failed",
        "chunks": {"complete": ok},
        "buckets": buckets,
        "elapsed_s": max(r.get("elapsed_s", 0) for r in records),
        "audience": records[0].get("audience"),
        "publish_mode": records[0].get("publish_mode", "streaming"),
    }
    _concat(run_dir, [bucket_dir(run_dir, b) for b in range(buckets)], (MEMBERSHIP,))
    update_run_record(run_dir, publish=summary)
    return summary


def _summed_corrections(parts: Any) -> dict[str, Any]:
    """The buckets' corrections as the run's: every run they corrected, the rows summed."""
    parts = list(parts)
    return {
        "run_ids": sorted({run_id for p in parts for run_id in p.get("run_ids", [])}),
        "entered": sum(p.get("entered", 0) for p in parts),
        "exited": sum(p.get("exited", 0) for p in parts),
    }


def _concat(run_dir: LakePath, folders: list[LakePath], names: tuple[str, ...]) -> None:
    """Each named file of the buckets as one sorted file of the run (when every bucket has it:
    renewals and the membership lifetimes exist only for streaming publishes)."""
    con = connect(run_dir)
    try:
        for name in names:
            if not all((f / name).exists() for f in folders):
                continue
            with atomic_path(run_dir / name) as tmp:
                con.execute(
                    "COPY (SELECT * FROM read_parquet($files) ORDER BY person_id, namespace, "
                    "identity) TO $dst (FORMAT parquet, COMPRESSION zstd)",
                    {"files": [str(f / name) for f in folders], "dst": str(tmp)},
                )
    finally:
        con.close()


def _summed(maps: Any) -> dict[str, int]:
    total: dict[str, int] = {}
    for mapping in maps:
        for key, value in mapping.items():
            total[key] = total.get(key, 0) + value
    return total
