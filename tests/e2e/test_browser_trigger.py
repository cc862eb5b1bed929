"""Issue 8 item 6d: a person triggers a dry run from the Airflow 3 UI in a real browser.

Headless Chromium from Debian (/usr/bin/chromium) driven by Playwright: sign in on the
simple auth manager's page, open the audience DAG, open the Trigger form, switch dry run
(and force) on in the "Run mode" section, submit, and wait on the run page until the run
shows Success. A screenshot of that page is kept under test-artifacts/e2e/.
"""

from __future__ import annotations

from pathlib import Path

import pytest

from tests.e2e.conftest import artifact

pytestmark = pytest.mark.e2e

CHROMIUM = Path("/usr/bin/chromium")
CHROMIUM_ARGS = [
    "--headless",
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]
RUN_TIMEOUT_MS = 150_000


@pytest.fixture(scope="module")
def browser():
    if not CHROMIUM.exists():
        pytest.skip(f"{CHROMIUM} is missing: apt-get install -y chromium")
    from playwright.sync_api import sync_playwright  # requirements-dev.txt

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=str(CHROMIUM), args=CHROMIUM_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser):
    context = browser.new_context(viewport={"width": 1400, "height": 1000})
    page = context.new_page()
    page.set_default_timeout(30_000)
    yield page
    context.close()


def switch_on(dialog, param: str) -> None:
    """Chakra switches hide their checkbox; a click on the visible control toggles it."""
    box = dialog.locator(f"input[name=element_{param}]")
    if not box.is_checked():
        dialog.locator(f"label[id='switch:element_{param}']").click()
    assert box.is_checked(), f"the {param} switch did not turn on"


def screenshot(page, name: str) -> Path:
    """Kept as a CI artifact (test-artifacts/ is gitignored); the path is printed."""
    path = artifact(f"{name}.png")
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def test_dry_run_triggered_from_the_ui_form_succeeds(live, page):
    from playwright.sync_api import expect

    url = live.airflow.url
    title = live.airflow.api("GET", f"/api/v2/dags/{live.dag_id}").json()["dag_display_name"]
    page.goto(f"{url}/dags/{live.dag_id}")
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(live.airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(f"**/dags/{live.dag_id}")

    page.get_by_role("button", name="Trigger Dag").click()
    dialog = page.get_by_role("dialog")
    expect(dialog.get_by_role("heading")).to_contain_text(title)  # the UI shows display names
    # The form pre-fills the logical date with "now"; the e2e audience's schedule starts
    # tomorrow (see conftest.copy_spec), and Airflow creates no task instances for a run
    # dated before the DAG's start_date. An empty logical date is a run "as of now".
    dialog.get_by_test_id("datetime-input").click()
    page.get_by_role("button", name="Clear start date").click()
    dialog.get_by_role("heading").click()  # closes the date picker, keeps the dialog
    dialog.get_by_role("button", name="Run mode").click()
    switch_on(dialog, "dry_run")
    switch_on(dialog, "force")
    with page.expect_response(
        lambda r: r.request.method == "POST" and r.url.endswith(f"/dags/{live.dag_id}/dagRuns")
    ) as posted:
        dialog.get_by_role("button", name="Trigger", exact=True).click()
    assert posted.value.ok, posted.value.text()
    created = posted.value.json()
    assert created["conf"]["dry_run"] is True and created["conf"]["force"] is True
    assert created["logical_date"] is None
    run_id = created["dag_run_id"]

    # The UI opens the new run's page and refreshes its state badge while the run is active.
    page.wait_for_url(f"**/dags/{live.dag_id}/runs/**")
    expect(page.get_by_role("heading", name=run_id)).to_be_visible()
    run_state = page.get_by_test_id("state-badge").first
    try:
        expect(run_state).to_have_text("Success", timeout=RUN_TIMEOUT_MS)
        page.reload()  # the task table stops refreshing when the run ends: show final states
        expect(run_state).to_have_text("Success", timeout=RUN_TIMEOUT_MS)  # slow on a busy box
    finally:
        shot = screenshot(page, "browser_trigger")
    assert shot.stat().st_size > 0

    run = live.airflow.wait_for_run(live.dag_id, run_id, timeout=10)
    tasks = live.airflow.task_states(live.dag_id, run_id)
    assert run["state"] == "success" and run["triggered_by"] == "ui"
    assert set(tasks.values()) == {"success"}, tasks
    assert live.run_record(run_id)["status"] == "dry_run"
