"""Everything the emulator remembers, in memory for speed and in DuckDB for durability.

Small resources (audiences, CJA segments, catalog batches) are written through to a DuckDB
key-value table. Streaming records are far too many for a row-per-record write, so accepted
requests are buffered and appended to a journal table in batches by a background task, and
the profile store is rebuilt from that journal when the emulator starts on an existing state
folder.
"""

from __future__ import annotations

import pickle
import secrets
import struct
import threading
import time
from collections import Counter, defaultdict, deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
from pydantic_core import from_json, to_json

from emulator.config import EmulatorConfig
from emulator.profiles import ProfileStore

KINDS = ("audience", "segment", "batch", "external_audience", "base_connection", "clock")
CLOCK_KEY = ("clock", "-", "offset")
# Streamed bodies are repetitive: zstd shrinks them ~100x at ~0.15 µs per message (level-1
# zlib took ~1 µs). A journal body is a marker, its raw length (8 bytes), the zstd frame.
_ZSTD = pa.Codec("zstd")
_MARKER = b"EMJ2"
_LENGTH = struct.Struct("<Q")
JOURNAL_ROWS_PER_INSERT = 500
# A stop checkpoints the stores (so a restart loads one blob instead of replaying every request
# since the state was created); a running emulator checkpoints after this many journaled bytes,
# which bounds the replay after a kill -9 (~30 s for 1 GiB). It pauses streaming while it pickles
# every profile (~1.3 s per 400,000), so it is kept above what one benchmark run sends (~284 MB).
CHECKPOINT_AFTER_BYTES = 2**30


def pack_body(raw: bytes) -> bytes:
    return _MARKER + _LENGTH.pack(len(raw)) + _ZSTD.compress(raw, asbytes=True)


def unpack_body(packed: bytes) -> bytes:
    if not packed.startswith(_MARKER):
        raise ValueError("not a journal body of this emulator version")
    (size,) = _LENGTH.unpack_from(packed, len(_MARKER))
    start = len(_MARKER) + _LENGTH.size
    return _ZSTD.decompress(packed[start:], decompressed_size=size, asbytes=True)


@dataclass
class Token:
    client_id: str
    org_id: str
    expires_at: float  # epoch seconds


@dataclass
class JournalEntry:
    received: float
    sandbox: str
    body: bytes  # {"messages": [...]}: only profile records the store accepted


class Persistence:
    """The DuckDB file under ``--state`` (or an in-memory database without one)."""

    def __init__(self, state_dir: Path | None) -> None:
        self.path = state_dir / "emulator.duckdb" if state_dir else None
        if state_dir:
            state_dir.mkdir(parents=True, exist_ok=True)
        self.db = duckdb.connect(str(self.path) if self.path else ":memory:")
        self.lock = threading.Lock()
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS resources (kind VARCHAR, sandbox VARCHAR, id VARCHAR, "
            "body VARCHAR, PRIMARY KEY (kind, sandbox, id))"
        )
        self.db.execute(
            "CREATE TABLE IF NOT EXISTS journal (seq BIGINT, received DOUBLE, sandbox VARCHAR, "
            "body BLOB)"
        )
        self.db.execute("CREATE TABLE IF NOT EXISTS checkpoint (seq BIGINT, body BLOB)")
        [(self.seq,)] = self.db.execute(
            "SELECT greatest((SELECT coalesce(max(seq), 0) FROM journal), "
            "(SELECT coalesce(max(seq), 0) FROM checkpoint))"
        ).fetchall()
        self.generation = 0  # bumped by clear(), so a flush racing a reset is discarded

    def put(self, kind: str, sandbox: str, ident: str, body: dict[str, Any]) -> None:
        with self.lock:
            self.db.execute(
                "INSERT OR REPLACE INTO resources VALUES (?, ?, ?, ?)",
                [kind, sandbox, ident, to_json(body).decode()],
            )

    def delete(self, kind: str, sandbox: str, ident: str) -> None:
        with self.lock:
            self.db.execute(
                "DELETE FROM resources WHERE kind = ? AND sandbox = ? AND id = ?",
                [kind, sandbox, ident],
            )

    def resources(self) -> list[tuple[str, str, str, dict[str, Any]]]:
        with self.lock:
            rows = self.db.execute(
                "SELECT kind, sandbox, id, body FROM resources ORDER BY rowid"
            ).fetchall()
        return [(kind, sandbox, ident, from_json(body)) for kind, sandbox, ident, body in rows]

    def append_journal(self, entries: list[JournalEntry], generation: int) -> None:
        """Multi-row inserts, never one statement per record; dropped after a reset.

        ``executemany`` runs (and commits) one statement per row, which cost ~2 µs of server
        CPU per streamed message; an Arrow table would import pandas into the server.
        """
        if not entries or self.path is None:
            return
        with self.lock:
            if generation != self.generation:
                return
            for start in range(0, len(entries), JOURNAL_ROWS_PER_INSERT):
                chunk = entries[start : start + JOURNAL_ROWS_PER_INSERT]
                params: list[Any] = []
                for entry in chunk:
                    self.seq += 1
                    params += (self.seq, entry.received, entry.sandbox, pack_body(entry.body))
                rows = ", ".join(["(?, ?, ?, ?)"] * len(chunk))
                self.db.execute(f"INSERT INTO journal VALUES {rows}", params)

    def write_checkpoint(self, body: bytes) -> None:
        """Replace the whole journal by ``body`` (the stores as they are now), atomically: a
        crash half-way leaves the journal as it was."""
        if self.path is None:
            return
        with self.lock:
            self.db.execute("BEGIN TRANSACTION")
            self.db.execute("DELETE FROM checkpoint")
            self.db.execute("INSERT INTO checkpoint VALUES (?, ?)", [self.seq, body])
            self.db.execute("DELETE FROM journal WHERE seq <= ?", [self.seq])
            self.db.execute("COMMIT")

    def checkpoint(self) -> bytes | None:
        with self.lock:
            row = self.db.execute("SELECT body FROM checkpoint").fetchone()
        return unpack_body(row[0]) if row else None

    def journal(self) -> list[JournalEntry]:
        with self.lock:
            rows = self.db.execute(
                "SELECT received, sandbox, body FROM journal ORDER BY seq"
            ).fetchall()
        try:
            return [JournalEntry(r, s, unpack_body(b)) for r, s, b in rows]
        except (OSError, struct.error, ValueError):
            raise RuntimeError(
                f"{self.path}: the streaming journal was written by an older emulator and "
                "cannot be replayed; delete that file (or `make clean`) to start empty"
            ) from None

    def clear(self) -> None:
        with self.lock:
            self.db.execute("DELETE FROM resources")
            self.db.execute("DELETE FROM journal")
            self.db.execute("DELETE FROM checkpoint")
            self.seq = 0
            self.generation += 1

    def close(self) -> None:
        with self.lock:
            self.db.close()


RATE_WINDOW_S = 1.0
SECONDS_KEPT = 300  # per-second counts kept for the stats


@dataclass
class OrgRate:
    """Records received from one org in a sliding window, and the highest such count seen.

    The maximum over every window ending at an arrival is the maximum over every window, so
    ``max_window`` is exact: the most records any one-second span ever held.
    """

    window_s: float = RATE_WINDOW_S
    arrivals: deque[tuple[float, int]] = field(default_factory=deque)
    in_window: int = 0
    max_window: int = 0
    received: int = 0
    by_second: Counter[int] = field(default_factory=Counter)  # whole wall-clock seconds

    def add(self, count: int, now: float, wall: float | None = None) -> None:
        self.arrivals.append((now, count))
        self.in_window += count
        self.received += count
        self._expire(now)
        self.max_window = max(self.max_window, self.in_window)
        second = int(time.time() if wall is None else wall)
        self.by_second[second] += count
        for old in [s for s in self.by_second if s < second - SECONDS_KEPT]:
            del self.by_second[old]

    def _expire(self, now: float) -> None:
        while self.arrivals and now - self.arrivals[0][0] >= self.window_s:
            self.in_window -= self.arrivals.popleft()[1]

    def as_dict(self, now: float) -> dict[str, Any]:
        self._expire(now)
        return {
            "window_s": self.window_s,
            "current": self.in_window,
            "max": self.max_window,
            "max_calendar_second": max(self.by_second.values(), default=0),
            "received": self.received,
            "per_second": {str(s): n for s, n in sorted(self.by_second.items())},
        }


@dataclass
class Stats:
    """Request and message counters for ``/_emulator/stats``."""

    requests: Counter[tuple[str, int]] = field(default_factory=Counter)
    accepted: Counter[str] = field(default_factory=Counter)  # by sandbox
    rejected: Counter[str] = field(default_factory=Counter)
    dropped: Counter[str] = field(default_factory=Counter)  # accepted, failed XDM validation
    tokens_issued: int = 0
    started: float = field(default_factory=time.time)
    org_rates: dict[str, OrgRate] = field(default_factory=dict)

    def received_records(self, org_id: str, count: int) -> None:
        """Streaming records as they arrive, per org (AEP's capacity is per org)."""
        self.org_rates.setdefault(org_id, OrgRate()).add(count, time.monotonic())

    def as_dict(self) -> dict[str, Any]:
        by_route: dict[str, dict[str, int]] = defaultdict(dict)
        for (route, status), count in sorted(self.requests.items()):
            by_route[route][str(status)] = count
        return {
            "requests": dict(by_route),
            "requests_total": sum(self.requests.values()),
            "messages": {
                "accepted": sum(self.accepted.values()),
                "rejected": sum(self.rejected.values()),
                "accepted_by_sandbox": dict(self.accepted),
                "rejected_by_sandbox": dict(self.rejected),
                "dropped": sum(self.dropped.values()),
                "dropped_by_sandbox": dict(self.dropped),
            },
            "tokens_issued": self.tokens_issued,
            "records_per_s_by_org": {
                org: rate.as_dict(time.monotonic()) for org, rate in self.org_rates.items()
            },
            "uptime_s": round(time.time() - self.started, 3),
        }


class State:
    """The emulator's whole mutable world; one instance per server."""

    def __init__(self, config: EmulatorConfig, state_dir: Path | None) -> None:
        self.config = config
        self.persistence = Persistence(state_dir)
        self.datasets = {d.id: d for d in config.datasets}
        self.schemas = {s.id: s for s in config.schemas}
        self.inlets = {i.id: i for i in config.inlets}
        self.clients = {c.client_id: c for c in config.clients}
        self.namespaces = {n.code: n for n in config.identity_namespaces}
        self._clear_memory()
        self._load()

    def _clear_memory(self) -> None:
        self.tokens: dict[str, Token] = {}
        self.token_lifetime_s = self.config.token_lifetime_s
        self.profiles: dict[str, ProfileStore] = defaultdict(ProfileStore)
        self.resources: dict[str, dict[str, dict[str, dict[str, Any]]]] = {
            kind: defaultdict(dict) for kind in KINDS
        }
        self.journal_buffer: list[JournalEntry] = []
        self.journaled_bytes = 0  # since the last checkpoint
        self.open_batches: dict[tuple[str, str], dict[str, Any]] = {}
        self.stats = Stats()
        self.lake: str | None = self.config.cja.lake
        self.clock_offset_s = 0.0
        self.org = self.config.org.model_copy()
        self.timezone = self.config.cja.timezone  # the data view's (admin route can change it)
        self.person_dimension = self.config.cja.person_dimension

    def _load(self) -> None:
        for kind, sandbox, ident, body in self.persistence.resources():
            self.resources[kind][sandbox][ident] = body
        clock = self.resources["clock"]["-"].get("offset")
        self.clock_offset_s = clock["offset_s"] if clock else 0.0
        checkpoint = self.persistence.checkpoint()
        if checkpoint is not None:
            self.profiles.update(pickle.loads(checkpoint))  # our own state file, never a peer's
        for entry in self.persistence.journal():
            store = self.profiles[entry.sandbox]
            for message in from_json(entry.body)["messages"]:
                entity = message["body"]["xdmEntity"]
                store.apply(entity, message["header"]["datasetId"], entry.received)
        self.purge()

    # -- the clock (memberships lapse by it; tokens and rate windows keep real time) -----
    def now(self) -> float:
        """The emulator's epoch seconds: real time moved by ``/_emulator/clock``."""
        return time.time() + self.clock_offset_s

    def advance(self, seconds: float) -> int:
        """Move the clock forward; returns how many memberships lapsed and were deleted."""
        if seconds < 0:
            raise ValueError("the clock only moves forward")
        self.clock_offset_s += seconds
        self.put(*CLOCK_KEY, {"offset_s": self.clock_offset_s})
        return self.purge()

    def purge(self) -> int:
        now = self.now()
        return sum(store.purge(now) for store in self.profiles.values())

    def reset(self) -> None:
        """Forget everything: state, tokens, counters (faults are reset by the caller)."""
        self.persistence.clear()
        self._clear_memory()

    # -- tokens -------------------------------------------------------------------------
    def issue_token(self, client_id: str, org_id: str) -> tuple[str, float]:
        token = "emu-" + secrets.token_urlsafe(32)
        lifetime = self.token_lifetime_s
        self.tokens[token] = Token(client_id, org_id, time.time() + lifetime)
        self.stats.tokens_issued += 1
        return token, lifetime

    def expire_tokens(self) -> int:
        now = time.time()
        for token in self.tokens.values():
            token.expires_at = min(token.expires_at, now)
        return len(self.tokens)

    # -- resources (audiences, segments, batches) ----------------------------------------
    def put(self, kind: str, sandbox: str, ident: str, body: dict[str, Any]) -> None:
        self.resources[kind][sandbox][ident] = body
        self.persistence.put(kind, sandbox, ident, body)

    def remove(self, kind: str, sandbox: str, ident: str) -> None:
        self.resources[kind][sandbox].pop(ident, None)
        self.persistence.delete(kind, sandbox, ident)

    # -- journal -----------------------------------------------------------------------
    def journal(self, entry: JournalEntry) -> None:
        if self.persistence.path is not None:
            self.journal_buffer.append(entry)
            self.journaled_bytes += len(entry.body)

    def checkpoint_due(self) -> bool:
        return self.journaled_bytes > CHECKPOINT_AFTER_BYTES

    def checkpoint(self) -> None:
        """Write the profile stores as they are and drop the journal they replace, so start-up
        stays short however long the emulator has run. Call it on the event loop: nothing may
        change the stores meanwhile (buffered requests are journaled first, so the checkpoint
        covers exactly the journal it replaces)."""
        if not self.journaled_bytes or self.persistence.path is None:
            return
        self.persistence.append_journal(self.take_journal(), self.persistence.generation)
        body = pickle.dumps(dict(self.profiles), protocol=pickle.HIGHEST_PROTOCOL)
        self.persistence.write_checkpoint(pack_body(body))
        self.journaled_bytes = 0

    def take_journal(self) -> list[JournalEntry]:
        entries, self.journal_buffer = self.journal_buffer, []
        return entries
