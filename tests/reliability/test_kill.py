"""kill -9 of publish and of commit at seeded random points, then resume (a task retry).

After every kill current.json points at a fully published run; after every resume AEP holds
exactly the committed snapshot and no chunk acknowledged before the kill was sent again.
"""

from __future__ import annotations

import random
import signal
import time

import pytest

from cja_audiences import snapshots
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.ledger import Ledger
from tests.reliability.helpers import aep_matches_snapshot, make_lake, wait_for_chunks

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
SEED = 20261201
KILLS = 10
# inside commit: before the run's commit record, before the pointer moves, right after it moved
COMMIT_POINTS = ("update_run_record:1", "write_json:1", "_mark_superseded:1")


def schedule(seed: int, kills: int) -> list[dict]:
    """Member ranges and a kill point per run: publish after k chunks, or inside commit.

    Runs alternate between two disjoint halves of the id space, so every diff has at least
    2,400 changes (8 chunks of 300) and a kill after 1-3 chunks lands part-way.
    """
    rng = random.Random(seed)
    plan = []
    for index in range(kills):
        start = (5_000 if index % 2 == 0 else 0) + rng.randrange(0, 1_000)
        members = range(start, start + rng.randrange(1_200, 2_500))
        if index % 3 == 2:
            plan.append({"members": members, "commit": rng.choice(COMMIT_POINTS)})
        else:
            plan.append({"members": members, "chunks": rng.randrange(1, 4)})
    return plan


def assert_current_fully_published(lake) -> None:
    current = snapshots.current_run_dir(lake.audience_dir)
    if current is not None:
        publish = read_run_record(current)["publish"]
        assert publish["status"] == "ok" and publish["chunks"]["complete"], current.name


def test_kill_9_at_random_points_then_resume(emu, tmp_path):
    lake = make_lake(tmp_path, emu, CJA_TEST_CHUNK="300")
    assert lake.refresh("r00", range(0, 1_500)) == 0
    survived = 0
    for index, step in enumerate(schedule(SEED, KILLS), start=1):
        run_id = f"r{index:02d}"
        run_dir = lake.run_dir(run_id)
        if "commit" in step:
            assert lake.refresh(run_id, step["members"], CJA_TEST_KILL_AT=step["commit"]) == -9
        else:
            emu.faults(latency_ms=20, paths=["/collection/batch/"])
            child = lake.start(run_id, step["members"])
            wait_for_chunks(run_dir, step["chunks"], child)
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=10)
            emu.clear_faults()
            time.sleep(0.3)  # requests the emulator had already received finish
        survived += 1
        assert_current_fully_published(lake)
        before = {e["chunk"]: e["session"] for e in Ledger(run_dir).entries()}
        accepted = emu.stats()["messages"]["accepted"]

        assert lake.refresh(run_id, step["members"]) == 0, f"resume of {run_id} ({step})"

        record = read_run_record(run_dir)
        assert snapshots.current_run(lake.audience_dir)["run_id"] == run_id
        aep_matches_snapshot(emu, lake)
        after = {e["chunk"]: e["session"] for e in Ledger(run_dir).entries()}
        assert {c: after[c] for c in before} == before, "an acknowledged chunk was redone"
        resent = emu.stats()["messages"]["accepted"] - accepted
        sent_on_resume = record["publish"]["sent"] if before or "chunks" in step else 0
        assert resent == (sent_on_resume if "chunks" in step else 0)
    assert survived >= 10
