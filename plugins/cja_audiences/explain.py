"""Explain one person's membership in words: which conditions held, the values that decided
it and the events that matched (``python -m cja_audiences explain ID PERSON_ID``).

A run is re-evaluated with the window and filter params it used (from run.json); its
member files say whether the person was in, entered or exited and why. The lake may have
changed since (late events, a re-extract): the words describe the lake as it is now.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import date
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from cja_audiences import compute, why
from cja_audiences.diff import ExitExplainer
from cja_audiences.filters.ir import Attr, Cond, Metric, Node, Sequence
from cja_audiences.lake.runs import ENTERED, EXITED, MEMBERS, read_run_record
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec

EVENT_LIMIT = 10
_EVENT_COLUMNS = ("event_type", "page_name", "marketing_channel", "revenue", "order_id")
_CODE_BITS = 60  # codes are BIGINT: evaluate at most this many nodes per query


@dataclass(frozen=True)
class RunContext:
    """What one computation used: the window, the filter params and the filter's branches."""

    spec: AudienceSpec
    settings: Settings
    window: compute.Window
    params: dict[str, Any]
    tree: Node | None
    run_dir: Path | None = None

    @property
    def branches(self) -> why.Branches:
        return why.branches(self.tree, self.params, self.spec.filter.template)

    @classmethod
    def at(
        cls,
        spec: AudienceSpec,
        settings: Settings,
        as_of: date,
        params: dict[str, Any] | None = None,
        definition: dict[str, Any] | None = None,
    ) -> RunContext:
        """A computation as it would run now for ``as_of``."""
        return cls(
            spec,
            settings,
            compute.audience_window(spec, as_of),
            compute.filter_params(spec, params),
            compute.filter_tree(spec, settings, definition),
        )

    @classmethod
    def from_run(cls, spec: AudienceSpec, settings: Settings, run_dir: Path) -> RunContext:
        record = read_run_record(run_dir).get("compute")
        if not record:
            raise ValueError(f"{run_dir}: run.json has no compute section; compute it first")
        window = compute.Window(
            date.fromisoformat(record["window"]["start"]),
            date.fromisoformat(record["window"]["end"]),
        )
        params = record.get("filter_params", compute.filter_params(spec, None))
        tree = compute.filter_tree(spec, settings, record.get("definition"))
        return cls(spec, settings, window, params, tree, run_dir)


def exit_explainer(
    spec: AudienceSpec, settings: Settings, run_dir: Path, previous_run_dir: Path | None
) -> ExitExplainer | None:
    """The diff's ``explain_exits`` for ``run_dir``: exits evaluated on this run's window."""
    if previous_run_dir is None or not read_run_record(run_dir).get("compute"):
        return None
    context = RunContext.from_run(spec, settings, run_dir)
    previous = read_run_record(previous_run_dir).get("compute", {}).get("window")
    previous_end = date.fromisoformat(previous["end"]) if previous else None

    def explain_exits(person_ids: list[str]) -> pa.Table:
        return why.exit_reasons(
            spec,
            settings,
            context.window,
            context.params,
            context.tree,
            previous_end,
            person_ids,
        )

    return explain_exits


@dataclass(frozen=True)
class Explanation:
    person_id: str
    member: bool  # the filter holds and the person has an identity (in the run, if given)
    code: int
    text: str


def explain(context: RunContext, person_id: str, limit: int = EVENT_LIMIT) -> Explanation:
    """The person's membership in words (see the module doc)."""
    spec, branches = context.spec, context.branches
    with why.Probe(
        spec, context.settings, context.window, context.params, [person_id], materialize=True
    ) as probe:
        nodes: list[Node | None] = [b.node for b in branches.items] + [context.tree]
        codes = _holds(probe, nodes, person_id)
        code = sum(1 << i for i, held in enumerate(codes[:-1]) if held)
        identity = probe.attribute(spec.identity.column).get(person_id)
        status = _status(context, person_id, codes[-1], identity)
        lines = [
            f"{spec.name} ({spec.id}), window {context.window.start} .. {context.window.end}"
            + (f", run {context.run_dir.name}" if context.run_dir else ""),
            f"{person_id}: {status.line}",
            f"The filter needs {_combine_words(branches)}; "
            f"{len(branches.held(code))} of {len(branches.items)} held:",
        ]
        matched: dict[str, list[int]] = {}
        conditions: list[str] = []
        for branch in branches.items:
            mark = "held    " if code & branch.mask else "NOT held"
            lines.append(f"  [{mark}] {branch.bit + 1}. {branch.text}")
            if branch.node is not None:
                lines += _leaf_lines(probe, branch.node, context.params, person_id)
                for cond in why.event_conditions(branch.node):
                    text = why.describe(cond, context.params)
                    if text in conditions:
                        continue
                    conditions.append(text)
                    for event_id in probe.matching_events(cond):
                        matched.setdefault(event_id, []).append(len(conditions))
        lines += _event_lines(probe, person_id, matched, conditions, limit, branches)
    return Explanation(person_id, status.member, code, "\n".join(lines))


@dataclass(frozen=True)
class _Status:
    member: bool
    line: str


def _status(
    context: RunContext, person_id: str, filter_holds: bool, identity: str | None
) -> _Status:
    """In or out: from the run's files when explaining a run, else from the evaluation."""
    ns = context.spec.identity.namespace
    if context.run_dir is None:
        if filter_holds and identity:
            return _Status(True, f"IN (the filter holds and the person has a {ns} identity)")
        if filter_holds:
            return _Status(False, f"OUT: the filter holds but the person has no {ns} identity")
        return _Status(False, "OUT: the filter does not hold")
    rows = _rows(context.run_dir / MEMBERS, person_id)
    member = bool(rows)
    line = f"IN ({ns} {rows[0]['identity']}" if member else "OUT (not a member of this run"
    if member and rows[0].get("split"):
        line += f", split {rows[0]['split']}"
    line += ")"
    for name, verb in ((ENTERED, "entered"), (EXITED, "exited")):
        for row in _rows(context.run_dir / name, person_id):
            line += f"; {verb} in this run: {row.get('reason') or 'no reason recorded'}"
    return _Status(member, line)


def _rows(path: Path, person_id: str) -> list[dict[str, Any]]:
    if not path.exists():
        return []
    relation = duckdb.sql(
        "SELECT * FROM read_parquet($f) WHERE person_id = $p",
        params={"f": str(path), "p": person_id},
    )
    return relation.to_arrow_table().to_pylist()


def _holds(probe: why.Probe, nodes: list[Node | None], person_id: str) -> list[bool]:
    held: list[bool] = []
    for start in range(0, len(nodes), _CODE_BITS):
        part = nodes[start : start + _CODE_BITS]
        code = probe.codes(part).get(person_id, 0)
        held += [bool(code >> i & 1) for i in range(len(part))]
    return held


def _combine_words(branches: why.Branches) -> str:
    if len(branches.items) == 1:
        return "its one condition"
    count = len(branches.items)
    return f"{'all' if branches.combine == 'all' else 'any'} of these {count} conditions"


def _leaf_lines(
    probe: why.Probe, branch: Node, params: dict[str, Any], person_id: str
) -> list[str]:
    """Each condition inside a branch alone (in its containers): held or not, and why."""
    found = why.leaves(branch)
    held = _holds(probe, [leaf.wrapped for leaf in found], person_id)
    lines = []
    for leaf, ok in zip(found, held, strict=True):
        wanted = "must not hold" if leaf.negated else "held" if ok else "did not hold"
        if leaf.negated:
            wanted += ", and it " + ("held" if ok else "did not")
        text = "" if len(found) == 1 else f"{why.describe(leaf.node, params)}: "
        lines.append(f"       - {text}{wanted}{_value(probe, leaf, person_id)}")
    return lines


def _value(probe: why.Probe, leaf: why.Leaf, person_id: str) -> str:
    """The deciding value of a leaf: an attribute's value, a person-level metric's value, or
    how many events match an event condition."""
    node = leaf.node
    if isinstance(node, Attr):
        return f" (value: {probe.attribute(node.field).get(person_id)!r})"
    if isinstance(node, Metric) and leaf.person_level:
        value = probe.measure(node.measure).get(person_id, 0)
        return f" (value: {value!r})"
    if isinstance(node, Cond):
        return f" ({len(probe.matching_events(node))} matching events)"
    if isinstance(node, Sequence):
        counts = [len(probe.matching_events(s.node)) for s in node.steps]
        return " (matching events per step: " + ", ".join(map(str, counts)) + ")"
    return ""


def _event_lines(
    probe: why.Probe,
    person_id: str,
    matched: dict[str, list[int]],
    conditions: list[str],
    limit: int,
    branches: why.Branches,
) -> list[str]:
    if branches.items[0].node is None:  # a template: show the window's events
        events = probe.events(person_id, None, limit)
        title = f"Events in the window (first {limit}):"
    else:
        events = probe.events(person_id, set(matched), limit)
        title = f"Events matching a condition ({len(matched)}; first {limit} shown):"
    lines = [title]
    for number, text in enumerate(conditions, start=1):
        lines.append(f"  condition #{number}: {text}")
    for event in events:
        detail = ", ".join(
            f"{c}={event[c]}" for c in _EVENT_COLUMNS if event.get(c) not in (None, "")
        )
        numbers = matched.get(event["event_id"], [])
        tag = f"  matches #{', #'.join(map(str, numbers))}" if numbers else ""
        lines.append(
            f"  {event['timestamp']:%Y-%m-%d %H:%M:%S}  {event['event_id']}  {detail}{tag}"
        )
    if not events:
        lines.append("  (none)")
    return lines
