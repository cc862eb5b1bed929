"""Uncommitted sends: which runs' inputs no commit accounts for, and the diff they correct."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq

from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import write_json
from cja_audiences.lake.runs import update_run_record
from cja_audiences.publish.sent import (
    corrections,
    next_qualification_time,
    outstanding_sends,
    unaccounted_runs,
)
from tests.publish.helpers import write_members


def started_sending(run_dir, kinds=("entered", "exited")):
    """A run whose publish wrote its ledger manifest (the first thing before any request)."""
    inputs = {k: {"rows": 0, "sha256": "x", "qualification_time": "t"} for k in kinds}
    write_json(
        {"version": 1, "chunk_size": 500, "inputs": inputs}, run_dir / "ledger/manifest.json"
    )


def ids(path):
    return sorted(int(p[1:]) for p in pq.read_table(path).column("person_id").to_pylist())


def committed_run(audience, run_id, members, previous=None):
    run_dir = audience / "runs" / run_id
    write_members(run_dir / "members.parquet", members)
    started_sending(run_dir)
    update_run_record(
        run_dir,
        publish={"status": "ok", "mode": "delta"},
        commit={"run_id": run_id, "committed_at": "t", "size": 1, "previous_run_id": previous},
    )
    write_json({"run_id": run_id}, audience / "current.json")
    return run_dir


def test_only_uncommitted_unsuperseded_sends_are_outstanding(tmp_path):
    audience = tmp_path / "high_value"
    committed_run(audience, "r0", range(10))
    abandoned = audience / "runs" / "rA"
    write_members(abandoned / "entered.parquet", range(10, 15))
    write_members(abandoned / "exited.parquet", range(0, 3))
    started_sending(abandoned)
    superseded = audience / "runs" / "rS"
    started_sending(superseded)
    update_run_record(superseded, superseded_by="r0")
    never_sent = audience / "runs" / "rN"
    never_sent.mkdir()
    half_committed = audience / "runs" / "rH"  # crashed after its commit record, pointer not moved
    started_sending(half_committed)
    update_run_record(
        half_committed,
        publish={"status": "ok", "mode": "delta"},
        commit={"run_id": "rH", "committed_at": "t", "size": 1, "previous_run_id": "r0"},
    )

    found = {(s.run_id, s.kind) for s in outstanding_sends(audience)}
    assert found == {("rA", "entered"), ("rA", "exited"), ("rH", "entered"), ("rH", "exited")}
    assert corrections(audience, "rA").run_ids == ["rH"]


def test_the_diff_base_is_corrected_by_what_an_abandoned_run_sent(tmp_path):
    audience = tmp_path / "high_value"
    committed_run(audience, "r0", range(0, 10))
    abandoned = audience / "runs" / "rA"  # may have realized 10..14 and exited 0..2
    write_members(abandoned / "entered.parquet", range(10, 15))
    write_members(abandoned / "exited.parquet", range(0, 3))
    started_sending(abandoned)
    new = audience / "runs" / "rB"
    write_members(new / "members.parquet", [*range(1, 10), 12])  # 0 leaves, 12 joins

    record = diff_members(new, audience / "runs" / "r0", corrections=corrections(audience, "rB"))

    assert ids(new / "entered.parquet") == [1, 2, 12]  # 1, 2 may have been exited by rA
    assert ids(new / "exited.parquet") == [0, 10, 11, 13, 14]  # rA may have realized 10..14
    assert record["corrections"] == {"run_ids": ["rA"], "entered": 2, "exited": 4}
    assert record["unchanged"] == 9
    assert unaccounted_runs(audience, new) == []
    late = audience / "runs" / "rL"
    started_sending(late)
    write_members(late / "entered.parquet", [])
    assert unaccounted_runs(audience, new) == ["rL"]  # sent after rB's diff


def test_two_first_publishes_the_second_exits_what_the_first_sent(tmp_path):
    audience = tmp_path / "high_value"
    first = audience / "runs" / "rA"
    write_members(first / "entered.parquet", range(0, 6))
    started_sending(first, kinds=("entered",))
    second = audience / "runs" / "rB"
    write_members(second / "members.parquet", range(3, 9))
    diff_members(second, None, corrections=corrections(audience, "rB"))
    assert ids(second / "entered.parquet") == list(range(3, 9))
    assert ids(second / "exited.parquet") == [0, 1, 2]


def test_qualification_time_never_goes_back(tmp_path):
    now = datetime(2026, 12, 1, 12, tzinfo=UTC)
    fast = next_qualification_time(tmp_path, now + timedelta(hours=2))
    after = next_qualification_time(tmp_path, now)
    assert after > fast and after == "2026-12-01T14:00:00.001+00:00"
    assert next_qualification_time(tmp_path, now + timedelta(hours=3)) > after
