"""Segmentation Service Audiences API: ``/data/core/ups/audiences`` (per sandbox)."""

from __future__ import annotations

import copy
import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from pydantic_core import from_json
from starlette.responses import Response

from emulator import errors
from emulator.auth import Caller, check_platform
from emulator.state import State

router = APIRouter()
BASE = "/data/core/ups/audiences"

# The spec's enums (segmentation.yaml) plus what Adobe's audiences.md page documents:
# ``ExternalSegment`` (the page's external type; the spec says ``ExternalAudience``).
TYPES = ("SegmentDefinition", "ExternalAudience", "ExternalSegment")
ORIGINS = (
    "REAL_TIME_CUSTOMER_PROFILE",
    "CUSTOM_UPLOAD",
    "AUDIENCE_ORCHESTRATION",
    "AUDIENCE_MATCH",
    "AUDIENCE_MANAGER",
)
LIFECYCLE = ("draft", "published", "inactive", "archived")
READ_ONLY = frozenset(
    {"id", "sandbox", "imsOrgId", "creationTime", "createEpoch", "updateTime", "updateEpoch"}
)
DEFAULT_LIMIT = 20
MAX_LIMIT = 1000


def _bad(detail: str) -> errors.AdobeHTTPError:
    return errors.platform(400, "Bad Request", detail, "UPS-1000")


async def _json_body(request: Request) -> Any:
    try:
        return from_json(await request.body())
    except ValueError as exc:
        raise _bad(f"Request body is not valid JSON: {exc}") from exc


def _validate(audience: dict[str, Any]) -> None:
    """The checks the Audiences API applies on create and after every update."""
    name = audience.get("name")
    if not isinstance(name, str) or not name.strip():
        raise _bad("name is required and must be a non-empty string")
    for field, allowed in (("type", TYPES), ("originName", ORIGINS), ("lifecycleState", LIFECYCLE)):
        if audience.get(field) not in allowed:
            raise _bad(f"{field} {audience.get(field)!r} must be one of {', '.join(allowed)}")
    if not isinstance(audience.get("namespace"), str) or not audience["namespace"]:
        raise _bad("namespace must be a non-empty string")
    if not isinstance(audience.get("audienceId"), str) or not audience["audienceId"]:
        raise _bad("audienceId must be a non-empty string")
    if audience["type"] == "SegmentDefinition":
        expression = audience.get("expression")
        if not isinstance(expression, dict) or expression.get("type") != "PQL":
            raise _bad('a SegmentDefinition needs expression {"type": "PQL", "format", "value"}')


def _check_entitlements(state: State, caller: Caller, audience: dict[str, Any] | None) -> None:
    """The org-level refusals of the spec's 403 examples (switched by ``/_emulator/org``)."""
    if not state.org.abac_write:
        uri = f"/orgs/{caller.org_id}/sandboxes/{caller.sandbox.name}/segments"
        message = (
            'Permission denied on some resources. errorMessage=[{"resource":{"uri":"'
            + uri
            + '","labels":[]},"action":"WRITE"}]'
        )
        raise errors.platform(403, message, message, "UPAPI-113752")
    external = audience is not None and audience.get("type") == "ExternalSegment"
    if external and not state.org.external_segments:
        message = "The IMS Org is not enabled for External Segment"
        raise errors.platform(403, message, message + ".", "UPAPI-113740")


def _check_unique(state: State, caller: Caller, audience: dict[str, Any]) -> None:
    for other in state.resources["audience"][caller.sandbox.name].values():
        if other["id"] == audience["id"]:
            continue
        if other["name"] == audience["name"]:
            raise errors.platform(
                409,
                "Conflict",
                f"an audience named {audience['name']!r} already exists",
                "UPS-1409",
            )
        if (other["namespace"], other["audienceId"]) == (
            audience["namespace"],
            audience["audienceId"],
        ):
            raise errors.platform(
                409,
                "Conflict",
                f"audienceId {audience['audienceId']!r} already exists in namespace "
                f"{audience['namespace']!r}",
                "UPS-1409",
            )


def _stamp(audience: dict[str, Any]) -> None:
    now = time.time()
    audience["updateTime"] = int(now * 1000)
    audience["updateEpoch"] = int(now)


def _get(state: State, caller: Caller, audience_id: str) -> dict[str, Any]:
    audience = state.resources["audience"][caller.sandbox.name].get(audience_id)
    if audience is None:
        raise errors.platform(
            404, "Not Found", f"audience {audience_id} does not exist in this sandbox", "UPS-1404"
        )
    return audience


@router.post(BASE)
async def create_audience(request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request, needs_body=True)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    ident = str(uuid.uuid4())
    now = time.time()
    is_definition = "expression" in body
    audience: dict[str, Any] = {
        "type": "SegmentDefinition" if is_definition else "ExternalSegment",
        "originName": "REAL_TIME_CUSTOMER_PROFILE" if is_definition else "CUSTOM_UPLOAD",
        "lifecycleState": "published",
        "namespace": "ups" if is_definition else "CustomerAudienceUpload",
        "audienceId": ident,
        "labels": [],
        "description": "",
    }
    audience.update({k: v for k, v in body.items() if k not in READ_ONLY})
    audience.update(
        id=ident,
        imsOrgId=caller.org_id,
        sandbox=caller.sandbox.as_dict(),
        creationTime=int(now * 1000),
        createEpoch=int(now),
    )
    if is_definition:
        audience.setdefault("schema", {"name": "_xdm.context.profile"})
        audience.setdefault("profileInstanceId", "ups")
    _stamp(audience)
    _validate(audience)
    _check_entitlements(state, caller, audience)
    _check_unique(state, caller, audience)
    state.put("audience", caller.sandbox.name, ident, audience)
    return errors.json_response(audience, status=201)


@router.get(BASE)
async def list_audiences(request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    params = request.query_params
    items = list(state.resources["audience"][caller.sandbox.name].values())
    for prop in params.getlist("property"):
        field, op, value = _parse_property(prop)
        items = [a for a in items if _matches(str(a.get(field, "")), op, value)]
    for field in ("name", "description"):
        needle = params.get(field)
        if needle:
            items = [a for a in items if needle.lower() in str(a.get(field, "")).lower()]
    sort = params.get("sort", "updateTime:desc")
    key, _, direction = sort.partition(":")
    if direction not in ("", "asc", "desc"):
        raise _bad(f"sort {sort!r} must be <field>:asc or <field>:desc")
    items.sort(key=lambda a: (str(a.get(key, "")), a["id"]), reverse=direction == "desc")
    if key in ("updateTime", "creationTime", "updateEpoch", "createEpoch"):
        items.sort(key=lambda a: (a.get(key, 0), a["id"]), reverse=direction == "desc")
    start, limit = _paging(params.get("start"), params.get("limit"))
    page = items[start * limit : (start + 1) * limit]
    more = (start + 1) * limit < len(items)
    body: dict[str, Any] = {
        "children": page,
        "_page": {"totalCount": len(items), "pageSize": len(page)},
        "_links": {},
    }
    if more:
        body["_page"]["next"] = start + 1  # an integer in the spec (the page shows "1")
        body["_links"]["next"] = {"href": f"@/audiences?start={start + 1}&limit={limit}"}
    return errors.json_response(body)


def _paging(start: str | None, limit: str | None) -> tuple[int, int]:
    """``start`` is a 0-based page index (Adobe's example: next "1" with limit 2)."""
    try:
        page = int(start) if start is not None else 0
        size = int(limit) if limit is not None else DEFAULT_LIMIT
    except ValueError as exc:
        raise _bad("start and limit must be integers") from exc
    if page < 0 or not 1 <= size <= MAX_LIMIT:
        raise _bad(f"start must be >= 0 and limit between 1 and {MAX_LIMIT}")
    return page, size


def _parse_property(expression: str) -> tuple[str, str, str]:
    """``property=field==value`` (also ``!=``, and ``~`` for contains)."""
    for op in ("==", "!=", "~"):
        field, sep, value = expression.partition(op)
        if sep and field.strip():
            return field.strip(), op, value
    raise _bad(f"property {expression!r} must look like field==value, field!=value or field~text")


def _matches(actual: str, op: str, value: str) -> bool:
    if op == "==":
        return actual == value
    if op == "!=":
        return actual != value
    return value.lower() in actual.lower()


@router.get(BASE + "/{audience_id}")
async def get_audience(audience_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    return errors.json_response(_get(state, caller, audience_id))


@router.put(BASE + "/{audience_id}")
async def replace_audience(audience_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request, needs_body=True)
    current = _get(state, caller, audience_id)
    body = await _json_body(request)
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    if "namespace" in body and body["namespace"] != current["namespace"]:
        raise _bad("Namespace is immutable field")
    updated = {k: v for k, v in body.items() if k not in READ_ONLY}
    updated.update({k: current[k] for k in READ_ONLY if k in current})
    for key in ("type", "originName", "lifecycleState", "namespace", "audienceId"):
        updated.setdefault(key, current[key])
    return _save(state, caller, updated)


@router.patch(BASE + "/{audience_id}")
async def patch_audience(audience_id: str, request: Request) -> Response:
    """JSON Patch (RFC 6902 add/replace/remove) on the audience's fields."""
    state: State = request.app.state.emulator
    caller = check_platform(request, needs_body=True)
    current = _get(state, caller, audience_id)
    operations = await _json_body(request)
    if not isinstance(operations, list) or not operations:
        raise _bad('PATCH body must be a JSON Patch array, e.g. [{"op": "replace", ...}]')
    updated = copy.deepcopy(current)
    for op in operations:
        _apply_patch(updated, op)
    return _save(state, caller, updated)


def _save(state: State, caller: Caller, audience: dict[str, Any]) -> Response:
    _validate(audience)
    _check_entitlements(state, caller, None)
    _check_unique(state, caller, audience)
    _stamp(audience)
    state.put("audience", caller.sandbox.name, audience["id"], audience)
    return errors.json_response(audience, status=201)


def _apply_patch(target: dict[str, Any], op: Any) -> None:
    if not isinstance(op, dict) or op.get("op") not in ("add", "replace", "remove"):
        raise _bad(f"unsupported patch operation {op!r}: use add, replace or remove")
    path = op.get("path")
    if not isinstance(path, str) or not path.startswith("/") or path == "/":
        raise _bad(f"patch path {path!r} must be a JSON pointer like /description")
    parts = [p.replace("~1", "/").replace("~0", "~") for p in path[1:].split("/")]
    if parts[0] in READ_ONLY or parts[0] in ("audienceId", "namespace"):
        raise _bad(f"{parts[0]} cannot be changed")
    parent: Any = target
    for part in parts[:-1]:
        parent = parent.setdefault(part, {}) if isinstance(parent, dict) else None
        if not isinstance(parent, dict):
            raise _bad(f"patch path {path!r} does not exist")
    last = parts[-1]
    if op["op"] == "remove":
        if last not in parent:
            raise _bad(f"patch path {path!r} does not exist")
        del parent[last]
    elif "value" not in op:
        raise _bad(f"patch operation on {path!r} needs a value")
    elif op["op"] == "replace" and last not in parent:
        raise _bad(f"patch path {path!r} does not exist (use add)")
    else:
        parent[last] = op["value"]


@router.delete(BASE + "/{audience_id}")
async def delete_audience(audience_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    _get(state, caller, audience_id)
    state.remove("audience", caller.sandbox.name, audience_id)
    return Response(status_code=204)


def audience_counts(state: State) -> dict[str, dict[str, int]]:
    """Per-sandbox counts behind the 4,000 audiences / 500 streaming / 150 edge guardrails."""
    counts: dict[str, dict[str, int]] = {}
    for sandbox, audiences in state.resources["audience"].items():
        streaming = edge = 0
        for a in audiences.values():
            info = a.get("evaluationInfo") or {}
            streaming += bool((info.get("continuous") or {}).get("enabled"))
            edge += bool((info.get("synchronous") or {}).get("enabled"))
        counts[sandbox] = {"total": len(audiences), "streaming": streaming, "edge": edge}
    return counts
