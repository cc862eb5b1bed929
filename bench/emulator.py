"""Emulator throughput: accepted profile messages per second on ``/collection/batch``.

The emulator must never be the bottleneck of the publishing benchmarks (target: 50,000
messages/s on a 2-core machine, validation and storage on, fault injection off). Request
bodies are built before the clock starts so the figure measures the server, not the
client's JSON encoding; a pool of keep-alive connections (aiohttp) keeps the server busy.

The yardstick in the same run is a bare FastAPI/uvicorn server that only parses the same
bodies (``bench.bare_server``), measured before and after the emulator so load drift
averages out: ``ratio_to_bare`` is the emulator's share of what the stack allows. On a
shared machine the absolute figures follow the load (recorded before and after) and
``cpu_loop_mops`` (a fixed pure-Python loop) says how fast a core was during the run.

    python -m bench.emulator [--quick] [--messages N] [--batch N] [--connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import subprocess
import sys
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil
import requests

from bench.report import save
from emulator.process import ROOT, EmulatorServer, free_port, start_emulator

TARGET_MESSAGES_PER_S = 50_000


def profile_message(config: dict[str, Any], index: int, audience_id: str) -> dict[str, Any]:
    """A realistic CJA-audience membership record (~500 bytes), as the publisher sends."""
    ref = {
        "id": config["schema_id"],
        "contentType": "application/vnd.adobe.xed-full+json;version=1",
    }
    return {
        "header": {
            "schemaRef": ref,
            "imsOrgId": config["org_id"],
            "datasetId": config["dataset_id"],
            "source": {"name": "cja-audiences bench"},
        },
        "body": {
            "xdmMeta": {"schemaRef": ref},
            "xdmEntity": {
                "identityMap": {"ECID": [{"id": f"{index:038d}", "primary": True}]},
                "segmentMembership": {
                    config["segment_namespace"]: {  # provisioned: stored, not dropped
                        audience_id: {
                            "status": "realized" if index % 10 else "exited",
                            "lastQualificationTime": "2026-11-28T12:00:00Z",
                        }
                    }
                },
            },
        },
    }


def build_bodies(config: dict[str, Any], messages: int, batch: int) -> list[bytes]:
    bodies = []
    for start in range(0, messages, batch):
        chunk = [
            profile_message(config, i, "bench-audience")
            for i in range(start, min(start + batch, messages))
        ]
        bodies.append(json.dumps({"messages": chunk}, separators=(",", ":")).encode())
    return bodies


def accepted_in(payload: bytes) -> int:
    """Messages a 207 accepted: the emulator's xactionIds, or the bare server's count."""
    if payload.startswith(b'{"messages":'):
        return int(payload[12:-1])
    return payload.count(b'"xactionId"')


async def _post_all(
    url: str, bodies: list[bytes], headers: dict[str, str], connections: int
) -> int:
    """POST every body over ``connections`` keep-alive connections; returns accepted count."""
    queue: asyncio.Queue[bytes] = asyncio.Queue()
    for body in bodies:
        queue.put_nowait(body)
    accepted = 0
    connector = aiohttp.TCPConnector(limit=connections)
    async with aiohttp.ClientSession(connector=connector, headers=headers) as session:

        async def worker() -> None:
            nonlocal accepted
            while not queue.empty():
                body = queue.get_nowait()
                async with session.post(url, data=body) as response:
                    payload = await response.read()
                    if response.status != 207:
                        raise RuntimeError(f"HTTP {response.status}: {payload[:300]!r}")
                    accepted += accepted_in(payload)

        await asyncio.gather(*(worker() for _ in range(connections)))
    return accepted


async def _round_trips(url: str, requests_total: int, connections: int) -> float:
    connector = aiohttp.TCPConnector(limit=connections)
    per_worker = requests_total // connections
    async with aiohttp.ClientSession(connector=connector) as session:

        async def worker() -> None:
            for _ in range(per_worker):
                async with session.get(url) as response:
                    await response.read()

        started = time.perf_counter()
        await asyncio.gather(*(worker() for _ in range(connections)))
        return per_worker * connections / (time.perf_counter() - started)


def timed_post(
    url: str, pid: int, bodies: list[bytes], headers: dict[str, str], connections: int
) -> tuple[int, float, float]:
    """(accepted, elapsed s, server CPU s) of posting every body to ``url``."""
    process = psutil.Process(pid)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    accepted = asyncio.run(_post_all(url, bodies, headers, connections))
    elapsed = time.perf_counter() - started
    return accepted, elapsed, sum(process.cpu_times()[:2]) - cpu_before


def run(server: EmulatorServer, messages: int, batch: int, connections: int) -> dict[str, Any]:
    config = server.config
    bodies = build_bodies(config, messages, batch)
    url = f"{server.url}/collection/batch/{config['inlet_id']}"
    headers = server.headers() | {"Content-Type": "application/json"}
    accepted, elapsed, server_cpu_s = timed_post(
        url, server.process.pid, bodies, headers, connections
    )
    params = {"count_only": "true", "namespace": config["segment_namespace"]}
    members = server.admin("GET", "/membership/bench-audience", params=params)["count"]
    return {
        "messages": messages,
        "batch": batch,
        "requests": len(bodies),
        "mean_request_bytes": round(sum(map(len, bodies)) / len(bodies)),
        "accepted": accepted,
        "members_in_store": members,
        "elapsed_s": round(elapsed, 3),
        "messages_per_s": round(accepted / elapsed),
        "requests_per_s": round(len(bodies) / elapsed, 1),
        # Load-independent: what one core of server CPU sustains (the machine is shared).
        "server_cpu_s": round(server_cpu_s, 3),
        "messages_per_server_cpu_s": round(accepted / server_cpu_s),
    }


def bare(config: dict[str, Any], messages: int, batch: int, connections: int) -> dict[str, Any]:
    """The bare server's rate on the same bodies (a subprocess, like the emulator)."""
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "bench.bare_server", "--port", str(port)], cwd=ROOT
    )
    try:
        url = f"http://127.0.0.1:{port}"
        _wait_until_up(f"{url}/health")
        bodies = build_bodies(config, messages, batch)
        accepted, elapsed, cpu_s = timed_post(
            f"{url}/collection/batch/{config['inlet_id']}", process.pid, bodies, {}, connections
        )
    finally:
        process.terminate()
        process.wait(10)
    return {
        "messages_per_s": round(accepted / elapsed),
        "server_cpu_s": round(cpu_s, 3),
        "messages_per_server_cpu_s": round(accepted / cpu_s) if cpu_s else None,
    }


def _wait_until_up(url: str) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        try:
            requests.get(url, timeout=1)
            return
        except requests.ConnectionError:
            time.sleep(0.1)
    raise RuntimeError(f"the bare server did not answer at {url}")


def cpu_loop_mops() -> float:
    """Millions of simple interpreter loop steps per second: the speed of a core right now."""
    started = time.process_time()
    total = 0
    for i in range(3_000_000):
        total += i & 7
    return round(3.0 / (time.process_time() - started), 2)


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--batch", type=int, default=500, help="messages per request")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    messages = args.messages or (20_000 if args.quick else 400_000)
    load_before = round(os.getloadavg()[0], 2)  # other processes share the 2 cores
    cpu_before = cpu_loop_mops()
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as state_dir:
        server = start_emulator(Path(state_dir))
        try:
            bare_before = bare(server.config, messages, args.batch, args.connections)
            asyncio.run(_round_trips(f"{server.url}/_emulator/health", 500, args.connections))
            baseline_rps = asyncio.run(
                _round_trips(
                    f"{server.url}/_emulator/health",
                    2_000 if args.quick else 10_000,
                    args.connections,
                )
            )
            server.reset()
            main_run = run(server, messages, args.batch, args.connections)
            bare_after = bare(server.config, messages, args.batch, args.connections)
            server.reset()
            small = run(server, max(messages // 4, 1_000), 100, args.connections)
        finally:
            server.stop()
    bare_rate = round((bare_before["messages_per_s"] + bare_after["messages_per_s"]) / 2)
    bare_cpu = [b["messages_per_server_cpu_s"] or 0 for b in (bare_before, bare_after)]
    result = {
        "benchmark": "emulator",
        "quick": args.quick,
        "cores": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "cpu_loop_mops_before": cpu_before,
        "cpu_loop_mops_after": cpu_loop_mops(),
        "python": platform.python_version(),
        "messages_per_s": main_run["messages_per_s"],
        "target_messages_per_s": TARGET_MESSAGES_PER_S,
        "meets_target": main_run["messages_per_s"] >= TARGET_MESSAGES_PER_S,
        "bare_messages_per_s": bare_rate,
        "ratio_to_bare": round(main_run["messages_per_s"] / bare_rate, 2),
        "messages_per_server_cpu_s": main_run["messages_per_server_cpu_s"],
        # The same ratio per server CPU second: what the code costs, whatever share of the
        # cores each server got (on a loaded machine the ratio above follows the scheduler).
        "cpu_ratio_to_bare": round(2 * main_run["messages_per_server_cpu_s"] / sum(bare_cpu), 2)
        if all(bare_cpu)
        else None,
        "connections": args.connections,
        "runs": {f"batch_{main_run['batch']}": main_run, f"batch_{small['batch']}": small},
        "baseline": {
            "health_round_trips_per_s": round(baseline_rps),
            "bare_before": bare_before,
            "bare_after": bare_after,
        },
    }
    save("emulator", result, table(result))
    return result


def table(result: dict[str, Any]) -> str:
    lines = [
        "| run | messages | batch | requests/s | messages/s | messages per server CPU s "
        "| accepted | in store |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for name, r in result["runs"].items():
        lines.append(
            f"| {name} | {r['messages']:,} | {r['batch']} | {r['requests_per_s']:,} | "
            f"{r['messages_per_s']:,} | {r['messages_per_server_cpu_s']:,} | "
            f"{r['accepted']:,} | {r['members_in_store']:,} |"
        )
    baseline = result["baseline"]["health_round_trips_per_s"]
    lines.append(f"| baseline: GET /_emulator/health | | | {baseline:,} | | | | |")
    for when in ("before", "after"):
        b = result["baseline"][f"bare_{when}"]
        lines.append(
            f"| bare FastAPI parse-only ({when}) | | | | {b['messages_per_s']:,} "
            f"| {b['messages_per_server_cpu_s'] or 0:,} | | |"
        )
    lines.append(
        f"| **ratio to bare** | | | | {result['ratio_to_bare']} "
        f"| {result['cpu_ratio_to_bare']} | | "
        f"load {result['load_average_1m_before']} → {result['load_average_1m_after']} |"
    )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
