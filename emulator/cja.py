"""CJA Reporting API (``POST /reports``) over a Parquet lake, and the Segments API.

The data view (``rsid``) is backed by the lake's ``lake/events/date=*/`` partitions
(EVENT_SCHEMA). Reports run in DuckDB off the event loop; the last few reports are cached
without their page number so paging through a large person list costs one query. Every CJA
route shares Adobe's rate limit: 12 requests per 6 s per client id, then 429 / 429050.
"""

from __future__ import annotations

import asyncio
import collections
import hashlib
import math
import re
import time
import uuid
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import duckdb
from fastapi import APIRouter, Request
from pydantic_core import from_json, to_json
from starlette.responses import Response

from emulator import errors
from emulator.auth import check_gateway
from emulator.faults import Faults
from emulator.segments import Compiled, SegmentCompileError, compile_segment
from emulator.state import State

router = APIRouter()
SEGMENTS = "_cja"  # CJA components are org-wide, not sandboxed: one resource bucket
DEFAULT_LIMIT = 50
MAX_LIMIT = 50_000
TOP_ITEMS_LIMIT = 10
TOP_ITEMS_MAX = 1000
ALL_TIME = "1970-01-01T00:00:00/2100-01-01T00:00:00"
SESSION_GAP = "INTERVAL 30 MINUTE"
PAGE_VIEW = "web.webpagedetails.pageViews"

DIMENSIONS: dict[str, str] = {
    "variables/personid": "person_id",
    "variables/personnamespace": "person_namespace",
    "variables/eventid": "event_id",
    "variables/eventtype": "event_type",
    "variables/page": "page_name",
    "variables/pagename": "page_name",
    "variables/pageurl": "page_url",
    "variables/marketingchannel": "marketing_channel",
    "variables/campaign": "campaign",
    "variables/trackingcode": "campaign",
    "variables/product": "unnest(product_skus)",
    "variables/productcategory": "unnest(product_categories)",
    "variables/orderid": "order_id",
    "variables/country": "country",
    "variables/region": "region",
    "variables/devicetype": "device_type",
    "variables/browser": "browser",
    "variables/daterangeday": "strftime(timestamp, '%Y-%m-%d')",
    "variables/daterangemonth": "strftime(timestamp, '%Y-%m')",
}
SCALAR_DIMENSIONS = {k: v for k, v in DIMENSIONS.items() if not v.startswith("unnest")}
DIMENSION_MAP_PREFIX = "variables/dimensions."  # the events' free-form ``dimensions`` map

METRICS: dict[str, str] = {
    "metrics/occurrences": "count(*)",
    "metrics/people": "count(DISTINCT person_id)",
    "metrics/visitors": "count(DISTINCT person_id)",
    "metrics/visits": "count(DISTINCT session_id)",
    "metrics/sessions": "count(DISTINCT session_id)",
    "metrics/pageviews": f"count(*) FILTER (WHERE event_type = '{PAGE_VIEW}')",
    "metrics/productviews": "count(*) FILTER (WHERE event_type = 'commerce.productViews')",
    "metrics/cartadditions": "count(*) FILTER (WHERE event_type = 'commerce.productListAdds')",
    "metrics/checkouts": "count(*) FILTER (WHERE event_type = 'commerce.checkouts')",
    "metrics/orders": "count(DISTINCT order_id) FILTER (WHERE event_type = 'commerce.purchases')",
    "metrics/revenue": "coalesce(sum(revenue), 0)",
    "metrics/units": "coalesce(sum(quantity), 0)",
}
_DATE_RANGE = re.compile(r"^([^/]+)/([^/]+)$")


def _bad(code: str, description: str) -> errors.AdobeHTTPError:
    return errors.cja(400, code, description)


def check_cja(request: Request) -> str:
    """Gateway checks plus the per-client rate limit; returns the client id."""
    state: State = request.app.state.emulator
    faults: Faults = request.app.state.faults
    token = check_gateway(request)
    limit = faults.modes.cja_rate_limit_requests or state.config.cja.rate_limit_requests
    window_s = faults.modes.cja_rate_limit_window_s or state.config.cja.rate_limit_window_s
    windows: dict[str, collections.deque[float]] = request.app.state.cja_windows
    window = windows.setdefault(token.client_id, collections.deque())
    now = time.monotonic()
    while window and now - window[0] >= window_s:
        window.popleft()
    if len(window) >= limit:
        raise errors.cja_throttled()
    window.append(now)
    return token.client_id


async def _json(request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise errors.bad_content_type()
    try:
        body = from_json(await request.body())
    except ValueError as exc:
        raise _bad("invalid_json", f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("invalid_request", "Request body must be a JSON object")
    return body


# -- reports ------------------------------------------------------------------------------
def _parse_instant(text: str, field: str) -> datetime:
    try:
        parsed = datetime.fromisoformat(text.strip())
    except ValueError as exc:
        raise _bad("invalid_date_range", f"{field} {text!r} is not an ISO-8601 date-time") from exc
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)


class ReportQuery:
    """A validated Reporting API request, compiled to DuckDB SQL with bound parameters."""

    def __init__(self, body: dict[str, Any], state: State) -> None:
        self.body = body
        self.state = state
        rsid = body.get("rsid")
        if not rsid:
            raise _bad("invalid_request", "rsid (the data view id) is required")
        if rsid != state.config.cja.data_view_id:
            raise errors.cja(404, "resource_not_found", f"data view {rsid!r} was not found")
        self.dimension_id: str | None = body.get("dimension")
        self.dimension = self._dimension(self.dimension_id) if self.dimension_id else None
        self.metrics = self._metrics(body.get("metricContainer"))
        self.start, self.end, self.segments = self._filters(body.get("globalFilters"))
        settings = body.get("settings") or {}
        self.limit = settings.get("limit", DEFAULT_LIMIT)
        self.page = settings.get("page", 0)
        if not isinstance(self.limit, int) or not 1 <= self.limit <= MAX_LIMIT:
            raise _bad("invalid_limit", f"settings.limit must be between 1 and {MAX_LIMIT}")
        if not isinstance(self.page, int) or self.page < 0:
            raise _bad("invalid_page", "settings.page must be an integer >= 0 (pages are 0-based)")
        self.nones = settings.get("nonesBehavior", "exclude-nones")
        if self.nones not in ("exclude-nones", "return-nones"):
            raise _bad(
                "invalid_request", "settings.nonesBehavior must be exclude-nones or return-nones"
            )
        self.dimension_sort = settings.get("dimensionSort")
        self.statistics = (body.get("statistics") or {}).get("functions") or []

    @staticmethod
    def _dimension(dimension_id: str) -> str:
        if dimension_id.startswith(DIMENSION_MAP_PREFIX):
            key = dimension_id[len(DIMENSION_MAP_PREFIX) :]
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
                raise _bad("invalid_dimension", f"dimension {dimension_id!r} is not valid")
            return f"dimensions['{key}']"
        if dimension_id not in DIMENSIONS:
            raise _bad(
                "invalid_dimension",
                f"dimension {dimension_id!r} is not in data view; known: {', '.join(DIMENSIONS)}",
            )
        return DIMENSIONS[dimension_id]

    @staticmethod
    def _metrics(container: Any) -> list[dict[str, Any]]:
        metrics = (container or {}).get("metrics") if isinstance(container, dict) else None
        if not isinstance(metrics, list) or not metrics:
            raise _bad("invalid_request", "metricContainer.metrics must list at least one metric")
        if len(metrics) > 150:
            raise _bad("invalid_request", "at most 150 metrics per request")
        for i, metric in enumerate(metrics):
            if not isinstance(metric, dict) or metric.get("id") not in METRICS:
                raise _bad(
                    "invalid_metric",
                    f"metricContainer.metrics[{i}].id {metric.get('id') if isinstance(metric, dict) else metric!r} "
                    f"is not in data view; known: {', '.join(METRICS)}",
                )
            metric.setdefault("columnId", str(i))
        return metrics

    def _filters(self, filters: Any) -> tuple[datetime, datetime, list[Compiled]]:
        if not isinstance(filters, list):
            raise _bad("invalid_request", "globalFilters with a DATE_RANGE filter is required")
        ranges: list[tuple[datetime, datetime]] = []
        segments: list[Compiled] = []
        for f in filters:
            kind = f.get("type") if isinstance(f, dict) else None
            if kind == "DATE_RANGE":
                match = _DATE_RANGE.match(str(f.get("dateRange", "")))
                if not match:
                    raise _bad(
                        "invalid_date_range",
                        "dateRange must be 'start/end', e.g. "
                        "2026-07-01T00:00:00.000/2026-08-01T00:00:00.000",
                    )
                start = _parse_instant(match.group(1), "dateRange start")
                end = _parse_instant(match.group(2), "dateRange end")
                if end <= start:
                    raise _bad("invalid_date_range", "dateRange end must be after its start")
                ranges.append((start, end))
            elif kind == "SEGMENT":
                segments.append(self._segment_sql(f))
            else:
                raise _bad(
                    "invalid_filter",
                    f"global filter type {kind!r} is not supported by the emulator",
                )
        if len(ranges) != 1:
            raise _bad("invalid_request", "exactly one DATE_RANGE global filter is required")
        return ranges[0][0], ranges[0][1], segments

    def _segment_sql(self, f: dict[str, Any]) -> Compiled:
        definition = f.get("segmentDefinition")
        if definition is None:
            segment = self.state.resources["segment"][SEGMENTS].get(str(f.get("segmentId")))
            if segment is None:
                raise errors.cja(
                    404, "resource_not_found", f"segment {f.get('segmentId')!r} was not found"
                )
            definition = segment["definition"]
        try:
            return compile_segment(definition, SCALAR_DIMENSIONS)
        except SegmentCompileError as exc:
            raise _bad("invalid_segment", str(exc)) from exc

    @property
    def needs_sessions(self) -> bool:
        return any(m["id"] in ("metrics/visits", "metrics/sessions") for m in self.metrics) or any(
            "session_id" in s.sql for s in self.segments
        )

    def cache_key(self) -> str:
        body = dict(self.body)
        body["settings"] = {k: v for k, v in (body.get("settings") or {}).items() if k != "page"}
        return to_json(body).decode()


def _events_glob(lake: str) -> str | None:
    events = Path(lake) / "lake" / "events"
    return str(events / "date=*" / "*.parquet") if any(events.glob("date=*/*.parquet")) else None


def _sql_string(text: str) -> str:
    """A SQL string literal (only for the emulator's own lake path: table functions in
    DuckDB take constants, not bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _run_report(query: ReportQuery, lake: str | None) -> dict[str, Any]:
    """Every row (sorted) and the totals of a report; pages are cut from this result."""
    metric_sql = ", ".join(f"{METRICS[m['id']]} AS m{i}" for i, m in enumerate(query.metrics))
    glob = _events_glob(lake) if lake else None
    if glob is None:
        return {"rows": [], "totals": [0] * len(query.metrics)}
    with duckdb.connect() as db:
        db.execute(
            "CREATE TEMP TABLE base AS SELECT * FROM read_parquet("
            f"{_sql_string(glob)}, hive_partitioning = true, hive_types = {{'date': DATE}}) "
            "WHERE date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE) "
            "AND timestamp >= ? AND timestamp < ?",
            [query.start.date(), query.end.date(), query.start, query.end],
        )
        if query.needs_sessions:
            db.execute(
                "CREATE OR REPLACE TEMP TABLE base AS SELECT *, person_id || ':' || "
                "sum(new_session) OVER (PARTITION BY person_id ORDER BY timestamp "
                "ROWS UNBOUNDED PRECEDING) AS session_id FROM (SELECT *, CASE WHEN timestamp - "
                "lag(timestamp) OVER (PARTITION BY person_id ORDER BY timestamp) <= "
                f"{SESSION_GAP} THEN 0 ELSE 1 END AS new_session FROM base)"
            )
        where = " AND ".join(s.sql for s in query.segments) or "true"
        params = [p for s in query.segments for p in s.params]
        db.execute(f"CREATE TEMP TABLE ev AS SELECT * FROM base WHERE {where}", params)
        totals = list(db.execute(f"SELECT {metric_sql} FROM ev").fetchone())
        rows: list[tuple[Any, ...]] = []
        if query.dimension:
            nones = "" if query.nones == "return-nones" else "WHERE value IS NOT NULL"
            rows = db.execute(
                f"SELECT CAST(value AS VARCHAR) AS value, {metric_sql} FROM "
                f"(SELECT {query.dimension} AS value, * FROM ev) {nones} GROUP BY 1"
            ).fetchall()
    return {"rows": _sorted(rows, query), "totals": [_number(t) for t in totals]}


def _number(value: Any) -> float | int:
    if value is None:
        return 0
    if isinstance(value, float) and value.is_integer():
        return int(value)
    return value


def _sorted(rows: list[tuple[Any, ...]], query: ReportQuery) -> list[tuple[Any, ...]]:
    """Metric sort (first metric with ``sort``, else the first, descending); ties by value."""
    rows.sort(key=lambda r: (r[0] is None, r[0] or ""))
    if query.dimension_sort in ("asc", "desc"):
        rows.sort(key=lambda r: r[0] or "", reverse=query.dimension_sort == "desc")
        return rows
    index = next((i for i, m in enumerate(query.metrics) if m.get("sort")), 0)
    descending = query.metrics[index].get("sort", "desc") != "asc"
    rows.sort(key=lambda r: r[index + 1] or 0, reverse=descending)
    return rows


def item_id(value: str | None) -> str:
    """A stable numeric item id per dimension value ("0" for None/Unspecified)."""
    if value is None:
        return "0"
    return str(int.from_bytes(hashlib.blake2b(value.encode(), digest_size=5).digest(), "big"))


def _page(query: ReportQuery, result: dict[str, Any]) -> dict[str, Any]:
    rows = result["rows"]
    total = len(rows)
    pages = math.ceil(total / query.limit) if total else 0
    chunk = rows[query.page * query.limit : (query.page + 1) * query.limit]
    column_ids = [m["columnId"] for m in query.metrics]
    out_rows = [
        {
            "itemId": item_id(r[0]),
            "value": r[0] if r[0] is not None else "Unspecified",
            "data": [_number(v) for v in r[1:]],
        }
        for r in chunk
    ]
    summary: dict[str, Any] = {"filteredTotals": result["totals"], "totals": result["totals"]}
    for function in query.statistics:
        pick = {"col-max": max, "col-min": min}.get(function)
        if pick is None:
            raise _bad("invalid_request", f"statistics function {function!r} is not supported")
        summary[function] = [
            pick((row["data"][i] for row in out_rows), default=0) for i in range(len(column_ids))
        ]
    body: dict[str, Any] = {
        "totalPages": pages,
        "firstPage": query.page == 0,
        "lastPage": query.page >= pages - 1,
        "numberOfElements": len(out_rows),
        "number": query.page,
        "totalElements": total,
        "columns": {"columnIds": column_ids},
        "rows": out_rows,
        "summaryData": summary,
    }
    if query.dimension_id:
        body["columns"]["dimension"] = {"id": query.dimension_id, "type": "string"}
    return body


class ReportCache:
    """The last few reports' full results, keyed by the request without its page."""

    def __init__(self, size: int = 8) -> None:
        self.size = size
        self.entries: collections.OrderedDict[str, dict[str, Any]] = collections.OrderedDict()

    def get(self, key: str) -> dict[str, Any] | None:
        found = self.entries.get(key)
        if found is not None:
            self.entries.move_to_end(key)
        return found

    def put(self, key: str, value: dict[str, Any]) -> None:
        self.entries[key] = value
        while len(self.entries) > self.size:
            self.entries.popitem(last=False)

    def clear(self) -> None:
        self.entries.clear()


async def _answer(request: Request, query: ReportQuery) -> dict[str, Any]:
    """Run (or, for pages after the first, reuse) the report and cut the requested page."""
    state: State = request.app.state.emulator
    cache: ReportCache = request.app.state.report_cache
    key = query.cache_key()
    result = cache.get(key) if query.page else None
    if result is None:
        result = await asyncio.to_thread(_run_report, query, state.lake)
        cache.put(key, result)
    return _page(query, result)


@router.post("/reports")
async def report(request: Request) -> Response:
    check_cja(request)
    query = ReportQuery(await _json(request), request.app.state.emulator)
    return errors.json_response(await _answer(request, query))


@router.get("/reports/topItems")
async def top_items(request: Request) -> Response:
    """The dimension's items by occurrences: ``rsid``, ``dimension``, optional ``dateRange``,
    ``limit`` (default 10, max 1000), ``page``; the response has no metric columns."""
    check_cja(request)
    params = request.query_params
    try:
        limit = int(params.get("limit", TOP_ITEMS_LIMIT))
        page = int(params.get("page", 0))
    except ValueError as exc:
        raise _bad("invalid_request", "limit and page must be integers") from exc
    if not 1 <= limit <= TOP_ITEMS_MAX:
        raise _bad("invalid_limit", f"limit must be between 1 and {TOP_ITEMS_MAX}")
    if not params.get("dimension"):
        raise _bad("invalid_request", "dimension is required")
    body = {
        "rsid": params.get("rsid"),
        "dimension": params["dimension"],
        "globalFilters": [{"type": "DATE_RANGE", "dateRange": params.get("dateRange", ALL_TIME)}],
        "metricContainer": {"metrics": [{"columnId": "0", "id": "metrics/occurrences"}]},
        "settings": {
            "limit": limit,
            "page": page,
            "nonesBehavior": "return-nones"
            if params.get("lookupNoneValues", "true").lower() == "true"
            else "exclude-nones",
        },
    }
    answer = await _answer(request, ReportQuery(body, request.app.state.emulator))
    for row in answer["rows"]:
        del row["data"]
    del answer["summaryData"], answer["columns"]
    return errors.json_response(answer)


# -- segments -----------------------------------------------------------------------------
def new_segment(state: State, body: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate and store a segment; ``definition`` is kept exactly as given."""
    name = body.get("name")
    definition = body.get("definition")
    if not isinstance(name, str) or not name.strip():
        raise _bad("invalid_request", "name is required")
    if not isinstance(definition, dict) or definition.get("func") != "segment":
        raise _bad("invalid_definition", 'definition must be {"func": "segment", "container": ...}')
    now = datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")
    segment = {
        "id": body.get("id") or f"s2000000000_{uuid.uuid4().hex[:24]}",
        "name": name,
        "description": body.get("description", ""),
        "dataId": body.get("dataId", state.config.cja.data_view_id),
        "rsid": body.get("dataId", state.config.cja.data_view_id),
        "owner": {"id": owner},
        "compatibility": body.get("compatibility"),
        "tags": body.get("tags", []),
        "created": now,
        "modified": now,
        "definition": definition,
    }
    state.put("segment", SEGMENTS, segment["id"], segment)
    return segment


@router.get("/segments")
async def list_segments(request: Request) -> Response:
    state: State = request.app.state.emulator
    check_cja(request)
    params = request.query_params
    try:
        limit = int(params.get("limit", 10))
        page = int(params.get("page", 0))
    except ValueError as exc:
        raise _bad("invalid_request", "limit and page must be integers") from exc
    if not 1 <= limit <= 1000 or page < 0:
        raise _bad("invalid_request", "limit must be 1..1000 and page >= 0 (0-based)")
    items = list(state.resources["segment"][SEGMENTS].values())
    data_ids = params.get("dataIds")
    if data_ids:
        wanted = set(data_ids.split(","))
        items = [s for s in items if s["dataId"] in wanted]
    name = params.get("name")
    if name:
        items = [s for s in items if name.lower() in s["name"].lower()]
    total = len(items)
    pages = math.ceil(total / limit) if total else 0
    content = items[page * limit : (page + 1) * limit]
    return errors.json_response(
        {
            "content": content,
            "totalElements": total,
            "totalPages": pages,
            "numberOfElements": len(content),
            "number": page,
            "size": limit,
            "firstPage": page == 0,
            "lastPage": page >= pages - 1,
        }
    )


@router.get("/segments/{segment_id}")
async def get_segment(segment_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    check_cja(request)
    segment = state.resources["segment"][SEGMENTS].get(segment_id)
    if segment is None:
        raise errors.cja(404, "resource_not_found", f"segment {segment_id!r} was not found")
    return errors.json_response(segment)


@router.post("/segments")
async def create_segment(request: Request) -> Response:
    state: State = request.app.state.emulator
    client_id = check_cja(request)
    body = await _json(request)
    body.pop("id", None)  # ids are assigned by CJA
    return errors.json_response(new_segment(state, body, client_id))
