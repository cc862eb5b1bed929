"""A small compiler from CJA segment definitions to DuckDB predicates, for ``/reports``.

It covers the common building blocks (hit / visit / visitor containers; and, or, not;
string, list and number comparisons; exists; event-exists) so a report can be filtered
by a stored segment. Values are returned as bound parameters, never pasted into SQL.
Anything else raises :class:`SegmentCompileError` naming the unsupported function.
"""

from __future__ import annotations

from typing import Any

LIST_COLUMNS = {
    "variables/product": "product_skus",
    "variables/productcategory": "product_categories",
}
EVENT_TYPES = {
    "metrics/pageviews": "web.webpagedetails.pageViews",
    "metrics/productviews": "commerce.productViews",
    "metrics/cartadditions": "commerce.productListAdds",
    "metrics/checkouts": "commerce.checkouts",
    "metrics/orders": "commerce.purchases",
    "metrics/purchases": "commerce.purchases",
}
CONTEXTS = {"hits": None, "visits": "session_id", "visitors": "person_id"}
STRING_OPS = {
    "streq": "{x} = ?",
    "strne": "{x} <> ?",
    "contains": "contains({x}, ?)",
    "not-contains": "NOT contains({x}, ?)",
    "starts-with": "starts_with({x}, ?)",
    "ends-with": "ends_with({x}, ?)",
    "matches": "regexp_matches({x}, ?)",
}
NUMBER_OPS = {"eq": "=", "ne": "<>", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}


class SegmentCompileError(ValueError):
    """The definition uses something this compiler does not support (named in the message)."""


class Compiled:
    """SQL text with ``?`` placeholders and the values bound to them, in order."""

    def __init__(self, sql: str, params: list[Any]) -> None:
        self.sql = sql
        self.params = params


def compile_segment(definition: Any, scalar_columns: dict[str, str]) -> Compiled:
    """The WHERE predicate over the ``base`` events relation for a segment definition."""
    if not isinstance(definition, dict) or definition.get("func") != "segment":
        raise SegmentCompileError('a segment definition must be {"func": "segment", "container"}')
    return _node(definition.get("container"), scalar_columns)


def _node(node: Any, columns: dict[str, str]) -> Compiled:
    if not isinstance(node, dict):
        raise SegmentCompileError(f"segment node {node!r} is not an object")
    func = node.get("func")
    if func == "container":
        return _container(node, columns)
    if func in ("and", "or"):
        parts = [_node(p, columns) for p in node.get("preds") or []]
        if not parts:
            raise SegmentCompileError(f"{func} needs a non-empty preds list")
        joiner = f" {func.upper()} "
        return Compiled(
            "(" + joiner.join(p.sql for p in parts) + ")", [v for p in parts for v in p.params]
        )
    if func in ("not", "without"):
        inner = _node(node.get("pred") or node.get("container"), columns)
        return Compiled(f"NOT coalesce({inner.sql}, false)", inner.params)
    if func == "event-exists":
        name = (node.get("evt") or {}).get("name")
        if name == "metrics/occurrences":
            return Compiled("true", [])
        if name not in EVENT_TYPES:
            raise SegmentCompileError(f"event-exists on {name!r} is not supported")
        return Compiled("event_type = ?", [EVENT_TYPES[name]])
    if func in ("exists", "not-exists"):
        column, is_list = _attr(node.get("val"), columns)
        test = f"len(coalesce({column}, [])) > 0" if is_list else f"{column} IS NOT NULL"
        return Compiled(test if func == "exists" else f"NOT ({test})", [])
    return _comparison(node, func, columns)


def _container(node: dict[str, Any], columns: dict[str, str]) -> Compiled:
    context = node.get("context")
    if context not in CONTEXTS:
        raise SegmentCompileError(f"container context {context!r} must be hits, visits or visitors")
    pred = _node(node.get("pred"), columns)
    key = CONTEXTS[context]
    if key is None:
        return Compiled(f"({pred.sql})", pred.params)
    return Compiled(f"{key} IN (SELECT {key} FROM base WHERE {pred.sql})", pred.params)


def _attr(value: Any, columns: dict[str, str]) -> tuple[str, bool]:
    name = value.get("name") if isinstance(value, dict) and value.get("func") == "attr" else None
    if name in LIST_COLUMNS:
        return LIST_COLUMNS[name], True
    if name in columns:
        return columns[name], False
    raise SegmentCompileError(f"segment attribute {value!r} is not a known dimension")


def _comparison(node: dict[str, Any], func: Any, columns: dict[str, str]) -> Compiled:
    column, is_list = _attr(node.get("val"), columns)
    x = "x" if is_list else column
    if func in STRING_OPS:
        sql, params = STRING_OPS[func].format(x=x), [str(node.get("str", ""))]
    elif func in ("streq-in", "not-streq-in"):
        values = node.get("list")
        if not isinstance(values, list) or not values:
            raise SegmentCompileError(f"{func} needs a non-empty list")
        sql = f"{x} {'NOT ' if func.startswith('not') else ''}IN ({', '.join('?' * len(values))})"
        params = [str(v) for v in values]
    elif func in NUMBER_OPS:
        number = node.get("num")
        if not isinstance(number, int | float):
            raise SegmentCompileError(f"{func} needs a numeric num")
        sql, params = f"TRY_CAST({x} AS DOUBLE) {NUMBER_OPS[func]} ?", [float(number)]
    else:
        raise SegmentCompileError(f"segment function {func!r} is not supported by the emulator")
    if is_list:
        sql = f"len(list_filter(coalesce({column}, []), lambda x: {sql})) > 0"
    return Compiled(f"coalesce({sql}, false)", params)
