"""A run folder: its file names in one place, and ``run.json`` through one typed model.

Every stage of a run writes its section of ``run.json`` (compute, diff, guardrails, publish,
commit, ...); :class:`RunRecord` names every section, so a misspelt one fails where it is
written instead of vanishing, and every reader (CLI, web view, summaries) sees one shape.
Sections whose shape belongs to their stage are plain mappings validated there.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict

from cja_audiences.lake.layout import read_json, write_json

MEMBERS = "members.parquet"
ENTERED = "entered.parquet"
EXITED = "exited.parquet"
RENEWED = "renewed.parquet"  # unchanged members re-sent before their validUntil lapses
MEMBERSHIP = "membership.parquet"  # what AEP holds after the publish: valid_until, last_sent
REPAIR_REALIZED = "realized.parquet"  # in a reconcile repair folder (with exited.parquet)
REPAIRS = "repairs"  # in a committed run: one folder per reconcile repair
RUN_RECORD = "run.json"
RUN_OWNER = "dag_id"  # the Airflow DAG whose run this folder is, created once (refresh.gate)
DEAD_LETTERS = "dead_letter.parquet"
LEDGER_DIR = "ledger"
CURRENT = "current.json"  # in the audience folder: the committed run
RUNS = "runs"  # in the audience folder: one folder per run

RunStatus = Literal["blocked", "dry_run", "committed", "failed", "skipped"]


class _Section(BaseModel):
    model_config = ConfigDict(extra="allow")


class Gate(_Section):
    due: bool
    reason: str
    next_allowed: Any = None


class Failure(_Section):
    stage: str
    reason: str


class Commit(_Section):
    run_id: str
    committed_at: str
    size: int
    previous_run_id: str | None = None


class Rollback(_Section):
    target_run_id: str
    from_run_id: str


class RunRecord(BaseModel):
    """``run.json``: one optional field per section, written by the stage that owns it."""

    model_config = ConfigDict(extra="forbid")

    audience_id: str | None = None
    run_id: str | None = None
    status: RunStatus | None = None
    request: dict[str, Any] | None = None
    gate: Gate | None = None
    compute: dict[str, Any] | None = None
    diff: dict[str, Any] | None = None
    guardrails: dict[str, Any] | None = None
    publish: dict[str, Any] | None = None
    decommission: dict[str, Any] | None = None
    dry_run: dict[str, Any] | None = None
    # reconcile (issue 12): {at, run_id, mode, checked: {members, exits}, drift: {missing,
    # stale_status, expired, unexpected}, drifted, examples: {kind: [...]}, repair?, ...}
    reconcile: dict[str, Any] | None = None
    repair: dict[str, Any] | None = None  # a repair folder's publish summary
    commit: Commit | None = None
    rollback: Rollback | None = None
    failure: Failure | None = None
    approval: dict[str, Any] | None = (
        None  # a reviewed dry run: who approved it, which run publishes it
    )
    override: dict[str, Any] | None = None  # guardrails overridden for one run: by, checks, at
    lease: dict[str, Any] | None = None  # the audience lease this run holds (lake.lease)
    busy: str | None = None  # why the run skipped: another run held the audience
    superseded_by: str | None = None  # the commit whose diff corrected this run's sends


def load_run(run_dir: Path) -> RunRecord:
    """The run's record (empty when the run has written nothing yet)."""
    return RunRecord.model_validate(read_json(run_dir / RUN_RECORD, default={}))


def read_run_record(run_dir: Path) -> dict[str, Any]:
    """The run's record as plain JSON data (sections that were never written are absent)."""
    return load_run(run_dir).model_dump(mode="json", exclude_none=True)


def update_run_record(run_dir: Path, **sections: Any) -> dict[str, Any]:
    """Validate and merge sections into the run's ``run.json`` (one writer per run at a time)."""
    record = load_run(run_dir).model_dump(mode="json", exclude_none=True)
    record.update(sections)
    checked = RunRecord.model_validate(record).model_dump(mode="json", exclude_none=True)
    write_json(checked, run_dir / RUN_RECORD)
    return checked
