"""CJA Segments API: ``GET/POST /segments``, ``GET/PUT/DELETE /segments/{id}``,
``POST /segments/validate``.

Shapes follow Adobe's spec and examples: the list is a paged object (``content``, ``totalElements``,
``totalPages``, ``numberOfElements``, ``number``, ``size``, ``firstPage``, ``lastPage``, ``sort``);
a segment carries ``id``, ``name``, ``description``, ``dataId`` and ``owner`` by default and
anything else (``definition``, ``modified``, ``tags``, ...) only when ``expansion`` asks. The
older ``/filters`` paths are not in Adobe's CJA spec, so they answer CJA's 404. PUT changes
only the fields the spec names as modifiable (read-only fields a client sends back from a GET are
ignored); DELETE removes the segment, so later reads answer 404.
"""

from __future__ import annotations

import math
import uuid
from datetime import UTC, datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.cja import SEGMENTS, DataView, read_json
from emulator.cja_limits import check_cja
from emulator.segments import SegmentCompileError, compile_segment, top_container
from emulator.state import State

router = APIRouter()
DEFAULT_FIELDS = ("id", "name", "description", "dataId", "owner")
EXPANSIONS = (
    "compatibility",
    "definition",
    "modified",
    "createdDate",
    "definitionLastModified",
    "tags",
    "isDeleted",
    "ownerFullName",
    "dataName",
)
SORTABLE = {"id": "id", "name": "name", "modified_date": "modified"}
VALIDATOR_VERSION = "emulator-1"


def _bad(code: str, description: str) -> errors.AdobeHTTPError:
    return errors.cja(400, code, description)


def _now() -> str:
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%SZ")


def _check_name(name: Any) -> None:
    if not isinstance(name, str) or not name.strip():
        raise _bad("invalid_request", "name is required (a non-empty string)")


def _check_definition(definition: Any) -> None:
    if not isinstance(definition, dict):
        # the PUT operation's documented 400
        raise _bad("invalid_data", "Definition must be formatted as a JSON Object")
    try:
        top_container(definition)
    except SegmentCompileError as exc:
        raise _bad("invalid_data", str(exc)) from exc


def new_segment(state: State, body: dict[str, Any], owner: str) -> dict[str, Any]:
    """Validate and store a segment; ``definition`` is kept exactly as given."""
    _check_name(body.get("name"))
    _check_definition(body.get("definition"))
    name, definition = body["name"], body["definition"]
    now = _now()
    data_id = body.get("dataId") or body.get("rsid") or state.config.cja.data_view_id
    segment = {
        "id": body.get("id") or f"s2000000000_{uuid.uuid4().hex[:24]}",
        "name": name,
        "description": body.get("description") or "",
        "dataId": data_id,
        "owner": {"imsUserId": owner, "name": owner},
        "compatibility": body.get("compatibility") or {},
        "tags": body.get("tags") or [],
        "createdDate": now,
        "modified": now,
        "definitionLastModified": now,
        "isDeleted": False,
        "definition": definition,
    }
    state.put("segment", SEGMENTS, segment["id"], segment)
    return segment


def expansions(request: Request) -> set[str]:
    raw = request.query_params.get("expansion") or ""
    asked = {e.strip() for e in raw.split(",") if e.strip()}
    return asked


def shown(segment: dict[str, Any], asked: set[str]) -> dict[str, Any]:
    """The default fields plus the expansions asked for (``ownerFullName`` is owner.name)."""
    out = {k: segment[k] for k in DEFAULT_FIELDS if k in segment}
    for key in asked & set(EXPANSIONS):
        if key == "ownerFullName":
            out["owner"] = segment["owner"]
        elif key == "dataName":
            out["dataName"] = segment["dataId"]
        elif key in segment:
            out[key] = segment[key]
    return out


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError as exc:
        raise _bad("invalid_request", f"{name} must be an integer") from exc


@router.get("/segments")
async def list_segments(request: Request) -> Response:
    state: State = request.app.state.emulator
    check_cja(request)
    params = request.query_params
    limit, page = _int(request, "limit", 10), _int(request, "page", 0)
    if not 1 <= limit <= 1000 or page < 0:
        raise _bad("invalid_request", "limit must be 1..1000 and page >= 0 (0-based)")
    items = list(state.resources["segment"][SEGMENTS].values())
    if params.get("dataIds"):
        wanted = set(params["dataIds"].split(","))
        items = [s for s in items if s["dataId"] in wanted]
    if params.get("filterByIds"):
        ids = set(params["filterByIds"].split(","))
        items = [s for s in items if s["id"] in ids]
    if params.get("name"):
        items = [s for s in items if params["name"].lower() in s["name"].lower()]
    prop = params.get("sortProperty", "id")
    direction = params.get("sortDirection", "ASC").upper()
    if prop not in SORTABLE or direction not in ("ASC", "DESC"):
        raise _bad(
            "invalid_request",
            f"sortProperty must be one of {', '.join(SORTABLE)} and sortDirection ASC or DESC",
        )
    items.sort(key=lambda s: (str(s.get(SORTABLE[prop], "")), s["id"]), reverse=direction == "DESC")
    asked = expansions(request)
    if params.get("pagination", "true") == "false":
        return errors.json_response([shown(s, asked) for s in items])
    total = len(items)
    pages = math.ceil(total / limit) if total else 0
    content = [shown(s, asked) for s in items[page * limit : (page + 1) * limit]]
    return errors.json_response(
        {
            "content": content,
            "totalElements": total,
            "totalPages": pages,
            "numberOfElements": len(content),
            "number": page,
            "size": limit,
            "firstPage": page == 0,
            "lastPage": page >= pages - 1,
            "sort": [{"direction": direction, "property": prop, "ascending": direction == "ASC"}],
        }
    )


@router.post("/segments/validate")
async def validate_segment(request: Request) -> Response:
    """``{"dataId", "definition"}`` (or a bare definition) → ``{valid, message, errors}``."""
    state: State = request.app.state.emulator
    check_cja(request)
    body = await read_json(request)
    definition = body.get("definition", body)
    view = DataView.of(state)
    if body.get("dataId") or body.get("rsid"):
        view.check(body.get("dataId") or body.get("rsid"))
    problems: list[str] = []
    try:
        compile_segment(definition, view.scalar_columns)
    except SegmentCompileError as exc:
        problems.append(str(exc))
    return errors.json_response(
        {
            "valid": not problems,
            "message": problems[0] if problems else "segment is valid",
            "errors": problems,
            "validator_version": VALIDATOR_VERSION,
            "supported_products": ["oberon"],
            "supported_schema": ["schema_oberon"],
            "supported_features": [],
        }
    )


def _stored(state: State, segment_id: str) -> dict[str, Any]:
    segment = state.resources["segment"][SEGMENTS].get(segment_id)
    if segment is None:
        raise errors.cja(404, "resource_not_found", f"segment {segment_id!r} was not found")
    return segment


@router.get("/segments/{segment_id}")
async def get_segment(segment_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    check_cja(request)
    return errors.json_response(shown(_stored(state, segment_id), expansions(request)))


def _changes(state: State, body: dict[str, Any]) -> dict[str, Any]:
    """The modifiable fields of a PUT body (the spec: name, description, definition, owner,
    data view), validated; anything else is read-only and left alone."""
    changes: dict[str, Any] = {}
    if "name" in body:
        _check_name(body["name"])
        changes["name"] = body["name"]
    if "description" in body:
        if not isinstance(body["description"], str):
            raise _bad("invalid_request", "description must be a string")
        changes["description"] = body["description"]
    if "definition" in body:
        _check_definition(body["definition"])
        changes["definition"] = body["definition"]
        changes["definitionLastModified"] = _now()
    if "owner" in body:
        owner = body["owner"]
        if not isinstance(owner, dict) or not isinstance(owner.get("imsUserId"), str):
            raise _bad("invalid_request", "owner must be an object with imsUserId (a string)")
        changes["owner"] = {"imsUserId": owner["imsUserId"], "name": owner.get("name") or ""}
    data_id = body.get("dataId") or body.get("rsid")
    if data_id:
        DataView.of(state).check(data_id)
        changes["dataId"] = data_id
    return changes


@router.put("/segments/{segment_id}")
async def update_segment(segment_id: str, request: Request) -> Response:
    """The updated segment, shown as a GET with the same ``expansion`` would show it."""
    state: State = request.app.state.emulator
    check_cja(request)
    segment = _stored(state, segment_id)
    updated = segment | _changes(state, await read_json(request)) | {"modified": _now()}
    state.put("segment", SEGMENTS, segment_id, updated)
    return errors.json_response(shown(updated, expansions(request)))


@router.delete("/segments/{segment_id}")
async def delete_segment(segment_id: str, request: Request) -> Response:
    """The spec's ``{result, message}``; the segment is gone from reads and reports."""
    state: State = request.app.state.emulator
    check_cja(request)
    _stored(state, segment_id)
    state.remove("segment", SEGMENTS, segment_id)
    return errors.json_response(
        {"result": "success", "message": f"segment {segment_id} was deleted"}
    )


@router.post("/segments")
async def create_segment(request: Request) -> Response:
    state: State = request.app.state.emulator
    token = check_cja(request)
    body = await read_json(request)
    body.pop("id", None)  # ids are assigned by CJA
    if not (body.get("dataId") or body.get("rsid")):
        raise _bad("invalid_request", "dataId (the data view the segment belongs to) is required")
    DataView.of(state).check(body.get("dataId") or body.get("rsid"))
    segment = new_segment(state, body, token.client_id)
    return errors.json_response(shown(segment, expansions(request) | {"definition"}))
