"""Why a person is in or out of an audience: the filter's top-level branches as a bit code.

The branches are the conditions directly under the filter's outermost container (each kept
inside that container, so a session filter's branch is "some session where ..."); a filter
that is one condition, or a template, is one branch. Bit ``i`` of a code is set when branch
``i`` held for the person over the run's window. run.json's ``compute.why`` is the legend.

For members of an ``all`` filter (and of a one-branch filter) every bit holds by definition,
so compute pays nothing for their codes; an ``any`` filter is compiled branch by branch and
the code comes out of the members query (``compute.compile_audience``). The persons who exit
are evaluated by :class:`Probe`: the same compiler over the events of only those persons;
explaining one person (``explain``) uses it for every condition inside the branches.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, date, datetime, time, timedelta
from typing import Any

import pyarrow as pa

from cja_audiences.filters.compiler import QueryBuilder
from cja_audiences.filters.ir import (
    All,
    Any_,
    Attr,
    Cond,
    Container,
    Level,
    LogicGroup,
    Measure,
    Metric,
    Node,
    Not,
    Param,
    Sequence,
    Span,
)
from cja_audiences.filters.sandbox import locked_connection
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import EVENT_SCHEMA, PERSON_SCHEMA
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec

# Reasons in entered/exited.parquet's ``reason`` column.
FIRST_RUN = "first_run"  # no committed run before: everybody enters
NOW_HOLDS = "now_holds"  # the filter holds now and did not in the previous run
IDENTITY_CHANGED = "identity_changed"  # same person, another published identity value
SPLIT_CHANGED = "split_changed"  # same person and identity, another split arm
STOPPED_HOLDING = "stopped_holding"  # new events, and the filter no longer holds
AGED_OUT = "aged_out"  # no events since the previous window: old ones left the window
IDENTITY_LOST = "identity_lost"  # the filter still holds but the person has no identity now
LEFT = "left"  # exited, not evaluated (a rollback, or no lake to evaluate on)
REASONS = (
    FIRST_RUN,
    NOW_HOLDS,
    IDENTITY_CHANGED,
    SPLIT_CHANGED,
    STOPPED_HOLDING,
    AGED_OUT,
    IDENTITY_LOST,
    LEFT,
)

EXIT_SCHEMA = pa.schema([("person_id", pa.string()), ("why", pa.int64()), ("reason", pa.string())])


@dataclass(frozen=True)
class Branch:
    bit: int
    text: str
    node: Node | None  # None: the filter is a template, evaluated as a whole

    @property
    def mask(self) -> int:
        return 1 << self.bit


@dataclass(frozen=True)
class Branches:
    """The top-level branches of one filter, and how they combine (all / any / one)."""

    combine: str
    items: tuple[Branch, ...]

    @property
    def full(self) -> int:
        return (1 << len(self.items)) - 1

    @property
    def member_code(self) -> int | None:
        """Every member's code when it follows from membership alone (all / one)."""
        return self.full if self.combine in ("all", "one") else None

    def legend(self) -> dict[str, Any]:
        """run.json ``compute.why``: bit i of ``why`` is set when branch i held."""
        return {
            "combine": self.combine,
            "full": self.full,
            "branches": [{"bit": b.bit, "mask": b.mask, "text": b.text} for b in self.items],
        }

    def held(self, code: int | None) -> list[Branch]:
        return [b for b in self.items if code is not None and code & b.mask]


def branches(tree: Node | None, params: dict[str, Any], template: str | None = None) -> Branches:
    """The branches of ``tree`` (None: a template named ``template``)."""
    if tree is None:
        return Branches("one", (Branch(0, f"the template {template} selects the person", None),))
    parts: tuple[Node, ...] = (tree,)
    combine = "one"
    if isinstance(tree, Container) and isinstance(tree.node, All | Any_):
        combine = "all" if isinstance(tree.node, All) else "any"
        parts = tuple(Container(tree.level, n) for n in tree.node.nodes)
    return Branches(
        combine,
        tuple(Branch(i, describe(n, params), n) for i, n in enumerate(parts)),
    )


# --------------------------------------------------------------------------- words

_OPS = {"equals": "=", "not_equals": "!=", "gt": ">", "gte": ">=", "lt": "<", "lte": "<="}
_LEVEL_WORDS = {"event": "an event where", "session": "a session where", "person": ""}


def describe(node: Node, params: dict[str, Any]) -> str:
    """The condition in words, parameters shown with their values."""
    match node:
        case Container(level=level, node=inner):
            words = _LEVEL_WORDS[level]
            return f"{words} {describe(inner, params)}".strip()
        case All(nodes=nodes) | Any_(nodes=nodes):
            joiner = " and " if isinstance(node, All) else " or "
            return "(" + joiner.join(describe(n, params) for n in nodes) + ")"
        case Not(node=inner):
            return f"without ({describe(inner, params)})"
        case Cond(field=field, op=op, value=value):
            return _compare(field, op, value, params)
        case Attr(field=field, op=op, value=value):
            return _compare(f"person {field}", op, value, params)
        case Metric(measure=measure, op=op, value=value):
            return _compare(_measure(measure, params), op, value, params)
        case Sequence():
            return _sequence(node, params)
        case LogicGroup(nodes=nodes):
            return "all of (" + "; ".join(describe(n, params) for n in nodes) + ") in any order"
    return type(node).__name__


def _value(value: Any, params: dict[str, Any]) -> str:
    if isinstance(value, Param):
        return f"{value.name} ({params.get(value.name)!r})"
    return repr(list(value) if isinstance(value, tuple) else value)


def _compare(left: str, op: str, value: Any, params: dict[str, Any]) -> str:
    if op in ("exists", "not_exists"):
        return f"{left} {'is set' if op == 'exists' else 'is not set'}"
    return f"{left} {_OPS.get(op, op.replace('_', ' '))} {_value(value, params)}"


def _measure(measure: Measure, params: dict[str, Any]) -> str:
    if measure.agg == "count":
        where = measure.where
        return "events" if where is None else f"events where {describe(where, params)}"
    if measure.agg == "sessions":
        return "sessions"
    if measure.agg == "distinct":
        return f"distinct {measure.field} values"
    return f"{measure.agg} of {measure.field}"


def _unit(span: Span) -> str:
    return f"{span.field} values" if span.unit == "values" else span.unit


def _sequence(node: Sequence, params: dict[str, Any]) -> str:
    steps = []
    for i, step in enumerate(node.steps):
        text = describe(step.node, params)
        bounds = [f"within {_value(s.count, params)} {_unit(s)}" for s in step.within]
        if step.after is not None:
            bounds.append(f"after {_value(step.after.count, params)} {_unit(step.after)}")
        if step.exclude is not None:
            bounds.append(f"with no {describe(step.exclude, params)} in between")
        steps.append(("then " if i else "") + text + (f" ({', '.join(bounds)})" if bounds else ""))
    text = ", ".join(steps)
    if node.exclude_before is not None:
        text += f", with no {describe(node.exclude_before, params)} before"
    if node.exclude_after is not None:
        text += f", with no {describe(node.exclude_after, params)} after"
    if node.mode != "exists":
        text = f"events {node.mode.replace('_', ' ')} the sequence [{text}]"
    return f"sequence: {text}"


# --------------------------------------------------------------------------- leaves


@dataclass(frozen=True)
class Leaf:
    """A condition inside a branch, kept in its containers so it can be evaluated alone."""

    node: Node  # Cond, Attr, Metric or Sequence
    wrapped: Node  # the leaf inside its enclosing containers, from the branch's root
    negated: bool  # under an odd number of ``without``: the branch wants it NOT to hold
    person_level: bool  # every enclosing container is the person


def leaves(node: Node) -> list[Leaf]:
    return list(_leaves(node, (), False))


def _leaves(node: Node, levels: tuple[Level, ...], negated: bool) -> Iterator[Leaf]:
    match node:
        case Container(level=level, node=inner):
            yield from _leaves(inner, (*levels, level), negated)
        case All(nodes=nodes) | Any_(nodes=nodes):
            for child in nodes:
                yield from _leaves(child, levels, negated)
        case Not(node=inner):
            yield from _leaves(inner, levels, not negated)
        case _:
            wrapped: Node = node
            for level in reversed(levels or ("person",)):
                wrapped = Container(level, wrapped)
            if not isinstance(wrapped, Container) or wrapped.level != "person":
                wrapped = Container("person", wrapped)
            yield Leaf(node, wrapped, negated, all(lv == "person" for lv in levels))


def event_conditions(node: Node) -> list[Node]:
    """Every plain event condition in ``node`` (also inside sequence steps and metrics)."""
    from cja_audiences.filters.ir import walk

    return [n for n in walk(node) if isinstance(n, Cond)]


# --------------------------------------------------------------------------- evaluation


class Probe:
    """The filter's parts evaluated over the window's events of a given set of persons.

    ``materialize`` copies those events into memory first: many small queries (explain)
    then cost nothing; without it each query scans the window restricted to the persons.
    """

    def __init__(
        self,
        spec: AudienceSpec,
        settings: Settings,
        window: Any,
        params: dict[str, Any],
        persons: Iterable[str],
        *,
        materialize: bool = False,
    ) -> None:
        self.spec, self.settings, self.window, self.params = spec, settings, window, params
        lake = Lake(settings.home)
        files = [
            str(f)
            for day in window.days()
            for f in sorted(lake.event_partition(day.isoformat()).glob("*.parquet"))
        ]
        person_files = [str(f) for f in sorted(lake.persons.glob("*.parquet"))]
        # the filter's parts are audience authors' SQL: the same sandbox as compute
        self.con = locked_connection(
            files + person_files,
            memory_limit=settings.compute_memory_limit,
            threads=settings.compute_threads,
            lake=lake.root,
        )
        focus = pa.table({"person_id": pa.array(list(persons), pa.string())})
        self.con.register("focus", focus)
        source = (
            self.con.read_parquet(files, union_by_name=True)
            if files
            else self.con.from_arrow(EVENT_SCHEMA.empty_table())
        )
        source.create_view("window_events")
        kind = "TABLE" if materialize else "VIEW"
        self.con.execute(
            f"CREATE TEMP {kind} focus_events AS SELECT * FROM window_events "
            "WHERE person_id IN (SELECT person_id FROM focus)"
        )
        people = (
            self.con.read_parquet(person_files, union_by_name=True)
            if person_files
            else self.con.from_arrow(PERSON_SCHEMA.empty_table())
        )
        people.create_view("all_persons")
        self.con.execute(
            f"CREATE TEMP {kind} raw_persons AS SELECT * FROM all_persons "
            "WHERE person_id IN (SELECT person_id FROM focus)"
        )
        self._events_view("person_id")

    def close(self) -> None:
        self.con.close()

    def __enter__(self) -> Probe:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def _events_view(self, unit: str) -> None:
        """``raw_events`` as the compiler reads it; ``unit`` event_id makes every event its
        own "person", so a person-level query returns the events matching a condition."""
        self.con.execute(
            "CREATE OR REPLACE TEMP VIEW raw_events AS SELECT * REPLACE "
            f"({unit} AS person_id) FROM focus_events"
        )

    def _builder(self) -> QueryBuilder:
        return QueryBuilder(
            params=self.params,
            computed_fields=self.spec.computed_fields,
            filters_dir=self.settings.filters_dir,
            window=self.window.bounds(),
        )

    def codes(self, nodes: list[Node | None]) -> dict[str, int]:
        """Per person of the focus: bit i set when ``nodes[i]`` selects them (None: the
        spec's template)."""
        builder = self._builder()
        relations = [
            builder.tree(n) if n is not None else f"({builder.template(self.spec.filter.template)})"
            for n in nodes
        ]
        terms = [
            f"CASE WHEN f.person_id IN (SELECT person_id FROM {rel}) THEN {1 << i} ELSE 0 END"
            for i, rel in enumerate(relations)
        ]
        query = builder.build(
            "SELECT person_id FROM focus",
            select=f"SELECT f.person_id, {' + '.join(terms) or '0'} FROM focus AS f",
        )
        return dict(self.con.execute(query.sql, query.params).fetchall())

    def matching_events(self, node: Node) -> set[str]:
        """Ids of the focus persons' events that satisfy the event condition ``node``."""
        self._events_view("event_id")
        try:
            builder = self._builder()
            query = builder.build(f"SELECT person_id FROM {builder.tree(Container('event', node))}")
            return {r[0] for r in self.con.execute(query.sql, query.params).fetchall()}
        finally:
            self._events_view("person_id")

    def measure(self, measure: Measure) -> dict[str, Any]:
        """A person-level measure's value per focus person who has events."""
        if measure.agg == "count" and measure.where is not None:
            matched = self.matching_events(measure.where)
            rows = self.con.execute("SELECT person_id, event_id FROM focus_events").fetchall()
            counts: dict[str, int] = {}
            for person, event in rows:
                counts[person] = counts.get(person, 0) + (event in matched)
            return counts
        builder = self._builder()
        if measure.agg == "sessions":
            builder.sessions = True
            select = "SELECT person_id, count(DISTINCT session_no) FROM sess GROUP BY person_id"
        elif measure.agg == "count":
            select = "SELECT person_id, count(*) FROM ev GROUP BY person_id"
        else:
            column = builder.derive(builder.column(measure.field or ""))
            agg = f"count(DISTINCT {column})" if measure.agg == "distinct" else measure.agg
            if measure.agg != "distinct":
                agg = f"{agg}({column})"
            select = f"SELECT person_id, {agg} FROM ev GROUP BY person_id"
        query = builder.build("SELECT person_id FROM focus", select=select)
        return dict(self.con.execute(query.sql, query.params).fetchall())

    def attribute(self, field: str) -> dict[str, Any]:
        builder = self._builder()
        column = builder.person_column(field)
        rows = self.con.execute(f"SELECT person_id, {column} FROM raw_persons AS pr").fetchall()
        return dict(rows)

    def active_since(self, moment: datetime) -> set[str]:
        rows = self.con.execute(
            'SELECT DISTINCT person_id FROM focus_events WHERE "timestamp" >= $t', {"t": moment}
        ).fetchall()
        return {r[0] for r in rows}

    def events(self, person_id: str, ids: set[str] | None, limit: int) -> list[dict[str, Any]]:
        """The person's events (only ``ids`` when given), oldest first, at most ``limit``."""
        rows = self.con.sql(
            'SELECT * FROM focus_events WHERE person_id = $p ORDER BY "timestamp", event_id',
            params={"p": person_id},
        ).to_arrow_table()
        events = [r for r in rows.to_pylist() if ids is None or r["event_id"] in ids]
        return events[:limit]


# --------------------------------------------------------------------------- exits


def exit_reasons(
    spec: AudienceSpec,
    settings: Settings,
    window: Any,
    params: dict[str, Any],
    tree: Node | None,
    previous_end: date | None,
    person_ids: list[str],
) -> pa.Table:
    """EXIT_SCHEMA rows for persons who left: their code now, and why they left.

    The filter itself is evaluated too (the last bit): when it still holds the person left
    because they have no identity value now; otherwise they aged out when nothing happened
    since the previous window's end, and stopped holding when something did.
    """
    found = branches(tree, params, spec.filter.template)
    nodes: list[Node | None] = [b.node for b in found.items] + [tree]
    member_bit = 1 << len(found.items)
    with Probe(spec, settings, window, params, person_ids) as probe:
        codes = probe.codes(nodes)
        since = (
            datetime.combine(previous_end + timedelta(days=1), time.min, tzinfo=UTC)
            if previous_end
            else None
        )
        active = probe.active_since(since) if since else set(person_ids)
    reasons = []
    for person in person_ids:
        code = codes.get(person, 0)
        if code & member_bit:
            reasons.append(IDENTITY_LOST)
        elif person in active:
            reasons.append(STOPPED_HOLDING)
        else:
            reasons.append(AGED_OUT)
    return pa.table(
        {
            "person_id": pa.array(person_ids, pa.string()),
            "why": pa.array([codes.get(p, 0) & found.full for p in person_ids], pa.int64()),
            "reason": pa.array(reasons, pa.string()),
        },
        schema=EXIT_SCHEMA,
    )
