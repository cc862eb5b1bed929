"""The audience lease: one holder at a time, fencing tokens, expiry, compare-and-swap."""

from __future__ import annotations

import contextlib
import threading

import pytest

from cja_audiences.lake.lease import (
    AudienceBusy,
    LakeLeaseBackend,
    LeaseLost,
    Leases,
    RunLease,
)
from cja_audiences.lake.runs import read_run_record
from cja_audiences.lake.storage import lake_path


class Clock:
    def __init__(self) -> None:
        self.now = 1_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture(params=["local", "s3", "gs", "abfs"])
def leases(request, tmp_path, clock):
    """On a local lake and on each object store (tests/object_storage.py's real servers)."""
    if request.param == "local":
        root = tmp_path
    else:
        root = lake_path(request.getfixturevalue(f"{request.param}_home")) / "audiences"
    return Leases(LakeLeaseBackend(root), ttl_s=60, clock=clock)


def test_a_second_holder_is_refused_until_release(leases):
    first = leases.acquire("aud", "rA")
    with pytest.raises(AudienceBusy, match="aud is being written by run rA"):
        leases.acquire("aud", "rB")
    assert leases.release("aud", "rA", first.token)
    second = leases.acquire("aud", "rB")
    assert second.token == first.token + 1


def test_an_expired_lease_is_taken_over_and_the_old_holder_is_fenced(leases, clock):
    first = leases.acquire("aud", "rA")
    clock.now += 61
    second = leases.acquire("aud", "rB")
    with pytest.raises(LeaseLost, match="run rA lost the lease of audience aud"):
        leases.hold("aud", "rA", first.token)
    assert leases.hold("aud", "rB", second.token).holder == "rB"
    assert not leases.release("aud", "rA", first.token)  # cannot free another's lease


def test_the_same_holder_takes_its_lease_back_with_its_token(leases, clock):
    first = leases.acquire("aud", "rA")
    clock.now += 61  # expired, nobody took it: a task retry continues
    assert leases.acquire("aud", "rA").token == first.token
    assert leases.hold("aud", "rA", first.token).expires_at == clock.now + 60


def test_hold_renews_only_when_a_third_of_the_ttl_is_used(leases, clock):
    lease = leases.acquire("aud", "rA")
    clock.now += 10
    assert leases.hold("aud", "rA", lease.token).expires_at == lease.expires_at
    clock.now += 15
    assert leases.hold("aud", "rA", lease.token).expires_at == clock.now + 60


def test_waiting_ends_when_the_holder_releases(tmp_path):
    leases = Leases(LakeLeaseBackend(tmp_path), ttl_s=60)
    held = leases.acquire("aud", "rA")
    threading.Timer(0.3, leases.release, ("aud", "rA", held.token)).start()
    assert leases.acquire("aud", "rB", wait_s=10).holder == "rB"


def test_compare_and_swap_refuses_a_stale_version(tmp_path):
    backend = LakeLeaseBackend(tmp_path)
    assert backend.store("aud", {"x": 1}, None)
    _record, version = backend.load("aud")
    assert backend.store("aud", {"x": 2}, version)
    assert not backend.store("aud", {"x": 3}, version)  # someone wrote in between
    assert not backend.store("aud", {"x": 3}, None)
    assert backend.load("aud")[0]["x"] == 2


def test_many_threads_racing_get_one_holder(tmp_path):
    leases = Leases(LakeLeaseBackend(tmp_path), ttl_s=60)
    winners, start = [], threading.Barrier(8)

    def race(name: str) -> None:
        start.wait()
        with contextlib.suppress(AudienceBusy):
            winners.append(leases.acquire("aud", name).holder)

    threads = [threading.Thread(target=race, args=(f"r{i}",)) for i in range(8)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert len(winners) == 1


def test_a_run_lease_lives_in_run_json(tmp_path):
    run_dir = tmp_path / "audiences" / "aud" / "runs" / "r1"
    run_dir.mkdir(parents=True)
    lease = RunLease(run_dir)
    taken = lease.take()
    assert read_run_record(run_dir)["lease"]["token"] == taken.token
    assert RunLease(run_dir).fence().holder == "r1"  # another task of the same run
    assert RunLease(run_dir).release()
    other = RunLease(tmp_path / "audiences" / "aud" / "runs" / "r2")
    (tmp_path / "audiences" / "aud" / "runs" / "r2").mkdir()
    other.take()
    with pytest.raises(LeaseLost):
        RunLease(run_dir).fence()
