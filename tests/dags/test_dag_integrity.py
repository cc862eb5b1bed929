"""Every DAG file imports cleanly, every DAG is well-formed, and a broken spec stays contained."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path

import pytest

from cja_audiences.settings import get_settings
from cja_audiences.specs.model import spec_paths
from tests.conftest import REPO

pytestmark = pytest.mark.integration


def load_dagbag():
    from airflow.dag_processing.dagbag import DagBag

    get_settings.cache_clear()
    return DagBag(dag_folder=str(REPO / "dags"))


@pytest.fixture(scope="module")
def dagbag():
    return load_dagbag()


def spec_ids() -> list[str]:
    return sorted(p.stem for p in spec_paths(REPO / "include" / "audiences"))


def test_every_dag_file_imports_without_errors(dagbag):
    assert dagbag.import_errors == {}


def test_one_dag_per_spec_plus_extract_and_all(dagbag):
    expected = {f"cja_audience__{i}" for i in spec_ids()}
    expected |= {"cja_extract", "cja_audiences_all", "cja_audiences_reconcile"}
    assert set(dagbag.dag_ids) == expected


def test_every_dag_has_owner_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries setting"
        assert any(t.retries > 0 for t in dag.tasks), f"{dag_id} never retries"


HEAVY = ("duckdb", "pyarrow", "jinja2", "requests")
PARSE = """
import json, sys
import airflow.sdk  # Airflow's own imports (it brings jinja2) are the baseline
from airflow.dag_processing.dagbag import DagBag
from airflow.serialization.serialized_objects import DagSerialization
before = set(sys.modules)
bag = DagBag(dag_folder=sys.argv[1])  # as the dag-processor parses, then serializes
assert not bag.import_errors, bag.import_errors
for dag in bag.dags.values():
    DagSerialization.to_dict(dag)
print(json.dumps(sorted(set(sys.modules) - before)))
"""


def test_parsing_the_dag_files_imports_no_runtime_library():
    """DAG files import the shell and the specs; the core loads when a task runs."""
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-c", PARSE, str(REPO / "dags")], env=env, capture_output=True, text=True
    )
    assert done.returncode == 0, done.stderr
    imported = json.loads(done.stdout.splitlines()[-1])
    assert [m for m in imported if m.split(".")[0] in HEAVY] == []
    assert "cja_audiences.compute" not in imported and "cja_audiences.refresh" not in imported
    assert "cja_audiences.airflow.dag_factory" in imported  # the parse did run our DAG files


def test_both_dag_files_share_one_load_of_the_specs(monkeypatch):
    from cja_audiences.airflow import dag_factory

    loads = []
    real = dag_factory.load_specs
    monkeypatch.setattr(
        dag_factory, "load_specs", lambda folder: loads.append(folder) or real(folder)
    )
    dag_factory._SCHEDULABLE.clear()
    bag = load_dagbag()
    assert bag.import_errors == {}
    assert len(loads) == 1


def test_a_broken_spec_is_one_import_error_and_hides_nothing(tmp_path, monkeypatch):
    specs = tmp_path / "audiences"
    shutil.copytree(REPO / "include" / "audiences", specs)
    broken = specs / "broken_one.yaml"
    broken.write_text("id: broken_one\nname: Broken\nrefresh: {frequency: hourly}\nfilter: {}\n")
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(specs))

    bag = load_dagbag()

    assert len(bag.import_errors) == 1
    ((path, message),) = bag.import_errors.items()
    assert Path(path).name == "audience_spec_errors.py"
    assert str(broken) in message and "refresh.frequency" in message
    assert {f"cja_audience__{i}" for i in spec_ids()} <= set(bag.dag_ids)
    assert "cja_audience__broken_one" not in bag.dag_ids
