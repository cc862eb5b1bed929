"""Segmentation Service segment definitions: ``GET /data/core/ups/segment/definitions[/{id}]``.

In the emulator a segment definition is an audience of type ``SegmentDefinition`` of the
sandbox (created through the Audiences API), shown in the definitions API's own shape:
``{segments, page{totalCount, totalPages, sortField, sort, pageSize, limit}, link{next}}``.
The PQL is stored, never evaluated.
"""

from __future__ import annotations

import math
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.auth import Caller, check_platform
from emulator.state import State

router = APIRouter()
BASE = "/data/core/ups/segment/definitions"
FIELDS = (
    "id",
    "name",
    "description",
    "imsOrgId",
    "sandbox",
    "profileInstanceId",
    "mergePolicyId",
    "expression",
    "schema",
    "evaluationInfo",
    "creationTime",
    "updateTime",
    "updateEpoch",
)
DEFAULT_LIMIT = 100
MAX_LIMIT = 1000


def _bad(detail: str) -> errors.AdobeHTTPError:
    return errors.platform(400, "Bad Request", detail, "UPS-1000")


def _definitions(state: State, caller: Caller) -> list[dict[str, Any]]:
    audiences = state.resources["audience"][caller.sandbox.name].values()
    return [
        {k: a[k] for k in FIELDS if k in a} for a in audiences if a["type"] == "SegmentDefinition"
    ]


def _int(request: Request, name: str, default: int) -> int:
    try:
        return int(request.query_params.get(name, default))
    except ValueError as exc:
        raise _bad(f"{name} must be an integer") from exc


@router.get(BASE)
async def list_definitions(request: Request) -> Response:
    """``start`` (page offset, also ``page``), ``limit``, ``sort=field:asc|desc``."""
    state: State = request.app.state.emulator
    caller = check_platform(request)
    items = _definitions(state, caller)
    sort = request.query_params.get("sort", "updateTime:desc")
    field, _, direction = sort.partition(":")
    if direction not in ("", "asc", "desc"):
        raise _bad(f"sort {sort!r} must be <field>:asc or <field>:desc")
    items.sort(
        key=lambda d: (str(d.get(field, "")).zfill(20), d["id"]), reverse=direction == "desc"
    )
    limit = _int(request, "limit", DEFAULT_LIMIT)
    page = _int(request, "start", _int(request, "page", 0))
    if not 1 <= limit <= MAX_LIMIT or page < 0:
        raise _bad(f"limit must be 1..{MAX_LIMIT} and start >= 0")
    chunk = items[page * limit : (page + 1) * limit]
    pages = math.ceil(len(items) / limit) if items else 0
    more = page + 1 < pages
    return errors.json_response(
        {
            "segments": chunk,
            "page": {
                "totalCount": len(items),
                "totalPages": pages,
                "sortField": field,
                "sort": direction or "asc",
                "pageSize": len(chunk),
                "limit": limit,
            },
            "link": {"next": f"?start={page + 1}&limit={limit}" if more else ""},
        }
    )


@router.get(BASE + "/{segment_id}")
async def get_definition(segment_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    found = next((d for d in _definitions(state, caller) if d["id"] == segment_id), None)
    if found is None:
        raise errors.platform(
            404, "Not Found", f"segment definition {segment_id} does not exist", "UPS-1404"
        )
    return errors.json_response(found)
