"""Membership tests: small event fixtures per person and who must be in or out (issue 19).

Next to a spec, ``<id>.test.yaml`` (or the spec's ``tests:`` section) holds::

    as_of: 2026-03-10              # optional (default DEFAULT_AS_OF); the window ends here
    params: {min_orders: 3}        # optional filter param overrides
    persons:
      alice:
        profile: {consent_email: true}          # persons row; identities filled in
        events:
          - {at: -2d 10:00, event_type: commerce.productViews}
    expect:
      in: [alice]
      out: [bob]
      split: {alice: control}       # optional

``at`` is relative to ``as_of``: ``-2d 10:00`` is two days before at 10:00 UTC (``10:00``
alone is on ``as_of``, a day offset alone is at noon). Each test builds a throw-away lake of
only those rows and computes the audience with the engine itself, so a test checks the spec,
the compiler and the lake schema together; a failure says what was expected and, with the
explain output, why the engine decided otherwise.
"""

from __future__ import annotations

import hashlib
import re
import tempfile
import time
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any

import pyarrow as pa
import yaml

from cja_audiences import compute, explain
from cja_audiences.extract.sessions import rebuild_sessions
from cja_audiences.lake.layout import Lake, write_parquet
from cja_audiences.lake.schema import EVENT_SCHEMA, PERSON_SCHEMA
from cja_audiences.lake.sessions import SessionRules
from cja_audiences.settings import Settings
from cja_audiences.specs.model import TEST_SUFFIX, AudienceSpec

DEFAULT_AS_OF = date(2026, 1, 31)
_AT = re.compile(
    r"^\s*(?:(?P<days>[+-]?\d+)d)?\s*(?:(?P<h>\d{1,2}):(?P<m>\d{2})(?::(?P<s>\d{2}))?)?\s*$"
)
_EVENT_FIELDS = [
    f.name for f in EVENT_SCHEMA if f.name not in ("event_id", "timestamp", "person_id")
]
_PROFILE_FIELDS = [f.name for f in PERSON_SCHEMA if f.name != "person_id"]
_CASE_KEYS = {"as_of", "params", "persons", "expect", "description"}


class FixtureError(ValueError):
    """A test file that cannot be run; names the file, the person and the row."""


@dataclass(frozen=True)
class Case:
    source: str  # the file (or spec section) it came from, for messages
    as_of: date
    params: dict[str, Any]
    events: list[dict[str, Any]]
    persons: list[dict[str, Any]]
    expect_in: list[str]
    expect_out: list[str]
    expect_split: dict[str, str]


@dataclass
class Failure:
    person: str
    expected: str
    got: str
    explanation: str

    def message(self, spec_id: str, source: str) -> str:
        text = f"{spec_id} ({source}): person {self.person!r}: expected {self.expected}, got {self.got}"
        return text + "\n" + "\n".join(f"    {line}" for line in self.explanation.splitlines())


@dataclass
class Result:
    spec_id: str
    source: str
    checked: int
    elapsed_s: float
    failures: list[Failure] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.failures

    def report(self) -> str:
        if self.ok:
            return f"ok    {self.spec_id}: {self.checked} persons ({self.elapsed_s:.2f} s)"
        head = f"FAIL  {self.spec_id}: {len(self.failures)} of {self.checked} persons"
        return "\n".join([head, *(f.message(self.spec_id, self.source) for f in self.failures)])


def fixture_path(spec: AudienceSpec) -> Path | None:
    if spec.source_path is None:
        return None
    return spec.source_path.with_name(f"{spec.id}{TEST_SUFFIX}{spec.source_path.suffix}")


def load_case(spec: AudienceSpec) -> Case | None:
    """The spec's membership test, from ``tests:`` or ``<id>.test.yaml``; None when it has none."""
    if spec.tests is not None:
        return parse_case(spec.tests, f"{spec.source_path or spec.id}: tests")
    path = fixture_path(spec)
    if path is None or not path.is_file():
        return None
    try:
        raw = yaml.safe_load(path.read_text())
    except yaml.YAMLError as exc:
        raise FixtureError(f"{path}: not valid YAML: {exc}") from None
    return parse_case(raw, str(path))


def parse_case(raw: Any, source: str) -> Case:
    if not isinstance(raw, dict):
        raise FixtureError(f"{source}: expected a mapping with persons and expect")
    unknown = set(raw) - _CASE_KEYS
    if unknown:
        raise FixtureError(
            f"{source}: unknown keys {sorted(unknown)}; allowed: {', '.join(sorted(_CASE_KEYS))}"
        )
    as_of = raw.get("as_of", DEFAULT_AS_OF)
    if isinstance(as_of, str):
        as_of = _date(as_of, f"{source}: as_of")
    persons = raw.get("persons")
    if not isinstance(persons, dict) or not persons:
        raise FixtureError(f"{source}: persons: give a mapping of person id -> profile/events")
    events, profiles = [], []
    for person, body in persons.items():
        person = str(person)
        body = body or {}
        where = f"{source}: persons.{person}"
        if not isinstance(body, dict) or set(body) - {"profile", "events"}:
            raise FixtureError(f"{where}: give profile (a persons row) and/or events (a list)")
        profiles.append(_profile(person, body.get("profile") or {}, where))
        for i, row in enumerate(body.get("events") or []):
            events.append(_event(person, i, row, as_of, f"{where}.events[{i}]"))
    expect = raw.get("expect") or {}
    if not isinstance(expect, dict) or set(expect) - {"in", "out", "split"}:
        raise FixtureError(f"{source}: expect: give in, out (lists of persons) and/or split")
    expect_in = [str(p) for p in expect.get("in") or []]
    expect_out = [str(p) for p in expect.get("out") or []]
    split = {str(k): str(v) for k, v in (expect.get("split") or {}).items()}
    for person in [*expect_in, *expect_out, *split]:
        if person not in persons:
            raise FixtureError(f"{source}: expect names {person!r}, who is not under persons")
    if not expect_in and not expect_out:
        raise FixtureError(f"{source}: expect: name at least one person in `in` or `out`")
    return Case(
        source,
        as_of,
        dict(raw.get("params") or {}),
        events,
        profiles,
        expect_in,
        expect_out,
        split,
    )


def _date(text: str, where: str) -> date:
    try:
        return date.fromisoformat(text)
    except ValueError:
        raise FixtureError(f"{where}: {text!r} is not a date like 2026-03-10") from None


def at_time(text: Any, as_of: date, where: str) -> datetime:
    """``-2d 10:00`` → two days before ``as_of`` at 10:00 UTC (see the module doc)."""
    if not isinstance(text, str):  # YAML 1.1 reads an unquoted 10:00 as the number 600
        raise FixtureError(f"{where}: at {text!r}: quote it, e.g. at: '-2d 10:00' or '10:00'")
    match = _AT.match(text)
    if match is None or not any(match.groupdict().values()):
        raise FixtureError(
            f"{where}: at {text!r}: use days relative to as_of and/or a time, e.g. "
            "'-2d 10:00', '-1d', '09:30'"
        )
    day = as_of + timedelta(days=int(match["days"] or 0))
    if match["h"] is None:
        clock = (12, 0, 0)
    else:
        clock = (int(match["h"]), int(match["m"]), int(match["s"] or 0))
        if clock[0] > 23 or clock[1] > 59 or clock[2] > 59:
            raise FixtureError(f"{where}: at {text!r}: not a time of day")
    return datetime(day.year, day.month, day.day, *clock, tzinfo=UTC)


def _event(person: str, index: int, row: Any, as_of: date, where: str) -> dict[str, Any]:
    if not isinstance(row, dict) or "at" not in row:
        raise FixtureError(f"{where}: give a mapping with at and event fields")
    unknown = set(row) - {"at", *_EVENT_FIELDS}
    if unknown:
        raise FixtureError(
            f"{where}: unknown event fields {sorted(unknown)}; allowed: {', '.join(_EVENT_FIELDS)}"
        )
    event = {f: None for f in _EVENT_FIELDS}
    event.update({k: v for k, v in row.items() if k != "at"})
    event.update(
        event_id=f"{person}-{index + 1}",
        timestamp=at_time(row["at"], as_of, where),
        person_id=person,
        person_namespace=event["person_namespace"] or "ECID",
    )
    for name in ("product_skus", "product_categories"):
        if isinstance(event[name], str):
            event[name] = [event[name]]
    return event


def _profile(person: str, profile: Any, where: str) -> dict[str, Any]:
    if not isinstance(profile, dict):
        raise FixtureError(f"{where}.profile: give a mapping of persons columns")
    unknown = set(profile) - set(_PROFILE_FIELDS)
    if unknown:
        raise FixtureError(
            f"{where}.profile: unknown columns {sorted(unknown)}; allowed: {', '.join(_PROFILE_FIELDS)}"
        )
    digits = str(int(hashlib.sha256(person.encode()).hexdigest(), 16))[:38].rjust(38, "0")
    row = {f: None for f in _PROFILE_FIELDS}
    row.update(
        person_namespace="ECID",
        ecid=digits,
        email=f"{person}@example.com",
        crm_id=f"crm-{person}",
    )
    row.update(profile)  # a profile may set an identity to null: the person has none
    return {"person_id": person, **row}


def build_lake(case: Case, home: Path) -> None:
    """The case's persons and events as a lake: one Parquet file per event date."""
    lake = Lake(home)
    by_day: dict[str, list[dict[str, Any]]] = {}
    for event in case.events:
        by_day.setdefault(event["timestamp"].date().isoformat(), []).append(event)
    try:
        for day, rows in by_day.items():
            write_parquet(
                pa.Table.from_pylist(rows, schema=EVENT_SCHEMA),
                lake.event_partition(day) / "fixtures.parquet",
            )
        write_parquet(
            pa.Table.from_pylist(case.persons, schema=PERSON_SCHEMA),
            lake.persons / "fixtures.parquet",
        )
    except (pa.ArrowInvalid, pa.ArrowTypeError) as exc:
        raise FixtureError(
            f"{case.source}: a value has the wrong type for its column: {exc}"
        ) from None
    # sessions as the extract keeps them (default session settings), so visit numbers and
    # session audiences run as they do on a real lake
    rebuild_sessions(lake, SessionRules())


def run_case(spec: AudienceSpec, settings: Settings, case: Case) -> Result:
    """Compute ``spec`` over the case's lake (a temporary folder) and compare."""
    started = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="cja-audience-test-") as home:
        build_lake(case, Path(home))
        local = settings.model_copy(update={"home": Path(home)})
        evaluation = compute.evaluate_audience(
            spec,
            settings=local,
            as_of=case.as_of,
            params=case.params,
            preview=False,
            why_codes=False,
        )
        members = dict(
            zip(
                evaluation.members["person_id"].to_pylist(),
                evaluation.members["split"].to_pylist(),
                strict=True,
            )
        )
        checks = [(p, True) for p in case.expect_in] + [(p, False) for p in case.expect_out]
        failures = []
        context = explain.RunContext.at(spec, local, case.as_of, case.params)
        for person, wanted in checks:
            if (person in members) != wanted:
                failures.append(_failure(context, person, wanted))
        for person, arm in case.expect_split.items():
            if person in members and members[person] != arm:
                failures.append(
                    Failure(
                        person,
                        f"split {arm!r}",
                        f"split {members[person]!r}",
                        explain.explain(context, person).text,
                    )
                )
    checked = len({p for p, _ in checks} | set(case.expect_split))
    return Result(spec.id, case.source, checked, round(time.perf_counter() - started, 3), failures)


def _failure(context: explain.RunContext, person: str, wanted: bool) -> Failure:
    words = {True: "IN", False: "OUT"}
    return Failure(person, words[wanted], words[not wanted], explain.explain(context, person).text)
