"""Audience compute speed on synthetic data (issue 5): ours vs hand-written DuckDB vs pandas.

Two audiences over the same lake (default 10M events / 1M persons):
- ``sequence``: a sessionized sequence (in one session: product view, cart add within 10
  minutes, checkout within 15 minutes with no help page in between; no purchase in that
  session), the example ``checkout_in_one_session``;
- ``metric``: a person-level metric audience (revenue >= 300 and at least 2 orders).

Each is computed three ways in the same run: ``evaluate_audience`` (our compiled SQL, with
members and their identities), the SQL an engineer would write by hand for the same members,
and pandas (what a team would write without us). All three must agree on the members.
``seconds`` is ours from spec to members (compile, query, identities; best of ``--repeat``,
alternating with the hand-written query); ``compute_audience_seconds`` is the whole stage
(plus preview stats and the atomic write of members.parquet).

``why_overhead`` times compute with and without the members' why codes (issue 19; at most
15 % extra), for both audiences and for the metric audience with ``any`` instead of ``all``.

``python -m bench.compute [--quick]`` writes ``bench/results/compute.json`` and prints JSON
and a markdown table. Figures are compared as ratios within the run, never asserted.
"""

from __future__ import annotations

import argparse
import os
import tempfile
import time
from collections.abc import Callable
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pandas as pd
import pyarrow.parquet as pq

from bench.report import save
from cja_audiences.compute import (
    _event_files,
    _register,
    audience_window,
    compute_audience,
    evaluate_audience,
)
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA, PERSON_SCHEMA
from cja_audiences.settings import PROJECT_ROOT, Settings
from cja_audiences.specs.model import AudienceSpec, load_spec

ROOT = Path(__file__).resolve().parents[1]
END = date(2026, 11, 20)
DAYS = 30
TARGETS = {"sequence": 7.0, "metric": 1.5}
# issue 18: ours / hand-written at most (the hand-written sequence sessionizes raw events)
RATIO_TARGETS = {"sequence": 0.5, "metric": 1.0}
VIEW, ADD, CHECKOUT, BUY = (
    "commerce.productViews",
    "commerce.productListAdds",
    "commerce.checkouts",
    "commerce.purchases",
)

METRIC_SPEC = {
    "id": "bench_metric",
    "name": "Revenue >= 300 and 2+ orders",
    "refresh": {"frequency": "daily", "lookback_days": DAYS},
    "filter": {
        "params": {"min_revenue": 300, "min_orders": 2},
        "rules": {
            "person": {
                "all": [
                    {"metric": {"sum": "revenue"}, "op": "gte", "value": {"param": "min_revenue"}},
                    {"metric": "orders", "op": "gte", "value": {"param": "min_orders"}},
                ]
            }
        },
    },
}

# The metric audience with its two conditions under ``any``: members' why codes are then
# evaluated (for ``all`` filters they follow from membership), so this shows that cost.
METRIC_ANY_SPEC = METRIC_SPEC | {
    "id": "bench_metric_any",
    "name": "Revenue >= 300 or 2+ orders",
    "filter": {
        "params": METRIC_SPEC["filter"]["params"],
        "rules": {"person": {"any": METRIC_SPEC["filter"]["rules"]["person"]["all"]}},
    },
}

HANDWRITTEN = {
    "sequence": f"""
WITH e AS (
  SELECT person_id, "timestamp" AS ts, event_id, event_type, page_name,
         lag("timestamp") OVER (PARTITION BY person_id ORDER BY "timestamp", event_id) AS prev_ts
    FROM raw_events
), s AS (
  SELECT *, sum(CASE WHEN ts - prev_ts <= INTERVAL 30 MINUTE THEN 0 ELSE 1 END)
              OVER (PARTITION BY person_id ORDER BY ts, event_id) AS session_no
    FROM e
), bought AS (
  SELECT DISTINCT person_id, session_no FROM s WHERE event_type = '{BUY}'
), f AS (
  SELECT person_id, session_no, ts, event_id,
         event_type = '{VIEW}' AS v, event_type = '{ADD}' AS a,
         event_type = '{CHECKOUT}' AS c, coalesce(page_name = 'help', false) AS h,
         row_number() OVER (PARTITION BY person_id, session_no ORDER BY ts, event_id) AS rn
    FROM s
   WHERE event_type IN ('{VIEW}', '{ADD}', '{CHECKOUT}') OR page_name = 'help'
), step2 AS (
  SELECT *, a AND ts <= max(CASE WHEN v THEN ts END) OVER w + INTERVAL 10 MINUTE AS ok2
    FROM f WINDOW w AS (PARTITION BY person_id, session_no ORDER BY ts, event_id
                        ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), step3 AS (
  SELECT person_id, session_no,
         c AND ts <= max(CASE WHEN ok2 THEN ts END) OVER w + INTERVAL 15 MINUTE
           AND coalesce(max(CASE WHEN h THEN rn END) OVER w, 0)
               <= max(CASE WHEN ok2 THEN rn END) OVER w AS ok3
    FROM step2 WINDOW w AS (PARTITION BY person_id, session_no ORDER BY ts, event_id
                            ROWS BETWEEN UNBOUNDED PRECEDING AND 1 PRECEDING)
), hits AS (
  SELECT DISTINCT person_id, session_no FROM step3 WHERE ok3
)
SELECT DISTINCT h.person_id, p.ecid AS identity
  FROM hits h ANTI JOIN bought USING (person_id, session_no)
  JOIN raw_persons p USING (person_id)
 WHERE p.ecid IS NOT NULL
 ORDER BY h.person_id
""",
    "metric": f"""
SELECT m.person_id, p.ecid AS identity
  FROM (SELECT person_id FROM raw_events GROUP BY person_id
        HAVING sum(revenue) >= 300 AND count_if(event_type = '{BUY}') >= 2) m
  JOIN raw_persons p USING (person_id)
 WHERE p.ecid IS NOT NULL
 ORDER BY m.person_id
""",
}


def handwritten(settings: Settings, spec: AudienceSpec, name: str) -> set[str]:
    con = duckdb.connect()
    try:
        lake = Lake(settings.home)
        window = audience_window(spec, END)
        _register(con, "raw_events", _event_files(lake, window), EVENT_SCHEMA)
        _register(con, "raw_persons", sorted(lake.persons.glob("*.parquet")), PERSON_SCHEMA)
        table = con.sql(HANDWRITTEN[name]).to_arrow_table()
        return set(table.column("person_id").to_pylist())
    finally:
        con.close()


def _load(settings: Settings, spec: AudienceSpec, columns: list[str]) -> pd.DataFrame:
    files = _event_files(Lake(settings.home), audience_window(spec, END))
    return pq.ParquetDataset([str(f) for f in files]).read(columns=columns).to_pandas()


def _with_ecid(settings: Settings, person_ids: pd.Series) -> set[str]:
    persons = pq.read_table(Lake(settings.home).persons, columns=["person_id", "ecid"])
    persons = persons.to_pandas()
    matched = persons[persons["person_id"].isin(person_ids) & persons["ecid"].notna()]
    return set(matched["person_id"])


def pandas_sequence(settings: Settings, spec: AudienceSpec) -> set[str]:
    """Sessionize and match the funnel with vectorised groupby operations."""
    cols = ["person_id", "timestamp", "event_id", "event_type", "page_name"]
    df = _load(settings, spec, cols).sort_values(["person_id", "timestamp", "event_id"])
    df = df.reset_index(drop=True)
    gap = df["timestamp"].diff() > pd.Timedelta(minutes=30)
    new_person = df["person_id"] != df["person_id"].shift()
    df["session"] = (gap | new_person).cumsum()
    bought = set(df.loc[df["event_type"] == BUY, "session"])
    df["rn"] = range(len(df))
    by = df.groupby("session")

    def latest_before(mask: pd.Series, column: str) -> pd.Series:
        values = df[column].where(mask)
        return values.groupby(df["session"]).ffill().groupby(df["session"]).shift(1)

    views = latest_before(df["event_type"] == VIEW, "timestamp")
    ok2 = (df["event_type"] == ADD) & (df["timestamp"] <= views + pd.Timedelta(minutes=10))
    adds_ts, adds_rn = latest_before(ok2, "timestamp"), latest_before(ok2, "rn")
    helps = latest_before(df["page_name"] == "help", "rn").fillna(-1)
    ok3 = (
        (df["event_type"] == CHECKOUT)
        & (df["timestamp"] <= adds_ts + pd.Timedelta(minutes=15))
        & (helps <= adds_rn)
    )
    del by
    sessions = df.loc[ok3, ["session", "person_id"]].drop_duplicates()
    sessions = sessions[~sessions["session"].isin(bought)]
    return _with_ecid(settings, sessions["person_id"])


def pandas_metric(settings: Settings, spec: AudienceSpec) -> set[str]:
    df = _load(settings, spec, ["person_id", "event_type", "revenue"])
    df["order"] = df["event_type"] == BUY
    totals = df.groupby("person_id").agg(revenue=("revenue", "sum"), orders=("order", "sum"))
    chosen = totals[(totals["revenue"] >= 300) & (totals["orders"] >= 2)].index
    return _with_ecid(settings, pd.Series(chosen))


def timed(func: Callable[[], Any]) -> tuple[float, Any]:
    started = time.perf_counter()
    result = func()
    return time.perf_counter() - started, result


def measure(settings: Settings, name: str, spec: AudienceSpec, repeat: int) -> dict[str, Any]:
    in_lake: list[bool] = []

    def ours() -> set[str]:
        result = evaluate_audience(spec, settings=settings, as_of=END, preview=False)
        in_lake.append(result.stats["sessions_in_lake"])
        return set(result.members.column("person_id").to_pylist())

    # ours and hand-written alternate, so both see the same load on a shared machine
    ours_runs, hand_runs = [], []
    for _ in range(repeat):
        ours_runs.append(timed(ours))
        hand_runs.append(timed(lambda: handwritten(settings, spec, name)))
    seconds, our_members = min(ours_runs, key=lambda r: r[0])
    hand_seconds, hand_members = min(hand_runs, key=lambda r: r[0])
    pandas_func = pandas_sequence if name == "sequence" else pandas_metric
    pandas_seconds, pandas_members = timed(lambda: pandas_func(settings, spec))
    with tempfile.TemporaryDirectory() as run_dir:
        full_seconds, _ = timed(
            lambda: compute_audience(spec, settings=settings, run_dir=Path(run_dir), as_of=END)
        )
    return {
        "seconds": round(seconds, 3),
        "handwritten_seconds": round(hand_seconds, 3),
        "pandas_seconds": round(pandas_seconds, 3),
        "compute_audience_seconds": round(full_seconds, 3),
        "ratio_vs_handwritten": round(seconds / hand_seconds, 3),
        "pandas_ratio": round(pandas_seconds / seconds, 2),
        "target_seconds": TARGETS[name],
        "target_ratio": RATIO_TARGETS[name],
        "size": len(our_members),
        "sessions_in_lake": all(in_lake),
        "agree_handwritten": our_members == hand_members,
        "agree_pandas": our_members == pandas_members,
    }


def measure_why(settings: Settings, spec: AudienceSpec, repeat: int) -> dict[str, Any]:
    """Compute with and without members' why codes (issue 19), alternating, best of
    ``repeat``: the extra time is the cost of explaining every member."""
    runs: dict[bool, list[float]] = {True: [], False: []}
    for _ in range(repeat):
        for codes in (True, False):
            seconds, _ = timed(
                lambda codes=codes: evaluate_audience(
                    spec, settings=settings, as_of=END, preview=False, why_codes=codes
                )
            )
            runs[codes].append(seconds)
    with_codes, without = min(runs[True]), min(runs[False])
    return {
        "with_why_seconds": round(with_codes, 3),
        "without_why_seconds": round(without, 3),
        "why_overhead_pct": round(100 * (with_codes - without) / without, 1),
    }


def main(argv: list[str] | None = None) -> dict[str, Any]:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--quick", action="store_true", help="100k events / 10k persons")
    parser.add_argument("--persons", type=int)
    parser.add_argument("--events", type=int)
    parser.add_argument("--repeat", type=int, default=3, help="timed runs per variant (best)")
    parser.add_argument("--home", type=Path, help="reuse (or create) the lake at this path")
    args = parser.parse_args(argv)
    persons = args.persons or (10_000 if args.quick else 1_000_000)
    events = args.events or (100_000 if args.quick else 10_000_000)
    home = args.home or Path(tempfile.mkdtemp(prefix="bench-compute-"))
    lake = Lake(home)
    generated = None
    extract_sessions = None
    if not lake.events.exists():
        started = time.perf_counter()
        summary = generate_synthetic(
            lake, persons=persons, days=DAYS, end=END, seed=42, events_per_person=events / persons
        )
        generated = round(time.perf_counter() - started, 1)
        extract_sessions = _session_cost(summary, generated)
    settings = Settings(
        home=home,
        audiences_dir=PROJECT_ROOT / "include" / "audiences",
        filters_dir=PROJECT_ROOT / "include" / "filters",
    )
    sequence = load_spec(settings.audiences_dir / "checkout_in_one_session.yaml")
    sequence = sequence.model_copy(
        update={"refresh": sequence.refresh.model_copy(update={"lookback_days": DAYS})}
    )
    specs = {"sequence": sequence, "metric": AudienceSpec.model_validate(METRIC_SPEC)}
    con = duckdb.connect()
    counted = con.execute(
        "SELECT count(*), count(DISTINCT person_id) FROM read_parquet($f)",
        {"f": str(lake.events / "*" / "*.parquet")},
    ).fetchone()
    con.close()
    load_before = os.getloadavg()[0]
    audiences = {name: measure(settings, name, spec, args.repeat) for name, spec in specs.items()}
    specs["metric_any"] = AudienceSpec.model_validate(METRIC_ANY_SPEC)
    why_cost = {name: measure_why(settings, spec, args.repeat) for name, spec in specs.items()}
    result = {
        "benchmark": "compute",
        "cores": os.cpu_count(),
        # other work on the machine inflates every timing; ratios within the run still hold
        "load_average": {"before": round(load_before, 2), "after": round(os.getloadavg()[0], 2)},
        "events": counted[0],
        "persons": counted[1],
        "days": DAYS,
        "generate_seconds": generated,
        "lake_reused": generated is None,
        # compute read the sessions the extract wrote instead of sessionizing
        "sessions_in_lake": all(a["sessions_in_lake"] for a in audiences.values()),
        "extract_sessions": extract_sessions,
        "audiences": audiences,
        "why_overhead": why_cost,
    }
    save("compute", result, markdown(result))
    return result


def _session_cost(summary: dict[str, Any], seconds: float) -> dict[str, Any]:
    """What writing the session columns costs the extract: events/s without and with."""
    rows, extra = summary["rows"], summary["session_columns"]["seconds"]
    return {
        "session_seconds": extra,
        "events_per_s_before": round(rows / max(seconds - extra, 1e-9)),
        "events_per_s_after": round(rows / seconds),
    }


def markdown(result: dict[str, Any]) -> str:
    lines = [
        f"\n{result['events']:,} events, {result['persons']:,} persons, {result['cores']} cores, "
        f"load average {result['load_average']['before']} → {result['load_average']['after']}\n",
        "| audience | ours (s) | hand-written SQL (s) | ours / hand | pandas (s) | pandas / ours "
        "| compute_audience (s) | target (s) | members | agree |",
        "|---|---|---|---|---|---|---|---|---|---|",
    ]
    cost = result.get("extract_sessions")
    if cost:
        lines.insert(
            1,
            f"Sessions in the lake: {result['sessions_in_lake']}; writing them cost the extract "
            f"{cost['session_seconds']} s ({cost['events_per_s_before']:,} events/s before, "
            f"{cost['events_per_s_after']:,} after)\n",
        )
    for name, r in result["audiences"].items():
        agree = "yes" if r["agree_handwritten"] and r["agree_pandas"] else "NO"
        lines.append(
            f"| {name} | {r['seconds']} | {r['handwritten_seconds']} | "
            f"{r['ratio_vs_handwritten']}x | {r['pandas_seconds']} | {r['pandas_ratio']}x | "
            f"{r['compute_audience_seconds']} | {r['target_seconds']} | {r['size']:,} | {agree} |"
        )
    lines += [
        "\n| audience | with why codes (s) | without (s) | extra |",
        "|---|---|---|---|",
    ]
    for name, r in result["why_overhead"].items():
        lines.append(
            f"| {name} | {r['with_why_seconds']} | {r['without_why_seconds']} | "
            f"{r['why_overhead_pct']} % |"
        )
    return "\n".join(lines)


if __name__ == "__main__":
    main()
