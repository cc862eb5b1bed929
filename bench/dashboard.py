"""Dashboard pages for 150 audiences x 30 runs each (target: well under a second each).

Builds a lake of 150 specs and 30 runs per audience whose run.json files have the pipeline's
sections and sizes (compute with its SQL, diff, 11 guardrail checks, publish), then times
the overview and one audience page through the app as Airflow mounts it, signed in through
Airflow's auth manager: the median of several requests, server-side (in-process, no network).
The first request (nothing cached) is reported too.

    python -m bench.dashboard [--audiences 150] [--runs 30] [--requests 9]
"""

from __future__ import annotations

import argparse
import os
import statistics
import tempfile
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from bench.report import peak_rss_mb, save

TARGET_MS = 1000.0
REPO = Path(__file__).resolve().parents[1]
FREQUENCIES = ("daily", "weekly", "every_4_hours", "monthly")


def record(audience_id: str, i: int, runs: int, sql: str) -> dict[str, Any]:
    """The run.json of run ``i``: mostly published, some dry runs, skips, blocks, failures."""
    size = 50_000 + 500 * i
    kind = ("scheduled", "manual", "asset_triggered")[i % 3]
    rec: dict[str, Any] = {
        "audience_id": audience_id,
        "run_id": f"{kind}__{i:03d}",
        "request": {"run_type": kind, "as_of": "2026-11-30", "force": False},
        "gate": {"due": True, "reason": "due"},
        "compute": {
            "size": size,
            "window": {"start": "2026-11-24", "end": "2026-11-30"},
            "rows_scanned": 4_000_000,
            "sql": sql,
            "params": {"p_add_to_cart": "commerce.productListAdds", "v1": "commerce.productViews"},
            "preview_metrics": {"member_revenue_share": 0.31},
        },
        "diff": {
            "entered": 900 + i,
            "exited": 400 + i,
            "size": size,
            "previous_size": size - 500,
            "previous_run_id": f"scheduled__{i - 1:03d}" if i else None,
        },
        "guardrails": {
            "blocked": False,
            "checks": [
                {
                    "name": f"check_{n}",
                    "verdict": "pass",
                    "figure": n,
                    "limit": 100,
                    "message": f"check_{n}: {n} is within the limit of 100 (Adobe hard limit)",
                }
                for n in range(11)
            ],
        },
    }
    outcome = i % 10
    if outcome == 7:
        rec["status"] = "dry_run"
        rec["publish"] = {"status": "dry_run", "records": 1300, "would_send": 1300}
    elif outcome == 8:
        rec["guardrails"]["blocked"] = True
        rec["guardrails"]["checks"][3] |= {"verdict": "block", "message": "change: too big"}
        rec["status"] = "failed"
        rec["failure"] = {"stage": "guardrails", "reason": "blocked by 1 guardrail violation"}
    elif outcome == 9 and i != runs - 1:
        rec = {k: rec[k] for k in ("audience_id", "run_id", "request")}
        rec["gate"] = {"due": False, "reason": "skipped: already published in this period"}
    else:
        rec["status"] = "committed"
        rec["publish"] = {
            "status": "ok",
            "records": 1300,
            "acknowledged": 1300,
            "dead_lettered": 0,
            "audience": {"url": f"https://experience.adobe.com/#/aep/{audience_id}"},
        }
        rec["commit"] = {"run_id": rec["run_id"], "size": size}
    return rec


def build(root: Path, audiences: int, runs: int) -> tuple[Path, Path]:
    import pyarrow as pa

    from cja_audiences.lake.layout import Lake, write_json, write_parquet
    from cja_audiences.lake.schema import MEMBER_SCHEMA

    specs = root / "specs"
    specs.mkdir(parents=True)
    base = yaml.safe_load((REPO / "include/audiences/cart_abandoners.yaml").read_text())
    sql = "SELECT person_id, identity FROM events WHERE event_type = $v1\n" * 40
    members = pa.table(
        {"person_id": ["p1"], "namespace": ["ECID"], "identity": ["1" * 38]}, schema=MEMBER_SCHEMA
    )
    lake = Lake(root / "home")
    start = datetime.now(UTC) - timedelta(days=runs)
    for a in range(audiences):
        audience_id = f"audience_{a:03d}"
        spec = base | {"id": audience_id, "name": f"Audience {a:03d}", "tags": [f"team{a % 5}"]}
        spec["refresh"] = base["refresh"] | {"frequency": FREQUENCIES[a % 4]}
        (specs / f"{audience_id}.yaml").write_text(yaml.safe_dump(spec))
        audience_dir = lake.audience_dir(audience_id)
        last_committed = None
        for i in range(runs):
            rec = record(audience_id, i, runs, sql)
            run_dir = audience_dir / "runs" / rec["run_id"]
            write_parquet(members, run_dir / "members.parquet")
            stamp = (start + timedelta(days=i)).timestamp()
            os.utime(run_dir / "members.parquet", (stamp, stamp))
            write_json(rec, run_dir / "run.json")
            if "commit" in rec:
                last_committed = rec
        write_json(
            {
                "run_id": last_committed["run_id"],
                "size": last_committed["diff"]["size"],
                "committed_at": datetime.now(UTC).isoformat(),
            },
            audience_dir / "current.json",
        )
    return specs, lake.root


def timed(client: Any, path: str, requests: int) -> tuple[float, list[float]]:
    """(first request ms, the later requests' ms)."""
    times = []
    for _ in range(requests + 1):
        began = time.perf_counter()
        response = client.get(path)
        times.append((time.perf_counter() - began) * 1000)
        assert response.status_code == 200, response.text[:500]
    return times[0], times[1:]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--audiences", type=int, default=150)
    parser.add_argument("--runs", type=int, default=30)
    parser.add_argument("--requests", type=int, default=9)
    args = parser.parse_args()
    root = Path(tempfile.mkdtemp(prefix="bench-dashboard-"))
    os.environ["AIRFLOW_HOME"] = str(root / "airflow")
    os.environ["AIRFLOW__CORE__LOAD_EXAMPLES"] = "False"
    specs, home = build(root, args.audiences, args.runs)
    os.environ["CJA_AUDIENCES_SPECS"], os.environ["CJA_AUDIENCES_HOME"] = str(specs), str(home)

    from airflow.api_fastapi.app import init_auth_manager
    from airflow.api_fastapi.auth.managers.simple.user import SimpleAuthManagerUser
    from airflow.utils import db
    from fastapi.testclient import TestClient

    from cja_audiences.airflow.web import create_app

    db.initdb()
    manager = init_auth_manager()
    client = TestClient(create_app(trigger=lambda *a: "unused"))
    client.cookies.set(
        "_token", manager.generate_jwt(SimpleAuthManagerUser(username="admin", role="admin"))
    )
    overview_first, overview = timed(client, "/", args.requests)
    page = f"/audiences/audience_{args.audiences // 3:03d}"
    audience_first, audience = timed(client, page, args.requests)
    run_first, run = timed(client, f"{page}/runs/manual__007", args.requests)  # a dry run
    result = {
        "audiences": args.audiences,
        "runs_per_audience": args.runs,
        "requests": args.requests,
        "overview_ms": round(statistics.median(overview), 1),
        "overview_first_ms": round(overview_first, 1),
        "audience_page_ms": round(statistics.median(audience), 1),
        "audience_page_first_ms": round(audience_first, 1),
        "run_page_ms": round(statistics.median(run), 1),
        "target_ms": TARGET_MS,
        "peak_rss_mb": peak_rss_mb(),
        "load_average": [round(x, 2) for x in os.getloadavg()],
        "cpus": os.cpu_count(),
    }
    table = "\n".join(
        [
            "| page | median ms | first request ms | target ms |",
            "|---|---|---|---|",
            f"| overview ({args.audiences} audiences) | {result['overview_ms']} | "
            f"{result['overview_first_ms']} | < {TARGET_MS:.0f} |",
            f"| audience page ({args.runs} runs) | {result['audience_page_ms']} | "
            f"{result['audience_page_first_ms']} | < {TARGET_MS:.0f} |",
            f"| run review page | {result['run_page_ms']} | {round(run_first, 1)} | - |",
            f"load average {result['load_average']} on {result['cpus']} cores",
        ]
    )
    save("dashboard", result, table)


if __name__ == "__main__":
    main()
