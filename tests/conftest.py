"""Test-wide set-up: an isolated Airflow home and lake, set before anything imports Airflow."""

from __future__ import annotations

import os
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
_AIRFLOW_HOME = Path(tempfile.mkdtemp(prefix="cja-airflow-"))

os.environ["AIRFLOW_HOME"] = str(_AIRFLOW_HOME)
os.environ["AIRFLOW__CORE__DAGS_FOLDER"] = str(REPO / "dags")
os.environ["AIRFLOW__CORE__PLUGINS_FOLDER"] = str(REPO / "plugins")
os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
os.environ["AIRFLOW__CORE__UNIT_TEST_MODE"] = "False"
os.environ.setdefault("CJA_AUDIENCES_HOME", str(_AIRFLOW_HOME / "cja_home"))

pytest_plugins = [
    "emulator.pytest_plugin",
    "tests.object_storage",
    "tests.redis_server",
    "tests.postgres_server",
]

# Fixtures that reach a real component: the emulator over HTTP, the Airflow metadata DB, the
# object stores, Redis and PostgreSQL.
INTEGRATION_FIXTURES = frozenset(
    {"emu", "emulator", "airflow_db", "s3_server", "gcs_server", "azurite"}
    | {"redis_url", "postgres_url"}
)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """A test that uses a real component is ``integration`` (unless it is ``e2e``), so the
    markers always match their definitions and `make test-fast` never starts the emulator."""
    for item in items:
        marks = {mark.name for mark in item.iter_markers()}
        if not marks & {"integration", "e2e"} and INTEGRATION_FIXTURES & set(item.fixturenames):
            item.add_marker(pytest.mark.integration)


@pytest.fixture(scope="session")
def airflow_db() -> Path:
    """A migrated Airflow metadata DB (SQLite in a temporary AIRFLOW_HOME)."""
    from airflow.utils import db

    db.initdb()
    return _AIRFLOW_HOME


@pytest.fixture(autouse=True)
def fresh_settings():
    """Settings are cached per process; a test that changes the environment gets fresh ones."""
    from cja_audiences.settings import get_settings

    get_settings.cache_clear()
    yield
    get_settings.cache_clear()


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    """An empty run folder of the audience ``high_value``."""
    path = tmp_path / "audiences" / "high_value" / "runs" / "r1"
    path.mkdir(parents=True)
    return path
