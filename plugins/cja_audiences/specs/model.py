"""Audiences as code: one YAML file per audience, validated into a typed spec (DESIGN §4).

Errors name the file, the field and the allowed values. Loading is cheap (YAML + pydantic,
no SQL), so every DAG file can load every spec at parse time.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any, Literal

import yaml
from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator, model_validator

from cja_audiences.filters.fields import EVENT_FIELDS, PERSON_FIELDS
from cja_audiences.filters.rules import NAME, RuleError, parse_rules
from cja_audiences.lake.schema import IDENTITY_COLUMNS
from cja_audiences.specs.limits import HARD, AudienceGuardrails

Frequency = Literal["one_time", "every_4_hours", "daily", "weekly", "monthly"]
ID_PATTERN = r"^[a-z][a-z0-9_]{1,62}$"


class _Strict(BaseModel):
    model_config = ConfigDict(extra="forbid", frozen=True)


TEMPLATE_NAME = r"^[A-Za-z0-9_\-]+(/[A-Za-z0-9_\-]+)*\.sql\.j2$"
SEGMENT_ID = r"^[A-Za-z0-9_\-.]{1,100}$"
# SQL a computed field may not contain: it is an expression over one event's columns.
_FORBIDDEN_SQL = re.compile(
    r";|--|/\*|\b(select|from|join|attach|detach|copy|install|load|pragma|call|create|insert|"
    r"update|delete|drop|alter|set|export|import|read_\w+|glob|getenv|query\w*)\b",
    re.IGNORECASE,
)
_IDENTITY_SOURCES = sorted(n for n, t in PERSON_FIELDS.items() if str(t) == "string")
ParamValue = str | int | float | bool | list[str | int | float | bool]


class IdentitySpec(_Strict):
    """Which identity namespace is published, and where each member's value comes from."""

    namespace: str = Field("ECID", description="AEP identity namespace code: ECID, Email, CRMID")
    source: str | None = Field(None, description="persons column; default by namespace")
    hash_email: bool = Field(False, description="send Email values as SHA-256 hashes")

    @model_validator(mode="after")
    def _source(self) -> IdentitySpec:
        if self.source is None and self.namespace not in IDENTITY_COLUMNS:
            raise ValueError(
                f"namespace {self.namespace!r} has no default persons column; use one of "
                f"{', '.join(IDENTITY_COLUMNS)} or set identity.source to one of "
                f"{', '.join(_IDENTITY_SOURCES)}"
            )
        if self.source is not None and self.source not in _IDENTITY_SOURCES:
            raise ValueError(
                f"identity.source {self.source!r} is not a persons column; allowed: "
                f"{', '.join(_IDENTITY_SOURCES)}"
            )
        if self.hash_email and self.namespace != "Email":
            raise ValueError("hash_email applies only to namespace Email")
        return self

    @property
    def column(self) -> str:
        """The persons column holding this namespace's values."""
        return self.source or IDENTITY_COLUMNS[self.namespace]


class DateRange(_Strict):
    """A one-time audience's window, both days included; at most 90 days, like a lookback."""

    start: date
    end: date

    @property
    def days(self) -> int:
        return (self.end - self.start).days + 1

    @model_validator(mode="after")
    def _ordered(self) -> DateRange:
        if self.end < self.start:
            raise ValueError(f"end {self.end} is before start {self.start}")
        if self.days > HARD.max_lookback_days:
            raise ValueError(
                f"{self.start} to {self.end} is {self.days} days; a window holds at most "
                f"{HARD.max_lookback_days} days (Adobe's lookback limit)"
            )
        return self


class RefreshSpec(_Strict):
    frequency: Frequency = "daily"
    lookback_days: int | None = Field(None, ge=1, le=90)
    date_range: DateRange | None = None
    start: datetime = Field(
        default_factory=lambda: datetime(2026, 1, 1, tzinfo=UTC),
        description="anchor of the schedule (time of day, weekday, day of month) and creation",
    )
    expires: date | None = None
    extended: bool = Field(False, description="explicit 13-month extension of the expiry")
    buckets: int | None = Field(
        None,
        ge=2,
        le=256,
        description="split the audience by hash(person_id) % buckets: compute, diff and "
        "publish per bucket as mapped tasks (person-local filters only)",
    )

    @field_validator("start")
    @classmethod
    def _utc(cls, value: datetime) -> datetime:
        return value if value.tzinfo else value.replace(tzinfo=UTC)

    @model_validator(mode="after")
    def _window(self) -> RefreshSpec:
        if self.frequency == "one_time":
            if self.date_range is None:
                raise ValueError("a one_time audience needs refresh.date_range {start, end}")
        elif self.lookback_days is None:
            raise ValueError("a refreshing audience needs refresh.lookback_days (1-90)")
        return self


class SegmentRef(_Strict):
    """A CJA segment definition: a JSON file (relative to the spec's folder, or to
    include/segments/) or a segment id fetched from the CJA Segments API at compute time."""

    path: str | None = None
    id: str | None = Field(None, pattern=SEGMENT_ID)
    mapping: dict[str, dict[str, Any]] = Field(
        default_factory=dict,
        description="data-view mapping overrides: {dimensions: {...}, metrics: {...}}",
    )

    @model_validator(mode="after")
    def _one_source(self) -> SegmentRef:
        if (self.path is None) == (self.id is None):
            raise ValueError("give exactly one of segment.path (a JSON file) or segment.id")
        unknown = set(self.mapping) - {"dimensions", "metrics"}
        if unknown:
            raise ValueError(
                f"unknown mapping keys {sorted(unknown)}; allowed: dimensions, metrics"
            )
        return self


class FilterSpec(_Strict):
    """Exactly one of: a Jinja template, declarative rules, or a CJA segment definition."""

    template: str | None = Field(
        None, pattern=TEMPLATE_NAME, description="file in include/filters/, e.g. x.sql.j2"
    )
    params: dict[str, ParamValue] = Field(
        default_factory=dict, description="values bound as DuckDB parameters; runs may override"
    )
    rules: dict[str, Any] | None = None
    segment: SegmentRef | None = None

    @model_validator(mode="after")
    def _exactly_one(self) -> FilterSpec:
        given = [k for k in ("template", "rules", "segment") if getattr(self, k) is not None]
        if len(given) != 1:
            raise ValueError(
                f"give exactly one of template, rules or segment (got {given or 'none'})"
            )
        bad = [name for name in self.params if not NAME.match(name)]
        if bad:
            raise ValueError(f"params {bad}: names are letters, digits and _ (not first)")
        if self.rules is not None:
            try:
                parse_rules(self.rules)
            except RuleError as exc:
                raise ValueError(str(exc)) from None
        return self

    @property
    def kind(self) -> str:
        return next(k for k in ("template", "rules", "segment") if getattr(self, k) is not None)


SPLIT_NAME = r"^[a-z][a-z0-9_]{0,30}$"
HOLDOUT = "holdout"


class SplitSpec(_Strict):
    """One arm of a split test: its name and its share of the whole audience."""

    name: str = Field(pattern=SPLIT_NAME, description="lower-case, e.g. control, variant_a")
    share: float = Field(gt=0, lt=1, description="share of all members, e.g. 0.45")


class PublishSpec(_Strict):
    """How membership reaches AEP: streamed profile records, or AEP's External Audiences API."""

    mode: Literal["streaming", "external_audience"] | None = Field(
        None, description="default: the AEP connection's publish_mode (streaming)"
    )
    ttl_days: int = Field(
        30, ge=1, le=90, description="external_audience: AEP keeps the data this many days"
    )


class AudienceSpec(_Strict):
    id: str = Field(pattern=ID_PATTERN)
    name: str = Field(min_length=1, max_length=200)
    description: str = ""
    tags: list[str] = Field(default_factory=list)
    identity: IdentitySpec = Field(default_factory=IdentitySpec)
    refresh: RefreshSpec
    filter: FilterSpec
    computed_fields: dict[str, str] = Field(default_factory=dict)
    guardrails: AudienceGuardrails = Field(default_factory=AudienceGuardrails)
    splits: list[SplitSpec] = Field(
        default_factory=list, description="split test arms; with holdout, shares sum to 1"
    )
    holdout: float = Field(0, ge=0, lt=1, description="share kept out of every publish")
    salt: str = Field("", max_length=100, description="changes every person's split at once")
    publish_splits: Literal["separate", "combined"] = Field(
        "separate", description="one AEP audience <id>__<split> per split, or one for all"
    )
    tests: dict[str, Any] | None = Field(
        None, description="membership tests inline (else <id>.test.yaml next to the spec)"
    )
    publish: PublishSpec = Field(default_factory=PublishSpec)
    reconcile: Literal["off", "sample", "full"] = Field(
        "sample", description="read membership back from AEP after each publish"
    )

    source_path: Path | None = Field(None, exclude=True, description="set by the loader")

    @model_validator(mode="after")
    def _buckets_stream(self) -> AudienceSpec:
        if self.refresh.buckets and self.publish.mode == "external_audience":
            raise ValueError(
                "refresh.buckets publishes bucket by bucket as streaming records; an "
                "external_audience uploads one file per run: drop one of the two"
            )
        return self

    @field_validator("computed_fields")
    @classmethod
    def _computed(cls, fields: dict[str, str]) -> dict[str, str]:
        for name, expr in fields.items():
            if (
                not NAME.match(name)
                or name.startswith("_")
                or name in EVENT_FIELDS
                or name == "person_id"
            ):
                raise ValueError(
                    f"computed field {name!r}: use a new name of letters, digits and _, starting with a letter "
                    "(not an event column)"
                )
            # a cheap screen at load time; compile parses the expression with DuckDB
            if not isinstance(expr, str) or not expr.strip() or _FORBIDDEN_SQL.search(expr):
                raise ValueError(
                    f"computed field {name!r}: give one SQL expression over event columns "
                    "(no statements, subqueries, comments or file access)"
                )
        return fields

    @model_validator(mode="after")
    def _splits(self) -> AudienceSpec:
        names = [s.name for s in self.splits]
        if len(set(names)) != len(names) or HOLDOUT in names:
            raise ValueError(f"splits: names must be unique and not {HOLDOUT!r} (got {names})")
        if len(self.splits) == 1:
            raise ValueError("splits: give two or more arms, or none (use holdout alone)")
        total = sum(s.share for s in self.splits) + self.holdout
        if self.splits and abs(total - 1) > 1e-9:
            raise ValueError(
                f"splits: the shares plus holdout must add up to 1 (got {total:g}); "
                "e.g. holdout: 0.1 with two splits of 0.45"
            )
        return self


class SpecError(ValueError):
    """A spec file that cannot be used; the message names the file, the field and the fix."""

    def __init__(self, path: Path, message: str) -> None:
        super().__init__(f"{path}: {message}")
        self.path = path


MAX_SPEC_BYTES = 256 * 1024
MAX_SPEC_DEPTH = 32


class _SpecLoader(yaml.SafeLoader):
    """Safe YAML without aliases (an alias bomb expands to gigabytes in validation) and
    without deep nesting (which would exhaust the stack): a spec needs neither."""

    def compose_node(self, parent: Any, index: Any) -> Any:
        if self.check_event(yaml.AliasEvent):
            mark = self.peek_event().start_mark
            raise yaml.YAMLError(f"aliases (*name) are not allowed in specs (line {mark.line + 1})")
        self._depth = getattr(self, "_depth", 0) + 1
        try:
            if self._depth > MAX_SPEC_DEPTH:
                mark = self.peek_event().start_mark
                raise yaml.YAMLError(
                    f"nested deeper than {MAX_SPEC_DEPTH} levels (line {mark.line + 1})"
                )
            return super().compose_node(parent, index)
        finally:
            self._depth -= 1


def _read_yaml(path: Path) -> Any:
    """The file's YAML; every way a file can be unreadable becomes a SpecError naming it."""
    try:
        data = path.read_bytes()
    except IsADirectoryError:
        raise SpecError(path, "is a folder, not a spec file; rename it") from None
    except OSError as exc:
        raise SpecError(path, f"cannot be read: {exc.strerror or exc}") from None
    if len(data) > MAX_SPEC_BYTES:
        raise SpecError(path, f"is {len(data):,} bytes; a spec is at most {MAX_SPEC_BYTES:,}")
    try:
        text = data.decode("utf-8")
    except UnicodeDecodeError as exc:
        line = data[: exc.start].count(b"\n") + 1
        raise SpecError(
            path, f"is not UTF-8 (byte 0x{data[exc.start]:02x} on line {line}); save it as UTF-8"
        ) from None
    try:
        return yaml.load(text, Loader=_SpecLoader)  # noqa: S506 - a SafeLoader subclass
    except yaml.YAMLError as exc:
        raise SpecError(path, f"not valid YAML: {exc}") from None


def load_spec(path: Path) -> AudienceSpec:
    raw = _read_yaml(path)
    if not isinstance(raw, dict):
        raise SpecError(path, "the file must hold a mapping of fields (id, name, refresh, ...)")
    try:
        spec = AudienceSpec.model_validate(raw)
    except ValidationError as exc:
        raise SpecError(path, _describe(exc)) from None
    if spec.id != path.stem:
        raise SpecError(path, f"id {spec.id!r} must equal the file name {path.stem!r}")
    return spec.model_copy(update={"source_path": path})


def _describe(exc: ValidationError) -> str:
    lines = []
    for err in exc.errors():
        field = ".".join(str(p) for p in err["loc"]) or "(file)"
        msg = err["msg"].removeprefix("Value error, ")
        if err["type"] == "extra_forbidden":
            msg = "unknown field; remove it or fix its spelling"
        elif err["type"] == "literal_error":
            msg = f"{msg} (got {err.get('input')!r})"
        elif err["type"] == "string_pattern_mismatch" and field == "id":
            msg = "use lower-case letters, digits and _ (2-63 chars, starting with a letter)"
        elif err["type"] == "string_pattern_mismatch" and field == "filter.template":
            msg = "a file name in include/filters/ ending in .sql.j2 (no '..')"
        lines.append(f"field {field}: {msg}")
    return "; ".join(lines)


TEST_SUFFIX = ".test"  # <id>.test.yaml holds an audience's membership tests, not a spec


def spec_paths(folder: Path) -> list[Path]:
    return sorted(
        p
        for p in folder.glob("*.y*ml")
        if re.fullmatch(r".+\.ya?ml", p.name) and not p.stem.endswith(TEST_SUFFIX)
    )


def spec_by_id(
    folder: Path, audience_id: str, load: Callable[[Path], AudienceSpec] | None = None
) -> AudienceSpec:
    """The spec whose file stem is ``audience_id`` (``.yaml`` or ``.yml``); ``load``: how a
    file is read (default :func:`load_spec`; the dashboard passes its cached reader)."""
    for path in spec_paths(folder):
        if path.stem == audience_id:
            return (load or load_spec)(path)
    raise SpecError(
        folder / f"{audience_id}.yaml",
        f"no audience spec {audience_id!r} in {folder} (CJA_AUDIENCES_SPECS)",
    )


def load_specs(
    folder: Path, load: Callable[[Path], AudienceSpec] | None = None
) -> tuple[list[AudienceSpec], list[SpecError]]:
    """Every spec in ``folder``; a bad file becomes an error and never hides the others."""
    specs: list[AudienceSpec] = []
    errors: list[SpecError] = []
    for path in spec_paths(folder):
        try:
            specs.append((load or load_spec)(path))
        except SpecError as exc:
            errors.append(exc)
    return specs, errors
