"""Admin and inspection routes under ``/_emulator/`` (no Adobe counterpart, no auth).

They let tests and demos reset state, switch faults, read counters, inspect an audience's
membership, and seed what Adobe would hold (catalog batches, CJA segments, the CJA lake).
"""

from __future__ import annotations

import gc
import io
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

import pyarrow as pa
import pyarrow.parquet as pq
from fastapi import APIRouter, Request
from pydantic import ValidationError
from pydantic_core import from_json, to_json
from starlette.responses import Response

from emulator import errors, external_audiences
from emulator.audiences import audience_counts
from emulator.catalog import STATUSES, add_batch, seal_batches
from emulator.cja_segments import new_segment
from emulator.faults import Faults
from emulator.profiles import iso_ms
from emulator.state import State

router = APIRouter(prefix="/_emulator")
MEMBER_FIELDS = ("namespace", "identity", "status", "last_qualification_time", "valid_until")
TAMPER_ACTIONS = ("delete", "flip", "expire", "add")


def _bad(detail: str) -> errors.AdobeHTTPError:
    return errors.AdobeHTTPError(400, {"error": "bad_request", "detail": detail})


async def _body(request: Request) -> dict[str, Any]:
    raw = await request.body()
    if not raw:
        return {}
    try:
        body = from_json(raw)
    except ValueError as exc:
        raise _bad(f"body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("body must be a JSON object")
    return body


def _state(request: Request) -> State:
    return request.app.state.emulator


def _faults(request: Request) -> Faults:
    return request.app.state.faults


@router.get("/health")
async def health() -> Response:
    return errors.json_response({"status": "ok"})


@router.get("/config")
async def config(request: Request) -> Response:
    """The flat summary (ids, demo credentials) plus the full configuration."""
    state = _state(request)
    return errors.json_response(
        {
            "summary": state.config.summary(),
            "config": state.config.model_dump(by_alias=True),
            "lake": state.lake,
        }
    )


@router.post("/reset")
async def reset(request: Request) -> Response:
    """Forget all state (audiences, profiles, tokens, batches, segments, stats) and faults."""
    _state(request).reset()
    gc.unfreeze()  # let the collector see (and free) whatever the old state left behind
    _faults(request).clear()
    request.app.state.sync_windows.clear()
    request.app.state.cja_limits.clear()
    request.app.state.report_cache.clear()
    return errors.json_response({"reset": True})


@router.get("/faults")
async def get_faults(request: Request) -> Response:
    return errors.json_response(_faults(request).describe())


@router.post("/faults")
async def set_faults(request: Request) -> Response:
    """Merge the given modes into the active ones (see :class:`FaultModes`)."""
    try:
        return errors.json_response(_faults(request).update(await _body(request)))
    except ValidationError as exc:
        raise _bad(f"unknown or invalid fault mode: {exc}") from exc


@router.delete("/faults")
async def clear_faults(request: Request) -> Response:
    _faults(request).clear()
    return errors.json_response(_faults(request).describe())


@router.get("/stats")
async def stats(request: Request) -> Response:
    state = _state(request)
    body = state.stats.as_dict()
    body["audiences"] = audience_counts(state)
    body["profiles"] = {sbx: store.profile_count for sbx, store in state.profiles.items()}
    body["journal_pending"] = len(state.journal_buffer)
    return errors.json_response(body)


def _members(state: State, audience_id: str, namespace: str, sandbox: str) -> list[dict[str, Any]]:
    """Memberships that have not lapsed by the emulator's clock."""
    external = external_audiences.members(state, sandbox, audience_id)
    if external is not None:
        return external
    store = state.profiles.get(sandbox)
    if store is None:
        return []
    return [
        {
            "namespace": profile.code,
            "identity": profile.ident,
            "status": entry["status"],
            "last_qualification_time": entry["lastQualificationTime"],
            "valid_until": entry.get("validUntil"),
        }
        for profile, entry in store.audience_members(namespace, audience_id, state.now())
    ]


def _identities(
    state: State, audience_id: str, namespace: str, sandbox: str, status: str | None
) -> Response:
    store = state.profiles.get(sandbox)
    found = store.audience_members(namespace, audience_id, state.now()) if store else iter(())
    table = pa.table(
        {"identity": [p.ident for p, entry in found if not status or entry["status"] == status]}
    )
    sink = io.BytesIO()
    pq.write_table(table, sink)
    return Response(sink.getvalue(), media_type="application/vnd.apache.parquet")


@router.get("/membership/{audience_id}")
async def membership(audience_id: str, request: Request) -> Response:
    """Who holds ``segmentMembership.<namespace>.<audience_id>``: JSON, JSON lines or Parquet."""
    state = _state(request)
    params = request.query_params
    namespace = params.get("namespace", state.config.defaults.segment_namespace)
    sandbox = params.get("sandbox", state.config.defaults.sandbox)
    status = params.get("status")
    if params.get("format") == "identities":  # one Parquet column, fast at millions
        return _identities(state, audience_id, namespace, sandbox, status)
    members = _members(state, audience_id, namespace, sandbox)
    if status:
        members = [m for m in members if m["status"] == status]
    fmt = params.get("format", "json")
    if fmt == "jsonl":
        lines = b"".join(to_json(m) + b"\n" for m in members)
        return Response(lines, media_type="application/x-ndjson")
    if fmt == "parquet":
        table = pa.Table.from_pylist(
            members, schema=pa.schema([(f, pa.string()) for f in MEMBER_FIELDS])
        )
        sink = io.BytesIO()
        pq.write_table(table, sink)
        return Response(sink.getvalue(), media_type="application/vnd.apache.parquet")
    if fmt != "json":
        raise _bad(f"format {fmt!r} must be json, jsonl, parquet or identities")
    by_status: dict[str, int] = {}
    for m in members:
        by_status[m["status"]] = by_status.get(m["status"], 0) + 1
    body: dict[str, Any] = {
        "audience_id": audience_id,
        "namespace": namespace,
        "sandbox": sandbox,
        "count": len(members),
        "by_status": by_status,
    }
    if params.get("count_only", "false").lower() != "true":
        body["members"] = members
    return errors.json_response(body)


@router.post("/base-connections")
async def add_base_connection(request: Request) -> Response:
    """Register a cloud-storage base connection External Audiences files are read from: a
    folder on this machine (``{"id", "root", "sandbox"?}``) or an S3 account as Adobe's S3
    source takes it (``{"id", "auth": {"params": {"s3AccessKey", "s3SecretKey",
    "serviceUrl"?}}, "sandbox"?}``)."""
    state = _state(request)
    body = await _body(request)
    s3 = (body.get("auth") or {}).get("params")
    if not body.get("id") or not (body.get("root") or s3):
        raise _bad("a base connection needs an id and a root folder or S3 auth.params")
    sandbox = body.get("sandbox", state.config.defaults.sandbox)
    connection = external_audiences.register_connection(
        state, sandbox, body["id"], body.get("root"), s3
    )
    return errors.json_response(connection, 201)


@router.post("/catalog/batches")
async def seed_batch(request: Request) -> Response:
    """Add a Catalog batch (default: a successful one on the dataset behind CJA)."""
    state = _state(request)
    body = await _body(request)
    dataset_id = body.get("datasetId", state.config.cja.dataset_id)
    if dataset_id not in state.datasets:
        raise _bad(f"datasetId {dataset_id!r} is not a configured dataset")
    status = body.get("status", "success")
    if status not in STATUSES:
        raise _bad(f"status {status!r} must be one of {', '.join(STATUSES)}")
    records = body.get("records", 0)
    created = body.get("created")
    if not isinstance(records, int) or (created is not None and not isinstance(created, int)):
        raise _bad("records and created (epoch ms) must be integers")
    batch = add_batch(state, dataset_id, status=status, records=records, created_ms=created)
    return errors.json_response(batch, status=201)


@router.post("/catalog/seal")
async def seal(request: Request) -> Response:
    """Close every open streaming batch now instead of after the batch window."""
    return errors.json_response({"sealed": seal_batches(_state(request), force=True)})


@router.post("/flush")
async def flush(request: Request) -> Response:
    """Write buffered journal entries to DuckDB now (normally done every half second)."""
    state = _state(request)
    entries = state.take_journal()
    state.persistence.append_journal(entries, state.persistence.generation)
    return errors.json_response({"flushed": len(entries)})


@router.post("/cja/lake")
async def set_lake(request: Request) -> Response:
    """Point CJA /reports at a lake root (the folder holding lake/events), or at none."""
    state = _state(request)
    path = (await _body(request)).get("path")
    if path is not None and not Path(path).is_dir():
        raise _bad(f"lake path {path!r} is not a folder")
    state.lake = path
    request.app.state.report_cache.clear()
    return errors.json_response({"lake": state.lake})


@router.post("/cja/dataview")
async def set_data_view(request: Request) -> Response:
    """Change the data view's ``timezone`` (IANA name) or ``person_dimension`` (component id)."""
    state = _state(request)
    body = await _body(request)
    unknown = set(body) - {"timezone", "person_dimension"}
    if unknown:
        raise _bad(f"unknown data view settings {sorted(unknown)}: use timezone, person_dimension")
    if "timezone" in body:
        try:
            ZoneInfo(str(body["timezone"]))
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise _bad(f"timezone {body['timezone']!r} is not an IANA time zone") from exc
        state.timezone = str(body["timezone"])
    if body.get("person_dimension"):
        state.person_dimension = str(body["person_dimension"])
    request.app.state.report_cache.clear()
    return errors.json_response(
        {"timezone": state.timezone, "person_dimension": state.person_dimension}
    )


@router.post("/cja/segments")
async def seed_segment(request: Request) -> Response:
    """Store a CJA segment (name, definition, optional id/dataId/description)."""
    segment = new_segment(_state(request), await _body(request), owner="emulator-admin")
    return errors.json_response(segment, status=201)


@router.get("/clock")
async def get_clock(request: Request) -> Response:
    state = _state(request)
    return errors.json_response({"now": iso_ms(state.now()), "offset_s": state.clock_offset_s})


@router.post("/clock")
async def move_clock(request: Request) -> Response:
    """Move the clock forward by ``days`` and/or ``seconds``; lapsed memberships are deleted."""
    state = _state(request)
    body = await _body(request)
    try:
        seconds = float(body.get("days", 0)) * 86400 + float(body.get("seconds", 0))
        lapsed = state.advance(seconds)
    except (TypeError, ValueError) as exc:
        raise _bad(f"clock: give days and/or seconds, zero or more ({exc})") from exc
    return errors.json_response(
        {"now": iso_ms(state.now()), "offset_s": state.clock_offset_s, "lapsed": lapsed}
    )


@router.post("/membership/{audience_id}/tamper")
async def tamper(audience_id: str, request: Request) -> Response:
    """Drift on purpose: ``{"changes": [{"action", "namespace", "identity"}], "namespace"?,
    "sandbox"?}`` with action delete, flip (realized <-> exited), expire (validUntil in an
    hour) or add (realized, unknown to the publisher). Not journaled: a restart forgets it
    unless the stores are checkpointed after it (see :meth:`State.checkpoint`)."""
    state = _state(request)
    body = await _body(request)
    namespace = body.get("namespace", state.config.defaults.segment_namespace)
    sandbox = body.get("sandbox", state.config.defaults.sandbox)
    store = state.profiles[sandbox]
    external = external_audiences.tamperer(state, sandbox, audience_id)
    changes = body.get("changes")
    if not isinstance(changes, list) or not changes:
        raise _bad('changes must be a non-empty list of {"action", "namespace", "identity"}')
    done = 0
    for change in changes:
        action = change.get("action") if isinstance(change, dict) else None
        if action not in TAMPER_ACTIONS:
            raise _bad(f"change {change!r}: action must be one of {', '.join(TAMPER_ACTIONS)}")
        code, ident = change.get("namespace"), change.get("identity")
        if not isinstance(code, str) or not isinstance(ident, str):
            raise _bad(f"change {change!r} needs the member's namespace and identity")
        if external is not None:  # an external audience's members: delete or add only
            done += external(action, code, ident)
        else:
            done += store.tamper(namespace, audience_id, code, ident, action, state.now())
    return errors.json_response({"changed": done, "requested": len(changes)})


@router.post("/org")
async def org_switches(request: Request) -> Response:
    """Turn org-level entitlements on or off (``external_segments``, ``abac_write``)."""
    state = _state(request)
    body = await _body(request)
    try:
        state.org = state.org.model_validate({**state.org.model_dump(), **body})
    except ValidationError as exc:
        raise _bad(f"org switches: {exc}") from exc
    return errors.json_response(state.org.model_dump())
