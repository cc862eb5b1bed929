"""Builders for XDM streaming messages shaped as Adobe's docs show them."""

from __future__ import annotations

from typing import Any


def profile_message(
    config: dict[str, Any],
    identity: str,
    audience_id: str | None = "aud-1",
    *,
    status: str = "realized",
    namespace: str = "ECID",
    qualified_at: str | None = "2026-11-01T10:00:00Z",
    segment_namespace: str = "ups",
    dataset_id: str | None = None,
    schema_id: str | None = None,
) -> dict[str, Any]:
    """One profile record envelope carrying an identity and (optionally) a membership."""
    schema = schema_id or config["schema_id"]
    ref = {"id": schema, "contentType": "application/vnd.adobe.xed-full+json;version=1"}
    entity: dict[str, Any] = {"identityMap": {namespace: [{"id": identity, "primary": True}]}}
    if audience_id is not None:
        entry: dict[str, Any] = {"status": status}
        if qualified_at is not None:
            entry["lastQualificationTime"] = qualified_at
        entity["segmentMembership"] = {segment_namespace: {audience_id: entry}}
    return {
        "header": {
            "schemaRef": ref,
            "imsOrgId": config["org_id"],
            "datasetId": dataset_id or config["dataset_id"],
            "source": {"name": "tests"},
        },
        "body": {"xdmMeta": {"schemaRef": ref}, "xdmEntity": entity},
    }


def batch(messages: list[dict[str, Any]]) -> dict[str, Any]:
    return {"messages": messages}
