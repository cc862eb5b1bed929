"""Review before publishing: who a run would add and remove, and publishing exactly that.

A person reads a dry run's entered / exited members (paged, searchable, masked by default)
and approves it. The approval is a new run that adopts the reviewed run's members and diff
instead of recomputing them, so AEP receives exactly what was reviewed; if another run was
committed since the review, the reviewed diff no longer applies and the approval is refused.
A bucketed audience adopts each bucket's files from the same bucket of the reviewed run.
"""

from __future__ import annotations

import csv
import io
import shutil
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any, Literal

import duckdb
import pyarrow.parquet as pq

from cja_audiences.diff import write_renewals
from cja_audiences.lake.layout import atomic_path
from cja_audiences.lake.runs import ENTERED, EXITED, MEMBERS, read_run_record, update_run_record

Side = Literal["entered", "exited"]
FILES: dict[str, str] = {"entered": ENTERED, "exited": EXITED}
EXTRA_COLUMNS = ("reason", "why", "split")  # per-member explanations (issue 19), when present
REASON_WORDS = {
    "first_run": "first publish",
    "now_holds": "now matches the filter",
    "identity_changed": "published identity changed",
    "split_changed": "moved to another split arm",
    "stopped_holding": "no longer matches the filter",
    "aged_out": "its events aged out of the window",
    "identity_lost": "matches, but has no identity now",
    "left": "left (not evaluated)",
}
PAGE_SIZE = 25
CSV_BATCH = 50_000


class StaleReview(RuntimeError):
    """The committed snapshot moved since the run was reviewed; its diff no longer applies."""


class NotReviewable(ValueError):
    """The run has no members or diff to review or approve; the message says why."""


def committed_base(record: dict[str, Any]) -> str | None:
    """The committed run a run's diff was computed against (None: the first publish)."""
    return (record.get("diff") or {}).get("previous_run_id")


def check_fresh(
    reviewed_dir: Path, current_run_id: str | None, record: dict[str, Any] | None = None
) -> None:
    """Refuse an approval whose diff was computed against another snapshot than the current.
    ``record``: the reviewed run's run.json when the caller has read it already."""
    record = read_run_record(reviewed_dir) if record is None else record
    if "diff" not in record or not (reviewed_dir / MEMBERS).exists():
        raise NotReviewable(f"run {reviewed_dir.name} has no members and diff to publish")
    base = committed_base(record)
    if base != current_run_id:
        raise StaleReview(
            f"run {reviewed_dir.name} was reviewed against snapshot {base or 'none (first run)'}, "
            f"but the committed snapshot is now {current_run_id or 'none'}: its entered and "
            "exited members no longer apply; start a new dry run and review that"
        )


def check_buckets(reviewed_dir: Path, buckets: int) -> None:
    """A bucketed approval adopts bucket by bucket: the reviewed run must be cut the same."""
    reviewed = (read_run_record(reviewed_dir).get("diff") or {}).get("buckets")
    if reviewed != buckets:
        cut = f"in {reviewed} person buckets" if reviewed else "unbucketed"
        raise StaleReview(
            f"run {reviewed_dir.name} was reviewed {cut}, but the spec now has "
            f"refresh.buckets {buckets}: its buckets' members no longer line up; start a new "
            "dry run and review that"
        )


def adopt_members(reviewed_dir: Path, run_dir: Path, reviewed_run: str = "") -> dict[str, Any]:
    """Copy the reviewed run's members into this run; its compute record says where from.
    ``reviewed_run``: the reviewed run's id when ``reviewed_dir`` is one of its buckets."""
    source = reviewed_dir / MEMBERS
    if not source.exists():
        raise NotReviewable(f"run {reviewed_dir.name} has no members.parquet to approve")
    with atomic_path(run_dir / MEMBERS) as tmp:
        shutil.copyfile(source, tmp)
    stats = {
        **read_run_record(reviewed_dir).get("compute", {}),
        "adopted_from": reviewed_run or reviewed_dir.name,
    }
    update_run_record(run_dir, compute=stats)
    return stats


def adopt_diff(
    reviewed_dir: Path,
    run_dir: Path,
    previous_run_dir: Path | None,
    reviewed_run: str = "",
    renew_before: datetime | None = None,
) -> dict[str, Any]:
    """Copy the reviewed entered/exited files; refused when the committed snapshot moved.
    Renewals are not reviewed changes: they are due by the approval's own time, so they are
    chosen now (``renew_before``), as a scheduled run would."""
    check_fresh(reviewed_dir, previous_run_dir.name if previous_run_dir else None)
    for name in (ENTERED, EXITED):
        with atomic_path(run_dir / name) as tmp:
            shutil.copyfile(reviewed_dir / name, tmp)
    record = {
        **read_run_record(reviewed_dir)["diff"],
        "renewed": write_renewals(run_dir, previous_run_dir, renew_before),
        "renew_before": renew_before.isoformat() if renew_before else None,
        "reviewed_run": reviewed_run or reviewed_dir.name,
    }
    update_run_record(run_dir, diff=record)
    return record


def mask(value: str | None) -> str:
    """Enough to recognise a member, not enough to re-identify one: jo•••@ex•••.com, 1234•••89."""
    if not value:
        return ""
    if "@" in value:
        local, _, domain = value.partition("@")
        host, dot, tld = domain.rpartition(".")
        return f"{local[:2]}•••@{(host or tld)[:2]}•••{dot}{tld if host else ''}"
    if len(value) <= 6:
        return value[0] + "•••"
    return f"{value[:4]}•••{value[-2:]}"


@dataclass(frozen=True)
class MemberPage:
    side: str
    rows: list[dict[str, Any]]
    total: int  # rows matching the search
    offset: int
    limit: int
    has_why: bool  # the rows carry ``explained``: the reason and the filter branches that held


def _columns(path: Path) -> list[str]:
    return pq.read_schema(path).names


def _query(path: Path, search: str | None) -> tuple[str, dict[str, Any]]:
    present = set(_columns(path))
    extra = "".join(f", {c}" for c in EXTRA_COLUMNS if c in present)
    sql = f"SELECT person_id, namespace, identity{extra} FROM read_parquet($path)"
    params: dict[str, Any] = {"path": str(path)}
    if search:
        sql += " WHERE person_id ILIKE $q OR identity ILIKE $q"
        params["q"] = f"%{search.strip()}%"
    return sql, params


def member_page(
    run_dir: Path,
    side: Side,
    *,
    search: str | None = None,
    offset: int = 0,
    limit: int = PAGE_SIZE,
    reveal: bool = False,
    legend: list[tuple[int, str]] | None = None,
) -> MemberPage:
    """One page of a run's entered or exited members, sorted by person id; ``legend``
    (:func:`why_legend`) turns each member's branch code into the branches that held."""
    path = run_dir / FILES[side]
    if not path.exists():
        return MemberPage(side, [], 0, 0, limit, False)
    sql, params = _query(path, search)
    with duckdb.connect() as con:
        total = con.execute(f"SELECT count(*) FROM ({sql})", params).fetchone()[0]
        cursor = con.execute(
            f"{sql} ORDER BY person_id, identity LIMIT $limit OFFSET $offset",
            {**params, "limit": limit, "offset": max(offset, 0)},
        )
        names = [d[0] for d in cursor.description]
        rows = [dict(zip(names, row, strict=True)) for row in cursor.fetchall()]
    if not reveal:
        for row in rows:
            row["person_id"], row["identity"] = mask(row["person_id"]), mask(row["identity"])
    has_why = "reason" in names or "why" in names
    for row in rows if has_why else ():
        row["explained"] = explain_member(row, legend or [])
    return MemberPage(side, rows, int(total), offset, limit, has_why)


def members_csv(run_dir: Path, side: Side, *, reveal: bool = False) -> Iterator[str]:
    """The whole entered or exited list as CSV text, streamed in batches."""
    path = run_dir / FILES[side]
    sql, params = _query(path, None)
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    with duckdb.connect() as con:
        cursor = con.execute(f"{sql} ORDER BY person_id, identity", params)
        names = [d[0] for d in cursor.description]
        writer.writerow(names)
        while batch := cursor.fetchmany(CSV_BATCH):
            for row in batch:
                values = list(row)
                if not reveal:
                    values[0], values[2] = mask(values[0]), mask(values[2])
                writer.writerow(values)
            yield buffer.getvalue()
            buffer.seek(0)
            buffer.truncate()
    if buffer.getvalue():
        yield buffer.getvalue()


def parquet_csv(path: Path) -> str:
    """A small Parquet file (dead letters) as CSV text."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    with duckdb.connect() as con:
        cursor = con.execute("SELECT * FROM read_parquet($p)", {"p": str(path)})
        writer.writerow([d[0] for d in cursor.description])
        writer.writerows(cursor.fetchall())
    return buffer.getvalue()


def record_approval(
    run_dir: Path, section: str, who: str, dag_run_id: str, **extra: Any
) -> dict[str, Any]:
    """The reviewed run remembers who approved (or overrode) it and which run publishes it."""
    entry = {
        "by": who,
        "at": datetime.now(UTC).isoformat(timespec="seconds"),
        "dag_run_id": dag_run_id,
        **extra,
    }
    update_run_record(run_dir, **{section: entry})
    return entry


def why_legend(record: dict[str, Any]) -> list[tuple[int, str]]:
    """(mask, words) of each filter branch, from run.json's ``compute.why`` when recorded.
    Empty for an all-of (or one-branch) filter: every member holds every branch, which the
    page says once (:func:`shared_branches`) instead of on every row."""
    if shared_branches(record):
        return []
    return _branches(record)


def shared_branches(record: dict[str, Any]) -> list[str]:
    """The branches every entering member holds (an all-of or one-branch filter)."""
    why = (record.get("compute") or {}).get("why") or {}
    return [text for _, text in _branches(record)] if why.get("combine") in ("all", "one") else []


def _branches(record: dict[str, Any]) -> list[tuple[int, str]]:
    legend = ((record.get("compute") or {}).get("why") or {}).get("branches") or []
    return [(int(b["mask"]), str(b["text"])) for b in legend if "mask" in b and "text" in b]


def explain_member(row: dict[str, Any], legend: list[tuple[int, str]]) -> dict[str, Any]:
    """A member's reason in words and the filter branches its code says held."""
    reason = row.get("reason")
    code = row.get("why")
    held = [text for bit, text in legend if isinstance(code, int) and code & bit]
    return {"reason": REASON_WORDS.get(reason, reason) if reason else None, "held": held}
