"""The CJA Reporting API source: paged person-level pulls over date ranges (no Airflow).

The Reporting API returns aggregates, not events: one report per time window (a day, or an
hour, of the data view's time zone: CJA reads date ranges in it) with the data view's Person
ID component as the dimension and the funnel metrics (page views,
product views, cart additions, checkouts, orders, revenue, units). Each counted occurrence
becomes one event row at the window's start (in UTC) with a deterministic id, purchases share the
window's revenue and units. Audiences on counts and funnel steps per day (or hour) work from
this; sequences within a session need event-level data (exports, AEP dataset exports).

Adobe's limits are respected on the client: at most 12 requests per 6 s (sliding window),
exponential backoff with jitter on 429 (``error_code`` 429050) and 5xx, honouring
``Retry-After`` when sent, one token refresh on 401. Every page is saved as it arrives
(``<checkpoint_dir>/<pull id>/``), so a failed pull resumes from the last complete page; the
checkpoints are removed once the pull has landed.
"""

from __future__ import annotations

import collections
import hashlib
import time
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any
from urllib.parse import quote
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import duckdb
import pyarrow as pa
import requests

from cja_audiences.adobe.auth import AdobeConfig, get_token, invalidate_token
from cja_audiences.adobe.rate import SlidingWindowLimiter
from cja_audiences.adobe.retry import (
    RetriesExhausted,
    RetryPolicy,
    call_with_retries,
    is_transient_status,
)
from cja_audiences.extract.source import run_extract
from cja_audiences.extract.writer import Mode
from cja_audiences.lake.layout import Lake, read_json, write_json
from cja_audiences.lake.storage import LakePath, makedirs, remove_tree

REPORTING_RETRIES = RetryPolicy(max_retries=7, backoff_base=0.5, backoff_cap=60.0)
DEFAULT_PAGE_LIMIT = 1000  # rows per page; the topItems maximum Adobe documents

# metric id -> the XDM event type one occurrence of it stands for (order = columnId)
EVENT_METRICS = {
    "metrics/pageviews": "web.webpagedetails.pageViews",
    "metrics/productviews": "commerce.productViews",
    "metrics/cartadditions": "commerce.productListAdds",
    "metrics/checkouts": "commerce.checkouts",
    "metrics/orders": "commerce.purchases",
}
VALUE_METRICS = ("metrics/revenue", "metrics/units")
GRANULARITIES = {"day": timedelta(days=1), "hour": timedelta(hours=1)}


class ReportingError(RuntimeError):
    """The Reporting API refused a request for good; the message names status and cause."""


@dataclass
class ReportingClient:
    """``POST {base_url}/reports`` with Adobe's headers, limits and retries."""

    config: AdobeConfig
    session: requests.Session = field(default_factory=requests.Session)
    limiter: SlidingWindowLimiter = field(default_factory=SlidingWindowLimiter)
    on_new_token: Callable[[str], None] | None = None
    policy: RetryPolicy = REPORTING_RETRIES
    sleep: Callable[[float], None] = time.sleep
    stats: collections.Counter[str] = field(default_factory=collections.Counter)

    def token(self) -> str:
        """A bearer token from the process cache (registered with the log masker)."""
        token = get_token(self.config, self.session)
        if self.on_new_token:
            self.on_new_token(token)
        return token

    def refresh(self, rejected: str) -> str:
        """A new token after a 401."""
        invalidate_token(self.config)
        return self.token()

    def report(self, body: dict[str, Any]) -> dict[str, Any]:
        """One report page; raises :class:`ReportingError` when retries cannot help."""

        def send(token: str | None) -> requests.Response:
            self.stats["waited_s"] += self.limiter.acquire()
            self.stats["requests"] += 1
            response = self.session.post(
                f"{self.config.base_url}/reports",
                json=body,
                headers={
                    **self.config.platform_headers(token or ""),
                    "Content-Type": "application/json",
                },
                timeout=self.config.timeout,
            )
            if is_transient_status(response.status_code):
                self.stats[f"http_{response.status_code}"] += 1
            return response

        try:
            response = call_with_retries(
                send,
                call="CJA POST /reports",
                policy=self.policy,
                tokens=self,
                on_retry=self._count_retry,
                sleep=self.sleep,
            )
        except RetriesExhausted as exc:
            raise ReportingError(
                f"{exc}; the pull resumes from its last saved page when rerun"
            ) from None
        if response.status_code != 200:
            raise ReportingError(
                f"CJA /reports refused the request: {_describe(response)}; "
                "check the data view id (rsid), the date range and the connection's permissions"
            )
        return response.json()

    def _count_retry(self, delay: float) -> None:
        self.stats["retries"] += 1
        self.stats["backoff_s"] += delay


def _describe(response: requests.Response) -> str:
    try:
        body = response.json()
        detail = body.get("error_code") or body.get("errorCode") or ""
        message = body.get("message") or body.get("errorDescription") or ""
    except ValueError:
        detail, message = "", response.text[:200]
    return f"HTTP {response.status_code} {detail} {message}".strip()


def windows(
    start: datetime, end: datetime, granularity: str, zone: str = "UTC"
) -> list[tuple[datetime, datetime]]:
    """[start, end) cut at the days or hours of ``zone`` (the data view's), as UTC instants.

    The first and last window may be partial; a local day is 23 or 25 hours long on the
    days daylight saving time starts or ends.
    """
    if granularity not in GRANULARITIES:
        raise ValueError(f"granularity {granularity!r}: use one of {sorted(GRANULARITIES)}")
    start, end = _utc(start), _utc(end)
    if end <= start:
        raise ValueError(f"date range end {end.isoformat()} is not after start {start.isoformat()}")
    tz = data_view_zone(zone)
    local = start.astimezone(tz).replace(minute=0, second=0, microsecond=0)
    if granularity == "day":
        local = local.replace(hour=0)
    cuts, edge = [], local.astimezone(UTC)
    while edge < end:
        following = _next_edge(edge, granularity, tz)
        cuts.append((max(edge, start), min(following, end)))
        edge = following
    return cuts


def _next_edge(edge: datetime, granularity: str, tz: ZoneInfo) -> datetime:
    if granularity == "hour":
        return edge + GRANULARITIES["hour"]
    day = edge.astimezone(tz).date() + timedelta(days=1)
    return datetime.combine(day, datetime.min.time(), tz).astimezone(UTC)


def data_view_zone(name: str) -> ZoneInfo:
    try:
        return ZoneInfo(name)
    except (ZoneInfoNotFoundError, ValueError):
        raise ValueError(
            f"data view time zone {name!r} is not an IANA time zone name (e.g. "
            "America/New_York); fix data_view_timezone on the CJA connection"
        ) from None


def fetch_data_view_timezone(config: AdobeConfig, data_view_id: str) -> str:
    """The data view's time zone from CJA (``GET /data/dataviews/{id}``)."""
    from cja_audiences.adobe.http import PlatformClient, PlatformError, TokenProvider

    try:
        with PlatformClient(config, TokenProvider(config)) as client:
            body = client.request(
                "GET",
                f"/data/dataviews/{quote(data_view_id, safe='')}",
                params={"expansion": "timezoneDesignator"},
            )
    except PlatformError as exc:
        raise ReportingError(
            f"could not read data view {data_view_id}'s time zone from CJA ({exc}); set "
            "data_view_timezone on the CJA connection to skip the lookup"
        ) from None
    zone = body.get("timezoneDesignator") if isinstance(body, dict) else None
    if not zone:
        raise ReportingError(
            f"CJA answered no timezoneDesignator for data view {data_view_id}; set "
            "data_view_timezone on the CJA connection"
        )
    data_view_zone(zone)
    return zone


def _utc(moment: datetime) -> datetime:
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)


def _stamp(moment: datetime) -> str:
    return moment.strftime("%Y-%m-%dT%H:%M:%S.000")


def local_stamp(moment: datetime, tz: ZoneInfo) -> str:
    """``moment`` as the data view's wall-clock time, the form CJA's dateRange takes; with
    its offset where the wall clock is ambiguous (the hour repeated when DST ends)."""
    local = moment.astimezone(tz)
    if local.replace(fold=1 - local.fold).utcoffset() != local.utcoffset():
        return local.isoformat(timespec="milliseconds")
    return _stamp(local)


PAGE_TO_EVENTS_SQL = """
WITH rows AS (
    SELECT r.value AS person_id, r.data AS data FROM page_rows r
), typed AS (
    SELECT person_id, t.i AS metric, t.event_type, data[t.i + 1]::BIGINT AS occurrences,
        data[$orders_col + 1] AS orders, data[$revenue_col + 1] AS revenue,
        data[$units_col + 1] AS units
    FROM rows, (SELECT unnest(range(len($types))) AS i, unnest($types) AS event_type) t
)
SELECT
    'cja-rep-' || md5($pull || '|' || person_id || '|' || event_type || '|' || n::VARCHAR)
        AS event_id,
    $window_start AS "timestamp",
    person_id,
    event_type,
    CASE WHEN event_type = 'commerce.purchases' AND orders > 0
         THEN (revenue / orders)::VARCHAR END AS revenue,
    CASE WHEN event_type = 'commerce.purchases' AND orders > 0
         THEN round(units / orders)::VARCHAR END AS quantity,
    MAP {'source': 'cja_reporting', 'granularity': $granularity} AS dimensions,
    $origin AS _origin
FROM typed, range(occurrences) r(n)
WHERE occurrences > 0
"""


@dataclass
class ReportingSource:
    """Person-level pulls of one data view over [start, end), page by page, resumable."""

    client: ReportingClient
    data_view_id: str
    start: datetime
    end: datetime
    checkpoint_dir: LakePath
    granularity: str = "day"
    page_limit: int = DEFAULT_PAGE_LIMIT
    timezone: str = "UTC"  # the data view's: windows are its days or hours
    person_dimension: str = "variables/personid"  # the data view's Person ID component
    name: str = "cja_reporting"
    pages_fetched: int = 0
    pages_resumed: int = 0

    @property
    def pull_id(self) -> str:
        """Same data view, range, granularity, zone, dimension and page size -> same id ->
        resumable."""
        key = "|".join(
            [
                self.data_view_id,
                _utc(self.start).isoformat(),
                _utc(self.end).isoformat(),
                self.granularity,
                str(self.page_limit),
                self.timezone,
                self.person_dimension,
            ]
        )
        return hashlib.sha256(key.encode()).hexdigest()[:16]

    @property
    def pages_dir(self) -> LakePath:
        return self.checkpoint_dir / self.pull_id

    def body(self, window: tuple[datetime, datetime], page: int) -> dict[str, Any]:
        metrics = [*EVENT_METRICS, *VALUE_METRICS]
        tz = data_view_zone(self.timezone)
        span = f"{local_stamp(window[0], tz)}/{local_stamp(window[1], tz)}"
        return {
            "rsid": self.data_view_id,
            "globalFilters": [{"type": "DATE_RANGE", "dateRange": span}],
            "metricContainer": {
                "metrics": [{"columnId": str(i), "id": m} for i, m in enumerate(metrics)]
            },
            "dimension": self.person_dimension,
            # sorted by person id: pages stay stable while a pull is resumed
            "settings": {
                "limit": self.page_limit,
                "page": page,
                "dimensionSort": "asc",
                "nonesBehavior": "exclude-nones",
            },
        }

    def pages(self) -> Iterator[tuple[tuple[datetime, datetime], int, dict[str, Any]]]:
        """(window, page number, response body) for every page of the pull, in order."""
        makedirs(self.pages_dir)
        cuts = windows(self.start, self.end, self.granularity, self.timezone)
        for index, window in enumerate(cuts):
            page = 0
            while True:
                saved = self.pages_dir / f"w{index:05d}-p{page:06d}.json"
                body = read_json(saved)
                if body is None:
                    body = self.client.report(self.body(window, page))
                    write_json(body, saved)
                    self.pages_fetched += 1
                else:
                    self.pages_resumed += 1
                yield window, page, body
                if body.get("lastPage", True) or not body.get("rows"):
                    break
                page += 1

    def batches(self) -> Iterator[pa.Table]:
        con = duckdb.connect()
        con.execute("SET TimeZone = 'UTC'")
        metrics = [*EVENT_METRICS, *VALUE_METRICS]
        try:
            for window, page, body in self.pages():
                rows = body.get("rows") or []
                if not rows:
                    continue
                con.register(
                    "page_rows",
                    pa.table(
                        {
                            "value": [r.get("value") for r in rows],
                            "data": [[float(x or 0) for x in r.get("data", [])] for r in rows],
                        }
                    ),
                )
                try:
                    yield con.sql(
                        PAGE_TO_EVENTS_SQL,
                        params={
                            "types": list(EVENT_METRICS.values()),
                            "orders_col": metrics.index("metrics/orders"),
                            "revenue_col": metrics.index("metrics/revenue"),
                            "units_col": metrics.index("metrics/units"),
                            "pull": f"{self.data_view_id}|{_stamp(window[0])}",
                            "window_start": window[0],
                            "granularity": self.granularity,
                            "origin": f"reports:{_stamp(window[0])}:page {page}",
                        },
                    ).to_arrow_table()
                finally:
                    con.unregister("page_rows")
        finally:
            con.close()

    def describe(self) -> dict[str, Any]:
        return {
            "pull_id": self.pull_id,
            "data_view_id": self.data_view_id,
            "window": {"start": _utc(self.start).isoformat(), "end": _utc(self.end).isoformat()},
            "granularity": self.granularity,
            "timezone": self.timezone,
            "person_dimension": self.person_dimension,
            "pages_fetched": self.pages_fetched,
            "pages_resumed": self.pages_resumed,
            "requests": self.client.stats["requests"],
            "retries": self.client.stats["retries"],
            "rate_limited_s": round(self.client.stats["waited_s"], 3),
        }

    def discard_checkpoints(self) -> None:
        """Drop the saved pages once the pull has landed (a rerun then pulls afresh)."""
        remove_tree(self.pages_dir)


def covers_whole_days(start: datetime, end: datetime) -> bool:
    """True when [start, end) starts and ends at UTC midnight."""
    return all(
        (m.hour, m.minute, m.second, m.microsecond) == (0, 0, 0, 0)
        for m in (_utc(start), _utc(end))
    )


def extract_reporting(
    source: ReportingSource, lake: Lake, *, run_id: str, mode: Mode | None = None, **options: Any
) -> dict[str, Any]:
    """Land a pull; whole UTC days default to ``replace`` (the report is the day's truth).

    The saved pages are dropped only after the lake has the data.
    """
    if mode is None:
        mode = "replace" if covers_whole_days(source.start, source.end) else "merge"
    summary = run_extract(source, lake, run_id=run_id, mode=mode, **options)
    source.discard_checkpoints()
    return summary
