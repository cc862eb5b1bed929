"""A signed-in client of the dashboard app, with Airflow's auth manager and real runs."""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

import pytest
from fastapi.testclient import TestClient

from tests.dashboard.lakes import DashboardLake, build_lake, copy_lake

# user -> (SimpleAuthManager role, the audience DAGs they may use; None: all)
USERS = {
    "admin": ("admin", None),
    "viewer": ("viewer", None),  # reads every DAG, may trigger none
    "marketer": ("user", {"cja_audience__cart_abandoners"}),  # one audience, may trigger it
}


def per_dag_auth_manager():
    """Airflow's SimpleAuthManager, narrowed per DAG as FAB or Keycloak roles would be."""
    from airflow.api_fastapi.auth.managers.simple.simple_auth_manager import SimpleAuthManager

    class PerDagAuthManager(SimpleAuthManager):
        def is_authorized_dag(self, *, method, user, access_entity=None, details=None):
            allowed = USERS[user.username][1]
            if allowed is not None and (details is None or details.id not in allowed):
                return False
            return super().is_authorized_dag(
                method=method, user=user, access_entity=access_entity, details=details
            )

    return PerDagAuthManager()


@pytest.fixture(scope="session")
def auth_manager(airflow_db):
    from airflow.api_fastapi import app as airflow_app

    manager = per_dag_auth_manager()
    previous = airflow_app._AuthManagerState.instance
    airflow_app._AuthManagerState.instance = manager
    yield manager
    airflow_app._AuthManagerState.instance = previous


@pytest.fixture(scope="module")
def shared_lake(emulator, tmp_path_factory) -> DashboardLake:
    return build_lake(tmp_path_factory.mktemp("dashboard"), emulator)


@pytest.fixture
def dashboard_lake(shared_lake, tmp_path) -> DashboardLake:
    return copy_lake(shared_lake, tmp_path / "lake")


@dataclass
class Triggers:
    """Stands in for Airflow's trigger_dag (the browser test drives the real one)."""

    calls: list[tuple[str, dict[str, Any], str]] = field(default_factory=list)

    def __call__(self, dag_id: str, conf: dict[str, Any], user: str) -> str:
        self.calls.append((dag_id, conf, user))
        return f"manual__web{len(self.calls)}"


@pytest.fixture
def triggers() -> Triggers:
    return Triggers()


class Client(TestClient):
    def sign_in(self, username: str) -> Client:
        from airflow.api_fastapi.app import get_auth_manager
        from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

        user = SimpleAuthManagerUser(username=username, role=USERS[username][0])
        self.cookies.set("_token", get_auth_manager().generate_jwt(user))
        return self


@pytest.fixture
def client(auth_manager, dashboard_lake, triggers, monkeypatch) -> Client:
    from cja_audiences.airflow.web import create_app

    for name, value in dashboard_lake.env().items():
        monkeypatch.setenv(name, value)
    return Client(create_app(trigger=triggers), headers={"accept": "text/html"})
