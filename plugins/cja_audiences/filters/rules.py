"""Declarative rules (YAML ``filter.rules``) parsed into the filter tree.

A node is one mapping. Structural nodes have one key: ``person`` / ``session`` / ``event``
(containers), ``all`` / ``any`` (lists), ``exclude`` (complement), ``sequence`` /
``only_after`` / ``only_before``. Leaves are ``{field, op, value}`` (event dimension),
``{attribute, op, value}`` (person attribute) or ``{metric, op, value}``. Any value may be
``{param: NAME}``. Parsing is pure Python (no SQL), so specs stay cheap to load.
"""

from __future__ import annotations

import re
from typing import Any

from cja_audiences.filters.ir import (
    AGGREGATES,
    COMPARE_OPS,
    LEVELS,
    LIST_VALUE_OPS,
    NO_VALUE_OPS,
    OPS,
    SPAN_UNITS,
    All,
    Any_,
    Attr,
    Cond,
    Container,
    LogicGroup,
    Measure,
    Metric,
    Node,
    Not,
    Param,
    Sequence,
    Span,
    Step,
)

NAME = re.compile(r"^[A-Za-z_][A-Za-z0-9_]{0,62}$")
STRUCTURAL = (*LEVELS, "all", "any", "exclude", "sequence", "only_after", "only_before")
# Standard metrics by name, as CJA users know them (also the defaults of the data-view mapping).
STANDARD_MEASURES: dict[str, Measure] = {
    "events": Measure("count"),
    "occurrences": Measure("count"),
    "sessions": Measure("sessions"),
    "visits": Measure("sessions"),
    "revenue": Measure("sum", "revenue"),
    "units": Measure("sum", "quantity"),
    "orders": Measure("count", where=Cond("event_type", "equals", "commerce.purchases")),
    "page_views": Measure(
        "count", where=Cond("event_type", "equals", "web.webpagedetails.pageViews")
    ),
    "product_views": Measure("count", where=Cond("event_type", "equals", "commerce.productViews")),
    "cart_additions": Measure(
        "count", where=Cond("event_type", "equals", "commerce.productListAdds")
    ),
    "checkouts": Measure("count", where=Cond("event_type", "equals", "commerce.checkouts")),
}


class RuleError(ValueError):
    """A rule that cannot be compiled; ``where`` is the path inside the filter."""

    def __init__(self, where: str, message: str) -> None:
        super().__init__(f"{where}: {message}")
        self.where = where


def parse_rules(raw: Any, where: str = "filter.rules") -> Node:
    """The whole rules tree; a bare condition at the top means a person container."""
    node = parse_node(raw, where)
    return node if isinstance(node, Container) else Container("person", node)


def parse_node(raw: Any, where: str) -> Node:
    if not isinstance(raw, dict) or not raw:
        raise RuleError(
            where,
            f"expected a mapping with one of {', '.join(STRUCTURAL)} "
            "or a condition {field|attribute|metric, op, value}",
        )
    keys = set(raw)
    structural = keys & set(STRUCTURAL)
    if structural:
        if len(raw) != 1:
            raise RuleError(
                where,
                f"a {'/'.join(sorted(structural))} node takes exactly one "
                f"key (got {', '.join(sorted(keys))})",
            )
        key, value = next(iter(raw.items()))
        return _structural(key, value, f"{where}.{key}")
    for leaf in ("field", "attribute", "metric"):
        if leaf in keys:
            return _leaf(leaf, raw, where)
    raise RuleError(
        where,
        f"unknown keys {', '.join(sorted(map(str, keys)))}; use one of "
        f"{', '.join(STRUCTURAL)}, field, attribute, metric",
    )


def _structural(key: str, value: Any, where: str) -> Node:
    if key in LEVELS:
        return Container(key, parse_node(value, where))  # type: ignore[arg-type]
    if key in ("all", "any"):
        if not isinstance(value, list) or not value:
            raise RuleError(where, "expected a non-empty list of nodes")
        nodes = tuple(parse_node(item, f"{where}[{i}]") for i, item in enumerate(value))
        return All(nodes) if key == "all" else Any_(nodes)
    if key == "exclude":
        return Not(parse_node(value, where))
    return _sequence(key, value, where)


def _leaf(kind: str, raw: dict[str, Any], where: str) -> Node:
    allowed = {kind, "op", "value"}
    extra = set(raw) - allowed
    if extra:
        raise RuleError(
            where,
            f"unknown keys {', '.join(sorted(map(str, extra)))}; a "
            f"{kind} condition has {', '.join(sorted(allowed))}",
        )
    op = raw.get("op")
    if kind == "metric":
        if op not in COMPARE_OPS:
            raise RuleError(f"{where}.op", f"got {op!r}; allowed: {', '.join(COMPARE_OPS)}")
        if "value" not in raw:
            raise RuleError(where, "a metric condition needs a value (the threshold)")
        measure = parse_measure(raw["metric"], f"{where}.metric")
        return Metric(measure, op, _value(raw["value"], f"{where}.value", numeric=True))
    name = raw[kind]
    if not isinstance(name, str) or not name:
        raise RuleError(f"{where}.{kind}", "expected a field name")
    if op not in OPS:
        raise RuleError(f"{where}.op", f"got {op!r}; allowed: {', '.join(OPS)}")
    value = _op_value(op, raw, where)
    return Cond(name, op, value) if kind == "field" else Attr(name, op, value)


def _op_value(op: str, raw: dict[str, Any], where: str) -> Any:
    if op in NO_VALUE_OPS:
        if "value" in raw:
            raise RuleError(f"{where}.value", f"op {op} takes no value")
        return None
    if "value" not in raw:
        raise RuleError(where, f"op {op} needs a value")
    value = _value(raw["value"], f"{where}.value")
    if op in LIST_VALUE_OPS and not isinstance(value, Param):
        if not isinstance(value, list) or not value:
            raise RuleError(f"{where}.value", f"op {op} needs a non-empty list")
    elif isinstance(value, list):
        raise RuleError(f"{where}.value", f"op {op} takes one value; use in / not_in for lists")
    return value


def _value(raw: Any, where: str, numeric: bool = False) -> Any:
    if isinstance(raw, dict):
        if (
            set(raw) != {"param"}
            or not isinstance(raw["param"], str)
            or not NAME.match(raw["param"])
        ):
            raise RuleError(where, "a value is a literal, a list of literals or {param: NAME}")
        return Param(raw["param"])
    if isinstance(raw, list):
        for i, item in enumerate(raw):
            if not isinstance(item, str | int | float | bool) or item is None:
                raise RuleError(f"{where}[{i}]", "list items must be literals")
        return list(raw)
    if numeric and (isinstance(raw, bool) or not isinstance(raw, int | float)):
        raise RuleError(where, f"expected a number (got {raw!r})")
    if raw is None:
        raise RuleError(where, "a value cannot be empty; use op exists / not_exists")
    return raw


def parse_measure(raw: Any, where: str) -> Measure:
    """``events``, ``sessions``, a standard metric name, or ``{sum|min|max|distinct: FIELD}``
    / ``{count: CONDITION}``."""
    if isinstance(raw, str):
        if raw in STANDARD_MEASURES:
            return STANDARD_MEASURES[raw]
        raise RuleError(
            where,
            f"unknown metric {raw!r}; use one of "
            f"{', '.join(STANDARD_MEASURES)} or {{sum|min|max|distinct: FIELD}}",
        )
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RuleError(
            where,
            "expected a metric name or one of {sum|min|max|distinct: FIELD}, {count: CONDITION}",
        )
    agg, arg = next(iter(raw.items()))
    if agg not in AGGREGATES or agg == "sessions":
        raise RuleError(
            where, f"unknown aggregate {agg!r}; allowed: sum, min, max, distinct, count"
        )
    if agg == "count":
        return Measure("count", where=parse_node(arg, f"{where}.count"))
    if not isinstance(arg, str) or not arg:
        raise RuleError(f"{where}.{agg}", "expected a field name")
    if agg == "sum" and arg in STANDARD_MEASURES:
        return STANDARD_MEASURES[arg]
    return Measure(agg, arg)


def _sequence(key: str, raw: Any, where: str) -> Sequence:
    allowed = {"steps", "exclude_before", "exclude_after"} | (
        {"scope"} if key != "sequence" else set()
    )
    if not isinstance(raw, dict) or "steps" not in raw:
        raise RuleError(
            where,
            f"expected a mapping with steps (and optionally "
            f"{', '.join(sorted(allowed - {'steps'}))})",
        )
    extra = set(raw) - allowed
    if extra:
        raise RuleError(
            where, f"unknown keys {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
        )
    steps_raw = raw["steps"]
    if not isinstance(steps_raw, list) or len(steps_raw) < 2:
        raise RuleError(f"{where}.steps", "a sequence needs at least two steps")
    steps = tuple(_step(item, f"{where}.steps[{i}]", i) for i, item in enumerate(steps_raw))
    scope = raw.get("scope", "person")
    if key != "sequence" and scope not in ("person", "session"):
        raise RuleError(f"{where}.scope", f"got {scope!r}; allowed: person, session")

    def optional(name: str) -> Node | None:
        return parse_node(raw[name], f"{where}.{name}") if name in raw else None

    return Sequence(
        steps,
        mode="exists" if key == "sequence" else key,  # type: ignore[arg-type]
        scope=None if key == "sequence" else scope,
        exclude_before=optional("exclude_before"),
        exclude_after=optional("exclude_after"),
    )


STEP_KINDS = ("event", "session", "all_of", "any_of")


def _step(raw: Any, where: str, index: int) -> Step:
    """``{event: CONDITION}`` (one event), ``{session: CONDITION}`` (a whole session, a visit
    checkpoint), ``{all_of: [CONDITIONS]}`` (a Logic Group: each on some event, any order) or
    ``{any_of: [CONDITIONS]}``; plus within?, after?, exclude?."""
    allowed = {*STEP_KINDS, "within", "after", "exclude"}
    kinds = [k for k in STEP_KINDS if isinstance(raw, dict) and k in raw]
    if not isinstance(raw, dict) or len(kinds) != 1:
        raise RuleError(
            where,
            "a step is one of {event|session|all_of|any_of: ...} plus within?, after?, exclude?",
        )
    extra = set(raw) - allowed
    if extra:
        raise RuleError(
            where, f"unknown keys {', '.join(sorted(extra))}; allowed: {', '.join(sorted(allowed))}"
        )
    if index == 0 and set(raw) & {"within", "after", "exclude"}:
        raise RuleError(
            where,
            "the first step has no previous step: within/after/exclude "
            "belong to the later step (use exclude_before for the start)",
        )
    kind = kinds[0]
    at = f"{where}.{kind}"
    if kind in ("all_of", "any_of"):
        items = raw[kind]
        if not isinstance(items, list) or not items:
            raise RuleError(at, "expected a non-empty list of conditions")
        nodes = tuple(parse_node(item, f"{at}[{i}]") for i, item in enumerate(items))
        node: Node = LogicGroup(nodes) if kind == "all_of" else Any_(nodes)
    elif kind == "session":
        node = Container("session", parse_node(raw[kind], at))
    else:
        node = parse_node(raw[kind], at)
    within = raw.get("within")
    return Step(
        node=node,
        within=(parse_span(within, f"{where}.within"),) if within is not None else (),
        after=parse_span(raw["after"], f"{where}.after") if "after" in raw else None,
        exclude=parse_node(raw["exclude"], f"{where}.exclude") if "exclude" in raw else None,
    )


def parse_span(raw: Any, where: str) -> Span:
    """``{minutes|...|events: N}`` or ``{values: N, field: F}`` (N events with F set)."""
    field = None
    if isinstance(raw, dict) and "values" in raw:
        field = raw.get("field")
        if set(raw) != {"values", "field"} or not isinstance(field, str) or not field:
            raise RuleError(where, "a values span is {values: N, field: FIELD}")
        raw = {"values": raw["values"]}
    if not isinstance(raw, dict) or len(raw) != 1:
        raise RuleError(where, f"expected one of {{{'|'.join(SPAN_UNITS)}: N}}")
    unit, count = next(iter(raw.items()))
    if unit not in SPAN_UNITS:
        raise RuleError(where, f"unknown unit {unit!r}; allowed: {', '.join(SPAN_UNITS)}")
    value = _value(count, f"{where}.{unit}", numeric=True)
    if not isinstance(value, Param) and (not isinstance(value, int) or value < 0):
        raise RuleError(f"{where}.{unit}", f"expected a whole number >= 0 (got {count!r})")
    if unit == "values" and field is None:
        raise RuleError(where, "a values span is {values: N, field: FIELD}")
    return Span(value, unit, field)
