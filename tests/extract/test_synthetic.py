"""The synthetic source: deterministic, realistic in shape, and landing valid lake partitions."""

from __future__ import annotations

import hashlib
import json
from datetime import date
from pathlib import Path

import duckdb
import pyarrow.parquet as pq
import pytest

from cja_audiences.extract.synthetic import generate_synthetic, main
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA, EVENT_TYPES, PERSON_SCHEMA

END = date(2026, 11, 27)


def _lake_digest(lake: Lake) -> dict[str, str]:
    files = sorted(lake.events.rglob("*.parquet")) + sorted(lake.persons.rglob("*.parquet"))
    return {str(f.relative_to(lake.root)): hashlib.md5(f.read_bytes()).hexdigest() for f in files}


@pytest.fixture(scope="module")
def small(tmp_path_factory: pytest.TempPathFactory) -> tuple[Lake, dict]:
    lake = Lake(tmp_path_factory.mktemp("synthetic"))
    summary = generate_synthetic(lake, persons=3000, days=14, end=END, seed=11)
    return lake, summary


@pytest.fixture(scope="module")
def con(small: tuple[Lake, dict]) -> duckdb.DuckDBPyConnection:
    lake, _ = small
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    events = str(lake.events / "*" / "*.parquet")
    con.read_parquet(events, hive_partitioning=True).create_view("events")
    con.read_parquet(str(lake.persons / "persons.parquet")).create_view("persons")
    return con


def test_partitions_cover_exactly_the_requested_days(small, con) -> None:
    lake, summary = small
    dates = sorted(p.name for p in lake.events.iterdir())
    assert dates == [f"date=2026-11-{d:02d}" for d in range(14, 28)]
    assert sum(summary["partitions"].values()) == summary["rows"]
    mismatched = con.execute(
        "SELECT count(*) FROM events WHERE strftime(timestamp, '%Y-%m-%d') <> date::VARCHAR"
    ).fetchone()[0]
    assert mismatched == 0


def test_files_carry_the_normalized_schemas(small) -> None:
    lake, _ = small
    for path in lake.events.rglob("*.parquet"):
        schema = pq.read_schema(path)
        assert schema.names == EVENT_SCHEMA.names
        assert [f.type for f in schema] == [f.type for f in EVENT_SCHEMA]
    persons = pq.read_schema(lake.persons / "persons.parquet")
    assert [(f.name, f.type) for f in persons] == [(f.name, f.type) for f in PERSON_SCHEMA]


def test_default_density_is_close_to_the_documented_mean(small) -> None:
    _, summary = small
    assert summary["rows"] == pytest.approx(3000 * 14 * 0.7, rel=0.05)


def test_dense_targets_are_approximate(tmp_path: Path) -> None:
    """Very active people run out of free 2-hour slots, so dense targets come out lower."""
    summary = generate_synthetic(
        Lake(tmp_path), persons=2000, days=10, end=END, seed=3, events_per_person=40
    )
    assert 0.75 * 80_000 <= summary["rows"] <= 1.05 * 80_000


def test_same_seed_same_lake_and_rerun_is_idempotent(tmp_path: Path, small) -> None:
    _, first = small
    lake = Lake(tmp_path)
    again = generate_synthetic(lake, persons=3000, days=14, end=END, seed=11)
    digest = _lake_digest(lake)
    rerun = generate_synthetic(lake, persons=3000, days=14, end=END, seed=11)
    assert again["partitions"] == first["partitions"] == rerun["partitions"]
    assert _lake_digest(lake) == digest
    assert not [p for p in lake.events.iterdir() if p.name.startswith(".")]


def test_other_seed_other_data(tmp_path: Path, small) -> None:
    _, first = small
    other = generate_synthetic(Lake(tmp_path), persons=3000, days=14, end=END, seed=12)
    assert other["partitions"] != first["partitions"]


def test_sessions_are_separated_by_more_than_30_minutes(small, con) -> None:
    _, summary = small
    gaps = con.execute(
        """
        WITH t AS (
            SELECT timestamp - lag(timestamp) OVER (PARTITION BY person_id ORDER BY timestamp)
                AS gap
            FROM events)
        SELECT count(*) FILTER (WHERE gap IS NULL OR gap > INTERVAL 30 MINUTE),
               max(gap) FILTER (WHERE gap <= INTERVAL 30 MINUTE)
        FROM t
        """
    ).fetchone()
    derived_sessions, longest_in_session_gap = gaps
    assert derived_sessions == summary["sessions"]
    assert longest_in_session_gap.total_seconds() < 180


def test_funnel_drops_off_at_every_step(con) -> None:
    counts = dict(con.execute("SELECT event_type, count(*) FROM events GROUP BY 1").fetchall())
    assert set(counts) == set(EVENT_TYPES)
    funnel = [counts[t] for t in EVENT_TYPES]
    assert funnel == sorted(funnel, reverse=True)
    assert funnel[-1] > 0


def test_purchases_carry_order_revenue_and_products(con) -> None:
    bad = con.execute(
        """
        SELECT count(*) FROM events WHERE event_type = 'commerce.purchases'
          AND (order_id IS NULL OR revenue IS NULL OR revenue <= 0 OR len(product_skus) < 1
               OR quantity <> len(product_skus))
        """
    ).fetchone()[0]
    assert bad == 0
    orders = con.execute(
        "SELECT count(*), count(DISTINCT order_id) FROM events WHERE order_id IS NOT NULL"
    ).fetchone()
    assert orders[0] == orders[1] > 0


def test_activity_is_heavy_tailed_with_repeat_buyers_and_churn(con) -> None:
    p50, p99 = con.execute(
        "SELECT quantile_cont(n, 0.5), quantile_cont(n, 0.99)"
        " FROM (SELECT count(*) AS n FROM events GROUP BY person_id)"
    ).fetchone()
    assert p99 > 6 * p50
    repeat_buyers = con.execute(
        "SELECT count(*) FROM (SELECT person_id FROM events WHERE order_id IS NOT NULL"
        " GROUP BY person_id HAVING count(*) >= 2)"
    ).fetchone()[0]
    assert repeat_buyers > 0
    churned_silent = con.execute(
        "SELECT count(*) FROM (SELECT person_id, max(date) AS last FROM events GROUP BY 1)"
        " WHERE last < DATE '2026-11-20'"
    ).fetchone()[0]
    assert churned_silent > 0


def test_dimensions_vary(con) -> None:
    distinct = con.execute(
        "SELECT count(DISTINCT marketing_channel), count(DISTINCT country),"
        " count(DISTINCT device_type), count(DISTINCT browser), count(DISTINCT campaign)"
        " FROM events"
    ).fetchone()
    assert distinct[0] >= 6 and distinct[1] >= 8 and distinct[2] == 3
    assert distinct[3] >= 5 and distinct[4] >= 5


def test_persons_have_identities_and_attributes(con) -> None:
    row = con.execute(
        """
        SELECT count(*), count(DISTINCT person_id),
               bool_and(regexp_full_match(ecid, '[0-9]{38}') AND ecid = person_id),
               count(email), count(crm_id), bool_and(email LIKE '%@example.%'),
               count(DISTINCT loyalty_tier), bool_or(consent_email), bool_or(NOT consent_email)
        FROM persons
        """
    ).fetchone()
    assert row[0] == row[1] == 3000
    assert row[2] is True
    assert 0.5 * 3000 < row[3] == row[4] < 0.9 * 3000
    assert row[5] is True and row[6] == 4 and row[7] and row[8]
    orphans = con.execute(
        "SELECT count(*) FROM events WHERE person_id NOT IN (SELECT person_id FROM persons)"
    ).fetchone()[0]
    assert orphans == 0
    signed_in = con.execute(
        "SELECT count(*) FROM events e JOIN persons p USING (person_id)"
        " WHERE e.identities['CRMID'] IS NOT NULL AND e.identities['CRMID'] <> p.crm_id"
    ).fetchone()[0]
    assert signed_in == 0


def test_cli_prints_a_json_summary(tmp_path: Path, capsys: pytest.CaptureFixture) -> None:
    argv = ["--home", str(tmp_path), "--persons", "50", "--days", "2", "--end", "2026-11-27"]
    assert main([*argv, "--seed", "5"]) == 0
    summary = json.loads(capsys.readouterr().out)
    assert summary["persons"] == 50
    assert set(summary["partitions"]) == {"2026-11-26", "2026-11-27"}
