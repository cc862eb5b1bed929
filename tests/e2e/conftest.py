"""One real `airflow standalone` (and the emulator) shared by the end-to-end tests.

Starting Airflow costs 15-30 s on two cores, so every test that needs a live Airflow uses
the session fixture ``live`` and never restarts it (except the triggerer, on purpose).
Airflow sees a temporary lake holding a little synthetic data, a specs folder holding ONE
example audience (so the dag-processor and every run stay fast) and connections that point
at the emulator. DAGs start paused; a test unpauses what it drives (see ``Live.unpause``).
"""

from __future__ import annotations

import json
import shutil
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
import yaml

from dev.standalone import StandaloneAirflow
from emulator.process import EmulatorServer, start_emulator

REPO = Path(__file__).resolve().parents[2]
ARTIFACTS = REPO / "test-artifacts" / "e2e"
PREFERRED_AUDIENCE = "cart_abandoners"
PUBLISH_POOL = {"aep_publish": 4}
LANDING_POLL_S = 2  # the landing watcher's poll interval (production default: 30 s)
_timings: dict[str, float] = {}
_artifacts: list[Path] = []


def last_complete_day() -> date:
    """The default ``as_of`` of an audience run: yesterday in UTC."""
    return datetime.now(UTC).date() - timedelta(days=1)


def pick_spec(folder: Path) -> Path:
    """The example audience the tests run (cart_abandoners if it exists)."""
    preferred = folder / f"{PREFERRED_AUDIENCE}.yaml"
    assert preferred.exists(), f"the e2e tests drive {preferred}"
    return preferred


def copy_spec(source: Path, target_dir: Path) -> str:
    """Copy one spec with its schedule starting tomorrow; returns the audience id.

    With a start in the past, unpausing a daily DAG (catchup=False) creates a scheduled
    run for the latest tick at once, which would race the runs the tests start. A future
    start keeps the time schedule quiet; asset-triggered and manual runs are unaffected.
    """
    spec = yaml.safe_load(source.read_text())
    start = datetime.now(UTC).replace(microsecond=0) + timedelta(days=1)
    spec.setdefault("refresh", {})["start"] = start.isoformat()
    target_dir.mkdir(parents=True, exist_ok=True)
    (target_dir / source.name).write_text(yaml.safe_dump(spec, sort_keys=False))
    return spec["id"]


@dataclass
class Live:
    """The running Airflow and the lake, emulator and audience the tests drive."""

    airflow: StandaloneAirflow
    emulator: Any
    lake: Any
    audience_id: str

    @property
    def dag_id(self) -> str:
        return f"cja_audience__{self.audience_id}"

    def unpause(self, dag_id: str) -> None:
        """Unpause one DAG. All start paused: a past schedule tick would start a run at once
        (catchup=False still runs the latest tick), racing the runs a test starts itself."""
        self.airflow.api("PATCH", f"/api/v2/dags/{dag_id}", json={"is_paused": False})

    def run_record(self, run_id: str) -> dict[str, Any]:
        from cja_audiences.lake.runs import read_run_record

        return read_run_record(self.lake.run_dir(self.audience_id, run_id))

    def committed_run(self) -> str | None:
        """The run folder name current.json points at (None before any commit)."""
        from cja_audiences.lake.layout import read_json

        current = read_json(self.lake.audience_dir(self.audience_id) / "current.json", None)
        return current["run_id"] if current else None

    def folder_name(self, run_id: str) -> str:
        """Run ids hold ':' and '+'; the lake names run folders (and current.json) safely."""
        return self.lake.run_dir(self.audience_id, run_id).name

    def members(self) -> set[tuple[str, str]]:
        """What the emulator holds for the audience (realized memberships)."""
        return {
            (m["namespace"], m["identity"])
            for m in self.emulator.membership(self.audience_id)
            if m["status"] == "realized"
        }


@pytest.fixture(scope="session")
def live_emulator(tmp_path_factory) -> Iterator[EmulatorServer]:
    """The e2e tests' own emulator: tests between them reset the session's (``emu``), which
    would drop what the live audience published and show as drift in a later reconcile."""
    with start_emulator(tmp_path_factory.mktemp("e2e-emulator")) as server:
        yield server


@pytest.fixture(scope="session")
def live(live_emulator, tmp_path_factory) -> Iterator[Live]:
    """Airflow standalone with this repo's DAGs and plugins, one audience, the emulator."""
    from cja_audiences.extract.synthetic import generate_synthetic
    from cja_audiences.lake.layout import Lake

    emulator = live_emulator
    root = tmp_path_factory.mktemp("e2e")
    lake = Lake(root / "home")
    began = time.monotonic()
    generate_synthetic(lake, persons=2000, days=8, end=last_complete_day(), seed=8)
    record_timing("synthetic lake", time.monotonic() - began)
    lake.landing.mkdir(parents=True, exist_ok=True)
    audience_id = copy_spec(pick_spec(REPO / "include" / "audiences"), root / "specs")
    emulator.reset()
    dag_ids = [
        f"cja_audience__{audience_id}",
        "cja_audiences_all",
        "cja_audiences_reconcile",
        "cja_extract",
    ]
    airflow = StandaloneAirflow(
        root / "airflow",
        env={
            "CJA_AUDIENCES_HOME": str(lake.root),
            "CJA_AUDIENCES_SPECS": str(root / "specs"),
            "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emulator.aep_conn()),
            "AIRFLOW_CONN_CJA_DEFAULT": json.dumps(emulator.cja_conn()),
            "CJA_AUDIENCES_LANDING_POLL_S": str(LANDING_POLL_S),
        },
        dag_ids=dag_ids,
        pools=PUBLISH_POOL,
        unpause=False,  # see Live.unpause
        stop_grace=10.0,  # a throwaway SQLite DB: no need to wait long for a clean exit
    )
    try:
        with airflow:
            record_timing("airflow standalone: healthy", airflow.healthy_s or 0.0)
            record_timing("airflow standalone: healthy and DAGs parsed", airflow.startup_s or 0.0)
            live = Live(airflow=airflow, emulator=emulator, lake=lake, audience_id=audience_id)
            live.unpause(live.dag_id)
            yield live
            began = time.monotonic()
        record_timing("airflow standalone: stop", time.monotonic() - began)
    finally:
        keep_log(airflow)


def record_timing(name: str, seconds: float) -> None:
    """Shown after the run with the set-up timings."""
    _timings[name] = seconds


def artifact(name: str) -> Path:
    """A path under test-artifacts/e2e/ (gitignored, kept by CI), listed after the run."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    path = ARTIFACTS / name
    _artifacts.append(path)
    return path


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


@pytest.fixture(scope="module")
def browser():
    """Debian's Chromium (/usr/bin/chromium) driven by Playwright, headless."""
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


def sign_in(page, live: Live, url: str) -> None:
    """Open ``url``; Airflow sends us to its login page and back once signed in."""
    page.goto(url)
    page.wait_for_url("**/auth/login**")
    page.get_by_label("Username").fill("admin")
    page.get_by_label("Password").fill(live.airflow.password)
    page.get_by_role("button", name="Sign in").click()
    page.wait_for_url(url.split("?")[0] + "*")


def screenshot(page, name: str) -> Path:
    """Kept as a CI artifact (test-artifacts/ is gitignored); the path is printed."""
    path = artifact(f"{name}.png")
    page.screenshot(path=str(path), full_page=True)
    print(f"screenshot: {path}")
    return path


def keep_log(airflow: StandaloneAirflow) -> None:
    """Copy standalone's logs next to the screenshots, so CI keeps them with the artifacts."""
    for log in airflow.home.glob("*.log"):
        shutil.copy(log, artifact(log.name))


def pytest_terminal_summary(terminalreporter) -> None:
    """Print the set-up timings (test bodies are in --durations) and the artifacts."""
    for name, seconds in _timings.items():
        terminalreporter.write_line(f"e2e: {name} took {seconds:.1f} s")
    for path in _artifacts:
        terminalreporter.write_line(f"e2e: artifact {path}")
