"""Issue 17: a marketing-ops person reviews and approves a publish in the audiences dashboard.

Real Airflow (standalone), real browser (Debian's Chromium through Playwright): sign in on
Airflow's login page, open the dashboard, start a dry run, review who enters and exits,
approve, and see the audience published with exactly the reviewed diff; reconcile it with
AEP from its page (a worker reads back, the page follows). Then a blocked run (its
violations and the one-run override) and a spec that breaks after publishing ("still live in
AEP", on the overview and on its own page). Screenshots at 1440 and 390 px go to test-artifacts/e2e/.

Runs after the other end-to-end modules (file name order): it commits snapshots, which the
event-driven test expects not to exist yet.
"""

from __future__ import annotations

import re
import time
from pathlib import Path

import pytest
import yaml

from cja_audiences.airflow.dag_factory import RECONCILE_DAG
from tests.e2e.conftest import screenshot, sign_in

pytestmark = pytest.mark.e2e

RUN_TIMEOUT_S = 150
WIDTHS = (1440, 390)


def shots(page, name: str) -> None:
    """The page as it is now, at a desktop and a phone width."""
    for width in WIDTHS:
        page.set_viewport_size({"width": width, "height": 900})
        screenshot(page, f"dashboard_{name}_{width}")
    page.set_viewport_size({"width": WIDTHS[0], "height": 900})


def started_run(page) -> str:
    """The DAG run id the dashboard's notice names after an action."""
    notice = page.locator(".banner.ok").inner_text()
    match = re.search(r"(manual__\S+)", notice)
    assert match, notice
    return match.group(1).rstrip(":")


def wait_done(live, run_id: str) -> dict:
    return live.airflow.wait_for_run(live.dag_id, run_id, timeout=RUN_TIMEOUT_S)


def settle(live, timeout: float = 240.0) -> None:
    """Wait out the scheduled run unpausing created (its tasks keep SQLite busy), so the
    runs this test starts are the only ones and the API server answers promptly."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        runs = live.airflow.dag_runs(live.dag_id)
        if not [r for r in runs if r["state"] in ("queued", "running")]:
            return
        time.sleep(2.0)
    raise AssertionError(f"{live.dag_id} still has active runs after {timeout:.0f} s")


def spec_file(live) -> Path:
    return Path(live.airflow.env["CJA_AUDIENCES_SPECS"]) / f"{live.audience_id}.yaml"


def test_without_a_session_the_dashboard_sends_people_to_airflows_login(live, page):
    settle(live)
    page.goto(f"{live.airflow.url}/cja-audiences/")
    page.wait_for_url("**/auth/login**")
    assert "cja-audiences" in page.url  # and back here afterwards


def test_dry_run_review_approve_publish_then_blocked_and_invalid(live, page):
    from playwright.sync_api import expect

    base = f"{live.airflow.url}/cja-audiences"
    settle(live)
    sign_in(page, live, f"{base}/")
    page.set_viewport_size({"width": 1440, "height": 900})
    expect(page.get_by_role("heading", name="Audiences")).to_be_visible()
    shots(page, "overview_before")

    # overview -> audience -> dry run
    page.locator("a.name").first.click()
    expect(page.get_by_role("heading", level=2, name="Size over time")).to_be_visible()
    page.get_by_role("button", name="Start dry run").click()
    dry_id = started_run(page)
    assert wait_done(live, dry_id)["state"] == "success"
    folder = live.folder_name(dry_id)
    assert live.run_record(dry_id)["status"] == "dry_run"

    # review: who would enter, masked, then approve
    page.reload()
    page.locator(f"a[href$='/runs/{folder}']").first.click()
    expect(page.get_by_role("heading", name=re.compile("Review dry run"))).to_be_visible()
    expect(page.get_by_text("identities masked")).to_be_visible()
    entered = live.run_record(dry_id)["diff"]["entered"]
    expect(page.locator(".tabs")).to_contain_text(f"+{entered:,}")
    shots(page, "review")
    page.get_by_role("button", name="Approve and publish").click()
    approval_id = started_run(page)
    assert wait_done(live, approval_id)["state"] == "success"

    # published: exactly the reviewed members, current, shown as Published
    record = live.run_record(approval_id)
    assert record["diff"]["reviewed_run"] == folder and "commit" in record
    assert live.committed_run() == live.folder_name(approval_id)
    assert live.run_record(dry_id)["approval"]["by"] == "admin"
    page.goto(f"{base}/audiences/{live.audience_id}")
    current_row = page.locator("#runs tbody tr", has=page.locator(".chip.current"))
    expect(current_row).to_contain_text("Published")
    expect(current_row).to_contain_text("approval")
    shots(page, "audience_published")

    # reconcile: a worker reads the published members back from AEP; the page follows it
    live.unpause(RECONCILE_DAG)
    page.locator("#reconcile select[name=mode]").select_option("full")
    page.get_by_role("button", name="Reconcile", exact=True).click()
    reconcile_id = started_run(page)
    expect(page.locator("#reconcile-progress, #reconcile-result").first).to_be_visible()
    shots(page, "reconcile_started")
    done = live.airflow.wait_for_run(RECONCILE_DAG, reconcile_id, timeout=RUN_TIMEOUT_S)
    assert done["state"] == "success"
    page.reload()
    result = page.locator("#reconcile-result")
    expect(result).to_contain_text("no drift")
    expect(result).to_contain_text(f"{len(live.members()):,}")  # every member checked
    shots(page, "reconcile_done")

    # blocked: the spec now demands more members than there are, and allows an override
    path = spec_file(live)
    original = path.read_text()
    try:
        spec = yaml.safe_load(original)
        spec["guardrails"] = {"min_size": 10_000_000, "overridable": ["min_size"]}
        path.write_text(yaml.safe_dump(spec, sort_keys=False))
        page.get_by_role("button", name="Start dry run").click()
        blocked_id = started_run(page)
        assert wait_done(live, blocked_id)["state"] == "failed"
        page.goto(f"{base}/audiences/{live.audience_id}/runs/{live.folder_name(blocked_id)}")
        expect(page.get_by_role("heading", name=re.compile("Blocked run"))).to_be_visible()
        expect(page.locator(".checks li.v-block")).to_contain_text("privacy floor of 10,000,000")
        expect(page.get_by_role("button", name="Override once and publish")).to_be_visible()
        shots(page, "blocked")

        # invalid: the spec breaks after publishing; the audience is still live in AEP
        path.write_text("id: broken\nname: [unclosed\n")
        page.goto(f"{base}/")
        row = page.locator("tr.invalid")
        expect(row).to_contain_text("Not refreshing: spec invalid — still live in AEP")
        shots(page, "overview_invalid_spec")
        row.locator("a.name").click()
        error = page.locator("#spec-error")
        expect(error).to_contain_text("Not refreshing: spec invalid — still live in AEP")
        expect(error).to_contain_text(f"{live.audience_id}.yaml")
        expect(page.get_by_role("button", name="Start dry run")).to_be_disabled()
        expect(page.locator("#reconcile-unavailable")).to_contain_text("the spec does not load")
        expect(page.locator("#runs")).to_contain_text("Published")
        shots(page, "audience_invalid_spec")
    finally:
        path.write_text(original)
