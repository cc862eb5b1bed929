from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cja_audiences.airflow.dag_factory import cron_for, refresh_params, schedule_for
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
    assert cron_for(spec(frequency, START)) == cron


def test_monthly_on_the_31st_runs_every_month():
    assert cron_for(spec("monthly", datetime(2026, 1, 31, 6, 0, tzinfo=UTC))) == "0 6 28 * *"


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
