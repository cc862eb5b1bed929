"""Rollback end to end: the real publisher against the emulator, through the runs CLI."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cja_audiences import snapshots
from cja_audiences.cli.main import main
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import Lake
from cja_audiences.publish.streaming import publish_run
from cja_audiences.settings import get_settings
from tests.publish.helpers import fast_options, held, identities, make_spec, member_table
from tests.publish.helpers import write_members as write_aep_members

pytestmark = pytest.mark.integration


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
