"""Issue 8 item 6b: new CJA data refreshes the audience, exactly once, with no one clicking.

A complete CJA export delivery dropped into the landing folder is seen by the landing
watcher in the triggerer, which starts a `cja_extract` run; its `cja_events` asset starts
the audience run, which publishes to the emulator. Then the same delivery is dropped again
and the triggerer restarted: no second run. A different delivery dropped afterwards fires
exactly once, which proves the watcher was alive all along (otherwise "no second run" could
just mean "nothing watched").
"""

from __future__ import annotations

import shutil
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import pytest

from tests.e2e.conftest import last_complete_day, record_timing

pytestmark = pytest.mark.e2e

EXTRACT_DAG = "cja_extract"
# Longest a watcher may take to see a delivery (poll interval + scheduler loop + margin).
NOTICE_S = 60.0


@pytest.fixture
def deliveries(live, tmp_path) -> dict[str, list[Path]]:
    """Two deliveries of the lake's last day, written outside the landing folder."""
    details = live.airflow.api("GET", f"/api/v2/dags/{EXTRACT_DAG}/details").json()
    assert details["asset_expression"], f"{EXTRACT_DAG} must be scheduled on the landing asset"
    from cja_audiences.extract.exports import write_delivery

    events = str(live.lake.event_partition(last_complete_day()) / "*.parquet")
    return {
        name: write_delivery(events, tmp_path / name, report_instance_id=f"e2e-{name}")
        for name in ("first", "second")
    }


def drop(files: list[Path], landing: Path) -> None:
    """Copy a delivery into the landing folder the way Adobe does: the manifest last."""
    for path in files:  # write_delivery returns the data files, then the manifest
        shutil.copy(path, landing / path.name)


def unpause_and_settle(live, dag_id: str, quiet_s: float = 150.0) -> None:
    """Unpause, wait out the run a past schedule tick creates at once (catchup=False), and
    make sure the next tick is at least ``quiet_s`` away (else wait for it to pass too).

    A scheduled `cja_extract` run with source "export" would land any delivery it finds,
    so deliveries are dropped only in a quiet window: every extract run the test sees
    afterwards was started by the landing watcher.
    """
    live.unpause(dag_id)
    deadline = time.monotonic() + quiet_s + 90.0
    while time.monotonic() < deadline:
        dag = live.airflow.api("GET", f"/api/v2/dags/{dag_id}").json()
        due = dag["next_dagrun_run_after"]
        soon = (
            due is not None
            and (datetime.fromisoformat(due) - datetime.now(UTC)).total_seconds() < quiet_s
        )
        active = [r for r in live.airflow.dag_runs(dag_id) if r["state"] in ("queued", "running")]
        if not soon and not active:
            return
        time.sleep(1.0)
    raise AssertionError(f"{dag_id}: no quiet {quiet_s:.0f} s window between scheduled runs")


def asset_runs(live, dag_id: str) -> list[dict[str, Any]]:
    return [r for r in live.airflow.dag_runs(dag_id) if r["run_type"] == "asset_triggered"]


def wait_for_new_run(live, dag_id: str, known: int, timeout: float) -> dict[str, Any]:
    """The first asset-triggered run beyond the ``known`` ones, once it has finished."""
    deadline = time.monotonic() + timeout
    while len(runs := asset_runs(live, dag_id)) <= known:
        if time.monotonic() > deadline:
            raise AssertionError(f"no new asset-triggered {dag_id} run in {timeout:.0f} s")
        time.sleep(1.0)
    return live.airflow.wait_for_run(dag_id, runs[known]["dag_run_id"], timeout=150)


def triggering_events(live, dag_id: str, run_id: str) -> list[dict[str, Any]]:
    path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/upstreamAssetEvents"
    return live.airflow.api("GET", path).json()["asset_events"]


def fired_for(live, extract_run_id: str) -> str:
    """The delivery id the landing watcher fired for, from the run's triggering event."""
    (event,) = triggering_events(live, EXTRACT_DAG, extract_run_id)
    assert event["extra"]["from_trigger"] is True
    return event["extra"]["payload"]["delivery_id"]


def committed_members(live, run_id: str) -> set[tuple[str, str]]:
    table = pq.read_table(
        live.lake.run_dir(live.audience_id, run_id) / "members.parquet",
        columns=["namespace", "identity"],
    )
    return set(zip(table["namespace"].to_pylist(), table["identity"].to_pylist(), strict=True))


def test_a_delivery_refreshes_the_audience_once_across_redrops_and_restarts(live, deliveries):
    live.emulator.reset()
    unpause_and_settle(live, EXTRACT_DAG)
    extracts, audiences = len(asset_runs(live, EXTRACT_DAG)), len(asset_runs(live, live.dag_id))

    drop(deliveries["first"], live.lake.landing)

    extract = wait_for_new_run(live, EXTRACT_DAG, extracts, timeout=NOTICE_S)
    extract_id = extract["dag_run_id"]
    assert extract["state"] == "success", live.airflow.task_states(EXTRACT_DAG, extract_id)
    first_id = fired_for(live, extract_id)
    assert first_id.startswith("e2e-first")

    audience = wait_for_new_run(live, live.dag_id, audiences, timeout=NOTICE_S)
    run_id = audience["dag_run_id"]
    assert audience["state"] == "success", live.airflow.task_states(live.dag_id, run_id)
    sources = triggering_events(live, live.dag_id, run_id)
    assert {(e["source_dag_id"], e["source_run_id"]) for e in sources} == {
        (EXTRACT_DAG, extract_id)
    }
    assert live.committed_run() == live.folder_name(run_id)
    published = committed_members(live, run_id)
    assert published and live.members() == published

    drop(deliveries["first"], live.lake.landing)  # the same delivery again ...
    restart_s = live.airflow.restart_triggerer()  # ... seen by a new triggerer's watcher
    record_timing("triggerer restart", restart_s)
    drop(deliveries["second"], live.lake.landing)  # and a new one: the watcher is alive

    second = wait_for_new_run(live, EXTRACT_DAG, extracts + 1, timeout=NOTICE_S)
    assert fired_for(live, second["dag_run_id"]).startswith("e2e-second")
    # Its audience run is not forced, so the refresh gate skips it (the copied spec's
    # schedule period only starts tomorrow) and the published snapshot stays.
    again = wait_for_new_run(live, live.dag_id, audiences + 1, timeout=NOTICE_S)
    assert again["state"] == "success"
    assert live.run_record(again["dag_run_id"])["gate"]["due"] is False
    assert live.committed_run() == live.folder_name(run_id) and live.members() == published
    # The watcher restarted after each fire and polled all along; nothing fired twice.
    assert len(asset_runs(live, EXTRACT_DAG)) == extracts + 2
