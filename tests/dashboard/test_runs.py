"""Run records as the dashboard reads them: distinct statuses, types, tolerant of new sections."""

from __future__ import annotations

import pytest

from cja_audiences.dashboard.runs import RunCache, kind_of, run_view, status_of, verdict_of


@pytest.mark.parametrize(
    ("record", "status"),
    [
        ({"commit": {}, "publish": {}}, "published"),
        ({"guardrails": {"blocked": True}, "status": "failed", "failure": {}}, "blocked"),
        ({"gate": {"due": False}}, "skipped"),
        ({"status": "dry_run"}, "dry_run"),
        ({"status": "failed", "failure": {"stage": "publish"}}, "failed"),
        ({"compute": {"size": 3}}, "running"),
    ],
)
def test_every_outcome_has_its_own_status(record, status):
    assert status_of(record) == status


@pytest.mark.parametrize(
    ("record", "run_id", "kind"),
    [
        ({"request": {"run_type": "asset_triggered"}}, "x", "new data"),
        ({"request": {"run_type": "manual", "approve_run": "r"}}, "x", "approval"),
        ({"request": {"approve_run": "r", "override": ["change"]}}, "x", "override"),
        ({"rollback": {"target_run_id": "a"}}, "rollback__1", "rollback"),
        ({"request": {"scheduled": True}}, "x", "scheduled"),  # records before run_type
        ({}, "scheduled__2026-11-01", "scheduled"),
    ],
)
def test_run_types_people_recognise(record, run_id, kind):
    assert kind_of(record, run_id) == kind


def test_reconcile_drift_and_renewals_show_when_present_and_are_optional():
    record = {
        "commit": {},
        "diff": {"size": 10, "entered": 2, "exited": 1, "renewed": 4},
        "reconcile": {"drift": {"missing_in_aep": 3, "unexpected_in_aep": 0}},
    }
    view = run_view("r", record, 0.0, True)
    assert view.renewed == 4 and view.drift == {"missing_in_aep": 3, "unexpected_in_aep": 0}
    bare = run_view("r", {"commit": {}}, 0.0, False)
    assert bare.renewed is None and bare.drift is None and bare.messages == []
    assert run_view("r", {"publish": {"renewed": 5}}, 0.0, False).renewed == 5


def test_verdict_is_the_worst_check():
    assert verdict_of([{"verdict": "pass"}, {"verdict": "warn"}]) == "warn"
    assert verdict_of([{"verdict": "block"}, {"verdict": "warn"}]) == "block"
    assert verdict_of([]) is None


def test_the_cache_rebuilds_a_run_whose_record_changed(tmp_path):
    import os

    from cja_audiences.dashboard.runs import audience_runs

    run = tmp_path / "runs" / "r1"
    run.mkdir(parents=True)
    (run / "run.json").write_text('{"status": "dry_run"}')
    cache = RunCache()
    assert [v.status for v in audience_runs(tmp_path, cache)] == ["dry_run"]
    (run / "run.json").write_text('{"status": "failed"}')
    os.utime(run / "run.json", ns=(1, 10**18))
    assert [v.status for v in audience_runs(tmp_path, cache)] == ["failed"]
    (tmp_path / "current.json").write_text('{"run_id": "r1"}')
    assert audience_runs(tmp_path, cache)[0].is_current
    assert audience_runs(tmp_path / "nothing", cache) == []
