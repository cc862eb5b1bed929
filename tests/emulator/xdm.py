"""Builders for XDM streaming messages shaped as Adobe's docs show them."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta, timezone
from typing import Any

_NOW = datetime.now(UTC).replace(microsecond=0)


def recent(hours_ago: float = 1.0, offset_hours: int = 0) -> str:
    """A qualification time ``hours_ago`` before the test session started (recent enough not
    to have lapsed: AEP keeps a membership 30 days), written with a UTC offset."""
    moment = (_NOW - timedelta(hours=hours_ago)).astimezone(timezone(timedelta(hours=offset_hours)))
    return moment.isoformat().replace("+00:00", "Z")


RECENT = recent()


def profile_message(
    config: dict[str, Any],
    identity: str,
    audience_id: str | None = "aud-1",
    *,
    status: str = "realized",
    namespace: str = "ECID",
    qualified_at: str | None = RECENT,
    segment_namespace: str = "cjaAudiences",
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
