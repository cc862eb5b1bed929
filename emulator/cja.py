"""CJA Reporting API (``POST /reports``, ``GET /reports/topItems``) over a Parquet lake.

The data view (``rsid`` or ``dataId``) is backed by the lake's ``lake/events/date=*/``
partitions (EVENT_SCHEMA) and has a time zone (``cja.timezone``): date ranges without an
offset and the day/month items are read in it. Reports run in DuckDB off the event loop; the
last few are cached without their page number so paging through a large person list costs
one query. Limits: per request (items, metrics, date span) and per user / org (see
:mod:`emulator.cja_limits`).
"""

from __future__ import annotations

import asyncio
import collections
import math
import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo

import duckdb
from fastapi import APIRouter, Request
from pydantic_core import from_json, to_json
from starlette.responses import Response

from emulator import errors
from emulator.cja_limits import check_cja, report_slot
from emulator.cja_search import Match, item_search
from emulator.segments import Compiled, SegmentCompileError, compile_segment
from emulator.state import State

router = APIRouter()
SEGMENTS = "_cja"  # CJA components are org-wide, not sandboxed: one resource bucket
DEFAULT_LIMIT = 50
TOP_ITEMS_LIMIT = 10
TOP_ITEMS_DEFAULT_DAYS = 90  # "Defaults to last 90 days" (the spec's topItems description)
SESSION_GAP = "INTERVAL 30 MINUTE"
PAGE_VIEW = "web.webpagedetails.pageViews"
PERSON_COLUMN = "person_id"

DIMENSIONS: dict[str, str] = {
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
    "variables/daterangeday": "strftime(local_time, '%Y-%m-%d')",
    "variables/daterangemonth": "strftime(local_time, '%Y-%m')",
}
DIMENSION_MAP_PREFIX = "variables/dimensions."  # the events' free-form ``dimensions`` map

# metric id -> (aggregate with {f} where a FILTER clause goes, the metric's own condition)
METRICS: dict[str, tuple[str, str | None]] = {
    "metrics/occurrences": ("count(*){f}", None),
    "metrics/people": ("count(DISTINCT person_id){f}", None),
    "metrics/visitors": ("count(DISTINCT person_id){f}", None),
    "metrics/visits": ("count(DISTINCT session_id){f}", None),
    "metrics/sessions": ("count(DISTINCT session_id){f}", None),
    "metrics/pageviews": ("count(*){f}", f"event_type = '{PAGE_VIEW}'"),
    "metrics/productviews": ("count(*){f}", "event_type = 'commerce.productViews'"),
    "metrics/cartadditions": ("count(*){f}", "event_type = 'commerce.productListAdds'"),
    "metrics/checkouts": ("count(*){f}", "event_type = 'commerce.checkouts'"),
    "metrics/orders": ("count(DISTINCT order_id){f}", "event_type = 'commerce.purchases'"),
    "metrics/revenue": ("coalesce(sum(revenue){f}, 0)", None),
    "metrics/units": ("coalesce(sum(quantity){f}, 0)", None),
}
# Adobe writes filter types upper-case in the spec and camel-case in its examples: both
FILTER_TYPES = {
    "DATE_RANGE": "DATE_RANGE",
    "dateRange": "DATE_RANGE",
    "SEGMENT": "SEGMENT",
    "segment": "SEGMENT",
    "BREAKDOWN": "BREAKDOWN",
    "breakdown": "BREAKDOWN",
    "EXCLUDE_ITEM_IDS": "EXCLUDE_ITEM_IDS",
    "excludeItemIds": "EXCLUDE_ITEM_IDS",
}
_DATE_RANGE = re.compile(r"^([^/]+)/([^/]+)$")


def item_sql(expression: str) -> str:
    """A stable numeric item id of a dimension value ("0" for none), computed in SQL."""
    return (
        f"coalesce(CAST(('0x' || left(md5(CAST({expression} AS VARCHAR)), 10))::BIGINT "
        "AS VARCHAR), '0')"
    )


def _bad(code: str, description: str) -> errors.AdobeHTTPError:
    return errors.cja(400, code, description)


async def read_json(request: Request) -> dict[str, Any]:
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise errors.bad_content_type()
    try:
        body = from_json(await request.body())
    except ValueError as exc:
        raise _bad("invalid_json_input", f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("invalid_request", "Request body must be a JSON object")
    return body


@dataclass
class DataView:
    """The one data view: its id, time zone and components."""

    id: str
    zone: ZoneInfo
    dimensions: dict[str, str]

    @classmethod
    def of(cls, state: State) -> DataView:
        dimensions = {state.person_dimension: PERSON_COLUMN, **DIMENSIONS}
        return cls(state.config.cja.data_view_id, ZoneInfo(state.timezone), dimensions)

    def check(self, data_id: Any) -> None:
        if not data_id:
            raise _bad("invalid_request", "rsid or dataId (the data view id) is required")
        if data_id != self.id:
            raise errors.cja(404, "resource_not_found", f"data view {data_id!r} was not found")

    def instant(self, text: str, field: str) -> datetime:
        """An ISO date(-time); without an offset it is wall-clock time in the data view."""
        try:
            parsed = datetime.fromisoformat(text.strip())
        except ValueError as exc:
            raise _bad(
                "invalid_parameters", f"{field} {text!r} is not an ISO-8601 date-time"
            ) from exc
        return (parsed if parsed.tzinfo else parsed.replace(tzinfo=self.zone)).astimezone(UTC)

    def date_range(
        self, text: Any, *, end_inclusive_dates: bool = False
    ) -> tuple[datetime, datetime]:
        match = _DATE_RANGE.match(str(text or ""))
        if not match:
            raise _bad(
                "invalid_parameters",
                "dateRange must be 'start/end', e.g. "
                "2026-07-01T00:00:00.000/2026-08-01T00:00:00.000",
            )
        start = self.instant(match.group(1), "dateRange start")
        end = self.instant(match.group(2), "dateRange end")
        if end_inclusive_dates and "T" not in match.group(2):
            end = self.instant(
                (datetime.fromisoformat(match.group(2)) + timedelta(days=1)).isoformat(), "end"
            )
        if end <= start:
            raise _bad("invalid_parameters", "dateRange end must be after its start")
        return start, end

    def column(self, dimension_id: str) -> str:
        if dimension_id.startswith(DIMENSION_MAP_PREFIX):
            key = dimension_id[len(DIMENSION_MAP_PREFIX) :]
            if not re.fullmatch(r"[A-Za-z0-9_.\-]+", key):
                raise _bad("invalid_dimension_access", f"dimension {dimension_id!r} is not valid")
            return f"dimensions['{key}']"
        if dimension_id not in self.dimensions:
            raise _bad(
                "invalid_dimension_access",
                f"dimension {dimension_id!r} is not in data view {self.id}; known: "
                f"{', '.join(self.dimensions)}",
            )
        return self.dimensions[dimension_id]

    @property
    def scalar_columns(self) -> dict[str, str]:
        return {k: v for k, v in self.dimensions.items() if not v.startswith("unnest")}


class ReportQuery:
    """A validated Reporting API request, compiled to DuckDB SQL with bound parameters."""

    def __init__(self, body: dict[str, Any], state: State) -> None:
        self.body = body
        self.state = state
        self.view = DataView.of(state)
        limits = state.config.cja
        self.view.check(body.get("rsid") or body.get("dataId"))
        if body.get("dimensions"):
            raise _bad(
                "action_not_implemented",
                "dimensions[] (a multi-dimension request) is not supported by the emulator: send "
                "one dimension and break it down with a BREAKDOWN global filter "
                '({"type": "breakdown", "dimension": ..., "itemId": ...})',
            )
        if body.get("search"):
            raise _bad(
                "action_not_implemented",
                "search (an item search in a report) is not supported by the emulator; "
                "GET /reports/topItems takes search-clause",
            )
        self.dimension_id: str | None = body.get("dimension")
        self.dimension = self.view.column(self.dimension_id) if self.dimension_id else None
        container = body.get("metricContainer")
        self.metric_filters = self._metric_filters(container)
        self.metrics = self._metrics(container, limits.max_report_metrics)
        self.start, self.end, self.conditions = self._filters(body.get("globalFilters"))
        if (self.end - self.start).days > limits.max_report_days:
            raise _bad(
                "invalid_parameters",
                f"the date range spans more than {limits.max_report_days} days (18 months)",
            )
        settings = body.get("settings") or {}
        self.limit = settings.get("limit", DEFAULT_LIMIT)
        self.page = settings.get("page", 0)
        if not isinstance(self.limit, int) or not 1 <= self.limit <= limits.max_report_items:
            raise _bad(
                "invalid_parameters",
                f"settings.limit must be between 1 and {limits.max_report_items}",
            )
        if not isinstance(self.page, int) or self.page < 0:
            raise _bad(
                "invalid_parameters", "settings.page must be an integer >= 0 (pages are 0-based)"
            )
        self.nones = settings.get("nonesBehavior", "exclude-nones")
        if self.nones not in ("exclude-nones", "return-nones"):
            raise _bad(
                "invalid_request", "settings.nonesBehavior must be exclude-nones or return-nones"
            )
        self.dimension_sort = settings.get("dimensionSort")
        self.statistics = (body.get("statistics") or {}).get("functions") or []
        self.item_search: Match | None = None  # topItems' search, applied to the shown values

    def _metrics(self, container: Any, most: int) -> list[dict[str, Any]]:
        metrics = container.get("metrics") if isinstance(container, dict) else None
        if not isinstance(metrics, list) or not metrics:
            raise _bad("invalid_request", "metricContainer.metrics must list at least one metric")
        if len(metrics) > most:
            raise _bad("invalid_request", f"at most {most} metrics per request ({len(metrics)})")
        for i, metric in enumerate(metrics):
            if not isinstance(metric, dict) or metric.get("id") not in METRICS:
                shown = metric.get("id") if isinstance(metric, dict) else metric
                raise _bad(
                    "invalid_metric_access",
                    f"metricContainer.metrics[{i}].id {shown!r} is not in data view; "
                    f"known: {', '.join(METRICS)}",
                )
            metric.setdefault("columnId", str(i))
            for ref in metric.get("filters") or []:
                if ref not in self.metric_filters:
                    raise _bad(
                        "invalid_parameters",
                        f"metricContainer.metrics[{i}].filters names {ref!r}, which is not "
                        "in metricContainer.metricFilters",
                    )
        return metrics

    def _metric_filters(self, container: Any) -> dict[str, Compiled]:
        """``metricContainer.metricFilters`` by id: segment, date range or breakdown."""
        raw = container.get("metricFilters") if isinstance(container, dict) else None
        compiled: dict[str, Compiled] = {}
        for i, f in enumerate(raw or []):
            if not isinstance(f, dict) or not f.get("id"):
                raise _bad("invalid_parameters", f"metricFilters[{i}] needs an id")
            kind = FILTER_TYPES.get(f.get("type"))
            if kind == "DATE_RANGE":
                start, end = self.view.date_range(f.get("dateRange"))
                compiled[f["id"]] = Compiled("(timestamp >= ? AND timestamp < ?)", [start, end])
            elif kind in ("SEGMENT", "BREAKDOWN"):
                compiled[f["id"]] = self._condition(kind, f)
            else:
                raise _bad(
                    "invalid_parameters",
                    f"metricFilters[{i}].type {f.get('type')!r} must be segment, dateRange "
                    "or breakdown",
                )
        return compiled

    def _filters(self, filters: Any) -> tuple[datetime, datetime, list[Compiled]]:
        if not isinstance(filters, list):
            raise _bad("invalid_request", "globalFilters with a dateRange filter is required")
        ranges: list[tuple[datetime, datetime]] = []
        conditions: list[Compiled] = []
        for f in filters:
            kind = FILTER_TYPES.get(f.get("type")) if isinstance(f, dict) else None
            if kind == "DATE_RANGE":
                ranges.append(self.view.date_range(f.get("dateRange")))
            elif kind in ("SEGMENT", "BREAKDOWN", "EXCLUDE_ITEM_IDS"):
                conditions.append(self._condition(kind, f))
            else:
                shown = f.get("type") if isinstance(f, dict) else f
                raise _bad(
                    "invalid_parameters",
                    f"global filter type {shown!r} must be one of {', '.join(FILTER_TYPES)}",
                )
        if len(ranges) != 1:
            raise _bad(
                "invalid_request", "exactly one dateRange (DATE_RANGE) global filter is required"
            )
        return ranges[0][0], ranges[0][1], conditions

    def _condition(self, kind: str, f: dict[str, Any]) -> Compiled:
        if kind == "SEGMENT":
            return self._segment_sql(f)
        if kind == "BREAKDOWN":
            if not f.get("dimension") or f.get("itemId") is None:
                raise _bad("invalid_parameters", "a breakdown filter needs dimension and itemId")
            return Compiled(f"{item_sql(self._scalar(f['dimension']))} = ?", [str(f["itemId"])])
        ids = f.get("itemIds") or f.get("excludeItemIds")
        if not self.dimension or not isinstance(ids, list):
            raise _bad(
                "invalid_parameters",
                "an excludeItemIds filter needs itemIds and a report dimension",
            )
        column = self._scalar(self.dimension_id or "")
        marks = ", ".join("?" * len(ids))
        return Compiled(f"{item_sql(column)} NOT IN ({marks})", [str(i) for i in ids])

    def _scalar(self, dimension_id: str) -> str:
        column = self.view.column(dimension_id)
        if column.startswith("unnest"):
            raise _bad(
                "invalid_parameters", f"{dimension_id} is a list dimension: it cannot filter"
            )
        return column

    def _segment_sql(self, f: dict[str, Any]) -> Compiled:
        definition = f.get("segmentDefinition")
        if definition is None:
            segment = self.state.resources["segment"][SEGMENTS].get(str(f.get("segmentId")))
            if segment is None:
                raise _bad(
                    "invalid_segment_ids_found", f"segment {f.get('segmentId')!r} was not found"
                )
            definition = segment["definition"]
        try:
            return compile_segment(definition, self.view.scalar_columns)
        except SegmentCompileError as exc:
            raise _bad("invalid_data", str(exc)) from exc

    def metric_sql(self) -> tuple[str, list[Any]]:
        """The select list of the metric columns and the values bound in it."""
        parts, params = [], []
        for i, metric in enumerate(self.metrics):
            template, own = METRICS[metric["id"]]
            conditions = [own] if own else []
            for ref in metric.get("filters") or []:
                conditions.append(self.metric_filters[ref].sql)
                params += self.metric_filters[ref].params
            where = f" FILTER (WHERE {' AND '.join(conditions)})" if conditions else ""
            parts.append(f"{template.format(f=where)} AS m{i}")
        return ", ".join(parts), params

    @property
    def needs_sessions(self) -> bool:
        uses = [c.sql for c in self.conditions] + [c.sql for c in self.metric_filters.values()]
        return any(m["id"] in ("metrics/visits", "metrics/sessions") for m in self.metrics) or any(
            "session_id" in sql for sql in uses
        )

    def cache_key(self) -> str:
        body = dict(self.body)
        body["settings"] = {k: v for k, v in (body.get("settings") or {}).items() if k != "page"}
        return to_json([body, self.state.lake, self.state.timezone]).decode()


def _events_glob(lake: str) -> str | None:
    events = Path(lake) / "lake" / "events"
    return str(events / "date=*" / "*.parquet") if any(events.glob("date=*/*.parquet")) else None


def _sql_string(text: str) -> str:
    """A SQL string literal (only for the emulator's own lake path and zone name: table
    functions and SET in DuckDB take constants, not bound parameters)."""
    return "'" + text.replace("'", "''") + "'"


def _run_report(query: ReportQuery, lake: str | None) -> dict[str, Any]:
    """Every row (sorted) and the totals of a report; pages are cut from this result."""
    metric_sql, metric_params = query.metric_sql()
    glob = _events_glob(lake) if lake else None
    if glob is None:
        return {"rows": [], "totals": [0] * len(query.metrics)}
    zone = query.view.zone.key
    with duckdb.connect() as db:
        db.execute(
            "CREATE TEMP TABLE base AS SELECT *, timezone(?, timestamp) AS local_time FROM "
            f"read_parquet({_sql_string(glob)}, hive_partitioning = true, "
            "hive_types = {'date': DATE}) "
            "WHERE date BETWEEN CAST(? AS DATE) AND CAST(? AS DATE) "
            "AND timestamp >= ? AND timestamp < ?",
            [zone, query.start.date(), query.end.date(), query.start, query.end],
        )
        if query.needs_sessions:
            db.execute(
                "CREATE OR REPLACE TEMP TABLE base AS SELECT *, person_id || ':' || "
                "sum(new_session) OVER (PARTITION BY person_id ORDER BY timestamp "
                "ROWS UNBOUNDED PRECEDING) AS session_id FROM (SELECT *, CASE WHEN timestamp - "
                "lag(timestamp) OVER (PARTITION BY person_id ORDER BY timestamp) <= "
                f"{SESSION_GAP} THEN 0 ELSE 1 END AS new_session FROM base)"
            )
        where = " AND ".join(c.sql for c in query.conditions) or "true"
        params = [p for c in query.conditions for p in c.params]
        db.execute(f"CREATE TEMP TABLE ev AS SELECT * FROM base WHERE {where}", params)
        totals = list(db.execute(f"SELECT {metric_sql} FROM ev", metric_params).fetchone())
        rows: list[tuple[Any, ...]] = []
        if query.dimension:
            nones = "" if query.nones == "return-nones" else "WHERE value IS NOT NULL"
            rows = db.execute(
                f"SELECT CAST(value AS VARCHAR) AS value, {item_sql('value')} AS item, "
                f"{metric_sql} FROM (SELECT {query.dimension} AS value, * FROM ev) {nones} "
                "GROUP BY 1",
                metric_params,
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
    rows.sort(key=lambda r: r[index + 2] or 0, reverse=descending)
    return rows


def _shown(value: Any) -> str:
    return value if value is not None else "Unspecified"


def _page(query: ReportQuery, result: dict[str, Any]) -> dict[str, Any]:
    rows = result["rows"]
    if query.item_search is not None:
        rows = [r for r in rows if query.item_search(_shown(r[0]))]
    total = len(rows)
    pages = math.ceil(total / query.limit) if total else 0
    chunk = rows[query.page * query.limit : (query.page + 1) * query.limit]
    column_ids = [m["columnId"] for m in query.metrics]
    out_rows = [
        {
            "itemId": r[1],
            "value": _shown(r[0]),
            "data": [_number(v) for v in r[2:]],
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
        body["columns"]["dimension"] = {"id": query.dimension_id, "type": "STRING"}
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
    token = check_cja(request)
    query = ReportQuery(await read_json(request), request.app.state.emulator)
    with report_slot(request, token):
        return errors.json_response(await _answer(request, query))


def _int(params: Any, name: str, default: int) -> int:
    try:
        return int(params.get(name, default))
    except ValueError as exc:
        raise _bad("invalid_request", f"{name} must be an integer") from exc


ECHOED_SEARCH = ("searchAnd", "searchOr", "searchNot", "searchPhrase")  # the spec's answer


@router.get("/reports/topItems")
async def top_items(request: Request) -> Response:
    """The dimension's items by occurrences, as the spec documents: ``dataId`` (``rsid``
    accepted too), ``dimension``, ``dateRange`` (``YYYY-MM-DD/YYYY-MM-DD``, dates inclusive,
    or date-times) or ``startDate``/``endDate``, default the last 90 days; ``limit``,
    ``page``, ``lookupNoneValues``, and the search parameters (:mod:`emulator.cja_search`),
    which the answer echoes as the spec's response shows."""
    token = check_cja(request)
    state: State = request.app.state.emulator
    params = request.query_params
    limit = _int(params, "limit", TOP_ITEMS_LIMIT)
    page = _int(params, "page", 0)
    most = state.config.cja.top_items_max
    if not 1 <= limit <= most:
        raise _bad("invalid_parameters", f"limit must be between 1 and {most}")
    if not params.get("dimension"):
        raise _bad("invalid_request", "dimension is required")
    search = item_search(params)
    nones = params.get("lookupNoneValues", "true").lower()
    if nones not in ("true", "false"):
        raise _bad("invalid_parameters", "lookupNoneValues must be true or false")
    view = DataView.of(state)
    if params.get("dateRange"):
        start, end = view.date_range(params["dateRange"], end_inclusive_dates=True)
    elif params.get("startDate") and params.get("endDate"):
        start, end = view.date_range(
            f"{params['startDate']}/{params['endDate']}", end_inclusive_dates=True
        )
    else:
        today = datetime.now(view.zone).replace(hour=0, minute=0, second=0, microsecond=0)
        start = (today - timedelta(days=TOP_ITEMS_DEFAULT_DAYS)).astimezone(UTC)
        end = (today + timedelta(days=1)).astimezone(UTC)
    body = {
        "dataId": params.get("dataId") or params.get("rsid"),
        "dimension": params["dimension"],
        "globalFilters": [
            {"type": "dateRange", "dateRange": f"{start.isoformat()}/{end.isoformat()}"}
        ],
        "metricContainer": {"metrics": [{"columnId": "0", "id": "metrics/occurrences"}]},
        "settings": {
            "limit": limit,
            "page": page,
            "nonesBehavior": "return-nones" if nones == "true" else "exclude-nones",
        },
    }
    query = ReportQuery(body, state)
    query.item_search = search
    with report_slot(request, token):
        answer = await _answer(request, query)
    echoed = {k: params[k] for k in ECHOED_SEARCH if k in params}
    return errors.json_response(answer | echoed)
