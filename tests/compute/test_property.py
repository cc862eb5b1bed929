"""Property: the compiled SQL and the plain-Python reference evaluator select the same
members on random small datasets and random filter trees."""

from __future__ import annotations

from datetime import timedelta

from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

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
from tests.compute import reference
from tests.compute.helpers import ADD, BUY, T0, VIEW, run

EVENT_TYPES = [VIEW, ADD, BUY]
PAGES = ["home", "Cart", "help", None]
CHANNELS = ["Email", "Direct"]


@st.composite
def events(draw: st.DrawFn) -> list[dict]:
    rows = []
    for person in draw(st.lists(st.sampled_from("abcd"), min_size=1, max_size=4, unique=True)):
        minute = 0
        for _ in range(draw(st.integers(1, 7))):
            # gaps around the 30-minute session timeout
            minute += draw(st.sampled_from([0, 1, 5, 20, 30, 31, 90]))
            event_type = draw(st.sampled_from(EVENT_TYPES))
            rows.append(
                {
                    "person_id": person,
                    "event_id": f"e{len(rows):03d}",
                    "timestamp": T0 + timedelta(minutes=minute),
                    "event_type": event_type,
                    "page_name": draw(st.sampled_from(PAGES)),
                    "marketing_channel": draw(st.sampled_from(CHANNELS)),
                    "revenue": draw(st.sampled_from([10.0, 60.0])) if event_type == BUY else None,
                }
            )
    return rows


def conditions() -> st.SearchStrategy[Node]:
    return st.one_of(
        st.builds(
            Cond,
            st.just("event_type"),
            st.sampled_from(["equals", "not_equals"]),
            st.sampled_from(EVENT_TYPES),
        ),
        st.builds(
            Cond,
            st.just("page_name"),
            st.sampled_from(["equals", "contains", "starts_with", "not_contains"]),
            st.sampled_from(["home", "CART", "h"]),
        ),
        st.builds(
            Cond,
            st.just("page_name"),
            st.sampled_from(
                ["contains_any", "contains_all", "not_contains_any", "not_contains_all"]
            ),
            st.lists(st.sampled_from(["h", "o", "CART", "x"]), min_size=1, max_size=2),
        ),
        st.builds(Cond, st.just("page_name"), st.sampled_from(["exists", "not_exists"])),
        st.builds(
            Cond,
            st.just("marketing_channel"),
            st.just("in"),
            st.lists(st.sampled_from(CHANNELS), min_size=1, max_size=2),
        ),
    )


def metrics(level: str) -> st.SearchStrategy[Node]:
    measures = [
        Measure("sum", "revenue"),
        Measure("count"),
        Measure("distinct", "page_name"),
        Measure("count", where=Cond("event_type", "equals", BUY)),
    ]
    if level != "event":
        measures.append(Measure("sessions"))
    return st.builds(
        Metric,
        st.sampled_from(measures),
        st.sampled_from(["gte", "lt"]),
        st.sampled_from([1, 2, 50]),
    )


def spans() -> st.SearchStrategy[Span]:
    return st.one_of(
        st.builds(Span, st.sampled_from([1, 10, 40]), st.just("minutes")),
        st.builds(Span, st.sampled_from([0, 1]), st.just("sessions")),
        st.builds(Span, st.sampled_from([1, 2]), st.just("events")),
        st.builds(Span, st.sampled_from([0, 1, 2]), st.just("values"), st.just("page_name")),
    )


def checkpoints(visits: bool, groups: bool) -> st.SearchStrategy[Node]:
    """An event condition, a Logic Group, or a visit (a session meeting a condition or a
    metric)."""
    kinds = [conditions()]
    if groups:
        kinds.append(
            st.lists(conditions(), min_size=2, max_size=2).map(lambda n: LogicGroup(tuple(n)))
        )
    if visits:
        kinds.append(
            st.one_of(conditions(), metrics("session")).map(lambda n: Container("session", n))
        )
    return st.one_of(*kinds)


@st.composite
def sequences(draw: st.DrawFn, mode: str, level: str = "person") -> Sequence:
    n = draw(st.integers(2, 3))
    scope = draw(st.sampled_from(["person", "session"])) if mode != "exists" else None
    visits = (scope or level) == "person"
    point = checkpoints(visits, groups=True)
    steps = [Step(draw(point))]
    for _ in range(n - 1):
        steps.append(
            Step(
                draw(point),
                within=tuple(draw(st.lists(spans(), max_size=1))),
                after=draw(
                    st.none() | st.builds(Span, st.sampled_from([1, 30]), st.just("minutes"))
                ),
                exclude=draw(st.none() | conditions()),
            )
        )
    return Sequence(
        tuple(steps),
        mode,
        scope,
        exclude_before=draw(st.none() | conditions()),
        exclude_after=draw(st.none() | conditions()),
    )


def trees(level: str, depth: int) -> st.SearchStrategy[Node]:
    leaves = [conditions(), metrics(level)]
    if level == "event":
        leaves += [sequences("only_after"), sequences("only_before")]
    else:
        leaves.append(sequences("exists", level))
    if depth == 0:
        return st.one_of(*leaves)
    finer = [
        lv
        for lv in ("event", "session", "person")
        if ("event", "session", "person").index(lv) <= ("event", "session", "person").index(level)
    ]
    sub = trees(level, depth - 1)
    return st.one_of(
        *leaves,
        st.builds(lambda nodes: All(tuple(nodes)), st.lists(sub, min_size=1, max_size=3)),
        st.builds(lambda nodes: Any_(tuple(nodes)), st.lists(sub, min_size=1, max_size=3)),
        st.builds(Not, sub),
        st.sampled_from(finer).flatmap(
            lambda lv: trees(lv, depth - 1).map(lambda n: Container(lv, n))
        ),
    )


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=events(),
    tree=trees("person", 2).map(lambda n: Container("person", n)),
    in_lake=st.booleans(),
)
def test_sql_agrees_with_reference(rows: list[dict], tree: Node, in_lake: bool) -> None:
    """Sessions read from the lake's columns or computed by the query: same members."""
    assert run(tree, rows, sessions_in_lake=in_lake) == reference.members(tree, rows)


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(
    rows=events(),
    sequence=sequences("only_before").filter(
        lambda s: any(isinstance(step.node, LogicGroup) for step in s.steps)
    ),
    kept=conditions(),
    in_lake=st.booleans(),
)
def test_only_before_logic_groups_keep_the_same_events(
    rows: list[dict], sequence: Sequence, kept: Node, in_lake: bool
) -> None:
    """Only Before Sequence with Logic Groups: a condition on the kept events sees the same
    mark (the earliest member of the last occurrence's first checkpoint)."""
    tree = Container("person", Container("event", All((sequence, kept))))
    assert run(tree, rows, sessions_in_lake=in_lake) == reference.members(tree, rows)
