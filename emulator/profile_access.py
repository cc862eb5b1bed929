"""Profile Access API: ``/data/core/ups/access/entities`` (GET one identity, POST many)."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter, Request
from pydantic_core import from_json
from starlette.responses import Response

from emulator import errors, external_audiences
from emulator.auth import check_platform
from emulator.profiles import EPOCH_ISO, Profile, ProfileStore, entity_id, identity_key, iso_ms
from emulator.state import State

router = APIRouter()
PATH = "/data/core/ups/access/entities"
PROFILE_SCHEMA = "_xdm.context.profile"
EVENT_SCHEMA = "_xdm.context.experienceevent"
MAX_IDENTITIES = 50  # profiles linking more are excluded from lookup (422)
MAX_BULK = 1000


def _bad(detail: str, status: int = 400) -> errors.AdobeHTTPError:
    title = "Bad Request" if status == 400 else "Unprocessable Entity"
    return errors.platform(status, title, detail, "UPAPI")


def _project(entity: dict[str, Any], fields: list[str]) -> dict[str, Any]:
    """Keep only the dotted ``fields`` paths of ``entity`` (all of it without fields)."""
    if not fields:
        return entity
    out: dict[str, Any] = {}
    for path in fields:
        parts = path.split(".")
        source: Any = entity
        for part in parts:
            source = source.get(part) if isinstance(source, dict) else None
        if source is None:
            continue
        target = out
        for part in parts[:-1]:
            target = target.setdefault(part, {})
        target[parts[-1]] = source
    return out


def _view(
    profile: Profile | None,
    key: str,
    fields: list[str],
    now: float,
    requested: tuple[str, str],
    external: external_audiences.Memberships,
) -> dict[str, Any]:
    """The entity view; memberships of external audiences are merged in (a profile their
    file created exists with just that identity)."""
    pairs = [tuple(from_json(p)) for p in profile.identities.values()] if profile else []
    extra = external([(code, value["id"]) for code, value in pairs] or [requested])
    if profile is None and not extra:
        eid = entity_id(key)
        return {
            "entityId": eid,
            "sources": [],
            "tags": [],
            "identityGraph": [],
            "entity": {},
            "lastModifiedAt": EPOCH_ISO,
        }
    if profile is None:
        code, ident = requested
        entity: dict[str, Any] = {
            "identities": [{"id": ident, "namespace": {"code": code}}],
            "identityMap": {code: [{"id": ident}]},
        }
        graph, sources, modified, eid = [entity_id(key)], [], EPOCH_ISO, entity_id(key)
    else:
        graph = [entity_id(key) for key in profile.identities]
        if len(graph) > MAX_IDENTITIES:
            raise _bad("Too many related identities", status=422)
        entity = profile.entity(now)
        sources, eid = list(profile.sources), entity_id(profile.key)
        modified = iso_ms(profile.modified_at)[:-5] + "Z"
    if extra:
        merged = entity.setdefault("segmentMembership", {})
        for namespace, entries in extra.items():
            merged.setdefault(namespace, {}).update(entries)
    return {
        "entityId": eid,
        "mergePolicy": {"id": "emulator-default-merge-policy"},
        "sources": sources,
        "tags": [],
        "identityGraph": graph,
        "entity": _project(entity, fields),
        "lastModifiedAt": modified,
    }


def _store(request: Request) -> tuple[ProfileStore, State, external_audiences.Memberships]:
    state: State = request.app.state.emulator
    sandbox = check_platform(request).sandbox.name
    return state.profiles[sandbox], state, external_audiences.profile_memberships(state, sandbox)


def _fields(value: Any) -> list[str]:
    if value is None:
        return []
    if isinstance(value, str):
        return [f.strip() for f in value.split(",") if f.strip()]
    if isinstance(value, list) and all(isinstance(f, str) for f in value):
        return value
    raise _bad("fields must be a comma-separated string or a list of field paths")


def _check_schema(name: Any) -> None:
    if not name:
        raise _bad("schema.name is required (_xdm.context.profile)")
    if name not in (PROFILE_SCHEMA, EVENT_SCHEMA):
        raise _bad(f"schema.name {name!r} must be {PROFILE_SCHEMA} or {EVENT_SCHEMA}")


@router.get(PATH)
async def get_entity(request: Request) -> Response:
    store, state, external = _store(request)
    params = request.query_params
    schema = params.get("schema.name")
    _check_schema(schema)
    if schema == EVENT_SCHEMA:
        # Experience events are not stored by the emulator: an empty, final page.
        if not params.get("relatedEntityId"):
            raise _bad("relatedEntityId is required for experience event lookups")
        return errors.json_response({"_page": {"count": 0, "next": ""}, "children": []})
    ident = params.get("entityId")
    namespace = params.get("entityIdNS")
    if not ident:
        raise _bad("entityId is required")
    if not namespace:
        raise _bad("entityIdNS is required unless entityId is a profile id (XID)")
    key = identity_key(namespace, ident)
    profile = store.lookup(namespace, ident)
    fields = _fields(params.get("fields"))
    view = _view(profile, key, fields, state.now(), (namespace, ident), external)
    return errors.json_response({view["entityId"]: view})


@router.post(PATH)
async def get_entities(request: Request) -> Response:
    """Bulk lookup: ``{"schema": {"name"}, "fields", "identities": [{entityId, entityIdNS}]}``."""
    store, state, external = _store(request)
    now = state.now()
    try:
        body = from_json(await request.body())
    except ValueError as exc:
        raise _bad(f"Request body is not valid JSON: {exc}") from exc
    if not isinstance(body, dict):
        raise _bad("Request body must be a JSON object")
    _check_schema((body.get("schema") or {}).get("name"))
    identities = body.get("identities")
    if not isinstance(identities, list) or not identities:
        raise _bad("identities must be a non-empty list of {entityId, entityIdNS: {code}}")
    if len(identities) > MAX_BULK:
        raise _bad(f"at most {MAX_BULK} identities per request ({len(identities)} given)")
    fields = _fields(body.get("fields"))
    out: dict[str, Any] = {}
    for requested in identities:
        ident = requested.get("entityId") if isinstance(requested, dict) else None
        ns = (
            (requested.get("entityIdNS") or {}).get("code") if isinstance(requested, dict) else None
        )
        if not isinstance(ident, str) or not isinstance(ns, str):
            raise _bad(f"identity {requested!r} needs entityId and entityIdNS.code")
        profile = store.lookup(ns, ident)
        view = _view(profile, identity_key(ns, ident), fields, now, (ns, ident), external)
        view["requestedIdentities"] = [{"entityId": ident, "entityIdNS": {"code": ns}}]
        previous = out.get(view["entityId"])
        if previous is not None:
            previous["requestedIdentities"] += view["requestedIdentities"]
        else:
            out[view["entityId"]] = view
    return errors.json_response(out)
