"""Compile a filter tree (or a user template) into one DuckDB query with bound parameters.

The compiler decides *what* to compute at which level (event, session, person); the SQL
shapes (conditions, aggregates, sessions, sequence steps, joins) come from the macros in
``cja.sql.j2``, Python only combines their results with AND / OR / NOT. Each value goes
through :class:`Binder` and each column through :mod:`cja_audiences.filters.fields`.

Query shape: ``ev`` (window events: key columns plus every event expression the filter
reads, evaluated once) → ``sess`` (sessions, built once and materialized, only when something
needs them) → per-tree CTEs (sequences; session and person aggregates, restricted to the units
a positive sequence admits) → ``candidates`` (person ids) → the caller's final SELECT.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime
from pathlib import Path
from typing import Any

import jinja2
import jinja2.bccache

from cja_audiences.filters import fields as F
from cja_audiences.filters.ir import (
    LEVELS,
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
from cja_audiences.filters.sandbox import expression_problem
from cja_audiences.lake.sessions import SESSION_COLUMNS, SessionRules

LIBRARY_DIR = Path(__file__).parent
LIBRARY = "cja.sql.j2"
_TIME_UNITS = {
    "minutes": "to_minutes",
    "hours": "to_hours",
    "days": "to_days",
    "weeks": "to_weeks",
    "months": "to_months",
}


class _MemoryBytecodeCache(jinja2.BytecodeCache):
    """Compiled templates shared by every builder of the process: each query gets its own
    environment (its own bound values), but the macro library is parsed only once."""

    def __init__(self) -> None:
        self._store: dict[str, bytes] = {}

    def load_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        if bucket.key in self._store:
            bucket.bytecode_from_string(self._store[bucket.key])

    def dump_bytecode(self, bucket: jinja2.bccache.Bucket) -> None:
        self._store[bucket.key] = bucket.bytecode_to_string()


_BYTECODE = _MemoryBytecodeCache()


class CompileError(ValueError):
    """A filter that has no faithful SQL translation; the message names the construct."""


@dataclass(frozen=True)
class CompiledQuery:
    sql: str
    params: dict[str, Any]
    sessions: bool
    columns: tuple[str, ...]
    references: tuple[str, ...] = ()  # saved segments a CJA segment filter references


class Binder:
    """Turns every value into a named DuckDB parameter; parameters get stable names."""

    def __init__(self, params: dict[str, Any]) -> None:
        self.params = params
        self.values: dict[str, Any] = {}

    def literal(self, value: Any) -> str:
        if isinstance(value, Param | TemplateParam):
            return self.param(value.name)
        if isinstance(value, tuple):
            value = list(value)
        name = f"v{len([k for k in self.values if k.startswith('v')]) + 1}"
        self.values[name] = value
        return f"${name}"

    def param(self, name: str) -> str:
        if name not in self.params:
            raise CompileError(
                f"filter parameter {name!r} is not defined; defined: "
                f"{', '.join(sorted(self.params)) or 'none'} (add it to filter.params)"
            )
        key = f"p_{name}"
        self.values[key] = self.params[name]
        return f"${key}"

    def resolve(self, value: Any) -> Any:
        """The Python value behind a literal or a parameter (for compile-time decisions)."""
        if isinstance(value, Param):
            self.param(value.name)
            return self.params[value.name]
        return value


class TemplateParam:
    """A filter parameter inside a user template: renders as its placeholder, so
    ``{{ params.min_revenue }}`` binds the value instead of pasting it; ``.value`` gives the
    value for control flow (loops, conditions)."""

    def __init__(self, binder: Binder, name: str) -> None:
        self._binder, self.name = binder, name

    @property
    def value(self) -> Any:
        return self._binder.params[self.name]

    def __str__(self) -> str:
        return self._binder.param(self.name)

    __html__ = __str__


class _Params:
    def __init__(self, binder: Binder) -> None:
        self._binder = binder

    def __getattr__(self, name: str) -> TemplateParam:
        if name.startswith("_") or name not in self._binder.params:
            raise CompileError(f"template uses undefined filter parameter {name!r}")
        return TemplateParam(self._binder, name)

    __getitem__ = __getattr__


class _Lazy:
    """A template name resolved when rendered: ``{{ sessions }}`` turns sessions on."""

    def __init__(self, render) -> None:
        self._render = render

    def __str__(self) -> str:
        return self._render()

    __html__ = __str__


@dataclass
class _Scope:
    """Aggregates and joins gathered at one level while compiling one tree."""

    aggregates: dict[str, str] = field(default_factory=dict)  # sql -> alias
    joins: list[tuple[str, str, tuple[str, ...]]] = field(default_factory=list)


class QueryBuilder:
    """Shared state of one query: bound values, the columns read, sessions, CTEs."""

    def __init__(
        self,
        *,
        params: dict[str, Any] | None = None,
        computed_fields: dict[str, str] | None = None,
        filters_dir: Path | None = None,
        window: tuple[datetime, datetime] | None = None,
        session_rules: SessionRules | None = None,
        sessions_in_lake: bool = False,
    ) -> None:
        self.binder = Binder(dict(params or {}))
        self.window = window
        # the lake's session columns (extract.sessions) when its files were built with these
        # rules; otherwise the query sessionizes the window's events itself
        self.session_rules = session_rules or SessionRules()
        self.sessions_in_lake = sessions_in_lake
        self.computed = dict(computed_fields or {})
        self.columns: set[str] = set(F.KEY_COLUMNS)
        # Event expressions the trees read, computed once in ``ev``: sessions and sequences
        # then sort narrow boolean/numeric columns instead of the raw string columns.
        self.derived: dict[str, str] = {}
        self.raw_events = False  # templates read raw columns: ``ev`` keeps them all
        self.sessions = False
        self.ctes: list[tuple[str, str, bool]] = []
        self._trees = 0
        loaders: list[jinja2.BaseLoader] = [jinja2.FileSystemLoader(str(LIBRARY_DIR))]
        if filters_dir is not None:
            loaders.append(jinja2.FileSystemLoader(str(filters_dir)))
        self.env = jinja2.Environment(
            loader=jinja2.ChoiceLoader(loaders),
            undefined=jinja2.StrictUndefined,
            autoescape=False,
            keep_trailing_newline=False,
            bytecode_cache=_BYTECODE,
        )
        self.env.globals.update(
            col=self.column,
            bind=self.binder.literal,
            is_list=self.is_list,
            raise_error=_raise,
            rules=self.rules,
            params=_Params(self.binder),
            events=_Lazy(lambda: self.events_relation),
            sessions=_Lazy(self._use_sessions),
            window_start=_Lazy(lambda: self._window_bound("window_start", 0)),
            window_end=_Lazy(lambda: self._window_bound("window_end", 1)),
        )
        self.m = self.env.get_template(LIBRARY).module

    # ---- names ------------------------------------------------------------------------
    def column(self, name: str) -> str:
        """A whitelisted event field as SQL; map lookups bind their key."""
        try:
            ref = F.event_field(name, tuple(self.computed))
        except F.FieldError as exc:
            raise CompileError(str(exc)) from None
        self.columns.add(ref.column)
        if ref.key is not None:
            return f"{F.quote(ref.column)}[{self.binder.literal(ref.key)}]"
        return F.quote(ref.column)

    def derive(self, sql: str) -> str:
        """A column of ``ev`` holding the event expression ``sql``."""
        if sql not in self.derived:
            self.derived[sql] = f"__f{len(self.derived) + 1}"
        return self.derived[sql]

    def is_list(self, name: str) -> bool:
        return name in F.LIST_FIELDS

    def person_column(self, name: str) -> str:
        try:
            ref = F.person_field(name)
        except F.FieldError as exc:
            raise CompileError(str(exc)) from None
        if ref.key is not None:
            return f"pr.{F.quote(ref.column)}[{self.binder.literal(ref.key)}]"
        return f"pr.{F.quote(ref.column)}"

    def _use_sessions(self) -> str:
        self.sessions = True
        return "sess"

    def _window_bound(self, name: str, index: int) -> str:
        """Window start (inclusive) / end (exclusive) as a bound TIMESTAMPTZ parameter."""
        self.binder.values[name] = self.window[index] if self.window else None
        return f"${name}"

    @property
    def events_relation(self) -> str:
        """The relation trees aggregate over: sessions when anything needs them."""
        return "sess" if self.sessions else "ev"

    # ---- filter forms -----------------------------------------------------------------
    def tree(self, node: Node) -> str:
        """Compile a tree; returns the CTE holding its members' person ids."""
        self._trees += 1
        return TreeCompiler(self, f"t{self._trees}").compile(node)

    def rules(self, raw: Any) -> str:
        """Template helper: ``{{ rules({...}) }}`` compiles declarative rules in place."""
        from cja_audiences.filters.rules import parse_rules

        return self.tree(parse_rules(_unwrap(raw), where="template rules"))

    def template(self, name: str) -> str:
        self.raw_events = True
        try:
            return self.env.get_template(name).render()
        except jinja2.TemplateNotFound:
            raise CompileError(f"filter template {name!r} not found in include/filters") from None

    def build(self, body: str, select: str = "SELECT person_id FROM candidates") -> CompiledQuery:
        """Assemble the full query; ``body`` selects candidate person ids. ``select`` is the
        final statement: it may read any CTE (the trees, ``ev``), e.g. to explain a person."""
        computed = []
        for name, expr in self.computed.items():
            # parsed by DuckDB here, not when specs load: DAG parsing never imports DuckDB
            problem = expression_problem(expr)
            if problem:
                raise CompileError(
                    f"computed field {name!r}: give one SQL expression over event columns "
                    f"(got {problem})"
                )
            computed.append((F.quote(name), expr))
        if not self.sessions_in_lake and self.columns & set(SESSION_COLUMNS):
            raise CompileError(
                "session_number / session_start (visit number) need sessions in the lake, and "
                "the window's partitions were written without them or with other session "
                "rules; rebuild them: python -m cja_audiences.extract.sessions"
            )
        rules = self.session_rules
        key_columns = list(F.KEY_COLUMNS)
        if self.sessions and self.sessions_in_lake:
            key_columns.append("session_number")
        elif self.sessions and rules.start_event_types:
            key_columns.append("event_type")
        self.columns.update(key_columns)
        columns = sorted(c for c in self.columns if c not in self.computed)
        carried = ["*"] if self.raw_events else [F.quote(c) for c in key_columns]
        derived = [(alias, sql) for sql, alias in self.derived.items()]
        head: list[tuple[str, str, bool]] = [
            ("ev", self.m.events(carried, computed, derived), False)
        ]
        if self.sessions and self.sessions_in_lake:
            head.append(("sess", self.m.lake_sessions("ev"), False))
        elif self.sessions:
            timeout = self.binder.literal(rules.timeout_minutes)
            starts = rules.start_event_types
            starts_sql = self.binder.literal(list(starts)) if starts else None
            head.append(("sess", self.m.sessionize("ev", timeout, starts_sql), True))
        ctes = [
            *head,
            *self.ctes,
            ("candidates", f"SELECT DISTINCT person_id FROM ({body})", False),
        ]
        sql = self.m.query(ctes, select)
        return CompiledQuery(sql, dict(self.binder.values), self.sessions, tuple(columns))


def _raise(message: str) -> None:
    raise CompileError(message)


def _unwrap(value: Any) -> Any:
    if isinstance(value, TemplateParam):
        return Param(value.name)
    if isinstance(value, dict):
        return {k: _unwrap(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_unwrap(v) for v in value]
    return value


class TreeCompiler:
    """Compiles one tree into CTEs named with ``prefix``."""

    def __init__(self, builder: QueryBuilder, prefix: str) -> None:
        self.b, self.prefix = builder, prefix
        self.m = builder.m
        self.scopes: dict[str, _Scope] = {
            k: _Scope() for k in ("event", "session", "person", "s2p")
        }
        self.seqs = 0
        # Drivers: sequence results a unit must be in to qualify (a positive conjunct). The
        # aggregations then read only those units' events instead of every event.
        self.seq_names: dict[int, str] = {}
        self.session_drivers: dict[int, str | None] = {}
        # running counts the sequence being compiled compares (alias -> flag, None: events)
        self._counters: dict[str, str | None] = {}

    def compile(self, node: Node) -> str:
        self._check_sessions(node)
        expr = self.expr(node, "person")
        person_driver = self._driver(node, "person")
        session_driver = None
        if len(self.session_drivers) == 1:
            session_driver = next(iter(self.session_drivers.values()))
        return self._emit(expr, person_driver, session_driver)

    def _driver(self, node: Node, level: Level) -> str | None:
        """A sequence CTE holding every unit (at ``level``) that can satisfy ``node``."""
        for child in node.nodes if isinstance(node, All) else (node,):
            if isinstance(child, Sequence) and id(child) in self.seq_names:
                return self.seq_names[id(child)]
            if isinstance(child, Container) and child.level == level:
                found = self._driver(child.node, level)
            elif level == "person" and isinstance(child, Container) and child.level == "session":
                found = self.session_drivers.get(id(child.node))
            else:
                found = None
            if found:
                return found
        return None

    # ---- sessions are needed by: session containers, sessions metrics, session scopes,
    #      within/after sessions
    def _check_sessions(self, node: Node) -> None:
        from cja_audiences.filters.ir import walk

        for n in walk(node):
            if (
                (isinstance(n, Container) and n.level == "session")
                or (isinstance(n, Metric) and n.measure.agg == "sessions")
                or (isinstance(n, Sequence) and n.scope == "session")
                or (
                    isinstance(n, Sequence)
                    and any(
                        s.unit == "sessions"
                        for step in n.steps
                        for s in (*step.within, *([step.after] if step.after else []))
                    )
                )
            ):
                self.b.sessions = True

    # ---- expressions --------------------------------------------------------------------
    def expr(self, node: Node, level: Level) -> str:
        match node:
            case Container(level=inner, node=child):
                return self._container(inner, child, level)
            case All(nodes=nodes):
                return "(" + " AND ".join(self.expr(n, level) for n in nodes) + ")"
            case Any_(nodes=nodes):
                return "(" + " OR ".join(self.expr(n, level) for n in nodes) + ")"
            case Not(node=child):
                return f"(NOT {self.expr(child, level)})"
            case Cond():
                return self._event_leaf(self._cond(node), level)
            case Attr():
                if level != "person":
                    raise CompileError(
                        f"person attribute {node.field!r} inside a {level} container: person "
                        "attributes can only be used in a person container"
                    )
                return self.m.predicate(
                    self.b.person_column(node.field), node.op, self._value(node.op, node.value)
                )
            case Metric():
                return self._metric(node, level)
            case Sequence(mode="exists"):
                return self._sequence_exists(node, level)
            case Sequence():
                return self._event_leaf(self._sequence_keeps(node), level)
        raise CompileError(f"unsupported filter node {type(node).__name__}")

    def _value(self, op: str, value: Any) -> str:
        return "NULL" if op in ("exists", "not_exists") else self.b.binder.literal(value)

    def _cond(self, node: Cond) -> str:
        column = self.b.column(node.field)
        return self.b.derive(
            self.m.predicate(
                column, node.op, self._value(node.op, node.value), self.b.is_list(node.field)
            )
        )

    def _event_leaf(self, event_expr: str, level: Level) -> str:
        """An event condition at a coarser level: the unit has at least one such event."""
        if level == "event":
            return event_expr
        return self._agg(level, self.m.aggregate("bool_or", event_expr))

    def _agg(self, scope: str, sql: str) -> str:
        aggs = self.scopes[scope].aggregates
        if sql not in aggs:
            aggs[sql] = f"{self.prefix}_{scope[0]}{len(aggs) + 1}"
        return aggs[sql]

    def _container(self, inner: Level, child: Node, level: Level) -> str:
        if inner == level:
            return self.expr(child, level)
        if LEVELS.index(inner) > LEVELS.index(level):
            raise CompileError(
                f"a {inner} container inside a {level} container is not supported "
                "(nest smaller containers inside larger ones)"
            )
        inner_expr = self.expr(child, inner)
        if inner == "event":
            return self._agg(level, self.m.aggregate("bool_or", inner_expr))
        self.session_drivers[id(child)] = self._driver(child, "session")
        # a session container inside a person container: aggregate over the person's sessions
        return f"coalesce({self._agg('s2p', self.m.aggregate('bool_or', inner_expr))}, false)"

    def _measure_value(self, measure: Measure) -> str | None:
        """The measure's per-event value (None for a plain count of events)."""
        if measure.agg == "count":
            return None if measure.where is None else self.expr(measure.where, "event")
        if measure.agg == "sessions":
            return None
        column = self.b.column(measure.field or "")
        if (
            measure.agg in ("sum", "min", "max")
            and measure.field in F.EVENT_FIELDS
            and measure.field not in F.NUMERIC_FIELDS
        ):
            raise CompileError(
                f"{measure.agg} of {measure.field!r}: not a numeric field; numeric fields: "
                f"{', '.join(sorted(F.NUMERIC_FIELDS))} or a computed field"
            )
        return self.b.derive(column)

    def _metric(self, node: Metric, level: Level) -> str:
        measure = node.measure
        value = self._measure_value(measure)
        threshold = self.b.binder.literal(node.value)
        if level == "event":
            per_event = {
                "count": "1" if value is None else f"CASE WHEN {value} THEN 1 ELSE 0 END",
                "distinct": f"CASE WHEN {value} IS NULL THEN 0 ELSE 1 END",
            }.get(measure.agg, value)
            if measure.agg == "sessions":
                raise CompileError("a sessions metric needs a session or person container")
            return self.m.compare(per_event, node.op, threshold)
        return self.m.compare(
            self._agg(level, self.m.aggregate(measure.agg, value)), node.op, threshold
        )

    # ---- sequences ---------------------------------------------------------------------
    def _sequence_exists(self, node: Sequence, level: Level) -> str:
        if level == "event":
            raise CompileError(
                "a sequence (THEN) in an event container: put it in a session or person "
                "container, or use only_after / only_before to keep events"
            )
        name = self._sequence(node, level, forward=True)
        self.seq_names[id(node)] = name
        alias = f"{name}_hit"
        self.scopes[level].joins.append((name, alias, _keys(level)))
        # person level reads the joined relation directly; session level via a renamed column
        return f"({alias}.mark IS NOT NULL)" if level == "person" else f"({alias}_mark IS NOT NULL)"

    def _sequence_keeps(self, node: Sequence) -> str:
        scope: Level = node.scope or "person"
        forward = node.mode == "only_after"
        name = self._sequence(node, scope, forward=forward)
        alias = f"{name}_m"
        self.scopes["event"].joins.append((name, alias, _keys(scope)))
        return self.m.seq_keeps(f"{alias}_mark", forward)

    def _sequence(self, node: Sequence, scope: Level, *, forward: bool) -> str:
        """CTEs deciding the sequence per unit of ``scope``; returns the result CTE's name.

        Each checkpoint is an event condition, a Logic Group or a visit (a session): a
        visit arrives at its first event and departs at its last (backward: the reverse),
        so the clock of the next checkpoint starts when the visit ends."""
        self.seqs += 1
        name = f"{self.prefix}_q{self.seqs}"
        keys = list(_keys(scope))
        self._counters = {}
        steps = list(node.steps) if forward else list(reversed(node.steps))
        # the bounds between two checkpoints are stored on the later one; processing i runs
        # from the processed step i-1 to step i
        gaps = list(node.steps[1:]) if forward else list(reversed(node.steps[1:]))
        conds: list[tuple[str, str]] = []
        visits: list[tuple[str, str, tuple[str, ...]]] = []
        kinds: dict[int, Any] = {}
        for i, step in enumerate(steps, start=1):
            kinds[i] = self._checkpoint(step.node, i, name, scope, forward, conds, visits)
        plans = []
        for i, gap in enumerate(gaps, start=2):
            exclude = None
            if gap.exclude is not None:
                exclude = f"x{i}"
                conds.append((exclude, self._step_expr(gap.exclude)))
            plans.append(
                (
                    i,
                    [self._within(s) for s in gap.within],
                    self._after(gap.after) if gap.after is not None else None,
                    exclude,
                )
            )
        ends = {}
        for end, extra in (("before", node.exclude_before), ("after", node.exclude_after)):
            if extra is not None:
                ends[end] = f"e_{end}"
                conds.append((ends[end], self._step_expr(extra)))
        # the outer side of the first processed step, and of the last one
        first_side, last_side = ("before", "after") if forward else ("after", "before")
        last_guard = None
        if ends.get(last_side):
            last_guard = self.m.no_event(ends[last_side], keys, last_side == "after")
        needs_ord = any(p[3] for p in plans)
        source = self.b.events_relation
        if visits:
            select = ", ".join(
                ["b.*", *(f"{a}.first AS {a}_first, {a}.last AS {a}_last" for _, a, _ in visits)]
            )
            source = f"({self.m.joined(source, visits, select=select)})"
        self.b.ctes.append(
            (
                f"{name}_0",
                self.m.seq_events(
                    source,
                    keys,
                    conds,
                    list(self._counters.items()),
                    session=self.b.sessions,
                    required=_required(kinds, dict(conds)),
                ),
                False,
            )
        )
        # span columns a backward Logic Group's departure carries to the checkpoint before it
        cols = sorted({w["column"] for p in plans for w in p[1] if w["column"]})
        previous = self._first_step(
            name,
            keys,
            kinds[1],
            (first_side, ends.get(first_side)),
            needs_ord,
            len(steps) == 1,
            last_guard,
            cols,
            forward,
        )
        for i, within, after, exclude in plans:
            kind = kinds[i]
            guard = last_guard if i == len(steps) else None
            depart = not forward and isinstance(kinds[i - 1], tuple)
            bounds = {"after": after, "within": within, "exclude": exclude}
            if isinstance(kind, tuple) and forward:  # a Logic Group: its member flags
                sql = self.m.seq_group_step(previous, keys, i, list(kind), **bounds)
                if guard:
                    sql = f"SELECT * REPLACE (v{i} AND {guard} AS v{i}) FROM ({sql})"
            else:
                if isinstance(kind, tuple):  # backward: the events that can end the group
                    cond = f"({' OR '.join(kind)})"
                else:
                    cond = f"c{i}" if kind == "event" else f"c{i}_in"
                if guard and kind != "visit":
                    cond = f"({cond} AND {guard})"
                sql = self.m.seq_step(previous, keys, i, cond, forward, depart=depart, **bounds)
            if isinstance(kind, tuple) and not forward:
                self.b.ctes.append((f"{name}_{i}m", sql, False))
                sql = self.m.seq_group_back(f"{name}_{i}m", keys, i, list(kind), cols)
            self.b.ctes.append((f"{name}_{i}", sql, False))
            previous = f"{name}_{i}"
            if kind == "visit":
                self.b.ctes.append(
                    (f"{name}_{i}d", self.m.seq_depart(previous, keys, i, guard), False)
                )
                previous = f"{name}_{i}d"
        self.b.ctes.append((name, self.m.seq_result(previous, keys, len(steps), forward), False))
        return name

    def _checkpoint(
        self,
        node: Node,
        i: int,
        name: str,
        scope: Level,
        forward: bool,
        conds: list[tuple[str, str]],
        visits: list[tuple[str, str, tuple[str, ...]]],
    ) -> Any:
        """Add checkpoint ``i``'s flags to ``conds``; its kind: "event", "visit" or the
        member flags of a Logic Group."""
        if isinstance(node, LogicGroup):
            members = []
            for j, member in enumerate(node.nodes, start=1):
                members.append(f"c{i}_{j}")
                conds.append((members[-1], self._step_expr(member)))
            return tuple(members)
        if isinstance(node, Container) and node.level == "session":
            if scope == "session":
                raise CompileError(
                    "a visit checkpoint in a sequence that stays in one session: use a person "
                    "scope for sequences across visits"
                )
            alias = f"{name}_v{i}"
            self._visits(node.node, alias)
            visits.append((alias, alias, _keys("session")))
            arrive, depart = ("first", "last") if forward else ("last", "first")
            conds.append((f"c{i}_in", self.m.is_event(f"{alias}_{arrive}")))
            conds.append((f"c{i}_out", self.m.is_event(f"{alias}_{depart}")))
            return "visit"
        conds.append((f"c{i}", self._step_expr(node)))
        return "event"

    def _first_step(
        self,
        name: str,
        keys: list[str],
        kind: Any,
        outer: tuple[str, str | None],
        needs_ord: bool,
        only: bool,
        last_guard: str | None,
        cols: list[str],
        forward: bool,
    ) -> str:
        """The CTE(s) of the first processed checkpoint; returns the last one's name."""
        backward_group = isinstance(kind, tuple) and not forward
        if backward_group:  # the events that can end the group
            first = f"({' OR '.join(kind)})"
        elif isinstance(kind, tuple):
            first = self.m.group_complete(keys, kind)
        else:
            first = "c1" if kind == "event" else "c1_in"
        side, flag = outer  # events that must never happen on the sequence's outer side
        sql = self.m.seq_first(f"{name}_0", keys, first, ord=needs_ord, **{side: flag})
        if only and last_guard and kind != "visit":
            sql = f"SELECT * REPLACE (v1 AND {last_guard} AS v1) FROM ({sql})"
        if backward_group:
            self.b.ctes.append((f"{name}_1m", sql, False))
            sql = self.m.seq_group_back(f"{name}_1m", keys, 1, list(kind), cols)
        self.b.ctes.append((f"{name}_1", sql, False))
        if kind != "visit":
            return f"{name}_1"
        guard = last_guard if only else None
        self.b.ctes.append((f"{name}_1d", self.m.seq_depart(f"{name}_1", keys, 1, guard), False))
        return f"{name}_1d"

    def _visits(self, node: Node, name: str) -> None:
        """A CTE of the sessions satisfying ``node`` with their first and last events."""
        child = TreeCompiler(self.b, name)
        where = child.expr(node, "session")
        if child.seqs or any(
            scope.joins or (level in ("person", "s2p") and scope.aggregates)
            for level, scope in child.scopes.items()
        ):
            raise CompileError(
                "a visit checkpoint holds conditions and metrics of its session (no "
                "sequences or person-level conditions inside it)"
            )
        aggregates = [(a, sql) for sql, a in child.scopes["session"].aggregates.items()]
        self.b.ctes.append((name, self.m.visits(self.b.events_relation, aggregates, where), False))

    def _step_expr(self, node: Node) -> str:
        from cja_audiences.filters.ir import walk

        if any(isinstance(n, Sequence) for n in walk(node)):
            raise CompileError("a sequence inside a sequence step is not supported")
        return self.expr(node, "event")

    def _span_count(self, span: Span) -> tuple[int, str]:
        count = self.b.binder.resolve(span.count)
        if isinstance(count, bool) or not isinstance(count, int) or count < 0:
            raise CompileError(f"{span.unit} count must be a whole number >= 0 (got {count!r})")
        return count, self.b.binder.literal(span.count)

    def _span_column(self, span: Span) -> str:
        """The running count a span of events, sessions or dimension values compares."""
        if span.unit == "sessions":
            return "sn"
        if span.unit == "events":
            self._counters.setdefault("hit", None)
            return "hit"
        flag = self.b.derive(
            self.m.predicate(
                self.b.column(span.field or ""), "exists", "NULL", self.b.is_list(span.field or "")
            )
        )
        alias = f"d_{flag}"
        self._counters.setdefault(alias, flag)
        return alias

    def _within(self, span: Span) -> dict[str, Any]:
        _, placeholder = self._span_count(span)
        if span.unit in _TIME_UNITS:
            return {"column": None, "limit": f"{_TIME_UNITS[span.unit]}({placeholder})"}
        return {"column": self._span_column(span), "limit": placeholder}

    def _after(self, span: Span) -> dict[str, Any] | None:
        count, placeholder = self._span_count(span)
        if count == 0:
            return None
        if span.unit in _TIME_UNITS:
            return {"order": "ts", "offset": f"{_TIME_UNITS[span.unit]}({placeholder})"}
        return {"order": self._span_column(span), "offset": placeholder}

    # ---- emit CTEs ----------------------------------------------------------------------
    def _emit(self, person_expr: str, person_driver: str | None, session_driver: str | None) -> str:
        """Event relation (+ Only After/Before marks) → session aggregates (+ session
        sequences) → person aggregates → the tree's members."""
        b, p = self.b, self.prefix
        event_rel = self._with_marks(b.events_relation, "event", f"{p}_e")
        person_drivers = [(person_driver, ("person_id",))] if person_driver else []
        s2p = self.scopes["s2p"]
        joins = list(self.scopes["person"].joins)
        if s2p.aggregates:
            session_drivers = [d for d in person_drivers if d[0] != session_driver]
            if session_driver:
                session_drivers.append((session_driver, _keys("session")))
            session_aggs = [(a, sql) for sql, a in self.scopes["session"].aggregates.items()]
            source = self.m.restricted(event_rel, session_drivers)
            b.ctes.append((f"{p}_s", self.m.group(source, _keys("session"), session_aggs), False))
            session_rel = self._with_marks(f"{p}_s", "session", f"{p}_sj")
            s2p_aggs = [(a, sql) for sql, a in s2p.aggregates.items()]
            b.ctes.append((f"{p}_sp", self.m.group(session_rel, ["person_id"], s2p_aggs), False))
        person_aggs = [(a, sql) for sql, a in self.scopes["person"].aggregates.items()]
        if s2p.aggregates and not person_aggs and (person_driver or not session_driver):
            base = f"{p}_sp"  # already one row per person that can qualify
        elif person_driver and not person_aggs and not s2p.aggregates:
            base = f"(SELECT DISTINCT person_id FROM {person_driver})"
        else:
            source = self.m.restricted(event_rel, person_drivers)
            b.ctes.append((f"{p}_p", self.m.group(source, ["person_id"], person_aggs), False))
            base = f"{p}_p"
            if s2p.aggregates:
                joins.append((f"{p}_sp", f"{p}_spj", ("person_id",)))
        if "pr." in person_expr:
            joins.append(("raw_persons", "pr", ("person_id",)))
        b.ctes.append(
            (p, self.m.joined(base, joins, select="b.person_id", where=person_expr), False)
        )
        return p

    def _with_marks(self, relation: str, level: str, name: str) -> str:
        """``relation`` with the marks of the sequences its expressions read, as columns."""
        joins = self.scopes[level].joins
        if not joins:
            return relation
        select = ", ".join(["b.*", *(f"{alias}.mark AS {alias}_mark" for _, alias, _ in joins)])
        self.b.ctes.append((name, self.m.joined(relation, joins, select=select), False))
        return name


def _required(kinds: dict[int, Any], conds: dict[str, str]) -> list[str]:
    """The condition of every checkpoint (each member of a Logic Group, a visit's arrival):
    a unit holds the sequence only if it has an event for each."""
    flags: list[str] = []
    for i, kind in sorted(kinds.items()):
        if isinstance(kind, tuple):
            flags.extend(kind)
        else:
            flags.append(f"c{i}" if kind == "event" else f"c{i}_in")
    return [f"({conds[flag]})" for flag in flags]


def _keys(level: str) -> tuple[str, ...]:
    return ("person_id",) if level == "person" else ("person_id", "session_no")
