"""Publishing as an AEP external audience, against the emulator's External Audiences API."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cja_audiences import snapshots
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import read_json
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish import ModeSwitchError, decommission_run, publish_run
from cja_audiences.publish.external import RUN_LEDGER, STATE_FILE, ExternalAudienceError
from tests.object_storage import new_s3_bucket
from tests.publish.helpers import (
    EXTERNAL,
    external_conn,
    fast_poll,
    held_by,
    identities,
    ingestion_runs,
    make_spec,
    member_table,
    refresh,
    write_members,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]


def test_publish_then_differential_refreshes_match_every_snapshot(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    first = refresh(emu, external_conn(storage), audience, "r1", range(100))
    assert first["differential"] is False and first["records"] == 100
    assert held_by(emu, audience) == identities(member_table(range(100)))

    second = refresh(emu, external_conn(storage), audience, "r2", range(50, 180))
    assert second["differential"] is True
    assert (second["entered"], second["exited"]) == (80, 50)
    assert held_by(emu, audience) == identities(member_table(range(50, 180)))

    third = refresh(emu, external_conn(storage), audience, "r3", range(150, 160))
    assert held_by(emu, audience) == identities(member_table(range(150, 160)))
    files = sorted(p.name for p in (storage / "audiences" / "high_value").iterdir())
    assert files == ["r1.csv", "r2.csv", "r3.csv"]
    record = read_run_record(audience / "runs" / "r3")["publish"]
    assert record["publish_mode"] == "external_audience" and record["run_id"] == third["run_id"]
    assert (storage / "audiences/high_value/r3.csv").read_text().splitlines()[
        0
    ] == '"identity","delete"'


@pytest.fixture
def s3_storage(emu, s3_server, monkeypatch) -> dict:
    """A bucket on the S3 server behind an S3 base connection; the connection fields for it."""
    bucket = new_s3_bucket(s3_server)
    monkeypatch.setenv("CJA_AUDIENCES_STORAGE_OPTIONS", json.dumps({"endpoint_url": s3_server.url}))
    emu.s3_base_connection(s3_server.url, "testing", "testing", "conn-s3")
    return {
        "external_base_connection_id": "conn-s3",
        "external_location": f"s3://{bucket}/cja",
        "external_source_path": f"{bucket}/cja",
    }


def test_files_on_s3_are_selected_by_the_servers_last_modified(
    emu, s3_server, s3_storage, tmp_path
):
    """Each refresh uploads one object; its run's window starts at the upload's second, after
    every earlier object, so AEP ingests that object alone and holds each snapshot."""
    import boto3

    audience = tmp_path / "audiences" / "high_value"
    plan = {"r1": range(100), "r2": range(50, 180), "r3": range(150, 160)}
    records = {}
    for name, ids in plan.items():
        summary = refresh(emu, s3_storage, audience, name, ids)
        records[summary["run_id"]] = summary["records"]
        assert held_by(emu, audience) == identities(member_table(ids))
    assert summary["differential"] is True and summary["exited"] > 0
    assert {r["runId"]: r["rows"] for r in ingestion_runs(emu, audience)} == records

    bucket = s3_storage["external_location"].removeprefix("s3://").split("/")[0]
    listed = boto3.client("s3", endpoint_url=s3_server.url).list_objects_v2(Bucket=bucket)
    uploaded = {o["Key"]: o["LastModified"].timestamp() for o in listed["Contents"]}
    assert sorted(uploaded) == [f"cja/high_value/{name}.csv" for name in plan]
    for name in plan:
        ledger = read_json(audience / "runs" / name / RUN_LEDGER)
        assert ledger["path"] == f"s3://{bucket}/cja/high_value/{name}.csv"
        mine = uploaded[f"cja/high_value/{name}.csv"]
        assert ledger["start"] <= mine
        assert all(t < ledger["start"] for t in uploaded.values() if t < mine)


def kill_publisher_mid_poll(emu, storage: Path, run_dir: Path, ids: range) -> str:
    """Publish ``run_dir`` in a child process and kill -9 it once AEP's run has started;
    returns the run id it recorded."""
    write_members(run_dir / "members.parquet", ids)
    diff_members(run_dir, snapshots.current_run_dir(run_dir.parent.parent))
    emu.faults(external_delay_s=3.0)
    conn = emu.aep_conn(**external_conn(storage))
    child = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.publish.publish_child",
            str(run_dir),
            "500",
            "external_audience",
        ],
        cwd=REPO,
        env=os.environ
        | {
            "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(conn),
            "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
        },
        stderr=subprocess.PIPE,
    )
    deadline = time.monotonic() + 60
    while not (read_json(run_dir / RUN_LEDGER) or {}).get("run_id"):
        assert child.poll() is None, child.stderr.read().decode()[-2000:]
        assert time.monotonic() < deadline, "the child never started an ingestion run"
        time.sleep(0.02)
    child.send_signal(signal.SIGKILL)
    child.wait()
    return read_json(run_dir / RUN_LEDGER)["run_id"]


def test_kill_9_between_run_started_and_run_polled_resumes_the_same_run(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    run_dir = audience / "runs" / "r1"
    run_dir.mkdir(parents=True)
    started = kill_publisher_mid_poll(emu, storage, run_dir, range(200))

    summary = publish_run(
        emu.adobe_config(**external_conn(storage)),
        make_spec(**EXTERNAL),
        run_dir,
        poll=fast_poll(),
    )
    assert summary["run_id"] == started
    assert [r["runId"] for r in ingestion_runs(emu, audience)] == [started]
    assert held_by(emu, audience) == identities(member_table(range(200)))


def test_a_run_killed_mid_poll_and_abandoned_makes_the_next_one_full(emu, storage, tmp_path):
    """The killed run's file may still be applied (AEP finishes it): the next refresh waits
    for it, then replaces the membership."""
    audience = tmp_path / "audiences" / "high_value"
    refresh(emu, external_conn(storage), audience, "r1", range(50))
    (audience / "runs" / "r2").mkdir()
    kill_publisher_mid_poll(emu, storage, audience / "runs" / "r2", range(200, 260))
    third = refresh(emu, external_conn(storage), audience, "r3", range(25, 75))
    assert third["differential"] is False
    assert held_by(emu, audience) == identities(member_table(range(25, 75)))


def test_a_failed_ingestion_fails_the_publish_and_a_retry_starts_a_new_run(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    emu.faults(external_run_failures=1)
    with pytest.raises(ExternalAudienceError, match="ended FAILED"):
        refresh(emu, external_conn(storage), audience, "r1", range(10))
    assert read_run_record(audience / "runs" / "r1")["publish"]["status"] == "failed"
    assert snapshots.current_run(audience) is None
    config = emu.adobe_config(**external_conn(storage))
    summary = publish_run(config, make_spec(**EXTERNAL), audience / "runs" / "r1", poll=fast_poll())
    assert summary["status"] == "ok"
    assert held_by(emu, audience) == identities(member_table(range(10)))


def test_an_abandoned_run_makes_the_next_one_a_full_ingestion(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    refresh(emu, external_conn(storage), audience, "r1", range(20))
    abandoned = audience / "runs" / "r2"
    abandoned.mkdir(parents=True)
    write_members(abandoned / "members.parquet", range(100, 130))
    diff_members(abandoned, snapshots.current_run_dir(audience))
    config = emu.adobe_config(**external_conn(storage))
    publish_run(config, make_spec(**EXTERNAL), abandoned, poll=fast_poll())  # never committed
    third = refresh(emu, external_conn(storage), audience, "r3", range(10, 30))
    assert third["differential"] is False
    assert held_by(emu, audience) == identities(member_table(range(10, 30)))


def test_a_dry_run_writes_no_file_and_starts_nothing(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    run_dir = audience / "runs" / "r1"
    run_dir.mkdir(parents=True)
    write_members(run_dir / "members.parquet", range(30))
    diff_members(run_dir, None)
    config = emu.adobe_config(**external_conn(storage))
    summary = publish_run(config, make_spec(**EXTERNAL), run_dir, dry_run=True)
    assert summary["status"] == "dry_run" and summary["records"] == 30
    assert (summary["differential"], summary["file"]) == (False, "r1.csv")
    assert not (storage / "audiences").exists() and not (audience / STATE_FILE).exists()
    with pytest.raises(ExternalAudienceError, match="external_location"):
        publish_run(emu.adobe_config(), make_spec(**EXTERNAL), run_dir, dry_run=True)


def test_switching_modes_is_refused_until_the_audience_is_decommissioned(emu, storage, tmp_path):
    audience = tmp_path / "audiences" / "high_value"
    refresh(emu, external_conn(storage), audience, "r1", range(10))
    run_dir = audience / "runs" / "r2"
    run_dir.mkdir(parents=True)
    write_members(run_dir / "members.parquet", range(10))
    diff_members(run_dir, snapshots.current_run_dir(audience))
    streaming = make_spec()
    config = emu.adobe_config(**external_conn(storage))
    with pytest.raises(ModeSwitchError, match="live in AEP in external_audience mode"):
        publish_run(config, streaming, run_dir)
    decommission_run(config, make_spec(**EXTERNAL), audience / "runs" / "r1")
    aep_id = read_json(audience / STATE_FILE, {}).get("audience_id")
    assert aep_id is None  # deleted in AEP, forgotten here
    assert emu.membership("any-deleted-id") == []
    publish_run(config, streaming, run_dir)  # now allowed


def test_a_connection_without_storage_fields_names_them(emu, run_dir):
    write_members(run_dir / "members.parquet", range(5))
    diff_members(run_dir, None)
    with pytest.raises(
        ExternalAudienceError, match="external_base_connection_id or external_location"
    ):
        publish_run(emu.adobe_config(), make_spec(**EXTERNAL), run_dir, poll=fast_poll())
