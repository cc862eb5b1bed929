"""Crash safety: SIGKILL a publishing process part-way, resume, compare with the emulator."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from cja_audiences.publish.ledger import Ledger
from cja_audiences.publish.streaming import publish_run
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    write_members,
)

pytestmark = pytest.mark.integration
REPO = Path(__file__).resolve().parents[2]
N, CHUNK = 30_000, 500


def start_child(emu, run_dir: Path) -> subprocess.Popen[bytes]:
    env = os.environ | {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn(rate_limit=0)),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    return subprocess.Popen(
        [sys.executable, "-m", "tests.publish.publish_child", str(run_dir), str(CHUNK)],
        cwd=REPO,
        env=env,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )


def wait_for_acknowledged(run_dir: Path, count: int, child: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            pytest.fail(f"publisher ended before the kill: {child.stderr.read().decode()[-2000:]}")
        if len(list((run_dir / "ledger").glob("entered-*.json"))) >= count:
            return
        time.sleep(0.01)
    pytest.fail("publisher made no progress")


@pytest.mark.parametrize("kill_after", [1, 12, 45])
def test_kill_9_mid_publish_then_resume_sends_each_acknowledged_chunk_once(
    emu, run_dir, kill_after
):
    write_members(run_dir / "entered.parquet", range(N))
    write_members(run_dir / "exited.parquet", [])
    expected = identities(member_table(range(N)))
    emu.faults(latency_ms=60, paths=["/collection/batch/"])  # slow enough to stop part-way

    child = start_child(emu, run_dir)
    wait_for_acknowledged(run_dir, kill_after, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    time.sleep(0.5)  # requests the server had already received finish processing
    first = {e["chunk"]: e for e in Ledger(run_dir).entries()}
    accepted_at_kill = emu.stats()["messages"]["accepted"]
    total_chunks = N // CHUNK
    assert kill_after <= len(first) < total_chunks, "the kill must land part-way through"
    acknowledged_first = sum(e["acknowledged"] for e in first.values())
    assert accepted_at_kill >= acknowledged_first  # the ledger never runs ahead of AEP

    emu.clear_faults()
    summary = publish_run(
        emu.adobe_config(rate_limit=0), make_spec(), run_dir, options=fast_options(chunk_size=CHUNK)
    )

    assert held(emu, status="realized") == expected  # exact set
    after = {e["chunk"]: e for e in Ledger(run_dir).entries()}
    assert len(after) == total_chunks and summary["chunks"]["complete"]
    for chunk, entry in first.items():  # acknowledged before the kill: untouched since
        assert after[chunk]["session"] == entry["session"] != summary["session"]
    assert summary["skipped"] == acknowledged_first
    assert summary["sent"] == N - acknowledged_first
    # the emulator saw exactly the resumed chunks again, nothing acknowledged before
    assert emu.stats()["messages"]["accepted"] - accepted_at_kill == summary["sent"]
