"""Scale-out figures: publishing over worker slots, bucketed compute over workers, the org budget.

(a) Latency-bound publishing: 8 audiences, 50 ms injected per streaming request, on 1, 2 and 4
    worker slots (processes, as Celery slots are), one publish per slot at a time.
(b) One audience split into person buckets over a synthetic lake (30M events by default),
    computed by 1 and by 2 worker processes (one DuckDB thread each: a worker slot).
(c) Four publishers in four processes sharing one org budget in Redis: the highest records
    the emulator received in any second, over the budget.

Writes bench/results/scale.json: ``publish_records_per_s`` ({"1", "2", "4"} slots),
``publish_speedup_1_to_2``, ``compute_speedup_1_to_2``, ``org_budget_max_ratio``.
"""

from __future__ import annotations

import argparse
import multiprocessing
import os
import shutil
import tempfile
import time
from concurrent.futures import ProcessPoolExecutor
from datetime import date
from pathlib import Path
from typing import Any

from bench.report import save

END = date(2026, 11, 20)
AUDIENCES = 8
BUDGET = 2000.0
BUCKETS = 4


def _fork() -> multiprocessing.context.BaseContext:
    return multiprocessing.get_context("fork")


def _spec(audience_id: str, buckets: int | None = None):
    from cja_audiences.settings import PROJECT_ROOT
    from cja_audiences.specs.model import spec_by_id

    spec = spec_by_id(PROJECT_ROOT / "include" / "audiences", "cart_abandoners")
    refresh = spec.refresh.model_copy(update={"buckets": buckets})
    return spec.model_copy(update={"id": audience_id, "refresh": refresh})


def _members(run_dir: Path, first: int, count: int) -> Path:
    import pyarrow as pa

    from cja_audiences.lake.layout import write_parquet
    from cja_audiences.lake.schema import MEMBER_SCHEMA

    ids = [f"p{i:09d}" for i in range(first, first + count)]
    table = pa.table(
        {"person_id": ids, "namespace": ["ECID"] * count, "identity": [f"e{i}" for i in ids]},
        schema=MEMBER_SCHEMA,
    )
    write_parquet(table, run_dir / "entered.parquet")
    write_parquet(MEMBER_SCHEMA.empty_table(), run_dir / "exited.parquet")
    return run_dir


def _publish(job: tuple[dict[str, Any], str, str, float]) -> int:
    """One publish in a worker slot: ``(connection, run dir, audience id, rate)``."""
    from cja_audiences.adobe.auth import AdobeConfig
    from cja_audiences.adobe.sender import SendOptions
    from cja_audiences.publish.streaming import PublishOptions, publish_run

    conn, run_dir, audience_id, rate = job
    config = AdobeConfig.from_connection(
        conn["host"], conn["login"], conn["password"], conn["extra"]
    )
    # one connection and ~40 KB requests: a publish waits on AEP's latency, not on CPU
    send = SendOptions(rate_limit=rate, concurrency=1, byte_budget=40_000, timeout=30.0)
    summary = publish_run(
        config, _spec(audience_id), run_dir, options=PublishOptions(chunk_size=500, send=send)
    )
    return summary["acknowledged"]


def _warm(_: int) -> int:
    import cja_audiences.publish.streaming  # noqa: F401  (imports paid before the clock)

    return os.getpid()


def publish_over_slots(emu, work: Path, members: int) -> dict[str, float]:
    """Records/s for 8 latency-bound publishes on 1, 2 and 4 slots."""
    rates = {}
    for slots in (1, 2, 4):
        emu.reset()
        emu.faults(latency_ms=50, paths=["/collection/"])
        jobs = [
            (
                emu.aep_conn(rate_limit=0),
                str(_members(work / f"s{slots}" / f"a{i}", i * members, members)),
                f"aud_{i}",
                0.0,
            )
            for i in range(AUDIENCES)
        ]
        with ProcessPoolExecutor(slots, mp_context=_fork()) as pool:
            list(pool.map(_warm, range(slots)))
            began = time.perf_counter()
            acknowledged = sum(pool.map(_publish, jobs))
            elapsed = time.perf_counter() - began
        assert acknowledged == AUDIENCES * members, acknowledged
        rates[str(slots)] = round(acknowledged / elapsed, 1)
    emu.clear_faults()
    return rates


def _compute_buckets(job: tuple[str, list[int]]) -> float:
    """One worker computing its buckets in turn with one DuckDB thread; seconds taken."""
    import functools

    import cja_audiences.compute as compute
    from cja_audiences.lake.storage import connect
    from cja_audiences.refresh import AudienceRefresh, RefreshRequest
    from cja_audiences.settings import PROJECT_ROOT, Settings

    compute.connect = functools.partial(connect, config={"threads": 1})  # one slot, one core
    home, buckets = job
    settings = Settings(
        home=home,
        audiences_dir=PROJECT_ROOT / "include" / "audiences",
        filters_dir=PROJECT_ROOT / "include" / "filters",
    )
    refresh = AudienceRefresh(
        _spec("bucketed", BUCKETS), settings, RefreshRequest(run_id="bench", as_of=END)
    )
    began = time.perf_counter()
    for bucket in buckets:
        refresh.compute(bucket=bucket)
    return time.perf_counter() - began


def bucketed_compute(home: Path) -> dict[str, float]:
    """Wall time of one bucketed audience on 1 worker and on 2 workers."""
    times = {}
    for workers in (1, 2):
        shares = [list(range(BUCKETS))[w::workers] for w in range(workers)]
        with ProcessPoolExecutor(workers, mp_context=_fork()) as pool:
            began = time.perf_counter()
            list(pool.map(_compute_buckets, [(str(home), share) for share in shares]))
            times[str(workers)] = round(time.perf_counter() - began, 2)
    return times


def org_budget(emu, work: Path, redis_url: str, members: int) -> dict[str, Any]:
    """Four publishers in four processes on one Redis budget; what the emulator counted."""
    emu.reset()
    os.environ["CJA_AUDIENCES_RATE_BUDGET_URL"] = redis_url
    from cja_audiences.settings import get_settings

    get_settings.cache_clear()
    jobs = [
        (
            emu.aep_conn(),
            str(_members(work / "budget" / f"a{i}", i * members, members)),
            f"b{i}",
            BUDGET,
        )
        for i in range(4)
    ]
    with ProcessPoolExecutor(4, mp_context=_fork()) as pool:
        list(pool.map(_warm, range(4)))
        sum(pool.map(_publish, jobs))
    stats = emu.stats()["records_per_s_by_org"][emu.config["org_id"]]
    return {
        "max_records_in_a_second": stats["max_calendar_second"],
        "max_records_in_a_sliding_second": stats["max"],
        "received": stats["received"],
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--events", type=int, help="events in the bucketed-compute lake")
    args = parser.parse_args(argv)

    from cja_audiences.extract.synthetic import generate_synthetic
    from cja_audiences.lake.layout import Lake
    from dev.celery import start_redis
    from dev.standalone import stop_groups
    from emulator.process import free_port, start_emulator

    events = args.events or (3_000_000 if args.quick else 30_000_000)
    members = 1_000 if args.quick else 4_000
    days = 30
    persons = max(1000, round(events / (0.7 * days)))
    work = Path(tempfile.mkdtemp(prefix="bench-scale-"))
    (work / "emulator").mkdir()
    emu = start_emulator(work / "emulator")
    port = free_port()
    redis = start_redis(port, work / "redis.log")
    load = {}
    try:
        load["start"] = round(os.getloadavg()[0], 2)
        publish = publish_over_slots(emu, work, members)
        budget = org_budget(emu, work, f"redis://127.0.0.1:{port}/0", members // 2 or 1)
        began = time.perf_counter()
        lake = generate_synthetic(Lake(work / "lake"), persons=persons, days=days, end=END, seed=3)
        generate_s = round(time.perf_counter() - began, 1)
        compute = bucketed_compute(work / "lake")
        load["end"] = round(os.getloadavg()[0], 2)
    finally:
        emu.stop()
        stop_groups([redis.pid], 10)
        shutil.rmtree(work, ignore_errors=True)
    result = {
        "publish_records_per_s": publish,
        "publish_speedup_1_to_2": round(publish["2"] / publish["1"], 2),
        "publish_speedup_1_to_4": round(publish["4"] / publish["1"], 2),
        "compute_seconds": compute,
        "compute_speedup_1_to_2": round(compute["1"] / compute["2"], 2),
        "org_budget_max_ratio": round(budget["max_records_in_a_second"] / BUDGET, 3),
        "org_budget_max_ratio_sliding_window": round(
            budget["max_records_in_a_sliding_second"] / BUDGET, 3
        ),
        "org_budget": BUDGET,
        "org_budget_records": budget["received"],
        "audiences": AUDIENCES,
        "members_per_audience": members,
        "latency_ms": 50,
        "lake_events": lake["rows"],
        "lake_persons": persons,
        "lake_generate_s": generate_s,
        "buckets": BUCKETS,
        "load_average_1m": load,
        "cores": os.cpu_count(),
        "quick": args.quick,
    }
    save("scale", result, table(result))
    return result


def table(r: dict[str, Any]) -> str:
    p = r["publish_records_per_s"]
    rows = [
        ("publish, 1 slot (records/s)", p["1"]),
        ("publish, 2 slots (records/s)", p["2"]),
        ("publish, 4 slots (records/s)", p["4"]),
        ("publish speed-up 1 -> 2 slots", r["publish_speedup_1_to_2"]),
        (f"bucketed compute, 1 worker (s, {r['lake_events']:,} events)", r["compute_seconds"]["1"]),
        ("bucketed compute, 2 workers (s)", r["compute_seconds"]["2"]),
        ("compute speed-up 1 -> 2 workers", r["compute_speedup_1_to_2"]),
        ("org budget: max records in a second / budget", r["org_budget_max_ratio"]),
        ("org budget: max in a sliding second / budget", r["org_budget_max_ratio_sliding_window"]),
    ]
    lines = ["| figure | value |", "| --- | --- |", *(f"| {a} | {b} |" for a, b in rows)]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
