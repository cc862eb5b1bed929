"""The dashboard's pages and actions over real runs (signed in through the auth manager)."""

from __future__ import annotations

import csv
import io
import re

import pytest

from cja_audiences.lake.runs import read_run_record
from tests.dashboard.lakes import AUDIENCE, BLOCKED, RECENT, RETIRED, publish, refresh

pytestmark = pytest.mark.integration


def rows_of(html: str) -> dict[str, str]:
    """The overview's table rows by audience id."""
    return {
        m.group(1): m.group(0)
        for m in re.finditer(r'<tr data-tags[^>]*data-text="[^"]* (\w+)".*?</tr>', html, re.S)
    }


def test_the_overview_tells_every_status_apart(client):
    page = client.sign_in("viewer").get("/")
    assert page.status_code == 200
    rows = rows_of(page.text)
    assert set(rows) == {AUDIENCE, RECENT, BLOCKED, RETIRED}
    assert "s-dry_run" in rows[AUDIENCE] and "Dry run" in rows[AUDIENCE]
    assert "s-published" in rows[RECENT]
    assert "s-blocked" in rows[BLOCKED] and "v-block" in rows[BLOCKED]
    assert "Not refreshing: spec invalid — still live in AEP" in rows[RETIRED]
    assert "lookback_days" in rows[RETIRED]  # the spec error says what to fix


def test_the_overview_shows_size_trend_refresh_times_and_the_aep_link(client):
    rows = rows_of(client.sign_in("viewer").get("/").text)
    cart = rows[AUDIENCE]
    assert re.search(r">49<|>\d[\d,]*</td>", cart)
    assert "+" in cart and "Open ↗" in cart and "experience.adobe.com" in cart
    assert cart.count("<time datetime=") == 2  # last and next refresh, in the viewer's zone
    assert "a trend needs two publishes" in cart  # one publish: no trend line yet
    assert 'data-frequency="daily"' in cart and "win-back" in cart  # filterable by both


def test_the_audience_page_has_history_runs_spec_and_sql(client):
    page = client.sign_in("viewer").get(f"/audiences/{AUDIENCE}").text
    assert '<svg class="chart"' in page
    assert "manual__dry" in page and "scheduled__first" in page
    assert "Dry run" in page and "Published" in page and ">scheduled<" in page
    assert "id: cart_abandoners" in page  # the YAML as written
    assert "$p_add_to_cart" in page and "commerce.productListAdds" in page  # bound values
    assert "the committed run's window" in page
    assert "Start dry run" not in page  # the viewer may not trigger


def test_a_blocked_run_shows_its_stage_and_guardrail_text(client):
    page = client.sign_in("viewer").get(f"/audiences/{BLOCKED}").text
    assert "<b>guardrails:</b>" in page
    assert "below the privacy floor of 100,000" in page
    assert "Check(" not in page and "{&#39;" not in page  # text, not Python reprs


def test_preview_computes_without_writing_a_run(client, dashboard_lake):
    runs = dashboard_lake.lake.audience_dir(AUDIENCE) / "runs"
    before = sorted(p.name for p in runs.iterdir())
    page = client.sign_in("viewer").get(
        f"/audiences/{AUDIENCE}/preview", params={"lookback_days": 3, "p_add_to_cart": "x"}
    )
    assert page.status_code == 200
    assert 'id="preview-result"' in page.text and "events scanned" in page.text
    assert sorted(p.name for p in runs.iterdir()) == before


def test_preview_with_a_bad_window_says_why(client):
    page = client.sign_in("viewer").get(
        f"/audiences/{AUDIENCE}/preview", params={"lookback_days": 500}
    )
    assert page.status_code == 200 and "banner bad" in page.text


def test_runs_json_names_type_status_and_counts(client):
    runs = client.sign_in("viewer").get(f"/audiences/{BLOCKED}/runs").json()
    (blocked,) = runs
    assert blocked["status"] == "blocked" and blocked["kind"] == "scheduled"
    assert blocked["failed_stage"] == "guardrails" and blocked["verdict"] == "block"
    assert any("privacy floor" in m for m in blocked["messages"])


def test_review_lists_entered_and_exited_members_masked(client, dashboard_lake):
    record = read_run_record(dashboard_lake.lake.run_dir(AUDIENCE, "manual__dry"))
    page = client.sign_in("viewer").get(f"/audiences/{AUDIENCE}/runs/manual__dry?side=exited")
    assert page.status_code == 200
    assert f"−{record['diff']['exited']:,}" in page.text
    assert "identities masked" in page.text and "•••" in page.text
    assert "Review dry run" in page.text


def test_review_search_finds_a_member_by_id(client, dashboard_lake):
    import pyarrow.parquet as pq

    run_dir = dashboard_lake.lake.run_dir(AUDIENCE, "scheduled__first")
    person = pq.read_table(run_dir / "entered.parquet")["person_id"][0].as_py()
    page = client.sign_in("admin").get(
        f"/audiences/{AUDIENCE}/runs/scheduled__first", params={"q": person, "reveal": 1}
    )
    assert "1 matching member" in page.text and person in page.text


def test_csv_download_holds_the_full_list(client, dashboard_lake):
    record = read_run_record(dashboard_lake.lake.run_dir(AUDIENCE, "scheduled__first"))
    response = client.sign_in("viewer").get(
        f"/audiences/{AUDIENCE}/runs/scheduled__first/entered.csv"
    )
    assert response.headers["content-type"].startswith("text/csv")
    assert "masked" in response.headers["content-disposition"]
    rows = list(csv.reader(io.StringIO(response.text)))
    assert rows[0][:3] == ["person_id", "namespace", "identity"] and "reason" in rows[0]
    assert len(rows) - 1 == record["diff"]["entered"]


def test_approve_publishes_exactly_the_reviewed_run_and_records_who(
    client, triggers, dashboard_lake
):
    response = client.sign_in("admin").post(
        f"/audiences/{AUDIENCE}/runs/manual__dry/approve", follow_redirects=False
    )
    assert response.status_code == 303 and "Approved+by+admin" in response.headers["location"]
    ((dag_id, conf, user),) = triggers.calls
    assert conf["approve_run"] == "manual__dry" and user == "admin"
    approval = read_run_record(dashboard_lake.lake.run_dir(AUDIENCE, "manual__dry"))["approval"]
    assert approval["by"] == "admin" and approval["dag_run_id"] == "manual__web1"
    assert "Approved" in client.get(f"/audiences/{AUDIENCE}/runs/manual__dry").text


def test_approve_is_refused_when_the_snapshot_moved(client, triggers, dashboard_lake, emu):
    publish(refresh(dashboard_lake.settings, AUDIENCE, "scheduled__second"), emu)
    response = client.sign_in("admin").post(
        f"/audiences/{AUDIENCE}/runs/manual__dry/approve", follow_redirects=True
    )
    assert "no longer apply" in response.text and triggers.calls == []
    page = client.get(f"/audiences/{AUDIENCE}/runs/manual__dry").text
    assert "Approve and publish" not in page and "start a new dry run" in page


def test_only_dry_runs_are_approved(client, triggers):
    response = client.sign_in("admin").post(f"/audiences/{AUDIENCE}/runs/scheduled__first/approve")
    assert response.status_code == 409 and triggers.calls == []


def test_a_blocked_run_offers_a_one_run_override_the_spec_allows(client, triggers, dashboard_lake):
    page = client.sign_in("admin").get(f"/audiences/{BLOCKED}/runs/scheduled__blocked").text
    assert "Override once and publish" in page and 'value="min_size"' in page
    refused = client.post(
        f"/audiences/{BLOCKED}/runs/scheduled__blocked/override", data={"checks": ["size"]}
    )
    assert refused.status_code == 422 and triggers.calls == []
    done = client.post(
        f"/audiences/{BLOCKED}/runs/scheduled__blocked/override",
        data={"checks": ["min_size"]},
        follow_redirects=False,
    )
    assert done.status_code == 303
    ((_, conf, user),) = triggers.calls
    assert conf == {
        "approve_run": "scheduled__blocked",
        "override": ["min_size"],
        "as_of": conf["as_of"],
    }
    record = read_run_record(dashboard_lake.lake.run_dir(BLOCKED, "scheduled__blocked"))
    assert record["override"]["by"] == "admin" and record["override"]["checks"] == ["min_size"]


def test_start_dry_run_triggers_a_dry_run(client, triggers):
    response = client.sign_in("marketer").post(
        f"/audiences/{AUDIENCE}/dry-run", follow_redirects=False
    )
    assert response.status_code == 303
    assert triggers.calls == [
        (f"cja_audience__{AUDIENCE}", {"dry_run": True, "force": True}, "marketer")
    ]


def test_dead_letters_download_is_404_when_there_are_none(client):
    response = client.sign_in("viewer").get(
        f"/audiences/{AUDIENCE}/runs/scheduled__first/dead_letters.csv"
    )
    assert response.status_code == 404


def test_unknown_audience_and_run_are_404(client):
    client.sign_in("admin")
    assert client.get("/audiences/nope").status_code == 404
    assert client.get(f"/audiences/{AUDIENCE}/runs/nope").status_code == 404


def test_overlap_matrix_and_pair(client):
    page = client.sign_in("viewer").get("/overlap").text
    assert f"/overlap/{AUDIENCE}/{RECENT}" in page
    assert BLOCKED not in page  # never committed
    pair = client.get(f"/overlap/{RECENT}/{AUDIENCE}").text
    assert "in both" in pair and "only in" in pair and "•••" in pair


def test_static_assets_ship_with_the_package(client):
    assert "Intl.DateTimeFormat" in client.get("/static/dashboard.js").text
    css = client.get("/static/dashboard.css").text
    assert "@media" in css and "http" not in css  # nothing loaded from elsewhere


def test_review_explains_why_each_member_enters(client):
    """Issue 19's reason and branch codes in entered.parquet, with run.json's legend."""
    page = client.sign_in("viewer").get(f"/audiences/{AUDIENCE}/runs/scheduled__first").text
    assert "<th>Why</th>" in page
    assert "first publish" in page  # the reason, in words
    assert "Every entering member matches all of" in page  # the all-of filter's branches, once


def test_starting_the_app_warms_the_caches(auth_manager, dashboard_lake, monkeypatch):
    import time

    from fastapi.testclient import TestClient

    from cja_audiences.airflow.web import app as web_app
    from cja_audiences.dashboard import overview as overview_module

    for name, value in dashboard_lake.env().items():
        monkeypatch.setenv(name, value)
    monkeypatch.setattr(overview_module, "_spec_state", [])
    with TestClient(web_app.create_app(trigger=lambda *a: "unused")):
        deadline = time.monotonic() + 30
        while not overview_module._spec_state and time.monotonic() < deadline:
            time.sleep(0.1)
    assert overview_module._spec_state  # specs parsed before anyone asked
