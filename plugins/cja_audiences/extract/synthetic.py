"""The synthetic source: a realistic e-commerce clickstream, generated in DuckDB SQL.

Why: the demo, the tests and the benchmarks need CJA-like data at any size without an Adobe
org. Everything is derived from ``hash(seed, entity, salt)`` so a seed always yields the same
lake, and the whole dataset is generated set-wise in DuckDB (no per-row Python): 10M events
generate and land in well under 30 s on two cores.

The shape, from persons down to events:

* persons: a 38-digit ECID (the person id), email, CRM id for the ~70 % who have an
  account, loyalty tier, consent flags, home country and region, a primary device;
  heavy-tailed activity (Pareto weights: most people visit once or twice, a few visit daily);
  some are acquired during the period and about a third churn (stop visiting) before it ends;
  a buying propensity (browsers, occasional buyers, loyal repeat buyers).
* sessions: placed in distinct 2-hour slots of the person's active days, starting in the
  slot's first hour and lasting under 30 minutes, so consecutive sessions are always more
  than 30 minutes apart (CJA's default session timeout); evening-heavy time of day; a
  marketing channel and, for paid channels, a campaign tracking code on the landing hit;
  device mostly the person's primary one, browser by device.
* events: page views, then product views, then the funnel cart add -> checkout -> purchase
  with drop-off at each step; purchases carry an order id, SKUs, quantity and revenue.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
from collections.abc import Sequence
from concurrent.futures import ThreadPoolExecutor
from datetime import date, timedelta
from pathlib import Path
from typing import Any

import duckdb

from cja_audiences.extract.persons import PERSONS_FILE
from cja_audiences.extract.publish import partition_rows, publish_partitions, staging_dir
from cja_audiences.extract.sessions import sessionize_staged
from cja_audiences.lake.layout import Lake, atomic_path
from cja_audiences.lake.schema import EVENT_TYPES
from cja_audiences.lake.sessions import SessionRules

# Calibration: events per drawn session of the funnel below (measured; about 5 % of drawn
# sessions fall on an occupied slot and are dropped). Turns the
# events-per-person target into a session count; the summary reports the real figures.
MEAN_EVENTS_PER_SESSION = 4.5
DEFAULT_EVENTS_PER_PERSON_PER_DAY = 0.7
# Session timing. A person's sessions sit in distinct 2-hour slots, shifted by a per-person
# phase; a session starts within START_WINDOW_S of its slot (+ phase) and its last event is
# at most 22 steps of at most STEP_MAX_S later (12 page views + 8 product views + 3 funnel
# steps). So it ends before slot + 36 + 55 + 28 = 119 minutes: the next session (120 minutes
# later, same phase) starts more than 30 minutes after it, and slot 11 ends before midnight,
# so every session lies within one UTC date.
SLOTS_PER_DAY = 12
PHASE_S = 36 * 60
START_WINDOW_S = 55 * 60
STEP_MIN_S, STEP_MAX_S = 15, 73

COUNTRIES = [
    ("US", 0.42, ["CA", "NY", "TX", "FL", "WA", "IL"]),
    ("GB", 0.10, ["ENG", "SCT", "WLS", "NIR"]),
    ("DE", 0.10, ["BY", "BE", "HH", "NW"]),
    ("FR", 0.08, ["IDF", "ARA", "PAC", "OCC"]),
    ("CA", 0.07, ["ON", "QC", "BC", "AB"]),
    ("AU", 0.05, ["NSW", "VIC", "QLD"]),
    ("JP", 0.05, ["13", "27", "14"]),
    ("NL", 0.05, ["NH", "ZH", "UT"]),
    ("ES", 0.04, ["MD", "CT", "AN"]),
    ("BR", 0.04, ["SP", "RJ", "MG"]),
]
DEVICES = [("Mobile", 0.55), ("Desktop", 0.38), ("Tablet", 0.07)]
BROWSERS = {
    "Mobile": [("Safari Mobile", 0.45), ("Chrome Mobile", 0.45), ("Samsung Internet", 0.10)],
    "Desktop": [("Chrome", 0.62), ("Safari", 0.14), ("Edge", 0.14), ("Firefox", 0.10)],
    "Tablet": [("Safari Mobile", 0.65), ("Chrome Mobile", 0.35)],
}
CHANNELS = [
    ("Direct", 0.24),
    ("Natural Search", 0.24),
    ("Paid Search", 0.15),
    ("Email", 0.11),
    ("Social", 0.10),
    ("Display", 0.06),
    ("Affiliate", 0.05),
    ("Referring Domains", 0.05),
]
CAMPAIGN_PREFIX = {
    "Paid Search": "ps",
    "Email": "em",
    "Social": "so",
    "Display": "dsp",
    "Affiliate": "aff",
}
CAMPAIGNS = ["spring_sale", "brand", "new_arrivals", "clearance", "loyalty", "black_friday"]
CATEGORIES = [
    "apparel/women",
    "apparel/men",
    "shoes",
    "accessories",
    "home/kitchen",
    "home/decor",
    "electronics/audio",
    "electronics/phones",
    "beauty",
    "sports/outdoor",
    "toys",
    "books",
]
CONTENT_PAGES = ["home", "search results", "store locator", "help", "sale", "new arrivals"]
# Relative traffic per 2-hour slot of the UTC day (night low, evening peak).
TIME_OF_DAY = [2, 1, 1, 3, 6, 8, 9, 9, 10, 12, 13, 8]
CATALOG_SIZE = 500
SITE = "https://shop.example.com"


def _sql_str(value: str) -> str:
    """Quote one of this module's constants as a SQL literal (never user input)."""
    return "'" + value.replace("'", "''") + "'"


def _sql_tuple(values: Sequence[str]) -> str:
    return "(" + ", ".join(_sql_str(v) for v in values) + ")"


def _weighted(u: str, choices: Sequence[tuple[Any, float]]) -> str:
    """A CASE picking from ``choices`` (value, weight) by the uniform ``u`` in [0, 1)."""
    total = sum(weight for _, weight in choices)
    branches, cumulative = [], 0.0
    for value, weight in choices[:-1]:
        cumulative += weight / total
        literal = _sql_str(value) if isinstance(value, str) else str(value)
        branches.append(f"WHEN {u} < {cumulative:.6f} THEN {literal}")
    last = choices[-1][0]
    last_literal = _sql_str(last) if isinstance(last, str) else str(last)
    return f"CASE {' '.join(branches)} ELSE {last_literal} END"


def _sql_list(values: Sequence[str]) -> str:
    return "[" + ", ".join(_sql_str(v) for v in values) + "]"


def _region_case(u: str) -> str:
    branches = " ".join(
        f"WHEN country = {_sql_str(code)} THEN {_sql_list(regions)}"
        f"[1 + floor({u} * {len(regions)})::INT]"
        for code, _, regions in COUNTRIES
    )
    return f"CASE {branches} END"


def _browser_case(u: str) -> str:
    branches = " ".join(
        f"WHEN device_type = {_sql_str(device)} THEN {_weighted(u, choices)}"
        for device, choices in BROWSERS.items()
    )
    return f"CASE {branches} END"


def _campaign_case() -> str:
    branches = " ".join(
        f"WHEN channel = {_sql_str(channel)} THEN {_sql_str(prefix + '_')}"
        f" || {_sql_list(CAMPAIGNS)}[1 + floor(u_campaign * {len(CAMPAIGNS)})::INT]"
        f" || strftime(start_ts, '_%Y%m')"
        for channel, prefix in CAMPAIGN_PREFIX.items()
    )
    return f"CASE {branches} END"


# Low-cardinality columns are ENUMs while generating: a session's value is copied to its
# events as one byte, and the Parquet writer takes the dictionary as is (files hold plain
# strings; readers see VARCHAR). Several times cheaper than hashing strings per row.
ENUM_TYPES = """
CREATE TYPE namespace_t AS ENUM ('ECID');
CREATE TYPE event_type_t AS ENUM {event_types_enum};
CREATE TYPE page_t AS ENUM {page_names_enum};
CREATE TYPE url_t AS ENUM {page_urls_enum};
CREATE TYPE channel_t AS ENUM {channels_enum};
CREATE TYPE country_t AS ENUM {countries_enum};
CREATE TYPE region_t AS ENUM {regions_enum};
CREATE TYPE device_t AS ENUM {devices_enum};
CREATE TYPE browser_t AS ENUM {browsers_enum};
"""

MACROS = """
-- hash() of several values mixes weakly (neighbouring salts correlate); re-hashing fixes that.
CREATE OR REPLACE MACRO rnd(a, b, c) AS
    hash(hash(getvariable('seed'), a, b, c)) / 18446744073709551616.0;
-- popular products first: a skewed draw over the catalogue (0-based index)
CREATE OR REPLACE MACRO sku_index(u) AS floor(pow(u, 2.2) * {catalog})::INT;
-- lookups into constant lists are an order of magnitude cheaper than building strings per row
CREATE OR REPLACE MACRO sku_name(i) AS {sku_names}[i + 1];
CREATE OR REPLACE MACRO sku_category(i) AS {sku_categories}[i + 1];
CREATE OR REPLACE MACRO sku_price(i) AS {sku_prices}[i + 1];
CREATE OR REPLACE MACRO page_name(i) AS ({page_names}::page_t[])[i + 1];
CREATE OR REPLACE MACRO page_url(i) AS ({page_urls}::url_t[])[i + 1];
"""

PERSONS_SQL = """
CREATE TABLE person AS
WITH base AS (
    SELECT
        p,
        least(60.0, pow(greatest(rnd(p, 1, 0), 1e-9), -1.0 / 1.6) * 0.375) AS weight,
        CASE WHEN rnd(p, 2, 0) < 0.65 THEN 0
             ELSE floor(rnd(p, 2, 1) * getvariable('days'))::INT END AS first_day,
        rnd(p, 3, 0) < 0.33 AS churned,
        rnd(p, 3, 1) AS u_churn,
        {buyer} AS propensity,
        rnd(p, 5, 0) < 0.7 AS known,
        ({country})::country_t AS country,
        rnd(p, 6, 1) AS u_region,
        floor(rnd(p, 6, 3) * {phase_s})::BIGINT AS phase_s,
        ({person_device})::device_t AS device_type,
        -- a bijection of p (odd multiplier, coprime to 10^12) keeps ids unique but unordered
        lpad(((p::HUGEINT * 982451653 + getvariable('seed') * 7) % 1000000000000)::VARCHAR,
             12, '0') AS scrambled
    FROM range(getvariable('persons')) t(p)
), windowed AS (
    SELECT *,
        CASE WHEN churned
             THEN first_day + floor(u_churn * (getvariable('days') - first_day))::INT
             ELSE getvariable('days') - 1 END AS last_day
    FROM base
)
SELECT *,
    last_day - first_day + 1 AS active_days,
    ({region})::region_t AS region,
    CASE WHEN known THEN MAP(['CRMID'], ['CRM' || scrambled]) END AS crm_identity,
    lpad((hash(hash(getvariable('seed'), p, 7)) % 10000000000000000000)::VARCHAR, 19, '0')
        || lpad((hash(hash(getvariable('seed'), p, 8)) % 10000000)::VARCHAR, 7, '0')
        || scrambled AS ecid
FROM windowed
"""

SESSIONS_SQL = """
CREATE TABLE session AS
WITH counted AS (
    SELECT *,
        least(active_days * {slots} // 3,
              floor(weight * active_days / getvariable('days') * getvariable('sessions')
                    / sum(weight * active_days / getvariable('days')) OVER ()
                    + rnd(p, 9, 0))::INT) AS n_sessions
    FROM person
), placed AS (
    SELECT p, s, ecid, known, scrambled, propensity, country, region, phase_s, first_day,
        crm_identity,
        device_type AS primary_device,
        first_day + floor(rnd(p, s, 10) * active_days)::INT AS day,
        {time_of_day} AS slot
    FROM (SELECT *, unnest(range(n_sessions)) AS s FROM counted)
), distinct_slots AS (
    SELECT DISTINCT ON (p, day, slot) * FROM placed
), drawn AS (
    SELECT *,
        getvariable('start')::TIMESTAMP + to_days(day) + to_hours(slot * 2)
            + to_seconds(phase_s + floor(rnd(p, s, 11) * {start_window_s})::BIGINT) AS start_ts,
        CASE WHEN rnd(p, s, 12) < 0.8 THEN primary_device
             ELSE ({session_device})::device_t END AS device_type,
        rnd(p, s, 13) AS u_browser,
        ({channel})::channel_t AS channel,
        rnd(p, s, 15) AS u_campaign,
        known AND rnd(p, s, 16) < 0.55 AS authenticated,  -- checkout signs in the rest
        least(12, 1 + floor(-ln(greatest(rnd(p, s, 17), 1e-9)) * 2.4))::INT AS page_views,
        CASE WHEN rnd(p, s, 18) < 0.6
             THEN least(8, 1 + floor(-ln(greatest(rnd(p, s, 19), 1e-9)) * 2.0))::INT
             ELSE 0 END AS product_views,
        {step_min_s} + floor(rnd(p, s, 20) * {step_spread_s})::INT AS step_s,
        1 + floor(rnd(p, s, 21) * rnd(p, s, 22) * 3)::INT AS items,
        rnd(p, s, 23) AS u_cart, rnd(p, s, 24) AS u_checkout, rnd(p, s, 25) AS u_purchase
    FROM distinct_slots
), funnel AS (
    SELECT *,
        ({browser})::browser_t AS browser,
        {campaign} AS campaign,
        product_views > 0 AND u_cart < least(0.9, 0.3 * propensity) AS carted,
        product_views > 0 AND u_cart < least(0.9, 0.3 * propensity)
            AND u_checkout < least(0.9, 0.55 * sqrt(propensity)) AS checked_out,
        product_views > 0 AND u_cart < least(0.9, 0.3 * propensity)
            AND u_checkout < least(0.9, 0.55 * sqrt(propensity)) AND u_purchase < 0.75
            AS purchased,
        page_views + product_views AS browse
    FROM drawn
)
SELECT *,
    -- session-level values are built once per session, not once per event
    CASE WHEN carted THEN [sku_index(rnd(p, s, 31)), sku_index(rnd(p, s, 32)),
                           sku_index(rnd(p, s, 33))][1:items] END AS basket,
    CASE WHEN carted THEN list_transform(basket, lambda i: sku_name(i)) END AS basket_skus,
    CASE WHEN carted THEN list_transform(basket, lambda i: sku_category(i))
         END AS basket_categories,
    CASE WHEN purchased THEN round(list_sum(list_transform(basket, lambda i: sku_price(i))), 2)
         END AS basket_revenue,
    epoch(start_ts) AS start_epoch,
    CASE WHEN signed_in THEN crm_identity ELSE MAP([]::VARCHAR[], []::VARCHAR[]) END
        AS identities,
    -- building a MAP per row is slow; the few possible ones are looked up instead
    {dimension_maps}[1 + signed_in::INT * 2 + (day > first_day)::INT] AS dimensions
FROM (SELECT *, authenticated OR (known AND checked_out) AS signed_in FROM funnel)
ORDER BY day, p, s  -- each day's COPY reads only its own row groups; total order = same files
"""

EVENTS_SQL = """
WITH exploded AS (
    SELECT *,
        unnest(range(browse + carted::INT + checked_out::INT + purchased::INT)) AS k
    FROM session
    WHERE day = getvariable('day')
), typed AS (
    SELECT *,
        CASE WHEN k = 0 THEN 0
             WHEN k = browse - 1 AND product_views > 0 THEN 1
             WHEN k < browse THEN (rnd(p, s * 64 + k, 30) < product_views / (browse - 1))::INT
             ELSE k - browse + 2 END AS type_index,
        -- the last product view is the product then added to the cart
        CASE WHEN carted AND k = browse - 1 THEN basket[1]
             ELSE sku_index(rnd(p, s * 64 + k, 31)) END AS sku
    FROM exploded
), paged AS (
    SELECT *,
        CASE type_index
            WHEN 0 THEN CASE WHEN k = 0 AND rnd(p, s, 35) < 0.5 THEN {page_home}
                             WHEN rnd(p, s * 64 + k, 36) < 0.6
                                 THEN {page_category} + (sku_index(rnd(p, s * 64 + k, 37)) * 7)
                                     % {n_categories}
                             ELSE floor(rnd(p, s * 64 + k, 38) * {n_content})::INT END
            WHEN 1 THEN {page_product} + sku
            ELSE {page_funnel} + type_index - 2 END AS page_index
    FROM typed
)
SELECT
    concat_ws('-', getvariable('seed'), p, s, k) AS event_id,
    to_timestamp(start_epoch + k * step_s + floor(rnd(p, s * 64 + k, 34) * step_s * 0.9))
        AS "timestamp",
    ecid AS person_id,
    'ECID'::namespace_t AS person_namespace,
    identities,
    ({event_types}::event_type_t[])[type_index + 1] AS event_type,
    page_name(page_index) AS page_name,
    page_url(page_index) AS page_url,
    channel AS marketing_channel,
    CASE WHEN k = 0 THEN campaign END AS campaign,
    CASE type_index WHEN 0 THEN NULL WHEN 1 THEN [sku_name(sku)] WHEN 2 THEN basket_skus[1:1]
         ELSE basket_skus END AS product_skus,
    CASE type_index WHEN 0 THEN NULL WHEN 1 THEN [sku_category(sku)]
         WHEN 2 THEN basket_categories[1:1] ELSE basket_categories END AS product_categories,
    CASE WHEN type_index = 4 THEN basket_revenue END AS revenue,
    CASE WHEN type_index = 4 THEN 'ORD-' || scrambled || '-' || s::VARCHAR END AS order_id,
    CASE type_index WHEN 2 THEN 1 WHEN 3 THEN items WHEN 4 THEN items END::INTEGER
        AS quantity,
    country,
    region,
    device_type,
    browser,
    dimensions
FROM paged
"""

PERSONS_OUT_SQL = """
SELECT
    ecid AS person_id,
    'ECID' AS person_namespace,
    ecid,
    CASE WHEN known THEN {first}[1 + floor(rnd(p, 40, 0) * {n_first})::INT] || '.'
        || {last}[1 + floor(rnd(p, 41, 0) * {n_last})::INT] || '.' || scrambled
        || '@' || {domains}[1 + floor(rnd(p, 42, 0) * 3)::INT] END AS email,
    CASE WHEN known THEN 'CRM' || scrambled END AS crm_id,
    CASE WHEN NOT known THEN 'none'
         WHEN propensity >= 3 THEN CASE WHEN rnd(p, 43, 0) < 0.5 THEN 'platinum' ELSE 'gold' END
         WHEN propensity >= 1 THEN CASE WHEN rnd(p, 43, 0) < 0.4 THEN 'silver' ELSE 'gold' END
         ELSE CASE WHEN rnd(p, 43, 0) < 0.7 THEN 'none' ELSE 'silver' END END AS loyalty_tier,
    known AND rnd(p, 44, 0) < 0.65 AS consent_email,
    rnd(p, 45, 0) < 0.8 AS consent_personalization,
    country,
    (getvariable('start')::TIMESTAMP + to_days(first_day)
        + to_seconds(floor(rnd(p, 46, 0) * 86400)::BIGINT))::TIMESTAMPTZ AS first_seen,
    MAP(['buyer_segment', 'churned', 'home_region'],
        [CASE WHEN propensity >= 3 THEN 'loyal' WHEN propensity >= 1 THEN 'occasional'
              ELSE 'browser' END,
         churned::VARCHAR, region]) AS attributes
FROM person
ORDER BY person_id
"""

FIRST_NAMES = ["alex", "sam", "maria", "li", "noah", "emma", "omar", "yuki", "lena", "raj"]
LAST_NAMES = ["smith", "garcia", "muller", "martin", "chen", "sato", "silva", "brown", "khan"]
EMAIL_DOMAINS = ["example.com", "example.net", "example.org"]


SKU_NAMES = [f"SKU-{i:05d}" for i in range(CATALOG_SIZE)]
SKU_CATEGORIES = [CATEGORIES[(i * 7) % len(CATEGORIES)] for i in range(CATALOG_SIZE)]
SKU_PRICES = [round(4.99 + (i * 7919) % 280 + (i % 3) * 0.5, 2) for i in range(CATALOG_SIZE)]
# One list of pages: content pages, then category pages, product pages and funnel pages.
PAGES = (
    [(name, name.replace(" ", "-")) for name in CONTENT_PAGES]
    + [(f"category:{c}", f"c/{c}") for c in CATEGORIES]
    + [(f"product:{sku}", f"p/{sku}") for sku in SKU_NAMES]
    # funnel pages in EVENT_TYPES order: cart add, checkout, purchase
    + [("cart", "cart"), ("checkout", "checkout"), ("order confirmation", "checkout/done")]
)
PAGE_CATEGORY = len(CONTENT_PAGES)
PAGE_PRODUCT = PAGE_CATEGORY + len(CATEGORIES)
PAGE_FUNNEL = PAGE_PRODUCT + CATALOG_SIZE


def _render(sql: str) -> str:
    """Fill this module's constants (never user values) into the SQL text."""
    return sql.format(
        catalog=CATALOG_SIZE,
        sku_names=_sql_list(SKU_NAMES),
        sku_categories=_sql_list(SKU_CATEGORIES),
        sku_prices="[" + ", ".join(f"{price}::DOUBLE" for price in SKU_PRICES) + "]",
        page_names=_sql_list([name for name, _ in PAGES]),
        page_urls=_sql_list([f"{SITE}/{path}" for _, path in PAGES]),
        page_home=CONTENT_PAGES.index("home"),
        page_category=PAGE_CATEGORY,
        page_product=PAGE_PRODUCT,
        page_funnel=PAGE_FUNNEL,
        event_types=_sql_list(list(EVENT_TYPES)),
        event_types_enum=_sql_tuple(EVENT_TYPES),
        page_names_enum=_sql_tuple([name for name, _ in PAGES]),
        page_urls_enum=_sql_tuple([f"{SITE}/{path}" for _, path in PAGES]),
        channels_enum=_sql_tuple([c for c, _ in CHANNELS]),
        countries_enum=_sql_tuple([c for c, _, _ in COUNTRIES]),
        regions_enum=_sql_tuple(sorted({r for _, _, regions in COUNTRIES for r in regions})),
        devices_enum=_sql_tuple([d for d, _ in DEVICES]),
        browsers_enum=_sql_tuple(sorted({b for choices in BROWSERS.values() for b, _ in choices})),
        dimension_maps="["
        + ", ".join(
            f"MAP {{'login_status': {_sql_str(login)}, 'visitor_type': {_sql_str(visitor)}}}"
            for login in ("anonymous", "authenticated")
            for visitor in ("new", "returning")
        )
        + "]",
        n_categories=len(CATEGORIES),
        buyer=_weighted("rnd(p, 4, 0)", [(0.4, 0.6), (1.0, 0.33), (3.5, 0.07)]),
        country=_weighted("rnd(p, 6, 0)", [(code, share) for code, share, _ in COUNTRIES]),
        person_device=_weighted("rnd(p, 6, 2)", DEVICES),
        session_device=_weighted("rnd(p, s, 14)", DEVICES),
        region=_region_case("u_region"),
        slots=SLOTS_PER_DAY,
        phase_s=PHASE_S,
        start_window_s=START_WINDOW_S,
        step_min_s=STEP_MIN_S,
        step_spread_s=STEP_MAX_S - STEP_MIN_S,
        time_of_day=_weighted("rnd(p, s, 26)", list(enumerate(TIME_OF_DAY))),
        channel=_weighted("rnd(p, s, 27)", CHANNELS),
        browser=_browser_case("u_browser"),
        campaign=_campaign_case(),
        content_pages=_sql_list(CONTENT_PAGES),
        n_content=len(CONTENT_PAGES),
        first=_sql_list(FIRST_NAMES),
        n_first=len(FIRST_NAMES),
        last=_sql_list(LAST_NAMES),
        n_last=len(LAST_NAMES),
        domains=_sql_list(EMAIL_DOMAINS),
    )


def _connect(variables: dict[str, Any]) -> duckdb.DuckDBPyConnection:
    con = duckdb.connect()
    _set_variables(con, variables)
    con.execute(_render(ENUM_TYPES))
    con.execute(_render(MACROS))
    return con


def _set_variables(con: duckdb.DuckDBPyConnection, variables: dict[str, Any]) -> None:
    """Session settings and the generation parameters (DuckDB variables are per cursor)."""
    con.execute("SET TimeZone = 'UTC'")
    con.execute("SET preserve_insertion_order = false")
    for name, value in variables.items():
        con.execute(f"SET VARIABLE {name} = ?", [value])


def generate_synthetic(
    lake: Lake,
    *,
    persons: int,
    days: int,
    end: date,
    seed: int,
    events_per_person: float | None = None,
    sessions: SessionRules | None = None,
) -> dict[str, Any]:
    """Write ``days`` daily partitions ending on ``end`` (inclusive) and the persons table.

    Each generated date's partition is replaced whole; other dates are untouched, so the same
    call twice leaves the same lake. ``events_per_person`` is the mean over the period
    (default 0.7 per day); activity is heavy-tailed, so the median person has far fewer.
    Returns ``{rows, persons, partitions: {date: rows}, sessions, elapsed_s, ...}``.
    """
    if persons < 1 or days < 1:
        raise ValueError(f"persons ({persons}) and days ({days}) must both be at least 1")
    started = time.perf_counter()
    per_person = events_per_person or DEFAULT_EVENTS_PER_PERSON_PER_DAY * days
    sessions_target = max(1, round(persons * per_person / MEAN_EVENTS_PER_SESSION))
    start = end - timedelta(days=days - 1)
    variables = {
        "seed": seed,
        "persons": persons,
        "days": days,
        "start": start,
        "sessions": sessions_target,
    }
    con = _connect(variables)
    try:
        con.execute(_render(PERSONS_SQL))
        con.execute(_render(SESSIONS_SQL))
        with staging_dir(lake.events) as staging:
            _write_events(con, variables, staging)
            counts = partition_rows(staging)
            session_summary = sessionize_staged(lake, staging, sessions or SessionRules())
            _write_persons(con, lake.persons / PERSONS_FILE)
            published = publish_partitions(staging, lake.events)
        session_count = con.execute("SELECT count(*) FROM session").fetchone()[0]
    finally:
        con.close()
    rows = sum(counts.values())
    return {
        "source": "synthetic",
        "rows": rows,
        "persons": persons,
        "sessions": session_count,
        "session_columns": session_summary,
        "partitions": {d: counts[d] for d in published},
        "quarantined": 0,
        "seed": seed,
        "start": start.isoformat(),
        "end": end.isoformat(),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }


def _write_events(con: duckdb.DuckDBPyConnection, variables: dict[str, Any], staging: Path) -> None:
    """Write each day's events as one file under ``staging/date=YYYY-MM-DD/``.

    Sessions never cross midnight, so a day's events are exactly its sessions' events. One
    single-threaded COPY per day, a day per core at a time, is about three times faster than
    DuckDB's partitioned writer on the same data.
    """
    events_sql = _render(EVENTS_SQL)

    def write_day(offset: int) -> None:
        cursor = con.cursor()
        try:
            _set_variables(cursor, {**variables, "day": offset})
            cursor.execute("SET threads = 1")
            day = variables["start"] + timedelta(days=offset)
            partition = staging / f"date={day.isoformat()}"
            partition.mkdir()
            cursor.execute(
                f"COPY ({events_sql}) TO ? (FORMAT parquet, COMPRESSION zstd,"
                " ROW_GROUP_SIZE 122880)",
                [str(partition / "part-0.parquet")],
            )
        finally:
            cursor.close()

    with ThreadPoolExecutor(max_workers=os.cpu_count() or 1) as pool:
        list(pool.map(write_day, range(variables["days"])))


def _write_persons(con: duckdb.DuckDBPyConnection, path: Path) -> None:
    with atomic_path(path) as tmp:
        con.execute(
            f"COPY ({_render(PERSONS_OUT_SQL)}) TO ? (FORMAT parquet, COMPRESSION zstd)",
            [str(tmp)],
        )


def main(argv: Sequence[str] | None = None) -> int:
    """``python -m cja_audiences.extract.synthetic``: generate a lake, print a JSON summary."""
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--home", type=Path, required=True, help="lake root (CJA_AUDIENCES_HOME)")
    parser.add_argument("--persons", type=int, default=10_000)
    parser.add_argument("--days", type=int, default=30)
    parser.add_argument("--end", type=date.fromisoformat, default=date.today())
    parser.add_argument("--seed", type=int, default=42)
    parser.add_argument("--events-per-person", type=float, default=None)
    args = parser.parse_args(argv)
    summary = generate_synthetic(
        Lake(args.home),
        persons=args.persons,
        days=args.days,
        end=args.end,
        seed=args.seed,
        events_per_person=args.events_per_person,
    )
    json.dump(summary, sys.stdout, indent=2)
    sys.stdout.write("\n")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
