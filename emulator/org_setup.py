"""The org's set-up as Adobe's own APIs describe it, for ``cja_audiences doctor``.

Schema Registry (one schema), Catalog (one dataset), Flow Service (HTTP API streaming
connections, i.e. inlets) and Identity Service (namespaces), all seeded from the emulator's
config. Shapes follow Adobe's API docs; where a doc shows no example (which Flow Service field
holds the inlet id) the choice is ours and listed in emulator/README.md.
"""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from starlette.responses import Response

from emulator import errors
from emulator.auth import Caller, check_platform
from emulator.config import HTTP_API_CONNECTION_SPEC, Inlet, Schema
from emulator.state import State

router = APIRouter()
XED = "application/vnd.adobe.xed"
XED_FULL = "application/vnd.adobe.xed-full+json;version=1"
CREATED_MS = 1_700_000_000_000


def _caller(request: Request) -> tuple[State, Caller]:
    return request.app.state.emulator, check_platform(request)


def _schema_view(state: State, schema: Schema) -> dict[str, Any]:
    sandbox = state.config.sandbox(schema.sandbox)
    extends = [schema.class_, *schema.field_groups, "https://ns.adobe.com/xdm/data/record"]
    view: dict[str, Any] = {
        "$id": schema.id,
        "meta:altId": "_"
        + schema.id.split("/schemas/")[0].rsplit("/", 1)[-1]
        + ".schemas."
        + schema.id.rsplit("/", 1)[-1],
        "meta:resourceType": "schemas",
        "version": "1.0",
        "title": schema.title,
        "type": "object",
        "description": "",
        "allOf": [{"$ref": ref, "type": "object"} for ref in (schema.class_, *schema.field_groups)],
        "meta:class": schema.class_,
        "meta:extends": extends,
        "meta:containerId": "tenant",
        "meta:tenantNamespace": f"_{state.config.tenant}",
        "meta:sandboxId": sandbox.id if sandbox else None,
        "meta:sandboxType": sandbox.type if sandbox else None,
    }
    if schema.union:
        view["meta:immutableTags"] = ["union"]
    return view


@router.get("/data/foundation/schemaregistry/tenant/schemas/{schema_id:path}")
async def get_schema(schema_id: str, request: Request) -> Response:
    """One schema by its ``$id`` (URL-encoded) with an ``application/vnd.adobe.xed+json``
    Accept header, as the Schema Registry API asks."""
    state, caller = _caller(request)
    if XED not in request.headers.get("accept", ""):
        raise errors.platform(
            406, "NotAcceptableError", f"Accept must be {XED}+json;version=1", "XDM-1010"
        )
    schema = state.schemas.get(schema_id)
    if schema is None or schema.sandbox != caller.sandbox.name:
        raise errors.platform(
            404, "NotFoundError", f"No schema found with id {schema_id}", "XDM-1021"
        )
    return errors.json_response(_schema_view(state, schema))


@router.get("/data/foundation/catalog/dataSets/{dataset_id}")
async def get_dataset(dataset_id: str, request: Request) -> Response:
    """Catalog answers a map ``{id: dataset}``; Profile-enabled datasets carry the
    ``unifiedProfile`` tag ``["enabled:true"]``."""
    state, caller = _caller(request)
    dataset = state.datasets.get(dataset_id)
    if dataset is None or dataset.sandbox != caller.sandbox.name:
        raise errors.platform(404, "Not Found", f"dataSet {dataset_id} was not found", "CAT-404")
    tags: dict[str, list[str]] = {}
    if dataset.profile_enabled:
        tags = {"unifiedProfile": ["enabled:true"], "unifiedIdentity": ["enabled:true"]}
    body = {
        dataset.id: {
            "name": dataset.name,
            "imsOrg": state.config.org_id,
            "sandboxId": state.config.sandbox(dataset.sandbox).id,
            "created": CREATED_MS,
            "updated": CREATED_MS,
            "schemaRef": {"id": dataset.schemaId, "contentType": XED_FULL},
            "tags": tags,
            "version": "1.0.0",
        }
    }
    return errors.json_response(body)


def _connection(inlet: Inlet, base_url: str) -> dict[str, Any]:
    params = {
        "sourceId": inlet.name or inlet.id,
        "dataType": "xdm",
        "name": inlet.name,
        "authenticationRequired": inlet.authenticated,
    }
    return {
        "id": inlet.base_connection_id,
        "createdAt": CREATED_MS,
        "updatedAt": CREATED_MS,
        "name": inlet.name,
        "description": "",
        "connectionSpec": {"id": HTTP_API_CONNECTION_SPEC, "version": "1.0"},
        "state": "enabled",
        "auth": {"specName": "Streaming Connection", "params": dict(params)},
        "params": {**params, "inletId": inlet.id, "inletUrl": f"{base_url}/collection/{inlet.id}"},
        "version": '"1"',
        "etag": '"1"',
    }


def _dotted(item: dict[str, Any], path: str) -> Any:
    for part in path.split("."):
        item = item.get(part) if isinstance(item, dict) else None
    return item


@router.get("/data/foundation/flowservice/connections")
async def list_connections(request: Request) -> Response:
    """Base connections of the sandbox; ``property=a.b==value`` filters (several AND)."""
    state, caller = _caller(request)
    base = str(request.base_url).rstrip("/")
    items = [
        _connection(i, base) for i in state.inlets.values() if i.sandbox == caller.sandbox.name
    ]
    for prop in request.query_params.getlist("property"):
        path, sep, value = prop.partition("==")
        if not sep:
            raise errors.platform(400, "Bad Request", f"property {prop!r}: use path==value", "FLOW")
        items = [c for c in items if str(_dotted(c, path.strip())).lower() == value.lower()]
    return errors.json_response({"items": items})


@router.get("/data/foundation/flowservice/connections/{connection_id}")
async def get_connection(connection_id: str, request: Request) -> Response:
    state, caller = _caller(request)
    base = str(request.base_url).rstrip("/")
    for inlet in state.inlets.values():
        if inlet.base_connection_id == connection_id and inlet.sandbox == caller.sandbox.name:
            return errors.json_response({"items": [_connection(inlet, base)]})
    raise errors.platform(404, "Not Found", f"connection {connection_id} not found", "FLOW")


@router.get("/data/core/idnamespace/identities")
async def list_namespaces(request: Request) -> Response:
    """Every namespace the org can use: standard ones (custom false) and its own."""
    state, _caller_ = _caller(request)
    return errors.json_response(
        [
            {
                "updateTime": CREATED_MS,
                "code": n.code,
                "status": "ACTIVE",
                "description": f"{n.name or n.code} Namespace",
                "id": n.id,
                "createTime": CREATED_MS,
                "idType": n.idType,
                "name": n.name or n.code,
                "custom": n.custom,
            }
            for n in state.namespaces.values()
        ]
    )
