"""Emulator throughput: accepted profile messages per second on ``/collection/batch``.

The emulator must never be the bottleneck of the publishing benchmarks (target: 50,000
messages/s on a 2-core machine, fault injection off). Request bodies are built before the
clock starts so the figure measures the server, not the client's JSON encoding; a pool of
keep-alive connections (aiohttp) keeps the server busy. The baseline in the same run is
the server's bare round-trip rate on its health route, which bounds any route's speed.

    python -m bench.emulator [--quick] [--messages N] [--batch N] [--connections N]
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import platform
import tempfile
import time
from pathlib import Path
from typing import Any

import aiohttp
import psutil

from bench.report import save
from emulator.process import EmulatorServer, start_emulator

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
                    "ups": {
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
                    accepted += payload.count(b'"xactionId"')

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


def run(server: EmulatorServer, messages: int, batch: int, connections: int) -> dict[str, Any]:
    config = server.config
    bodies = build_bodies(config, messages, batch)
    url = f"{server.url}/collection/batch/{config['inlet_id']}"
    headers = server.headers() | {"Content-Type": "application/json"}
    process = psutil.Process(server.process.pid)
    cpu_before = sum(process.cpu_times()[:2])
    started = time.perf_counter()
    accepted = asyncio.run(_post_all(url, bodies, headers, connections))
    elapsed = time.perf_counter() - started
    server_cpu_s = sum(process.cpu_times()[:2]) - cpu_before
    members = server.admin("GET", "/membership/bench-audience", params={"count_only": "true"})[
        "count"
    ]
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


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--messages", type=int, default=None)
    parser.add_argument("--batch", type=int, default=500, help="messages per request")
    parser.add_argument("--connections", type=int, default=8)
    args = parser.parse_args(argv)
    messages = args.messages or (20_000 if args.quick else 400_000)
    load_before = round(os.getloadavg()[0], 2)  # other processes share the 2 cores
    with tempfile.TemporaryDirectory(prefix="bench-emulator-") as state_dir:
        server = start_emulator(Path(state_dir))
        try:
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
            server.reset()
            small = run(server, max(messages // 4, 1_000), 100, args.connections)
        finally:
            server.stop()
    result = {
        "benchmark": "emulator",
        "quick": args.quick,
        "cores": os.cpu_count(),
        "load_average_1m_before": load_before,
        "load_average_1m_after": round(os.getloadavg()[0], 2),
        "python": platform.python_version(),
        "messages_per_s": main_run["messages_per_s"],
        "target_messages_per_s": TARGET_MESSAGES_PER_S,
        "meets_target": main_run["messages_per_s"] >= TARGET_MESSAGES_PER_S,
        "connections": args.connections,
        "runs": {f"batch_{main_run['batch']}": main_run, f"batch_{small['batch']}": small},
        "baseline": {"health_round_trips_per_s": round(baseline_rps)},
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
    return "\n".join(lines)


if __name__ == "__main__":
    main()
