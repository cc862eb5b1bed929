"""Guardrails: Adobe's hard limits and our own safety checks, applied before anything is sent.

The worst failure of an audience tool is sending a broken audience (an empty one that removes
everybody, a bug that doubles it, an event storm refreshing it every few minutes). Every
check here gives pass / warn / block with a message naming the figure, the limit and the fix;
a block stops the run before publish, with one message listing every violation.

All limits live in this module: Adobe's in ``HARD`` (they can only be tightened), ours in
``DEFAULTS``. An audience tightens or adjusts its own in YAML (``guardrails:``), validated by
``AudienceGuardrails``: a value that would loosen a hard limit is a validation error, so the
spec never loads. Spec-level checks (``check_spec``) run when specs load; data-level checks
(``check_run``) run after compute and diff and stream the member Parquet through DuckDB, so
they cost the same memory at 20M members as at 20.
"""

from __future__ import annotations

import calendar
from dataclasses import asdict, dataclass, field, fields, replace
from datetime import UTC, datetime, time, timedelta
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

import duckdb
from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator

from cja_audiences.lake import read_run_record, update_run_record

if TYPE_CHECKING:
    from cja_audiences.settings import Settings
    from cja_audiences.specs import AudienceSpec

Verdict = Literal["pass", "warn", "block"]


@dataclass(frozen=True)
class HardLimits:
    """Adobe's system-enforced limits (CJA guardrails page; RTCDP profile guardrails).

    The expiry follows the guardrails page (13 months, extendable by 13); the publish and
    manage pages say "1 year" (reference/adobe-apis.md §1.3 CONFLICT): an audience that wants
    the stricter reading sets ``refresh.expires``.
    """

    max_members: int = 20_000_000
    min_refresh_hours: int = 4
    max_lookback_days: int = 90
    max_refreshing_audiences: int = 150  # 75 on smaller packages: Settings
    schedule_months: int = 13
    extension_months: int = 13
    max_segments: int = 20
    max_streaming_audiences: int = 500  # per AEP sandbox; every CJA audience is streaming
    max_record_kb: int = 100  # Profile drops larger records


HARD = HardLimits()


@dataclass(frozen=True)
class Limits:
    """The effective limits of one audience: ``DEFAULTS`` with its YAML overrides applied."""

    max_size: int = HARD.max_members
    max_record_kb: float = HARD.max_record_kb
    min_size: int = 10  # privacy floor: smaller audiences identify individuals
    max_change_pct: float = 50.0  # entered + exited, as % of the previous committed size
    max_exits: int | None = None  # None: bounded by max_change_pct only
    allow_empty: bool = False
    max_invalid_identities: int = 0
    crm_id_pattern: str = r"[A-Za-z0-9][A-Za-z0-9._:@-]{0,127}"
    warn_ratio: float = 0.9  # warn from this share of a limit on
    expiry_warning_days: int = 30


DEFAULTS = Limits()
HARD_FIELDS = ("max_size", "max_record_kb")  # fields of Limits that hold an Adobe limit

ECID_PATTERN = r"[0-9]{38}"
EMAIL_PATTERN = r"[^@\s]+@[^@\s.]+(\.[^@\s.]+)+"
SHA256_PATTERN = r"[0-9a-f]{64}"
# An XDM profile record carries the identity map and segmentMembership around the identity
# value; 2 KB is a generous bound for everything but the identity value itself.
RECORD_ENVELOPE_BYTES = 2048

FREQUENCY_HOURS = {"every_4_hours": 4, "daily": 24, "weekly": 24 * 7, "monthly": 24 * 28}


class AudienceGuardrails(BaseModel):
    """Per-audience guardrails in YAML. Unset fields take ``DEFAULTS``.

    Hard limits (``max_size``, ``max_record_kb``) may only be tightened; our own limits may
    be set either way (an audience that legitimately swings may allow a larger change).
    """

    model_config = ConfigDict(extra="forbid", frozen=True)

    max_size: int | None = Field(None, ge=1, description="block above this size (<= 20,000,000)")
    max_record_kb: float | None = Field(None, gt=0, description="profile record size (<= 100)")
    min_size: int | None = Field(None, ge=0, description="privacy floor: block below this size")
    max_change_pct: float | None = Field(
        None, gt=0, description="block when entered+exited exceeds this % of the previous size"
    )
    max_exits: int | None = Field(None, ge=0, description="block when more members exit")
    allow_empty: bool | None = Field(None, description="warn instead of block when empty")
    max_invalid_identities: int | None = Field(
        None, ge=0, description="identity values failing their namespace's format"
    )
    crm_id_pattern: str | None = Field(None, description="RE2 pattern a CRMID must fully match")

    @field_validator("max_size")
    @classmethod
    def _size_hard(cls, value: int | None) -> int | None:
        return _not_looser(value, HARD.max_members, "members")

    @field_validator("max_record_kb")
    @classmethod
    def _record_hard(cls, value: float | None) -> float | None:
        return _not_looser(value, HARD.max_record_kb, "KB per profile record")

    @field_validator("crm_id_pattern")
    @classmethod
    def _re2(cls, value: str | None) -> str | None:
        if value is not None:
            try:
                duckdb.execute("SELECT regexp_full_match('', $p)", {"p": value})
            except duckdb.Error as exc:
                raise ValueError(f"not a valid RE2 pattern: {exc}") from None
        return value

    @model_validator(mode="after")
    def _ordered(self) -> AudienceGuardrails:
        limits = self.limits()
        if limits.min_size > limits.max_size:
            raise ValueError(
                f"min_size {limits.min_size:,} is above max_size {limits.max_size:,}; "
                "no audience could pass"
            )
        return self

    def limits(self) -> Limits:
        """``DEFAULTS`` with every field this audience sets."""
        names = [f.name for f in fields(Limits) if f.name in type(self).model_fields]
        overrides = {n: getattr(self, n) for n in names if getattr(self, n) is not None}
        return replace(DEFAULTS, **overrides)


def _not_looser(value: Any, hard: float, unit: str) -> Any:
    if value is not None and value > hard:
        raise ValueError(
            f"{value:,} would loosen Adobe's hard limit of {hard:,} {unit}; "
            f"use a value <= {hard:,} or leave it out"
        )
    return value


@dataclass(frozen=True)
class Check:
    """One guardrail's outcome. ``figure`` is what was measured, ``limit`` what it is held to."""

    name: str
    verdict: Verdict
    figure: Any
    limit: Any
    message: str


@dataclass
class GuardrailReport:
    """Every check of one audience; ``message`` lists every violation in one text."""

    audience_id: str
    checks: list[Check] = field(default_factory=list)

    @property
    def blocked(self) -> bool:
        return any(c.verdict == "block" for c in self.checks)

    @property
    def warnings(self) -> list[Check]:
        return [c for c in self.checks if c.verdict == "warn"]

    @property
    def message(self) -> str:
        blocks = [c for c in self.checks if c.verdict == "block"]
        if not blocks and not self.warnings:
            return f"audience {self.audience_id}: all {len(self.checks)} guardrails pass"
        head = (
            f"audience {self.audience_id}: blocked by {len(blocks)} guardrail violation(s)"
            if blocks
            else f"audience {self.audience_id}: guardrails pass with warnings"
        )
        lines = [f"- BLOCK {c.message}" for c in blocks]
        lines += [f"- WARN {c.message}" for c in self.warnings]
        return "\n".join([head, *lines])

    def as_dict(self) -> dict[str, Any]:
        return {
            "audience_id": self.audience_id,
            "blocked": self.blocked,
            "message": self.message,
            "checks": [asdict(c) for c in self.checks],
        }


# --------------------------------------------------------------------------- check builders


def _at_most(
    name: str, figure: float, limit: float, unit: str, source: str, fix: str, warn_ratio: float
) -> Check:
    """Figure must not exceed limit; warn from ``warn_ratio`` of it."""
    if figure > limit:
        verdict: Verdict = "block"
        text = f"{figure:,} {unit} is above the limit of {limit:,} ({source}); fix: {fix}"
    elif limit and figure >= warn_ratio * limit:
        verdict = "warn"
        text = f"{figure:,} {unit} is close to the limit of {limit:,} ({source}); fix: {fix}"
    else:
        verdict = "pass"
        text = f"{figure:,} {unit} is within the limit of {limit:,} ({source})"
    return Check(name, verdict, figure, limit, f"{name}: {text}")


def _when(moment: datetime) -> str:
    return f"{moment:%Y-%m-%d %H:%M} UTC"


def _info(name: str, figure: Any, limit: Any, text: str) -> Check:
    return Check(name, "pass", figure, limit, f"{name}: {text}")


def _source(spec: AudienceSpec, field_name: str) -> str:
    """Where a limit comes from, so the message says what to edit."""
    if getattr(spec.guardrails, field_name) is not None:
        where = spec.source_path.name if spec.source_path else spec.id
        return f"guardrails.{field_name} in {where}"
    return "Adobe hard limit" if field_name in HARD_FIELDS else "default guardrail"


# --------------------------------------------------------------------------- spec-level


def check_spec(
    spec: AudienceSpec,
    settings: Settings,
    all_specs: list[AudienceSpec] | None = None,
    *,
    now: datetime | None = None,
    other_streaming_audiences: int = 0,
    segment_definition: dict[str, Any] | None = None,
) -> GuardrailReport:
    """Checks that need no data: run when specs load, so a bad spec is never scheduled.

    ``all_specs`` enables the per-package and per-sandbox counts; ``other_streaming_audiences``
    is the live count of streaming audiences in the sandbox this project does not manage
    (the publish stage may read it from the AEP Audiences API); ``segment_definition`` is
    the CJA definition of a segment filter, when the caller has it, to count its references.
    """
    now = now or datetime.now(UTC)
    report = GuardrailReport(spec.id)
    report.checks += [
        _frequency_check(spec),
        _lookback_check(spec),
        _expiry_check(spec, now),
        _segments_check(spec, segment_definition),
    ]
    if all_specs is not None:
        peers = {s.id: s for s in all_specs} | {spec.id: spec}
        report.checks.append(_refreshing_check(spec, list(peers.values()), settings, now))
        report.checks.append(
            _streaming_check(spec, list(peers.values()), other_streaming_audiences)
        )
    return report


def _frequency_check(spec: AudienceSpec) -> Check:
    frequency = spec.refresh.frequency
    if frequency == "one_time":
        return _info("refresh_frequency", None, HARD.min_refresh_hours, "one-time audience")
    hours = FREQUENCY_HOURS[frequency]
    if hours < HARD.min_refresh_hours:
        return Check(
            "refresh_frequency",
            "block",
            hours,
            HARD.min_refresh_hours,
            f"refresh_frequency: {frequency} refreshes every {hours} h, more often than every "
            f"{HARD.min_refresh_hours} h (Adobe hard limit); fix: set refresh.frequency to "
            "every_4_hours or slower",
        )
    return _info(
        "refresh_frequency",
        hours,
        HARD.min_refresh_hours,
        f"{frequency} (every {hours} h) is no more often than every {HARD.min_refresh_hours} h",
    )


def _lookback_check(spec: AudienceSpec) -> Check:
    days = spec.refresh.lookback_days
    if days is None:
        return _info("lookback_days", None, HARD.max_lookback_days, "one-time date range")
    return _at_most(
        "lookback_days",
        days,
        HARD.max_lookback_days,
        "days of lookback",
        "Adobe hard limit",
        f"set refresh.lookback_days to at most {HARD.max_lookback_days}",
        1.0,
    )


def add_months(moment: datetime, months: int) -> datetime:
    """Same day and time ``months`` later, clamped to the month's last day (Jan 31 + 1 = Feb 28)."""
    index = moment.year * 12 + moment.month - 1 + months
    year, month = divmod(index, 12)
    day = min(moment.day, calendar.monthrange(year, month + 1)[1])
    return moment.replace(year=year, month=month + 1, day=day)


def latest_schedule_end(spec: AudienceSpec) -> datetime:
    """Creation (refresh.start) + 13 months, + 13 more with ``refresh.extended``."""
    months = HARD.schedule_months + (HARD.extension_months if spec.refresh.extended else 0)
    return add_months(spec.refresh.start, months)


def schedule_end(spec: AudienceSpec) -> datetime | None:
    """When the refresh schedule stops: the end of ``refresh.expires``, else the latest allowed."""
    if spec.refresh.frequency == "one_time":
        return None
    if spec.refresh.expires is None:
        return latest_schedule_end(spec)
    return datetime.combine(spec.refresh.expires + timedelta(days=1), time(), UTC)


def _expiry_check(spec: AudienceSpec, now: datetime) -> Check:
    end = schedule_end(spec)
    latest = latest_schedule_end(spec)
    if end is None:
        return _info("schedule_expiry", None, None, "one-time audience: no refresh schedule")
    basis = f"{HARD.schedule_months} months after refresh.start {spec.refresh.start:%Y-%m-%d}" + (
        f" + {HARD.extension_months} (refresh.extended)" if spec.refresh.extended else ""
    )
    extend = (
        "set refresh.extended: true for 13 more months"
        if not spec.refresh.extended
        else "recreate the audience with a new refresh.start"
    )
    if end > latest:
        return Check(
            "schedule_expiry",
            "block",
            str(spec.refresh.expires),
            latest.isoformat(),
            f"schedule_expiry: refresh.expires {spec.refresh.expires} is after the latest "
            f"allowed end {_when(latest)} ({basis}, Adobe hard limit); fix: set "
            f"refresh.expires before {latest:%Y-%m-%d} or {extend}",
        )
    if now >= end:
        return Check(
            "schedule_expiry",
            "block",
            now.isoformat(),
            end.isoformat(),
            f"schedule_expiry: the refresh schedule ended at {_when(end)} "
            f"({basis}); fix: {extend}, or make it one_time",
        )
    days_left = (end - now).days
    verdict: Verdict = "warn" if days_left < DEFAULTS.expiry_warning_days else "pass"
    return Check(
        "schedule_expiry",
        verdict,
        days_left,
        end.isoformat(),
        f"schedule_expiry: the refresh schedule ends at {_when(end)}, in "
        f"{days_left} days ({basis})" + (f"; fix: {extend}" if verdict == "warn" else ""),
    )


def count_segments(filter_spec: Any, definition: dict[str, Any] | None = None) -> int:
    """Segments combined in one audience: its own filter plus every saved segment it references.

    A spec's filter is one template, one rules tree or one CJA segment, so that is 1; a CJA
    ``definition`` adds its ``{"func": "segment-ref"}`` nodes (compute inlines none yet:
    filters/segment.py rejects them, so callers pass the definition once it does).
    """
    return 1 + _segment_refs(definition)


def _segment_refs(node: Any) -> int:
    if isinstance(node, list):
        return sum(_segment_refs(item) for item in node)
    if not isinstance(node, dict):
        return 0
    own = node.get("func") == "segment-ref"
    return int(own) + sum(_segment_refs(value) for value in node.values())


def _segments_check(spec: AudienceSpec, definition: dict[str, Any] | None) -> Check:
    return _at_most(
        "segments",
        count_segments(spec.filter, definition),
        HARD.max_segments,
        "segments combined",
        "Adobe hard limit",
        f"combine at most {HARD.max_segments} segments, e.g. split the audience",
        1.0,
    )


def _creation_order(spec: AudienceSpec) -> tuple[datetime, str]:
    """Adobe refuses the audience created last, so the newest spec is the one over the limit."""
    return spec.refresh.start, spec.id


def _ranked(spec: AudienceSpec, specs: list[AudienceSpec]) -> tuple[int, int]:
    ordered = sorted(specs, key=_creation_order)
    return ordered.index(spec) + 1, len(ordered)


def is_refreshing(spec: AudienceSpec, now: datetime) -> bool:
    end = schedule_end(spec)
    return end is not None and now < end


def _refreshing_check(
    spec: AudienceSpec, specs: list[AudienceSpec], settings: Settings, now: datetime
) -> Check:
    limit = settings.max_refreshing_audiences
    if not is_refreshing(spec, now):
        return _info("refreshing_audiences", None, limit, "not a refreshing audience")
    position, total = _ranked(spec, [s for s in specs if is_refreshing(s, now)])
    check = _at_most(
        "refreshing_audiences",
        total,
        limit,
        "refreshing audiences",
        "Adobe package limit, Settings.max_refreshing_audiences",
        "make older audiences one_time or remove them",
        DEFAULTS.warn_ratio,
    )
    return _by_position(check, position, limit, spec.id)


def _streaming_check(spec: AudienceSpec, specs: list[AudienceSpec], others: int) -> Check:
    position, total = _ranked(spec, specs)
    limit = HARD.max_streaming_audiences
    check = _at_most(
        "streaming_audiences",
        total + others,
        limit,
        f"streaming audiences in the sandbox ({total} ours, {others} others)",
        "AEP limit per sandbox",
        "delete unused audiences in the sandbox or publish to another sandbox",
        DEFAULTS.warn_ratio,
    )
    return _by_position(check, others + position, limit, spec.id)


def _by_position(check: Check, position: int, limit: int, audience_id: str) -> Check:
    """Over a count limit only the audiences created after the limit was reached block."""
    if check.verdict == "block" and position <= limit:
        return replace(
            check,
            verdict="warn",
            message=f"{check.message} ({audience_id} is #{position}, within the limit)",
        )
    if check.verdict == "block":
        return replace(check, message=f"{check.message} ({audience_id} is #{position})")
    return check


# --------------------------------------------------------------------------- refresh guard


def period_start(spec: AudienceSpec, now: datetime) -> datetime | None:
    """Start of the schedule period holding ``now`` (periods anchored at refresh.start)."""
    start = spec.refresh.start
    if now < start:
        return None
    if spec.refresh.frequency == "monthly":
        months = (now.year - start.year) * 12 + now.month - start.month
        while add_months(start, months) > now:
            months -= 1
        return add_months(start, months)
    step = timedelta(hours=FREQUENCY_HOURS[spec.refresh.frequency])
    return start + step * ((now - start) // step)


def next_period(spec: AudienceSpec, current: datetime) -> datetime:
    if spec.refresh.frequency == "monthly":
        months = 1
        while add_months(spec.refresh.start, months) <= current:
            months += 1
        return add_months(spec.refresh.start, months)
    return current + timedelta(hours=FREQUENCY_HOURS[spec.refresh.frequency])


def refresh_due(
    spec: AudienceSpec, last_committed_at: datetime | None, now: datetime, force: bool
) -> tuple[bool, str, datetime | None]:
    """Whether a run (scheduled, event-triggered or manual) may refresh the audience now.

    At most one committed refresh per schedule period: a run whose period already holds a
    committed publish is skipped (not failed), saying when the next one is allowed. Periods
    rather than "24 h since the last commit" so the next scheduled run is not skipped just
    because yesterday's publish committed a few minutes after its period began.
    """
    if force:
        return True, "forced (force=true): the refresh-frequency guard is bypassed", None
    frequency = spec.refresh.frequency
    if frequency == "one_time":
        if last_committed_at is None:
            return True, "first publish of a one-time audience", None
        return (
            False,
            f"skipped: one-time audience already published at {_when(last_committed_at)}; "
            "run with force=true to publish it again",
            None,
        )
    end = schedule_end(spec)
    if end is not None and now >= end:
        return (
            False,
            f"skipped: the refresh schedule ended at {_when(end)}; renew it "
            "(refresh.extended / refresh.expires) or run with force=true",
            None,
        )
    if last_committed_at is None:
        return True, "first publish", None
    begun = period_start(spec, now)
    if begun is None:
        return (
            False,
            f"skipped: the schedule starts at {_when(spec.refresh.start)}",
            spec.refresh.start,
        )
    if last_committed_at < begun:
        return True, f"due: no publish yet in the {frequency} period from {_when(begun)}", None
    allowed = next_period(spec, begun)
    return (
        False,
        f"skipped: the {frequency} audience was already published at "
        f"{_when(last_committed_at)} in this period; the next refresh is allowed "
        f"at {_when(allowed)} (or run with force=true)",
        allowed,
    )


# --------------------------------------------------------------------------- data-level


def check_run(
    spec: AudienceSpec, settings: Settings, run_dir: Path, previous_run_dir: Path | None
) -> GuardrailReport:
    """Spec checks plus data checks on ``run_dir`` (after compute and diff).

    Reads the member Parquet only through DuckDB aggregates (one streaming pass), sizes from
    Parquet footers and diff counts from run.json; records run.json["guardrails"].
    """
    limits = spec.guardrails.limits()
    report = check_spec(spec, settings)
    record = read_run_record(run_dir)
    diff = record.get("diff")
    if diff is None:
        raise ValueError(f"{run_dir}: run.json has no diff; run diff_members before check_run")
    size = diff["size"]
    report.checks += [
        _size_check(spec, limits, size),
        _min_size_check(spec, limits, size),
        _empty_check(limits, size, diff["previous_size"]),
        _change_check(spec, limits, diff, previous_run_dir),
        _exits_check(spec, limits, diff["exited"]),
    ]
    report.checks += _data_checks(spec, limits, run_dir / "entered.parquet", diff["entered"])
    update_run_record(run_dir, guardrails=report.as_dict())
    return report


def _size_check(spec: AudienceSpec, limits: Limits, size: int) -> Check:
    return _at_most(
        "size",
        size,
        limits.max_size,
        "members",
        _source(spec, "max_size"),
        f"narrow the filter or shorten the lookback to at most {limits.max_size:,} members",
        limits.warn_ratio,
    )


def _min_size_check(spec: AudienceSpec, limits: Limits, size: int) -> Check:
    source = _source(spec, "min_size")
    if size == 0:
        return _info("min_size", size, limits.min_size, "empty audience: see the empty check")
    if size < limits.min_size:
        return Check(
            "min_size",
            "block",
            size,
            limits.min_size,
            f"min_size: {size:,} members is below the privacy floor of {limits.min_size:,} "
            f"({source}); fix: widen the filter or lengthen the lookback",
        )
    return _info("min_size", size, limits.min_size, f"{size:,} members >= {limits.min_size:,}")


def _empty_check(limits: Limits, size: int, previous_size: int) -> Check:
    if size:
        return _info("empty", size, 1, "the audience has members")
    consequence = (
        f"publishing would remove all {previous_size:,} current members"
        if previous_size
        else "nothing would be published"
    )
    if limits.allow_empty:
        return Check("empty", "warn", 0, 1, f"empty: the audience is empty; {consequence}")
    return Check(
        "empty",
        "block",
        0,
        1,
        f"empty: the audience is empty; {consequence}; fix: check the filter and the input "
        "data, or set guardrails.allow_empty: true if empty is expected",
    )


def _change_check(
    spec: AudienceSpec, limits: Limits, diff: dict[str, Any], previous_run_dir: Path | None
) -> Check:
    previous = diff["previous_size"]
    if previous_run_dir is None or previous == 0:
        return _info("change", None, limits.max_change_pct, "first publish: nothing to compare")
    changed = diff["entered"] + diff["exited"]
    pct = round(100 * changed / previous, 2)
    source = _source(spec, "max_change_pct")
    return _at_most(
        "change",
        pct,
        limits.max_change_pct,
        f"% of the previous {previous:,} members changed ({diff['entered']:,} entered, "
        f"{diff['exited']:,} exited; now {diff['size']:,})",
        source,
        "check the filter and the input data; if the change is expected, raise "
        "guardrails.max_change_pct in the spec for this run",
        limits.warn_ratio,
    )


def _exits_check(spec: AudienceSpec, limits: Limits, exited: int) -> Check:
    if limits.max_exits is None:
        return _info(
            "exits", exited, None, f"{exited:,} exits; no limit set (guardrails.max_exits)"
        )
    return _at_most(
        "exits",
        exited,
        limits.max_exits,
        "members exiting",
        _source(spec, "max_exits"),
        "check the filter and the input data, or raise guardrails.max_exits",
        limits.warn_ratio,
    )


def _identity_patterns(spec: AudienceSpec, limits: Limits) -> dict[str, tuple[str, str]]:
    """Namespace -> (RE2 pattern, what a valid value looks like)."""
    email = (
        (SHA256_PATTERN, "a SHA-256 hex digest (identity.hash_email is on)")
        if spec.identity.hash_email
        else (EMAIL_PATTERN, "an email address")
    )
    return {
        "ECID": (ECID_PATTERN, "38 digits"),
        "Email": email,
        "CRMID": (limits.crm_id_pattern, f"matching the CRM id pattern {limits.crm_id_pattern}"),
    }


def _data_checks(spec: AudienceSpec, limits: Limits, entered: Path, size: int) -> list[Check]:
    """Identity formats and record size, in one streaming pass over the entering members.

    Only entering values are new to AEP: exits repeat a value that passed when it entered
    (on the first run everybody enters, so every value is checked once).
    """
    patterns = _identity_patterns(spec, limits)
    params: dict[str, Any] = {"path": str(entered)}
    cases = []
    for index, (namespace, (pattern, _)) in enumerate(patterns.items()):
        params |= {f"ns{index}": namespace, f"re{index}": pattern}
        cases.append(f"WHEN $ns{index} THEN regexp_full_match(identity, $re{index})")
    valid = f"CASE namespace {' '.join(cases)} ELSE true END"
    con = duckdb.connect(config={"threads": 2, "memory_limit": "512MB"})
    con.execute("SET enable_progress_bar = false")
    try:
        rows = con.execute(
            f"""
            SELECT namespace, count(*) FILTER (WHERE NOT ({valid})),
                   max(strlen(identity) + strlen(namespace))
            FROM read_parquet($path) GROUP BY namespace ORDER BY namespace
            """,
            params,
        ).fetchall()
        invalid_by_ns = {ns: bad for ns, bad, _ in rows if bad}
        samples = []
        if invalid_by_ns:
            samples = [
                r[0]
                for r in con.execute(
                    f"SELECT person_id FROM read_parquet($path) WHERE NOT ({valid}) "
                    "ORDER BY person_id LIMIT 5",
                    params,
                ).fetchall()
            ]
    finally:
        con.close()
    max_bytes = max((r[2] for r in rows), default=0)
    return [
        _identity_check(spec, limits, invalid_by_ns, samples, size, patterns),
        _record_check(spec, limits, max_bytes),
    ]


def _identity_check(
    spec: AudienceSpec,
    limits: Limits,
    invalid_by_ns: dict[str, int],
    samples: list[str],
    size: int,
    patterns: dict[str, tuple[str, str]],
) -> Check:
    invalid = sum(invalid_by_ns.values())
    if invalid <= limits.max_invalid_identities:
        return _info(
            "identity_format",
            invalid,
            limits.max_invalid_identities,
            f"{invalid:,} of {size:,} entering identity values fail their namespace's format",
        )
    detail = ", ".join(f"{n:,} {ns} not {patterns[ns][1]}" for ns, n in invalid_by_ns.items())
    fix = (
        "correct the identity source (identity.source) or the input data; raise "
        "guardrails.max_invalid_identities to tolerate a few"
    )
    if "CRMID" in invalid_by_ns:
        fix += "; set guardrails.crm_id_pattern if your CRM ids look different"
    source = _source(spec, "max_invalid_identities")
    return Check(
        "identity_format",
        "block",
        invalid,
        limits.max_invalid_identities,
        f"identity_format: {invalid:,} of {size:,} entering identity values fail their namespace's "
        f"format ({detail}; e.g. person_id {', '.join(samples)}), above the limit of "
        f"{limits.max_invalid_identities:,} ({source}); fix: {fix}",
    )


def _record_check(spec: AudienceSpec, limits: Limits, max_identity_bytes: int) -> Check:
    kb = round((RECORD_ENVELOPE_BYTES + len(spec.id) + max_identity_bytes) / 1024, 2)
    return _at_most(
        "record_size",
        kb,
        limits.max_record_kb,
        "KB largest profile record (estimated)",
        _source(spec, "max_record_kb"),
        "shorten the identity values (identity.source); Profile drops larger records",
        limits.warn_ratio,
    )
