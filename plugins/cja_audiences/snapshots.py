"""Versioned audience snapshots: every run is kept, ``current.json`` names the published one.

Layout (DESIGN §3): ``audiences/<id>/runs/<run_id>/`` holds members / entered / exited
Parquet and run.json; ``audiences/<id>/current.json`` = {"run_id", "committed_at", "size"}
of the last run whose publish fully succeeded. Only ``commit`` moves it, and it refuses a run
that was blocked, failed, dry or diffed against another base, so AEP and current.json never
disagree. Rollback is a new run whose members are an old run's: it publishes the diff from
the current state and commits like any run, so history only grows.

Commit is a compare-and-set on the pointer: it moves current.json only from the run this run
was diffed against, only while this run still holds the audience lease (``lake.lease``), and
only if no other run sent records after this run's diff. It then marks the runs whose sends
its diff corrected as superseded, and releases the lease. On object storage the same swap is
a conditional PUT of current.json (``If-Match`` the ETag read with the base).
"""

from __future__ import annotations

from collections.abc import Callable, Iterator
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

from cja_audiences import clock
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import is_safe_name, read_json, write_json
from cja_audiences.lake.lease import RunLease
from cja_audiences.lake.runs import (
    CURRENT,
    ENTERED,
    EXITED,
    MEMBERS,
    RENEWED,
    RUN_RECORD,
    RUNS,
    read_run_record,
    update_run_record,
)
from cja_audiences.lake.storage import (
    LakePath,
    connect,
    copy_file,
    exclusive,
    makedirs,
    parquet_rows,
    remove_tree,
    same_path,
)
from cja_audiences.publish import sent

ROLLBACK_MARKER = "rollback.json"  # a rollback in progress: its target and new run are kept
LOCK = ".lock"
SAMPLE_SIZE = 5


class SnapshotError(RuntimeError):
    """A snapshot operation that must not happen; the message says why and what to do."""


@contextmanager
def _locked(audience_dir: LakePath) -> Iterator[None]:
    """One writer of current.json and of the runs folder at a time (commit, rollback, prune),
    across processes and workers: an flock locally, a conditional-write lock object on
    object storage (``storage.exclusive``)."""
    makedirs(audience_dir)
    with exclusive(audience_dir / LOCK):
        yield


def current_run(audience_dir: LakePath) -> dict[str, Any] | None:
    """{"run_id", "committed_at", "size"} of the last committed run, None before the first."""
    return read_json(audience_dir / CURRENT)


def current_run_dir(audience_dir: LakePath) -> LakePath | None:
    """The committed run's folder: the ``previous_run_dir`` of the next diff."""
    current = current_run(audience_dir)
    return audience_dir / RUNS / current["run_id"] if current else None


def newest_run_dir(audience_dir: LakePath) -> LakePath | None:
    """The most recently created run, committed or not (None when there is none)."""
    runs = _run_dirs(audience_dir)
    return runs[-1] if runs else None


def last_committed_at(audience_dir: LakePath) -> datetime | None:
    """For ``specs.calendar.refresh_due``."""
    current = current_run(audience_dir)
    return datetime.fromisoformat(current["committed_at"]) if current else None


def commit(audience_dir: LakePath, run_dir: LakePath) -> dict[str, Any]:
    """Make ``run_dir`` the current run; call only after its publish fully succeeded.

    Refuses (SnapshotError, current.json untouched) a run that was blocked by guardrails, not
    published, dry, partly dead-lettered, or diffed against another run than the current
    one (another run committed in between: its entered/exited were never sent); raises
    ``LeaseLost`` when another run took the audience's lease since this one's diff.
    Committing the run that is already current returns its pointer unchanged.
    """
    lease = RunLease(run_dir, audience_id=audience_dir.name)
    with _locked(audience_dir):
        current = current_run(audience_dir)
        if current is not None and current["run_id"] == run_dir.name:
            pointer = current  # already committed (a retry after a crash right after the move)
        else:
            lease.fence()
            record = read_run_record(run_dir)
            _check_committable(audience_dir, run_dir, record)
            pointer = {
                "run_id": run_dir.name,
                "committed_at": clock.now().isoformat(),
                "size": record["diff"]["size"],
            }
            update_run_record(
                run_dir,
                commit={**pointer, "previous_run_id": current["run_id"] if current else None},
            )
            write_json(pointer, audience_dir / CURRENT)
        _mark_superseded(audience_dir, run_dir)
    lease.release()
    return pointer


def _mark_superseded(audience_dir: LakePath, run_dir: LakePath) -> None:
    """The runs whose sends this committed run's diff corrected never count again."""
    corrected = (read_run_record(run_dir).get("diff") or {}).get("corrections", {})
    for run_id in corrected.get("run_ids", []):
        superseded = _runs_dir(audience_dir) / run_id
        if superseded.is_dir() and not read_run_record(superseded).get("superseded_by"):
            update_run_record(superseded, superseded_by=run_dir.name)


def _check_committable(audience_dir: LakePath, run_dir: LakePath, record: dict[str, Any]) -> None:
    name = run_dir.name
    if not same_path(run_dir.parent, audience_dir / RUNS):
        raise SnapshotError(f"{run_dir} is not a run of {audience_dir}")
    if not (run_dir / MEMBERS).exists() or "diff" not in record:
        raise SnapshotError(f"run {name} has no members or diff; compute and diff it first")
    if record.get("guardrails", {}).get("blocked"):
        raise SnapshotError(f"run {name} was blocked by guardrails; it cannot become current")
    if "dry_run" in record:
        raise SnapshotError(f"run {name} is a dry run; publish a real run to commit")
    publish = record.get("publish")
    if not publish:
        raise SnapshotError(f"run {name} was not published; commit only after publish")
    if not publish_succeeded(publish):
        raise SnapshotError(
            f"run {name}'s publish did not fully succeed (status={publish.get('status')}, "
            f"dead_lettered={publish.get('dead_lettered', 0)}); resume the publish first"
        )
    current = current_run(audience_dir)
    base = record["diff"].get("previous_run_id")
    if base != (current["run_id"] if current else None):
        raise SnapshotError(
            f"run {name} was diffed against {base or 'nothing (first run)'} but the current "
            f"run is {current['run_id'] if current else 'none'}; diff it again and republish"
        )
    newer = sent.unaccounted_runs(audience_dir, run_dir)
    if newer:
        raise SnapshotError(
            f"run(s) {', '.join(newer)} sent records to AEP after run {name} was diffed, so AEP "
            "is not what this run's diff assumed; run a new refresh, which supersedes them"
        )


def publish_succeeded(publish: dict[str, Any]) -> bool:
    """``publish.publish_run`` says "ok" only when every chunk was acknowledged and dead letters
    stayed under its threshold; a publisher without a status must have no dead letters."""
    if "status" in publish:
        return publish["status"] == "ok" and publish.get("chunks", {}).get("complete", True)
    return not publish.get("dead_lettered")


def _runs_dir(audience_dir: LakePath) -> LakePath:
    return audience_dir / RUNS


def _created(run_dir: LakePath) -> float:
    """A run is as old as its members snapshot (written once, never rewritten); before
    compute, as its run record (object storage has no folder times)."""
    for candidate in (run_dir / MEMBERS, run_dir / RUN_RECORD):
        if candidate.exists():
            return candidate.stat().st_mtime
    return run_dir.stat().st_mtime


def _run_dirs(audience_dir: LakePath) -> list[LakePath]:
    """Oldest first."""
    runs = _runs_dir(audience_dir)
    if not runs.is_dir():
        return []
    return sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: (_created(p), p.name))


def _status(record: dict[str, Any], is_current: bool) -> str:
    """current, published, blocked, skipped, dry_run, failed (publish not ok) or pending."""
    if is_current:
        return "current"
    if "commit" in record:
        return "published"
    if record.get("guardrails", {}).get("blocked"):
        return "blocked"
    if record.get("gate", {}).get("due") is False:
        return "skipped"
    if "dry_run" in record or record.get("status") == "dry_run":
        return "dry_run"
    if "publish" in record or record.get("status") == "failed":
        return "failed"
    return "pending"


def _summary(run_dir: LakePath, current_id: str | None) -> dict[str, Any]:
    record = read_run_record(run_dir)
    diff = record.get("diff", {})
    return {
        "run_id": run_dir.name,
        "created_at": datetime.fromtimestamp(_created(run_dir), UTC).isoformat(timespec="seconds"),
        "status": _status(record, run_dir.name == current_id),
        "size": diff.get("size"),
        "entered": diff.get("entered"),
        "exited": diff.get("exited"),
        "rollback_of": record.get("rollback", {}).get("target_run_id"),
    }


def list_runs(audience_dir: LakePath) -> list[dict[str, Any]]:
    """One summary per run, oldest first: run_id, created_at, status, size, entered, exited."""
    current = current_run(audience_dir)
    current_id = current["run_id"] if current else None
    return [_summary(d, current_id) for d in _run_dirs(audience_dir)]


def _run_dir(audience_dir: LakePath, run_id: str) -> LakePath:
    if not is_safe_name(run_id):
        raise SnapshotError(
            f"{run_id!r} is not a run id (letters, digits, '-', '_' and '.'; see `runs list`)"
        )
    run_dir = _runs_dir(audience_dir) / run_id
    if not run_dir.is_dir():
        known = ", ".join(r.name for r in _run_dirs(audience_dir)[-5:]) or "none"
        raise SnapshotError(f"no run {run_id!r} in {audience_dir} (latest: {known})")
    return run_dir


def show_run(audience_dir: LakePath, run_id: str) -> dict[str, Any]:
    """The run's summary, its full run.json and the row count of each Parquet file."""
    run_dir = _run_dir(audience_dir, run_id)
    current = current_run(audience_dir)
    files = {
        name: parquet_rows(run_dir / name)
        for name in (MEMBERS, ENTERED, EXITED)
        if (run_dir / name).exists()
    }
    return {
        **_summary(run_dir, current["run_id"] if current else None),
        "files": files,
        "record": read_run_record(run_dir),
    }


def dry_run_report(run_dir: LakePath, sample: int = SAMPLE_SIZE) -> dict[str, Any]:
    """What a publish would send (counts and a sample per status), sending and committing
    nothing; recorded as run.json["dry_run"], which also keeps the run from being committed.

    Samples show person ids and masked identity values: enough to recognise, not to leak.
    """
    statuses = {"realized": run_dir / ENTERED, "exited": run_dir / EXITED}
    if (run_dir / RENEWED).exists():
        statuses["renewed"] = run_dir / RENEWED  # realized again, counted apart
    report: dict[str, Any] = {"sent": 0, "committed": False}
    con = connect(run_dir)
    try:
        for status, path in statuses.items():
            rows = con.execute(
                "SELECT person_id, namespace, identity FROM read_parquet($path) "
                "ORDER BY person_id LIMIT $n",
                {"path": str(path), "n": sample},
            ).fetchall()
            report[status] = {
                "count": parquet_rows(path),
                "sample": [
                    {"person_id": p, "namespace": ns, "identity": mask(i)} for p, ns, i in rows
                ],
            }
    finally:
        con.close()
    update_run_record(run_dir, dry_run=report)
    return report


def mask(value: str) -> str:
    """Keep three leading characters and the length: recognisable, not reusable."""
    return f"{value[:3]}...({len(value)})"


def rollback(
    audience_dir: LakePath,
    target_run_id: str,
    new_run_dir: LakePath,
    publish: Callable[[LakePath], dict[str, Any]],
    *,
    dry_run: bool = False,
    lease_wait_s: float = 0.0,
    resume: bool = False,
) -> dict[str, Any]:
    """Make a new run with the members of ``target_run_id``, publish its diff, commit it.

    The publisher is injected (``publish(new_run_dir) -> publish record``) so snapshots stay
    independent of AEP. Only a run that was once committed can be a target: a blocked or
    failed run was never a valid published state. ``dry_run`` stops after the diff with a
    ``dry_run_report``. The rollback holds the audience lease from diff to commit (waiting
    up to ``lease_wait_s`` for a running refresh, else ``AudienceBusy``). If publish raises,
    current.json stays where it was; re-running the rollback with a new run dir is safe.
    A rollback killed part-way leaves its marker: ``resume`` finishes that run (its own
    lease, its diff, the publish resumed from its ledger) instead of ``new_run_dir``.
    """
    target = _run_dir(audience_dir, target_run_id)
    target_record = read_run_record(target)
    current = current_run(audience_dir)
    if current is None:
        raise SnapshotError(f"{audience_dir.name} was never published; nothing to roll back")
    if target_run_id == current["run_id"]:
        raise SnapshotError(f"run {target_run_id} is already current; nothing to roll back")
    if "commit" not in target_record:
        raise SnapshotError(
            f"run {target_run_id} was never published ({_status(target_record, False)}); "
            "roll back only to a run that was current once (see `runs list`)"
        )
    marker = audience_dir / ROLLBACK_MARKER
    with _locked(audience_dir):
        new_run_dir = _rollback_run(audience_dir, target_run_id, new_run_dir, marker, resume)
    lease = RunLease(new_run_dir, audience_id=audience_dir.name)
    try:
        makedirs(new_run_dir)
        lease.take(wait_s=lease_wait_s, reason=f"rollback to {target_run_id}")
        current = current_run(audience_dir)  # as of holding the lease
        if current is None or current["run_id"] == target_run_id:
            raise SnapshotError(f"run {target_run_id} became current meanwhile; nothing to do")
        diff = _rollback_diff(audience_dir, target, new_run_dir, current["run_id"])
        result: dict[str, Any] = {
            "run_id": new_run_dir.name,
            "target_run_id": target_run_id,
            "from_run_id": current["run_id"],
            "diff": diff,
            **({"resumed": True} if resume else {}),
        }
        if dry_run:
            return {**result, "dry_run": dry_run_report(new_run_dir)}
        record = publish(new_run_dir)
        update_run_record(new_run_dir, publish=record)
        return {**result, "publish": record, "current": commit(audience_dir, new_run_dir)}
    finally:
        lease.release()  # a no-op after commit; a failed rollback's sends stay outstanding
        if marker.exists():
            marker.unlink()


def _rollback_run(
    audience_dir: LakePath,
    target_run_id: str,
    new_run_dir: LakePath,
    marker: LakePath,
    resume: bool,
) -> LakePath:
    """The rollback's run folder, recorded in the marker (called under the audience lock)."""
    started = read_json(marker)
    if resume:
        if not started or started["target_run_id"] != target_run_id:
            raise SnapshotError(
                f"no interrupted rollback to {target_run_id} to resume "
                f"({started or 'none is in progress'}); roll back without --resume"
            )
        return _runs_dir(audience_dir) / started["run_id"]
    if started:
        raise SnapshotError(
            f"a rollback is already in progress ({started}); if none is running (a crashed "
            f"one), rerun it with --resume to finish it, or delete {marker} to abandon it"
        )
    if not same_path(new_run_dir.parent, _runs_dir(audience_dir)) or new_run_dir.exists():
        raise SnapshotError(f"{new_run_dir} must be a new folder under {_runs_dir(audience_dir)}")
    write_json({"target_run_id": target_run_id, "run_id": new_run_dir.name}, marker)
    return new_run_dir


def _rollback_diff(
    audience_dir: LakePath, target: LakePath, new_run_dir: LakePath, current_id: str
) -> dict[str, Any]:
    """The rollback run's members (the target's) diffed against the current run; a resumed
    rollback keeps the diff it already made, which must still be against the current run."""
    record = read_run_record(new_run_dir)
    made = record.get("diff")
    if made and (record.get("rollback") or {}).get("from_run_id") == current_id:
        return made
    if made:
        raise SnapshotError(
            f"rollback run {new_run_dir.name} was diffed against "
            f"{record['rollback']['from_run_id']} but the current run is now {current_id}; "
            f"delete {audience_dir / ROLLBACK_MARKER} and roll back again"
        )
    copy_file(target / MEMBERS, new_run_dir / MEMBERS)
    update_run_record(
        new_run_dir, rollback={"target_run_id": target.name, "from_run_id": current_id}
    )
    return diff_members(
        new_run_dir,
        _runs_dir(audience_dir) / current_id,
        corrections=sent.corrections(audience_dir, new_run_dir.name),
    )


def prune(audience_dir: LakePath, keep: int) -> list[str]:
    """Delete all but the ``keep`` newest runs; returns the deleted run ids, oldest first.

    Never deletes the current run, the target or new run of a rollback in progress, nor a
    run whose sends no commit accounts for yet (the next diff needs them).
    """
    if keep < 1:
        raise SnapshotError(f"keep must be at least 1 (got {keep})")
    with _locked(audience_dir):
        current = current_run(audience_dir)
        protected = {current["run_id"]} if current else set()
        in_progress = read_json(audience_dir / ROLLBACK_MARKER)
        if in_progress:
            protected |= {in_progress["target_run_id"], in_progress["run_id"]}
        protected |= {s.run_id for s in sent.outstanding_sends(audience_dir)}
        runs = _run_dirs(audience_dir)
        doomed = [r for r in runs[: max(len(runs) - keep, 0)] if r.name not in protected]
        for run_dir in doomed:
            remove_tree(run_dir)
    return [r.name for r in doomed]
