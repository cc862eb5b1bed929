"""The real audience DAG in external_audience mode, run with dag.test() against the emulator.

A first publish and two refreshes (entries and exits), the membership files on S3 (moto's
server, read by the emulator through an S3 base connection): after each, the emulator's
external audience holds exactly the committed snapshot, each refresh is one differential run,
and the DAG's reconcile task finds no drift.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest
import yaml

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake, read_json
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.external import STATE_FILE
from cja_audiences.snapshots import current_run
from tests.conftest import REPO
from tests.dags.test_dag_integrity import load_dagbag
from tests.object_storage import new_s3_bucket

pytestmark = pytest.mark.e2e

AUDIENCE = "cart_abandoners"
AS_OF = date(2026, 11, 20)
PERSONS = 2000


@pytest.fixture(scope="module")
def env(tmp_path_factory, emulator, s3_server):
    """A lake, a specs folder whose audience publishes as an external audience, and an S3
    bucket behind an S3 base connection for its membership files."""
    emulator.reset()
    root = tmp_path_factory.mktemp("external")
    lake = Lake(root / "home")
    generate_synthetic(lake, persons=PERSONS, days=14, end=AS_OF, seed=5)
    specs = root / "audiences"
    shutil.copytree(REPO / "include" / "audiences", specs)
    spec_file = specs / f"{AUDIENCE}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["publish"] = {"mode": "external_audience", "ttl_days": 30}
    spec["guardrails"] = {"max_change_pct": 400}  # three synthetic days churn a lot
    spec_file.write_text(yaml.safe_dump(spec, sort_keys=False))
    bucket = new_s3_bucket(s3_server)  # the membership files go to object storage
    emulator.s3_base_connection(s3_server.url, "testing", "testing", "conn-e2e")
    conn = emulator.aep_conn(
        external_base_connection_id="conn-e2e",
        external_location=f"s3://{bucket}/cja",
        external_source_path=f"{bucket}/cja",
    )
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CJA_AUDIENCES_STORAGE_OPTIONS", json.dumps({"endpoint_url": s3_server.url}))
        mp.setenv("CJA_AUDIENCES_HOME", str(lake.root))
        mp.setenv("CJA_AUDIENCES_SPECS", str(specs))
        mp.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(conn))
        yield lake


def members(run_dir) -> set[str]:
    return set(
        pq.read_table(run_dir / "members.parquet", columns=["identity"])["identity"].to_pylist()
    )


def held(emulator, lake) -> set[str]:
    aep_id = read_json(lake.audience_dir(AUDIENCE) / STATE_FILE)["audience_id"]
    return {m["identity"] for m in emulator.membership(aep_id)}


def test_publish_and_two_refreshes_hold_each_committed_snapshot(airflow_db, env, emulator):
    dag_id = f"cja_audience__{AUDIENCE}"
    previous: set[str] = set()
    for day in range(3):
        as_of = AS_OF + timedelta(days=day)
        if day:
            generate_synthetic(env, persons=PERSONS, days=1, end=as_of, seed=5 + day)
        # dag.test() makes a manual run: a dry run unless it asks to publish
        conf = {"as_of": as_of.isoformat(), "force": True, "lookback_days": 7, "publish": True}
        run = load_dagbag().get_dag(dag_id).test(run_conf=conf)
        assert run.state == "success"
        run_dir = env.run_dir(AUDIENCE, run.run_id)
        assert current_run(env.audience_dir(AUDIENCE))["run_id"] == run_dir.name
        now = members(run_dir)
        assert now and held(emulator, env) == now
        record = read_run_record(run_dir)
        publish = record["publish"]
        assert publish["publish_mode"] == "external_audience"
        assert publish["file"] == f"{run_dir.name}.csv"
        assert record["reconcile"]["drifted"] is False  # read back through Profile Access
        assert publish["differential"] is bool(day)
        if day:
            assert (publish["entered"], publish["exited"]) == (
                len(now - previous),
                len(previous - now),
            )
            assert publish["entered"] + publish["exited"] > 0
        previous = now
