"""Airflow on Celery for real: PostgreSQL, Redis, every component and two workers.

Two audiences' own DAGs and ``cja_audiences_all`` (two more audiences) run at once: four
audiences computing and publishing on two Celery workers. Their tasks land on both workers,
AEP ends up holding exactly each audience, and the org's shared 2,000 records/s budget holds
in every second the emulator counted.
"""

from __future__ import annotations

import json
import time

import pytest

from dev.celery import CeleryCluster
from emulator.process import start_emulator
from tests.e2e.conftest import REPO, copy_spec, keep_log, last_complete_day, record_timing

pytestmark = pytest.mark.e2e

BUDGET = 2000
ALONE = ("cart_abandoners", "high_value_repeat_buyers")  # each through its own DAG
TOGETHER = ("checkout_in_one_session", "paid_social_apparel_browsers")  # through cja_audiences_all


@pytest.fixture(scope="module")
def emulator(tmp_path_factory):
    """An emulator of this module's own: the session one holds the standalone tests' state."""
    with start_emulator(tmp_path_factory.mktemp("celery-emulator")) as server:
        yield server


@pytest.fixture(scope="module")
def cluster(emulator, tmp_path_factory):
    from cja_audiences.extract.synthetic import generate_synthetic
    from cja_audiences.lake.layout import Lake

    root = tmp_path_factory.mktemp("celery")
    lake = Lake(root / "home")
    generate_synthetic(lake, persons=60_000, days=8, end=last_complete_day(), seed=15)
    for audience in (*ALONE, *TOGETHER):
        copy_spec(REPO / "include" / "audiences" / f"{audience}.yaml", root / "specs")
    cluster = CeleryCluster(
        root / "airflow",
        env={
            "CJA_AUDIENCES_HOME": str(lake.root),
            "CJA_AUDIENCES_SPECS": str(root / "specs"),
            "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emulator.aep_conn(rate_limit=BUDGET)),
            "AIRFLOW_CONN_CJA_DEFAULT": json.dumps(emulator.cja_conn()),
        },
        dag_ids=[*(f"cja_audience__{a}" for a in (*ALONE, *TOGETHER)), "cja_audiences_all"],
        pools={"aep_publish": 4},
        unpause=False,
        startup_timeout=420.0,
        stop_grace=15.0,
    )
    try:
        with cluster:
            record_timing("celery cluster: healthy and DAGs parsed", cluster.startup_s or 0.0)
            yield cluster, lake
    finally:
        keep_log(cluster)


def test_audiences_run_on_both_workers_and_share_the_org_budget(cluster, emulator):
    airflow, lake = cluster
    conf = {"force": True, "publish": True, "as_of": last_complete_day().isoformat()}
    runs = []
    for audience in ALONE:
        dag_id = f"cja_audience__{audience}"
        airflow.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})
        runs.append((dag_id, airflow.trigger(dag_id, conf)["dag_run_id"]))
    airflow.api("PATCH", "/api/v2/dags/cja_audiences_all", json={"is_paused": False})
    together = airflow.trigger("cja_audiences_all", {**conf, "audiences": list(TOGETHER)})
    runs.append(("cja_audiences_all", together["dag_run_id"]))

    began = time.monotonic()
    hosts: dict[str, str] = {}
    for dag_id, run_id in runs:
        run = airflow.wait_for_run(dag_id, run_id, timeout=600)
        assert run["state"] == "success", airflow.task_states(dag_id, run_id)
        hosts |= {
            f"{dag_id}.{task}": host for task, host in airflow.task_hosts(dag_id, run_id).items()
        }
    record_timing("celery: four audiences computed and published", time.monotonic() - began)

    assert set(airflow.worker_names) <= set(hosts.values()), hosts
    for audience in (*ALONE, *TOGETHER):
        from cja_audiences.lake.layout import read_json
        from cja_audiences.lake.storage import parquet_file

        current = read_json(lake.audience_dir(audience) / "current.json")
        members = parquet_file(lake.run_dir(audience, current["run_id"]) / "members.parquet").read()
        held = {
            (m["namespace"], m["identity"])
            for m in emulator.membership(audience)
            if m["status"] == "realized"
        }
        expected = set(
            zip(members["namespace"].to_pylist(), members["identity"].to_pylist(), strict=True)
        )
        assert held == expected and expected, audience
    rate = emulator.stats()["records_per_s_by_org"][emulator.config["org_id"]]
    assert rate["max_calendar_second"] <= BUDGET * 1.05, rate
