"""AEP's External Audiences API (``/data/core/ais/external-audience``): file-based audiences.

What Adobe documents (help/segmentation/api/external-audiences.md and
help/segmentation/tutorials/create-external-audience.md): create an audience with its fields
and a ``sourceSpec`` naming a file or folder behind a cloud-storage base connection; poll the
operation for the audience id; start ingestion runs (``dataFilterStartTime`` /
``dataFilterEndTime`` select the files by time, ``differentialIngestion`` applies the
difference since the last ingestion instead of replacing the audience); poll each run;
``ttlInDays`` (1-90, default 30) is the audience's data expiration.

What we infer (emulator/README.md): a file is selected when its modification time falls in
``[dataFilterStartTime, dataFilterEndTime]`` (epoch seconds); a row whose ``delete`` field is
1 removes its identity (Adobe's examples carry a numeric ``delete`` field); a full run
replaces the membership with the selected files' rows; the membership lapses when no run
has succeeded for ``ttlInDays``. Base connections are folders on this machine or S3 accounts
(an S3-compatible server, its ``serviceUrl``), registered through
``POST /_emulator/base-connections``; an S3 file is selected by its ``LastModified``, which
the server sets at upload (Adobe's sources: "files loaded prior to the start time will not be
ingested").
"""

from __future__ import annotations

import csv
import functools
import io
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any, TextIO

from fastapi import APIRouter, Request
from pydantic_core import from_json
from starlette.responses import Response

from emulator import errors
from emulator.auth import check_platform
from emulator.profiles import iso_ms
from emulator.state import State

router = APIRouter()
PREFIX = "/data/core/ais/external-audience"
KIND = "external_audience"
CONNECTION_KIND = "base_connection"
FIELD_TYPES = {"string", "number", "long", "integer", "date", "datetime", "boolean"}
DAY_S = 86_400


def _error(status: int, code: str, message: str, detail: str) -> errors.AdobeHTTPError:
    """The External Audiences API's errors (its appendix: 1009xx-<status> codes)."""
    return errors.AdobeHTTPError(
        status,
        {
            "type": f"https://ns.adobe.com/aep/errors/{code}",
            "status": status,
            "title": message,
            "detail": detail,
        },
    )


def _bad(detail: str) -> errors.AdobeHTTPError:
    return _error(400, "100910-400", "BAD_REQUEST", detail)


def _state(request: Request) -> State:
    return request.app.state.emulator


async def _json(request: Request) -> dict[str, Any]:
    try:
        body = from_json(await request.body() or b"{}")
    except ValueError as exc:
        raise _bad(f"the request body is not JSON: {exc}") from None
    if not isinstance(body, dict):
        raise _bad("the request body must be a JSON object")
    return body


def _now(state: State) -> float:
    """The emulator's clock (seconds since the epoch; ``/_emulator/clock`` moves it)."""
    return state.now()


# -- base connections (Flow Service) -------------------------------------------------------
S3_SPEC = "ecadc60c-7455-4d87-84dc-2a0e293d997b"  # Amazon S3's connection spec id
S3_PARAMS = ("s3AccessKey", "s3SecretKey")


def register_connection(
    state: State,
    sandbox: str,
    connection_id: str,
    root: str | None = None,
    s3: dict[str, str] | None = None,
) -> dict[str, Any]:
    """A folder on this machine (``root``), or an S3 account as Adobe's S3 source takes it
    (``auth.params``: ``s3AccessKey``, ``s3SecretKey``, optional ``serviceUrl``): then a
    ``sourceSpec.path`` is ``<bucket>/<key prefix>``."""
    if s3 is not None:
        missing = [name for name in S3_PARAMS if not s3.get(name)]
        if missing:
            raise _bad(f"an S3 base connection needs auth.params {', '.join(missing)}")
        body = {
            "id": connection_id,
            "name": f"Amazon S3 at {s3.get('serviceUrl', 'AWS')}",
            "connectionSpec": {"id": S3_SPEC, "version": "1.0"},
            "state": "enabled",
            "auth": {"specName": "Access Key", "params": dict(s3)},
        }
    else:
        body = {
            "id": connection_id,
            "name": f"cloud storage at {root}",
            "connectionSpec": {"id": "emulator-local-folder", "version": "1.0"},
            "state": "enabled",
            "root": root,
        }
    state.put(CONNECTION_KIND, sandbox, connection_id, body)
    return body


def _connection(state: State, sandbox: str, connection_id: str) -> dict[str, Any] | None:
    return state.resources[CONNECTION_KIND][sandbox].get(connection_id)


@router.get("/data/foundation/flowservice/connections/{connection_id}")
async def get_connection(connection_id: str, request: Request) -> Response:
    caller = check_platform(request)
    found = _connection(_state(request), caller.sandbox.name, connection_id)
    if found is None:
        raise errors.platform(404, "Not Found", f"connection {connection_id} not found", "FLOW")
    public = {k: v for k, v in found.items() if k not in ("root", "auth")}  # no secrets
    return errors.json_response({"items": [public]})


# -- audiences -----------------------------------------------------------------------------
def _validate(state: State, sandbox: str, body: dict[str, Any]) -> dict[str, Any]:
    """The create request, checked as Adobe documents it; returns the stored audience."""
    for name in ("name", "fields", "sourceSpec", "originName"):
        if name not in body:
            raise _bad(f"{name} is required")
    if body["originName"] != "CUSTOM_UPLOAD":
        raise _bad("originName must be CUSTOM_UPLOAD for external audiences")
    if body.get("audienceType", "people") != "people":
        raise _bad("audienceType: only 'people' is supported")
    fields = body["fields"]
    if not isinstance(fields, list) or not fields:
        raise _bad("fields must be a non-empty array")
    for f in fields:
        if not isinstance(f, dict) or "name" not in f or f.get("type") not in FIELD_TYPES:
            raise _bad(f"each field needs a name and a type in {sorted(FIELD_TYPES)}: {f}")
    if not any(f.get("identityNs") for f in fields):
        raise _bad("at least one field must carry identityNs (the identity column)")
    spec = body["sourceSpec"]
    params = spec.get("params", spec) if isinstance(spec, dict) else {}  # both forms documented
    for name in ("path", "type", "sourceType", "baseConnectionId"):
        if not params.get(name):
            raise _bad(f"sourceSpec.params.{name} is required")
    if params["type"] not in ("file", "folder"):
        raise _bad("sourceSpec.params.type must be file or folder")
    if " " in params["path"]:
        raise _bad("sourceSpec.params.path cannot contain spaces")
    if _connection(state, sandbox, params["baseConnectionId"]) is None:
        raise _error(
            422,
            "100960-422",
            "UNPROCESSABLE_ENTITY",
            f"base connection {params['baseConnectionId']} does not exist in this sandbox",
        )
    ttl = _ttl(body.get("ttlInDays", 30))
    return {
        "name": body["name"],
        "description": body.get("description", ""),
        "fields": fields,
        "sourceSpec": {"params": params},
        "ttlInDays": ttl,
        "labels": body.get("labels", []),
        "audienceType": "people",
        "originName": "CUSTOM_UPLOAD",
        "namespace": body.get("namespace", "CustomerAudienceUpload"),
    }


def _ttl(value: Any) -> int:
    try:
        ttl = int(value)  # Adobe's examples send "40" as a string
    except (TypeError, ValueError):
        raise _bad(f"ttlInDays must be a whole number of days, got {value!r}") from None
    if not 1 <= ttl <= 90:
        raise _bad(f"ttlInDays must be between 1 and 90, got {ttl}")
    return ttl


def _audiences(state: State, sandbox: str) -> dict[str, dict[str, Any]]:
    return state.resources[KIND][sandbox]


def _audience(state: State, sandbox: str, audience_id: str) -> dict[str, Any]:
    found = _audiences(state, sandbox).get(audience_id)
    if found is None:
        raise _error(404, "100940-404", "NOT_FOUND", f"audience {audience_id} was not found")
    return found


def _public(audience: dict[str, Any]) -> dict[str, Any]:
    hidden = {"members", "runs", "operation", "lastSuccessAt"}
    return {k: v for k, v in audience.items() if k not in hidden}


@router.post(PREFIX + "/")
@router.post(PREFIX)
async def create(request: Request) -> Response:
    caller = check_platform(request, needs_body=True)
    state = _state(request)
    sandbox = caller.sandbox.name
    audience = _validate(state, sandbox, await _json(request))
    if any(a["name"] == audience["name"] for a in _audiences(state, sandbox).values()):
        raise _error(409, "100950-409", "DUPLICATE_RESOURCE", "The audience already exists")
    now = _now(state)
    audience_id = str(uuid.uuid4())
    operation = {"operationId": str(uuid.uuid4()), "readyAt": now + _delay(request)}
    audience.update(
        audienceId=audience_id,
        createdAt=int(now),
        updatedAt=int(now),
        createdBy=caller.client_id,
        members={},
        runs=[],
        operation=operation,
    )
    state.put(KIND, sandbox, audience_id, audience)
    return errors.json_response(
        {"operationId": operation["operationId"], "operationDetails": _public(audience)}
    )


def _delay(request: Request) -> float:
    """How long operations and runs stay PROCESSING (a fault mode; 0 by default)."""
    return request.app.state.faults.modes.external_delay_s


@router.get(PREFIX + "/operations/{operation_id}")
@router.get("/data/core/ais/external-audiences/operations/{operation_id}")
async def operation(operation_id: str, request: Request) -> Response:
    caller = check_platform(request)
    state = _state(request)
    for audience in _audiences(state, caller.sandbox.name).values():
        op = audience["operation"]
        if op["operationId"] == operation_id:
            done = _now(state) >= op["readyAt"]
            body = {
                "operationId": operation_id,
                "status": "SUCCESS" if done else "PROCESSING",
                "operationDetails": _public(audience),
            }
            if done:
                body["audienceId"] = audience["audienceId"]
            return errors.json_response(body)
    raise _error(404, "100940-404", "NOT_FOUND", f"operation {operation_id} was not found")


@router.get(PREFIX + "/{audience_id}")
async def get_audience(audience_id: str, request: Request) -> Response:
    caller = check_platform(request)
    return errors.json_response(
        _public(_audience(_state(request), caller.sandbox.name, audience_id))
    )


@router.patch(PREFIX + "/{audience_id}")
async def patch_audience(audience_id: str, request: Request) -> Response:
    caller = check_platform(request, needs_body=True)
    state = _state(request)
    audience = _audience(state, caller.sandbox.name, audience_id)
    body = await _json(request)
    unknown = set(body) - {"description", "labels", "fields", "ttlInDays"}
    if unknown:
        raise _bad(f"only description, labels, fields and ttlInDays can be updated: {unknown}")
    if "ttlInDays" in body:
        body["ttlInDays"] = _ttl(body["ttlInDays"])
    audience.update(body, updatedAt=int(_now(state)))
    state.put(KIND, caller.sandbox.name, audience_id, audience)
    return errors.json_response(_public(audience))


@router.delete(PREFIX + "/{audience_id}")
@router.delete(PREFIX + "/{audience_id}/")
async def delete_audience(audience_id: str, request: Request) -> Response:
    caller = check_platform(request)
    state = _state(request)
    _audience(state, caller.sandbox.name, audience_id)
    state.remove(KIND, caller.sandbox.name, audience_id)
    return Response(status_code=202)


# -- ingestion runs ------------------------------------------------------------------------
@router.post(PREFIX + "/{audience_id}/runs")
@router.post(PREFIX + "/{audience_id}/run")
async def start_run(audience_id: str, request: Request) -> Response:
    caller = check_platform(request, needs_body=True)
    state = _state(request)
    audience = _audience(state, caller.sandbox.name, audience_id)
    body = await _json(request)
    if not isinstance(body.get("dataFilterStartTime"), int):
        raise _bad("dataFilterStartTime (epoch seconds) is required")
    _settle(state, caller.sandbox.name, audience)
    if any(run["status"] == "PROCESSING" for run in audience["runs"]):
        raise _error(
            422,
            "100960-422",
            "UNPROCESSABLE_ENTITY",
            "a previous ingestion of this audience is still in progress",
        )
    now = _now(state)
    modes = request.app.state.faults.modes
    failing = modes.external_run_failures > 0
    if failing:
        modes.external_run_failures -= 1
    run = {
        "audienceId": audience_id,
        "runId": str(uuid.uuid4()),
        "status": "PROCESSING",
        "differentialIngestion": bool(body.get("differentialIngestion", True)),
        "dataFilterStartTime": body["dataFilterStartTime"],
        "dataFilterEndTime": body.get("dataFilterEndTime", int(now) + DAY_S),
        "ingestionTime": int(now),
        "readyAt": now + _delay(request),
        "fail": failing,
    }
    audience["runs"].append(run)
    state.put(KIND, caller.sandbox.name, audience_id, audience)
    keys = ("audienceId", "runId", "differentialIngestion", "dataFilterStartTime")
    return errors.json_response(
        {"name": audience["name"], **{k: run[k] for k in (*keys, "dataFilterEndTime")}}
    )


def _settle(state: State, sandbox: str, audience: dict[str, Any]) -> None:
    """Finish every run whose time has come: read its files and apply them."""
    for run in audience["runs"]:
        if run["status"] != "PROCESSING" or _now(state) < run["readyAt"]:
            continue
        if run["fail"]:
            run["status"], run["error"] = "FAILED", "injected failure (emulator fault)"
            continue
        try:
            rows = _read_rows(state, sandbox, audience, run)
        except ValueError as exc:
            run["status"], run["error"] = "FAILED", str(exc)
            continue
        members = audience["members"] if run["differentialIngestion"] else {}
        if not _alive(state, audience):
            members = {}
        for identity, delete in rows:
            if delete:
                members.pop(identity, None)
            else:
                members[identity] = run["runId"]
        audience["members"] = members
        audience["lastSuccessAt"] = run["completedAt"] = _now(state)
        run["status"] = "SUCCESS"
        run["rows"] = len(rows)


def _alive(state: State, audience: dict[str, Any]) -> bool:
    """The data expires ``ttlInDays`` after the last successful ingestion."""
    last = audience.get("lastSuccessAt")
    return last is not None and _now(state) < last + audience["ttlInDays"] * DAY_S


def _read_rows(
    state: State, sandbox: str, audience: dict[str, Any], run: dict[str, Any]
) -> list[tuple[str, bool]]:
    """(identity, delete) rows of the files the run selects, oldest file first."""
    params = audience["sourceSpec"]["params"]
    connection = _connection(state, sandbox, params["baseConnectionId"])
    if connection is None:
        raise ValueError(f"base connection {params['baseConnectionId']} no longer exists")
    files = _s3_files if "auth" in connection else _local_files
    start, end = run["dataFilterStartTime"], run["dataFilterEndTime"]
    chosen = sorted(
        (f for f in files(connection, params) if start <= f[1] <= end), key=lambda f: f[1]
    )
    identity = next(f["name"] for f in audience["fields"] if f.get("identityNs"))
    rows: list[tuple] = []
    for name, _, open_text in chosen:
        with open_text() as handle:
            for n, row in enumerate(csv.DictReader(handle), start=2):
                value = row.get(identity)
                if not value:
                    raise ValueError(f"{name} line {n}: no value in identity column {identity}")
                rows.append((value, row.get("delete", "0").strip() in ("1", "true")))
    return rows


SourceFile = tuple[str, float, Callable[[], TextIO]]  # name, modification time, its text


def _local_files(connection: dict[str, Any], params: dict[str, Any]) -> list[SourceFile]:
    target = Path(connection["root"]) / params["path"]
    found = [target] if params["type"] == "file" else target.glob("*.csv")
    return [
        (f.name, f.stat().st_mtime, functools.partial(f.open, newline=""))
        for f in found
        if f.is_file()
    ]


def _s3_files(connection: dict[str, Any], params: dict[str, Any]) -> list[SourceFile]:
    """Objects under ``<bucket>/<prefix>`` with their ``LastModified``, which the S3 server
    set at upload: the time Adobe's cloud-storage sources select files by."""
    import boto3  # only for S3 base connections

    auth = connection["auth"]["params"]
    client = boto3.client(
        "s3",
        endpoint_url=auth.get("serviceUrl"),
        aws_access_key_id=auth["s3AccessKey"],
        aws_secret_access_key=auth["s3SecretKey"],
        aws_session_token=auth.get("s3SessionToken"),
        region_name=auth.get("region", "us-east-1"),
    )
    bucket, _, key = params["path"].strip("/").partition("/")

    def reader(name: str) -> Callable[[], TextIO]:
        return lambda: io.StringIO(
            client.get_object(Bucket=bucket, Key=name)["Body"].read().decode(), newline=""
        )

    if params["type"] == "file":
        head = client.head_object(Bucket=bucket, Key=key)
        return [(key, head["LastModified"].timestamp(), reader(key))]
    found: list[SourceFile] = []
    pages = client.get_paginator("list_objects_v2").paginate(Bucket=bucket, Prefix=f"{key}/")
    for page in pages:
        for obj in page.get("Contents", []):
            name = obj["Key"]
            if name.endswith(".csv") and "/" not in name[len(key) + 1 :]:
                found.append((name, obj["LastModified"].timestamp(), reader(name)))
    return found


def _run(state: State, sandbox: str, audience: dict[str, Any], run_id: str) -> dict[str, Any]:
    _settle(state, sandbox, audience)
    for run in audience["runs"]:
        if run["runId"] == run_id:
            stages = ("DATASET_INGEST", "PROFILE_STORE_INGEST")
            shown = {k: v for k, v in run.items() if k not in ("readyAt", "fail", "completedAt")}
            if run["status"] != "PROCESSING":
                shown["details"] = [{"stage": s, "status": run["status"]} for s in stages]
            return shown
    raise _error(404, "100940-404", "NOT_FOUND", f"run {run_id} was not found")


@router.get(PREFIX + "/{audience_id}/runs/{run_id}")
@router.get(PREFIX + "/{audience_id}/run/{run_id}")
async def get_run(audience_id: str, run_id: str, request: Request) -> Response:
    caller = check_platform(request)
    state = _state(request)
    audience = _audience(state, caller.sandbox.name, audience_id)
    shown = _run(state, caller.sandbox.name, audience, run_id)
    state.put(KIND, caller.sandbox.name, audience_id, audience)
    return errors.json_response(shown)


@router.get(PREFIX + "/{audience_id}/runs")
async def list_runs(audience_id: str, request: Request) -> Response:
    caller = check_platform(request)
    state = _state(request)
    audience = _audience(state, caller.sandbox.name, audience_id)
    runs = [_run(state, caller.sandbox.name, audience, r["runId"]) for r in audience["runs"]]
    state.put(KIND, caller.sandbox.name, audience_id, audience)
    runs.sort(key=lambda r: r["ingestionTime"], reverse=True)
    limit = min(max(int(request.query_params.get("limit", 20)), 1), 40)
    return errors.json_response(
        {
            "runs": runs[:limit],
            "_page": {"limit": limit, "count": len(runs[:limit]), "totalCount": len(runs)},
        }
    )


def members(state: State, sandbox: str, audience_id: str) -> list[dict[str, Any]] | None:
    """The external audience's current members (None when no such audience exists)."""
    audience = _audiences(state, sandbox).get(audience_id)
    if audience is None:
        return None
    _settle(state, sandbox, audience)
    if not _alive(state, audience):
        return []
    namespace = next(f["identityNs"] for f in audience["fields"] if f.get("identityNs"))
    return [
        {"namespace": namespace, "identity": ident, "status": "realized", "run_id": run_id}
        for ident, run_id in sorted(audience["members"].items())
    ]


def tamperer(state: State, sandbox: str, audience_id: str) -> Callable[[str, str, str], int] | None:
    """For the admin tamper route: ``(action, namespace, identity) -> changed`` on an external
    audience's members (``delete`` or ``add``), or None when no such audience exists."""
    audience = _audiences(state, sandbox).get(audience_id)
    if audience is None:
        return None
    _settle(state, sandbox, audience)
    namespace = next(f["identityNs"] for f in audience["fields"] if f.get("identityNs"))

    def tamper(action: str, code: str, ident: str) -> int:
        if action not in ("delete", "add"):
            raise _bad(f"an external audience's members can only be deleted or added, not {action}")
        if code.lower() != namespace.lower():
            return 0
        if action == "delete":
            return int(audience["members"].pop(ident, None) is not None)
        audience["members"][ident] = "tampered"
        return 1

    return tamper


Memberships = Callable[[list[tuple[str, str]]], dict[str, dict[str, dict[str, Any]]]]


def profile_memberships(state: State, sandbox: str) -> Memberships:
    """For Profile Access: the ``segmentMembership`` entries the sandbox's external audiences
    give a profile with these (namespace, identity) pairs, as
    ``{audience namespace: {audience id: entry}}``.

    AEP ingests a custom upload into the profiles of its identity column, and keys the
    membership by the audience's own namespace (``CustomerAudienceUpload`` unless the create
    request named another; Adobe's exported files show such an audience as
    ``CustomerAudienceUpload:<audience id>`` beside ``ups:<id>`` for its own). The entry is
    ``realized`` with the qualifying run's time and ``validUntil`` when the data expires
    (``ttlInDays`` after the last successful run): our inference of the fields' values.
    """
    live = []
    for audience in _audiences(state, sandbox).values():
        _settle(state, sandbox, audience)
        if not _alive(state, audience) or not audience["members"]:
            continue
        field = next(f for f in audience["fields"] if f.get("identityNs"))
        times = {r["runId"]: r.get("completedAt", r["ingestionTime"]) for r in audience["runs"]}
        until = iso_ms(audience["lastSuccessAt"] + audience["ttlInDays"] * DAY_S)
        live.append((audience, field["identityNs"].lower(), times, until))

    def lookup(identities: list[tuple[str, str]]) -> dict[str, dict[str, dict[str, Any]]]:
        found: dict[str, dict[str, dict[str, Any]]] = {}
        for audience, namespace, times, until in live:
            for code, ident in identities:
                run_id = audience["members"].get(ident) if code.lower() == namespace else None
                if run_id is not None:
                    found.setdefault(audience["namespace"], {})[audience["audienceId"]] = {
                        "status": "realized",
                        "lastQualificationTime": iso_ms(times.get(run_id, 0)),
                        "validUntil": until,
                    }
                    break
        return found

    return lookup
