from __future__ import annotations

import json
import sys
import types
from datetime import datetime
from pathlib import Path
from typing import Any

import pytest
import yaml

from cja_audiences import snapshots
from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.cli.main import main
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import update_run_record
from cja_audiences.settings import get_settings
from tests.guardrails.helpers import make_spec, read_members
from tests.snapshots.fakes import FakeAep, people, publish_and_commit


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    """A lake with buyers: r1 and r2 published (r2 current), r3 pending."""
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(tmp_path / "specs"))
    get_settings.cache_clear()
    audience = Lake(tmp_path / "home").audience_dir("buyers")
    aep = FakeAep()
    publish_and_commit(audience, aep, "r1", people(range(10)))
    publish_and_commit(audience, aep, "r2", people(range(5, 20)))
    yield audience
    get_settings.cache_clear()


def test_runs_list_prints_a_table_and_json(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "list", "buyers"]) == 0
    table = capsys.readouterr().out.splitlines()
    assert table[0] == "| run_id | created_at | status | size | entered | exited | rollback_of |"
    assert table[2].startswith("| r1 |") and "| published | 10 | 10 | 0 |" in table[2]
    assert "| current | 15 | 10 | 5 |" in table[3]
    assert main(["runs", "list", "buyers", "--json"]) == 0
    assert [r["run_id"] for r in json.loads(capsys.readouterr().out)] == ["r1", "r2"]


def test_runs_show(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "show", "buyers", "r1"]) == 0
    shown = json.loads(capsys.readouterr().out)
    assert shown["files"]["members.parquet"] == 10
    assert shown["record"]["publish"]["dead_lettered"] == 0


def test_unknown_audience_or_run_exit_1_with_the_reason(
    home: Path, capsys: pytest.CaptureFixture
) -> None:
    assert main(["runs", "list", "nobody"]) == 1
    assert "no runs for audience 'nobody'" in capsys.readouterr().err
    assert main(["runs", "show", "buyers", "r9"]) == 1
    assert "no run 'r9'" in capsys.readouterr().err


def test_runs_rollback_dry_run_sends_nothing(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "rollback", "buyers", "r1", "--dry-run"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["dry_run"]["exited"]["count"] == 10
    assert result["dry_run"]["realized"]["count"] == 5
    assert snapshots.current_run(home)["run_id"] == "r2"


def test_runs_rollback_publishes_through_aep_publish_run(
    home: Path, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    """The AEP client is another helper's; stand in for its module at the import seam."""
    specs = tmp_path / "specs"
    specs.mkdir()
    raw = make_spec().model_dump(mode="json", exclude={"source_path"})
    (specs / "buyers.yaml").write_text(yaml.safe_dump(raw))
    connection = {"conn_type": "http", "host": "http://aep.test", "login": "client"}
    connection |= {"password": "s3cret", "extra": {"org_id": "ORG@AdobeOrg"}}
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(connection))
    calls: list[dict[str, Any]] = []
    aep = FakeAep()

    def publish_run(config: AdobeConfig, spec, run_dir: Path, **options: Any) -> dict[str, Any]:
        calls.append({"config": config, "spec": spec.id, "run": run_dir.name, **options})
        record = aep.publish(run_dir)
        update_run_record(run_dir, publish=record)
        return record

    fake = types.ModuleType("cja_audiences.publish")
    fake.publish_run = publish_run
    monkeypatch.setitem(sys.modules, "cja_audiences.publish", fake)

    monkeypatch.setattr("cja_audiences.cli.runs.datetime", OneSecondClock)
    assert main(["runs", "rollback", "buyers", "r1", "--dry-run"]) == 0
    capsys.readouterr()
    assert main(["runs", "rollback", "buyers", "r1"]) == 0  # the same second as the dry run
    result = json.loads(capsys.readouterr().out)
    new_run = result["current"]["run_id"]
    assert new_run.startswith("rollback__")
    assert calls[0]["spec"] == "buyers" and calls[0]["config"].org_id == "ORG@AdobeOrg"
    assert read_members(home / "runs" / new_run / "members.parquet") == people(range(10))
    assert aep.calls[0]["exited"] == people(range(10, 20))
    assert "s3cret" not in json.dumps(result)


class OneSecondClock(datetime):
    """Every call falls in the same second, a millisecond after the previous one."""

    calls = 0

    @classmethod
    def now(cls, tz=None):
        cls.calls += 1
        return datetime(2026, 11, 20, 10, 0, 0, 1000 * cls.calls, tzinfo=tz)


def test_runs_prune(home: Path, capsys: pytest.CaptureFixture) -> None:
    assert main(["runs", "prune", "buyers", "--keep", "1"]) == 0
    assert "pruned 1 run(s)" in capsys.readouterr().out
    assert [r["run_id"] for r in snapshots.list_runs(home)] == ["r2"]
