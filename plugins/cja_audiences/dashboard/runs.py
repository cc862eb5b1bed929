"""Run history as people read it: one :class:`RunView` per run folder, from its run.json.

A run's status is one of ``published``, ``dry_run``, ``skipped``, ``blocked``, ``failed`` or
``running``, each distinct (Airflow shows most of them as "Success" or "Failed"). Parsed
records are cached by the file's modification time, so a page over thousands of runs reads
only what changed since the last request.
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from threading import Lock
from typing import Any

from pydantic import ValidationError

from cja_audiences.lake.layout import read_json
from cja_audiences.lake.runs import CURRENT, DEAD_LETTERS, MEMBERS, RUN_RECORD, RUNS, RunRecord

STATUSES = ("published", "dry_run", "skipped", "blocked", "failed", "running")
KINDS = {
    "scheduled": "scheduled",
    "manual": "manual",
    "asset_triggered": "new data",
    "backfill": "backfill",
}


@dataclass(frozen=True)
class RunView:
    run_id: str
    created_at: datetime
    status: str
    kind: str
    is_current: bool = False
    size: int | None = None
    entered: int | None = None
    exited: int | None = None
    renewed: int | None = None
    verdict: str | None = None  # pass / warn / block
    checks: list[dict[str, Any]] = field(default_factory=list)
    failed_stage: str | None = None
    reason: str | None = None
    dead_letters: int = 0
    aep_url: str | None = None
    as_of: str | None = None
    drift: dict[str, Any] | None = None
    approved: dict[str, Any] | None = None  # this dry run was approved: by, at, dag run
    override: dict[str, Any] | None = None  # this run overrode guardrails: by, checks
    reviewed_run: str | None = None  # this run published that reviewed run
    record: dict[str, Any] = field(default_factory=dict, repr=False)

    @property
    def messages(self) -> list[str]:
        """Guardrail warnings and blocks, as the checks wrote them."""
        return [c["message"] for c in self.checks if c.get("verdict") in ("warn", "block")]


def status_of(record: dict[str, Any]) -> str:
    if "commit" in record:
        return "published"
    if (record.get("guardrails") or {}).get("blocked"):
        return "blocked"
    if (record.get("gate") or {}).get("due") is False:
        return "skipped"
    if record.get("status") == "dry_run":
        return "dry_run"
    if record.get("status") == "failed" or "failure" in record:
        return "failed"
    return "running"


def kind_of(record: dict[str, Any], run_id: str) -> str:
    request = record.get("request") or {}
    if "rollback" in record or run_id.startswith("rollback__"):
        return "rollback"
    if request.get("override"):
        return "override"
    if request.get("approve_run"):
        return "approval"
    if request.get("run_type"):
        return KINDS.get(request["run_type"], request["run_type"])
    if request.get("scheduled"):
        return "scheduled"
    return KINDS.get(run_id.split("__")[0], "manual")  # older records: from the run id


def verdict_of(checks: list[dict[str, Any]]) -> str | None:
    verdicts = {c.get("verdict") for c in checks}
    for verdict in ("block", "warn", "pass"):
        if verdict in verdicts:
            return verdict
    return None


def _drift(record: dict[str, Any]) -> dict[str, Any] | None:
    """What the last reconcile found (issue 12's section), shown only when it ran."""
    reconcile = record.get("reconcile")
    if not isinstance(reconcile, dict):
        return None
    drift = reconcile.get("drift", reconcile)
    return drift if isinstance(drift, dict) else {"drift": drift}


def run_view(run_id: str, record: dict[str, Any], created: float, is_current: bool) -> RunView:
    diff = record.get("diff") or {}
    publish = record.get("publish") or {}
    compute = record.get("compute") or {}
    failure = record.get("failure") or {}
    checks = (record.get("guardrails") or {}).get("checks", [])
    status = status_of(record)
    reason = failure.get("reason")
    if status == "skipped":
        reason = (record.get("gate") or {}).get("reason")
    return RunView(
        run_id=run_id,
        created_at=datetime.fromtimestamp(created, UTC),
        status=status,
        kind=kind_of(record, run_id),
        is_current=is_current,
        size=diff.get("size", compute.get("size")),
        entered=diff.get("entered"),
        exited=diff.get("exited"),
        renewed=diff.get("renewed", publish.get("renewed")),
        verdict=verdict_of(checks),
        checks=checks,
        failed_stage=failure.get("stage") if status in ("failed", "blocked") else None,
        reason=reason,
        dead_letters=int(publish.get("dead_lettered") or 0),
        aep_url=(publish.get("audience") or {}).get("url"),
        as_of=(record.get("request") or {}).get("as_of"),
        drift=_drift(record),
        approved=record.get("approval"),
        override=record.get("override"),
        reviewed_run=diff.get("reviewed_run"),
        record=record,
    )


class RunCache:
    """Run views built once per change of their run.json; safe across the server's threads.

    A warm page costs one ``stat`` per run: a run's members file is written once, and every
    stage that changes a run rewrites its run.json, which is what the cache is keyed on.
    """

    def __init__(self) -> None:
        self._views: dict[str, tuple[int | None, RunView]] = {}
        self._lock = Lock()

    def view(self, runs_dir: str, name: str, is_current: bool) -> RunView:
        path = os.path.join(runs_dir, name, RUN_RECORD)
        try:
            stamp: int | None = os.stat(path).st_mtime_ns
        except FileNotFoundError:
            stamp = None
        with self._lock:
            cached = self._views.get(path)
        if cached and cached[0] == stamp:
            view = cached[1]
        else:
            record = _record(Path(path)) if stamp is not None else {}
            view = run_view(name, record, _created(os.path.join(runs_dir, name)), False)
            with self._lock:
                self._views[path] = (stamp, view)
        return replace(view, is_current=True) if is_current else view


CACHE = RunCache()


def _record(path: Path) -> dict[str, Any]:
    """run.json through the typed :class:`RunRecord`; a record another version wrote (a
    section this one does not know) is still shown as it is rather than hidden."""
    raw = read_json(path, default={}) or {}
    try:
        return RunRecord.model_validate(raw).model_dump(mode="json", exclude_none=True)
    except ValidationError:
        return raw


def _created(run_dir: str) -> float:
    """A run is as old as its members snapshot (written once), else its folder."""
    try:
        return os.stat(os.path.join(run_dir, MEMBERS)).st_mtime
    except FileNotFoundError:
        return os.stat(run_dir).st_mtime


def current_run_id(audience_dir: Path) -> str | None:
    current = read_json(audience_dir / CURRENT)
    return current["run_id"] if current else None


def audience_runs(audience_dir: Path, cache: RunCache = CACHE) -> list[RunView]:
    """Every run of one audience, newest first."""
    runs_dir = str(audience_dir / RUNS)
    if not os.path.isdir(runs_dir):
        return []
    current = current_run_id(audience_dir)
    with os.scandir(runs_dir) as entries:
        names = [e.name for e in entries if e.is_dir()]
    views = [cache.view(runs_dir, name, name == current) for name in names]
    views.sort(key=lambda v: (v.created_at, v.run_id), reverse=True)
    return views


def find_run(runs: list[RunView], run_id: str) -> RunView | None:
    return next((r for r in runs if r.run_id == run_id), None)


def dead_letter_file(run_dir: Path) -> Path | None:
    path = run_dir / DEAD_LETTERS
    return path if path.exists() else None
