"""The audience object in AEP, kept in step with the spec (Audiences API, adobe-apis.md §6.1).

Registered on first publish so the audience shows in the AEP UI with our name and
description; name, description and tags follow later spec changes. Nothing here deletes an
AEP audience: activations may depend on it. Decommissioning marks it ``inactive`` after its
members have been sent as exited (see ``publish.decommission_run``).
"""

from __future__ import annotations

from typing import Any
from urllib.parse import quote

from cja_audiences.adobe.http import PlatformClient, PlatformError

AUDIENCES_PATH = "/data/core/ups/audiences"
ORIGIN_NAME = "CUSTOM_UPLOAD"  # the value for CJA-published audiences is unconfirmed (§6.1)
AEP_UI_AUDIENCE_URL = (
    "https://experience.adobe.com/#/@{org}/sname:{sandbox}/platform/segment/browse/{id}"
)


def display_name(spec: Any) -> str:
    """``<name> (<id>)``: unique in AEP's list, and traceable back to the spec file."""
    return f"{spec.name} ({spec.id})"


def desired_fields(spec: Any) -> dict[str, Any]:
    return {"name": display_name(spec), "description": spec.description, "tags": list(spec.tags)}


def find_audience(client: PlatformClient, audience_id: str) -> dict[str, Any] | None:
    """The AEP audience whose ``audienceId`` is the spec id, if it exists."""
    body = client.request(
        "GET", AUDIENCES_PATH, params={"property": f"audienceId=={audience_id}", "limit": 10}
    )
    for child in body.get("children", []):
        if child.get("audienceId") == audience_id:
            return child
    return None


class RegistrationRefused(PlatformError):
    """AEP refused to register or update the audience; the message names what is missing."""


# Adobe's 403 examples for /audiences (segmentation.yaml) -> what the org or credential lacks
REFUSALS = (
    (
        ("UPAPI-113740", "not enabled for External Segment"),
        "the org is not enabled for external audiences (UPAPI-113740-403). Ask Adobe support "
        "or your account team to enable external audiences (external segments) for the org",
    ),
    (
        ("UPAPI-113752", "Permission denied on some resources"),
        "the API credential lacks permission on audiences in this sandbox (attribute-based "
        "access control, UPAPI-113752-403). In Adobe Admin Console > Experience Platform, give "
        "the credential's product profile the 'Manage Audiences' and 'View Audiences' "
        "permissions for the sandbox, and the labels of the audience's data, if any",
    ),
)


def explain_refusal(error: PlatformError, audience_id: str, sandbox: str) -> PlatformError:
    """A 403 from the Audiences API turned into the entitlement or setting that is missing."""
    if error.status != 403:
        return error
    text = str(error)
    for needles, reason in REFUSALS:
        if any(needle in text for needle in needles):
            return RegistrationRefused(
                f"AEP refused to register audience {audience_id} in sandbox {sandbox}: {reason}. "
                f"AEP said: {text}",
                status=403,
            )
    return RegistrationRefused(
        f"AEP refused to register audience {audience_id} in sandbox {sandbox} (HTTP 403): "
        f"check the credential's product profile has audience permissions there. AEP said: {text}",
        status=403,
    )


def ensure_audience(client: PlatformClient, spec: Any, *, segment_namespace: str) -> dict[str, Any]:
    """Create the audience, or update what changed; returns {id, audienceId, name, action}.

    A 403 becomes a :class:`RegistrationRefused` naming the missing entitlement."""
    try:
        return _ensure(client, spec, segment_namespace)
    except PlatformError as exc:
        raise explain_refusal(exc, spec.id, client.config.sandbox) from exc


def _ensure(client: PlatformClient, spec: Any, segment_namespace: str) -> dict[str, Any]:
    existing = find_audience(client, spec.id)
    wanted = desired_fields(spec)
    if existing is None:
        created = client.request(
            "POST",
            AUDIENCES_PATH,
            json={
                "audienceId": spec.id,
                "namespace": segment_namespace,
                "type": "ExternalSegment",
                "originName": ORIGIN_NAME,
                "lifecycleState": "published",
                **wanted,
            },
        )
        return _summary(created, "created")
    changes = {k: v for k, v in wanted.items() if existing.get(k, [] if k == "tags" else "") != v}
    if existing.get("lifecycleState") == "inactive":
        changes["lifecycleState"] = "published"  # publishing again brings it back
    if not changes:
        return _summary(existing, "unchanged")
    return _summary(patch_audience(client, existing["id"], changes), "updated")


def deactivate_audience(client: PlatformClient, audience_id: str) -> dict[str, Any] | None:
    """Mark the audience ``inactive`` (never deleted); None when it was never registered."""
    existing = find_audience(client, audience_id)
    if existing is None:
        return None
    if existing.get("lifecycleState") == "inactive":
        return _summary(existing, "unchanged")
    return _summary(
        patch_audience(client, existing["id"], {"lifecycleState": "inactive"}), "deactivated"
    )


def patch_audience(client: PlatformClient, aep_id: str, changes: dict[str, Any]) -> dict[str, Any]:
    """JSON Patch (RFC 6902) of top-level fields, the form AEP's PATCH routes take."""
    operations = [{"op": "add", "path": f"/{k}", "value": v} for k, v in changes.items()]
    return client.request("PATCH", f"{AUDIENCES_PATH}/{quote(aep_id, safe='')}", json=operations)


def audience_url(org_id: str, sandbox: str, aep_id: str) -> str:
    """The audience's page in the AEP UI (Experience Cloud shell)."""
    return AEP_UI_AUDIENCE_URL.format(org=org_id, sandbox=sandbox, id=aep_id)


def _summary(audience: dict[str, Any], action: str) -> dict[str, Any]:
    return {
        "id": audience.get("id"),
        "audienceId": audience.get("audienceId"),
        "name": audience.get("name"),
        "lifecycleState": audience.get("lifecycleState"),
        "action": action,
    }
