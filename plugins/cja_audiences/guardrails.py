"""Guardrails: Adobe's hard limits and our own safety checks, applied before anything is sent.

The worst failure of an audience tool is sending a broken audience (an empty one that removes
everybody, a bug that doubles it, an event storm refreshing it every few minutes). Every
check here gives pass / warn / block with a message naming the figure, the limit and the fix;
a block stops the run before publish, with one message listing every violation.

The limits are in ``specs.limits``, the refresh calendar in ``specs.calendar``. Spec-level checks (``check_spec``) run when specs load; data-level checks
(``check_run``) run after compute and diff and stream the member Parquet through DuckDB, so
they cost the same memory at 20M members as at 20.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass, field, replace
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, Any, Literal

from cja_audiences import splits
from cja_audiences.lake.runs import ENTERED, read_run_record, update_run_record
from cja_audiences.lake.storage import LakePath, connect
from cja_audiences.specs.calendar import is_refreshing, latest_schedule_end, schedule_end, when
from cja_audiences.specs.limits import (
    DEFAULTS,
    ECID_PATTERN,
    EMAIL_PATTERN,
    FREQUENCY_HOURS,
    HARD,
    HARD_FIELDS,
    RECORD_ENVELOPE_BYTES,
    SHA256_PATTERN,
    Limits,
)

if TYPE_CHECKING:
    from cja_audiences.settings import Settings
    from cja_audiences.specs.model import AudienceSpec

Verdict = Literal["pass", "warn", "block"]


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
    segment_refs: list[str] | None = None,
) -> GuardrailReport:
    """Checks that need no data: run when specs load, so a bad spec is never scheduled.

    ``all_specs`` enables the per-package and per-sandbox counts; ``other_streaming_audiences``
    is the live count of streaming audiences in the sandbox this project does not manage
    (the publish stage may read it from the AEP Audiences API); ``segment_definition`` is
    the CJA definition of a segment filter, when the caller has it, to count its references;
    ``segment_refs`` the saved segments compute resolved (nested ones included), which wins.
    """
    now = now or datetime.now(UTC)
    report = GuardrailReport(spec.id)
    report.checks += [
        _lookback_check(spec),
        _expiry_check(spec, now),
        _segments_check(spec, segment_definition, segment_refs),
        _external_ttl_check(spec),
    ]
    if all_specs is not None:
        peers = {s.id: s for s in all_specs} | {spec.id: spec}
        report.checks.append(_refreshing_check(spec, list(peers.values()), settings, now))
        report.checks.append(
            _streaming_check(spec, list(peers.values()), other_streaming_audiences)
        )
    return report


def _external_ttl_check(spec: AudienceSpec) -> Check:
    """AEP drops an external audience's data ``ttlInDays`` after its last ingestion: the
    refresh must come well inside that (at least twice per TTL, so one failed refresh is
    survivable)."""
    ttl = spec.publish.ttl_days
    if spec.publish.mode != "external_audience":
        return _info("external_ttl", None, ttl, "not an external audience")
    if spec.refresh.frequency == "one_time":
        return Check(
            "external_ttl",
            "warn",
            None,
            ttl,
            f"external_ttl: a one-time external audience is dropped by AEP {ttl} days after its "
            "only ingestion; fix: raise publish.ttl_days (up to 90) or refresh it",
        )
    hours = FREQUENCY_HOURS[spec.refresh.frequency]
    limit = ttl * 24 / 2
    if hours > limit:
        return Check(
            "external_ttl",
            "block",
            hours,
            limit,
            f"external_ttl: a {spec.refresh.frequency} refresh (every {hours} h) cannot keep an "
            f"external audience with publish.ttl_days {ttl} alive (AEP drops its data {ttl} "
            f"days after the last ingestion; refresh at least twice per TTL); fix: raise "
            f"publish.ttl_days to at least {math.ceil(hours * 2 / 24)} or refresh more often",
        )
    return _info(
        "external_ttl", hours, limit, f"refreshed every {hours} h, within half of {ttl} days"
    )


def _lookback_check(spec: AudienceSpec) -> Check:
    """The window a run evaluates: ``lookback_days``, or a one-time ``date_range``'s days.

    The spec schema refuses both above 90 days; this check also holds a spec built in code.
    (The refresh frequency needs no check: the schema's fastest one is every 4 hours.)
    """
    refresh = spec.refresh
    if refresh.lookback_days is not None:
        days, field_name = refresh.lookback_days, "refresh.lookback_days"
    else:
        assert refresh.date_range is not None
        days, field_name = refresh.date_range.days, "refresh.date_range"
    return _at_most(
        "lookback_days",
        days,
        HARD.max_lookback_days,
        "days of lookback",
        "Adobe hard limit",
        f"set {field_name} to at most {HARD.max_lookback_days} days",
        1.0,
    )


def check_specs(
    specs: list[AudienceSpec],
    settings: Settings,
    *,
    now: datetime | None = None,
    segment_refs: dict[str, list[str] | None] | None = None,
) -> dict[str, GuardrailReport]:
    """Every spec's spec-level checks among ``specs`` (the whole spec folder), by id.

    The one place the folder-wide counts (refreshing audiences, streaming audiences) are
    applied: DAG parsing, ``validate`` and the guardrails task all call this;
    ``segment_refs``: by audience id, the saved segments its compute resolved.
    """
    now = now or datetime.now(UTC)
    refs = segment_refs or {}
    return {
        spec.id: check_spec(spec, settings, specs, now=now, segment_refs=refs.get(spec.id))
        for spec in specs
    }


def spec_folder_with(folder: Path, specs: list[AudienceSpec]) -> list[AudienceSpec]:
    """The specs in ``folder`` that load, with ``specs`` replacing or joining them: the
    population a spec is counted in when ``folder`` is the deployed spec folder."""
    from cja_audiences.specs.model import load_specs

    loaded, _ = load_specs(folder)
    return list(({s.id: s for s in loaded} | {s.id: s for s in specs}).values())


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
            f"allowed end {when(latest)} ({basis}, Adobe hard limit); fix: set "
            f"refresh.expires before {latest:%Y-%m-%d} or {extend}",
        )
    if now >= end:
        return Check(
            "schedule_expiry",
            "block",
            now.isoformat(),
            end.isoformat(),
            f"schedule_expiry: the refresh schedule ended at {when(end)} "
            f"({basis}); fix: {extend}, or make it one_time",
        )
    days_left = (end - now).days
    verdict: Verdict = "warn" if days_left < DEFAULTS.expiry_warning_days else "pass"
    return Check(
        "schedule_expiry",
        verdict,
        days_left,
        end.isoformat(),
        f"schedule_expiry: the refresh schedule ends at {when(end)}, in "
        f"{days_left} days ({basis})" + (f"; fix: {extend}" if verdict == "warn" else ""),
    )


def count_segments(
    filter_spec: Any,
    definition: dict[str, Any] | None = None,
    references: list[str] | None = None,
) -> int:
    """Segments combined in one audience: its own filter plus every saved segment it references.

    A spec's filter is one template, one rules tree or one CJA segment, so that is 1; plus the
    distinct saved segments compute resolved (``references``: nested references included, as
    recorded in run.json's compute section), or, before compute, a CJA ``definition``'s own
    ``{"func": "segment-ref"}`` nodes.
    """
    if references is not None:
        return 1 + len(set(references))
    return 1 + _segment_refs(definition)


def _segment_refs(node: Any) -> int:
    if isinstance(node, list):
        return sum(_segment_refs(item) for item in node)
    if not isinstance(node, dict):
        return 0
    own = node.get("func") == "segment-ref"
    return int(own) + sum(_segment_refs(value) for value in node.values())


def _segments_check(
    spec: AudienceSpec, definition: dict[str, Any] | None, references: list[str] | None
) -> Check:
    return _at_most(
        "segments",
        count_segments(spec.filter, definition, references),
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


# --------------------------------------------------------------------------- data-level


def check_run(
    spec: AudienceSpec, settings: Settings, run_dir: LakePath, previous_run_dir: LakePath | None
) -> GuardrailReport:
    """Spec checks plus data checks on ``run_dir`` (after compute and diff).

    Reads the member Parquet only through DuckDB aggregates (one streaming pass), sizes from
    Parquet footers and diff counts from run.json; records run.json["guardrails"].
    """
    limits = spec.guardrails.limits()
    record = read_run_record(run_dir)
    report = check_specs(
        spec_folder_with(settings.audiences_dir, [spec]),
        settings,
        segment_refs={spec.id: (record.get("compute") or {}).get("segment_refs")},
    )[spec.id]
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
        _sends_check(diff),
    ]
    report.checks += _data_checks(spec, limits, run_dir / ENTERED, diff["entered"])
    report.checks += _published_size_checks(spec, limits, record.get("compute", {}))
    update_run_record(run_dir, guardrails=report.as_dict())
    return report


def _published_size_checks(
    spec: AudienceSpec, limits: Limits, compute: dict[str, Any]
) -> list[Check]:
    """Size limits for each AEP audience a split spec publishes (the holdout is not one):
    a split of 8 members identifies people however large the whole audience is."""
    sizes = compute.get("splits") or {}
    if not sizes:
        return []
    published = {
        a.id: sizes.get(a.id.removeprefix(f"{spec.id}__"), 0)
        for a in splits.published_audiences(spec)
    }
    if spec.splits and spec.publish_splits == "combined":
        published = {spec.id: sum(sizes[s.name] for s in spec.splits)}
    checks = []
    for audience_id, size in published.items():
        for check in (_size_check(spec, limits, size), _min_size_check(spec, limits, size)):
            name = f"{check.name}[{audience_id}]"
            checks.append(
                replace(check, name=name, message=check.message.replace(check.name, name, 1))
            )
    return checks


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
    spec: AudienceSpec, limits: Limits, diff: dict[str, Any], previous_run_dir: LakePath | None
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
        f"{diff['exited']:,} exited, renewals not counted; now {diff['size']:,})",
        source,
        "check the filter and the input data; if the change is expected, raise "
        "guardrails.max_change_pct in the spec for this run",
        limits.warn_ratio,
    )


def _sends_check(diff: dict[str, Any]) -> Check:
    """Renewals are sends (they cost publish time) though not changes: reported, not limited."""
    renewed = diff.get("renewed", 0)
    sends = diff["entered"] + diff["exited"] + renewed
    hours = sends / 1500 / 3600  # CJA's documented publish rate: 1,500 records/s
    return _info(
        "sends",
        sends,
        None,
        f"{sends:,} records to send ({diff['entered']:,} entered, {diff['exited']:,} exited, "
        f"{renewed:,} renewed; renewals are not changes), about {hours:.2f} h at 1,500 records/s",
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


def _data_checks(spec: AudienceSpec, limits: Limits, entered: LakePath, size: int) -> list[Check]:
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
    con = connect(entered, config={"threads": 2, "memory_limit": "512MB"})
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
