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
    assert client.get("/audiences/Not-An-Id").status_code == 404
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


def test_reconcile_starts_on_a_worker_and_the_page_follows_it(client, triggers, dashboard_lake):
    client.sign_in("admin")
    started = client.post(
        f"/audiences/{AUDIENCE}/reconcile",
        data={"mode": "full", "repair": "true"},
        follow_redirects=False,
    )
    assert started.status_code == 303 and "started+by+admin" in started.headers["location"]
    assert triggers.calls == [
        (
            "cja_audiences_reconcile",
            {"audience_id": AUDIENCE, "mode": "full", "repair": True},
            "admin",
        )
    ]
    page = client.get(f"/audiences/{AUDIENCE}").text
    assert 'id="reconcile-progress"' in page and "waiting for a worker" in page
    assert "Full reconcile and repair requested by admin" in page
    assert "/dags/cja_audiences_reconcile/runs/manual__web1" in page
    assert 'http-equiv="refresh"' in page  # follows the worker without a click
    again = client.post(f"/audiences/{AUDIENCE}/reconcile", follow_redirects=True)
    assert "already queued" in again.text and len(triggers.calls) == 1
    state = client.get(f"/audiences/{AUDIENCE}/reconcile").json()
    assert state["pending"]["state"] == "queued" and state["pending"]["by"] == "admin"


def test_the_reconcile_result_and_its_drift_show_on_the_page(client, dashboard_lake, emu):
    """The worker's part (what the DAG task runs) against the emulator, reset: AEP holds
    none of the committed members, so every one is missing."""
    from cja_audiences.reconcile import reconcile_on_request
    from cja_audiences.specs.model import spec_by_id

    spec = spec_by_id(dashboard_lake.settings.audiences_dir, AUDIENCE)
    audience_dir = dashboard_lake.lake.audience_dir(AUDIENCE)
    result = reconcile_on_request(
        emu.adobe_config(), spec, audience_dir, dag_run_id="manual__r1", requested_by="ana"
    )
    members = result["checked"]["members"]
    assert members > 0 and result["drift"]["missing"] == members
    page = client.sign_in("viewer").get(f"/audiences/{AUDIENCE}").text
    assert 'id="reconcile-result"' in page and 'id="reconcile-progress"' not in page
    assert '<a href="#reconcile">Drift at the last reconcile</a>' in page  # drifted: flagged
    assert re.search(rf"missing in AEP</td><td[^>]*>{members:,}<", page)
    assert re.search(r"<code>Email:\w{3}\.\.\.\(64\)</code>", page)  # examples, masked
    assert client.get(f"/audiences/{AUDIENCE}/reconcile").json()["request"]["state"] == "done"


def test_a_failed_reconcile_says_why_and_can_be_started_again(client, triggers, dashboard_lake):
    from cja_audiences.reconcile import note_request

    audience_dir = dashboard_lake.lake.audience_dir(AUDIENCE)
    note_request(audience_dir, "manual__r0", "failed", by="ana", error="AEP answered 503")
    page = client.sign_in("admin").get(f"/audiences/{AUDIENCE}").text
    assert 'id="reconcile-failed"' in page and "AEP answered 503" in page
    client.post(f"/audiences/{AUDIENCE}/reconcile", data={"mode": "sample"})
    assert len(triggers.calls) == 1


def test_reconcile_is_refused_with_the_reason_when_nothing_is_committed(client, triggers):
    client.sign_in("admin")
    page = client.get(f"/audiences/{BLOCKED}").text
    assert 'id="reconcile-unavailable"' in page and "no committed run" in page
    response = client.post(f"/audiences/{BLOCKED}/reconcile", follow_redirects=True)
    assert "Cannot reconcile" in response.text and triggers.calls == []
    bad = client.post(f"/audiences/{AUDIENCE}/reconcile", data={"mode": "everything"})
    assert bad.status_code == 422 and triggers.calls == []


def test_a_published_audience_whose_spec_broke_keeps_its_page(client, dashboard_lake):
    overview = client.sign_in("admin").get("/").text
    assert f'href="/audiences/{RETIRED}"' in overview or f'/audiences/{RETIRED}"' in overview
    page = client.get(f"/audiences/{RETIRED}")
    assert page.status_code == 200
    text = page.text
    assert "Not refreshing: spec invalid — still live in AEP." in text
    assert f"{RETIRED}.yaml" in text and "lookback_days" in text  # the file, field and fix
    assert "python -m cja_audiences validate" in text
    size = read_run_record(dashboard_lake.lake.run_dir(RETIRED, "scheduled__promo"))["diff"]["size"]
    assert f"<b>{size:,}</b><span>members in AEP</span>" in text
    assert "scheduled__promo" in text and '<svg class="chart"' in text  # history and runs
    assert "experience.adobe.com" in text  # the AEP link
    assert '<button type="button" disabled' in text and "Start dry run" in text
    assert 'action="/audiences/old_promo/dry-run"' not in text  # no live action form
    assert 'id="reconcile-unavailable"' in text and "fix old_promo.yaml first" in text
    run = client.get(f"/audiences/{RETIRED}/runs/scheduled__promo")
    assert run.status_code == 200 and "scheduled__promo" in run.text


def test_actions_on_a_broken_spec_are_refused(client, triggers):
    client.sign_in("admin")
    assert client.post(f"/audiences/{RETIRED}/dry-run").status_code == 404
    assert client.post(f"/audiences/{RETIRED}/reconcile").status_code == 404
    assert triggers.calls == []
