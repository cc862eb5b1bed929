"""How long AEP keeps a membership we send, and which unchanged members need renewing.

Adobe's Segment Membership Details field group (help/xdm/field-groups/profile/segmentation.md):
an external membership without ``validUntil`` is kept 30 days from ``lastQualificationTime``.
So every ``realized`` record carries ``validUntil``, the snapshot keeps each member's
``valid_until`` and ``last_sent`` (``membership.parquet``), and a refresh re-sends as realized
("renews") every unchanged member whose ``valid_until`` falls before the next scheduled refresh
plus a margin.

Spread: a new member's ``validUntil`` is moved earlier by a deterministic per-member offset
(CRC-32 of its identity) within ``spread``, so a large first publish is renewed over ``spread``
days instead of on one day; renewals then get the full TTL, which keeps that phase, so a stable
audience renews about ``1 / (TTL - margin)`` of itself per daily refresh.
"""

from __future__ import annotations

import zlib
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

import pyarrow as pa

from cja_audiences.lake.layout import atomic_path
from cja_audiences.lake.runs import MEMBERS, MEMBERSHIP
from cja_audiences.lake.storage import LakePath, connect, parquet_file, parquet_rows
from cja_audiences.specs import calendar

if TYPE_CHECKING:
    from cja_audiences.settings import Settings
    from cja_audiences.specs.model import AudienceSpec

# CJA's publish page: a deleted one-time audience stays in AEP until its memberships expire,
# 420 days after publishing (16 days for a refreshing one): we give one-time members the same.
ONE_TIME_TTL = timedelta(days=420)
_MS = 1000
_KEY = "p.person_id, p.namespace, p.identity"


def _same(alias: str) -> str:
    return " AND ".join(f"{alias}.{c} = p.{c}" for c in ("person_id", "namespace", "identity"))


@dataclass(frozen=True)
class Lifetime:
    """``validUntil`` = send time + ``ttl`` (minus the member's offset within ``spread`` for a
    member sent for the first time); renew when it falls before the next refresh + margin."""

    ttl: timedelta
    margin: timedelta
    spread: timedelta

    def __post_init__(self) -> None:
        if self.spread + self.margin >= self.ttl:
            raise ValueError(
                f"membership spread ({self.spread}) plus renewal margin ({self.margin}) must be "
                f"shorter than the TTL ({self.ttl}): CJA_AUDIENCES_RENEWAL_SPREAD_DAYS + "
                "CJA_AUDIENCES_RENEWAL_MARGIN_HOURS / 24 < CJA_AUDIENCES_MEMBERSHIP_TTL_DAYS"
            )

    def valid_until_ms(self, sent_ms: int, namespace: str, identity: str, staggered: bool) -> int:
        """Epoch ms of ``validUntil`` for one member sent at ``sent_ms``."""
        until = sent_ms + int(self.ttl.total_seconds()) * _MS
        if staggered and self.spread:
            share = zlib.crc32(f"{namespace}\x1f{identity}".encode()) / 2**32
            until -= int(share * self.spread.total_seconds()) * _MS
        return until


def lifetime_for(spec: AudienceSpec, settings: Settings) -> Lifetime:
    """The settings' TTL, margin and spread; a one-time audience keeps CJA's 420 days."""
    if spec.refresh.frequency == "one_time":
        return Lifetime(ONE_TIME_TTL, timedelta(0), timedelta(0))
    return Lifetime(
        timedelta(days=settings.membership_ttl_days),
        timedelta(hours=settings.renewal_margin_hours),
        timedelta(days=settings.renewal_spread_days),
    )


def renew_before(spec: AudienceSpec, lifetime: Lifetime, now: datetime) -> datetime | None:
    """Members whose ``valid_until`` is earlier than this are renewed now: the next scheduled
    refresh plus the margin. None for a one-time audience (no next refresh to wait for)."""
    if spec.refresh.frequency == "one_time":
        return None
    begun = calendar.period_start(spec, now)
    upcoming = spec.refresh.start if begun is None else calendar.next_period(spec, begun)
    return max(upcoming, now) + lifetime.margin


def iso_ms(epoch_ms: int) -> str:
    """Epoch ms as the ISO 8601 text AEP takes (UTC, milliseconds)."""
    return datetime.fromtimestamp(epoch_ms / _MS, UTC).isoformat(timespec="milliseconds")


def epoch_ms(moment: str | datetime) -> int:
    value = datetime.fromisoformat(moment) if isinstance(moment, str) else moment
    return int(value.timestamp() * _MS)


def valid_until_column(
    table: pa.Table, lifetime: Lifetime, sent_ms: int, staggered: bool
) -> pa.Array:
    """``valid_until`` for every row of a member table (the values its records carry)."""
    namespaces = table.column("namespace").to_pylist()
    identities = table.column("identity").to_pylist()
    until = lifetime.valid_until_ms
    return pa.array(
        [until(sent_ms, n, i, staggered) for n, i in zip(namespaces, identities, strict=True)],
        type=pa.timestamp("ms", tz="UTC"),
    )


def write_membership(
    run_dir: LakePath,
    previous_run_dir: LakePath | None,
    sent: list[tuple[LakePath, str, bool]],
    lifetime: Lifetime,
) -> int:
    """Write ``run_dir/membership.parquet``: what AEP holds once this run's publish is done.

    ``sent`` lists (member file, qualification time, staggered) of every realized input this
    run sent; members not in them are carried forward from the previous run's file (they
    were neither entered nor renewed, so AEP still holds what was sent before). Returns rows.
    """
    with connect(run_dir) as con:
        parts = []
        for index, (path, when, staggered) in enumerate(sent):
            table = parquet_file(path).read(columns=["person_id", "namespace", "identity"])
            sent_ms = epoch_ms(when)
            table = table.append_column(
                "valid_until", valid_until_column(table, lifetime, sent_ms, staggered)
            ).append_column(
                "last_sent",
                pa.array([sent_ms] * table.num_rows, type=pa.timestamp("ms", tz="UTC")),
            )
            con.register(f"sent_{index}", table)
            parts.append(f"SELECT * FROM sent_{index}")
        sent_sql = " UNION ALL ".join(parts) or (
            "SELECT NULL::VARCHAR AS person_id, NULL::VARCHAR AS namespace, "
            "NULL::VARCHAR AS identity, NULL::TIMESTAMPTZ AS valid_until, "
            "NULL::TIMESTAMPTZ AS last_sent WHERE false"
        )
        previous = previous_run_dir / MEMBERSHIP if previous_run_dir else None
        carried = ""
        params: dict[str, Any] = {}
        if previous is not None and previous.exists():
            params |= {"previous": str(previous), "members": str(run_dir / MEMBERS)}
            carried = f"""
                UNION ALL
                SELECT {_KEY}, p.valid_until, p.last_sent FROM read_parquet($previous) AS p
                WHERE EXISTS (SELECT 1 FROM read_parquet($members) AS m WHERE {_same("m")})
                  AND NOT EXISTS (SELECT 1 FROM fresh AS f WHERE {_same("f")})
            """
        with atomic_path(run_dir / MEMBERSHIP) as tmp:
            params["out"] = str(tmp)
            con.execute(
                f"""
                COPY (
                    WITH fresh AS ({sent_sql})
                    SELECT * FROM fresh {carried}
                    ORDER BY person_id, namespace, identity
                ) TO $out (FORMAT parquet, COMPRESSION zstd)
                """,
                params,
            )
    return parquet_rows(run_dir / MEMBERSHIP)
