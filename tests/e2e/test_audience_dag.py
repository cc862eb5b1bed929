"""The real audience DAG, run with dag.test() against the emulator over HTTP.

The emulator's membership for the audience must equal members.parquet exactly: after the
first publish, after a refresh on one more day of data (entries and exits only), and after a
rollback to the first run. A guardrail block fails the run before anything is sent.
"""

from __future__ import annotations

import json
import shutil
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cja_audiences.cli.main import main as cli
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import read_run_record
from cja_audiences.snapshots import current_run
from cja_audiences.specs.model import spec_paths
from tests.conftest import REPO
from tests.dags.test_dag_integrity import load_dagbag

pytestmark = pytest.mark.e2e

AUDIENCE = "cart_abandoners"
AS_OF = date(2026, 11, 20)
PERSONS = 3000


def published(emulator) -> set[tuple[str, str]]:
    return {
        (m["namespace"], m["identity"])
        for m in emulator.membership(AUDIENCE)
        if m["status"] == "realized"
    }


def members(run_dir: Path) -> set[tuple[str, str]]:
    table = pq.read_table(run_dir / "members.parquet", columns=["namespace", "identity"])
    return set(zip(table["namespace"].to_pylist(), table["identity"].to_pylist(), strict=True))


def run_dag(as_of: date, **conf):
    dag = load_dagbag().get_dag(f"cja_audience__{AUDIENCE}")
    # dag.test() makes a manual run, which is a dry run unless it asks to publish
    conf = {"as_of": as_of.isoformat(), "force": True, "publish": True, **conf}
    return dag.test(run_conf=conf)


@pytest.fixture(scope="module")
def env(tmp_path_factory, emulator):
    """A lake of two weeks and the AEP connection, for the whole module (state carries over)."""
    emulator.reset()
    lake = Lake(tmp_path_factory.mktemp("e2e") / "home")
    generate_synthetic(lake, persons=PERSONS, days=14, end=AS_OF, seed=11)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CJA_AUDIENCES_HOME", str(lake.root))
        mp.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emulator.aep_conn()))
        yield lake


@pytest.fixture(scope="module")
def two_runs(airflow_db, env, emulator):
    """Publish on AS_OF, then refresh on the next day; what the emulator held after each."""
    lake = env
    first = run_dag(AS_OF)
    assert first.state == "success"
    first_dir = lake.run_dir(AUDIENCE, first.run_id)
    after_first = published(emulator)

    generate_synthetic(lake, persons=PERSONS, days=1, end=AS_OF + timedelta(days=1), seed=11)
    second = run_dag(AS_OF + timedelta(days=1))
    assert second.state == "success"
    return lake, first_dir, after_first, lake.run_dir(AUDIENCE, second.run_id)


def test_first_publish_sends_exactly_the_members(two_runs):
    _, first_dir, after_first, _ = two_runs
    assert after_first and after_first == members(first_dir)


def test_refresh_sends_only_entries_and_exits(two_runs, emulator):
    lake, first_dir, _, second_dir = two_runs
    before, after = members(first_dir), members(second_dir)
    assert current_run(lake.audience_dir(AUDIENCE))["run_id"] == second_dir.name
    assert published(emulator) == after
    record = read_run_record(second_dir)
    assert (
        (second_dir / "dag_id").read_text()
        == record["request"]["dag_id"]
        == f"cja_audience__{AUDIENCE}"
    )
    assert record["diff"]["entered"] == len(after - before)
    assert record["diff"]["exited"] == len(before - after)
    assert record["publish"]["acknowledged"] == len(after ^ before)
    assert record["diff"]["renewed"] == 0  # a day later nobody is near its validUntil
    assert record["reconcile"]["drifted"] is False  # the reconcile task read AEP back
    assert record["reconcile"]["checked"]["members"] == min(len(after), 1000)


def test_rollback_restores_the_first_membership_exactly(two_runs, emulator):
    lake, first_dir, _, _ = two_runs
    assert cli(["runs", "rollback", AUDIENCE, first_dir.name]) == 0
    assert published(emulator) == members(first_dir)
    current = current_run(lake.audience_dir(AUDIENCE))
    assert read_run_record(lake.run_dir(AUDIENCE, current["run_id"]))["rollback"] == {
        "target_run_id": first_dir.name,
        "from_run_id": two_runs[3].name,
    }


def test_a_guardrail_block_fails_the_run_and_sends_nothing(
    airflow_db, env, emulator, tmp_path, monkeypatch
):
    specs = tmp_path / "audiences"
    shutil.copytree(REPO / "include" / "audiences", specs)
    spec_file = specs / f"{AUDIENCE}.yaml"
    spec = yaml.safe_load(spec_file.read_text())
    spec["guardrails"] = {"min_size": 10_000_000}
    spec_file.write_text(yaml.safe_dump(spec))
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(specs))
    current_before = current_run(env.audience_dir(AUDIENCE))
    published_before = published(emulator)

    run = run_dag(AS_OF)

    assert run.state == "failed"
    record = read_run_record(env.run_dir(AUDIENCE, run.run_id))
    assert record["failure"]["stage"] == "guardrails"
    assert "min_size" in record["failure"]["reason"]
    assert "10,000,000" in record["failure"]["reason"]
    assert "publish" not in record
    assert current_run(env.audience_dir(AUDIENCE)) == current_before
    assert published(emulator) == published_before


EXAMPLES = sorted(p.stem for p in spec_paths(REPO / "include" / "audiences"))


@pytest.fixture(scope="module")
def long_lake(tmp_path_factory, env, emulator):
    """90 days (the longest lookback, for churn_risk) in a lake of their own, a clean emulator."""
    emulator.reset()
    lake = Lake(tmp_path_factory.mktemp("e2e-examples") / "home")
    generate_synthetic(lake, persons=PERSONS, days=90, end=AS_OF, seed=11)
    with pytest.MonkeyPatch.context() as mp:
        mp.setenv("CJA_AUDIENCES_HOME", str(lake.root))
        yield lake


@pytest.mark.parametrize("audience_id", EXAMPLES)
def test_every_example_audience_publishes_through_its_dag(
    airflow_db, long_lake, emulator, audience_id
):
    """Each example's own DAG, whole, against the emulator: AEP holds exactly its members."""
    dag = load_dagbag().get_dag(f"cja_audience__{audience_id}")
    run = dag.test(run_conf={"as_of": AS_OF.isoformat(), "force": True, "publish": True})
    assert run.state == "success"
    run_dir = long_lake.run_dir(audience_id, run.run_id)
    assert current_run(long_lake.audience_dir(audience_id))["run_id"] == run_dir.name
    held = {
        (m["namespace"], m["identity"])
        for m in emulator.membership(audience_id)
        if m["status"] == "realized"
    }
    assert held and held == members(run_dir)
