"""Publish one run's membership changes to AEP: register, stream, ledger, dead letters.

``publish_run`` is the stage function of the contract (CONTRACTS.md). It sends entered
members as ``realized`` and exited members as ``exited``; ``full_republish`` sends the whole
membership as realized (a new sandbox, a repair). ``decommission_run`` sends every member as
exited and marks the AEP audience inactive. Every mode resumes from ``run_dir/ledger``.
The run fails, and the snapshot must not be committed, when dead letters exceed
``max_dead_letter_share`` of the records (default 0.1%).
"""

from __future__ import annotations

import math
import os
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import pyarrow as pa

from cja_audiences import splits
from cja_audiences.adobe.audiences import (
    audience_url,
    deactivate_audience,
    ensure_audience,
    find_audience,
)
from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.adobe.http import PlatformClient, TokenProvider
from cja_audiences.adobe.rate import records_per_request, shared_bucket
from cja_audiences.adobe.records import (
    STATUS_REALIZED,
    InvalidRecord,
    RecordFactory,
    qualification_time,
)
from cja_audiences.adobe.sender import (
    Failure,
    Item,
    SendOptions,
    SendStats,
    StreamingSender,
    pack,
)
from cja_audiences.lake.layout import write_parquet
from cja_audiences.lake.lease import LeaseLost, RunLease
from cja_audiences.lake.runs import DEAD_LETTERS, read_run_record, update_run_record
from cja_audiences.lake.storage import LakePath, lake_path
from cja_audiences.lifetime import Lifetime, epoch_ms, iso_ms, lifetime_for, write_membership
from cja_audiences.publish.ledger import Chunk, Ledger, count_chunks, fingerprint, iter_chunks
from cja_audiences.publish.sent import PLANS, next_qualification_time, unaccounted_runs
from cja_audiences.settings import get_settings

DEFAULT_CHUNK_SIZE = 5_000
DEFAULT_MAX_DEAD_LETTER_SHARE = 0.001
DEAD_LETTER_SCHEMA = pa.schema(
    [
        pa.field("chunk", pa.string(), nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("identity", pa.string()),
        pa.field("status", pa.string(), nullable=False),  # realized | exited
        pa.field("status_code", pa.int32()),  # AEP's status; null when refused before sending
        pa.field("message", pa.string(), nullable=False),
    ]
)

# realized kinds whose validUntil is staggered within the spread (members sent afresh)
STAGGERED = frozenset({"entered", "members"})


@dataclass(frozen=True)
class PublishOptions:
    """Publish knobs; ``send`` defaults to the connection's concurrency, rate and timeout."""

    chunk_size: int = DEFAULT_CHUNK_SIZE
    max_dead_letter_share: float = DEFAULT_MAX_DEAD_LETTER_SHARE
    send: SendOptions | None = None
    lifetime: Lifetime | None = None  # default: from the spec and the settings

    def send_options(self, config: AdobeConfig) -> SendOptions:
        return self.send or SendOptions(
            concurrency=config.concurrency, rate_limit=config.rate_limit, timeout=config.timeout
        )


class PublishError(RuntimeError):
    """The publish did not complete; the ledger keeps what was acknowledged."""


class DeadLetterThresholdExceeded(PublishError):
    """Too many records were refused: do not commit the snapshot."""


class Superseded(LeaseLost):
    """Another run sent records after this run's diff: its entered/exited are stale."""


def publish_run(
    config: AdobeConfig,
    spec: Any,
    run_dir: LakePath,
    *,
    full_republish: bool = False,
    dry_run: bool = False,
    options: PublishOptions | None = None,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """Send the run's entered (realized) and exited (exited) members; see the module doc."""
    mode = "full" if full_republish else "delta"
    return _Publish(config, spec, lake_path(run_dir), mode, options, tokens).run(dry_run)


def repair_run(
    config: AdobeConfig,
    spec: Any,
    repair_dir: LakePath,
    *,
    options: PublishOptions | None = None,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """Send a reconcile's corrections (realized.parquet, exited.parquet in ``repair_dir``)
    through the ledger, so a crash mid-repair resumes where it stopped."""
    return _Publish(config, spec, lake_path(repair_dir), "repair", options, tokens).run(False)


def decommission_run(
    config: AdobeConfig,
    spec: Any,
    run_dir: LakePath,
    *,
    dry_run: bool = False,
    options: PublishOptions | None = None,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """Send every member of ``run_dir`` (the last committed run) as exited, then mark the
    AEP audience inactive. The audience is never deleted."""
    return _Publish(config, spec, lake_path(run_dir), "decommission", options, tokens).run(dry_run)


@dataclass
class _ChunkWork:
    chunk: Chunk
    refused: list[Failure] = field(default_factory=list)  # before sending: invalid, oversize
    held_out: int = 0  # rows of the holdout: kept in the snapshot, never sent


_Factories = dict[str, RecordFactory]


class _Publish:
    def __init__(
        self,
        config: AdobeConfig,
        spec: Any,
        run_dir: LakePath,
        mode: str,
        options: PublishOptions | None,
        tokens: TokenProvider | None,
    ) -> None:
        self.config = config
        self.spec = spec
        self.run_dir = run_dir
        self.mode = mode
        self.options = options or PublishOptions()
        self.namespace = config.audience_namespace()  # fails before anything else if unset
        self.lifetime = self.options.lifetime or lifetime_for(spec, get_settings())
        self.send_options = self.options.send_options(config)
        self._max_records = records_per_request(self.send_options.rate_limit)
        self.tokens = tokens or TokenProvider(config)
        self.inputs = self._inputs()
        self.kinds = {kind for kind, *_ in self.inputs}
        self.total = sum(
            count_chunks(path, self.options.chunk_size)[0] for _, path, _ in self.inputs
        )
        self.allowed_dead = math.floor(self.options.max_dead_letter_share * self.total)
        self.ledger = Ledger(run_dir)
        self.lease = RunLease(run_dir, audience_id=spec.id)
        self.session = f"{os.getpid()}-{uuid.uuid4().hex[:8]}"
        self.stats = SendStats()
        self.acknowledged_now = {"chunks": 0, "records": 0}
        self.dead = 0
        self.audiences: list[dict[str, Any]] = []

    def _inputs(self) -> list[tuple[str, LakePath, str]]:
        found = []
        for kind, name, status, required in PLANS[self.mode]:
            path = self.run_dir / name
            if path.exists():
                found.append((kind, path, status))
            elif required:
                raise FileNotFoundError(
                    f"{path} is missing: a {self.mode} publish needs it "
                    "(run compute and diff for this run first)"
                )
        return found

    # -- the whole publish ------------------------------------------------------------------
    def run(self, dry_run: bool) -> dict[str, Any]:
        if dry_run:
            return self._dry_run()
        started = time.monotonic()
        audience: dict[str, Any] | None = None
        before: dict[str, int] | None = None
        own_lease = False
        try:
            own_lease = self._claim()
            audience = self._register()
            manifest = self.ledger.open(self.options.chunk_size, self._fingerprints())
            before = self._ledger_totals()
            self.dead = before["dead"]
            self._send(manifest)
            if self.dead > self.allowed_dead:  # e.g. all left by an earlier session
                raise DeadLetterThresholdExceeded(self._threshold_message(self.dead))
            if self.mode == "decommission":
                audience = {**audience, **(self._deactivate() or {})}
            elif self.mode != "repair":  # a repair updates the committed run's file itself
                self._write_membership(manifest)
        except BaseException as exc:
            try:
                failed = self._summary(started, audience, before, status="failed")
                failed["error"] = f"{type(exc).__name__}: {exc}"
                self._record(failed)
            except OSError as record_error:  # e.g. the disk that failed the publish is full
                exc.add_note(f"the failure could not be recorded in run.json: {record_error}")
            raise
        finally:
            if own_lease:
                self.lease.release()
        summary = self._summary(started, audience, before, status="ok")
        self._record(summary)
        return summary

    def _claim(self) -> bool:
        """Own the audience's lease and check no other run sent since this run's diff.

        True when the lease was taken here (a run folder without a diff-time lease: a
        decommission, a reconcile repair, a folder prepared by hand); such a publish
        releases it when it ends. A bucket's or a repair's folder shares its run's lease.
        """
        if self.mode in ("decommission", "repair") or self.lease.token() is None:
            self.lease.take()
            return True
        self.lease.fence()
        run = self.lease.run_dir
        record = read_run_record(run)
        if record.get("superseded_by"):
            raise Superseded(
                f"run {run.name} was superseded by run {record['superseded_by']}, "
                "which corrected its sends; it must not send again"
            )
        newer = unaccounted_runs(run.parent.parent, run)
        if "diff" in record and newer:
            raise Superseded(
                f"run(s) {', '.join(newer)} sent records to AEP after run "
                f"{run.name} was diffed; its changes are stale: diff it again"
            )
        return False

    def _register(self) -> dict[str, Any]:
        """Every AEP audience this spec publishes (one per split when split separately);
        returns the first, the others are in ``self.audiences``."""
        with PlatformClient(self.config, self.tokens) as client:
            for audience in splits.published_audiences(self.spec):
                if self.mode == "decommission":
                    found = find_audience(client, audience.id)
                    self.audiences.append(
                        {"id": found and found.get("id"), "audienceId": audience.id}
                    )
                else:
                    self.audiences.append(
                        ensure_audience(client, audience, segment_namespace=self.namespace)
                    )
        return self.audiences[0]

    def _deactivate(self) -> dict[str, Any] | None:
        with PlatformClient(self.config, self.tokens) as client:
            results = [
                deactivate_audience(client, a.id) for a in splits.published_audiences(self.spec)
            ]
        return results[0]

    def _write_membership(self, manifest: dict[str, Any]) -> None:
        """What AEP holds after this publish: sent members with their validUntil, the rest
        carried from the run this one was diffed against (``lifetime.write_membership``)."""
        sent = [
            (path, manifest["inputs"][kind]["qualification_time"], kind in STAGGERED)
            for kind, path, status in self.inputs
            if status == STATUS_REALIZED
        ]
        previous = None
        if self.mode == "delta":
            base = read_run_record(self.run_dir).get("diff", {}).get("previous_run_id")
            previous = self.run_dir.parent / base if base else None
        write_membership(self.run_dir, previous, sent, self.lifetime)

    def _fingerprints(self) -> dict[str, dict[str, Any]]:
        """Each input's content and its lastQualificationTime (kept on resume by the ledger)."""
        now = next_qualification_time(self.lease.run_dir.parent.parent)
        return {
            kind: {**fingerprint(path), "qualification_time": now} for kind, path, _ in self.inputs
        }

    def _send(self, manifest: dict[str, Any]) -> None:
        factories = {
            kind: self._factories(manifest["inputs"][kind]["qualification_time"])
            for kind in self.kinds
        }
        sender = StreamingSender(
            self.config,
            self.send_options,
            self.tokens,
            self.stats,
            shared_bucket(
                self.config.org_id, self.send_options.rate_limit, get_settings().rate_budget_url
            ),
        )
        try:
            sender.run(self._work(factories), self._chunk_done)
        finally:
            sender.close()

    def _factories(self, when: str) -> _Factories:
        """The record factory of each published AEP audience, by audience id."""
        return {
            audience.id: RecordFactory(
                org_id=self.config.org_id,
                dataset_id=self.config.dataset_id,
                schema_id=self.config.schema_id,
                segment_namespace=self.namespace,
                audience_id=audience.id,
                qualification_time=when,
                flow_id=self.config.flow_id,
            )
            for audience in splits.published_audiences(self.spec)
        }

    def _until(self, kind: str, status: str, when: str) -> _Until | None:
        """validUntil of each realized record of ``kind`` sent at ``when`` (None: exits)."""
        if status != STATUS_REALIZED:
            return None
        sent_ms, staggered = epoch_ms(when), kind in STAGGERED
        until = self.lifetime.valid_until_ms
        return lambda ns, ident: iso_ms(until(sent_ms, ns, ident, staggered))

    def _work(
        self, factories: dict[str, _Factories]
    ) -> Iterator[tuple[_ChunkWork, list[list[Item]]]]:
        """Chunks not yet acknowledged, encoded and packed; skipped ones are never encoded."""
        for kind, path, status in self.inputs:
            until = self._until(
                kind, status, next(iter(factories[kind].values())).qualification_time
            )
            for chunk in iter_chunks(path, kind, status, self.options.chunk_size):
                if self.ledger.is_acknowledged(chunk.id):
                    continue
                self.lease.fence()  # a publisher that lost its lease stops here
                work, items = _encode(chunk, factories[kind], self.spec, until)
                requests_, oversize = pack(items, self.send_options.byte_budget, self._max_records)
                work.refused += [
                    Failure(key, None, f"record of {len(data)} bytes exceeds the request budget")
                    for key, data in oversize
                ]
                yield work, requests_

    def _chunk_done(self, work: _ChunkWork, failures: list[Failure], requests_: int) -> None:
        """Write the chunk's ledger entry (atomically) before it counts as acknowledged."""
        chunk = work.chunk
        dead = work.refused + failures
        self.ledger.acknowledge(
            {
                "chunk": chunk.id,
                "kind": chunk.kind,
                "index": chunk.index,
                "status": chunk.status,
                "records": len(chunk),
                "acknowledged": len(chunk) - len(dead) - work.held_out,
                "held_out": work.held_out,
                "dead_letters": _dead_letter_rows(chunk, dead),
                "requests": requests_,
                "session": self.session,
                "acknowledged_at": datetime.now(UTC).isoformat(timespec="milliseconds"),
            }
        )
        self.acknowledged_now["chunks"] += 1
        self.acknowledged_now["records"] += len(chunk) - len(dead) - work.held_out
        self.dead += len(dead)
        if self.dead > self.allowed_dead:
            raise DeadLetterThresholdExceeded(self._threshold_message(self.dead))

    def _threshold_message(self, dead: int) -> str:
        return (
            f"{dead} of {self.total} records were refused by AEP, more than the allowed "
            f"{self.options.max_dead_letter_share:.3%} ({self.allowed_dead}); see "
            f"{self.run_dir / DEAD_LETTERS} for each record's status and message. "
            "The snapshot must not be committed."
        )

    # -- results ----------------------------------------------------------------------------
    def _ledger_totals(self) -> dict[str, int]:
        totals = {"chunks": 0, "records": 0, "acknowledged": 0, "dead": 0, "held_out": 0}
        for entry in self.ledger.entries(self.kinds):
            totals["chunks"] += 1
            totals["records"] += entry["records"]
            totals["acknowledged"] += entry["acknowledged"]
            totals["held_out"] += entry.get("held_out", 0)
            totals["dead"] += len(entry["dead_letters"])
        return totals

    def _summary(
        self,
        started: float,
        audience: dict[str, Any] | None,
        before: dict[str, int] | None,
        status: str,
    ) -> dict[str, Any]:
        elapsed = time.monotonic() - started
        after = self._ledger_totals() if self.ledger.dir.exists() else None
        dead_path = self._write_dead_letters()
        chunk_total = sum(
            count_chunks(path, self.options.chunk_size)[1] for _, path, _ in self.inputs
        )
        aep_id = (audience or {}).get("id")
        return {
            "status": status,
            "publish_mode": "streaming",
            "mode": self.mode,
            "session": self.session,
            "records": self.total,
            "by_kind": self._by_kind(),
            "skipped": before["records"] if before else 0,
            "sent": self.stats.sent,
            "acknowledged": self.acknowledged_now["records"],
            "acknowledged_total": after["acknowledged"] if after else 0,
            "held_out": after["held_out"] if after else 0,
            "retried": self.stats.retried,
            "dead_lettered": after["dead"] if after else 0,
            "dead_letter_path": str(dead_path) if dead_path else None,
            "requests": self.stats.requests,
            "splits": self.stats.splits,
            "token_refreshes": self.stats.token_refreshes,
            "chunks": {
                "total": chunk_total,
                "acknowledged_before": before["chunks"] if before else 0,
                "acknowledged_now": self.acknowledged_now["chunks"],
                "complete": bool(after) and after["chunks"] == chunk_total,
            },
            "elapsed_s": round(elapsed, 3),
            "records_per_s": round(self.stats.sent / elapsed, 1) if elapsed > 0 else 0.0,
            "audiences": [
                {**a, "url": audience_url(self.config.org_id, self.config.sandbox, a["id"])}
                for a in self.audiences
                if a.get("id")
            ],
            "audience": {
                **(audience or {}),
                "url": audience_url(self.config.org_id, self.config.sandbox, aep_id)
                if aep_id
                else None,
            },
        }

    def _by_kind(self) -> dict[str, int]:
        """Records per input (entered, renewed, exited, ...): renewals are counted apart."""
        return {kind: count_chunks(path, 1)[0] for kind, path, _ in self.inputs}

    def _write_dead_letters(self) -> LakePath | None:
        if not self.ledger.dir.exists():
            return None
        rows = [row for entry in self.ledger.entries(self.kinds) for row in entry["dead_letters"]]
        if not rows:
            return None
        table = pa.Table.from_pylist(rows, schema=DEAD_LETTER_SCHEMA)
        return write_parquet(table, self.run_dir / DEAD_LETTERS)

    def _record(self, summary: dict[str, Any]) -> None:
        section = self.mode if self.mode in ("decommission", "repair") else "publish"
        update_run_record(self.run_dir, **{section: summary})

    def _dry_run(self) -> dict[str, Any]:
        """Encode, validate and pack everything without sending; only run.json's publish
        section is written (what would be sent, per status), no ledger, nothing to AEP."""
        started = time.monotonic()
        when = qualification_time()
        factories = self._factories(when)
        requests_ = refused = held_out = 0
        bytes_ = 0
        by_status: dict[str, dict[str, int]] = {}
        for kind, path, status in self.inputs:
            until = self._until(kind, status, when)
            counts = by_status.setdefault(status, {"records": 0, "would_send": 0})
            for chunk in iter_chunks(path, kind, status, self.options.chunk_size):
                work, items = _encode(chunk, factories, self.spec, until)
                packed, oversize = pack(items, self.send_options.byte_budget, self._max_records)
                held_out += work.held_out
                requests_ += len(packed)
                chunk_refused = len(work.refused) + len(oversize)
                refused += chunk_refused
                counts["records"] += chunk.table.num_rows
                counts["would_send"] += chunk.table.num_rows - chunk_refused
                bytes_ += sum(len(data) for _, data in items)
        summary = {
            "status": "dry_run",
            "mode": self.mode,
            "records": self.total,
            "by_kind": self._by_kind(),
            "would_send": self.total - refused - held_out,
            "held_out": held_out,
            "refused": refused,
            "requests": requests_,
            "bytes": bytes_,
            "by_status": by_status,
            "elapsed_s": round(time.monotonic() - started, 3),
        }
        self._record(summary)
        return summary


_Until = Callable[[str, str], str]


def _encode(
    chunk: Chunk, factories: _Factories, spec: Any, until: _Until | None
) -> tuple[_ChunkWork, list[Item]]:
    """Each row as a record for its split's AEP audience; held-out rows are never encoded."""
    work = _ChunkWork(chunk)
    items: list[Item] = []
    namespaces = chunk.table.column("namespace").to_pylist()
    identities = chunk.table.column("identity").to_pylist()
    names = chunk.table.column_names
    arms = chunk.table.column("split").to_pylist() if "split" in names else [None] * len(chunk)
    for key, (namespace, identity, arm) in enumerate(
        zip(namespaces, identities, arms, strict=True)
    ):
        target = splits.target_audience(spec, arm)
        if target is None:
            work.held_out += 1
            continue
        try:
            valid_until = until(namespace, identity) if until else None
            record = factories[target].encode(namespace, identity, chunk.status, valid_until)
            items.append((key, record))
        except InvalidRecord as exc:
            work.refused.append(Failure(key, None, f"invalid record: {exc}"))
    return work, items


def _dead_letter_rows(chunk: Chunk, failures: list[Failure]) -> list[dict[str, Any]]:
    if not failures:
        return []
    keys = sorted(failures, key=lambda f: f.key)
    rows = chunk.table.take([f.key for f in keys]).to_pylist()
    return [
        {
            "chunk": chunk.id,
            **row,
            "status": chunk.status,
            "status_code": failure.status_code,
            "message": failure.message,
        }
        for row, failure in zip(rows, keys, strict=True)
    ]
