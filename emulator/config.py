"""The emulator's static world: org, API clients, sandboxes, schemas, datasets and inlets.

It comes from ``default_config.json`` merged with an optional user file, so a demo works
with no set-up and a test can describe a different org without code changes.
"""

from __future__ import annotations

import json
import uuid
from pathlib import Path
from typing import Any
from zoneinfo import ZoneInfo, ZoneInfoNotFoundError

from pydantic import BaseModel, Field, field_validator

DEFAULT_CONFIG_PATH = Path(__file__).with_name("default_config.json")
PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
EVENT_CLASS = "https://ns.adobe.com/xdm/context/experienceevent"
IDENTITY_MAP_GROUP = "https://ns.adobe.com/xdm/context/identitymap"
SEGMENT_MEMBERSHIP_GROUP = "https://ns.adobe.com/xdm/context/profile-segmentation"
HTTP_API_CONNECTION_SPEC = "bc7b00d6-623a-4dfc-9fdb-f1240aeadaeb"  # Flow Service: HTTP API


class Client(BaseModel):
    client_id: str
    client_secret: str
    scopes: str
    org_id: str | None = None  # defaults to the top-level org


class Sandbox(BaseModel):
    name: str
    id: str
    type: str = "development"
    default: bool = False

    def as_dict(self) -> dict[str, Any]:
        """The ``sandbox`` object Platform APIs embed in their resources."""
        return {
            "sandboxId": self.id,
            "sandboxName": self.name,
            "type": self.type,
            "default": self.default,
        }


class Schema(BaseModel):
    id: str
    title: str = ""
    class_: str = Field(alias="class")
    sandbox: str = "prod"
    # field groups (``meta:extends``); by default a profile schema has what membership needs
    field_groups: list[str] = [IDENTITY_MAP_GROUP, SEGMENT_MEMBERSHIP_GROUP]
    union: bool = True  # enabled for Profile (``meta:immutableTags: ["union"]``)

    @property
    def is_profile(self) -> bool:
        return self.class_ == PROFILE_CLASS


class Dataset(BaseModel):
    id: str
    name: str = ""
    schemaId: str
    sandbox: str = "prod"
    profile_enabled: bool = True  # Catalog tag unifiedProfile ["enabled:true"]


class Inlet(BaseModel):
    id: str
    flow_id: str | None = None  # the dataflow behind the HTTP API connection
    name: str = ""
    sandbox: str = "prod"
    authenticated: bool = True
    connection_id: str | None = None  # its Flow Service base connection (default: derived)

    @property
    def base_connection_id(self) -> str:
        return self.connection_id or str(uuid.uuid5(uuid.NAMESPACE_URL, f"inlet:{self.id}"))


class IdentityNamespace(BaseModel):
    """An Identity Service namespace; ``NON_PEOPLE`` custom ones can key audience membership."""

    code: str
    name: str = ""
    idType: str = "CROSS_DEVICE"
    custom: bool = False
    id: int = 0

    @property
    def keys_membership(self) -> bool:
        """Inferred from Adobe's external-audience tutorial: a custom, non-people namespace."""
        return self.custom and self.idType == "NON_PEOPLE"


class Org(BaseModel):
    """Org-level switches a real org may lack (each refusal is modelled on Adobe's)."""

    external_segments: bool = True  # else Audiences API 403 UPAPI-113740-403
    abac_write: bool = True  # else Audiences API writes 403 UPAPI-113752-403


class Defaults(BaseModel):
    sandbox: str = "prod"
    inlet_id: str
    dataset_id: str
    segment_namespace: str = "cjaAudiences"


class CjaConfig(BaseModel):
    data_view_id: str
    data_view_name: str = "CJA audiences demo"
    dataset_id: str
    lake: str | None = None
    timezone: str = "UTC"  # the data view's time zone (IANA name): date ranges and day items
    person_dimension: str = "variables/personid"  # the data view's Person ID component
    rate_limit_requests: int = 12  # per user (client id) ...
    rate_limit_window_s: float = 6.0  # ... in this many seconds
    org_rate_limit_per_minute: int = 60  # reporting requests per org per minute
    max_concurrent_reports: int = 6  # per org
    max_report_items: int = 50_000  # settings.limit (rows per page)
    max_report_metrics: int = 20
    max_report_days: int = 549  # 18 months
    top_items_max: int = 1000

    @field_validator("timezone")
    @classmethod
    def _known_zone(cls, value: str) -> str:
        try:
            ZoneInfo(value)
        except (ZoneInfoNotFoundError, ValueError) as exc:
            raise ValueError(f"cja.timezone {value!r} is not an IANA time zone") from exc
        return value


class StreamingConfig(BaseModel):
    max_body_bytes: int = 1_048_576
    batch_window_s: float = 15.0


class EmulatorConfig(BaseModel):
    org_id: str
    tenant: str
    clients: list[Client]
    token_lifetime_s: float = 86399
    sandboxes: list[Sandbox]
    schemas: list[Schema]
    datasets: list[Dataset]
    inlets: list[Inlet]
    identity_namespaces: list[IdentityNamespace] = []
    org: Org = Org()
    defaults: Defaults
    cja: CjaConfig
    streaming: StreamingConfig = StreamingConfig()
    # Adobe's specs mark x-sandbox-name required; its sandbox page says an absent header
    # means the production sandbox. Strict by default (finds clients that omit it).
    require_sandbox_header: bool = True

    def client(self, client_id: str) -> Client | None:
        return next((c for c in self.clients if c.client_id == client_id), None)

    def client_org(self, client: Client) -> str:
        return client.org_id or self.org_id

    def sandbox(self, name: str) -> Sandbox | None:
        return next((s for s in self.sandboxes if s.name == name), None)

    @property
    def default_sandbox(self) -> Sandbox:
        return next((s for s in self.sandboxes if s.default), self.sandboxes[0])

    def schema(self, schema_id: str) -> Schema | None:
        return next((s for s in self.schemas if s.id == schema_id), None)

    def dataset(self, dataset_id: str) -> Dataset | None:
        return next((d for d in self.datasets if d.id == dataset_id), None)

    def inlet(self, inlet_id: str) -> Inlet | None:
        return next((i for i in self.inlets if i.id == inlet_id), None)

    def summary(self) -> dict[str, Any]:
        """The flat view tests and connections need (ids and demo credentials)."""
        client = self.clients[0]
        dataset = self.dataset(self.defaults.dataset_id)
        open_inlet = next((i for i in self.inlets if not i.authenticated), None)
        return {
            "client_id": client.client_id,
            "client_secret": client.client_secret,
            "scopes": client.scopes,
            "org_id": self.client_org(client),
            "tenant": self.tenant,
            "sandbox": self.defaults.sandbox,
            "inlet_id": self.defaults.inlet_id,
            "flow_id": self.inlet(self.defaults.inlet_id).flow_id,
            "unauthenticated_inlet_id": open_inlet.id if open_inlet else None,
            "dataset_id": self.defaults.dataset_id,
            "schema_id": dataset.schemaId if dataset else None,
            "segment_namespace": self.defaults.segment_namespace,
            "data_view_id": self.cja.data_view_id,
            "data_view_timezone": self.cja.timezone,
            "person_dimension": self.cja.person_dimension,
            "cja_dataset_id": self.cja.dataset_id,
            "token_lifetime_s": self.token_lifetime_s,
        }


def _merge(base: dict[str, Any], override: dict[str, Any]) -> dict[str, Any]:
    """Deep-merge objects; lists and scalars in ``override`` replace the base value."""
    merged = dict(base)
    for key, value in override.items():
        if isinstance(value, dict) and isinstance(merged.get(key), dict):
            merged[key] = _merge(merged[key], value)
        else:
            merged[key] = value
    return merged


def load_config(path: Path | str | None = None, **overrides: Any) -> EmulatorConfig:
    """Defaults, then the user's JSON file, then keyword overrides (from CLI flags)."""
    raw = json.loads(DEFAULT_CONFIG_PATH.read_text())
    if path:
        try:
            user = json.loads(Path(path).read_text())
        except (OSError, ValueError) as exc:
            raise SystemExit(f"emulator config {path}: cannot read it as JSON ({exc})") from exc
        raw = _merge(raw, user)
    raw = _merge(raw, {k: v for k, v in overrides.items() if v is not None})
    return EmulatorConfig.model_validate(raw)
