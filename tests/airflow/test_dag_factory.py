from __future__ import annotations

from datetime import UTC, datetime

import pytest
from airflow.sdk.definitions.param import ParamValidationError

from cja_audiences.airflow.dag_factory import refresh_params, schedule_for, timetable_for
from cja_audiences.specs.calendar import add_months, period_start, schedule_crons
from cja_audiences.specs.model import AudienceSpec


def spec(frequency: str, start: datetime, **refresh) -> AudienceSpec:
    window = {"date_range": {"start": "2026-11-01", "end": "2026-11-20"}}
    if frequency != "one_time":
        window = {"lookback_days": 30}
    return AudienceSpec.model_validate(
        {
            "id": "demo_audience",
            "name": "Demo",
            "refresh": {"frequency": frequency, "start": start, **window, **refresh},
            "filter": {"template": "x.sql.j2"},
        }
    )


START = datetime(2026, 3, 18, 6, 45, tzinfo=UTC)  # a Wednesday


@pytest.mark.parametrize(
    ("frequency", "cron"),
    [
        ("every_4_hours", "45 2,6,10,14,18,22 * * *"),
        ("daily", "45 6 * * *"),
        ("weekly", "45 6 * * 3"),
        ("monthly", "45 6 18 * *"),
        ("one_time", None),
    ],
)
def test_schedules_are_anchored_to_the_first_publish(frequency, cron):
    assert schedule_crons(spec(frequency, START)) == ([cron] if cron else [])


def scheduled_runs(audience: AudienceSpec, count: int) -> list[datetime]:
    """The first ``count`` run times the DAG's timetable creates from refresh.start on."""
    from airflow.serialization.encoders import coerce_to_core_timetable
    from airflow.timetables.base import TimeRestriction

    timetable = coerce_to_core_timetable(timetable_for(audience))  # as the scheduler sees it
    restriction = TimeRestriction(earliest=audience.refresh.start, latest=None, catchup=True)
    runs, last = [], None
    for _ in range(count):
        info = timetable.next_dagrun_info(
            last_automated_data_interval=last, restriction=restriction
        )
        runs.append(info.run_after)
        last = info.data_interval
    return runs


@pytest.mark.parametrize("day", [28, 29, 30, 31])
def test_a_monthly_schedule_opens_every_period_of_the_refresh_gate(day):
    """Each scheduled run starts a new gate period, every month, for 4 years (a leap year)."""
    audience = spec("monthly", datetime(2026, 1, day, 6, 0, tzinfo=UTC))
    runs = scheduled_runs(audience, 48)
    assert runs == [add_months(audience.refresh.start, k) for k in range(48)]
    assert [period_start(audience, run) for run in runs] == runs


def test_a_monthly_audience_from_january_31_publishes_in_february_and_march():
    runs = scheduled_runs(spec("monthly", datetime(2026, 1, 31, 6, 0, tzinfo=UTC)), 3)
    assert [r.date().isoformat() for r in runs] == ["2026-01-31", "2026-02-28", "2026-03-31"]


def test_new_data_or_the_schedule_starts_a_refresh():
    from airflow.sdk import Asset, AssetOrTimeSchedule, CronTriggerTimetable

    events = Asset("cja_events")
    assert isinstance(schedule_for(spec("daily", START), events), AssetOrTimeSchedule)
    assert isinstance(schedule_for(spec("daily", START), None), CronTriggerTimetable)
    assert schedule_for(spec("one_time", START), events) is None


@pytest.mark.parametrize(
    ("name", "value"),
    [("lookback_days", 0), ("lookback_days", 91), ("lookback_days", "7"), ("as_of", "yesterday")],
)
def test_the_form_refuses_invalid_values(name, value):
    from airflow.sdk import ParamsDict
    from airflow.sdk.exceptions import ParamValidationError

    params = ParamsDict(refresh_params(spec("daily", START)))
    with pytest.raises(ParamValidationError, match=name):
        params[name] = value


def test_the_form_defaults_to_the_specs_window():
    from airflow.sdk import ParamsDict

    params = ParamsDict(refresh_params(spec("daily", START)))
    params["as_of"] = "2026-11-20"
    assert params.validate() == {
        "publish": False,
        "approve_run": None,
        "override": [],
        "dry_run": False,
        "force": False,
        "full_republish": False,
        "lookback_days": 30,
        "as_of": "2026-11-20",
    }


def test_a_bucketed_audience_maps_compute_diff_and_publish_over_its_buckets():
    from cja_audiences.airflow.dag_factory import build_audience_dag
    from cja_audiences.settings import Settings

    bucketed = spec("daily", START, buckets=4)
    dag = build_audience_dag(bucketed, Settings(), None)
    order = ["refresh_gate", "preflight", "wait_for_data", "compute", "diff", "merge"]
    order += ["guardrails", "publish", "commit", "reconcile"]
    for upstream, downstream in zip(order, order[1:], strict=False):
        assert downstream in dag.get_task(upstream).downstream_task_ids
    for mapped in ("compute", "diff", "publish"):
        assert dag.get_task(mapped).expand_input.value == {"bucket": [0, 1, 2, 3]}
    plain = build_audience_dag(spec("daily", START), Settings(), None)
    assert "merge" not in plain.task_ids


def test_the_reconcile_dag_takes_an_audience_a_mode_and_repair():
    from cja_audiences.airflow.dag_factory import RECONCILE_DAG, build_reconcile_dag
    from cja_audiences.settings import Settings

    dag = build_reconcile_dag([spec("daily", START)], Settings())
    assert dag.dag_id == RECONCILE_DAG and dag.task_ids == ["reconcile"] and dag.schedule is None
    params = dag.params.dump()
    assert params == {"audience_id": "demo_audience", "mode": "sample", "repair": False}
    assert dag.params.get_param("audience_id").schema["examples"] == ["demo_audience"]
    with pytest.raises(ParamValidationError):
        dag.params.get_param("audience_id").resolve("../etc")
    assert dag.get_task("reconcile").retries == 1
