"""CJA segment ("filter") definitions → the filter tree (reference: cja-segment-definitions.md).

Accepts the ``definition`` JSON of the CJA Segments API (or the whole segment object that
holds it): ``func``/``container``/``pred`` trees with contexts hits / visits / visitors, both
negation encodings (``not-*`` funcs and ``without``), sequences with time / container
restrictions and exclusions. A construct without a faithful translation raises
:class:`SegmentError` naming it; we never compute a silently different audience.

CJA component ids map to lake fields through a data-view mapping: ``DEFAULT_MAPPING``
covers the standard components; a spec can add or override entries
(``filter.segment.mapping``).
"""

from __future__ import annotations

import json
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from cja_audiences.filters.ir import (
    All,
    Any_,
    Cond,
    Container,
    LogicGroup,
    Measure,
    Metric,
    Node,
    Not,
    Sequence,
    Span,
    Step,
)
from cja_audiences.filters.rules import STANDARD_MEASURES, RuleError, parse_measure

CONTEXTS = {"hits": "event", "visits": "session", "visitors": "person"}
# CJA string funcs → (operator, argument key). Case-insensitive ones are so in the macros.
STRING_FUNCS = {
    "streq": ("equals", "str"),
    "not-streq": ("not_equals", "str"),
    "strlt": ("lt", "str"),
    "strgt": ("gt", "str"),
    "strle": ("lte", "str"),
    "strge": ("gte", "str"),
    "streq-in": ("in", "list"),
    "not-streq-in": ("not_in", "list"),
    "contains": ("contains", "str"),
    "not-contains": ("not_contains", "str"),
    "contains-any-of": ("contains_any", "list"),
    "contains-all-of": ("contains_all", "list"),
    # Adobe's operator guide: "does not contain any of" excludes items containing any of the
    # values, "does not contain all of" those containing all of them (the API table's wording
    # of these two reads swapped; the names and the guide agree)
    "not-contains-any-of": ("not_contains_any", "list"),
    "not-contains-all-of": ("not_contains_all", "list"),
    "starts-with": ("starts_with", "str"),
    "not-starts-with": ("not_starts_with", "str"),
    "ends-with": ("ends_with", "str"),
    "not-ends-with": ("not_ends_with", "str"),
    "matches": ("like", "glob"),
    "not-matches": ("not_like", "glob"),
    "matches-regex": ("matches", "regex"),
    "not-matches-regex": ("not_matches", "regex"),
}
NUMBER_FUNCS = {
    "eq": "equals",
    "not-eq": "not_equals",
    "gt": "gt",
    "lt": "lt",
    "ge": "gte",
    "le": "lte",
}
NUMBER_LIST_FUNCS = {
    "eq-any-of": "in",
    "eq-in": "in",
    "not-eq-any-of": "not_in",
    "not-eq-in": "not_in",
}
TIME_UNITS = {
    "minute": "minutes",
    "hour": "hours",
    "day": "days",
    "week": "weeks",
    "month": "months",
    "quarter": "months",
    "year": "months",
}
UNIT_FACTOR = {"quarter": 3, "year": 12}
CONTAINER_UNITS = {"hits": "events", "visits": "sessions"}
UNSUPPORTED = {
    "not": "'not' is not an Adobe func; use 'without'",
}

# Standard CJA components → lake fields (dimensions) and measures (metrics).
DEFAULT_DIMENSIONS = {
    "variables/page": "page_name",
    "variables/pagename": "page_name",
    "variables/web.webPageDetails.name": "page_name",
    "variables/pageurl": "page_url",
    "variables/page_url": "page_url",
    "variables/web.webPageDetails.URL": "page_url",
    "variables/marketingchannel": "marketing_channel",
    "variables/marketing_channel": "marketing_channel",
    "variables/campaign": "campaign",
    "variables/trackingcode": "campaign",
    "variables/product": "product_skus",
    "variables/productsku": "product_skus",
    "variables/productcategory": "product_categories",
    "variables/category": "product_categories",
    "variables/eventtype": "event_type",
    "variables/event_type": "event_type",
    "variables/orderid": "order_id",
    "variables/purchaseid": "order_id",
    "variables/geocountry": "country",
    "variables/country": "country",
    "variables/georegion": "region",
    "variables/region": "region",
    "variables/mobiledevicetype": "device_type",
    "variables/devicetype": "device_type",
    "variables/browser": "browser",
    "variables/revenue": "revenue",
    "variables/quantity": "quantity",
    # the session's number in the person's history (AA Visit Number, CJA Session Number)
    "variables/visitnumber": "session_number",
    "variables/sessionnumber": "session_number",
    "variables/session_number": "session_number",
}
DEFAULT_METRICS: dict[str, Any] = {
    "metrics/occurrences": "events",
    "metrics/events": "events",
    "metrics/visits": "sessions",
    "metrics/sessions": "sessions",
    "metrics/revenue": "revenue",
    "metrics/orders": "orders",
    "metrics/units": "units",
    "metrics/pageviews": "page_views",
    "metrics/productviews": "product_views",
    "metrics/prodviews": "product_views",
    "metrics/cartadditions": "cart_additions",
    "metrics/scadd": "cart_additions",
    "metrics/checkouts": "checkouts",
    "metrics/sccheckout": "checkouts",
}


class SegmentError(ValueError):
    """A definition we cannot compile faithfully; names the construct and where it is."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"segment definition at {where}: {message}")
        self.where = where


class DataViewMapping:
    """CJA component ids → lake fields / measures. Entries in ``overrides``:
    ``{"dimensions": {"variables/evar7": "dimensions.evar7"},
    "metrics": {"metrics/event12": {"count": {field: ..., op: ..., value: ...}}}}``
    (metric targets use the rules metric syntax). Lake column names (``variables/page_name``)
    and computed fields map to themselves."""

    def __init__(self, overrides: dict[str, Any] | None = None) -> None:
        overrides = overrides or {}
        unknown = set(overrides) - {"dimensions", "metrics"}
        if unknown:
            raise SegmentError(
                "mapping", f"unknown keys {sorted(unknown)}; use dimensions, metrics"
            )
        self.dimensions = {**DEFAULT_DIMENSIONS, **(overrides.get("dimensions") or {})}
        self.metrics = {**DEFAULT_METRICS, **(overrides.get("metrics") or {})}

    def dimension(self, name: str, where: str) -> str:
        if name in self.dimensions:
            return self.dimensions[name]
        if name.startswith("variables/"):
            return name.removeprefix("variables/")  # a lake column; the compiler checks it
        raise SegmentError(where, f"dimension {name!r} is not a variables/... component id")

    def measure(self, name: str, where: str) -> Measure:
        target = self.metrics.get(name)
        if target is None:
            bare = name.removeprefix("metrics/")
            if bare in STANDARD_MEASURES:
                return STANDARD_MEASURES[bare]
            raise SegmentError(
                where,
                f"metric {name!r} has no mapping; add it to filter.segment.mapping.metrics "
                f"(known: {', '.join(sorted(self.metrics))})",
            )
        try:
            return parse_measure(target, f"mapping.metrics[{name}]")
        except RuleError as exc:
            raise SegmentError(where, str(exc)) from None


def load_definition(raw: Any, where: str = "definition") -> dict[str, Any]:
    """The ``definition`` out of a segment object, a POST body or a bare definition."""
    if isinstance(raw, dict) and "definition" in raw:
        raw = raw["definition"]
    if not isinstance(raw, dict):
        raise SegmentError(where, "expected a JSON object with func 'segment'")
    return raw


def read_definition(path: Path) -> dict[str, Any]:
    try:
        return load_definition(json.loads(path.read_text()), str(path))
    except (OSError, json.JSONDecodeError) as exc:
        raise SegmentError(str(path), f"cannot read the segment JSON: {exc}") from None


Resolver = Callable[[str], dict[str, Any]]


@dataclass(frozen=True)
class ParsedSegment:
    """A definition's filter tree and the saved segments it references (ids, first use
    order, nested references included): what the 20-segments guardrail counts."""

    tree: Node
    references: tuple[str, ...]


def parse_segment(
    definition: dict[str, Any],
    mapping: DataViewMapping | None = None,
    resolve: Resolver | None = None,
) -> Node:
    """The filter tree of one CJA segment definition."""
    return read_segment(definition, mapping, resolve).tree


def read_segment(
    definition: dict[str, Any],
    mapping: DataViewMapping | None = None,
    resolve: Resolver | None = None,
) -> ParsedSegment:
    """The tree and references of a definition; ``resolve(id)`` returns the definition of a
    saved segment a ``segment-ref`` names (the referenced segment's container is used in its
    place, so its context narrows as any nested container does)."""
    parser = _Parser(mapping or DataViewMapping(), resolve)
    tree = parser.top(load_definition(definition))
    return ParsedSegment(tree, tuple(parser.references))


class _Parser:
    def __init__(self, mapping: DataViewMapping, resolve: Resolver | None = None) -> None:
        self.mapping = mapping
        self.resolve = resolve
        self.references: list[str] = []
        self.stack: list[str] = []  # segment-refs being expanded, for cycle detection

    def top(self, d: dict[str, Any]) -> Node:
        func = d.get("func")
        if func not in ("segment", "segment-def"):
            raise SegmentError("func", f"expected 'segment' at the top (got {func!r})")
        container = d.get("container")
        if isinstance(container, dict) and container.get("func") == "segment":
            container = {**container, "func": "container"}  # the 2025 CJA-doc variant
        node = self.node(container, "container")
        if not isinstance(node, Container):
            raise SegmentError("container", "the top-level container is missing")
        return node

    def node(self, d: Any, where: str) -> Node:
        if not isinstance(d, dict) or "func" not in d:
            raise SegmentError(where, "expected an object with a func")
        func = d["func"]
        if func in UNSUPPORTED:
            raise SegmentError(where, f"func {func!r} is not supported: {UNSUPPORTED[func]}")
        if func == "container":
            context = d.get("context")
            if context not in CONTEXTS:
                raise SegmentError(
                    f"{where}.context", f"got {context!r}; allowed: hits, visits, visitors"
                )
            return Container(CONTEXTS[context], self.node(d.get("pred"), f"{where}.pred"))
        if func in ("and", "or"):
            preds = d.get("preds")
            if not isinstance(preds, list) or not preds:
                raise SegmentError(f"{where}.preds", "expected a non-empty list")
            nodes = tuple(self.node(p, f"{where}.preds[{i}]") for i, p in enumerate(preds))
            return All(nodes) if func == "and" else Any_(nodes)
        if func == "without":
            return Not(self.node(d.get("pred"), f"{where}.pred"))
        if func in ("sequence", "sequence-prefix", "sequence-suffix"):
            return self.sequence(d, where)
        if func in ("sequence-and", "sequence-or"):
            # a Logic Group outside a stream: its checkpoints in any order = and / or
            nodes = self.checkpoints(d, where, Container)
            return All(nodes) if func == "sequence-and" else Any_(nodes)
        if func == "segment-ref":
            return self.reference(d, where)
        return self.leaf(d, where)

    def reference(self, d: dict[str, Any], where: str) -> Node:
        ref = d.get("id", d.get("segmentId"))
        if not isinstance(ref, str) or not ref:
            raise SegmentError(where, "segment-ref needs the saved segment's id")
        if ref in self.stack:
            cycle = " -> ".join([*self.stack, ref])
            raise SegmentError(where, f"segment-ref cycle: {cycle}")
        if self.resolve is None:
            raise SegmentError(where, f"segment-ref {ref!r}: no place to look saved segments up")
        if ref not in self.references:
            self.references.append(ref)
        definition = load_definition(self.resolve(ref), f"segment {ref}")
        self.stack.append(ref)
        try:
            return self.top(definition)
        finally:
            self.stack.pop()

    # ---- leaves ----
    def attr(self, val: Any, where: str) -> str:
        if not isinstance(val, dict) or val.get("func") != "attr" or "name" not in val:
            raise SegmentError(where, "expected {func: attr, name: variables/...}")
        model = val.get("allocation-model")
        if model is not None and model.get("func") != "allocation-instance":
            raise SegmentError(
                f"{where}.allocation-model",
                f"allocation model {model.get('func')!r} is not supported (only instance)",
            )
        return self.mapping.dimension(val["name"], where)

    def event(self, evt: Any, where: str) -> Measure:
        if not isinstance(evt, dict) or evt.get("func") != "event" or "name" not in evt:
            raise SegmentError(where, "expected {func: event, name: metrics/...}")
        return self.mapping.measure(evt["name"], where)

    def leaf(self, d: dict[str, Any], where: str) -> Node:
        func = d["func"]
        if func in STRING_FUNCS:
            op, key = STRING_FUNCS[func]
            value = self.arg(d, key, where)
            if key == "glob":
                value = glob_to_like(value)
            return Cond(self.attr(d.get("val"), f"{where}.val"), op, value)
        if func in ("exists", "not-exists"):
            return Cond(self.attr(d.get("val"), f"{where}.val"), func.replace("-", "_"))
        if func in ("event-exists", "not-event-exists"):
            measure = self.event(d.get("evt"), f"{where}.evt")
            metric: Node = Metric(measure, "gt", 0)
            # like every not-* func: the negation holds per event (see predicate in cja.sql.j2)
            return Container("event", Not(metric) if func.startswith("not-") else metric)
        if func in NUMBER_FUNCS or func in NUMBER_LIST_FUNCS or func == "range":
            return self.numeric(d, where)
        raise SegmentError(where, f"func {func!r} is not supported")

    def arg(self, d: dict[str, Any], key: str, where: str) -> Any:
        if key not in d:
            raise SegmentError(where, f"func {d['func']!r} needs {key!r}")
        value = d[key]
        if key == "list":
            if not isinstance(value, list) or not value:
                raise SegmentError(f"{where}.list", "expected a non-empty list")
            return [str(v) if not isinstance(v, int | float) else v for v in value]
        if not isinstance(value, str | int | float):
            raise SegmentError(f"{where}.{key}", "expected a string or a number")
        return value

    def numeric(self, d: dict[str, Any], where: str) -> Node:
        func = d["func"]
        val = d.get("val")
        if func == "range":  # the 2025 CJA-doc variant: low <= value <= high
            low, high = (self.number(d, k, where) for k in ("low", "high"))
            return All(
                (self.compare(val, "gte", low, where), self.compare(val, "lte", high, where))
            )
        if func in NUMBER_LIST_FUNCS:
            values = self.arg(d, "list", where)
            return self.compare(val, NUMBER_LIST_FUNCS[func], values, where)
        return self.compare(val, NUMBER_FUNCS[func], self.number(d, "num", where), where)

    def number(self, d: dict[str, Any], key: str, where: str) -> float | int:
        value = d.get(key)
        try:
            number = float(value)  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SegmentError(f"{where}.{key}", f"expected a number (got {value!r})") from None
        return int(number) if number.is_integer() else number

    def compare(self, val: Any, op: str, value: Any, where: str) -> Node:
        if isinstance(val, dict) and val.get("func") == "total":
            if op in ("in", "not_in"):
                raise SegmentError(where, "a list comparison on a metric total is not supported")
            return Metric(self.event(val.get("evt"), f"{where}.val.evt"), op, value)
        if isinstance(val, dict) and val.get("func") == "total-distinct":
            field = self.attr(val.get("field"), f"{where}.val.field")
            return Metric(Measure("distinct", field), op, value)
        return Cond(self.attr(val, f"{where}.val"), op, value)

    # ---- sequences ----
    def sequence(self, d: dict[str, Any], where: str) -> Node:
        func = d["func"]
        stream = d.get("stream")
        if not isinstance(stream, list) or not stream:
            raise SegmentError(f"{where}.stream", "expected a non-empty list")
        steps: list[Step] = []
        pending: dict[str, Any] = {"within": [], "after": None, "exclude": None}
        exclude_before = None
        exclude_next = False
        for i, item in enumerate(stream):
            at = f"{where}.stream[{i}]"
            kind = item.get("func") if isinstance(item, dict) else None
            if kind in ("time-restriction", "container-restriction", "dimension-restriction"):
                span, limit = self.restriction(item, at)
                if limit == "within":
                    pending["within"].append(span)
                elif pending["after"] is not None:
                    raise SegmentError(at, "two 'after' restrictions between the same checkpoints")
                else:
                    pending["after"] = span
            elif kind == "exclude-next-checkpoint":
                if exclude_next:
                    raise SegmentError(at, "two exclude-next-checkpoint in a row")
                exclude_next = True
            elif kind in ("container", "sequence-and", "sequence-or"):
                check = self.checkpoint(item, at, excluded=exclude_next)
                if exclude_next:
                    exclude_next = False
                    if not steps:
                        exclude_before = _or(exclude_before, check)
                    else:
                        pending["exclude"] = _or(pending["exclude"], check)
                    continue
                if not steps and (pending["within"] or pending["after"]):
                    raise SegmentError(at, "a restriction before the first checkpoint")
                steps.append(
                    Step(check, tuple(pending["within"]), pending["after"], pending["exclude"])
                )
                pending = {"within": [], "after": None, "exclude": None}
            elif kind in UNSUPPORTED:
                raise SegmentError(at, f"func {kind!r} is not supported: {UNSUPPORTED[kind]}")
            else:
                raise SegmentError(at, f"stream item func {kind!r} is not supported")
        exclude_after = pending["exclude"]
        if exclude_next:
            raise SegmentError(
                where, "exclude-next-checkpoint at the end of the stream has no checkpoint"
            )
        if pending["within"] or pending["after"]:
            raise SegmentError(where, "a restriction after the last checkpoint")
        if not steps:
            raise SegmentError(where, "a sequence needs at least one checkpoint")
        if func == "sequence":
            return Sequence(tuple(steps), "exists", None, exclude_before, exclude_after)
        context = d.get("context", "visitors")
        if context not in ("visitors", "visits"):
            raise SegmentError(f"{where}.context", f"got {context!r}; allowed: visitors, visits")
        mode = "only_after" if func == "sequence-prefix" else "only_before"
        return Sequence(tuple(steps), mode, CONTEXTS[context], exclude_before, exclude_after)

    def checkpoint(self, item: dict[str, Any], where: str, *, excluded: bool = False) -> Node:
        """A stream item: a hits container (an event condition), a visits container (a
        whole session), or a Logic Group (``sequence-and``; ``sequence-or`` is one event
        matching any of its checkpoints, Adobe's "first match")."""
        func = item["func"]
        if func in ("sequence-and", "sequence-or"):
            nodes = self.checkpoints(item, where, Cond)
            if func == "sequence-or":
                return nodes[0] if len(nodes) == 1 else Any_(nodes)
            if excluded:
                raise SegmentError(
                    where,
                    "exclude-next-checkpoint before a sequence-and Logic Group is not "
                    "supported: Adobe's two examples of it contradict each other (none of "
                    "the conditions vs not all of them); exclude a sequence-or group or "
                    "single checkpoints instead",
                )
            return LogicGroup(nodes)
        context = item.get("context")
        if context == "hits":
            return self.node(item.get("pred"), f"{where}.pred")
        if context == "visits":
            if excluded:
                raise SegmentError(
                    where,
                    "exclude-next-checkpoint before a visits checkpoint is not supported: "
                    "Adobe does not say whether a visit that only partly falls between the "
                    "checkpoints counts; exclude a hits checkpoint instead",
                )
            return Container("session", self.node(item.get("pred"), f"{where}.pred"))
        raise SegmentError(
            f"{where}.context",
            f"got {context!r}; a sequence checkpoint is a hits or visits container",
        )

    def checkpoints(self, d: dict[str, Any], where: str, kind: type) -> tuple[Node, ...]:
        """A Logic Group's checkpoints: hits containers inside a stream (event conditions),
        any containers outside one."""
        items = d.get("checkpoints")
        if not isinstance(items, list) or not items:
            raise SegmentError(f"{where}.checkpoints", "expected a non-empty list of containers")
        nodes = []
        for i, item in enumerate(items):
            at = f"{where}.checkpoints[{i}]"
            if not isinstance(item, dict) or item.get("func") != "container":
                raise SegmentError(at, "expected a container")
            if kind is Container:
                nodes.append(self.node(item, at))
            elif item.get("context") != "hits":
                raise SegmentError(
                    f"{at}.context",
                    f"got {item.get('context')!r}: a Logic Group inside a sequence groups hits "
                    "checkpoints",
                )
            else:
                nodes.append(self.node(item.get("pred"), f"{at}.pred"))
        return tuple(nodes)

    def restriction(self, item: dict[str, Any], where: str) -> tuple[Span, str]:
        limit = item.get("limit")
        if limit not in ("within", "after"):
            raise SegmentError(f"{where}.limit", f"got {limit!r}; allowed: within, after")
        try:
            count = int(item.get("count"))  # type: ignore[arg-type]
        except (TypeError, ValueError):
            raise SegmentError(
                f"{where}.count", f"expected a whole number (got {item.get('count')!r})"
            ) from None
        if item["func"] == "dimension-restriction":
            field = self.attr(item.get("attribute"), f"{where}.attribute")
            return Span(count, "values", field), limit
        if item["func"] == "time-restriction":
            unit = item.get("unit")
            if unit not in TIME_UNITS:
                raise SegmentError(
                    f"{where}.unit", f"got {unit!r}; allowed: {', '.join(TIME_UNITS)}"
                )
            return Span(count * UNIT_FACTOR.get(unit, 1), TIME_UNITS[unit]), limit
        container = item.get("container")
        if container not in CONTAINER_UNITS:
            raise SegmentError(f"{where}.container", f"got {container!r}; allowed: hits, visits")
        return Span(count, CONTAINER_UNITS[container]), limit


def _or(left: Node | None, right: Node) -> Node:
    return right if left is None else Any_((left, right))


def glob_to_like(pattern: Any) -> str:
    """CJA ``matches`` glob (``*`` any run, ``\\*`` a literal star) as an ILIKE pattern."""
    out, i, text = [], 0, str(pattern)
    while i < len(text):
        ch = text[i]
        if ch == "\\" and i + 1 < len(text) and text[i + 1] == "*":
            out.append("*")
            i += 2
            continue
        out.append({"*": "%", "%": "\\%", "_": "\\_", "\\": "\\\\"}.get(ch, ch))
        i += 1
    return "".join(out)


def fetch_definition(config: Any, segment_id: str) -> dict[str, Any]:
    """GET {base_url}/segments/{id}?expansion=definition through the platform client (IMS
    headers, one token refresh on 401, backoff on 429 and 5xx)."""
    from cja_audiences.adobe.http import PlatformClient, PlatformError, TokenProvider

    where = f"segment {segment_id}"
    try:
        with PlatformClient(config, TokenProvider(config)) as client:
            body = client.request(
                "GET", f"/segments/{segment_id}", params={"expansion": "definition"}
            )
    except PlatformError as exc:
        if exc.status == 404:
            raise SegmentError(where, "not found in CJA (check filter.segment.id)") from None
        raise SegmentError(where, f"the CJA Segments API failed: {exc}") from None
    return load_definition(body, where)
