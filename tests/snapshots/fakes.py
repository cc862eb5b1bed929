"""A stand-in for AEP's membership and the run pipeline, shared by snapshots and CLI tests."""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cja_audiences import snapshots
from cja_audiences.diff import diff_members
from cja_audiences.lake.runs import update_run_record
from tests.guardrails.helpers import ecid, read_members, write_members


def people(ids) -> list[tuple[str, str, str]]:
    return [(f"p{i:04d}", "ECID", ecid(i)) for i in ids]


class FakeAep:
    """Applies what a publish sends to a membership table, as AEP's segmentMembership would.

    The end-to-end rollback against the emulator is the lead's; this checks the same thing
    (membership after rollback) without the AEP client.
    """

    def __init__(self) -> None:
        self.membership: dict[tuple[str, str], str] = {}
        self.calls: list[dict[str, Any]] = []

    def publish(self, run_dir: Path) -> dict[str, Any]:
        entered = read_members(run_dir / "entered.parquet")
        exited = read_members(run_dir / "exited.parquet")
        for _, namespace, identity in exited:
            self.membership[(namespace, identity)] = "exited"
        for _, namespace, identity in entered:
            self.membership[(namespace, identity)] = "realized"
        self.calls.append({"run": run_dir.name, "realized": entered, "exited": exited})
        sent = len(entered) + len(exited)
        return {"status": "ok", "sent": sent, "acknowledged": sent, "dead_lettered": 0}

    def realized(self) -> set[tuple[str, str]]:
        return {key for key, status in self.membership.items() if status == "realized"}


def new_run(audience_dir: Path, run_id: str, members) -> Path:
    """Compute (members), diff against the committed run, as the pipeline does."""
    run_dir = audience_dir / "runs" / run_id
    write_members(run_dir / "members.parquet", members)
    diff_members(run_dir, snapshots.current_run_dir(audience_dir))
    return run_dir


def publish_and_commit(audience_dir: Path, aep: FakeAep, run_id: str, members) -> Path:
    run_dir = new_run(audience_dir, run_id, members)
    update_run_record(run_dir, publish=aep.publish(run_dir))
    snapshots.commit(audience_dir, run_dir)
    return run_dir
