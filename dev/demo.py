"""`make demo`: synthetic CJA data -> audiences -> the local AEP emulator, end to end.

The first run builds five weeks of synthetic clickstream and publishes every example
audience. Each later run adds the next day of data and refreshes: only the entries and exits
are sent. Runs are forced because the demo compresses a day into a minute; a real schedule
is held to each audience's refresh frequency.
"""

from __future__ import annotations

import json
import subprocess
import sys
import time
from datetime import UTC, date, datetime, timedelta

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import read_run_record
from cja_audiences.snapshots import current_run
from dev.local import LOCAL, airflow, airflow_env, prepare_airflow, running_emulator
from emulator.process import EmulatorServer

PERSONS = 20_000
FIRST_DAYS = 35
SEED = 7


def partition_dates(lake: Lake) -> list[date]:
    return sorted(date.fromisoformat(p.name[5:]) for p in lake.events.glob("date=*"))


def land_data(lake: Lake) -> tuple[date, str]:
    """First run: FIRST_DAYS days ending yesterday; later runs: one more day."""
    existing = partition_dates(lake)
    if existing:
        day = existing[-1] + timedelta(days=1)
        generate_synthetic(lake, persons=PERSONS, days=1, end=day, seed=SEED)
        return day, f"added one day of events ({day})"
    end = datetime.now(UTC).date() - timedelta(days=1)
    summary = generate_synthetic(lake, persons=PERSONS, days=FIRST_DAYS, end=end, seed=SEED)
    return (
        end,
        f"generated {summary['rows']} events for {PERSONS} persons, {FIRST_DAYS} days",
    )


def print_summary(lake: Lake, emulator: EmulatorServer) -> None:
    header = f"{'audience':<28}{'size':>8}{'entered':>9}{'exited':>8}{'sent':>8}  guardrails  AEP realized"
    print("\n" + header + "\n" + "-" * len(header))
    for audience_dir in sorted(lake.audiences.iterdir()):
        current = current_run(audience_dir)
        if not current:
            print(f"{audience_dir.name:<28} not committed (see its run folders)")
            continue
        record = read_run_record(lake.run_dir(audience_dir.name, current["run_id"]))
        dif, pub = record.get("diff", {}), record.get("publish", {})
        verdict = "blocked" if record.get("guardrails", {}).get("blocked") else "passed"
        realized = sum(m["status"] == "realized" for m in emulator.membership(audience_dir.name))
        print(
            f"{audience_dir.name:<28}{record.get('compute', {}).get('size', 0):>8}"
            f"{dif.get('entered', 0):>9}{dif.get('exited', 0):>8}{pub.get('acknowledged', 0):>8}"
            f"  {verdict:<10}  {realized}"
        )


def main() -> int:
    started = time.monotonic()
    lake = Lake(LOCAL / "home")
    as_of, what = land_data(lake)
    print(f"lake: {what} under {lake.root}")
    with running_emulator(LOCAL / "emulator", lake.root) as emulator:
        print(f"emulator: {emulator.url}")
        env = airflow_env(LOCAL / "airflow", lake.root, emulator)
        prepare_airflow(env)
        conf = {"as_of": as_of.isoformat(), "force": True}
        print(f"airflow: dags test cja_audiences_all -c '{json.dumps(conf)}'")
        log = LOCAL / "demo-airflow.log"
        with log.open("w") as out:
            try:
                airflow(
                    ["dags", "test", "cja_audiences_all", "-c", json.dumps(conf)],
                    env,
                    stdout=out,
                    stderr=subprocess.STDOUT,
                )
            except subprocess.CalledProcessError:
                print(f"the DAG run failed; its log is in {log}", file=sys.stderr)
                return 1
        print_summary(lake, emulator)
    print(f"\ndone in {time.monotonic() - started:.0f} s; Airflow log: {log}")
    print("run `make demo` again to add a day of data and see a diff-based refresh")
    return 0


if __name__ == "__main__":
    sys.exit(main())
