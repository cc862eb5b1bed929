"""Authentication and authorization of the dashboard through Airflow's auth manager."""

from __future__ import annotations

import pytest

from tests.dashboard.lakes import AUDIENCE, BLOCKED, RETIRED

pytestmark = pytest.mark.integration


def test_a_page_without_a_session_redirects_to_airflows_login(client):
    response = client.get("/", follow_redirects=False)
    assert response.status_code == 307
    assert response.headers["location"].startswith("/auth/login")
    assert "next=" in response.headers["location"]


@pytest.mark.parametrize(
    ("method", "path"),
    [
        ("GET", f"/audiences/{AUDIENCE}/runs"),
        ("GET", f"/audiences/{AUDIENCE}/sql"),
        ("GET", f"/audiences/{AUDIENCE}/runs/manual__dry/entered.csv"),
        ("POST", f"/audiences/{AUDIENCE}/runs/manual__dry/approve"),
        ("POST", f"/audiences/{AUDIENCE}/dry-run"),
        ("POST", f"/audiences/{AUDIENCE}/reconcile"),
        ("GET", f"/audiences/{AUDIENCE}/reconcile"),
    ],
)
def test_data_and_actions_without_a_session_are_401(client, method, path):
    response = client.request(method, path, headers={"accept": "application/json"})
    assert response.status_code == 401
    assert "sign in" in response.json()["detail"]


def test_a_forged_token_is_refused(client):
    client.cookies.set("_token", "not-a-jwt")
    assert client.get("/", headers={"accept": "application/json"}).status_code == 401


def test_a_bearer_token_works_like_the_session_cookie(client, auth_manager):
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser

    token = auth_manager.generate_jwt(SimpleAuthManagerUser(username="viewer", role="viewer"))
    response = client.get(
        f"/audiences/{AUDIENCE}/runs", headers={"authorization": f"Bearer {token}"}
    )
    assert response.status_code == 200 and response.json()


def test_the_overview_lists_only_audiences_whose_dag_the_user_may_read(client):
    everything = client.sign_in("viewer").get("/").text
    assert "Tiny VIP" in everything and "Cart abandoners (last 7 days)" in everything
    narrowed = client.sign_in("marketer").get("/").text
    assert "Cart abandoners (last 7 days)" in narrowed
    assert "Tiny VIP" not in narrowed and "old_promo" not in narrowed


@pytest.mark.parametrize(
    "path",
    [
        f"/audiences/{BLOCKED}",
        f"/audiences/{BLOCKED}/sql",
        f"/audiences/{BLOCKED}/runs",
        f"/audiences/{BLOCKED}/runs/scheduled__blocked",
        f"/audiences/{BLOCKED}/runs/scheduled__blocked/entered.csv",
        f"/audiences/{BLOCKED}/reconcile",
        f"/audiences/{RETIRED}",  # a broken spec's page is its DAG's too
        f"/overlap/{AUDIENCE}/recent_abandoners",
    ],
)
def test_pages_of_an_audience_the_user_may_not_read_are_403(client, path):
    response = client.sign_in("marketer").get(path)
    assert response.status_code == 403, response.text


def test_reading_is_not_enough_to_approve_override_or_start_runs(client, triggers):
    client.sign_in("viewer")
    assert client.post(f"/audiences/{AUDIENCE}/runs/manual__dry/approve").status_code == 403
    assert client.post(f"/audiences/{AUDIENCE}/dry-run").status_code == 403
    assert client.post(f"/audiences/{AUDIENCE}/reconcile").status_code == 403
    response = client.post(
        f"/audiences/{BLOCKED}/runs/scheduled__blocked/override", data={"checks": ["min_size"]}
    )
    assert response.status_code == 403
    assert triggers.calls == []
    page = client.get(f"/audiences/{AUDIENCE}/runs/manual__dry").text
    assert "Approve and publish" not in page and "cannot approve" in page


def test_a_user_who_may_trigger_the_dag_may_reconcile_it_and_only_it(client, triggers):
    client.sign_in("marketer")
    assert client.post(f"/audiences/{BLOCKED}/reconcile").status_code == 403
    response = client.post(f"/audiences/{AUDIENCE}/reconcile", follow_redirects=False)
    assert response.status_code == 303
    assert triggers.calls == [
        (
            "cja_audiences_reconcile",
            {"audience_id": AUDIENCE, "mode": "sample", "repair": False},
            "marketer",
        )
    ]


def test_a_user_who_may_trigger_the_dag_may_approve(client, triggers):
    response = client.sign_in("marketer").post(
        f"/audiences/{AUDIENCE}/runs/manual__dry/approve", follow_redirects=False
    )
    assert response.status_code == 303
    assert triggers.calls[0][0] == f"cja_audience__{AUDIENCE}"
    assert triggers.calls[0][2] == "marketer"


@pytest.mark.parametrize("action", ["dry-run", "reconcile", "runs/manual__dry/approve"])
def test_a_form_posted_from_another_site_is_refused(client, triggers, action):
    response = client.sign_in("admin").post(
        f"/audiences/{AUDIENCE}/{action}", headers={"origin": "https://evil.example"}
    )
    assert response.status_code == 403 and triggers.calls == []


def test_unmasked_identities_need_the_dags_edit_permission(client):
    path = f"/audiences/{AUDIENCE}/runs/{'scheduled__first'}/entered.csv?reveal=1"
    masked = client.sign_in("viewer").get(path).text
    plain = client.sign_in("admin").get(path).text
    assert "•••" in masked.splitlines()[1]
    assert "•••" not in plain.splitlines()[1]
