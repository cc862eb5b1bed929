"""The filter tree every filter form compiles to: rules, CJA segment definitions, templates.

One small tree, one meaning (CJA's): a container picks units (events, sessions, persons) whose
data satisfies its predicate; a person is a member when the outermost container keeps at least
one of their events. Values stay Python values here; the SQL compiler binds them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Literal

Level = Literal["event", "session", "person"]
LEVELS: tuple[Level, ...] = ("event", "session", "person")

# Operators on one value (a dimension of an event, or a person attribute).
POSITIVE_OPS = (
    "equals",
    "in",
    "contains",
    "contains_any",
    "contains_all",
    "starts_with",
    "ends_with",
    "matches",
    "like",
    "exists",
    "gt",
    "gte",
    "lt",
    "lte",
)
NEGATED_OPS = {
    "not_equals": "equals",
    "not_in": "in",
    "not_contains": "contains",
    "not_contains_any": "contains_any",
    "not_contains_all": "contains_all",
    "not_starts_with": "starts_with",
    "not_ends_with": "ends_with",
    "not_matches": "matches",
    "not_like": "like",
    "not_exists": "exists",
}
OPS = (*POSITIVE_OPS, *NEGATED_OPS)
LIST_VALUE_OPS = (
    "in",
    "not_in",
    "contains_any",
    "contains_all",
    "not_contains_any",
    "not_contains_all",
)
NO_VALUE_OPS = ("exists", "not_exists")
COMPARE_OPS = ("equals", "not_equals", "gt", "gte", "lt", "lte")

AGGREGATES = ("sum", "count", "sessions", "distinct", "min", "max")
SPAN_UNITS = ("minutes", "hours", "days", "weeks", "months", "sessions", "events", "values")


@dataclass(frozen=True)
class Param:
    """A reference to a filter parameter (spec ``filter.params``, overridable per run)."""

    name: str


@dataclass(frozen=True)
class Cond:
    """A condition on one event: ``field`` (a lake column, computed field or
    ``dimensions.<key>``) compared with ``value``."""

    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Attr:
    """A condition on the person's row in the persons table (person containers only)."""

    field: str
    op: str
    value: Any = None


@dataclass(frozen=True)
class Measure:
    """What a metric aggregates over a container's events: ``sum``/``min``/``max`` of a numeric
    field, ``count`` of events (optionally only those matching ``where``), ``sessions``, or
    ``distinct`` values of a field."""

    agg: str
    field: str | None = None
    where: Node | None = None


@dataclass(frozen=True)
class Metric:
    """A measure over the enclosing container compared with a threshold."""

    measure: Measure
    op: str
    value: Any


@dataclass(frozen=True)
class Container:
    level: Level
    node: Node


@dataclass(frozen=True)
class All:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Any_:
    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Not:
    """CJA's ``without`` / the UI's Exclude: the complement at the enclosing level."""

    node: Node


@dataclass(frozen=True)
class Span:
    """A distance between two checkpoints. Unit ``values`` counts the events on which
    ``field`` has a value (CJA's "within N <dimension>": within 1 page = the next page)."""

    count: Any  # int or Param
    unit: str
    field: str | None = None


@dataclass(frozen=True)
class LogicGroup:
    """CJA's Logic Group as one checkpoint (``sequence-and``): every condition happens, each
    on some event after the previous checkpoint, in any order; the group is complete at the
    last of them, where the next checkpoint's clock starts."""

    nodes: tuple[Node, ...]


@dataclass(frozen=True)
class Step:
    """One checkpoint: an event condition, a :class:`LogicGroup`, or a session container
    (a visit checkpoint: a whole session that satisfies it, starting after the previous
    checkpoint ended); how far after the previous checkpoint it may (``within``) or must
    (``after``) happen, and events that must not happen in between."""

    node: Node
    within: tuple[Span, ...] = ()
    after: Span | None = None
    exclude: Node | None = None


@dataclass(frozen=True)
class Sequence:
    """THEN. ``mode`` "exists" is a predicate of the enclosing session/person; "only_after" and
    "only_before" are event predicates (CJA's Only After / Only Before Sequence) scoped to
    ``scope``. ``exclude_before``/``exclude_after``: events that must never happen before the
    first / after the last checkpoint."""

    steps: tuple[Step, ...]
    mode: Literal["exists", "only_after", "only_before"] = "exists"
    scope: Level | None = None
    exclude_before: Node | None = None
    exclude_after: Node | None = None


Node = Cond | Attr | Metric | Container | All | Any_ | Not | Sequence | LogicGroup


def walk(node: Node):
    """Every node of the tree, depth first."""
    yield node
    match node:
        case Container(node=inner) | Not(node=inner):
            yield from walk(inner)
        case All(nodes=nodes) | Any_(nodes=nodes) | LogicGroup(nodes=nodes):
            for child in nodes:
                yield from walk(child)
        case Metric(measure=Measure(where=where)) if where is not None:
            yield from walk(where)
        case Sequence():
            for step in node.steps:
                yield from walk(step.node)
                if step.exclude is not None:
                    yield from walk(step.exclude)
            for extra in (node.exclude_before, node.exclude_after):
                if extra is not None:
                    yield from walk(extra)
