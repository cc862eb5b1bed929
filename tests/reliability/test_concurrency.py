"""Two writers of one audience at once: AEP must end equal to the committed snapshot.

Each case ran on the code before the audience lease and ended with AEP differing from the
snapshot (both runs diffed against the same base and both sent). Runs are real worker
processes against the emulator; a 1.5 s latency on streaming makes them overlap.
"""

from __future__ import annotations

import signal
import time

import pytest

from tests.reliability.helpers import aep_matches_snapshot, make_lake, wait_for_chunks

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
SLOW = {
    "latency_ms": 1500,
    "paths": ["/collection/batch/"],
}  # a publish outlasts process start skew


@pytest.fixture
def lake(tmp_path, emu):
    return make_lake(tmp_path, emu)


def both(lake, first, second, **env):
    """Start two refreshes at once; their exit codes once both ended. The lease lasts 30 s
    here, so a slow publish is never fenced out by the other run (the kill tests do that)."""
    env = {"CJA_AUDIENCES_LEASE_TTL_S": "30", **env}
    a = lake.start(*first, **env)
    b = lake.start(*second, **env)
    codes = []
    for child in (a, b):
        _out, err = child.communicate(timeout=120)
        assert child.returncode in (0, 3, 4), err.decode()[-3000:]
        codes.append(child.returncode)
    return codes


@pytest.mark.parametrize("wait_s", ["0", "60"])
def test_two_refreshes_of_one_audience_at_once(emu, lake, wait_s):
    assert lake.refresh("r0", range(0, 4_000)) == 0
    emu.faults(**SLOW)
    codes = both(
        lake,
        ("rA", range(2_000, 6_000)),
        ("rB", range(3_000, 7_000)),
        CJA_AUDIENCES_LEASE_WAIT_S=wait_s,
    )
    emu.clear_faults()
    # without waiting one of them is skipped before sending; waiting, both commit in turn
    assert sorted(codes) == ([0, 3] if wait_s == "0" else [0, 0])
    aep_matches_snapshot(emu, lake)


def test_refresh_and_rollback_at_once(emu, lake):
    assert lake.refresh("r0", range(0, 3_000)) == 0
    assert lake.refresh("r1", range(2_000, 5_000)) == 0
    emu.faults(**SLOW)
    codes = both(
        lake,
        ("r2", range(4_000, 8_000)),
        ("rollback_1", range(0), "--rollback", "r0"),
        CJA_AUDIENCES_LEASE_WAIT_S="60",
    )
    emu.clear_faults()
    assert codes == [0, 0]
    aep_matches_snapshot(emu, lake)


def test_two_first_publishes_of_a_new_audience(emu, lake):
    emu.faults(**SLOW)
    codes = both(lake, ("rA", range(0, 4_000)), ("rB", range(2_000, 6_000)))
    emu.clear_faults()
    assert sorted(codes) == [0, 3]
    aep_matches_snapshot(emu, lake)


def test_an_abandoned_run_is_superseded_by_the_next(emu, lake):
    """Killed after 3 of 10 chunks and never resumed; the next run (same members as the
    snapshot, so nothing to diff against it) must still take back what the dead one sent."""
    assert lake.refresh("r0", range(0, 5_000)) == 0
    emu.faults(**SLOW)
    child = lake.start("rA", range(2_500, 7_500))  # 2,500 enter + 2,500 exit = 10 chunks
    wait_for_chunks(lake.run_dir("rA"), 3, child)
    child.send_signal(signal.SIGKILL)
    child.wait(timeout=10)
    emu.clear_faults()
    time.sleep(3.2)  # the dead run's lease (3 s in these tests) expires
    assert lake.refresh("rB", range(0, 5_000)) == 0
    aep_matches_snapshot(emu, lake)
    assert lake.refresh("rA", range(2_500, 7_500)) == 4  # the dead run may never send again


def test_a_run_failed_on_dead_letters_is_superseded_by_the_next(emu, lake):
    assert lake.refresh("r0", range(0, 5_000)) == 0
    # refused for good: ten records of the third entered chunk trip the 0.1% threshold
    emu.faults(fail_records=[f"id-p{i:09d}" for i in range(6_000, 6_010)])
    child = lake.start("rA", range(2_500, 7_500))
    _out, err = child.communicate(timeout=120)
    assert child.returncode == 1 and b"DeadLetterThresholdExceeded" in err
    emu.clear_faults()
    assert lake.refresh("rB", range(0, 5_000), CJA_AUDIENCES_LEASE_WAIT_S="10") == 0
    aep_matches_snapshot(emu, lake)
