"""A plain-Python evaluator of the filter tree: the CJA semantics written out naively.

Slow and obvious on purpose (chains are enumerated, nothing is windowed), so the property
test can check the compiled SQL against it on random small datasets.
"""

from __future__ import annotations

import re
from datetime import timedelta
from itertools import groupby, product
from typing import Any

from cja_audiences.filters.ir import (
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
    Sequence,
    Span,
)

TIMEOUT = timedelta(minutes=30)
LEVEL_RANK = {"event": 0, "session": 1, "person": 2}
UNIT = {"minutes": 1, "hours": 60, "days": 1440, "weeks": 10080}


def sessionize(events: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Each event gets ``session_no`` (1-based per person) and ``hit`` (1-based order)."""
    out = []
    ordered = sorted(events, key=lambda e: (e["person_id"], e["timestamp"], e["event_id"]))
    for _, group in groupby(ordered, key=lambda e: e["person_id"]):
        session, last = 0, None
        for i, event in enumerate(group, start=1):
            if last is None or event["timestamp"] - last > TIMEOUT:
                session += 1
            last = event["timestamp"]
            out.append({**event, "session_no": session, "hit": i})
    return out


def members(
    tree: Node, events: list[dict[str, Any]], persons: dict[str, dict] | None = None
) -> set[str]:
    evaluator = _Evaluator(sessionize(events), persons or {})
    return {
        pid for pid, unit in evaluator.by_person.items() if evaluator.holds(tree, unit, "person")
    }


class _Evaluator:
    def __init__(self, events: list[dict[str, Any]], persons: dict[str, dict]) -> None:
        self.persons = persons
        self.by_person: dict[str, list[dict]] = {}
        for event in events:
            self.by_person.setdefault(event["person_id"], []).append(event)

    def holds(self, node: Node, unit: list[dict], level: str) -> bool:
        match node:
            case Container(level=inner, node=child):
                if inner == level:
                    return self.holds(child, unit, level)
                assert LEVEL_RANK[inner] < LEVEL_RANK[level]
                return any(self.holds(child, sub, inner) for sub in _split(unit, inner))
            case All(nodes=nodes):
                return all(self.holds(n, unit, level) for n in nodes)
            case Any_(nodes=nodes):
                return any(self.holds(n, unit, level) for n in nodes)
            case Not(node=child):
                return not self.holds(child, unit, level)
            case Cond():
                return any(test(e.get(node.field), node.op, node.value) for e in unit)
            case Attr():
                person = self.persons.get(unit[0]["person_id"], {})
                return test(person.get(node.field), node.op, node.value)
            case Metric():
                value = self.measure(node.measure, unit, level)
                return compare(value, node.op, node.value)
            case Sequence(mode="exists"):
                return bool(self.chains(node, _ordered(unit)))
            case Sequence():
                return any(self.kept(node, e) for e in unit)
        raise AssertionError(node)

    def measure(self, m: Measure, unit: list[dict], level: str) -> Any:
        if m.agg == "count":
            rows = (
                unit if m.where is None else [e for e in unit if self.holds(m.where, [e], "event")]
            )
            return len(rows)
        if m.agg == "sessions":
            return len({e["session_no"] for e in unit})
        values = [e.get(m.field) for e in unit if e.get(m.field) is not None]
        if m.agg == "distinct":
            return len(set(values))
        if level == "event":
            return values[0] if values else None
        if m.agg == "sum":
            return sum(values)
        return (min if m.agg == "min" else max)(values) if values else None

    def step_holds(self, node: Node | None, event: dict) -> bool:
        return node is not None and self.holds(node, [event], "event")

    def met(self, node: Node, unit: list[dict], start: int):
        """Each way a checkpoint is met at or after index ``start``: (arrival, departure,
        the events the bounds from the previous checkpoint apply to, where the exclusion
        before it ends). A visit is a session that starts at or after ``start``; a Logic
        Group is one event per member, in any order, complete at the last of them."""
        if isinstance(node, Container) and node.level == "session":
            for idx in _session_indices(unit):
                if idx[0] >= start and self.holds(node.node, [unit[j] for j in idx], "session"):
                    yield idx[0], idx[-1], (idx[0],), idx[0]
        elif isinstance(node, LogicGroup):
            options = [
                [j for j in range(start, len(unit)) if self.step_holds(m, unit[j])]
                for m in node.nodes
            ]
            for combo in product(*options):
                yield min(combo), max(combo), combo, max(combo)
        else:
            for j in range(start, len(unit)):
                if self.step_holds(node, unit[j]):
                    yield j, j, (j,), j

    def chains(self, seq: Sequence, unit: list[dict]) -> list[tuple[tuple[int, int], ...]]:
        """Every chain of (arrival, departure) index pairs into ``unit`` that satisfies it."""
        found: list[tuple[tuple[int, int], ...]] = []

        def extend(chain: tuple[tuple[int, int], ...]) -> None:
            k = len(chain)
            if k == len(seq.steps):
                if seq.exclude_after is None or not any(
                    self.step_holds(seq.exclude_after, e) for e in unit[chain[-1][1] + 1 :]
                ):
                    found.append(chain)
                return
            step = seq.steps[k]
            prev = chain[-1][1] if chain else None
            for arrival, departure, bounded, fence in self.met(
                step.node, unit, 0 if prev is None else prev + 1
            ):
                if prev is None:
                    if seq.exclude_before is not None and any(
                        self.step_holds(seq.exclude_before, e) for e in unit[:fence]
                    ):
                        continue
                elif not (
                    all(_within(span, unit, prev, j) for span in step.within for j in bounded)
                    and all(
                        step.after is None or _after(step.after, unit, prev, j) for j in bounded
                    )
                    and not any(self.step_holds(step.exclude, e) for e in unit[prev + 1 : fence])
                ):
                    continue
                extend((*chain, (arrival, departure)))

        extend(())
        return found

    def kept(self, seq: Sequence, event: dict) -> bool:
        """Only After / Only Before: is ``event`` on the kept side of its scope's mark?"""
        scope = self.by_person[event["person_id"]]
        if seq.scope == "session":
            scope = [e for e in scope if e["session_no"] == event["session_no"]]
        unit = _ordered(scope)
        chains = self.chains(seq, unit)
        if not chains:
            return False
        key = (event["timestamp"], event["event_id"])
        if seq.mode == "only_after":
            mark = min((unit[c[-1][1]]["timestamp"], unit[c[-1][1]]["event_id"]) for c in chains)
            return key >= mark
        mark = max((unit[c[0][0]]["timestamp"], unit[c[0][0]]["event_id"]) for c in chains)
        return key <= mark


def _ordered(unit: list[dict]) -> list[dict]:
    return sorted(unit, key=lambda e: (e["timestamp"], e["event_id"]))


def _split(unit: list[dict], level: str) -> list[list[dict]]:
    if level == "event":
        return [[e] for e in unit]
    sessions: dict[int, list[dict]] = {}
    for e in unit:
        sessions.setdefault(e["session_no"], []).append(e)
    return list(sessions.values())


def _session_indices(unit: list[dict]) -> list[list[int]]:
    sessions: dict[int, list[int]] = {}
    for j, e in enumerate(unit):
        sessions.setdefault(e["session_no"], []).append(j)
    return list(sessions.values())


def _distance(span: Span, unit: list[dict], p: int, j: int) -> Any:
    """How far event ``j`` is from event ``p`` in the span's unit."""
    prev, event = unit[p], unit[j]
    if span.unit == "sessions":
        return event["session_no"] - prev["session_no"]
    if span.unit == "events":
        return j - p
    if span.unit == "values":
        return sum(test(e.get(span.field), "exists", None) for e in unit[p + 1 : j + 1])
    return event["timestamp"] - prev["timestamp"]


def _limit(span: Span) -> Any:
    if span.unit in ("sessions", "events", "values"):
        return span.count
    return timedelta(minutes=UNIT[span.unit] * span.count)


def _within(span: Span, unit: list[dict], p: int, j: int) -> bool:
    return _distance(span, unit, p, j) <= _limit(span)


def _after(span: Span, unit: list[dict], p: int, j: int) -> bool:
    return span.count == 0 or _distance(span, unit, p, j) >= _limit(span)


def test(value: Any, op: str, arg: Any) -> bool:
    """One value against one operator, CJA style (negations are NOT of the positive)."""
    negated = {
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
    if op in negated:
        return not test(value, negated[op], arg)
    if isinstance(value, list):
        return bool(value) if op == "exists" else any(test(v, op, arg) for v in value)
    if value is None:
        return False
    low = str(value).lower()
    match op:
        case "exists":
            return True
        case "in":
            return value in arg
        case "contains":
            return str(arg).lower() in low
        case "contains_any":
            return any(str(a).lower() in low for a in arg)
        case "contains_all":
            return all(str(a).lower() in low for a in arg)
        case "starts_with":
            return low.startswith(str(arg).lower())
        case "ends_with":
            return low.endswith(str(arg).lower())
        case "matches":
            return re.search(arg, str(value)) is not None
    return compare(value, op, arg)


def compare(value: Any, op: str, arg: Any) -> bool:
    if value is None:
        return False
    return {
        "equals": value == arg,
        "not_equals": value != arg,
        "gt": value > arg,
        "gte": value >= arg,
        "lt": value < arg,
        "lte": value <= arg,
    }[op]
