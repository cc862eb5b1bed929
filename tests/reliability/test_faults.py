"""AEP misbehaving mid-publish: restarts, 429 and 503 storms, hung and dropped connections,
tokens expiring. Whatever happens, AEP ends holding exactly the audience (after a resume when
the publish gave up) and the ledger never runs ahead of what AEP accepted."""

from __future__ import annotations

import threading
import time

import pytest

from cja_audiences.adobe.sender import SendError
from cja_audiences.publish.streaming import PublishError, publish_run
from emulator.process import start_emulator
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    write_members,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]
N = 6_000
STORM_S = 60


def prepare(run_dir, n=N):
    write_members(run_dir / "entered.parquet", range(n))
    write_members(run_dir / "exited.parquet", [])
    return identities(member_table(range(n)))


def publish_until_done(config, run_dir, options, attempts=3):
    """A task with retries: resume from the ledger until the publish completes."""
    for attempt in range(attempts):
        try:
            return publish_run(config, make_spec(), run_dir, options=options)
        except (PublishError, SendError):  # the task fails; Airflow retries it
            if attempt == attempts - 1:
                raise
            time.sleep(1)
    raise AssertionError("unreachable")


def test_a_60_s_429_storm_honouring_retry_after(emu, run_dir):
    expected = prepare(run_dir, 2_000)
    emu.faults(error_429_for_s=STORM_S, retry_after_s=10, paths=["/collection/batch/"])
    started = time.monotonic()
    options = fast_options(chunk_size=500, max_retries=10, backoff_cap=15.0)
    summary = publish_run(emu.adobe_config(rate_limit=0), make_spec(), run_dir, options=options)
    assert time.monotonic() - started >= STORM_S - 1  # it waited the storm out, no give-up
    assert summary["status"] == "ok" and summary["retried"] > 0
    # Retry-After honoured: about one attempt per 10 s per connection, not a hammering
    throttled = emu.stats()["requests"]["POST /collection/batch/{inlet_id}"].get("429", 0)
    assert throttled <= 4 * (STORM_S / 10 + 2)
    assert held(emu, status="realized") == expected


@pytest.mark.parametrize(
    "faults",
    [
        {"error_503_rate": 0.4, "seed": 1},
        {"error_500_rate": 0.2, "error_503_rate": 0.2, "seed": 2},
        {"hang_rate": 0.05, "drop_rate": 0.1, "seed": 3},
    ],
    ids=["503-storm", "5xx-mix", "hung-and-dropped"],
)
def test_error_storms_end_exact(emu, run_dir, faults):
    expected = prepare(run_dir)
    emu.faults(paths=["/collection/batch/"], **faults)
    options = fast_options(chunk_size=500, timeout=1.0, max_retries=12)
    summary = publish_until_done(emu.adobe_config(rate_limit=0), run_dir, options)
    accepted = emu.stats()["messages"]["accepted"]
    assert summary["chunks"]["complete"] and accepted >= N
    assert held(emu, status="realized") == expected


def test_tokens_expiring_mid_publish(emu, run_dir):
    """Short-lived tokens are renewed as they go; tokens revoked mid-publish get a 401, one
    refresh, and the publish goes on."""
    expected = prepare(run_dir)
    emu.faults(token_lifetime_s=2, latency_ms=20, paths=["/collection/batch/"])
    config = emu.adobe_config(rate_limit=0)
    result: list = []

    def publish() -> None:
        try:
            result.append(publish_run(config, make_spec(), run_dir, options=fast_options(500)))
        except BaseException as exc:  # noqa: BLE001 - reported below
            result.append(exc)

    worker = threading.Thread(target=publish)
    worker.start()
    for chunks in (2, 6):
        while len(list((run_dir / "ledger").glob("entered-*.json"))) < chunks:
            time.sleep(0.005)
        emu.faults(expire_tokens=True)
    worker.join(timeout=60)
    assert isinstance(result[0], dict), repr(result[0])
    assert result[0]["token_refreshes"] >= 1 and result[0]["status"] == "ok"
    assert held(emu, status="realized") == expected


def test_the_endpoint_killed_and_restarted_mid_publish(run_dir, tmp_path):
    state = tmp_path / "emulator"
    state.mkdir()
    emu = start_emulator(state)
    port = int(emu.url.rsplit(":", 1)[1])
    try:
        expected = prepare(run_dir)
        emu.faults(latency_ms=40, paths=["/collection/batch/"])
        config = emu.adobe_config(rate_limit=0)
        options = fast_options(chunk_size=500, backoff_base=0.2, backoff_cap=1.0)
        result: list = []

        def publish() -> None:
            try:
                result.append(publish_until_done(config, run_dir, options, 4))
            except BaseException as exc:  # noqa: BLE001 - reported below
                result.append(exc)

        worker = threading.Thread(target=publish)
        worker.start()
        while len(list((run_dir / "ledger").glob("entered-*.json"))) < 3:
            time.sleep(0.01)
        emu.stop()  # AEP goes away mid-publish (SIGTERM) ...
        time.sleep(1.0)
        emu = start_emulator(state, port=port)  # ... and comes back with what it accepted
        worker.join(timeout=120)
        assert isinstance(result[0], dict), repr(result[0])
        assert result[0]["chunks"]["complete"]
        assert held(emu, status="realized") == expected
    finally:
        emu.stop()
