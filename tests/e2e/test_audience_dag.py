"""The real audience DAG, run with dag.test() against the emulator over HTTP.

The emulator's membership for the audience must equal members.parquet exactly, after the
first publish and after a refresh on a day more of data (entries and exits only).
"""

from __future__ import annotations

import json
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake import Lake, read_run_record
from cja_audiences.snapshots import current_run
from tests.dags.test_dag_integrity import load_dagbag

pytestmark = pytest.mark.e2e

AUDIENCE = "cart_abandoners"
AS_OF = date(2026, 11, 20)


@pytest.fixture
def lake(tmp_path, monkeypatch) -> Lake:
    lake = Lake(tmp_path / "home")
    generate_synthetic(lake, persons=3000, days=14, end=AS_OF, seed=11)
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(lake.root))
    return lake


def published_members(emu) -> set[tuple[str, str]]:
    return {
        (m["namespace"], m["identity"])
        for m in emu.membership(AUDIENCE)
        if m["status"] == "realized"
    }


def committed_members(lake: Lake) -> set[tuple[str, str]]:
    run_dir = lake.run_dir(AUDIENCE, current_run(lake.audience_dir(AUDIENCE))["run_id"])
    table = pq.read_table(run_dir / "members.parquet", columns=["namespace", "identity"])
    return set(zip(table["namespace"].to_pylist(), table["identity"].to_pylist(), strict=True))


def run_dag(as_of: date):
    dag = load_dagbag().get_dag(f"cja_audience__{AUDIENCE}")
    return dag.test(run_conf={"as_of": as_of.isoformat(), "force": True})


def test_audience_dag_publishes_exactly_its_members_then_refreshes_by_diff(
    airflow_db, emu, lake, monkeypatch
):
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn()))

    first = run_dag(AS_OF)
    assert first.state == "success"
    members = committed_members(lake)
    assert members and published_members(emu) == members

    next_day = AS_OF + timedelta(days=1)
    generate_synthetic(lake, persons=3000, days=1, end=next_day, seed=11)
    second = run_dag(next_day)
    assert second.state == "success"
    refreshed = committed_members(lake)
    assert published_members(emu) == refreshed

    record = read_run_record(lake.run_dir(AUDIENCE, second.run_id))
    assert record["diff"]["entered"] == len(refreshed - members)
    assert record["diff"]["exited"] == len(members - refreshed)
    assert record["publish"]["acknowledged"] == len(refreshed ^ members)
