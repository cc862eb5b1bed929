from __future__ import annotations

from datetime import UTC, date, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from cja_audiences.refresh import AudienceRefresh, RefreshRequest, summarize
from cja_audiences.settings import Settings, settings_from_env
from cja_audiences.specs.model import AudienceSpec
from tests.publish.helpers import write_members


def test_request_defaults_to_the_last_complete_day():
    request = RefreshRequest.from_params("manual__1", {}, default_as_of=date(2026, 11, 27))
    assert request == RefreshRequest(run_id="manual__1", as_of=date(2026, 11, 27))


def test_request_reads_the_form():
    params = {"as_of": "2026-11-20", "lookback_days": 14, "force": True, "dry_run": True}
    request = RefreshRequest.from_params("r", params, default_as_of=date(2026, 11, 27))
    assert (request.as_of, request.lookback_days, request.force, request.dry_run) == (
        date(2026, 11, 20),
        14,
        True,
        True,
    )


@pytest.mark.parametrize("lookback", [0, 91])
def test_request_refuses_a_lookback_outside_adobes_limit(lookback):
    with pytest.raises(ValueError, match="lookback_days"):
        RefreshRequest.from_params("r", {"lookback_days": lookback}, default_as_of=date.today())


def test_summary_names_every_stage_and_the_folder(tmp_path):
    record = {
        "audience_id": "cart",
        "run_id": "r1",
        "status": "committed",
        "compute": {"size": 120, "window": {"start": "2026-11-14", "end": "2026-11-20"}},
        "diff": {"entered": 20, "exited": 5, "previous_size": 105},
        "guardrails": {"blocked": False, "checks": [{"verdict": "warn"}, {"verdict": "pass"}]},
        "publish": {"acknowledged": 25, "dead_lettered": 0, "records_per_s": 900},
    }
    text = summarize(record)
    assert "cart run r1: committed" in text
    assert "120 members" in text and "+20 entered, -5 exited" in text
    assert "guardrails: warn (1 pass, 1 warn, 0 block)" in text
    assert "publish: 25 of" in text
    assert str(tmp_path) not in text and "None" not in text


def future_spec(start: datetime) -> AudienceSpec:
    return AudienceSpec.model_validate(
        {
            "id": "later",
            "name": "Starts later",
            "refresh": {"frequency": "daily", "lookback_days": 7, "start": start},
            "filter": {"template": "x.sql.j2"},
        }
    )


def test_scheduled_runs_wait_for_the_audiences_start_but_people_need_not(tmp_path):
    now = datetime(2026, 11, 28, 12, tzinfo=UTC)
    spec = future_spec(now + timedelta(days=2))
    settings = settings_from_env({"CJA_AUDIENCES_HOME": str(tmp_path)})

    def gate(scheduled: bool) -> dict:
        request = RefreshRequest(run_id=f"r{scheduled}", as_of=now.date(), scheduled=scheduled)
        return AudienceRefresh(spec, settings, request).gate(now)

    held = gate(scheduled=True)
    assert not held["due"] and "schedule starts at 2026-11-30" in held["reason"]
    assert held["next_allowed"] == spec.refresh.start
    assert gate(scheduled=False)["due"]


@pytest.mark.parametrize(
    ("run_type", "params", "dry"),
    [
        ("manual", {}, True),  # a person pressing Trigger: review first
        ("manual", {"publish": True}, False),
        ("manual", {"approve_run": "manual__x"}, False),  # approving publishes
        ("manual", {"publish": True, "dry_run": True}, True),
        ("scheduled", {}, False),  # schedules and new data publish as before
        ("asset_triggered", {}, False),
        ("scheduled", {"dry_run": True}, True),
    ],
)
def test_manual_runs_are_dry_runs_unless_publish_is_chosen(run_type, params, dry):
    request = RefreshRequest.from_params("r", params, date(2026, 11, 27), run_type=run_type)
    assert request.dry_run is dry
    assert request.scheduled is (run_type == "scheduled")


def test_stage_summaries_read_like_sentences():
    from cja_audiences.refresh import compute_line, diff_line, guardrails_line, publish_line

    record = {
        "compute": {
            "size": 1200,
            "window": {"start": "2026-11-14", "end": "2026-11-20"},
            "rows_scanned": 50000,
            "elapsed_s": 1.2,
            "preview_metrics": {"member_revenue_share": 0.25},
        },
        "diff": {
            "entered": 20,
            "exited": 5,
            "size": 1200,
            "previous_size": 1185,
            "previous_run_id": "scheduled__a",
            "renewed": 7,
        },
        "guardrails": {
            "checks": [
                {"name": "size", "verdict": "pass", "message": "size: ok"},
                {"name": "change", "verdict": "warn", "message": "change: close to the limit"},
            ]
        },
        "publish": {
            "status": "ok",
            "records": 25,
            "acknowledged": 25,
            "acknowledged_total": 25,
            "dead_lettered": 0,
            "retried": 1,
            "records_per_s": 900.5,
        },
    }
    assert compute_line(record) == (
        "computed: 1,200 members over 2026-11-14 .. 2026-11-20, 50,000 events scanned, "
        "25.0% of revenue, 1.2 s"
    )
    assert diff_line(record) == (
        "diff: +20 entered, -5 exited, 7 renewed, 1,200 members against scheduled__a (1,185 before)"
    )
    assert guardrails_line(record).splitlines() == [
        "guardrails: warn (1 pass, 1 warn, 0 block)",
        "  WARN change: close to the limit",
    ]
    assert publish_line(record) == (
        "publish: 25 of 25 records acknowledged, 0 dead-lettered, 1 retried, 900.5 records/s"
    )
    for line in (compute_line({}), diff_line({}), guardrails_line({}), publish_line({})):
        assert "None" not in line


def test_external_audience_publish_lines_say_what_was_ingested():
    from cja_audiences.refresh import publish_line

    plan = {
        "publish_mode": "external_audience",
        "differential": True,
        "file": "r2.csv",
        "records": 30,
        "entered": 20,
        "exited": 10,
    }
    assert publish_line({"publish": {**plan, "status": "dry_run"}}) == (
        "publish (dry run): external audience, a differential ingestion of 30 rows, +20 / -10 "
        "would be written to r2.csv and run; nothing sent"
    )
    assert publish_line({"publish": {**plan, "status": "ok", "run_id": "run-7"}}) == (
        "publish: external audience ingestion run-7 (differential) of r2.csv: 30 rows, "
        "+20 / -10, ok"
    )


def test_renewals_only_for_streaming_audiences(tmp_path):
    """An external audience's lifetime is Adobe's ttlInDays: its diff renews nothing."""
    spec, settings = _cart(tmp_path)
    _committed(spec, settings, "r1", range(20))
    for mode, renewed in (("external_audience", 0), ("streaming", 20)):
        run = AudienceRefresh(spec, settings, RefreshRequest(run_id=mode, as_of=date(2026, 11, 2)))
        write_members(run.run_dir / "members.parquet", range(20))
        assert run.diff(mode=mode)["renewed"] == renewed
        run.lease.release()  # a run holds the audience from diff to commit: let the next diff


def test_an_approval_renews_what_is_due_at_its_own_time(tmp_path):
    """Renewals are not part of the reviewed change: the approval picks them as a scheduled
    run would (a dry run is reviewed hours or days before someone approves it)."""
    spec, settings = _cart(tmp_path)
    _committed(spec, settings, "r1", range(20))
    day = date(2026, 11, 2)
    dry = AudienceRefresh(spec, settings, RefreshRequest(run_id="dry", as_of=day, dry_run=True))
    write_members(dry.run_dir / "members.parquet", range(25))
    dry.diff(mode="streaming")
    approved = AudienceRefresh(
        spec, settings, RefreshRequest(run_id="approve", as_of=day, approve_run="dry")
    )
    approved.compute()
    diffed = approved.diff(mode="streaming")
    assert (diffed["entered"], diffed["renewed"]) == (5, 20)
    assert pq.read_table(approved.run_dir / "renewed.parquet").num_rows == 20


def test_a_run_id_belongs_to_the_first_dag_that_gates_it(tmp_path):
    """Airflow's run ids are unique per DAG only: the same id from another DAG is refused at the
    gate (before anything is computed or sent) instead of sharing the run folder and lease."""
    from cja_audiences.refresh import RunIdTaken

    spec, settings = _cart(tmp_path)

    def run(dag_id: str | None) -> AudienceRefresh:
        request = RefreshRequest(run_id="nightly", as_of=date(2026, 11, 2), dag_id=dag_id)
        return AudienceRefresh(spec, settings, request)

    assert run("cja_audience__cart").gate()["due"]
    assert run("cja_audience__cart").gate()["due"]  # its own retry
    assert run(None).gate()["due"]  # the CLI: no DAG
    with pytest.raises(RunIdTaken, match="already a run of DAG cja_audience__cart"):
        run("cja_audiences_all").gate()


def _cart(tmp_path) -> tuple[AudienceSpec, Settings]:
    settings = settings_from_env({"CJA_AUDIENCES_HOME": str(tmp_path)})
    spec = AudienceSpec.model_validate(
        {
            "id": "cart",
            "name": "Cart",
            "refresh": {"frequency": "daily", "lookback_days": 7},
            "filter": {
                "rules": {"person": {"all": [{"field": "revenue", "op": "gt", "value": 0}]}}
            },
        }
    )
    return spec, settings


def _committed(spec: AudienceSpec, settings: Settings, run_id: str, people) -> None:
    """A committed run of ``people`` (published before membership files existed)."""
    from cja_audiences import snapshots
    from cja_audiences.lake.layout import write_json

    run = AudienceRefresh(spec, settings, RefreshRequest(run_id=run_id, as_of=date(2026, 11, 1)))
    write_members(run.run_dir / "members.parquet", people)
    write_json(
        {"run_id": run_id, "committed_at": "2026-11-01T00:00:00+00:00", "size": len(people)},
        run.audience_dir / snapshots.CURRENT,
    )
