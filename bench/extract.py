"""Extract throughput and memory: synthetic generate+land, and ingesting a JSON export (issue 4).

Measures, each in a fresh process (peak RSS is the process's own maximum):
- ``generate_synthetic`` writing 10M events (30 days) and their persons into an empty lake;
- landing a CJA full-table export delivery of about 1 GB of JSON lines (gzip, 4 files,
  manifest checked) through ``ExportSource`` + the partition writer: parse, map, validate,
  quarantine check, dedupe, sort, atomic publish;
- the baseline for the second, in the same run: DuckDB's own ``read_json`` of the same files
  straight into one Parquet file (no mapping, checks, partitions or dedupe).

``python -m bench.extract [--quick]`` writes ``bench/results/extract.json`` and prints JSON
and a markdown table. Timings are compared as ratios within the run, never asserted.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import shutil
import subprocess
import sys
import tempfile
import time
from datetime import date
from pathlib import Path
from typing import Any

from bench.report import peak_rss_mb, save

ROOT = Path(__file__).resolve().parents[1]
END = date(2026, 11, 27)
DAYS = 30
EVENTS_PER_PERSON = 21.0  # the generator's default density over 30 days
JSON_BYTES_PER_EVENT = 585  # measured: one synthetic event as an export JSON line
TARGET_S = 30.0  # issue 4: 10M events generated and landed in at most 30 s


def _usage() -> dict[str, float]:
    """Peak RSS and CPU seconds of this process: CPU time does not depend on how busy the
    shared machine is, wall time does."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return {
        "peak_rss_mb": peak_rss_mb(),
        "cpu_s": round(usage.ru_utime + usage.ru_stime, 2),
    }


def _gzip_sizes(files: list[Path]) -> tuple[int, int]:
    """(compressed, uncompressed) bytes; gzip stores the size mod 2^32 in its last 4 bytes."""
    packed = unpacked = 0
    for path in files:
        packed += path.stat().st_size
        with path.open("rb") as handle:
            handle.seek(-4, os.SEEK_END)
            unpacked += int.from_bytes(handle.read(4), "little")
    return packed, unpacked


# -- children (one measurement per process) --------------------------------------------------


def child_synthetic(home: Path, persons: int) -> dict[str, Any]:
    from cja_audiences.extract.synthetic import generate_synthetic
    from cja_audiences.lake.layout import Lake

    started = time.perf_counter()
    summary = generate_synthetic(
        Lake(home), persons=persons, days=DAYS, end=END, seed=1, events_per_person=EVENTS_PER_PERSON
    )
    seconds = time.perf_counter() - started
    return {"events": summary["rows"], "seconds": round(seconds, 2), "persons": persons}


def child_export(home: Path, landing: Path) -> dict[str, Any]:
    from cja_audiences.extract.exports import ExportSource, complete_deliveries
    from cja_audiences.extract.source import run_extract
    from cja_audiences.lake.layout import Lake

    started = time.perf_counter()
    [delivery] = complete_deliveries(landing)
    summary = run_extract(ExportSource(delivery), Lake(home), run_id="bench")
    seconds = time.perf_counter() - started
    return {
        "events": summary["rows"],
        "seconds": round(seconds, 2),
        "quarantined": summary["quarantined"],
        "partitions": len(summary["partitions"]),
        # the landing's session step (issue 18): sessions of what it lands and of later dates
        "session_seconds": summary["sessions"]["seconds"],
    }


def child_baseline(landing: Path, out: Path) -> dict[str, Any]:
    import duckdb

    files = sorted(str(p) for p in landing.glob("cja-export-*.json.gz"))[:-1]  # not the manifest
    started = time.perf_counter()
    con = duckdb.connect()
    con.execute(
        "COPY (SELECT * FROM read_json(?, format = 'newline_delimited')) TO ? (FORMAT parquet)",
        [files, str(out)],
    )
    events = con.execute("SELECT count(*) FROM read_parquet(?)", [str(out)]).fetchone()[0]
    return {"events": events, "seconds": round(time.perf_counter() - started, 2)}


def run_child(*args: str) -> dict[str, Any]:
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT / "plugins"), str(ROOT)])}
    out = subprocess.run(
        [sys.executable, "-m", "bench.extract", "--child", *args],
        cwd=ROOT,
        env=env,
        check=True,
        capture_output=True,
        text=True,
    )
    result = json.loads(out.stdout.strip().splitlines()[-1])
    result["events_per_s"] = round(result["events"] / result["seconds"])
    return result


def child(args: list[str]) -> None:
    kind, *rest = args
    if kind == "synthetic":
        result = child_synthetic(Path(rest[0]), int(rest[1]))
    elif kind == "export":
        result = child_export(Path(rest[0]), Path(rest[1]))
    else:
        result = child_baseline(Path(rest[0]), Path(rest[1]))
    print(json.dumps({**result, **_usage()}))


# -- the run --------------------------------------------------------------------------------


def prepare_delivery(work: Path, megabytes: int) -> tuple[Path, int]:
    """A synthetic lake written as a 4-file JSON delivery of about ``megabytes`` (untimed)."""
    from cja_audiences.extract.exports import write_delivery
    from cja_audiences.extract.synthetic import generate_synthetic
    from cja_audiences.lake.layout import Lake

    events = megabytes * 1_000_000 // JSON_BYTES_PER_EVENT
    source = Lake(work / "export-source")
    generate_synthetic(
        source,
        persons=max(1, round(events / EVENTS_PER_PERSON)),
        days=DAYS,
        end=END,
        seed=2,
        events_per_person=EVENTS_PER_PERSON,
    )
    landing = work / "landing"
    write_delivery(
        str(source.events / "*" / "*.parquet"),
        landing,
        report_instance_id="bench",
        fmt="json",
        files=4,
    )
    shutil.rmtree(source.root)
    return landing, events


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="small sizes for CI")
    parser.add_argument("--events", type=int, help="synthetic events to generate (10M)")
    parser.add_argument("--export-mb", type=int, help="JSON export size, uncompressed (1024)")
    parser.add_argument("--child", nargs="+", help=argparse.SUPPRESS)
    args = parser.parse_args(argv)
    if args.child:
        child(args.child)
        return {}

    events = args.events or (300_000 if args.quick else 10_000_000)
    export_mb = args.export_mb or (32 if args.quick else 1024)
    work = Path(tempfile.mkdtemp(prefix="bench-extract-"))
    load_before = os.getloadavg()[0]
    try:
        persons = round(events / EVENTS_PER_PERSON)
        synthetic = run_child("synthetic", str(work / "synthetic"), str(persons))
        shutil.rmtree(work / "synthetic")
        landing, _ = prepare_delivery(work, export_mb)
        gz_bytes, json_bytes = _gzip_sizes(sorted(landing.glob("cja-export-*.json.gz"))[:-1])
        ingest = run_child("export", str(work / "ingest"), str(landing))
        baseline = run_child("baseline", str(landing), str(work / "baseline.parquet"))
    finally:
        shutil.rmtree(work, ignore_errors=True)

    result = {
        "synthetic": {**synthetic, "days": DAYS, "target_s": TARGET_S},
        "export_json_gz": {
            **ingest,
            "input_gz_mb": round(gz_bytes / 1e6, 1),
            "input_json_mb": round(json_bytes / 1e6, 1),
            "files": 4,
        },
        "baseline_duckdb_read_json": baseline,
        "ingest_vs_baseline": round(ingest["events_per_s"] / baseline["events_per_s"], 2),
        "ingest_vs_baseline_cpu": round(baseline["cpu_s"] / ingest["cpu_s"], 2),
        "cores": os.cpu_count(),
        "load_average_at_start": round(load_before, 2),
        "quick": args.quick,
    }
    save("extract", result, table(result))
    return result


def table(r: dict[str, Any]) -> str:
    s, e, b = r["synthetic"], r["export_json_gz"], r["baseline_duckdb_read_json"]
    lines = [
        f"| extract ({r['cores']} cores, load {r['load_average_at_start']}) "
        "| events | seconds | events/s | CPU s | peak RSS MB |",
        "|---|---:|---:|---:|---:|---:|",
        f"| synthetic generate + land ({s['days']} days; target {s['target_s']:.0f} s) "
        f"| {s['events']:,} | {s['seconds']} | {s['events_per_s']:,} | {s['cpu_s']} "
        f"| {s['peak_rss_mb']} |",
        f"| CJA export json.gz ingest ({e['input_gz_mb']} MB gz / {e['input_json_mb']} MB JSON) "
        f"| {e['events']:,} | {e['seconds']} | {e['events_per_s']:,} | {e['cpu_s']} "
        f"| {e['peak_rss_mb']} |",
        f"| baseline: DuckDB read_json -> one Parquet (no checks; ours x{r['ingest_vs_baseline']}) "
        f"| {b['events']:,} | {b['seconds']} | {b['events_per_s']:,} | {b['cpu_s']} "
        f"| {b['peak_rss_mb']} |",
    ]
    return "\n".join(lines)


if __name__ == "__main__":
    main()
