"""Rollback end to end: the real publisher against the emulator, through the runs CLI."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from cja_audiences import snapshots
from cja_audiences.cli.main import main
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import Lake, read_json
from cja_audiences.publish.external import RUN_LEDGER
from cja_audiences.publish.streaming import publish_run
from cja_audiences.settings import get_settings
from tests.publish.helpers import (
    EXTERNAL,
    external_conn,
    fast_options,
    held,
    held_by,
    identities,
    ingestion_runs,
    make_spec,
    member_table,
    refresh,
)
from tests.publish.helpers import write_members as write_aep_members

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def publish_and_commit(emu, audience: Path, run_id: str, ids: range) -> None:
    run_dir = audience / "runs" / run_id
    write_aep_members(run_dir / "members.parquet", ids)
    diff_members(run_dir, snapshots.current_run_dir(audience))
    publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    snapshots.commit(audience, run_dir)


def test_cli_rollback_restores_the_emulators_membership_exactly(
    emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch, capsys: pytest.CaptureFixture
) -> None:
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = make_spec().model_dump(mode="json", exclude={"source_path"})
    (specs / "high_value.yaml").write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(tmp_path / "home"))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(specs))
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn(rate_limit=0)))
    get_settings.cache_clear()
    audience = Lake(tmp_path / "home").audience_dir("high_value")
    try:
        publish_and_commit(emu, audience, "r1", range(0, 300))
        publish_and_commit(emu, audience, "r2", range(100, 450))
        assert held(emu, status="realized") == identities(member_table(range(100, 450)))

        assert main(["runs", "rollback", "high_value", "r1"]) == 0
    finally:
        get_settings.cache_clear()

    result = json.loads(capsys.readouterr().out)
    assert (result["diff"]["entered"], result["diff"]["exited"]) == (100, 150)
    assert result["publish"]["status"] == "ok"
    assert held(emu, status="realized") == identities(member_table(range(0, 300)))
    assert held(emu, status="exited") == identities(member_table(range(300, 450)))
    assert snapshots.current_run(audience)["run_id"] == result["run_id"]


@pytest.fixture
def external_home(emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> dict[str, str]:
    """A lake and specs folder whose audience publishes as an external audience, with two
    committed refreshes (r1: 0..299, r2: 100..449); the environment the CLI reads."""
    storage = tmp_path / "cloud"
    storage.mkdir()
    emu.base_connection(storage, "conn-1")
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = make_spec(**EXTERNAL).model_dump(mode="json", exclude={"source_path"})
    (specs / "high_value.yaml").write_text(yaml.safe_dump(spec))
    env = {
        "CJA_AUDIENCES_HOME": str(tmp_path / "home"),
        "CJA_AUDIENCES_SPECS": str(specs),
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn(**external_conn(storage))),
    }
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    audience = Lake(tmp_path / "home").audience_dir("high_value")
    refresh(emu, external_conn(storage), audience, "r1", range(0, 300))
    refresh(emu, external_conn(storage), audience, "r2", range(100, 450))
    assert held_by(emu, audience) == identities(member_table(range(100, 450)))
    return env


def test_cli_rollback_of_an_external_audience_restores_its_membership(
    emu, external_home, capsys: pytest.CaptureFixture
) -> None:
    audience = Lake(external_home["CJA_AUDIENCES_HOME"]).audience_dir("high_value")
    assert main(["runs", "rollback", "high_value", "r1", "--dry-run"]) == 0
    dry = json.loads(capsys.readouterr().out)["dry_run"]
    assert (dry["realized"]["count"], dry["exited"]["count"]) == (100, 150)
    assert len(ingestion_runs(emu, audience)) == 2  # r1 and r2: the dry run started none
    assert main(["runs", "rollback", "high_value", "r1"]) == 0
    result = json.loads(capsys.readouterr().out)
    publish = result["publish"]
    assert publish["publish_mode"] == "external_audience" and publish["differential"] is True
    assert (publish["entered"], publish["exited"]) == (100, 150)
    assert held_by(emu, audience) == identities(member_table(range(0, 300)))
    assert snapshots.current_run(audience)["run_id"] == result["run_id"]
    ledger = read_json(audience / "runs" / result["run_id"] / RUN_LEDGER)
    assert ledger["run_id"] == publish["run_id"] and ledger["file"] == f"{result['run_id']}.csv"


def test_a_killed_external_rollback_resumes_its_ingestion_run(
    emu, external_home, capsys: pytest.CaptureFixture
) -> None:
    """kill -9 between "run started" and "run polled": --resume polls that run, starts none."""
    audience = Lake(external_home["CJA_AUDIENCES_HOME"]).audience_dir("high_value")
    emu.faults(external_delay_s=3.0)
    child = subprocess.Popen(
        [sys.executable, "-m", "cja_audiences", "runs", "rollback", "high_value", "r1"],
        cwd=REPO,
        env=os.environ | external_home | {"PYTHONPATH": f"{REPO / 'plugins'}{os.pathsep}{REPO}"},
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while True:
        marker = read_json(audience / snapshots.ROLLBACK_MARKER) or {}
        ledger = read_json(audience / "runs" / marker.get("run_id", "-") / RUN_LEDGER) or {}
        if ledger.get("run_id"):
            break
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the rollback never started an ingestion run"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()

    assert main(["runs", "rollback", "high_value", "r1"]) == 1  # names --resume
    assert "--resume" in capsys.readouterr().err
    assert main(["runs", "rollback", "high_value", "r1", "--resume"]) == 0
    result = json.loads(capsys.readouterr().out)
    assert result["resumed"] is True and result["run_id"] == marker["run_id"]
    assert result["publish"]["run_id"] == ledger["run_id"]
    starts = [r["dataFilterStartTime"] for r in ingestion_runs(emu, audience)]
    assert starts.count(ledger["start"]) == 1 and len(starts) == 3  # r1, r2, the rollback
    assert held_by(emu, audience) == identities(member_table(range(0, 300)))
    assert snapshots.current_run(audience)["run_id"] == marker["run_id"]
