from __future__ import annotations

import hashlib
from datetime import UTC, date, datetime, timedelta
from pathlib import Path

import pytest
import yaml

from cja_audiences.diff import diff_members
from cja_audiences.guardrails import (
    check_run,
    check_spec,
    check_specs,
    count_segments,
    spec_folder_with,
)
from cja_audiences.lake.runs import read_run_record
from cja_audiences.specs.calendar import refresh_due
from cja_audiences.specs.limits import DEFAULTS, HARD, AudienceGuardrails
from cja_audiences.specs.model import SpecError, load_spec
from tests.guardrails.helpers import (
    ecid,
    make_settings,
    make_spec,
    write_members,
    write_range,
)

NOW = datetime(2026, 6, 1, 12, tzinfo=UTC)


def verdicts(report) -> dict[str, str]:
    return {c.name: c.verdict for c in report.checks}


def run_checks(tmp_path: Path, spec, current, previous=None, settings=None):
    """Members -> diff -> check_run, as the pipeline does."""
    prev_dir = None
    if previous is not None:
        prev_dir = tmp_path / "runs" / "r1"
        write_members(prev_dir / "members.parquet", previous)
    run_dir = tmp_path / "runs" / "r2"
    write_members(run_dir / "members.parquet", current)
    diff_members(run_dir, prev_dir)
    return check_run(spec, settings or make_settings(tmp_path), run_dir, prev_dir)


def people(count: int, start: int = 0) -> list[tuple[str, str, str]]:
    return [(f"p{i:05d}", "ECID", ecid(i)) for i in range(start, start + count)]


# ------------------------------------------------------------------ limits and overrides


def test_one_place_holds_every_default() -> None:
    limits = AudienceGuardrails().limits()
    assert limits == DEFAULTS
    assert (limits.max_size, limits.max_change_pct) == (20_000_000, 50.0)
    assert (HARD.max_lookback_days, HARD.min_refresh_hours, HARD.max_segments) == (90, 4, 20)


def test_an_audience_tightens_in_yaml(tmp_path: Path) -> None:
    spec = make_spec(guardrails={"max_size": 100, "min_size": 3, "max_change_pct": 10})
    assert spec.guardrails.limits().max_size == 100
    report = run_checks(tmp_path, spec, people(150))
    assert report.blocked
    assert "150 members is above the limit of 100 (guardrails.max_size" in report.message


@pytest.mark.parametrize(
    ("field", "value", "needle"),
    [
        ("max_size", 20_000_001, "would loosen Adobe's hard limit of 20,000,000 members"),
        ("max_record_kb", 101, "would loosen Adobe's hard limit of 100 KB"),
    ],
)
def test_nobody_can_loosen_a_hard_limit(
    tmp_path: Path, field: str, value: int, needle: str
) -> None:
    path = tmp_path / "buyers.yaml"
    raw = make_spec().model_dump(mode="json", exclude={"source_path"})
    raw["guardrails"] = {field: value}
    path.write_text(yaml.safe_dump(raw))
    with pytest.raises(SpecError) as err:
        load_spec(path)
    assert f"guardrails.{field}" in str(err.value)
    assert needle in str(err.value)


def test_guardrail_settings_that_nothing_could_pass_are_rejected() -> None:
    with pytest.raises(ValueError, match="min_size 500 is above max_size 100"):
        make_spec(guardrails={"max_size": 100, "min_size": 500})
    with pytest.raises(ValueError, match="RE2"):
        make_spec(guardrails={"crm_id_pattern": "(unclosed"})


# ------------------------------------------------------------------ spec-level


def test_a_sane_spec_passes_every_spec_check(tmp_path: Path) -> None:
    report = check_spec(make_spec(), make_settings(tmp_path), [make_spec()], now=NOW)
    assert not report.blocked
    assert set(verdicts(report).values()) == {"pass"}
    assert "all 6 guardrails pass" in report.message


def test_a_one_time_range_beyond_90_days_blocks_even_if_it_bypassed_validation(
    tmp_path: Path,
) -> None:
    spec = make_spec(
        refresh={
            "frequency": "one_time",
            "date_range": {"start": "2026-01-01", "end": "2026-01-31"},
        }
    )
    assert verdicts(check_spec(spec, make_settings(tmp_path), now=NOW))["lookback_days"] == "pass"
    long = spec.refresh.date_range.model_construct(start=date(2026, 1, 1), end=date(2026, 6, 30))
    spec = spec.model_copy(update={"refresh": spec.refresh.model_copy(update={"date_range": long})})
    report = check_spec(spec, make_settings(tmp_path), now=NOW)
    assert verdicts(report)["lookback_days"] == "block"
    assert "181 days of lookback is above the limit of 90" in report.message
    assert "refresh.date_range" in report.message


def test_lookback_beyond_90_days_blocks_even_if_it_bypassed_validation(tmp_path: Path) -> None:
    spec = make_spec()
    spec = spec.model_copy(
        update={"refresh": spec.refresh.model_copy(update={"lookback_days": 120})}
    )
    report = check_spec(spec, make_settings(tmp_path), now=NOW)
    assert verdicts(report)["lookback_days"] == "block"
    assert "120 days of lookback is above the limit of 90" in report.message


def test_schedule_expiry_is_13_months_and_13_more_only_when_extended(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    refresh = {"frequency": "daily", "lookback_days": 30, "start": "2026-01-01T02:00:00Z"}
    late = make_spec(refresh={**refresh, "expires": "2027-06-01"})
    report = check_spec(late, settings, now=NOW)
    assert verdicts(report)["schedule_expiry"] == "block"
    assert "latest allowed end 2027-02-01 02:00 UTC" in report.message
    assert "refresh.extended: true" in report.message

    extended = make_spec(refresh={**refresh, "expires": "2027-06-01", "extended": True})
    assert verdicts(check_spec(extended, settings, now=NOW))["schedule_expiry"] == "pass"

    ended = check_spec(make_spec(refresh=refresh), settings, now=datetime(2027, 3, 1, tzinfo=UTC))
    assert "the refresh schedule ended at 2027-02-01 02:00 UTC" in ended.message
    soon = check_spec(make_spec(refresh=refresh), settings, now=datetime(2027, 1, 20, tzinfo=UTC))
    assert verdicts(soon)["schedule_expiry"] == "warn"


def test_segments_are_counted_from_the_filter(tmp_path: Path) -> None:
    refs = [{"func": "segment-ref", "id": f"s{i}"} for i in range(20)]
    container = {"func": "container", "context": "visitors"}
    definition = {
        "func": "segment",
        "version": [1, 0, 0],
        "container": {**container, "pred": {"func": "and", "preds": refs}},
    }
    spec = make_spec(filter={"segment": {"path": "buyers.json"}})
    assert count_segments(spec.filter) == 1
    assert count_segments(spec.filter, definition) == 21
    report = check_spec(spec, make_settings(tmp_path), now=NOW, segment_definition=definition)
    assert "segments: 21 segments combined is above the limit of 20" in report.message
    assert not check_spec(spec, make_settings(tmp_path), now=NOW).blocked


def specs_created_daily(count: int, frequency: str = "daily"):
    base = datetime(2026, 1, 1, tzinfo=UTC)
    return [
        make_spec(
            id=f"aud_{i:03d}",
            refresh={
                "frequency": frequency,
                "lookback_days": 7,
                **(
                    {"date_range": {"start": "2026-01-01", "end": "2026-01-31"}}
                    if frequency == "one_time"
                    else {}
                ),
                "start": (base + timedelta(days=i)).isoformat(),
            },
        )
        for i in range(count)
    ]


def test_the_refreshing_audience_created_over_the_package_limit_is_blocked(
    tmp_path: Path,
) -> None:
    settings = make_settings(tmp_path, max_refreshing_audiences=75)
    specs = specs_created_daily(76)
    newest = check_spec(specs[-1], settings, specs, now=NOW)
    assert verdicts(newest)["refreshing_audiences"] == "block"
    assert "76 refreshing audiences is above the limit of 75" in newest.message
    assert "aud_075 is #76" in newest.message
    older = check_spec(specs[0], settings, specs, now=NOW)
    assert verdicts(older)["refreshing_audiences"] == "warn"


def test_streaming_audiences_count_ours_and_the_live_count(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    specs = specs_created_daily(2, frequency="one_time")
    fits = check_spec(specs[0], settings, specs, now=NOW, other_streaming_audiences=498)
    assert verdicts(fits)["streaming_audiences"] == "warn"
    over = check_spec(specs[1], settings, specs, now=NOW, other_streaming_audiences=499)
    assert verdicts(over)["streaming_audiences"] == "block"
    assert "501 streaming audiences in the sandbox (2 ours, 499 others)" in over.message


def test_the_guardrails_task_counts_the_spec_folder_as_dag_parsing_does(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, max_refreshing_audiences=2)
    settings.audiences_dir.mkdir()
    for spec in specs_created_daily(3):
        raw = spec.model_dump(mode="json", exclude_defaults=True)
        (settings.audiences_dir / f"{spec.id}.yaml").write_text(yaml.safe_dump(raw))
    newest = load_spec(settings.audiences_dir / "aud_002.yaml")
    parsed = check_specs(spec_folder_with(settings.audiences_dir, []), settings)["aud_002"]
    assert verdicts(parsed)["refreshing_audiences"] == "block"

    report = run_checks(tmp_path, newest, people(20), settings=settings)
    assert verdicts(report)["refreshing_audiences"] == "block"
    assert "3 refreshing audiences is above the limit of 2" in report.message


# ------------------------------------------------------------------ data-level


def test_an_audience_over_20_million_members_is_blocked(tmp_path: Path) -> None:
    spec = make_spec(identity={"namespace": "CRMID"})
    run_dir = tmp_path / "runs" / "big"
    write_range(run_dir / "members.parquet", 20_000_001)
    diff_members(run_dir, None)
    report = check_run(spec, make_settings(tmp_path), run_dir, None)
    assert report.blocked
    assert verdicts(report)["size"] == "block"
    assert (
        "size: 20,000,001 members is above the limit of 20,000,000 (Adobe hard limit); "
        "fix: narrow the filter" in report.message
    )
    recorded = read_run_record(run_dir)["guardrails"]
    assert recorded["blocked"] and recorded["message"] == report.message


def test_an_audience_that_shrinks_80_percent_is_blocked_by_default(tmp_path: Path) -> None:
    report = run_checks(tmp_path, make_spec(), people(200), previous=people(1000))
    assert verdicts(report)["change"] == "block"
    assert "change: 80.0 % of the previous 1,000 members changed (0 entered, 800 exited" in (
        report.message
    )
    assert "limit of 50.0 (default guardrail)" in report.message


def test_ordinary_churn_passes_and_near_limit_warns(tmp_path: Path) -> None:
    calm = run_checks(tmp_path / "a", make_spec(), people(1000, 100), previous=people(1000))
    assert verdicts(calm)["change"] == "pass"  # 100 in + 100 out = 20 %
    close = run_checks(tmp_path / "b", make_spec(), people(1000, 230), previous=people(1000))
    assert verdicts(close)["change"] == "warn"  # 46 %
    assert not close.blocked


def test_empty_audience_blocks_unless_allowed(tmp_path: Path) -> None:
    report = run_checks(tmp_path / "a", make_spec(), [], previous=people(40))
    assert verdicts(report)["empty"] == "block"
    assert "publishing would remove all 40 current members" in report.message
    allowed = make_spec(guardrails={"allow_empty": True, "max_change_pct": 100})
    report = run_checks(tmp_path / "b", allowed, [], previous=people(40))
    assert verdicts(report)["empty"] == "warn"
    assert not report.blocked


def test_privacy_floor_and_exit_limit(tmp_path: Path) -> None:
    small = run_checks(tmp_path / "a", make_spec(), people(5))
    assert "min_size: 5 members is below the privacy floor of 10" in small.message
    spec = make_spec(guardrails={"max_exits": 50})
    report = run_checks(tmp_path / "b", spec, people(940, 60), previous=people(1000))
    assert verdicts(report)["exits"] == "block"
    assert "60 members exiting is above the limit of 50 (guardrails.max_exits" in report.message


def test_identity_formats_by_namespace(tmp_path: Path) -> None:
    members = [
        *people(20),
        ("p90001", "ECID", "1234"),
        ("p90002", "Email", "not-an-email"),
        ("p90003", "Email", "ana@example.com"),
        ("p90004", "CRMID", "CRM-0001"),
        ("p90005", "CRMID", "bad id with spaces"),
    ]
    report = run_checks(tmp_path / "a", make_spec(), members)
    check = next(c for c in report.checks if c.name == "identity_format")
    assert check.verdict == "block" and check.figure == 3
    assert "1 CRMID not matching the CRM id pattern" in check.message
    assert "1 ECID not 38 digits" in check.message and "1 Email not an email" in check.message
    assert "p90001, p90002, p90005" in check.message
    assert "not-an-email" not in report.message  # identity values are PII: never in messages

    custom = make_spec(guardrails={"crm_id_pattern": "CRM-[0-9]{4}", "max_invalid_identities": 2})
    relaxed = run_checks(tmp_path / "b", custom, members)
    assert verdicts(relaxed)["identity_format"] == "block"  # bad id + 2 others = 3 > 2
    assert "set guardrails.crm_id_pattern" in relaxed.message


def test_hashed_emails_must_be_sha256(tmp_path: Path) -> None:
    digest = hashlib.sha256(b"ana@example.com").hexdigest()
    spec = make_spec(identity={"namespace": "Email", "hash_email": True})
    members = [(f"p{i:03d}", "Email", digest) for i in range(12)] + [("p999", "Email", "x@y.io")]
    report = run_checks(tmp_path, spec, members)
    assert "1 Email not a SHA-256 hex digest (identity.hash_email is on)" in report.message


def test_one_message_lists_every_violation(tmp_path: Path) -> None:
    spec = make_spec(guardrails={"max_exits": 1})
    current = [*people(3), ("p99999", "ECID", "bad")]
    report = run_checks(tmp_path, spec, current, previous=people(100))
    blocks = [c.name for c in report.checks if c.verdict == "block"]
    assert set(blocks) == {"min_size", "change", "exits", "identity_format"}
    for name in blocks:
        assert f"- BLOCK {name}:" in report.message
    assert report.as_dict()["checks"][0].keys() == {"name", "verdict", "figure", "limit", "message"}


# ------------------------------------------------------------------ refresh guard


DAILY = make_spec()
PUBLISHED = datetime(2026, 6, 1, 2, 7, tzinfo=UTC)  # the 02:00 scheduled run committed at 02:07


def test_a_manual_run_an_hour_after_a_daily_refresh_is_skipped() -> None:
    due, reason, next_allowed = refresh_due(DAILY, PUBLISHED, PUBLISHED + timedelta(hours=1), False)
    assert not due
    assert next_allowed == datetime(2026, 6, 2, 2, tzinfo=UTC)
    assert "the next refresh is allowed at 2026-06-02 02:00 UTC" in reason


def test_the_same_run_with_force_goes_through() -> None:
    due, reason, _ = refresh_due(DAILY, PUBLISHED, PUBLISHED + timedelta(hours=1), True)
    assert due and "force=true" in reason


def test_the_next_scheduled_run_is_due_although_less_than_24h_passed() -> None:
    assert refresh_due(DAILY, PUBLISHED, datetime(2026, 6, 2, 2, tzinfo=UTC), False)[0]
    assert refresh_due(DAILY, None, PUBLISHED, False)[0]


@pytest.mark.parametrize(
    ("frequency", "committed", "now", "due"),
    [
        ("every_4_hours", "2026-06-01T08:05", "2026-06-01T11:59", False),
        ("every_4_hours", "2026-06-01T08:05", "2026-06-01T12:00", True),
        ("weekly", "2026-06-04T00:05", "2026-06-10T23:00", False),  # weeks start Thursdays
        ("weekly", "2026-06-04T00:05", "2026-06-11T00:00", True),
        ("monthly", "2026-05-31T00:05", "2026-06-01T00:00", True),
        ("monthly", "2026-06-01T00:05", "2026-06-30T23:00", False),
    ],
)
def test_periods_per_frequency(frequency: str, committed: str, now: str, due: bool) -> None:
    refresh = {"frequency": frequency, "lookback_days": 7, "start": "2026-01-01T00:00:00Z"}
    spec = make_spec(refresh=refresh)
    at = datetime.fromisoformat(committed).replace(tzinfo=UTC)
    assert refresh_due(spec, at, datetime.fromisoformat(now).replace(tzinfo=UTC), False)[0] is due


def test_one_time_and_ended_schedules() -> None:
    one_time = make_spec(
        refresh={
            "frequency": "one_time",
            "date_range": {"start": "2026-01-01", "end": "2026-01-31"},
        }
    )
    assert refresh_due(one_time, None, NOW, False)[0]
    assert not refresh_due(one_time, PUBLISHED, NOW, False)[0]
    due, reason, _ = refresh_due(DAILY, PUBLISHED, datetime(2027, 3, 1, tzinfo=UTC), False)
    assert not due and "the refresh schedule ended" in reason


@pytest.mark.parametrize(
    ("frequency", "ttl", "verdict"),
    [
        ("daily", 30, "pass"),
        ("weekly", 14, "pass"),
        ("weekly", 13, "block"),
        ("monthly", 30, "block"),
    ],
)
def test_an_external_audience_must_refresh_well_inside_its_ttl(tmp_path, frequency, ttl, verdict):
    spec = make_spec(
        refresh={"frequency": frequency, "lookback_days": 30, "start": "2026-01-01T00:00:00Z"},
        publish={"mode": "external_audience", "ttl_days": ttl},
    )
    report = check_spec(spec, make_settings(tmp_path), now=NOW)
    assert verdicts(report)["external_ttl"] == verdict
    if verdict == "block":
        assert "publish.ttl_days" in report.message


def test_renewals_are_reported_as_sends_but_not_counted_as_change(tmp_path):
    from cja_audiences.guardrails import _change_check, _sends_check

    diff = {"entered": 10, "exited": 10, "renewed": 500, "size": 1000, "previous_size": 1000}
    spec = _renewal_spec()
    change = _change_check(spec, spec.guardrails.limits(), diff, tmp_path)
    assert change.figure == 2.0 and change.verdict == "pass"
    sends = _sends_check(diff)
    assert sends.figure == 520 and "500 renewed" in sends.message


def _renewal_spec():
    from cja_audiences.specs.model import AudienceSpec

    return AudienceSpec.model_validate(
        {
            "id": "renewals",
            "name": "Renewals",
            "refresh": {"frequency": "daily", "lookback_days": 7},
            "filter": {
                "rules": {"person": {"all": [{"field": "revenue", "op": "gt", "value": 0}]}}
            },
        }
    )
