"""Read-back reconciliation: does AEP hold what the committed snapshot says? (issue 12)

Reads ``segmentMembership`` back through Profile Access (bulk ``POST
/data/core/ups/access/entities``, :data:`BATCH` identities per request, at most :data:`RATE`
requests per second) for committed members and for recent exits (the exits of runs committed
in the last 30 days, which AEP may still hold), all of them or a random sample, and sorts what
differs into four kinds of drift:

- ``missing``: a committed member AEP holds no membership for;
- ``stale_status``: a committed member AEP holds as exited;
- ``expired``: a committed member whose AEP membership lapses (``validUntil``, or 30 days after
  ``lastQualificationTime``) before the snapshot's ``valid_until``: AEP drops it before the
  next renewal;
- ``unexpected``: a recent exit AEP still holds as realized.

An external audience (``publish.mode: external_audience``) is read back the same way under
the key AEP gives a custom upload's memberships: the audience's own namespace (its ``GET``;
``CustomerAudienceUpload`` by default) and AEP's audience id; only members in the spec's
identity namespace were in its files, and ``expired`` means its ``ttlInDays`` ran out. Its
repair is a full ingestion (a refresh with ``full_republish``), not ``--repair``.

Counts and a few masked examples go to the committed run's run.json (``reconcile``). With
``repair`` the exact corrections (realized for the first three kinds, exited for the last) are
written to ``runs/<run>/repairs/<id>/`` and sent through the ledger (``publish.repair_run``): a
crash mid-repair is resumed by the next ``--repair``, which then reads back again.

The dashboard's Reconcile button runs :func:`reconcile_on_request` on a worker; its progress
(queued, running, done, failed) is the audience folder's ``reconcile_request.json``.
"""

from __future__ import annotations

import time
import uuid
from collections.abc import Iterator
from dataclasses import dataclass, field, replace
from datetime import datetime, timedelta
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences import clock, snapshots, splits
from cja_audiences.adobe import external_audiences as external_api
from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.adobe.http import PlatformClient, TokenProvider
from cja_audiences.lake.layout import atomic_path, read_json, write_json, write_parquet
from cja_audiences.lake.runs import (
    EXITED,
    LEDGER_DIR,
    MEMBERS,
    MEMBERSHIP,
    REPAIR_REALIZED,
    REPAIRS,
    RUNS,
    read_run_record,
    update_run_record,
)
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.lifetime import epoch_ms, lifetime_for
from cja_audiences.publish.external import MODE as EXTERNAL_MODE
from cja_audiences.publish.external import STATE_FILE as EXTERNAL_STATE
from cja_audiences.publish.ledger import MANIFEST
from cja_audiences.publish.streaming import PublishOptions, repair_run
from cja_audiences.settings import get_settings

ENTITIES_PATH = "/data/core/ups/access/entities"
BATCH = 100  # identities per bulk lookup (Adobe documents no maximum; 100 keeps bodies small)
RATE = 10.0  # lookups per second (Profile Access answers 429 above its undocumented rate)
RECENT_EXITS = timedelta(days=30)  # AEP deletes exited memberships after 30 days
EXAMPLES = 5
KINDS = ("missing", "stale_status", "expired", "unexpected")
PENDING = "pending.json"
REQUEST = "reconcile_request.json"  # in the audience folder: the dashboard's last request
PENDING_FOR = timedelta(hours=1)
MODES = ("sample", "full")


@dataclass
class _Expected:
    """One identity to read back: what the snapshot says AEP should hold for it."""

    person_id: str
    namespace: str
    identity: str
    member: bool  # True: realized until valid_until_ms; False: a recent exit
    valid_until_ms: int | None = None


@dataclass
class Drift:
    counts: dict[str, int] = field(default_factory=lambda: dict.fromkeys(KINDS, 0))
    rows: dict[str, list[_Expected]] = field(default_factory=lambda: {k: [] for k in KINDS})

    def add(self, kind: str, expected: _Expected) -> None:
        self.counts[kind] += 1
        self.rows[kind].append(expected)

    @property
    def total(self) -> int:
        return sum(self.counts.values())

    def examples(self) -> dict[str, list[dict[str, str]]]:
        return {
            kind: [
                {
                    "person_id": e.person_id,
                    "namespace": e.namespace,
                    "identity": snapshots.mask(e.identity),
                }
                for e in rows[:EXAMPLES]
            ]
            for kind, rows in self.rows.items()
            if rows
        }


class ReconcileError(RuntimeError):
    """Reconcile cannot run (nothing committed); the message says why."""


def reconcile_audience(
    config: AdobeConfig,
    spec: Any,
    audience_dir: Path,
    *,
    mode: str = "sample",
    sample: int = 1000,
    repair: bool = False,
    options: PublishOptions | None = None,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """Check (and with ``repair`` correct) the committed run; returns what run.json records."""
    if mode not in MODES:
        raise ValueError(f"reconcile mode {mode!r} must be sample or full")
    run_dir = reconcilable(spec, audience_dir)
    published = read_run_record(run_dir).get("publish") or {}
    external = published.get("publish_mode", "streaming") == EXTERNAL_MODE
    if external and repair:
        raise ReconcileError(
            f"{audience_dir.name} is published as an external audience, whose membership AEP "
            "replaces with each full ingestion: repair it with a refresh run with "
            "full_republish=true (reconcile without --repair reports the drift)"
        )
    tokens = tokens or TokenProvider(config)
    resumed = None
    if repair:
        resumed = _resume_pending(config, spec, run_dir, options, tokens)
    started = time.monotonic()
    expected = _expected(audience_dir, run_dir, mode, sample)
    with PlatformClient(config, tokens) as client:
        if external:
            namespace, aep_id = _external_audience(client, audience_dir)
            expected = [e for e in expected if e.namespace == spec.identity.namespace]
        else:
            namespace, aep_id = config.audience_namespace(), spec.id
        drift = _compare(client, namespace, aep_id, expected)
        result: dict[str, Any] = {
            "at": clock.now().isoformat(timespec="seconds"),
            "run_id": run_dir.name,
            "mode": mode,
            "checked": {
                "members": sum(e.member for e in expected),
                "exits": sum(not e.member for e in expected),
            },
            "drift": drift.counts,
            "drifted": drift.total > 0,
            "examples": drift.examples(),
            "elapsed_s": round(time.monotonic() - started, 3),
        }
        if resumed:
            result["resumed_repair"] = resumed
        if repair and drift.total:
            result["repair"] = _repair(config, spec, run_dir, drift, options, tokens)
            after = _compare(client, namespace, aep_id, [e for r in drift.rows.values() for e in r])
            result["repair"]["remaining_drift"] = after.counts
    update_run_record(run_dir, reconcile=result)
    return result


def _external_audience(client: PlatformClient, audience_dir: Path) -> tuple[str, str]:
    """(the ``segmentMembership`` key, the audience id) of the audience's external audience:
    AEP keys a custom upload's memberships by the audience's own namespace
    (``CustomerAudienceUpload`` by default) and its id, not by the streaming namespace."""
    aep_id = (read_json(audience_dir / EXTERNAL_STATE) or {}).get("audience_id")
    if not aep_id:
        raise ReconcileError(
            f"{audience_dir.name} has no external audience id in {EXTERNAL_STATE}: publish it "
            "before reconciling"
        )
    audience = external_api.get(client, aep_id)
    return audience.get("namespace") or external_api.DEFAULT_NAMESPACE, aep_id


def reconcilable(spec: Any, audience_dir: Path) -> Path:
    """The committed run a reconcile reads back (either publishing mode);
    :class:`ReconcileError` says why none."""
    run_dir = snapshots.current_run_dir(audience_dir)
    if run_dir is None:
        raise ReconcileError(f"{audience_dir.name} has no committed run: nothing to reconcile")
    if splits.has_arms(spec):
        raise ReconcileError(
            f"{audience_dir.name} has split-test arms or a holdout: reconcile reads back one AEP "
            "audience and would count held-out or other-arm members as missing"
        )
    return run_dir


# -- on request (the dashboard's Reconcile button) --------------------------------------------
def last_request(audience_dir: Path) -> dict[str, Any] | None:
    """The last reconcile requested from the dashboard: who, how, its Airflow run, and its
    state (queued, running, done, failed), so the page can show it while a worker runs it."""
    return read_json(audience_dir / REQUEST)


def pending_request(audience_dir: Path) -> dict[str, Any] | None:
    """The last request while it is queued or running (and younger than :data:`PENDING_FOR`:
    a request whose Airflow run never started must not lock the button for ever)."""
    entry = last_request(audience_dir)
    if not entry or entry.get("state") not in ("queued", "running"):
        return None
    at = datetime.fromisoformat(entry.get("running_at") or entry["queued_at"])
    return entry if clock.now() - at < PENDING_FOR else None


def note_request(audience_dir: Path, dag_run_id: str, state: str, **fields: Any) -> dict:
    """Record a request's state; the fields of the same Airflow run are kept. ``queued`` (the
    dashboard, after triggering) never overwrites a state the worker already wrote."""
    entry = last_request(audience_dir) or {}
    if entry.get("dag_run_id") != dag_run_id:
        entry = {"dag_run_id": dag_run_id}
    elif state == "queued":
        return entry
    entry |= {**fields, "state": state, f"{state}_at": clock.now().isoformat(timespec="seconds")}
    write_json(entry, audience_dir / REQUEST)
    return entry


def reconcile_on_request(
    config: AdobeConfig,
    spec: Any,
    audience_dir: Path,
    *,
    dag_run_id: str,
    requested_by: str | None,
    mode: str = "sample",
    sample: int = 1000,
    repair: bool = False,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """:func:`reconcile_audience` for a request from the dashboard, its progress noted."""
    how = {"by": requested_by, "mode": mode, "repair": repair}
    note_request(audience_dir, dag_run_id, "running", **how)
    try:
        result = reconcile_audience(
            config, spec, audience_dir, mode=mode, sample=sample, repair=repair, tokens=tokens
        )
    except Exception as exc:
        note_request(audience_dir, dag_run_id, "failed", **how, error=str(exc))
        raise
    remaining = (result.get("repair") or {}).get("remaining_drift", result["drift"])
    note_request(
        audience_dir,
        dag_run_id,
        "done",
        **how,
        run_id=result["run_id"],
        drifted=any(remaining.values()),
    )
    return result


# -- what AEP should hold ---------------------------------------------------------------------
def _expected(audience_dir: Path, run_dir: Path, mode: str, sample: int) -> list[_Expected]:
    membership = run_dir / MEMBERSHIP
    members_path = membership if membership.exists() else run_dir / MEMBERS
    exits = _recent_exit_files(audience_dir)
    limit = "" if mode == "full" else f"USING SAMPLE {int(sample)} ROWS"
    until = "epoch_ms(valid_until)" if membership.exists() else "NULL"
    with duckdb.connect() as con:
        members = con.execute(
            f"SELECT person_id, namespace, identity, {until} FROM "
            f"(SELECT * FROM read_parquet($path) {limit}) ORDER BY person_id",
            {"path": str(members_path)},
        ).fetchall()
        gone: list[tuple[Any, ...]] = []
        if exits:
            gone = con.execute(
                f"""
                SELECT * FROM (
                    SELECT DISTINCT e.person_id, e.namespace, e.identity
                    FROM read_parquet($exits) AS e
                    ANTI JOIN read_parquet($members) AS m USING (person_id, namespace, identity)
                ) {limit} ORDER BY person_id
                """,
                {"exits": [str(p) for p in exits], "members": str(run_dir / MEMBERS)},
            ).fetchall()
    return [_Expected(p, n, i, True, u) for p, n, i, u in members] + [
        _Expected(p, n, i, False) for p, n, i in gone
    ]


def _recent_exit_files(audience_dir: Path) -> list[Path]:
    """exited.parquet of every run committed in the last 30 days (AEP may still hold them)."""
    since = clock.now() - RECENT_EXITS
    found = []
    for run in (audience_dir / RUNS).iterdir():
        commit = read_run_record(run).get("commit") if run.is_dir() else None
        path = run / EXITED
        if commit and path.exists() and datetime.fromisoformat(commit["committed_at"]) >= since:
            found.append(path)
    return sorted(found)


# -- what AEP holds ---------------------------------------------------------------------------
def _compare(
    client: PlatformClient, namespace: str, audience_id: str, expected: list[_Expected]
) -> Drift:
    drift = Drift()
    now_ms = epoch_ms(clock.now())
    for batch in _batches(expected):
        held = _lookup(client, namespace, audience_id, batch)
        for item in batch:
            entry = held.get((item.namespace.lower(), item.identity))
            kind = _kind(item, entry, now_ms)
            if kind:
                drift.add(kind, item)
    return drift


def _batches(items: list[_Expected]) -> Iterator[list[_Expected]]:
    interval = 1.0 / RATE
    last = 0.0
    for start in range(0, len(items), BATCH):
        wait = last + interval - time.monotonic()
        if wait > 0:
            time.sleep(wait)
        last = time.monotonic()
        yield items[start : start + BATCH]


def _lookup(
    client: PlatformClient, namespace: str, audience_id: str, batch: list[_Expected]
) -> dict[tuple[str, str], dict[str, Any]]:
    """(namespace lower-cased, identity) -> the audience's membership entry, where AEP has one."""
    body = client.request(
        "POST",
        ENTITIES_PATH,
        json={
            "schema": {"name": "_xdm.context.profile"},
            "fields": ["identityMap", "segmentMembership"],
            "identities": [
                {"entityId": e.identity, "entityIdNS": {"code": e.namespace}} for e in batch
            ],
        },
    )
    held: dict[tuple[str, str], dict[str, Any]] = {}
    for view in (body or {}).values():
        entry = (
            ((view.get("entity") or {}).get("segmentMembership") or {}).get(namespace) or {}
        ).get(audience_id)
        if entry is None:
            continue
        for requested in view.get("requestedIdentities") or []:
            code = (requested.get("entityIdNS") or {}).get("code", "")
            held[(code.lower(), requested.get("entityId"))] = entry
    return held


def _kind(item: _Expected, entry: dict[str, Any] | None, now_ms: int) -> str | None:
    status = (entry or {}).get("status")
    if not item.member:
        return "unexpected" if status in ("realized", "existing") else None
    if entry is None:
        return "missing"
    if status == "exited":
        return "stale_status"
    lapses = _lapses_ms(entry)
    if lapses is not None and (lapses <= now_ms or (item.valid_until_ms or 0) > lapses + 1000):
        return "expired"
    return None


def _lapses_ms(entry: dict[str, Any]) -> int | None:
    try:
        if entry.get("validUntil"):
            return epoch_ms(entry["validUntil"])
        when = entry.get("lastQualificationTime")
        return epoch_ms(when) + 30 * 86_400_000 if when else None
    except (AttributeError, ValueError):
        return None


# -- repair -----------------------------------------------------------------------------------
def _repair(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    drift: Drift,
    options: PublishOptions | None,
    tokens: TokenProvider,
) -> dict[str, Any]:
    """Write the corrections, mark them pending, send them, update the membership file."""
    repair_dir = run_dir / REPAIRS / f"{clock.now():%Y%m%dT%H%M%S}-{uuid.uuid4().hex[:6]}"
    realized = drift.rows["missing"] + drift.rows["stale_status"] + drift.rows["expired"]
    _write_members(repair_dir / REPAIR_REALIZED, realized)
    _write_members(repair_dir / EXITED, drift.rows["unexpected"])
    write_json({"repair_dir": repair_dir.name}, run_dir / REPAIRS / PENDING)
    return _finish(config, spec, run_dir, repair_dir, options, tokens)


def _resume_pending(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    options: PublishOptions | None,
    tokens: TokenProvider,
) -> dict[str, Any] | None:
    """A repair a crash interrupted: resume it from its ledger before reading back again."""
    pending = read_json(run_dir / REPAIRS / PENDING)
    if not pending:
        return None
    return _finish(
        config, spec, run_dir, run_dir / REPAIRS / pending["repair_dir"], options, tokens
    )


def _finish(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    repair_dir: Path,
    options: PublishOptions | None,
    tokens: TokenProvider,
) -> dict[str, Any]:
    started = read_json(repair_dir / LEDGER_DIR / MANIFEST)
    if started:  # resume with the chunks it was cut into, whatever this run was asked
        options = replace(options or PublishOptions(), chunk_size=started["chunk_size"])
    summary = repair_run(config, spec, repair_dir, options=options, tokens=tokens)
    manifest = read_json(repair_dir / LEDGER_DIR / MANIFEST)
    sent_at = manifest["inputs"]["repair_realized"]["qualification_time"]
    _renew_in_membership(run_dir, repair_dir / REPAIR_REALIZED, sent_at, spec)
    (run_dir / REPAIRS / PENDING).unlink(missing_ok=True)
    return {
        "repair_dir": repair_dir.name,
        "realized": pq.ParquetFile(repair_dir / REPAIR_REALIZED).metadata.num_rows,
        "exited": pq.ParquetFile(repair_dir / EXITED).metadata.num_rows,
        "acknowledged": summary["acknowledged_total"],
        "dead_lettered": summary["dead_lettered"],
        "status": summary["status"],
    }


def _write_members(path: Path, rows: list[_Expected]) -> None:
    rows = sorted(rows, key=lambda e: (e.person_id, e.namespace, e.identity))
    table = pa.table(
        {
            "person_id": [e.person_id for e in rows],
            "namespace": [e.namespace for e in rows],
            "identity": [e.identity for e in rows],
        },
        schema=MEMBER_SCHEMA,
    )
    path.parent.mkdir(parents=True, exist_ok=True)
    write_parquet(table, path)


def _renew_in_membership(run_dir: Path, realized: Path, sent_at: str, spec: Any) -> None:
    """Re-sent members now hold the full TTL from the repair: record it in the snapshot."""
    membership = run_dir / MEMBERSHIP
    if not membership.exists() or pq.ParquetFile(realized).metadata.num_rows == 0:
        return
    ttl_ms = int(lifetime_for(spec, get_settings()).ttl.total_seconds()) * 1000
    sent_ms = epoch_ms(sent_at)
    with duckdb.connect() as con, atomic_path(membership) as tmp:
        con.execute(
            """
            COPY (
                SELECT m.person_id, m.namespace, m.identity,
                       CASE WHEN r.person_id IS NULL THEN m.valid_until
                            ELSE to_timestamp($until / 1000.0) END AS valid_until,
                       CASE WHEN r.person_id IS NULL THEN m.last_sent
                            ELSE to_timestamp($sent / 1000.0) END AS last_sent
                FROM read_parquet($membership) AS m
                LEFT JOIN read_parquet($realized) AS r USING (person_id, namespace, identity)
                ORDER BY m.person_id, m.namespace, m.identity
            ) TO $out (FORMAT parquet, COMPRESSION zstd)
            """,
            {
                "membership": str(membership),
                "realized": str(realized),
                "until": sent_ms + ttl_ms,
                "sent": sent_ms,
                "out": str(tmp),
            },
        )
