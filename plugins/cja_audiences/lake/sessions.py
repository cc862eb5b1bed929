"""Sessions as the lake keeps them: the rules they were built with, and whether files have them.

The extract writes two columns on every event (``extract.sessions``): ``session_start`` (the
session's first event time; with ``person_id`` the session's key, stable when later sessions
are renumbered) and ``session_number`` (1 for the person's first session in the lake's
history, CJA's Session Number / AA's Visit Number). Each file records the rules it was
sessionized with in its Parquet footer, so compute can trust the columns only when they were
built with the rules the deployment now configures (a data view's session settings), and
sessionize in the query otherwise.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # PyArrow stays out of spec loading and DAG parsing
    import pyarrow as pa
    import pyarrow.parquet as pq

SESSION_COLUMNS = ("session_start", "session_number")
METADATA_KEY = b"cja_audiences.sessions"
DEFAULT_TIMEOUT_MINUTES = 30


@dataclass(frozen=True)
class SessionRules:
    """A data view's session settings: a new session after ``timeout_minutes`` without
    events, and (optionally) on every event whose ``event_type`` is in ``start_event_types``
    (CJA's "start new session with a metric")."""

    timeout_minutes: int = DEFAULT_TIMEOUT_MINUTES
    start_event_types: tuple[str, ...] = field(default_factory=tuple)

    def __post_init__(self) -> None:
        if isinstance(self.timeout_minutes, bool) or not isinstance(self.timeout_minutes, int):
            raise ValueError(f"session timeout {self.timeout_minutes!r}: whole minutes expected")
        if self.timeout_minutes < 1:
            raise ValueError(f"session timeout {self.timeout_minutes} min: use at least 1")
        object.__setattr__(self, "start_event_types", tuple(sorted(set(self.start_event_types))))

    def as_metadata(self) -> dict[bytes, bytes]:
        value = {
            "timeout_minutes": self.timeout_minutes,
            "start_event_types": [*self.start_event_types],
        }
        return {METADATA_KEY: json.dumps(value, sort_keys=True).encode()}

    @classmethod
    def from_settings(cls, settings: object) -> SessionRules:
        return cls(
            getattr(settings, "session_timeout_minutes", DEFAULT_TIMEOUT_MINUTES),
            tuple(getattr(settings, "session_start_event_types", ()) or ()),
        )


def file_rules(metadata: pq.FileMetaData) -> SessionRules | None:
    """The rules a Parquet file was sessionized with; None when it has no session columns."""
    kv = metadata.metadata or {}
    raw = kv.get(METADATA_KEY)
    if raw is None:
        return None
    try:
        value = json.loads(raw)
        return SessionRules(int(value["timeout_minutes"]), tuple(value["start_event_types"]))
    except (ValueError, KeyError, TypeError):
        return None


def sessionized(files: list[Path], rules: SessionRules) -> bool:
    """True when every file carries session columns built with ``rules`` (footers only)."""
    from cja_audiences.lake.storage import parquet_file

    return all(file_rules(parquet_file(path).metadata) == rules for path in files)


def with_rules(schema: pa.Schema, rules: SessionRules) -> pa.Schema:
    """``schema`` whose footer records the session rules of the data written with it."""
    return schema.with_metadata({**(schema.metadata or {}), **rules.as_metadata()})
