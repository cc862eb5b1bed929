"""Renewals over a quarter: 90 daily refreshes of a large audience with daily churn (issue 12).

Each day moves the package clock and the emulator's clock by one day, cuts 0.5% of the
members and adds as many new ones, then runs the real stages on the run folder: the diff
(entries, exits and renewals before the next refresh plus the margin), ``publish_run`` over
HTTP and the commit. After every refresh the emulator's unexpired realized members are read
back and compared with the committed snapshot; any snapshot member AEP does not hold counts
towards ``aep_missing_max`` (must be 0).

``python -m bench.renewal [--quick] [--members N] [--days D]`` writes
``bench/results/renewal.json`` (keys: days, members, aep_missing_max, renewed_share_max,
records_sent_total, full_republish_records, seconds) and prints JSON and a markdown table.
"""

from __future__ import annotations

import argparse
import io
import os
import random
import shutil
import tempfile
import time
from datetime import timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import requests

from bench.report import peak_rss_mb, save
from cja_audiences import clock, snapshots
from cja_audiences.adobe.sender import SendOptions
from cja_audiences.diff import diff_members
from cja_audiences.lake.layout import write_parquet
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.lifetime import Lifetime, renew_before
from cja_audiences.publish.streaming import PublishOptions, publish_run
from cja_audiences.specs.model import AudienceSpec

SPEC = {
    "id": "bench_renewal",
    "name": "Renewal benchmark audience",
    "refresh": {"frequency": "daily", "lookback_days": 30, "start": "2026-01-01T06:00:00Z"},
    "filter": {"template": "bench.sql.j2"},
}
CHURN = 0.005
LIFETIME = Lifetime(ttl=timedelta(days=30), margin=timedelta(hours=48), spread=timedelta(days=21))


def member_table(ids: list[int]) -> pa.Table:
    names = [f"p{i:010d}" for i in sorted(ids)]
    return pa.table(
        {"person_id": names, "namespace": ["ECID"] * len(names), "identity": names},
        schema=MEMBER_SCHEMA,
    )


def aep_missing(emu: Any, audience_id: str, members: Path) -> int:
    """Snapshot members the emulator does not hold as realized and unexpired."""
    response = requests.get(
        f"{emu.url}/_emulator/membership/{audience_id}",
        params={"format": "identities", "status": "realized"},
        timeout=600,
    )
    response.raise_for_status()
    held = pq.read_table(io.BytesIO(response.content), columns=["identity"])
    with duckdb.connect() as con:
        con.register("held", held)
        return con.execute(
            "SELECT count(*) FROM read_parquet($members) AS m ANTI JOIN held USING (identity)",
            {"members": str(members)},
        ).fetchone()[0]


def run(members: int, days: int, work: Path) -> dict[str, Any]:
    from emulator.process import start_emulator

    (work / "emulator").mkdir(parents=True)
    emu = start_emulator(work / "emulator")
    spec = AudienceSpec.model_validate(SPEC)
    config = emu.adobe_config(rate_limit=0)
    options = PublishOptions(send=SendOptions(rate_limit=0), lifetime=LIFETIME)
    audience_dir = work / "home" / "audiences" / spec.id
    rng = random.Random(12)
    current = list(range(members))
    next_id = members
    churn = int(members * CHURN)
    daily: list[dict[str, Any]] = []
    started = time.perf_counter()
    try:
        for day in range(days):
            os.environ[clock.OFFSET_ENV] = str(day * 86400)
            if day:
                gone = set(rng.sample(range(len(current)), churn))
                current = [m for i, m in enumerate(current) if i not in gone]
                current += range(next_id, next_id + churn)
                next_id += churn
            run_dir = audience_dir / "runs" / f"day{day:03d}"
            write_parquet(member_table(current), run_dir / "members.parquet")
            previous = snapshots.current_run_dir(audience_dir)
            cutoff = renew_before(spec, LIFETIME, clock.now())
            diff = diff_members(run_dir, previous, renew_before=cutoff)
            summary = publish_run(config, spec, run_dir, options=options)
            snapshots.commit(audience_dir, run_dir)
            missing = aep_missing(emu, spec.id, run_dir / "members.parquet")
            daily.append(
                {
                    "day": day,
                    "size": diff["size"],
                    "entered": diff["entered"],
                    "exited": diff["exited"],
                    "renewed": diff["renewed"],
                    "sent": summary["records"],
                    "aep_missing": missing,
                }
            )
            print(f"day {day}: {daily[-1]}", flush=True)
            if previous is not None:  # keep the disk small: only the last two runs matter
                shutil.rmtree(previous.parent / f"day{day - 2:03d}", ignore_errors=True)
            emu.advance_clock(days=1)
    finally:
        os.environ.pop(clock.OFFSET_ENV, None)
        emu.stop()
    seconds = time.perf_counter() - started
    after_ttl = [d for d in daily if d["day"] >= LIFETIME.ttl.days]
    return {
        "days": days,
        "members": members,
        "churn_daily": CHURN,
        "aep_missing_max": max(d["aep_missing"] for d in daily),
        "renewed_share_max": round(
            max((d["renewed"] / d["size"] for d in after_ttl), default=0), 4
        ),
        "records_sent_total": sum(d["sent"] for d in daily),
        "full_republish_records": sum(d["size"] for d in daily),
        "seconds": round(seconds, 1),
        "renewed_by_day": [d["renewed"] for d in daily],
        "ttl_days": LIFETIME.ttl.days,
        "margin_hours": LIFETIME.margin.total_seconds() / 3600,
        "spread_days": LIFETIME.spread.days,
        "peak_rss_mb": peak_rss_mb(),
        "load_average_1m": round(os.getloadavg()[0], 2),
        "cores": os.cpu_count(),
    }


def table(r: dict[str, Any]) -> str:
    saved = 1 - r["records_sent_total"] / r["full_republish_records"]
    rows = [
        ("days x members", f"{r['days']} x {r['members']:,} ({r['churn_daily']:.1%} churn/day)"),
        ("aep_missing_max (must be 0)", f"{r['aep_missing_max']:,}"),
        ("renewed_share_max after the first TTL", f"{r['renewed_share_max']:.2%}"),
        ("records sent (entries + exits + renewals)", f"{r['records_sent_total']:,}"),
        ("full republish every day would send", f"{r['full_republish_records']:,}"),
        ("records saved", f"{saved:.1%}"),
        ("seconds", f"{r['seconds']:,} (load {r['load_average_1m']}, {r['cores']} cores)"),
    ]
    return "\n".join(["| figure | value |", "|---|---:|", *[f"| {a} | {b} |" for a, b in rows]])


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="20,000 members (CI size)")
    parser.add_argument("--members", type=int, help="audience size (default 1,000,000)")
    parser.add_argument("--days", type=int, default=90)
    args = parser.parse_args(argv)
    members = args.members or (20_000 if args.quick else 1_000_000)
    work = Path(tempfile.mkdtemp(prefix="bench-renewal-"))
    try:
        result = run(members, args.days, work)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    result["quick"] = args.quick
    save("renewal", result, table(result))
    return result


if __name__ == "__main__":
    main()
