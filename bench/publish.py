"""Publishing throughput and memory against the emulator on loopback (issue 7).

Measures, in one run and against one emulator:
- ``publish_run`` with the rate limit off, plain and with 50 ms injected latency per request;
- two straightforward publishers a team might write: one record per request, and
  sequential batches (one request at a time), with their ratios to ours;
- peak RSS of ``publish_run`` in a fresh process at 0.5M and 2M records;
- CPU time per record of the emulator and of the publisher during the main run, and the
  machine's load: on 2 shared cores the emulator's share says who the bottleneck is.

``python -m bench.publish [--quick]`` writes ``bench/results/publish.json`` and prints JSON
and a markdown table. Figures are compared as ratios within the run, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import psutil
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from bench.report import peak_rss_mb, save
from cja_audiences.adobe.auth import AdobeConfig, get_token, invalidate_token
from cja_audiences.adobe.records import STATUS_REALIZED, RecordFactory, qualification_time
from cja_audiences.adobe.sender import SendOptions
from cja_audiences.lake.layout import write_parquet
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.publish.streaming import PublishOptions, publish_run
from cja_audiences.specs.model import AudienceSpec

ROOT = Path(__file__).resolve().parents[1]
SPEC = {
    "id": "bench_audience",
    "name": "Benchmark audience",
    "refresh": {"frequency": "daily", "lookback_days": 30},
    "filter": {"template": "bench.sql.j2"},
}
NAIVE_BATCH = 1_000  # records per request in the sequential-batches publisher


def members(n: int, offset: int = 0) -> pa.Table:
    ids = [f"p{i:010d}" for i in range(offset, offset + n)]
    return pa.table(
        {"person_id": ids, "namespace": ["ECID"] * n, "identity": [f"ecid-{i}" for i in ids]},
        schema=MEMBER_SCHEMA,
    )


def make_run(root: Path, name: str, n: int, offset: int = 0) -> Path:
    run_dir = root / name
    run_dir.mkdir(parents=True)
    write_parquet(members(n, offset), run_dir / "entered.parquet")
    write_parquet(members(0), run_dir / "exited.parquet")
    return run_dir


def ours(config: AdobeConfig, run_dir: Path) -> dict[str, Any]:
    options = PublishOptions(send=SendOptions(rate_limit=0, concurrency=config.concurrency))
    return publish_run(config, AudienceSpec.model_validate(SPEC), run_dir, options=options)


def factory(config: AdobeConfig) -> RecordFactory:
    return RecordFactory(
        org_id=config.org_id,
        dataset_id=config.dataset_id,
        schema_id=config.schema_id,
        segment_namespace=config.segment_namespace,
        audience_id=SPEC["id"],
        qualification_time=qualification_time(),
    )


def fresh_headers(config: AdobeConfig) -> dict[str, str]:
    """Headers with a token the (just reset) emulator knows."""
    invalidate_token(config)
    return {**config.platform_headers(get_token(config)), "Content-Type": "application/json"}


def per_record(config: AdobeConfig, n: int) -> float:
    """One message per POST /collection/{inlet}, one after another: records/s."""
    encode = factory(config).encode
    url = f"{config.streaming_url}/collection/{config.inlet_id}"
    headers = fresh_headers(config)
    with requests.Session() as session:
        started = time.perf_counter()
        for i in range(n):
            body = encode("ECID", f"ecid-single-{i}", STATUS_REALIZED)
            session.post(url, data=body, headers=headers, timeout=30).raise_for_status()
        return n / (time.perf_counter() - started)


def sequential_batches(config: AdobeConfig, run_dir: Path) -> float:
    """Fixed batches of dict-built messages to /collection/batch, one request at a time."""
    build = factory(config).build
    url = f"{config.streaming_url}/collection/batch/{config.inlet_id}"
    headers = fresh_headers(config)
    rows = pq.read_table(run_dir / "entered.parquet").to_pylist()
    with requests.Session() as session:
        started = time.perf_counter()
        for start in range(0, len(rows), NAIVE_BATCH):
            batch = rows[start : start + NAIVE_BATCH]
            messages = [build(r["namespace"], r["identity"], STATUS_REALIZED) for r in batch]
            session.post(url, json={"messages": messages}, headers=headers, timeout=60)
        return len(rows) / (time.perf_counter() - started)


def publish_rss(conn: dict[str, Any], run_dir: Path) -> tuple[float, float]:
    """(peak RSS in MB, records/s) of publish_run in a fresh process."""
    env = os.environ | {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(conn),
        "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
    }
    out = subprocess.run(
        [sys.executable, "-m", "bench.publish", "--child", str(run_dir)],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    return result["peak_rss_mb"], result["records_per_s"]


def child(run_dir: Path) -> None:
    summary = ours(AdobeConfig.from_env("aep_default"), run_dir)
    print(json.dumps({"peak_rss_mb": peak_rss_mb(), **summary}))


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--records", type=int, help="records in the throughput runs")
    parser.add_argument("--child", type=Path, help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return {}

    from emulator.process import start_emulator

    n = args.records or (20_000 if args.quick else 200_000)
    rss_sizes = (50_000, 200_000) if args.quick else (500_000, 2_000_000)
    single_n = 300 if args.quick else 2_000
    work = Path(tempfile.mkdtemp(prefix="bench-publish-"))
    emu = start_emulator(work)
    try:
        conn = emu.aep_conn(rate_limit=0)
        config = emu.adobe_config(rate_limit=0)
        server = psutil.Process(emu.process.pid)

        emu.reset()
        main_dir = make_run(work, "main", n)
        server_cpu, client_cpu = server.cpu_times(), psutil.Process().cpu_times()
        main_run = ours(config, main_dir)
        server_used = sum(server.cpu_times()[:2]) - sum(server_cpu[:2])
        client_used = sum(psutil.Process().cpu_times()[:2]) - sum(client_cpu[:2])
        emu.reset()
        emu.faults(latency_ms=50, paths=["/collection/"])
        latency_run = ours(config, make_run(work, "latency", n, offset=n))
        latency_single = per_record(config, 40)
        latency_batches = sequential_batches(config, make_run(work, "lat_seq", 20_000, 5 * n))
        emu.reset()
        single = per_record(config, single_n)
        batches = sequential_batches(config, make_run(work, "seq", n, offset=2 * n))

        rss = {}
        for size in rss_sizes:
            emu.reset()
            rss[size] = publish_rss(conn, make_run(work, f"rss{size}", size, offset=3 * n))
    finally:
        emu.stop()
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "records": n,
        "records_per_s": main_run["records_per_s"],
        "records_per_s_latency_50ms": latency_run["records_per_s"],
        "per_record_records_per_s": round(single, 1),
        "sequential_batches_records_per_s": round(batches, 1),
        "ratio_vs_per_record": round(main_run["records_per_s"] / single, 1),
        "ratio_vs_sequential_batches": round(main_run["records_per_s"] / batches, 2),
        "per_record_records_per_s_latency_50ms": round(latency_single, 1),
        "sequential_batches_records_per_s_latency_50ms": round(latency_batches, 1),
        "ratio_vs_sequential_batches_latency_50ms": round(
            latency_run["records_per_s"] / latency_batches, 2
        ),
        "peak_rss_mb_500k": rss[rss_sizes[0]][0],
        "peak_rss_mb_2m": rss[rss_sizes[1]][0],
        "rss_sizes": list(rss_sizes),
        "records_per_s_rss_runs": [rss[s][1] for s in rss_sizes],
        "requests": main_run["requests"],
        "emulator_cpu_share": round(server_used / main_run["elapsed_s"], 2),
        "publisher_cpu_share": round(client_used / main_run["elapsed_s"], 2),
        # the side that spends more CPU per record limits the run on 2 shared cores
        "limited_by": "publisher" if client_used >= server_used else "emulator",
        "emulator_cpu_us_per_record": round(server_used / n * 1e6, 1),
        "publisher_cpu_us_per_record": round(client_used / n * 1e6, 1),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "concurrency": config.concurrency,
        "cores": os.cpu_count(),
        "quick": args.quick,
    }
    save("publish", result, table(result))
    return result


def table(r: dict[str, Any]) -> str:
    rows = [
        ("ours (rate limit off)", r["records_per_s"], 1.0),
        ("ours, 50 ms latency", r["records_per_s_latency_50ms"], None),
        ("one record per request", r["per_record_records_per_s"], r["ratio_vs_per_record"]),
        (
            "sequential batches",
            r["sequential_batches_records_per_s"],
            r["ratio_vs_sequential_batches"],
        ),
        ("one record per request, 50 ms", r["per_record_records_per_s_latency_50ms"], None),
        (
            "sequential batches, 50 ms",
            r["sequential_batches_records_per_s_latency_50ms"],
            r["ratio_vs_sequential_batches_latency_50ms"],
        ),
    ]
    lines = [
        f"| publisher ({r['records']:,} records, {r['cores']} cores) | records/s | ours is x faster |",
        "|---|---:|---:|",
    ]
    lines += [f"| {name} | {rate:,.0f} | {ratio if ratio else ''} |" for name, rate, ratio in rows]
    lines.append(
        f"| CPU per record: publisher / emulator | {r['publisher_cpu_us_per_record']} µs / "
        f"{r['emulator_cpu_us_per_record']} µs | limited by the {r['limited_by']} |"
    )
    lines.append(
        f"| CPU share of the main run: publisher / emulator (load {r['load_average_1m']}) | "
        f"{r['publisher_cpu_share']} / {r['emulator_cpu_share']} cores | |"
    )
    lines.append(
        f"| peak RSS at {r['rss_sizes'][0]:,} / {r['rss_sizes'][1]:,} records | "
        f"{r['peak_rss_mb_500k']} MB / {r['peak_rss_mb_2m']} MB | |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
