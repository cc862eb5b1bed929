"""Soak: ten audiences refreshing against the emulator under a random fault schedule (issue 13).

For ``--minutes`` (default 30; ``--quick``: 2), up to three refreshes run at once as worker
processes (the reliability suite's ``tests.reliability.refresh_child``: diff, guardrails,
publish, commit), each for a random audience with a random membership. Meanwhile a seeded
schedule switches the emulator's faults (429 storms with Retry-After, 503s, latency, dropped
connections), restarts the emulator, and SIGKILLs publishers part-way; a killed run is
resumed (a task retry) or abandoned (the next run of the audience must supersede it). Two
refreshes of one audience at once are allowed to collide: the lease skips one of them.

Then the faults stop, every audience gets one more ordinary refresh (its next scheduled run),
and a full reconcile compares what AEP holds as realized with each committed snapshot.

``python -m bench.soak [--quick] [--minutes M] [--seed S]`` writes ``bench/results/soak.json``:
``refreshes`` (committed), ``records`` (acknowledged in ledgers), ``faults_injected``,
``kills_survived``, ``drift_found`` (members wrong in AEP after the reconcile; must be 0).
"""

from __future__ import annotations

import argparse
import json
import os
import random
import subprocess
import sys
import tempfile
import time
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq
import yaml

from bench.report import save
from cja_audiences import snapshots
from cja_audiences.publish.ledger import Ledger
from emulator.process import EmulatorServer, start_emulator

ROOT = Path(__file__).resolve().parents[1]
AUDIENCES = 10
PARALLEL = 3
FAULTS = [
    {},
    {"error_429_rate": 0.2, "retry_after_s": 0.5},
    {"error_503_rate": 0.15},
    {"latency_ms": 30, "jitter_ms": 30},
    {"drop_rate": 0.03},
]
SPEC = {
    "refresh": {"frequency": "daily", "lookback_days": 30},
    "filter": {"template": "purchases.sql.j2"},
    "guardrails": {
        "max_change_pct": 1_000_000,
        "max_exits": 10_000_000,
        "allow_empty": True,
        "max_invalid_identities": 10_000_000,
    },
}


@dataclass
class Soak:
    home: Path
    specs: Path
    emu: EmulatorServer
    rng: random.Random
    counts: dict[str, int] = field(
        default_factory=lambda: dict.fromkeys(
            ["refreshes", "skipped", "failed", "faults_injected", "kills", "restarts"], 0
        )
    )
    runs: int = 0

    def env(self, audience: str) -> dict[str, str]:
        return os.environ | {
            "CJA_AUDIENCES_HOME": str(self.home),
            "CJA_AUDIENCES_SPECS": str(self.specs),
            "CJA_AUDIENCES_LEASE_TTL_S": "3",
            "CJA_AUDIENCES_LEASE_WAIT_S": "5",
            "CJA_TEST_AUDIENCE": audience,
            "CJA_TEST_CHUNK": "500",
            "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(self.emu.aep_conn(rate_limit=0)),
            "PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)]),
        }

    def start(self, audience: str, run_id: str | None = None) -> tuple[subprocess.Popen, str]:
        if run_id is None:
            self.runs += 1
            run_id = f"s{self.runs:05d}"
        start = self.rng.randrange(0, 8_000)
        ids = (start, start + self.rng.randrange(500, 4_000))
        child = subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.refresh_child", run_id, *map(str, ids)],
            cwd=ROOT,
            env=self.env(audience),
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )
        return child, run_id

    def settle(self, code: int) -> None:
        key = {0: "refreshes", 3: "skipped", -9: "kills"}.get(code, "failed")
        self.counts[key] += 1

    def restart_emulator(self) -> None:
        port = int(self.emu.url.rsplit(":", 1)[1])
        self.emu.stop()
        time.sleep(self.rng.uniform(0.2, 1.5))
        self.emu = start_emulator(self.emu.state_dir, port=port)
        self.counts["restarts"] += 1
        self.counts["faults_injected"] += 1


def audience_ids() -> list[str]:
    return [f"soak_{i:02d}" for i in range(AUDIENCES)]


def write_specs(folder: Path) -> None:
    folder.mkdir(parents=True)
    for audience in audience_ids():
        spec = {"id": audience, "name": f"Soak {audience}", **SPEC}
        (folder / f"{audience}.yaml").write_text(yaml.safe_dump(spec))


def run_schedule(soak: Soak, seconds: float) -> None:
    """Refreshes, fault switches, restarts and kills until ``seconds`` have passed."""
    deadline = time.monotonic() + seconds
    running: list[dict[str, Any]] = []
    next_fault = time.monotonic() + soak.rng.uniform(2, 6)
    next_restart = time.monotonic() + soak.rng.uniform(15, 40)
    while time.monotonic() < deadline or running:
        now = time.monotonic()
        for job in list(running):
            code = job["child"].poll()
            if code is None and now >= job["kill_at"]:
                job["child"].kill()
                code = job["child"].wait()
            if code is None:
                continue
            running.remove(job)
            soak.settle(code)
            if code == -9 and soak.rng.random() < 0.5:  # a task retry resumes the run
                child, _ = soak.start(job["audience"], job["run_id"])
                running.append({**job, "child": child, "kill_at": float("inf")})
        if now < deadline and len(running) < PARALLEL:
            audience = soak.rng.choice(audience_ids())
            child, run_id = soak.start(audience)
            kill_at = now + soak.rng.uniform(2, 6) if soak.rng.random() < 0.3 else float("inf")
            running.append(
                {"child": child, "audience": audience, "run_id": run_id, "kill_at": kill_at}
            )
        if now < deadline and now >= next_fault:
            soak.emu.clear_faults()
            soak.emu.faults(seed=soak.rng.randrange(1 << 30), **soak.rng.choice(FAULTS))
            soak.counts["faults_injected"] += 1
            next_fault = now + soak.rng.uniform(3, 10)
        if now < deadline and now >= next_restart:
            soak.restart_emulator()
            next_restart = now + soak.rng.uniform(20, 60)
        time.sleep(0.05)


def reconcile(soak: Soak) -> dict[str, Any]:
    """Members wrong in AEP, per audience: realized but not in the snapshot, or missing."""
    drift, records = {}, 0
    for audience in audience_ids():
        audience_dir = soak.home / "audiences" / audience
        run_dir = snapshots.current_run_dir(audience_dir)
        expected = set()
        if run_dir is not None:
            table = pq.read_table(run_dir / "members.parquet")
            columns = (table["namespace"].to_pylist(), table["identity"].to_pylist())
            expected = set(zip(*columns, strict=True))
        realized = {
            (m["namespace"], m["identity"])
            for m in soak.emu.membership(audience)
            if m["status"] == "realized"
        }
        drift[audience] = len(realized ^ expected)
        for run in (audience_dir / "runs").glob("*") if audience_dir.is_dir() else []:
            records += sum(e["acknowledged"] for e in Ledger(run).entries()) if run.is_dir() else 0
    return {"drift": drift, "records": records}


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="2 minutes (CI)")
    parser.add_argument("--minutes", type=float, default=30.0)
    parser.add_argument("--seed", type=int, default=13)
    args = parser.parse_args(argv)
    minutes = 2.0 if args.quick else args.minutes
    load_before = os.getloadavg()
    with tempfile.TemporaryDirectory(prefix="cja-soak-") as tmp:
        root = Path(tmp)
        (root / "emulator").mkdir()
        write_specs(root / "specs")
        soak = Soak(
            root / "home",
            root / "specs",
            start_emulator(root / "emulator"),
            random.Random(args.seed),
        )
        started = time.monotonic()
        try:
            run_schedule(soak, minutes * 60)
            soak.emu.clear_faults()
            time.sleep(3.2)  # leases of abandoned runs expire
            for audience in audience_ids():  # each audience's next ordinary refresh
                child, _ = soak.start(audience)
                soak.settle(child.wait(timeout=300))
            found = reconcile(soak)
        finally:
            soak.emu.stop()
    result = {
        "minutes": minutes,
        "seed": args.seed,
        "audiences": AUDIENCES,
        "refreshes": soak.counts["refreshes"],
        "skipped_busy": soak.counts["skipped"],
        "failed_runs": soak.counts["failed"],
        "records": found["records"],
        "faults_injected": soak.counts["faults_injected"] + soak.counts["kills"],
        "emulator_restarts": soak.counts["restarts"],
        "kills_survived": soak.counts["kills"],
        "drift_found": sum(found["drift"].values()),
        "drift_by_audience": found["drift"],
        "elapsed_s": round(time.monotonic() - started, 1),
        "load_average_before": [round(x, 2) for x in load_before],
        "load_average_after": [round(x, 2) for x in os.getloadavg()],
    }
    table = "\n".join(
        ["| figure | value |", "|---|---|"]
        + [f"| {k} | {v} |" for k, v in result.items() if k != "drift_by_audience"]
    )
    save("soak", result, table)
    return 0 if result["drift_found"] == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
