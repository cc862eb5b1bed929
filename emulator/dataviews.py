"""CJA Data Views API, the part clients read: ``GET /data/dataviews/{dataViewId}``.

A client learns the data view's time zone here (``expansion=timezoneDesignator``) to cut
report windows at the data view's midnights. ``id`` is always present; every other field
only when ``expansion`` asks for it, as the spec documents.
"""

from __future__ import annotations

from datetime import datetime
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.cja import DataView
from emulator.cja_limits import check_cja
from emulator.cja_segments import expansions
from emulator.state import State

router = APIRouter()


def describe(state: State) -> dict[str, Any]:
    view = DataView.of(state)
    offset = datetime.now(view.zone).utcoffset()
    return {
        "id": view.id,
        "name": state.config.cja.data_view_name,
        "description": "",
        "owner": {"name": "emulator"},
        "isDeleted": False,
        "parentDataGroupId": state.config.cja.dataset_id,
        "timezoneDesignator": view.zone.key,
        "currentTimezoneOffset": offset.total_seconds() / 3600 if offset else 0.0,
        "organization": state.config.org_id,
        "sessionDefinition": [
            {"numPeriods": 30, "granularity": "MINUTE", "func": "INACTIVITY", "events": []}
        ],
        "containerNames": {"event": "Event", "session": "Session", "people": "Person"},
    }


@router.get("/data/dataviews/{data_view_id}")
async def get_data_view(data_view_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    check_cja(request)
    DataView.of(state).check(data_view_id)
    full = describe(state)
    asked = expansions(request)
    return errors.json_response({k: v for k, v in full.items() if k == "id" or k in asked})
