"""AEPProfilePublishOperator over the emulator: summary, extra link, modes, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from cja_audiences.airflow.operators.aep import (
    AEPAudienceLink,
    AEPProfilePublishOperator,
    AEPRequestedReconcileOperator,
    AudienceDashboardLink,
    _flag,
)
from cja_audiences.lake.layout import Lake
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    write_members,
)

pytestmark = pytest.mark.integration
SUMMARY_KEYS = {"sent", "acknowledged", "retried", "dead_lettered", "requests", "elapsed_s"}


@pytest.fixture
def env(emu, tmp_path, monkeypatch, fresh_settings):
    """Connection, spec folder and lake for the operator, all pointing at temp dirs."""
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn(rate_limit=0)))
    specs = tmp_path / "audiences"
    specs.mkdir()
    spec = make_spec()
    fields = spec.model_dump(mode="json", exclude={"source_path"})
    (specs / f"{spec.id}.yaml").write_text(yaml.safe_dump(fields))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(specs))
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(tmp_path / "home"))
    return Lake(tmp_path / "home")


def test_init_is_keyword_only_and_fields_are_templated():
    with pytest.raises(TypeError):
        AEPProfilePublishOperator("publish", "high_value")  # type: ignore[misc]
    op = AEPProfilePublishOperator(task_id="publish", audience_id="high_value")
    assert isinstance(op.template_fields, tuple)
    assert {"audience_id", "aep_conn_id", "run_dir", "full_republish"} <= set(op.template_fields)
    assert [type(link) for link in op.operator_extra_links] == [
        AEPAudienceLink,
        AudienceDashboardLink,
    ]


def test_the_dashboard_link_opens_this_runs_page():
    from types import SimpleNamespace

    op = AEPProfilePublishOperator(task_id="publish", audience_id="high_value")
    key = SimpleNamespace(run_id="manual__2026-11-30T10:00:00+00:00")
    assert AudienceDashboardLink().get_link(op, ti_key=key) == (
        "/cja-audiences/audiences/high_value/runs/manual__2026-11-30T10_00_00_00_00"
    )


def test_publishes_a_given_run_folder_and_links_to_the_audience(emu, env, tmp_path):
    run_dir = tmp_path / "run"
    write_members(run_dir / "entered.parquet", range(1_500))
    write_members(run_dir / "exited.parquet", [])
    op = AEPProfilePublishOperator(
        task_id="publish", audience_id="high_value", run_dir=str(run_dir), chunk_size=400
    )
    summary = op.execute(context={})
    assert SUMMARY_KEYS | {"records_per_s"} <= set(summary)
    assert summary["acknowledged"] == 1_500 and summary["chunks"]["total"] == 4
    json.dumps(summary)  # XCom-safe
    link = AEPAudienceLink().get_link(op, ti_key=None)
    assert link == summary["audience"]["url"] and summary["audience"]["id"] in link
    assert held(emu) == identities(member_table(range(1_500)))


def test_defaults_to_the_dag_runs_folder_and_its_params(emu, env):
    run_id = "manual__2026-11-28T10:00:00+00:00"
    run_dir = env.run_dir("high_value", run_id)
    write_members(run_dir / "members.parquet", range(300))
    write_members(run_dir / "entered.parquet", range(10))
    write_members(run_dir / "exited.parquet", [])
    context = {
        "run_id": run_id,
        "params": {"full_republish": True},
        "data_interval_end": datetime(2026, 11, 28, tzinfo=UTC),
    }
    summary = AEPProfilePublishOperator(task_id="publish", audience_id="high_value").execute(
        context=context
    )
    assert summary["mode"] == "full" and summary["sent"] == 300


def test_too_many_dead_letters_fail_without_retry(emu, env, tmp_path):
    run_dir = tmp_path / "run"
    write_members(run_dir / "entered.parquet", range(100))
    write_members(run_dir / "exited.parquet", [])
    emu.faults(fail_records=["id-p000000003"], fail_record_status=400)
    op = AEPProfilePublishOperator(
        task_id="publish", audience_id="high_value", run_dir=str(run_dir)
    )
    with pytest.raises(AirflowFailException, match="must not be committed"):
        op.execute(context={})


def test_decommission_mode(emu, env, tmp_path):
    run_dir = tmp_path / "run"
    write_members(run_dir / "members.parquet", range(40))
    write_members(run_dir / "entered.parquet", range(40))
    write_members(run_dir / "exited.parquet", [])
    common = {"task_id": "publish", "audience_id": "high_value", "run_dir": str(run_dir)}
    AEPProfilePublishOperator(**common).execute(context={})
    summary = AEPProfilePublishOperator(**common, decommission="True").execute(context={})
    assert summary["audience"]["lifecycleState"] == "inactive"
    assert held(emu, status="exited") == identities(member_table(range(40)))


@pytest.mark.parametrize(
    ("value", "expected"),
    [(True, True), (False, False), (None, False), ("True", True), ("false", False), ("1", True)],
)
def test_templated_flags(value, expected):
    assert _flag(value) is expected


def test_a_reconcile_started_from_the_dashboard_reads_back_and_notes_its_progress(emu, env):
    from cja_audiences import snapshots
    from cja_audiences.diff import diff_members
    from cja_audiences.publish.streaming import publish_run
    from cja_audiences.reconcile import last_request

    audience_dir = env.audience_dir("high_value")
    run_dir = audience_dir / "runs" / "r1"
    write_members(run_dir / "members.parquet", range(50))
    diff_members(run_dir, None)
    publish_run(emu.adobe_config(rate_limit=0), make_spec(), run_dir, options=fast_options())
    snapshots.commit(audience_dir, run_dir)
    op = AEPRequestedReconcileOperator(task_id="reconcile")
    params = {"audience_id": "high_value", "mode": "full", "repair": False}
    result = op.execute(context={"run_id": "manual__rec", "params": params})
    assert result["checked"] == {"members": 50, "exits": 0} and not result["drifted"]
    noted = last_request(audience_dir)
    assert noted["state"] == "done" and noted["dag_run_id"] == "manual__rec"
    assert noted["mode"] == "full" and noted["run_id"] == "r1" and "running_at" in noted
    emu.tamper("high_value", ("delete", "ECID", "id-p000000007"))
    again = op.execute(context={"run_id": "manual__rec2", "params": params})
    assert again["drift"]["missing"] == 1 and last_request(audience_dir)["drifted"] is True


def test_a_requested_reconcile_of_a_spec_that_does_not_load_fails_and_says_so(env):
    from cja_audiences.reconcile import last_request

    op = AEPRequestedReconcileOperator(task_id="reconcile")
    with pytest.raises(AirflowFailException, match="no audience spec"):
        op.execute(context={"run_id": "manual__x", "params": {"audience_id": "gone"}})
    noted = last_request(env.audience_dir("gone"))
    assert noted["state"] == "failed" and "no audience spec" in noted["error"]
