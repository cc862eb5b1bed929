"""Which names a filter may use as columns: the only way an identifier reaches SQL.

Event fields are the lake's EVENT_SCHEMA columns, the spec's computed fields and
``dimensions.<key>`` (a key of the events' ``dimensions`` map, bound as a value). Person
attributes are PERSON_SCHEMA columns and ``attributes.<key>``.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

from cja_audiences.lake.schema import EVENT_COLUMNS, PERSON_COLUMNS, type_name

# Columns every compiled query reads regardless of the filter.
KEY_COLUMNS = ("person_id", "timestamp", "event_id")
# name -> type name (lake.schema), maps and person_id left out: they are not plain fields.
EVENT_FIELDS = {
    n: type_name(t) for n, t in EVENT_COLUMNS.items() if type_name(t) != "map" and n != "person_id"
}
LIST_FIELDS = {name for name, t in EVENT_FIELDS.items() if t == "list"}
NUMERIC_FIELDS = {name for name, t in EVENT_FIELDS.items() if t in ("int32", "float64")}
PERSON_FIELDS = {
    n: type_name(t) for n, t in PERSON_COLUMNS.items() if type_name(t) != "map" and n != "person_id"
}
MAP_KEY = re.compile(r"^[A-Za-z0-9_.:\-]{1,100}$")


class FieldError(ValueError):
    """A name that is not a known column; the message lists what is allowed."""


@dataclass(frozen=True)
class FieldRef:
    """A resolved field: the lake column it reads and, for map lookups, the key."""

    column: str
    key: str | None = None
    is_list: bool = False


def quote(name: str) -> str:
    """Quote an identifier that already passed the whitelist."""
    return '"' + name.replace('"', '""') + '"'


def event_field(name: str, computed: tuple[str, ...] = ()) -> FieldRef:
    if name in EVENT_FIELDS:
        return FieldRef(name, is_list=name in LIST_FIELDS)
    if name in computed:
        return FieldRef(name)
    if name.startswith("dimensions.") and MAP_KEY.match(name.removeprefix("dimensions.")):
        return FieldRef("dimensions", key=name.removeprefix("dimensions."))
    allowed = sorted(EVENT_FIELDS) + sorted(computed) + ["dimensions.<key>"]
    raise FieldError(f"unknown event field {name!r}; allowed: {', '.join(allowed)}")


def person_field(name: str) -> FieldRef:
    if name in PERSON_FIELDS:
        return FieldRef(name)
    if name.startswith("attributes.") and MAP_KEY.match(name.removeprefix("attributes.")):
        return FieldRef("attributes", key=name.removeprefix("attributes."))
    allowed = sorted(PERSON_FIELDS) + ["attributes.<key>"]
    raise FieldError(f"unknown person attribute {name!r}; allowed: {', '.join(allowed)}")
