"""AEPProfilePublishOperator over the emulator: summary, extra link, modes, failures."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
import yaml
from airflow.sdk.exceptions import AirflowFailException

from cja_audiences.airflow.operators.aep import AEPAudienceLink, AEPProfilePublishOperator, _flag
from cja_audiences.lake.layout import Lake
from tests.publish.helpers import held, identities, make_spec, member_table, write_members

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
    assert [type(link) for link in op.operator_extra_links] == [AEPAudienceLink]


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
