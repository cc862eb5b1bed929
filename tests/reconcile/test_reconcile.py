"""Reconcile against the emulator: drift made by the tamper route is found, counted by kind,
repaired exactly, and a repair killed with SIGKILL part-way is finished by the next run."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import requests
import yaml

from cja_audiences import snapshots
from cja_audiences.cli.main import main as cli
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import read_json, write_parquet
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.external import STATE_FILE
from cja_audiences.publish.streaming import publish_run
from cja_audiences.reconcile import ReconcileError, reconcile_audience
from cja_audiences.settings import get_settings
from tests.publish.helpers import (
    EXTERNAL,
    external_conn,
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    refresh,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
SPEC = {
    "id": "high_value",
    "name": "High value customers",
    "refresh": {"frequency": "daily", "lookback_days": 30},
    "filter": {"rules": {"person": {"all": [{"field": "revenue", "op": "gt", "value": 0}]}}},
}


def publish(emu, audience_dir: Path, run_id: str, ids: range | list[int]) -> Path:
    """One committed run: members, diff, publish over HTTP, commit."""
    run_dir = audience_dir / "runs" / run_id
    write_parquet(member_table(ids), run_dir / "members.parquet")
    diff_members(run_dir, snapshots.current_run_dir(audience_dir))
    publish_run(emu.adobe_config(rate_limit=0), make_spec(), run_dir, options=fast_options())
    snapshots.commit(audience_dir, run_dir)
    return run_dir


@pytest.fixture
def audience(emu, tmp_path):
    """high_value with 300 members committed, 40 of whom left in the second run."""
    audience_dir = tmp_path / "home" / "audiences" / "high_value"
    publish(emu, audience_dir, "r1", range(300))
    publish(emu, audience_dir, "r2", range(40, 300))
    return audience_dir


def members_of(run_dir: Path) -> set[tuple[str, str]]:
    return identities(pq.read_table(run_dir / "members.parquet"))


def ident(i: int) -> tuple[str, str]:
    return ("ECID", f"id-p{i:09d}")


def tamper(emu, deleted=(), flipped=(), expired=()):
    changes = [("delete", *ident(i)) for i in deleted]
    changes += [("flip", *ident(i)) for i in flipped]
    changes += [("expire", *ident(i)) for i in expired]
    emu.tamper("high_value", *changes)


def test_drift_is_found_by_kind_and_repaired_exactly(emu, audience):
    current = snapshots.current_run_dir(audience)
    clean = reconcile_audience(emu.adobe_config(), make_spec(), audience, mode="full")
    assert clean["drift"] == dict.fromkeys(("missing", "stale_status", "expired", "unexpected"), 0)
    assert clean["checked"] == {"members": 260, "exits": 40}

    tamper(emu, deleted=[50, 51, 52], flipped=[60, 61, 5, 6], expired=[70, 71])
    found = reconcile_audience(emu.adobe_config(), make_spec(), audience, mode="full")
    assert found["drift"] == {"missing": 3, "stale_status": 2, "expired": 2, "unexpected": 2}
    assert found["drifted"] and "repair" not in found
    example = found["examples"]["missing"][0]
    assert example["person_id"] == "p000000050" and example["identity"].startswith("id-...")
    assert read_run_record(current)["reconcile"]["drift"] == found["drift"]

    repaired = reconcile_audience(
        emu.adobe_config(), make_spec(), audience, mode="full", repair=True
    )
    assert repaired["repair"]["realized"] == 7 and repaired["repair"]["exited"] == 2
    assert not any(repaired["repair"]["remaining_drift"].values())
    assert held(emu, status="realized") == members_of(current)
    assert {ident(i) for i in range(40)} <= held(emu, status="exited")
    after = reconcile_audience(emu.adobe_config(), make_spec(), audience, mode="full")
    assert not after["drifted"]


def test_sample_reads_back_a_random_subset(emu, audience):
    result = reconcile_audience(emu.adobe_config(), make_spec(), audience, sample=25)
    assert result["mode"] == "sample"
    assert result["checked"] == {"members": 25, "exits": 25}


def test_kill_9_during_repair_then_rerun_ends_exact(emu, audience, tmp_path, monkeypatch):
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "high_value.yaml").write_text(yaml.safe_dump(SPEC))
    env = os.environ | {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn(rate_limit=0)),
        "CJA_AUDIENCES_HOME": str(audience.parents[1]),
        "CJA_AUDIENCES_SPECS": str(specs),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    current = snapshots.current_run_dir(audience)
    tamper(emu, deleted=range(100, 220), flipped=range(10))
    emu.faults(latency_ms=150, paths=["/collection/batch/"])
    command = [sys.executable, "-m", "cja_audiences", "reconcile", "high_value", "--full"]
    child = subprocess.Popen(
        [*command, "--repair", "--chunk-size", "10"],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    ledgers = current / "repairs"
    deadline = time.monotonic() + 60
    while len(list(ledgers.glob("*/ledger/repair_realized-*.json"))) < 2:
        if child.poll() is not None or time.monotonic() > deadline:
            pytest.fail(f"repair ended before the kill: {child.stderr.read().decode()[-2000:]}")
        time.sleep(0.01)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    assert (ledgers / "pending.json").exists()
    assert held(emu, status="realized") != members_of(current)  # killed part-way

    emu.clear_faults()
    for name, value in env.items():
        if name.startswith(("AIRFLOW_CONN_", "CJA_AUDIENCES_")):
            monkeypatch.setenv(name, value)
    get_settings.cache_clear()
    try:
        assert cli(["reconcile", "high_value", "--full", "--repair"]) == 0
    finally:
        get_settings.cache_clear()
    record = read_run_record(current)["reconcile"]
    assert record["resumed_repair"]["status"] == "ok"
    assert record["drift"] == dict.fromkeys(("missing", "stale_status", "expired", "unexpected"), 0)
    assert held(emu, status="realized") == members_of(current)
    assert not (ledgers / "pending.json").exists()


def test_an_external_audience_is_read_back_under_its_own_namespace(emu, tmp_path):
    """AEP keys an external audience's members by the audience's namespace and id in the
    profile's segmentMembership; tampering with what AEP holds shows as drift."""
    storage = tmp_path / "cloud"
    storage.mkdir()
    emu.base_connection(storage, "conn-1")
    audience_dir = tmp_path / "home" / "audiences" / "high_value"
    refresh(emu, external_conn(storage), audience_dir, "r1", range(120))
    refresh(emu, external_conn(storage), audience_dir, "r2", range(20, 120))
    spec = make_spec(**EXTERNAL)
    config = emu.adobe_config(**external_conn(storage))
    clean = reconcile_audience(config, spec, audience_dir, mode="full")
    assert clean["checked"] == {"members": 100, "exits": 20}
    assert not clean["drifted"]

    aep_id = read_json(audience_dir / STATE_FILE)["audience_id"]
    body = {
        "schema": {"name": "_xdm.context.profile"},
        "identities": [{"entityId": ident(30)[1], "entityIdNS": {"code": "ECID"}}],
    }
    answer = requests.post(
        f"{emu.url}/data/core/ups/access/entities", json=body, headers=emu.headers(), timeout=10
    )
    [view] = answer.json().values()
    entry = view["entity"]["segmentMembership"]["CustomerAudienceUpload"][aep_id]
    assert entry["status"] == "realized" and entry["validUntil"]

    emu.tamper(aep_id, ("delete", *ident(30)), ("delete", *ident(31)), ("add", *ident(5)))
    found = reconcile_audience(config, spec, audience_dir, mode="full")
    assert found["drift"] == {"missing": 2, "stale_status": 0, "expired": 0, "unexpected": 1}
    assert read_run_record(audience_dir / "runs" / "r2")["reconcile"]["drifted"] is True
    with pytest.raises(ReconcileError, match="full_republish"):
        reconcile_audience(config, spec, audience_dir, mode="full", repair=True)
