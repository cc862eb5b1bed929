from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import pytest

from cja_audiences import snapshots
from cja_audiences.guardrails import check_run
from cja_audiences.lake.runs import read_run_record, update_run_record
from cja_audiences.snapshots import SnapshotError
from tests.guardrails.helpers import ecid, make_settings, make_spec, read_members
from tests.snapshots.fakes import FakeAep, new_run, people, publish_and_commit


@pytest.fixture
def audience(tmp_path: Path) -> Path:
    return tmp_path / "audiences" / "buyers"


def test_commit_moves_current_and_records_the_chain(audience: Path) -> None:
    aep = FakeAep()
    assert snapshots.current_run(audience) is None
    publish_and_commit(audience, aep, "r1", people(range(20)))
    second = publish_and_commit(audience, aep, "r2", people(range(5, 25)))
    current = snapshots.current_run(audience)
    assert (current["run_id"], current["size"]) == ("r2", 20)
    assert read_run_record(second)["commit"]["previous_run_id"] == "r1"
    assert snapshots.current_run_dir(audience) == second
    assert snapshots.last_committed_at(audience).isoformat() == current["committed_at"]


def test_committing_the_current_run_again_succeeds_and_changes_nothing(audience: Path) -> None:
    """A commit task that crashed right after current.json moved is retried: it must pass."""
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(10)))
    second = publish_and_commit(audience, aep, "r2", people(range(5, 15)))
    pointer, record = snapshots.current_run(audience), read_run_record(second)

    assert snapshots.commit(audience, second) == pointer
    assert snapshots.current_run(audience) == pointer
    assert read_run_record(second) == record


def test_a_blocked_run_leaves_current_json_untouched(audience: Path, tmp_path: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(1000)))
    before = (audience / "current.json").read_bytes()
    shrunk = new_run(audience, "r2", people(range(200)))
    report = check_run(make_spec(), make_settings(tmp_path), shrunk, audience / "runs" / "r1")
    assert report.blocked
    with pytest.raises(SnapshotError, match="blocked by guardrails"):
        snapshots.commit(audience, shrunk)
    assert (audience / "current.json").read_bytes() == before
    assert "commit" not in read_run_record(shrunk)


@pytest.mark.parametrize(
    ("section", "match"),
    [
        ({}, "was not published"),
        ({"publish": {"sent": 10, "dead_lettered": 3}}, "did not fully succeed"),
        ({"publish": {"status": "failed", "dead_lettered": 0}}, "status=failed"),
        ({"publish": {"status": "ok", "chunks": {"complete": False}}}, "did not fully succeed"),
        ({"publish": {"status": "dry_run"}}, "did not fully succeed"),
        ({"dry_run": {"sent": 0}}, "is a dry run"),
    ],
)
def test_failed_unpublished_and_dry_runs_never_move_current(
    audience: Path, section: dict, match: str
) -> None:
    publish_and_commit(audience, FakeAep(), "r1", people(range(20)))
    before = (audience / "current.json").read_bytes()
    run_dir = new_run(audience, "r2", people(range(22)))
    if section:
        update_run_record(run_dir, **section)
    with pytest.raises(SnapshotError, match=match):
        snapshots.commit(audience, run_dir)
    assert (audience / "current.json").read_bytes() == before


def test_a_run_diffed_against_a_stale_base_cannot_commit(audience: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    stale = new_run(audience, "r2", people(range(21)))
    publish_and_commit(audience, aep, "r3", people(range(22)))
    update_run_record(stale, publish=aep.publish(stale))
    with pytest.raises(SnapshotError, match="diffed against r1 but the current run is r3"):
        snapshots.commit(audience, stale)


def test_list_and_show_runs(audience: Path, tmp_path: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    publish_and_commit(audience, aep, "r2", people(range(25)))
    blocked = new_run(audience, "r3", people(range(2)))
    check_run(make_spec(), make_settings(tmp_path), blocked, audience / "runs" / "r2")
    listed = snapshots.list_runs(audience)
    assert [(r["run_id"], r["status"], r["size"]) for r in listed] == [
        ("r1", "published", 20),
        ("r2", "current", 25),
        ("r3", "blocked", 2),
    ]
    shown = snapshots.show_run(audience, "r3")
    assert shown["files"] == {"members.parquet": 2, "entered.parquet": 0, "exited.parquet": 23}
    assert shown["record"]["guardrails"]["blocked"]
    with pytest.raises(SnapshotError, match="no run 'r9'.*latest: r1, r2, r3"):
        snapshots.show_run(audience, "r9")


def test_rollback_restores_an_earlier_membership_exactly(audience: Path) -> None:
    aep = FakeAep()
    first = publish_and_commit(audience, aep, "r1", people(range(0, 30)))
    publish_and_commit(audience, aep, "r2", people(range(10, 40)))
    publish_and_commit(audience, aep, "r3", [*people(range(10, 39)), ("p0039", "ECID", ecid(999))])

    back = audience / "runs" / "rollback_1"
    result = snapshots.rollback(audience, "r1", back, aep.publish)

    assert read_members(back / "members.parquet") == read_members(first / "members.parquet")
    assert aep.realized() == {(ns, i) for _, ns, i in read_members(first / "members.parquet")}
    sent = aep.calls[-1]
    assert sent["realized"] == people(range(0, 10))
    assert sent["exited"] == [*people(range(30, 39)), ("p0039", "ECID", ecid(999))]
    assert result["current"]["run_id"] == "rollback_1"
    assert snapshots.current_run(audience)["run_id"] == "rollback_1"
    assert read_run_record(back)["rollback"] == {"target_run_id": "r1", "from_run_id": "r3"}
    assert not (audience / snapshots.ROLLBACK_MARKER).exists()


def test_rollback_refuses_targets_that_were_never_published(audience: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    new_run(audience, "r2", people(range(21)))
    with pytest.raises(SnapshotError, match="run r2 was never published \\(pending\\)"):
        snapshots.rollback(audience, "r2", audience / "runs" / "back", aep.publish)
    with pytest.raises(SnapshotError, match="already current"):
        snapshots.rollback(audience, "r1", audience / "runs" / "back", aep.publish)


def test_a_failed_rollback_publish_keeps_current(audience: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    publish_and_commit(audience, aep, "r2", people(range(30)))
    before = (audience / "current.json").read_bytes()

    def failing(run_dir: Path) -> dict[str, Any]:
        raise ConnectionError("AEP unreachable")

    with pytest.raises(ConnectionError):
        snapshots.rollback(audience, "r1", audience / "runs" / "back", failing)
    assert (audience / "current.json").read_bytes() == before
    assert not (audience / snapshots.ROLLBACK_MARKER).exists()
    snapshots.rollback(audience, "r1", audience / "runs" / "back2", aep.publish)
    assert snapshots.current_run(audience)["run_id"] == "back2"


def test_a_dry_run_rollback_reports_and_sends_nothing(audience: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    publish_and_commit(audience, aep, "r2", people(range(5, 30)))
    calls = len(aep.calls)
    result = snapshots.rollback(
        audience, "r1", audience / "runs" / "dry", aep.publish, dry_run=True
    )
    report = result["dry_run"]
    assert (report["realized"]["count"], report["exited"]["count"]) == (5, 10)
    assert report["realized"]["sample"][0] == {
        "person_id": "p0000",
        "namespace": "ECID",
        "identity": "000...(38)",
    }
    assert len(report["exited"]["sample"]) == snapshots.SAMPLE_SIZE
    assert len(aep.calls) == calls
    assert snapshots.current_run(audience)["run_id"] == "r2"
    with pytest.raises(SnapshotError, match="dry run"):
        snapshots.commit(audience, audience / "runs" / "dry")


def test_prune_keeps_the_newest_the_current_and_a_rollback_target(audience: Path) -> None:
    aep = FakeAep()
    for n in range(1, 6):
        run_dir = publish_and_commit(audience, aep, f"r{n}", people(range(20 + n)))
        os.utime(run_dir / "members.parquet", (n * 1000, n * 1000))  # creation order
    snapshots.rollback(audience, "r1", audience / "runs" / "r6", aep.publish)
    os.utime(audience / "runs" / "r6" / "members.parquet", (6000, 6000))
    new_run(audience, "r7", people(range(40)))  # pending, newest
    (audience / snapshots.ROLLBACK_MARKER).write_text('{"target_run_id": "r2", "run_id": "r8"}')

    removed = snapshots.prune(audience, keep=2)

    assert removed == ["r1", "r3", "r4", "r5"]
    assert sorted(p.name for p in (audience / "runs").iterdir()) == ["r2", "r6", "r7"]
    assert snapshots.current_run(audience)["run_id"] == "r6"
    with pytest.raises(SnapshotError, match="at least 1"):
        snapshots.prune(audience, keep=0)


def test_dead_letters_the_publisher_accepted_do_not_stop_the_commit(audience: Path) -> None:
    """publish_run fails the run above its dead-letter threshold; below it, status is ok."""
    publish_and_commit(audience, FakeAep(), "r1", people(range(20)))
    run_dir = new_run(audience, "r2", people(range(22)))
    update_run_record(
        run_dir, publish={"status": "ok", "dead_lettered": 1, "chunks": {"complete": True}}
    )
    assert snapshots.commit(audience, run_dir)["run_id"] == "r2"


def test_only_one_rollback_at_a_time(audience: Path) -> None:
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(20)))
    publish_and_commit(audience, aep, "r2", people(range(25)))
    (audience / snapshots.ROLLBACK_MARKER).write_text('{"target_run_id": "r1", "run_id": "x"}')
    with pytest.raises(SnapshotError, match="already in progress.*delete"):
        snapshots.rollback(audience, "r1", audience / "runs" / "back", aep.publish)
    assert (audience / snapshots.ROLLBACK_MARKER).exists()  # not ours to remove
    assert not (audience / "runs" / "back").exists()
