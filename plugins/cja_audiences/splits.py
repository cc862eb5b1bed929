"""Deterministic split tests and holdouts: each member's arm from a stable hash (issue 19).

A member's bucket is the first 32 bits of ``md5(person_id || '|' || audience_id || '|' ||
salt)`` as a number in [0, 1). The holdout takes [0, holdout), then each split its share in
spec order (the last one takes the rest, so rounding never leaves a gap). The bucket depends
on nothing but the person, the audience and the salt, so a person keeps their arm however
the audience grows or shrinks; a new salt reshuffles everyone. The same expression in plain
SQL is :func:`split_sql` with ``literal=True`` (README "Splits and holdouts").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from cja_audiences.specs.model import HOLDOUT

if TYPE_CHECKING:
    from cja_audiences.specs.model import AudienceSpec

SEPARATOR = "|"


@dataclass(frozen=True)
class Arm:
    name: str
    upper: float  # exclusive upper bound of the arm's buckets


def arms(spec: AudienceSpec) -> list[Arm]:
    """The holdout (when any) then the splits, with their cumulative upper bounds."""
    result, upper = [], 0.0
    if spec.holdout:
        upper = spec.holdout
        result.append(Arm(HOLDOUT, upper))
    for split in spec.splits:
        upper += split.share
        result.append(Arm(split.name, upper))
    return result


def has_arms(spec: AudienceSpec) -> bool:
    return bool(spec.splits or spec.holdout)


def salt_key(spec: AudienceSpec) -> str:
    return f"{SEPARATOR}{spec.id}{SEPARATOR}{spec.salt}"


def bucket(spec: AudienceSpec, person_id: str) -> float:
    """The person's bucket in [0, 1), as :func:`split_sql` computes it."""
    digest = hashlib.md5((person_id + salt_key(spec)).encode()).hexdigest()  # noqa: S324
    return int(digest[:8], 16) / 2**32


def assign(spec: AudienceSpec, person_id: str) -> str | None:
    """The person's arm; None when the audience has no arms or the person falls in none
    (a holdout alone: everybody else is published as the audience itself)."""
    b = bucket(spec, person_id)
    for arm in arms(spec):
        if b < arm.upper:
            return arm.name
    return spec.splits[-1].name if spec.splits else None


def split_sql(
    spec: AudienceSpec, column: str = "person_id", *, literal: bool = False
) -> tuple[str, dict[str, Any]]:
    """A DuckDB expression giving each row's arm (NULL: no arm), and its bound parameters.

    ``literal=True`` inlines the values: the expression to paste into any DuckDB query.
    """
    if not has_arms(spec):
        return "CAST(NULL AS VARCHAR)", {}
    params: dict[str, Any] = {"split_key": salt_key(spec)}

    def value(name: str, v: Any) -> str:
        if literal:
            return "'" + str(v).replace("'", "''") + "'" if isinstance(v, str) else repr(v)
        params[name] = v
        return f"${name}"

    key = value("split_key", salt_key(spec))
    b = f"(CAST(('0x' || left(md5({column} || {key}), 8)) AS UBIGINT) / 4294967296.0)"
    listed = arms(spec)
    whens = [
        f"WHEN {b} < {value(f'split_upper_{i}', arm.upper)} THEN {value(f'split_{i}', arm.name)}"
        for i, arm in enumerate(listed[:-1] if spec.splits else listed)
    ]
    last = value(f"split_{len(listed) - 1}", listed[-1].name) if spec.splits else "NULL"
    sql = "CASE " + " ".join(whens) + f" ELSE {last} END"
    return sql, ({} if literal else params)


def published_arms(spec: AudienceSpec) -> list[str | None]:
    """The arms that are published as their own AEP audience (None: the audience itself)."""
    if spec.splits and spec.publish_splits == "separate":
        return [s.name for s in spec.splits]
    return [None]


def published_id(spec: AudienceSpec, arm: str | None) -> str:
    """``<id>__<split>`` for a separately published split, else the audience id."""
    return spec.id if arm is None else f"{spec.id}__{arm}"


@dataclass(frozen=True)
class PublishedAudience:
    """One AEP audience a spec publishes: the spec itself, or one split as ``<id>__<split>``
    (what ``adobe.audiences.ensure_audience`` registers)."""

    id: str
    name: str
    description: str
    tags: list[str]


def published_audiences(spec: AudienceSpec) -> list[PublishedAudience]:
    result = []
    for arm in published_arms(spec):
        name = spec.name if arm is None else f"{spec.name} [{arm}]"
        tags = list(spec.tags) if arm is None else [*spec.tags, f"split:{arm}"]
        result.append(PublishedAudience(published_id(spec, arm), name, spec.description, tags))
    return result


def target_audience(spec: AudienceSpec, arm: str | None) -> str | None:
    """The AEP audience a member in ``arm`` is sent to; None for the holdout (never sent)."""
    if arm == HOLDOUT:
        return None
    if spec.splits and spec.publish_splits == "separate":
        return published_id(spec, arm)
    return spec.id


def arm_targets(spec: AudienceSpec) -> dict[str, str | None]:
    """Arm -> the AEP audience its members are sent to (None: held out); the diff compares
    members by target, so a move between arms of one combined audience sends nothing."""
    names = [arm.name for arm in arms(spec)]
    return {name: target_audience(spec, name) for name in names}
