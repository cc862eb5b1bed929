"""Issue 8 item 6c: triggering an audience refresh through Airflow's REST API (v2, JWT).

The trigger form's validation must hold for API callers too: a value outside a param's
schema is refused with 400 before any run exists, and the message names the param.
"""

from __future__ import annotations

import httpx
import pytest

from tests.e2e.conftest import last_complete_day

pytestmark = pytest.mark.e2e


def test_token_is_required_and_issued_by_auth_token(live):
    url = live.airflow.url
    anonymous = httpx.get(f"{url}/api/v2/dags/{live.dag_id}", timeout=10)
    assert anonymous.status_code == 401

    wrong = httpx.post(
        f"{url}/auth/token", json={"username": "admin", "password": "not-it"}, timeout=10
    )
    assert wrong.status_code == 401

    issued = httpx.post(
        f"{url}/auth/token",
        json={"username": "admin", "password": live.airflow.password},
        timeout=10,
    )
    assert issued.status_code == 201
    token = issued.json()["access_token"]
    dag = httpx.get(
        f"{url}/api/v2/dags/{live.dag_id}", headers={"Authorization": f"Bearer {token}"}
    )
    assert dag.status_code == 200 and dag.json()["is_paused"] is False


def test_dry_run_through_the_rest_api_succeeds_and_commits_nothing(live):
    before = live.members()
    conf = {"dry_run": True, "force": True, "as_of": last_complete_day().isoformat()}

    response = live.airflow.api(
        "POST", f"/api/v2/dags/{live.dag_id}/dagRuns", json={"logical_date": None, "conf": conf}
    )

    assert response.status_code == 200  # 200, not 201, in 3.3.2
    created = response.json()
    assert created["conf"] == conf and created["triggered_by"] == "rest_api"
    run_id = created["dag_run_id"]
    run = live.airflow.wait_for_run(live.dag_id, run_id, timeout=150)
    tasks = live.airflow.task_states(live.dag_id, run_id)
    assert run["state"] == "success" and set(tasks.values()) == {"success"}, tasks
    record = live.run_record(run_id)
    assert record["request"]["dry_run"] is True and record["request"]["force"] is True
    assert record["status"] == "dry_run"
    assert record["compute"]["size"] > 0
    assert live.committed_run() != live.folder_name(run_id)
    assert live.members() == before


@pytest.mark.parametrize(
    ("param", "value"), [("lookback_days", 500), ("lookback_days", 0), ("as_of", "not-a-date")]
)
def test_an_invalid_param_is_refused_with_400_naming_it(live, param, value):
    runs_before = len(live.airflow.dag_runs(live.dag_id))

    response = live.airflow.api(
        "POST",
        f"/api/v2/dags/{live.dag_id}/dagRuns",
        json={"logical_date": None, "conf": {"dry_run": True, param: value}},
        check=False,
    )

    assert response.status_code == 400, response.text
    assert f"Invalid input for param {param}" in response.json()["detail"]
    assert len(live.airflow.dag_runs(live.dag_id)) == runs_before
