"""CJA segment definitions (Adobe's grammar) compiled to DuckDB predicates, for ``/reports``.

The grammar is Adobe's (analytics-2.0 ``segments/definition.md``): ``segment`` at the top
(or the ``segment-def`` wrapper of newer CJA examples), ``container`` with ``hits`` /
``visits`` / ``visitors``, ``and`` / ``or`` / ``without``; string funcs with their ``not-*``
twins, ``starts-with`` / ``ends-with`` case-insensitive, ``matches`` with a ``glob``; number
funcs ``eq`` / ``not-eq`` / ``gt`` / ``lt`` / ``ge`` / ``le`` and their ``-any-of`` lists;
``exists``, ``event-exists`` and their ``not-`` forms. Names Adobe does not document (``not``,
``strne``, ``ne``) and the sequence family raise :class:`SegmentCompileError` naming the func.
Values are bound parameters, never pasted into SQL.
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
ALL_EVENTS = ("metrics/occurrences", "metrics/visits", "metrics/visitors", "metrics/people")
CONTEXTS = {"hits": None, "visits": "session_id", "visitors": "person_id"}
# func -> (SQL with {x} for the value, argument key); "-ci" funcs compare lower-cased
STRING_OPS = {
    "streq": ("{x} = ?", "str"),
    "strlt": ("{x} < ?", "str"),
    "strgt": ("{x} > ?", "str"),
    "strle": ("{x} <= ?", "str"),
    "strge": ("{x} >= ?", "str"),
    "contains": ("contains({x}, ?)", "str"),
    "starts-with": ("starts_with(lower({x}), lower(?))", "str"),
    "ends-with": ("ends_with(lower({x}), lower(?))", "str"),
    "matches": ("{x} LIKE ? ESCAPE '\\'", "glob"),
}
LIST_OPS = {
    "streq-in": ("{x} IN ({marks})", str),
    "eq-any-of": ("TRY_CAST({x} AS DOUBLE) IN ({marks})", float),
    "eq-in": ("TRY_CAST({x} AS DOUBLE) IN ({marks})", float),  # a documented alias
    "contains-any-of": ("list_bool_or([contains(lower({x}), lower(v)) FOR v IN [{marks}]])", str),
    "contains-all-of": ("list_bool_and([contains(lower({x}), lower(v)) FOR v IN [{marks}]])", str),
}
NUMBER_OPS = {"eq": "=", "gt": ">", "lt": "<", "ge": ">=", "le": "<="}
# Adobe's negations: a dedicated not-* func is the positive func, negated
NEGATIONS = {
    "not-streq": "streq",
    "not-contains": "contains",
    "not-starts-with": "starts-with",
    "not-ends-with": "ends-with",
    "not-matches": "matches",
    "not-streq-in": "streq-in",
    "not-eq-any-of": "eq-any-of",
    "not-eq-in": "eq-in",
    "not-contains-any-of": "contains-any-of",
    "not-contains-all-of": "contains-all-of",
    "not-eq": "eq",
    "not-exists": "exists",
    "not-event-exists": "event-exists",
}


class SegmentCompileError(ValueError):
    """The definition uses something this compiler does not support (named in the message)."""


class Compiled:
    """SQL text with ``?`` placeholders and the values bound to them, in order."""

    def __init__(self, sql: str, params: list[Any]) -> None:
        self.sql = sql
        self.params = params


def top_container(definition: Any) -> Any:
    """The root container of ``{"func": "segment", "container"}`` or of the ``segment-def``
    wrapper (``{"func": "segment-def", "container": {"func": "segment", "context", "pred"}}``)."""
    if not isinstance(definition, dict) or definition.get("func") not in ("segment", "segment-def"):
        raise SegmentCompileError(
            'a segment definition must be {"func": "segment", "version": [1, 0, 0], '
            '"container": {...}} (or Adobe\'s "segment-def" wrapper)'
        )
    container = definition.get("container")
    if isinstance(container, dict) and container.get("func") == "segment":
        container = {**container, "func": "container"}  # segment-def's root container
    return container


def compile_segment(definition: Any, scalar_columns: dict[str, str]) -> Compiled:
    """The WHERE predicate over the ``base`` events relation for a segment definition."""
    return _node(top_container(definition), scalar_columns)


def glob_to_like(glob: str) -> str:
    """Adobe's glob (``*`` any run, ``\\*`` a literal star) as a LIKE pattern with ``\\``."""
    out, i = [], 0
    while i < len(glob):
        char = glob[i]
        if char == "\\" and glob[i + 1 : i + 2] == "*":
            out.append("*")
            i += 2
            continue
        out.append("%" if char == "*" else "\\" + char if char in "%_\\" else char)
        i += 1
    return "".join(out)


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
    if func == "without":
        return _negate(_node(node.get("pred"), columns))
    if func in NEGATIONS:
        return _negate(_node({**node, "func": NEGATIONS[func]}, columns))
    if func == "event-exists":
        name = (node.get("evt") or {}).get("name")
        if name in ALL_EVENTS:
            return Compiled("true", [])
        if name not in EVENT_TYPES:
            raise SegmentCompileError(f"event-exists on {name!r} is not supported")
        return Compiled("event_type = ?", [EVENT_TYPES[name]])
    if func == "exists":
        column, is_list = _attr(node.get("val"), columns)
        return Compiled(
            f"len(coalesce({column}, [])) > 0" if is_list else f"{column} IS NOT NULL", []
        )
    return _comparison(node, func, columns)


def _negate(inner: Compiled) -> Compiled:
    return Compiled(f"NOT coalesce({inner.sql}, false)", inner.params)


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
    if func not in STRING_OPS and func not in LIST_OPS and func not in NUMBER_OPS:
        raise SegmentCompileError(
            f"segment function {func!r} is not supported by the emulator (Adobe's names: "
            "streq, not-streq, contains, starts-with, matches, streq-in, eq, not-eq, ge, "
            "without, exists, event-exists, ...)"
        )
    column, is_list = _attr(node.get("val"), columns)
    x = "x" if is_list else column
    if func in STRING_OPS:
        template, key = STRING_OPS[func]
        if not isinstance(node.get(key), str):
            raise SegmentCompileError(f"{func} needs a string {key!r}")
        value = glob_to_like(node[key]) if key == "glob" else node[key]
        sql, params = template.format(x=x), [value]
    elif func in LIST_OPS:
        template, kind = LIST_OPS[func]
        values = node.get("list")
        if not isinstance(values, list) or not values:
            raise SegmentCompileError(f"{func} needs a non-empty list")
        try:
            params = [kind(v) for v in values]
        except (TypeError, ValueError) as exc:
            raise SegmentCompileError(f"{func}: list values must be numbers") from exc
        sql = template.format(x=x, marks=", ".join("?" * len(values)))
    else:
        number = node.get("num")
        if not isinstance(number, int | float) or isinstance(number, bool):
            raise SegmentCompileError(f"{func} needs a numeric num")
        sql, params = f"TRY_CAST({x} AS DOUBLE) {NUMBER_OPS[func]} ?", [float(number)]
    if is_list:
        sql = f"len(list_filter(coalesce({column}, []), lambda x: {sql})) > 0"
    return Compiled(f"coalesce({sql}, false)", params)
