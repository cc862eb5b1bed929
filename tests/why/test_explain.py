"""``explain ID PERSON_ID``: a run's verdict for one person, in words."""

from __future__ import annotations

import shutil
from datetime import timedelta
from pathlib import Path

import pytest

from cja_audiences.cli.main import main
from cja_audiences.compute import compute_audience
from cja_audiences.diff import diff_members
from cja_audiences.explain import exit_explainer
from tests.why.test_why import BUYERS_NOT_UNSUBSCRIBED, D, buy, lake, make_settings


@pytest.fixture
def two_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    """Runs r1 (as of D) and r2 (5 days later) of BUYERS_NOT_UNSUBSCRIBED, as the CLI sees them."""
    settings = make_settings(tmp_path)
    spec_file = tmp_path / "why_test.yaml"
    spec_file.write_text(BUYERS_NOT_UNSUBSCRIBED.model_dump_json(exclude={"tests"}))
    lake(
        settings,
        {
            "unsubscribed": {
                "events": [
                    buy("-1d 10:00"),
                    {"at": "+2d 10:00", "page_name": "unsubscribe"},
                    {"at": "+2d 10:01", "page_name": "home"},
                ]
            },
            "stays": {"events": [buy("-1d 09:00")]},
        },
    )
    runs = settings.home / "audiences" / "why_test" / "runs"
    spec = BUYERS_NOT_UNSUBSCRIBED.model_copy(update={"source_path": spec_file})
    compute_audience(spec, settings=settings, run_dir=runs / "r1", as_of=D)
    diff_members(runs / "r1", None)
    compute_audience(spec, settings=settings, run_dir=runs / "r2", as_of=D + timedelta(days=5))
    diff_members(runs / "r2", runs / "r1", exit_explainer(spec, settings, runs / "r2", runs / "r1"))
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(settings.home))
    return tmp_path


def test_explain_names_the_condition_that_stopped_holding_and_the_events(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["explain", "why_test", "unsubscribed", "--run", "r2", "--audiences", str(two_runs)])
        == 0
    )
    out = capsys.readouterr().out
    assert (
        "unsubscribed: OUT (not a member of this run); exited in this run: stopped_holding" in out
    )
    assert "[held    ] 1. events where event_type = 'commerce.purchases' >= 1" in out
    assert "(value: 1)" in out  # the deciding value of the metric
    assert "[NOT held] 2. without (page_name = 'unsubscribe')" in out
    assert "must not hold, and it held (1 matching events)" in out
    assert "page_name=unsubscribe  matches #2" in out
    assert "page_name=home" not in out  # events that match no condition are not listed


def test_explain_defaults_to_the_newest_run_and_limits_events(
    two_runs: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert (
        main(["explain", "why_test", "stays", "--events", "0", "--audiences", str(two_runs)]) == 0
    )
    out = capsys.readouterr().out
    assert ", run r2" in out and "stays: IN (ECID " in out
    assert "2 of 2 held" in out and "(none)" in out


def test_explain_names_a_missing_run(two_runs: Path, capsys: pytest.CaptureFixture[str]) -> None:
    shutil.rmtree(two_runs / "home" / "audiences" / "why_test" / "runs" / "r1")
    assert main(["explain", "why_test", "stays", "--run", "r1", "--audiences", str(two_runs)]) == 1
    assert "no such run of why_test" in capsys.readouterr().err
