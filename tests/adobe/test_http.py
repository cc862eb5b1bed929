"""IMS tokens in publishing: one per process, renewed before expiry, refreshed once on 401."""

from __future__ import annotations

import threading
import time

import pytest

from cja_audiences.adobe.auth import invalidate_token
from cja_audiences.adobe.http import PlatformClient, PlatformError, TokenProvider
from cja_audiences.adobe.records import RecordFactory, qualification_time
from cja_audiences.adobe.sender import SendStats, StreamingSender, pack
from cja_audiences.publish.ledger import iter_chunks
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


def run_with(run_dir, ids) -> None:
    run_dir.mkdir(parents=True, exist_ok=True)
    write_members(run_dir / "entered.parquet", ids)
    write_members(run_dir / "exited.parquet", [])


def auth_refusals(emu) -> int:
    return sum(
        count
        for by_status in emu.stats()["requests"].values()
        for status, count in by_status.items()
        if status in ("401", "403")
    )


def test_one_token_serves_every_publish_in_the_process(emu, tmp_path):
    config = emu.adobe_config()
    invalidate_token(config)
    for i in range(3):
        run_with(tmp_path / f"r{i}", range(i * 100, i * 100 + 100))
        publish_run(config, make_spec(), tmp_path / f"r{i}", options=fast_options())
    assert emu.stats()["tokens_issued"] == 1
    assert auth_refusals(emu) == 0


def test_a_token_is_renewed_before_it_expires(emu, tmp_path):
    config = emu.adobe_config()
    emu.faults(token_lifetime_s=1.5)
    invalidate_token(config)
    run_with(tmp_path / "r1", range(100))
    publish_run(config, make_spec(), tmp_path / "r1", options=fast_options())
    time.sleep(1.5)  # the emulator would now refuse the first token
    run_with(tmp_path / "r2", range(100, 200))
    publish_run(config, make_spec(), tmp_path / "r2", options=fast_options())
    assert emu.stats()["tokens_issued"] == 2
    assert auth_refusals(emu) == 0  # renewed ahead of time, never refused


def test_a_refused_token_is_refreshed_once_and_the_publish_goes_on(emu, tmp_path):
    config = emu.adobe_config()
    invalidate_token(config)
    run_with(tmp_path / "r1", range(100))
    publish_run(config, make_spec(), tmp_path / "r1", options=fast_options())
    emu.faults(expire_tokens=True)  # revoked while still cached here
    run_with(tmp_path / "r2", range(2_000))
    publish_run(config, make_spec(), tmp_path / "r2", options=fast_options())
    assert emu.stats()["tokens_issued"] == 2
    assert auth_refusals(emu) == 1
    assert held(emu) == identities(member_table(range(2_000)))


def test_the_streaming_inlet_refusing_a_token_refreshes_it(emu, tmp_path):
    config = emu.adobe_config()
    invalidate_token(config)
    tokens = TokenProvider(config)
    tokens.token()
    emu.faults(expire_tokens=True)
    run_with(tmp_path / "r1", range(3_000))
    options = fast_options(chunk_size=3_000, concurrency=4, byte_budget=100_000)
    sender = StreamingSender(config, options.send, tokens, SendStats())
    factory = RecordFactory(
        org_id=config.org_id,
        dataset_id=config.dataset_id,
        schema_id=config.schema_id,
        segment_namespace="cjaAudiences",
        audience_id="high_value",
        qualification_time=qualification_time(),
    )
    chunk = next(iter_chunks(tmp_path / "r1" / "entered.parquet", "entered", "realized", 3_000))
    items = [
        (i, factory.encode("ECID", v, "realized"))
        for i, v in enumerate(chunk.table.column("identity").to_pylist())
    ]
    requests_, _ = pack(items, 100_000)
    assert len(requests_) >= 4  # parallel requests all see the revoked token
    done = []
    sender.run([(chunk, requests_)], lambda c, failures, n: done.append(failures))
    sender.close()
    assert done == [[]]
    assert emu.stats()["tokens_issued"] == 2  # one IMS call however many requests saw 403
    assert held(emu) == identities(chunk.table)


def test_concurrent_refreshes_of_one_rejected_token_make_one_ims_call(emu):
    config = emu.adobe_config()
    tokens = TokenProvider(config)
    rejected = tokens.token()
    issued = emu.stats()["tokens_issued"]
    results: list[str] = []
    threads = [
        threading.Thread(target=lambda: results.append(tokens.refresh(rejected))) for _ in range(8)
    ]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert len(set(results)) == 1 and results[0] != rejected
    assert emu.stats()["tokens_issued"] == issued + 1


def test_platform_errors_name_the_call_and_status(emu):
    config = emu.adobe_config()
    with (
        PlatformClient(config, TokenProvider(config)) as client,
        pytest.raises(PlatformError, match=r"GET /data/core/ups/audiences/nope failed: HTTP 404"),
    ):
        client.request("GET", "/data/core/ups/audiences/nope")


def test_platform_calls_ride_out_throttling(emu):
    config = emu.adobe_config()
    emu.faults(error_429_rate=1.0, times=2, paths=["/data/core/ups/audiences"])
    client = PlatformClient(config, TokenProvider(config), backoff_base=0.01)
    assert client.request("GET", "/data/core/ups/audiences")["children"] == []
    client.close()


def test_a_token_renewal_that_ims_throttles_does_not_fail_the_publish(emu, tmp_path):
    config = emu.adobe_config()
    emu.faults(token_lifetime_s=1.5)
    invalidate_token(config)
    run_with(tmp_path / "r1", range(100))
    publish_run(config, make_spec(), tmp_path / "r1", options=fast_options())
    time.sleep(1.5)
    emu.faults(token_lifetime_s=1.5, error_429_rate=1.0, times=2, retry_after_s=0, paths=["/ims"])
    run_with(tmp_path / "r2", range(100, 200))
    publish_run(config, make_spec(), tmp_path / "r2", options=fast_options())
    assert held(emu) >= identities(member_table(range(200)))
