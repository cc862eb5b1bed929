"""Every DAG file imports cleanly, every DAG is well-formed, and a broken spec stays contained."""

from __future__ import annotations

import shutil
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
    expected = {f"cja_audience__{i}" for i in spec_ids()} | {"cja_extract", "cja_audiences_all"}
    assert set(dagbag.dag_ids) == expected


def test_every_dag_has_owner_tags_and_retries(dagbag):
    for dag_id, dag in dagbag.dags.items():
        assert dag.tags, f"{dag_id} has no tags"
        for task in dag.tasks:
            assert task.owner and task.owner != "airflow", f"{dag_id}.{task.task_id} has no owner"
            assert task.retries is not None, f"{dag_id}.{task.task_id} has no retries setting"
        assert any(t.retries > 0 for t in dag.tasks), f"{dag_id} never retries"


def test_parsing_dags_stays_cheap(dagbag):
    """Parse time per file as Airflow measures it: no heavy work at import time (< 2 s total)."""
    total = sum(stat.duration.total_seconds() for stat in dagbag.dagbag_stats)
    assert total < 2.0, [(s.file, s.duration) for s in dagbag.dagbag_stats]


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
