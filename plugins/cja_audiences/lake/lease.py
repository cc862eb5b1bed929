"""One writer per audience: a lease with a fencing token, built on one compare-and-swap.

At most one run of an audience may be between diff and commit: two runs diffing against the
same snapshot would both send, and AEP would end up matching neither. The lease is a small
record per audience — holder, fencing token, expiry — that every writer (a DAG's diff,
publish and commit tasks, the CLI's rollback, a decommission) takes or checks:

- ``acquire`` takes a free, expired or own lease; a new holder gets ``token + 1``;
- ``hold`` is the fence: it succeeds only while the token is still the holder's (nobody took
  the lease since) and extends the expiry. The publisher calls it before every chunk, so a
  publisher that lost its lease stops before its next chunk;
- ``release`` frees it (commit, or the run's final failure); a crashed holder's lease expires.

Everything is built on :class:`LeaseBackend`, whose only primitive is a compare-and-swap of
one small record (``load`` returns the record and a version tag; ``store`` writes only if the
tag still matches). :class:`LakeLeaseBackend` does it with ``lake.storage``'s conditional
writes: ``flock`` and a content digest on a local lake, the store's own precondition on S3,
GCS and Azure Blob (``If-Match`` / generation match, create-if-absent for the first write), so
all keep the same guarantees. Expiry uses wall clocks: keep the TTL
far above any clock skew between workers (the default is 30 minutes).
"""

from __future__ import annotations

import json
import time
from collections.abc import Callable
from dataclasses import asdict, dataclass
from datetime import UTC, datetime
from typing import Any, Protocol

from cja_audiences.lake.runs import RUNS, read_run_record, update_run_record
from cja_audiences.lake.storage import LakePath, lake_path, read_versioned, replace_if

LEASE_FILE = "lease.json"
DEFAULT_TTL_S = 1800.0
POLL_S = 0.5


class AudienceBusy(RuntimeError):
    """Another run holds the audience's lease; this one must not diff, send or commit."""


class LeaseLost(RuntimeError):
    """The lease was taken by another holder since this one got it: stop, diff again."""


@dataclass(frozen=True)
class Lease:
    audience_id: str
    holder: str
    token: int  # fencing token: grows by one whenever a new holder takes the lease
    expires_at: float  # epoch seconds
    ttl_s: float
    released: bool = False

    def describe(self) -> str:
        until = datetime.fromtimestamp(self.expires_at, UTC).isoformat(timespec="seconds")
        state = "released" if self.released else f"held until {until}"
        return f"run {self.holder} (token {self.token}, {state})"


class LeaseBackend(Protocol):
    """A compare-and-swap register of one JSON record per key (the audience id)."""

    def load(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        """The record and its version tag (None, None when it was never written)."""
        ...

    def store(self, key: str, record: dict[str, Any], expected: str | None) -> bool:
        """Write ``record`` only if the version tag is still ``expected``; True if written."""
        ...


class LakeLeaseBackend:
    """``<audiences>/<id>/lease.json``, swapped with the storage layer's compare-and-set.

    ``storage.replace_if`` writes only if the file still has the version read (locally its
    digest, checked under an ``flock``; on object storage its ETag or generation, checked by
    the server), and the first write is ``create_exclusive``. A counter inside the record
    makes every write's content, hence its version, new.
    """

    def __init__(self, audiences_dir: LakePath) -> None:
        self.root = lake_path(audiences_dir)

    def _path(self, key: str) -> LakePath:
        return self.root / key / LEASE_FILE

    def load(self, key: str) -> tuple[dict[str, Any] | None, str | None]:
        current = read_versioned(self._path(key))
        if current is None:
            return None, None
        return json.loads(current.data), current.token

    def store(self, key: str, record: dict[str, Any], expected: str | None) -> bool:
        body = {**record, "version": int(record.get("version", 0)) + 1}
        data = (json.dumps(body, indent=2, sort_keys=True) + "\n").encode()
        return replace_if(self._path(key), data, expected)


class Leases:
    """Acquire, fence (hold) and release audience leases over any :class:`LeaseBackend`."""

    def __init__(
        self,
        backend: LeaseBackend,
        ttl_s: float = DEFAULT_TTL_S,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self.backend = backend
        self.ttl_s = ttl_s
        self.clock = clock

    def current(self, audience_id: str) -> Lease | None:
        record, _version = self.backend.load(audience_id)
        return _lease(record)

    def acquire(
        self, audience_id: str, holder: str, *, wait_s: float = 0.0, reason: str = ""
    ) -> Lease:
        """Take the lease for ``holder``, waiting up to ``wait_s`` for another holder to
        finish; raises :class:`AudienceBusy` naming the holder when it does not."""
        deadline = time.monotonic() + wait_s
        while True:
            record, version = self.backend.load(audience_id)
            lease = _lease(record)
            now = self.clock()
            if lease is None or lease.holder == holder or lease.released or lease.expires_at <= now:
                same = lease is not None and lease.holder == holder
                token = lease.token if same else (lease.token + 1 if lease else 1)
                new = Lease(audience_id, holder, token, now + self.ttl_s, self.ttl_s)
                if self.backend.store(audience_id, {**asdict(new), "reason": reason}, version):
                    return new
                continue  # somebody swapped in between: look again
            if time.monotonic() >= deadline:
                raise AudienceBusy(
                    f"audience {audience_id} is being written by {lease.describe()}; "
                    f"{holder} waited {wait_s:g} s and stopped before sending anything. "
                    "It runs again on the next schedule, or trigger it once the other run ends"
                )
            time.sleep(min(POLL_S, max(deadline - time.monotonic(), 0.01)))

    def hold(self, audience_id: str, holder: str, token: int) -> Lease:
        """The fence: confirm ``holder`` still owns the lease with ``token`` and extend it.

        A released or expired lease nobody took since is taken back (same token); any other
        holder's token means this holder's view is stale, so :class:`LeaseLost` is raised.
        """
        while True:
            record, version = self.backend.load(audience_id)
            lease = _lease(record)
            if lease is None or lease.token != token or lease.holder != holder:
                raise LeaseLost(
                    f"run {holder} lost the lease of audience {audience_id} (token {token}) to "
                    f"{lease.describe() if lease else 'nobody (the lease is gone)'}; it must "
                    "not send or commit: run a new refresh, which supersedes its sends"
                )
            now = self.clock()
            if not lease.released and lease.expires_at - now > lease.ttl_s * 2 / 3:
                return lease  # renewed recently: a read is enough
            renewed = Lease(audience_id, holder, token, now + lease.ttl_s, lease.ttl_s)
            if self.backend.store(audience_id, {**(record or {}), **asdict(renewed)}, version):
                return renewed

    def release(self, audience_id: str, holder: str, token: int) -> bool:
        """Free the lease if ``holder`` still has it; True when it was released here."""
        while True:
            record, version = self.backend.load(audience_id)
            lease = _lease(record)
            if lease is None or lease.holder != holder or lease.token != token or lease.released:
                return False
            if self.backend.store(audience_id, {**(record or {}), "released": True}, version):
                return True


def _lease(record: dict[str, Any] | None) -> Lease | None:
    if record is None:
        return None
    return Lease(
        audience_id=record["audience_id"],
        holder=record["holder"],
        token=int(record["token"]),
        expires_at=float(record["expires_at"]),
        ttl_s=float(record["ttl_s"]),
        released=bool(record.get("released")),
    )


def owning_run(folder: LakePath) -> LakePath:
    """The run folder ``folder`` belongs to: itself, or the run of a folder nested in one
    (a bucket's ``buckets/b0003``, a repair's ``repairs/<id>``), which shares its lease."""
    if folder.parent.name != RUNS and folder.parent.parent.parent.name == RUNS:
        return folder.parent.parent
    return folder


def lake_leases(audiences_dir: LakePath, ttl_s: float = DEFAULT_TTL_S) -> Leases:
    """Leases of the lake (``Lake.audiences``), local or on object storage."""
    return Leases(LakeLeaseBackend(audiences_dir), ttl_s)


class RunLease:
    """The audience lease as one run uses it: taken at diff, fenced before every send and at
    commit, released when the run ends. The token lives in the run's ``run.json["lease"]``,
    so separate tasks (processes, workers) of one run share it."""

    def __init__(
        self, run_dir: LakePath, leases: Leases | None = None, audience_id: str | None = None
    ) -> None:
        self.run_dir = owning_run(lake_path(run_dir))
        # audiences/<id>/runs/<run>: the id is the folder's unless the caller knows the spec
        self.audience_id = audience_id or self.run_dir.parent.parent.name
        self.holder = self.run_dir.name
        # a run folder outside the layout (a benchmark's, a test's) keeps its leases beside it
        layout = self.run_dir.parent.name == RUNS
        self.leases = leases or lake_leases(
            self.run_dir.parent.parent.parent if layout else self.run_dir.parent
        )
        self._token: int | None = None

    def take(self, wait_s: float = 0.0, reason: str = "") -> Lease:
        """Acquire (waiting up to ``wait_s``) and record the token in run.json."""
        lease = self.leases.acquire(self.audience_id, self.holder, wait_s=wait_s, reason=reason)
        self._token = lease.token
        update_run_record(
            self.run_dir,
            lease={
                "holder": lease.holder,
                "token": lease.token,
                "acquired_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            },
        )
        return lease

    def token(self) -> int | None:
        if self._token is None:
            self._token = (read_run_record(self.run_dir).get("lease") or {}).get("token")
        return self._token

    def fence(self) -> Lease:
        """Confirm the run still owns the lease (taking it first if the run never did)."""
        token = self.token()
        if token is None:
            return self.take()
        return self.leases.hold(self.audience_id, self.holder, token)

    def release(self) -> bool:
        token = self.token()
        return token is not None and self.leases.release(self.audience_id, self.holder, token)
