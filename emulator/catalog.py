"""Catalog Service batches: what event triggers poll to learn that new data landed.

Streaming ingestion lands in a dataset as periodic batches (one open batch per dataset,
sealed after ``streaming.batch_window_s``); the admin route adds batches to any dataset, e.g.
the one behind the CJA connection, so a sensor has something real to find.
"""

from __future__ import annotations

import time
import uuid
from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.auth import check_platform
from emulator.state import State

router = APIRouter()

# every batch status the spec lists (catalog.yaml batchStatus)
STATUSES = (
    "processing",
    "success",
    "failure",
    "queued",
    "retrying",
    "stalled",
    "aborted",
    "abandoned",
    "inactive",
    "failed",
    "loading",
    "loaded",
    "staged",
    "active",
    "staging",
    "deleted",
)
DONE = ("success", "failure", "failed", "aborted", "abandoned", "inactive", "deleted")
FAILED = ("failure", "failed", "aborted", "abandoned")
MAX_LIMIT = 100
DEFAULT_LIMIT = 20


def new_batch(
    state: State, dataset_id: str, *, status: str, records: int, created_ms: int | None = None
) -> dict[str, Any]:
    now_ms = int(time.time() * 1000)
    created = created_ms if created_ms is not None else now_ms
    done = status in DONE
    sandbox = state.config.sandbox(state.datasets[dataset_id].sandbox)
    batch: dict[str, Any] = {
        "id": uuid.uuid4().hex[:26].upper(),
        "imsOrg": state.config.org_id,
        "sandboxId": sandbox.id if sandbox else None,
        "status": status,
        "created": created,
        "updated": now_ms,
        "createdClient": "emulator",
        "createdUser": "emulator@AdobeID",
        "relatedObjects": [{"type": "dataSet", "id": dataset_id}],
        "metrics": {
            "inputRecordCount": records,
            "outputRecordCount": records if status == "success" else 0,
            "failedRecordCount": 0 if status == "success" else records,
        },
        "recordCount": records,
        "failedRecordCount": records if status in FAILED else 0,
        "errors": _errors(records if status in FAILED else 0),
        "version": "1.0.0",
    }
    if done:
        batch["started"] = created
        batch["completed"] = max(created, now_ms)
    return batch


def _errors(failed: int) -> list[dict[str, Any]]:
    """The batch's ``errors[]`` (code, description, rows) when records failed."""
    if not failed:
        return []
    return [
        {
            "code": "INGEST-1212-400",
            "description": f"{failed} record(s) failed XDM validation",
            "rows": [f"1-{failed}"],
        }
    ]


def add_batch(state: State, dataset_id: str, **kwargs: Any) -> dict[str, Any]:
    dataset = state.datasets[dataset_id]
    batch = new_batch(state, dataset_id, **kwargs)
    state.put("batch", dataset.sandbox, batch["id"], batch)
    return batch


def record_streaming(
    state: State, sandbox: str, dataset_id: str, count: int, failed: int = 0
) -> None:
    """Count streamed records into the dataset's open batch (in memory until sealed).

    ``failed`` records passed DCCS but failed XDM validation downstream; Adobe reports
    them with the dataset's batches, so they show as ``failedRecordCount``.
    """
    key = (sandbox, dataset_id)
    batch = state.open_batches.get(key)
    if batch is None:
        batch = new_batch(state, dataset_id, status="loading", records=0)
        state.open_batches[key] = batch
    batch["metrics"]["inputRecordCount"] += count
    batch["metrics"]["failedRecordCount"] += failed


def seal_batches(state: State, *, force: bool = False) -> int:
    """Close open streaming batches older than the window (all of them with ``force``)."""
    now_ms = int(time.time() * 1000)
    window_ms = state.config.streaming.batch_window_s * 1000
    sealed = 0
    for key, batch in list(state.open_batches.items()):
        if force or now_ms - batch["created"] >= window_ms:
            metrics = batch["metrics"]
            output = metrics["inputRecordCount"] - metrics["failedRecordCount"]
            status = "success" if output else "failed"
            batch.update(status=status, updated=now_ms, started=batch["created"])
            batch["completed"] = now_ms
            metrics["outputRecordCount"] = output
            batch["recordCount"] = metrics["inputRecordCount"]
            batch["failedRecordCount"] = metrics["failedRecordCount"]
            batch["errors"] = _errors(metrics["failedRecordCount"])
            state.put("batch", key[0], batch["id"], batch)
            del state.open_batches[key]
            sealed += 1
    return sealed


def _int_param(request: Request, name: str, default: int) -> int:
    value = request.query_params.get(name)
    if value is None:
        return default
    try:
        return int(value)
    except ValueError as exc:
        raise errors.platform(
            400, "Bad Request", f"query parameter {name}={value!r} must be an integer", "CAT-1000"
        ) from exc


def _visible(state: State, sandbox: str) -> list[dict[str, Any]]:
    seal_batches(state)
    stored = list(state.resources["batch"][sandbox].values())
    open_ = [b for (sbx, _), b in state.open_batches.items() if sbx == sandbox]
    return stored + open_


@router.get("/data/foundation/catalog/batches")
async def list_batches(request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    batches = _visible(state, caller.sandbox.name)
    dataset = request.query_params.get("dataSet")
    status = request.query_params.get("status")
    after = _int_param(request, "createdAfter", -1)
    before = _int_param(request, "createdBefore", 2**63)
    if status and status not in STATUSES:
        raise errors.platform(
            400, "Bad Request", f"status {status!r} is not one of {', '.join(STATUSES)}", "CAT-1001"
        )
    selected = [
        b
        for b in batches
        if (not dataset or b["relatedObjects"][0]["id"] == dataset)
        and (not status or b["status"] == status)
        and after < b["created"] < before
    ]
    order = request.query_params.get("orderBy", "asc:created")
    direction, _, field = order.partition(":")
    if direction not in ("asc", "desc") or field not in ("created", "updated"):
        raise errors.platform(
            400, "Bad Request", f"orderBy {order!r} must be asc:created or desc:created", "CAT-1002"
        )
    selected.sort(key=lambda b: (b[field], b["id"]), reverse=direction == "desc")
    limit = _int_param(request, "limit", DEFAULT_LIMIT)
    start = _int_param(request, "start", 0)
    if limit < 1 or limit > MAX_LIMIT or start < 0:
        raise errors.platform(
            400, "Bad Request", f"limit must be 1..{MAX_LIMIT} and start >= 0", "CAT-1003"
        )
    page = selected[start : start + limit]
    headers = {"x-total-count": str(len(selected))}
    return errors.json_response({b["id"]: b for b in page}, headers=headers)


@router.get("/data/foundation/catalog/batches/{batch_id}")
async def get_batch(batch_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    caller = check_platform(request)
    batch = next((b for b in _visible(state, caller.sandbox.name) if b["id"] == batch_id), None)
    if batch is None:
        raise errors.platform(404, "Not Found", f"batch {batch_id} does not exist", "CAT-1004")
    return errors.json_response({batch_id: batch})
