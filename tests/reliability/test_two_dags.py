"""Two real DAGs refresh one audience at once: ``cja_audience__<id>`` and ``cja_audiences_all``.

Each DAG runs with ``dag.test()`` in its own process (its own Airflow home and metadata DB:
``max_active_runs`` cannot help across DAGs, only the lease in the shared lake can), against
one lake and one emulator, publish on, on different days so their members differ. Starting
Airflow's first task takes 15-40 s on a loaded machine, so the test holds the audience's
lease itself until both runs wait for it in their diff, then lets go: both race for it at
once. Only one run may then be between diff and commit (a 2 s latency on streaming keeps it
there): the other waits, then diffs against the snapshot the first committed; AEP ends
equal to the committed snapshot.

The same runs are then searched for the client secret and every IMS token the emulator
issued: in the task logs (dag.test() writes them to the process output, at DEBUG here; task
log files too, should there be any) and every XCom value in each metadata DB.
"""

from __future__ import annotations

import json
import os
import re
import shutil
import sqlite3
import subprocess
import sys
import time
from datetime import date, datetime, timedelta
from pathlib import Path

import pytest

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake, read_json
from cja_audiences.lake.lease import lake_leases
from cja_audiences.lake.runs import read_run_record
from tests.e2e.test_audience_dag import members, published
from tests.reliability import dag_child
from tests.reliability.helpers import REPO

pytestmark = [pytest.mark.e2e, pytest.mark.reliability]
AUDIENCE = "cart_abandoners"
AS_OF = date(2026, 11, 20)
DAGS = {f"cja_audience__{AUDIENCE}": AS_OF, "cja_audiences_all": AS_OF + timedelta(days=1)}
LATENCY_MS = 2000
HOLDER = "two-dags-test"  # the test's own hold on the audience, until both runs wait
# dag.test()'s in-process supervisor logs, at DEBUG, each value a task asks it to mask (a
# worker's supervisor omits that body): Airflow's test harness, not a path a worker takes
DAG_TEST_MASK_REQUEST = re.compile(r"Sending request .*loc=supervisor\.py:\d+ msg=MaskSecret\(")
TOKEN = re.compile(r"emu-[A-Za-z0-9_-]{43}")  # what the emulator's IMS route issues


def airflow_env(home: Path, metadata_db: Path) -> dict[str, str]:
    """An Airflow home of its own, its metadata DB a copy of the migrated test DB."""
    home.mkdir(parents=True)
    with sqlite3.connect(metadata_db) as source, sqlite3.connect(home / "airflow.db") as copy:
        source.backup(copy)  # consistent even with the test process's DB in WAL mode
    return {
        "AIRFLOW_HOME": str(home),
        "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": f"sqlite:///{home / 'airflow.db'}",
        "AIRFLOW__LOGGING__BASE_LOG_FOLDER": str(home / "logs"),
        "AIRFLOW__LOGGING__LOGGING_LEVEL": "DEBUG",  # the secrets grep reads everything
    }


@pytest.fixture(scope="module")
def both_dags(airflow_db, emulator, tmp_path_factory):
    """Both DAG runs, started together; per DAG its result, Airflow home and output."""
    emulator.reset()
    root = tmp_path_factory.mktemp("two-dags")
    lake = Lake(root / "home")
    generate_synthetic(lake, persons=1500, days=10, end=AS_OF + timedelta(days=1), seed=13)
    specs = root / "specs"
    specs.mkdir()
    shutil.copy(REPO / "include" / "audiences" / f"{AUDIENCE}.yaml", specs)
    barrier = root / "barrier"
    barrier.mkdir()
    base = os.environ | {
        "CJA_AUDIENCES_HOME": str(lake.root),
        "CJA_AUDIENCES_SPECS": str(specs),
        "CJA_AUDIENCES_LEASE_WAIT_S": "120",
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emulator.aep_conn()),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    emulator.faults(latency_ms=LATENCY_MS, paths=["/collection/batch/"])
    leases = lake_leases(lake.audiences)
    token = leases.acquire(AUDIENCE, HOLDER).token
    children = {}
    for dag_id, as_of in DAGS.items():
        env = base | airflow_env(root / dag_id, airflow_db / "airflow.db")
        command = [sys.executable, "-m", "tests.reliability.dag_child", dag_id, AUDIENCE]
        children[dag_id] = subprocess.Popen(
            [*command, as_of.isoformat(), str(barrier)],
            cwd=REPO,
            env=env,
            stdout=(root / dag_id / "output.log").open("wb"),  # a pipe would fill and block
            stderr=subprocess.STDOUT,
        )
    runs = {}
    try:
        release_once_both_wait(lake, leases, token, children)
        for dag_id, child in children.items():
            child.wait(timeout=600)
            output = (root / dag_id / "output.log").read_text(errors="replace")
            assert child.returncode == 0, output[-4000:]
            [line] = [x for x in output.splitlines() if x.startswith(dag_child.RESULT)]
            result = json.loads(line.removeprefix(dag_child.RESULT))
            runs[dag_id] = {**result, "home": root / dag_id, "output": output}
    finally:
        for child in children.values():
            if child.poll() is None:
                child.kill()
        emulator.clear_faults()
    return lake, runs


def release_once_both_wait(lake: Lake, leases, token: int, children: dict) -> None:
    """Release the test's lease once both runs computed their members (so both diffs are
    waiting for the lease), and a moment more."""
    deadline = time.monotonic() + 300
    while time.monotonic() < deadline:
        for dag_id, child in children.items():
            if child.poll() is not None:
                raise AssertionError(f"{dag_id} ended early ({child.returncode})")
        runs = lake.audience_dir(AUDIENCE) / "runs"
        done = [r for r in runs.glob("*/run.json") if "compute" in read_json(r, {})]
        if len(done) == len(children):
            time.sleep(1)
            assert leases.release(AUDIENCE, HOLDER, token)
            return
        time.sleep(0.1)
    raise AssertionError("the DAG runs never reached their diff")


def test_one_run_at_a_time_between_diff_and_commit(both_dags, emulator):
    lake, runs = both_dags
    for run in runs.values():
        assert run["state"] == "success", run["tasks"]
        assert {t["state"] for t in run["tasks"].values()} == {"success"}, run["tasks"]
    first, second = sorted(
        (
            {
                **read_run_record(lake.run_dir(AUDIENCE, run["run_id"])),
                "diff_task": run["tasks"]["diff"],
            }
            for run in runs.values()
        ),
        key=lambda record: record["lease"]["token"],
    )
    first_dir = lake.run_dir(AUDIENCE, first["run_id"])
    second_dir = lake.run_dir(AUDIENCE, second["run_id"])
    assert [first["lease"]["token"], second["lease"]["token"]] == [2, 3]  # the test's was 1
    # the second diff began while the first run held the audience, waited for its commit,
    # then diffed against the snapshot it committed (not against the empty start)
    committed = datetime.fromisoformat(first["commit"]["committed_at"])
    assert datetime.fromisoformat(first["lease"]["acquired_at"]) < committed
    assert datetime.fromisoformat(second["diff_task"]["start"]) < committed
    assert datetime.fromisoformat(second["lease"]["acquired_at"]) >= committed
    assert second["diff"]["previous_run_id"] == first_dir.name
    assert read_json(lake.audience_dir(AUDIENCE) / "current.json")["run_id"] == second_dir.name
    assert members(first_dir) != members(second_dir)  # different days, different members
    assert published(emulator) == members(second_dir)


def test_no_secret_or_ims_token_in_task_logs_or_xcom(both_dags, emulator):
    _lake, runs = both_dags
    secret = emulator.config["client_secret"]
    assert emulator.stats()["tokens_issued"] >= 2 and TOKEN.fullmatch(emulator.token())
    haystacks: dict[str, str] = {}
    for dag_id, run in runs.items():
        # dag.test() runs tasks in-process, logging to the console rather than to files
        # under logs/: the process output holds every task's log (at DEBUG here)
        logs = [p for p in (run["home"] / "logs").rglob("*") if p.is_file()]
        haystacks |= {str(p): p.read_text(errors="replace") for p in logs}
        haystacks[f"{dag_id} task logs"] = "\n".join(
            line for line in run["output"].splitlines() if not DAG_TEST_MASK_REQUEST.search(line)
        )
        for task in ("diff", "publish", "commit"):
            assert f"[DAG TEST] end task task_id={task}" in run["output"].replace("refresh.", "")
        assert "records acknowledged" in run["output"]  # the publish task's own log line
        with sqlite3.connect(run["home"] / "airflow.db") as db:
            values = db.execute("SELECT dag_id, task_id, key, value FROM xcom").fetchall()
        assert any(task == "diff" or task.endswith(".diff") for _, task, _, _ in values)
        haystacks |= {f"xcom {d}.{t}.{k}": str(v) for d, t, k, v in values}
    leaks = [name for name, text in haystacks.items() if secret in text]
    assert not leaks, f"the client secret leaked into {leaks}"
    leaks = [name for name, text in haystacks.items() if TOKEN.search(text)]
    assert not leaks, f"an IMS token leaked into {leaks}"
