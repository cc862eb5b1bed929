"""The Real-Time Customer Profile store: profiles by identity, memberships by audience.

This is the emulator's hot path (every accepted streaming record lands here), so it is plain
dicts and slotted objects, no per-record I/O. Persistence is a request journal replayed at
start-up (see :mod:`emulator.state`).
"""

from __future__ import annotations

import base64
import functools
import hashlib
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import Any

MEMBERSHIP_STATUSES = frozenset({"realized", "existing", "exited"})
EPOCH_ISO = "1970-01-01T00:00:00Z"

IdentityKey = tuple[str, str]  # (namespace code lower-cased, id)


class RecordError(ValueError):
    """A profile record the store cannot take; the message says which field and why."""


def iso_ms(epoch_s: float) -> str:
    """Epoch seconds as Adobe's ISO form (UTC, milliseconds, ``Z``)."""
    return datetime.fromtimestamp(epoch_s, UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def parse_time(value: Any) -> float:
    """ISO-8601 string or epoch milliseconds to epoch seconds; naive times are UTC."""
    if isinstance(value, int | float) and not isinstance(value, bool):
        return value / 1000.0
    if not isinstance(value, str):
        raise RecordError(f"lastQualificationTime {value!r} is not an ISO-8601 date-time")
    return _parse_iso(value)


@functools.lru_cache(maxsize=4096)
def _parse_iso(value: str) -> float:
    """Cached: the records of one publish run mostly share a handful of qualification times."""
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError as exc:
        raise RecordError(f"lastQualificationTime {value!r} is not an ISO-8601 date-time") from exc
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.timestamp()


def entity_id(key: IdentityKey) -> str:
    """A stable opaque profile id, shaped like Profile Access's internal entity ids."""
    digest = hashlib.blake2b(f"{key[0]}:{key[1]}".encode(), digest_size=21).digest()
    return base64.urlsafe_b64encode(digest).decode().rstrip("=")


class Membership:
    """One profile's membership of one audience (``segmentMembership.<ns>.<id>``)."""

    __slots__ = ("entry", "qualified_at")

    def __init__(self, entry: dict[str, Any], qualified_at: float) -> None:
        self.entry = entry
        self.qualified_at = qualified_at


class Profile:
    """A merged profile: identities, attributes, memberships and provenance."""

    __slots__ = (
        "key",
        "code",
        "identity_map",
        "attributes",
        "memberships",
        "sources",
        "modified_at",
    )

    def __init__(self, key: IdentityKey, code: str) -> None:
        self.key = key
        self.code = code  # the primary identity's namespace code as the sender spelled it
        self.identity_map: dict[str, list[dict[str, Any]]] = {}
        self.attributes: dict[str, Any] = {}
        self.memberships: dict[str, dict[str, Membership]] = {}
        self.sources: set[str] = set()
        self.modified_at = 0.0

    def entity(self) -> dict[str, Any]:
        """The profile as Profile Access returns it under ``entity``."""
        entity = dict(self.attributes)
        entity["identityMap"] = self.identity_map
        if self.memberships:
            entity["segmentMembership"] = {
                ns: {aud: m.entry for aud, m in audiences.items()}
                for ns, audiences in self.memberships.items()
            }
        return entity


def identities_of(entity: dict[str, Any]) -> list[tuple[IdentityKey, str, dict[str, Any]]]:
    """Every (key, namespace code, identity object) in ``identityMap``, primary first."""
    identity_map = entity.get("identityMap")
    if not isinstance(identity_map, dict) or not identity_map:
        raise RecordError(
            "xdmEntity.identityMap is missing or empty: a profile record needs at least one "
            'identity, e.g. {"ECID": [{"id": "...", "primary": true}]}'
        )
    found: list[tuple[IdentityKey, str, dict[str, Any]]] = []
    for code, values in identity_map.items():
        if not isinstance(values, list):
            raise RecordError(f"xdmEntity.identityMap.{code} must be a list of identity objects")
        for value in values:
            ident = value.get("id") if isinstance(value, dict) else None
            if not isinstance(ident, str) or not ident:
                raise RecordError(f"xdmEntity.identityMap.{code}[] needs a non-empty string id")
            item = ((code.lower(), ident), code, value)
            if value.get("primary") is True:
                found.insert(0, item)
            else:
                found.append(item)
    return found


def memberships_of(entity: dict[str, Any], received: float) -> list[tuple[str, str, Membership]]:
    """Validated (namespace, audience id, membership) triples from ``segmentMembership``."""
    raw = entity.get("segmentMembership")
    if raw is None:
        return []
    if not isinstance(raw, dict):
        raise RecordError("xdmEntity.segmentMembership must be an object keyed by namespace")
    out: list[tuple[str, str, Membership]] = []
    for ns, audiences in raw.items():
        if not isinstance(audiences, dict):
            raise RecordError(f"segmentMembership.{ns} must be an object keyed by audience id")
        for audience_id, entry in audiences.items():
            if not isinstance(entry, dict):
                raise RecordError(f"segmentMembership.{ns}.{audience_id} must be an object")
            status = entry.setdefault("status", "realized")
            if status not in MEMBERSHIP_STATUSES:
                raise RecordError(
                    f"segmentMembership.{ns}.{audience_id}.status {status!r} is not one of "
                    "existing, realized, exited"
                )
            when = entry.get("lastQualificationTime")
            if when is None:
                qualified_at = received
                entry["lastQualificationTime"] = iso_ms(received)
            else:
                qualified_at = parse_time(when)
            out.append((ns, audience_id, Membership(entry, qualified_at)))
    return out


class ProfileStore:
    """Profiles of one sandbox, with an index from audience to member profiles."""

    def __init__(self) -> None:
        self.by_identity: dict[IdentityKey, Profile] = {}
        self.members: dict[tuple[str, str], dict[IdentityKey, Profile]] = {}
        self.profile_count = 0

    def apply(self, entity: dict[str, Any], dataset_id: str, received: float) -> Profile:
        """Merge one accepted XDM profile record; memberships: last qualification wins."""
        identities = identities_of(entity)
        memberships = memberships_of(entity, received)
        profile = self._profile_for(identities)
        for key, code, value in identities:
            if key not in self.by_identity:
                self.by_identity[key] = profile
                profile.identity_map.setdefault(code, []).append(value)
        for name, value in entity.items():
            if name not in ("identityMap", "segmentMembership", "_id"):
                profile.attributes[name] = value
        for ns, audience_id, membership in memberships:
            current = profile.memberships.setdefault(ns, {})
            previous = current.get(audience_id)
            if previous is None or membership.qualified_at >= previous.qualified_at:
                current[audience_id] = membership
                self.members.setdefault((ns, audience_id), {})[profile.key] = profile
        profile.sources.add(dataset_id)
        profile.modified_at = received
        return profile

    def _profile_for(self, identities: list[tuple[IdentityKey, str, dict[str, Any]]]) -> Profile:
        for key, _code, _value in identities:
            existing = self.by_identity.get(key)
            if existing is not None:
                return existing
        self.profile_count += 1
        return Profile(identities[0][0], identities[0][1])

    def lookup(self, namespace: str, ident: str) -> Profile | None:
        return self.by_identity.get((namespace.lower(), ident))

    def audience_members(
        self, namespace: str, audience_id: str
    ) -> Iterator[tuple[Profile, Membership]]:
        """Current membership entries (any status) of one audience, in first-seen order."""
        for profile in self.members.get((namespace, audience_id), {}).values():
            yield profile, profile.memberships[namespace][audience_id]
