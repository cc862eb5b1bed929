"""AEP's External Audiences API: file-based audiences with Adobe-managed expiry.

Routes (help/segmentation/api/external-audiences.md, the create-external-audience tutorial;
adobe-apis.md §10): ``POST /data/core/ais/external-audience/`` answers an operation id;
``GET .../operations/{id}`` gives the audience id once created; ``POST .../{id}/runs`` starts
an ingestion of the files the time window selects; ``GET .../{id}/runs/{runId}`` polls it.
"""

from __future__ import annotations

from typing import Any

from cja_audiences.adobe.http import PlatformClient, PlatformError

BASE = "/data/core/ais/external-audience"
IDENTITY_FIELD = "identity"
DEFAULT_NAMESPACE = "CustomerAudienceUpload"  # an audience's namespace unless created with one
DELETE_FIELD = "delete"  # 1 removes the row's identity in a differential run (Adobe's example)


def create_request(
    *,
    name: str,
    description: str,
    namespace: str,
    path: str,
    base_connection_id: str,
    ttl_days: int,
) -> dict[str, Any]:
    """The documented create body: an identity column, the delete flag, a folder source."""
    return {
        "name": name,
        "description": description,
        "fields": [
            {"name": IDENTITY_FIELD, "type": "string", "identityNs": namespace},
            {"name": DELETE_FIELD, "type": "number"},
        ],
        "sourceSpec": {
            "params": {
                "path": path,
                "type": "folder",
                "sourceType": "Cloud Storage",
                "baseConnectionId": base_connection_id,
            }
        },
        "ttlInDays": ttl_days,
        "labels": [],
        "audienceType": "people",
        "originName": "CUSTOM_UPLOAD",
    }


def create(client: PlatformClient, body: dict[str, Any]) -> str:
    """Start creating the audience; returns the operation id to poll."""
    return client.request("POST", f"{BASE}/", json=body)["operationId"]


def operation(client: PlatformClient, operation_id: str) -> dict[str, Any]:
    """``{status: PROCESSING | SUCCESS | FAILED, audienceId (once created), ...}``."""
    return client.request("GET", f"{BASE}/operations/{operation_id}")


def get(client: PlatformClient, audience_id: str) -> dict[str, Any]:
    """The audience: ``name``, ``namespace`` (its key under ``segmentMembership``), ..."""
    return client.request("GET", f"{BASE}/{audience_id}")


def update(client: PlatformClient, audience_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """PATCH what Adobe lets change: description, labels, fields, ttlInDays."""
    return client.request("PATCH", f"{BASE}/{audience_id}", json=changes)


def delete(client: PlatformClient, audience_id: str) -> None:
    try:
        client.request("DELETE", f"{BASE}/{audience_id}")
    except PlatformError as exc:
        if exc.status != 404:  # already gone is what we wanted
            raise


def start_run(
    client: PlatformClient, audience_id: str, *, start: int, differential: bool
) -> dict[str, Any]:
    """Ingest the files modified since ``start`` (epoch seconds); returns the run."""
    body = {"dataFilterStartTime": start, "differentialIngestion": differential}
    return client.request("POST", f"{BASE}/{audience_id}/runs", json=body)


def get_run(client: PlatformClient, audience_id: str, run_id: str) -> dict[str, Any]:
    return client.request("GET", f"{BASE}/{audience_id}/runs/{run_id}")


def list_runs(client: PlatformClient, audience_id: str) -> list[dict[str, Any]]:
    return client.request("GET", f"{BASE}/{audience_id}/runs", params={"limit": 40})["runs"]
