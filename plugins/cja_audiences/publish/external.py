"""Publishing through AEP's External Audiences API: a file per refresh, one ingestion run.

Each refresh writes one CSV file (``identity`` in the audience's namespace, ``delete`` = 1
for exits) into the audience's folder behind the AEP cloud-storage base connection, then
starts an ingestion run over exactly that file (its modification time is the run's
``dataFilterStartTime``) and polls it. A refresh is differential (entries and exits only)
when AEP last ingested the committed snapshot; otherwise (first publish, full republish, an
abandoned run in between) it is a full ingestion of the members, which replaces what AEP
holds. AEP expires the data ``ttlInDays`` after the last ingestion, so no renewals are sent.

Crash safety: the audience folder's ``external_audience.json`` keeps AEP's operation and
audience ids, the run folder's ``external_run.json`` the file and the ingestion run, each
written before the next call, so a rerun polls what was started instead of starting it again.
"""

from __future__ import annotations

import math
import os
import time
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow.csv as pacsv

from cja_audiences.adobe import external_audiences as api
from cja_audiences.adobe.audiences import display_name
from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.adobe.http import PlatformClient, PlatformError, TokenProvider
from cja_audiences.lake.layout import atomic_path, read_json, write_json
from cja_audiences.lake.runs import CURRENT, ENTERED, EXITED, MEMBERS, update_run_record
from cja_audiences.lake.storage import (
    LakePath,
    connect,
    is_remote,
    lake_path,
    makedirs,
    modified_times,
    parquet_file,
    parquet_rows,
)
from cja_audiences.specs.model import HOLDOUT

STATE_FILE = "external_audience.json"  # in the audience folder
RUN_LEDGER = "external_run.json"  # in the run folder
MODE = "external_audience"
UPLOAD_ATTEMPTS = 3


class ExternalAudienceError(RuntimeError):
    """The external audience could not be created or ingested; the message says why."""


@dataclass(frozen=True)
class PollPolicy:
    """How AEP's operations and runs are awaited: waits double up to ``max_wait_s``."""

    first_wait_s: float = 2.0
    max_wait_s: float = 60.0
    timeout_s: float = 6 * 3600.0


def publish_external(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    *,
    full_republish: bool = False,
    dry_run: bool = False,
    decommission: bool = False,
    poll: PollPolicy | None = None,
    tokens: TokenProvider | None = None,
) -> dict[str, Any]:
    """Publish ``run_dir`` as an external audience; returns (and records) the summary."""
    if getattr(spec, "splits", None) and spec.publish_splits == "separate":
        raise ExternalAudienceError(
            f"audience {spec.id} has splits published as separate audiences, which only the "
            "streaming mode supports; set publish_splits: combined (one external audience, "
            "the holdout left out) or publish.mode: streaming"
        )
    job = _External(config, spec, lake_path(run_dir), poll or PollPolicy(), tokens)
    if decommission:
        return job.decommission(dry_run)
    return job.publish(full_republish, dry_run)


class _External:
    def __init__(
        self,
        config: AdobeConfig,
        spec: Any,
        run_dir: Path,
        poll: PollPolicy,
        tokens: TokenProvider | None,
    ) -> None:
        self.config, self.spec, self.run_dir, self.poll = config, spec, run_dir, poll
        self.tokens = tokens or TokenProvider(config)
        self.audience_dir = run_dir.parent.parent
        self.state_path = self.audience_dir / STATE_FILE
        self.ledger_path = run_dir / RUN_LEDGER

    # -- the whole publish ------------------------------------------------------------------
    def publish(self, full_republish: bool, dry_run: bool) -> dict[str, Any]:
        started = time.monotonic()
        state = read_json(self.state_path, {})
        ledger = read_json(self.ledger_path)  # a retry keeps what the first attempt chose
        differential = (
            ledger["differential"]
            if ledger
            else not full_republish and self._aep_holds_the_snapshot(state)
        )
        rows = self._rows(differential)
        location, source_path = self._location()  # a dry run checks the connection too
        if dry_run:
            plan = {
                "status": "dry_run",
                "publish_mode": MODE,
                "differential": differential,
                "file": f"{self.run_dir.name}.csv",
                "location": str(location),
            }
            return update_run_record(self.run_dir, publish={**plan, **rows})["publish"]
        summary: dict[str, Any] = {"publish_mode": MODE, "differential": differential, **rows}
        try:
            with PlatformClient(self.config, self.tokens) as client:
                audience_id = self._ensure_audience(client, state, source_path)
                ledger = self._write_file(location, differential)
                run = self._ingest(client, audience_id, ledger)
            summary.update(
                status="ok",
                audience={"id": audience_id, "name": display_name(self.spec)},
                file=ledger["file"],
                run_id=run["runId"],
                run_status=run["status"],
            )
        except BaseException as exc:
            summary.update(status="failed", error=f"{type(exc).__name__}: {exc}")
            update_run_record(self.run_dir, publish=self._timed(summary, started))
            raise
        return update_run_record(self.run_dir, publish=self._timed(summary, started))["publish"]

    def decommission(self, dry_run: bool) -> dict[str, Any]:
        """Delete the external audience in AEP (its memberships go with it)."""
        state = read_json(self.state_path, {})
        summary: dict[str, Any] = {
            "status": "dry_run" if dry_run else "ok",
            "publish_mode": MODE,
            "audience": {"id": state.get("audience_id"), "action": "delete"},
        }
        if not dry_run and state.get("audience_id"):
            with PlatformClient(self.config, self.tokens) as client:
                api.delete(client, state["audience_id"])
            write_json({"deleted_at": datetime.now(UTC).isoformat()}, self.state_path)
        return update_run_record(self.run_dir, decommission=summary)["decommission"]

    def _timed(self, summary: dict[str, Any], started: float) -> dict[str, Any]:
        return {**summary, "elapsed_s": round(time.monotonic() - started, 3)}

    # -- what to send -----------------------------------------------------------------------
    def _aep_holds_the_snapshot(self, state: dict[str, Any]) -> bool:
        """AEP's last ingestion was the committed run, so the diff applies on top of it.
        ``last_run`` is written before a run is started: a run that started and was never
        committed (abandoned, failed, killed mid-poll) makes the next one full."""
        current = read_json(self.audience_dir / CURRENT)
        return bool(
            current and state.get("audience_id") and state.get("last_run") == current["run_id"]
        )

    def _rows(self, differential: bool) -> dict[str, int]:
        if differential:
            entered, exited = _rows(self.run_dir / ENTERED), _rows(self.run_dir / EXITED)
            return {"records": entered + exited, "entered": entered, "exited": exited}
        members = _rows(self.run_dir / MEMBERS)
        return {"records": members, "entered": members, "exited": 0}

    def _location(self) -> tuple[LakePath, str]:
        """(the folder we write, the same folder as AEP's base connection sees it): a local
        or mounted folder, or object storage (``s3://bucket/prefix``) through the lake's
        storage layer (``CJA_AUDIENCES_STORAGE_OPTIONS``)."""
        missing = [
            name
            for name in ("external_base_connection_id", "external_location")
            if not getattr(self.config, name)
        ]
        if missing:
            raise ExternalAudienceError(
                f"audience {self.spec.id} publishes as an external audience, but the AEP "
                f"connection's extra has no {' or '.join(missing)}: set "
                "external_base_connection_id to the id of the cloud-storage source's base "
                "connection in AEP (Sources > Accounts) and external_location to the folder "
                "it reads (external_source_path: the same folder as that connection names it)"
            )
        folder = lake_path(self.config.external_location) / self.spec.id  # type: ignore[arg-type]
        source = "/".join(
            p for p in (self.config.external_source_path.strip("/"), self.spec.id) if p
        )
        return folder, source

    def _write_file(self, folder: LakePath, differential: bool) -> dict[str, Any]:
        """The run's CSV, written once, and the whole second that selects it, and only it,
        for the ingestion run (its ``dataFilterStartTime``)."""
        ledger = read_json(self.ledger_path)
        if ledger and lake_path(ledger["path"]).exists():
            return ledger
        path = folder / f"{self.run_dir.name}.csv"
        makedirs(folder)
        stamp = self._place(folder, path, differential)
        ledger = {
            "path": str(path),
            "file": path.name,
            "start": stamp,
            "differential": differential,
        }
        write_json(ledger, self.ledger_path)
        return ledger

    def _place(self, folder: LakePath, path: LakePath, differential: bool) -> int:
        """Write ``path``; its time must be at or after the returned second and every earlier
        file's before it. A local file's mtime is set to that second. Object storage sets
        an object's ``LastModified`` itself at upload, which is what AEP's cloud-storage
        sources select files by ("files loaded prior to the start time will not be
        ingested"), so the start is the upload's second; an upload that landed in the same
        second as an earlier file is repeated in the next one."""
        for _ in range(UPLOAD_ATTEMPTS):
            with atomic_path(path) as tmp:
                _write_csv(self.run_dir, tmp, self.spec.identity.namespace, differential)
            times = modified_times(folder)
            earlier = [math.floor(t) for name, t in times.items() if _is_file(name, path.name)]
            after = max(earlier, default=-1) + 1
            if not is_remote(path):
                stamp = max(math.floor(time.time()), after)
                os.utime(path, (stamp, stamp))
                return stamp
            stamp = math.floor(times[path.name])
            if stamp >= after:
                return stamp
            time.sleep(1.0)
        raise ExternalAudienceError(
            f"{path} keeps landing in the same second as an earlier file of the audience "
            f"(LastModified {stamp}); AEP's run could not tell them apart. Check the storage "
            "server's clock and rerun"
        )

    # -- AEP --------------------------------------------------------------------------------
    def _ensure_audience(self, client: PlatformClient, state: dict[str, Any], path: str) -> str:
        """AEP's audience id: created once (operation id kept), updated when the spec moved."""
        if not state.get("audience_id"):
            if not state.get("operation_id"):
                state = self._create(client, path)
            found = self._await(lambda: api.operation(client, state["operation_id"]), "creation")
            state = {**state, "audience_id": found["audienceId"]}
            write_json(state, self.state_path)
        wanted = {"description": self.spec.description, "ttlInDays": self.spec.publish.ttl_days}
        if {k: state.get(k) for k in wanted} != wanted:
            api.update(client, state["audience_id"], wanted)
            write_json({**state, **wanted}, self.state_path)
        return state["audience_id"]

    def _create(self, client: PlatformClient, path: str) -> dict[str, Any]:
        body = api.create_request(
            name=display_name(self.spec),
            description=self.spec.description,
            namespace=self.spec.identity.namespace,
            path=path,
            base_connection_id=self.config.external_base_connection_id or "",
            ttl_days=self.spec.publish.ttl_days,
        )
        try:
            operation_id = api.create(client, body)
        except PlatformError as exc:
            if exc.status == 409:
                raise ExternalAudienceError(
                    f"AEP already holds an external audience named {body['name']!r} that this "
                    f"lake has no record of (a crash right after creating it?). Find its id in "
                    f'AEP\'s Audience Portal and write {{"audience_id": "<id>"}} to '
                    f"{self.state_path}, then rerun"
                ) from None
            raise
        state = {
            "operation_id": operation_id,
            "description": self.spec.description,
            "ttlInDays": self.spec.publish.ttl_days,
        }
        write_json(state, self.state_path)
        return state

    def _ingest(self, client: PlatformClient, audience_id: str, ledger: dict[str, Any]) -> dict:
        """Start the run once (adopting one a crash left unrecorded), then poll it."""
        run_id = ledger.get("run_id") or self._adopt(client, audience_id, ledger["start"])
        if run_id is None:
            # From here AEP may apply this file, committed or not: a later run that finds
            # another run than the committed one here ingests in full (_aep_holds_the_snapshot).
            write_json(
                {**read_json(self.state_path, {}), "last_run": self.run_dir.name}, self.state_path
            )
            self._await_idle(client, audience_id)
            run = api.start_run(
                client, audience_id, start=ledger["start"], differential=ledger["differential"]
            )
            run_id = run["runId"]
            write_json({**ledger, "run_id": run_id}, self.ledger_path)
        run = self._await(lambda: api.get_run(client, audience_id, run_id), "ingestion run")
        if run["status"] != "SUCCESS":
            write_json({**ledger, "run_id": None, "failed_run_id": run_id}, self.ledger_path)
            raise ExternalAudienceError(
                f"AEP's ingestion run {run_id} of {ledger['file']} ended {run['status']}: "
                f"{run.get('error') or run.get('details')}; a retry starts a new run"
            )
        return run

    def _await_idle(self, client: PlatformClient, audience_id: str) -> None:
        """AEP refuses a run while another is in progress (one an abandoned publish started):
        wait for it to end, since a full run must be applied after it."""
        self._await(
            lambda: {
                "status": "PROCESSING"
                if any(r.get("status") == "PROCESSING" for r in api.list_runs(client, audience_id))
                else "SUCCESS"
            },
            "earlier ingestion run",
        )

    @staticmethod
    def _adopt(client: PlatformClient, audience_id: str, start: int) -> str | None:
        """A run started for this file before a crash kept its id."""
        for run in api.list_runs(client, audience_id):
            if run.get("dataFilterStartTime") == start and run.get("status") != "FAILED":
                return run["runId"]
        return None

    def _await(self, fetch: Any, what: str) -> dict[str, Any]:
        deadline = time.monotonic() + self.poll.timeout_s
        wait = self.poll.first_wait_s
        while True:
            answer = fetch()
            if answer.get("status") in ("SUCCESS", "FAILED"):
                if what == "creation" and answer["status"] == "FAILED":
                    raise ExternalAudienceError(f"AEP could not create the audience: {answer}")
                return answer
            if time.monotonic() + wait > deadline:
                raise ExternalAudienceError(
                    f"AEP's {what} is still {answer.get('status')} after "
                    f"{self.poll.timeout_s:.0f} s; rerun to keep waiting (nothing is started twice)"
                )
            time.sleep(wait)
            wait = min(wait * 2, self.poll.max_wait_s)


def _is_file(name: str, other_than: str) -> bool:
    """A membership file of the audience other than ``other_than`` (not a temporary one)."""
    return name.endswith(".csv") and not name.startswith(".") and name != other_than


def _rows(path: LakePath) -> int:
    return parquet_rows(path) if path.exists() else 0


def _write_csv(run_dir: LakePath, target: Path, namespace: str, differential: bool) -> None:
    """identity,delete rows in the audience's namespace, streamed from the run's Parquet;
    a split test's holdout rows are never published."""

    def rows(name: str, delete: int) -> str:
        held_out = "split" in parquet_file(run_dir / name).schema_arrow.names
        where = " AND split IS DISTINCT FROM $holdout" if held_out else ""
        return (
            f"SELECT identity, {delete} AS delete FROM read_parquet(${name.split('.')[0]}) "
            f"WHERE namespace = $ns{where}"
        )

    if differential:
        query = f"{rows(ENTERED, 0)} UNION ALL {rows(EXITED, 1)}"
        params = {"entered": str(run_dir / ENTERED), "exited": str(run_dir / EXITED)}
    else:
        query = rows(MEMBERS, 0)
        params = {"members": str(run_dir / MEMBERS)}
    con = connect(run_dir)
    try:
        if "$holdout" in query:
            params["holdout"] = HOLDOUT
        batches = con.sql(query, params={**params, "ns": namespace}).to_arrow_reader()
        with pacsv.CSVWriter(str(target), batches.schema) as writer:
            for batch in batches:
                writer.write_batch(batch)
    finally:
        con.close()
