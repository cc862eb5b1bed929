"""The limits an audience is held to: Adobe's hard limits and our own defaults.

Adobe's limits live in ``HARD`` (they can only be tightened), ours in ``DEFAULTS``. An
audience tightens or adjusts its own in YAML (``guardrails:``), validated by
``AudienceGuardrails``: a value that would loosen a hard limit is a validation error, so the
spec never loads. The checks that apply these limits are in ``cja_audiences.guardrails``.
"""

from __future__ import annotations

from dataclasses import dataclass, fields, replace
from typing import Any

from pydantic import BaseModel, ConfigDict, Field, field_validator, model_validator


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
            import duckdb  # RE2 is DuckDB's dialect; imported only for specs that set a pattern

            try:
                # fetched: an unread result would block DuckDB's shared default connection
                duckdb.execute("SELECT regexp_full_match('', $p)", {"p": value}).fetchall()
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
