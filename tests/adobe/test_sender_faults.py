"""The sender under the emulator's faults: throttling, outages, hangs, drops, big records."""

from __future__ import annotations

import json
import threading
import time

import pytest

from cja_audiences.adobe.http import TokenProvider
from cja_audiences.adobe.records import RecordFactory, qualification_time
from cja_audiences.adobe.sender import (
    MAX_REQUEST_BYTES,
    SendError,
    SendOptions,
    StreamingSender,
    pack,
    request_body,
)
from cja_audiences.lake.layout import write_parquet
from cja_audiences.lake.runs import read_run_record
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
BATCH = "/collection/batch/"


def delta_run(run_dir, n: int):
    write_members(run_dir / "entered.parquet", range(n))
    write_members(run_dir / "exited.parquet", [])
    return identities(member_table(range(n)))


def statuses(emu) -> dict[str, int]:
    return emu.stats()["requests"].get("POST /collection/batch/{inlet_id}", {})


def test_429_with_retry_after_waits_as_asked(emu, run_dir):
    expected = delta_run(run_dir, 400)
    emu.faults(error_429_rate=1.0, retry_after_s=1, times=2, paths=[BATCH])
    started = time.monotonic()
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert time.monotonic() - started >= 2.0  # backoff alone would be ~0.05 s
    assert statuses(emu) == {"429": 2, "207": 1}
    assert summary["requests"] == 3 and summary["retried"] == 2 * 400
    assert held(emu) == expected


def test_429_without_retry_after_backs_off_and_completes(emu, run_dir):
    expected = delta_run(run_dir, 2_000)
    emu.faults(error_429_rate=1.0, times=5, paths=[BATCH])
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert statuses(emu)["429"] == 5
    assert summary["requests"] == statuses(emu)["207"] + 5
    assert held(emu) == expected


def test_503_storm_is_ridden_out(emu, run_dir):
    expected = delta_run(run_dir, 5_000)
    emu.faults(error_503_rate=0.6, seed=7, paths=[BATCH])
    summary = publish_run(
        emu.adobe_config(), make_spec(), run_dir, options=fast_options(max_retries=30)
    )
    assert statuses(emu)["503"] >= 5
    assert summary["dead_lettered"] == 0
    assert held(emu) == expected


def test_an_outage_longer_than_the_retries_fails_and_a_rerun_finishes(emu, run_dir):
    expected = delta_run(run_dir, 1_000)
    emu.faults(error_503_rate=1.0, paths=[BATCH])
    with pytest.raises(SendError, match="gave up after 3 retries"):
        publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options(max_retries=3))
    assert read_run_record(run_dir)["publish"]["status"] == "failed"
    assert not list((run_dir / "ledger").glob("entered-*.json"))
    emu.clear_faults()
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert summary["chunks"]["complete"] and held(emu) == expected


def test_requests_that_never_answer_time_out_and_are_retried(emu, run_dir):
    expected = delta_run(run_dir, 600)
    emu.faults(hang_rate=1.0, times=2, paths=[BATCH])
    summary = publish_run(
        emu.adobe_config(), make_spec(), run_dir, options=fast_options(timeout=0.5)
    )
    assert summary["requests"] == statuses(emu).get("207", 0) + 2
    assert held(emu) == expected


def test_dropped_connections_are_retried(emu, run_dir):
    expected = delta_run(run_dir, 1_500)
    emu.faults(drop_rate=1.0, times=3, paths=[BATCH])
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert summary["retried"] > 0
    assert held(emu) == expected


def test_records_near_the_byte_budget_never_cause_413(emu, run_dir):
    """Maximum-length identities that JSON-escape to ~6 KB fill requests to the last bytes."""
    n = 600
    table = member_table(range(n))
    wide = [f"{i:04d}" + ('é"' * 510) for i in range(n)]  # 1,024 chars, 6x when escaped
    table = table.set_column(2, "identity", [wide])
    write_parquet(table, run_dir / "entered.parquet")
    write_members(run_dir / "exited.parquet", [])
    options = fast_options(chunk_size=n, byte_budget=MAX_REQUEST_BYTES)

    config = emu.adobe_config()
    factory = RecordFactory(
        org_id=config.org_id,
        dataset_id=config.dataset_id,
        schema_id=config.schema_id,
        segment_namespace="cjaAudiences",
        audience_id="high_value",
        qualification_time=qualification_time(),
    )
    items = [(i, factory.encode("ECID", w, "realized")) for i, w in enumerate(wide)]
    packed, _ = pack(items, MAX_REQUEST_BYTES)
    largest = max(len(request_body(m for _, m in r)) for r in packed)
    assert MAX_REQUEST_BYTES - 7_000 < largest <= MAX_REQUEST_BYTES  # within one record

    summary = publish_run(config, make_spec(), run_dir, options=options)
    assert "413" not in statuses(emu)
    assert summary["requests"] == len(packed) and summary["dead_lettered"] == 0
    assert held(emu) == identities(table)


def test_the_emulator_does_refuse_bodies_over_its_limit(emu):
    """Guards the test above: 413 is what an oversized body gets."""
    config = emu.adobe_config()
    sender = StreamingSender(config, SendOptions(rate_limit=0), TokenProvider(config))
    response = sender._session().post(
        sender.url,
        data=b'{"messages":[' + b" " * (1 << 20) + b"]}",
        headers=sender._headers(emu.token()),
        timeout=10,
    )
    sender.close()
    assert response.status_code == 413


def test_a_request_refused_as_a_whole_is_halved_until_the_bad_record_stands_alone(emu):
    config = emu.adobe_config()
    factory = RecordFactory(
        org_id=config.org_id,
        dataset_id=config.dataset_id,
        schema_id=config.schema_id,
        segment_namespace="cjaAudiences",
        audience_id="high_value",
        qualification_time=qualification_time(),
    )
    items = [(i, factory.encode("ECID", f"id-{i}", "realized")) for i in range(16)]
    items[11] = (11, items[11][1][:-5])  # truncated JSON: the gateway refuses the whole body
    sender = StreamingSender(config, SendOptions(rate_limit=0), TokenProvider(config))
    dead = sender.deliver(items)
    sender.close()
    assert [(d.key, d.status_code) for d in dead] == [(11, 400)]
    assert sender.stats.splits == 4  # 16 -> 8 -> 4 -> 2 -> 1
    assert emu.stats()["messages"]["accepted"] == 15
    assert json.loads(items[3][1])  # the others were well-formed and all got through
    assert len(held(emu)) == 15


def test_the_rate_limit_is_shared_by_every_publish_in_the_process(emu, tmp_path):
    """Two audiences published at once under one 4,000 records/s budget."""
    specs = [make_spec(id="first_audience"), make_spec(id="second_audience", name="Other")]
    runs = []
    for i in range(2):
        run_dir = tmp_path / f"r{i}"
        run_dir.mkdir()
        write_members(run_dir / "entered.parquet", range(4_000))
        write_members(run_dir / "exited.parquet", [])
        runs.append(run_dir)
    config = emu.adobe_config()
    options = fast_options(rate_limit=4_000)
    errors: list[BaseException] = []

    def publish(spec, run_dir) -> None:
        try:
            publish_run(config, spec, run_dir, options=options)
        except BaseException as exc:  # noqa: BLE001 - reported by the assertion below
            errors.append(exc)

    threads = [
        threading.Thread(target=publish, args=pair) for pair in zip(specs, runs, strict=True)
    ]
    started = time.monotonic()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert errors == []
    # 8,000 records, a one-second burst of 4,000 allowed, then 4,000/s: at least ~1 s;
    # with a bucket per publish both would fit in their bursts at once
    assert elapsed >= 0.95
    for spec in specs:
        assert held(emu, spec.id) == identities(member_table(range(4_000)))
