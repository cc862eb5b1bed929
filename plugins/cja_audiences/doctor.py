"""Pre-flight checks of an AEP org before anything is published: one verdict per check.

``python -m cja_audiences doctor`` prints one line per check (ok / the problem / the fix) and
the audience DAG runs the same checks before an audience's first publish. Each check is one
function over a :class:`Probe`; a mode with other needs (e.g. file-based external audiences)
passes its own list to :func:`run_doctor`. Routes and shapes are Adobe's (README "Doctor"):
IMS ``/ims/token/v3``, Schema Registry ``/data/foundation/schemaregistry/tenant/schemas/{id}``,
Catalog ``/data/foundation/catalog/dataSets/{id}``, Flow Service
``/data/foundation/flowservice/connections``, Identity Service
``/data/core/idnamespace/identities`` and the Audiences API ``/data/core/ups/audiences``.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import asdict, dataclass, field
from typing import Any
from urllib.parse import quote

from cja_audiences.adobe.audiences import AUDIENCES_PATH, explain_refusal
from cja_audiences.adobe.auth import (
    AdobeConfig,
    ImsError,
    MissingAudienceNamespace,
    get_token,
    invalidate_token,
)
from cja_audiences.adobe.http import PlatformClient, PlatformError, TokenProvider
from cja_audiences.lake.storage import lake_path, makedirs

PROFILE_CLASS = "https://ns.adobe.com/xdm/context/profile"
SEGMENT_MEMBERSHIP_GROUP = "https://ns.adobe.com/xdm/context/profile-segmentation"
IDENTITY_MAP_GROUP = "https://ns.adobe.com/xdm/context/identitymap"
HTTP_API_CONNECTION_SPEC = "bc7b00d6-623a-4dfc-9fdb-f1240aeadaeb"
XED = "application/vnd.adobe.xed+json;version=1"


@dataclass(frozen=True)
class Verdict:
    """One check's outcome: ``fix`` says what to do when ``ok`` is False."""

    check: str
    ok: bool
    detail: str
    fix: str | None = None

    def line(self) -> str:
        head = f"{'ok' if self.ok else 'FAIL':<4} {self.check}: {self.detail}"
        return head if self.ok or not self.fix else f"{head} -- fix: {self.fix}"


class CheckFailed(Exception):
    """Raised inside a check: the problem and its fix."""

    def __init__(self, detail: str, fix: str) -> None:
        super().__init__(detail)
        self.detail = detail
        self.fix = fix


@dataclass
class Probe:
    """What the checks share: the connection's config and one platform client."""

    config: AdobeConfig
    client: PlatformClient
    found: dict[str, Any] = field(default_factory=dict)  # what earlier checks read

    def get(self, path: str, **kwargs: Any) -> Any:
        return self.client.request("GET", path, **kwargs)


Check = Callable[[Probe], str]  # returns the ok detail, raises CheckFailed


@dataclass
class DoctorReport:
    verdicts: list[Verdict]

    @property
    def ok(self) -> bool:
        return all(v.ok for v in self.verdicts)

    def text(self) -> str:
        return "\n".join(v.line() for v in self.verdicts)

    def as_dict(self) -> dict[str, Any]:
        return {"ok": self.ok, "checks": [asdict(v) for v in self.verdicts]}


def check_credentials(probe: Probe) -> str:
    invalidate_token(probe.config)  # a cached token would hide a wrong secret
    try:
        get_token(probe.config)
    except ImsError as exc:
        raise CheckFailed(
            str(exc),
            "use the client id (login) and client secret (password) of the project's OAuth "
            "Server-to-Server credential in the Adobe Developer Console, and only scopes "
            "listed there (extra.scopes)",
        ) from None
    return f"IMS issued a token to client {probe.config.client_id} (scopes {probe.config.scopes})"


def check_sandbox(probe: Probe) -> str:
    """The gateway refuses a sandbox the credential cannot use on any Platform call."""
    try:
        probe.found["namespaces"] = probe.get("/data/core/idnamespace/identities")
    except PlatformError as exc:
        raise CheckFailed(
            f"sandbox {probe.config.sandbox!r} refused: {exc}",
            "set extra.sandbox to a sandbox's technical name (Sandboxes in the AEP UI) and "
            "add that sandbox to the credential's product profile in Admin Console",
        ) from None
    return f"sandbox {probe.config.sandbox!r} answers"


def check_schema(probe: Probe) -> str:
    schema_id = probe.config.schema_id
    if not schema_id:
        raise CheckFailed("extra.schema_id is not set", "set it to the profile schema's $id")
    path = f"/data/foundation/schemaregistry/tenant/schemas/{quote(schema_id, safe='')}"
    try:
        schema = probe.get(path, headers={"Accept": XED})
    except PlatformError as exc:
        raise CheckFailed(
            f"schema {schema_id} cannot be read: {exc}",
            "copy the schema's $id from Schemas in the AEP UI (the sandbox must match)",
        ) from None
    extends = set(schema.get("meta:extends", []))
    if schema.get("meta:class") != PROFILE_CLASS:
        raise CheckFailed(
            f"schema {schema_id} has class {schema.get('meta:class')}, not XDM Individual Profile",
            "use a schema of the XDM Individual Profile class",
        )
    missing = [
        name
        for name, group in (
            ("Segment Membership Details", SEGMENT_MEMBERSHIP_GROUP),
            ("Identity Map", IDENTITY_MAP_GROUP),
        )
        if group not in extends
    ]
    if missing:
        raise CheckFailed(
            f"schema {schema_id} lacks the field group(s) {', '.join(missing)}",
            "add them to the schema in the AEP UI (Schemas > the schema > Add field groups)",
        )
    if "union" not in schema.get("meta:immutableTags", []):
        raise CheckFailed(
            f"schema {schema_id} is not enabled for Profile",
            "turn on the Profile toggle of the schema in the AEP UI",
        )
    return (
        f"schema {schema.get('title') or schema_id}: Individual Profile, membership, identity map"
    )


def check_dataset(probe: Probe) -> str:
    dataset_id = probe.config.dataset_id
    if not dataset_id:
        raise CheckFailed("extra.dataset_id is not set", "set it to the profile dataset's id")
    try:
        body = probe.get(f"/data/foundation/catalog/dataSets/{quote(dataset_id, safe='')}")
    except PlatformError as exc:
        raise CheckFailed(
            f"dataset {dataset_id} cannot be read: {exc}",
            "copy the dataset id from Datasets in the AEP UI (the sandbox must match)",
        ) from None
    dataset = body.get(dataset_id) or next(iter(body.values()), {})
    schema = (dataset.get("schemaRef") or {}).get("id")
    if schema != probe.config.schema_id:
        raise CheckFailed(
            f"dataset {dataset_id} is on schema {schema}, not {probe.config.schema_id}",
            "point extra.schema_id at the dataset's schema or use a dataset on that schema",
        )
    if "enabled:true" not in (dataset.get("tags") or {}).get("unifiedProfile", []):
        raise CheckFailed(
            f"dataset {dataset_id} is not enabled for Profile: its records never reach "
            "Real-Time Customer Profile",
            "turn on the dataset's Profile toggle in the AEP UI (Datasets > the dataset)",
        )
    return f"dataset {dataset.get('name') or dataset_id} is on the schema and Profile-enabled"


def check_inlet(probe: Probe) -> str:
    inlet_id = probe.config.inlet_id
    if not inlet_id:
        raise CheckFailed("extra.inlet_id is not set", "set it to the HTTP API inlet's id")
    body = probe.get(
        "/data/foundation/flowservice/connections",
        params={"property": f"connectionSpec.id=={HTTP_API_CONNECTION_SPEC}"},
    )
    found = next(
        (
            c
            for c in body.get("items", [])
            if inlet_id in ((c.get("params") or {}).get("inletId"), c.get("id"))
        ),
        None,
    )
    if found is None:
        raise CheckFailed(
            f"no HTTP API streaming connection has inlet {inlet_id} in sandbox "
            f"{probe.config.sandbox}",
            "copy the inlet id from Sources > HTTP API > the connection (its streaming "
            "endpoint URL ends with it), or create an HTTP API streaming connection",
        )
    required = bool((found.get("params") or {}).get("authenticationRequired"))
    if required and not probe.config.authenticated_inlet:
        raise CheckFailed(
            f"inlet {inlet_id} requires authentication but extra.authenticated_inlet is false",
            "set extra.authenticated_inlet to true",
        )
    kind = "authenticated" if required else "unauthenticated"
    return f"inlet {found.get('name') or inlet_id} exists ({kind})"


def check_namespace(probe: Probe) -> str:
    try:
        code = probe.config.audience_namespace()
    except MissingAudienceNamespace as exc:
        raise CheckFailed(str(exc), "set extra.segment_namespace") from None
    namespaces = probe.found.get("namespaces")
    if namespaces is None:
        namespaces = probe.get("/data/core/idnamespace/identities")
    match = next((n for n in namespaces if str(n.get("code")).lower() == code.lower()), None)
    provision = (
        "create it in Identity Service as a custom namespace of type Non-people identifier, "
        "then ask Adobe support to enable custom namespaces for external audiences "
        "(help/segmentation/tutorials/using-external-audiences.md)"
    )
    if match is None:
        raise CheckFailed(f"namespace {code!r} is not provisioned in this sandbox", provision)
    if not match.get("custom") or match.get("idType") != "NON_PEOPLE":
        raise CheckFailed(
            f"namespace {code!r} is {match.get('idType')} "
            f"({'custom' if match.get('custom') else 'standard'}): audience membership needs "
            "a custom non-people namespace",
            provision,
        )
    return f"namespace {code!r} is a custom non-people namespace"


def check_audiences(probe: Probe) -> str:
    """Read access to the Audiences API; a refused registration later says what is missing."""
    try:
        probe.get(AUDIENCES_PATH, params={"limit": 1})
    except PlatformError as exc:
        refusal = explain_refusal(exc, "(doctor)", probe.config.sandbox)
        raise CheckFailed(str(refusal), "see the message for the missing permission") from None
    return (
        "the Audiences API answers; write access and the org's external-audience "
        "entitlement are proven by the first registration, which explains a refusal"
    )


def check_base_connection(probe: Probe) -> str:
    """The cloud-storage source AEP reads the external audience files through."""
    connection_id = probe.config.external_base_connection_id
    if not connection_id:
        raise CheckFailed(
            "extra.external_base_connection_id is not set",
            "set it to the base connection id of the cloud-storage source AEP reads the files "
            "from (Sources > Accounts in the AEP UI, or the Flow Service API)",
        )
    try:
        items = probe.get(f"/data/foundation/flowservice/connections/{quote(connection_id)}")
    except PlatformError as exc:
        raise CheckFailed(
            f"base connection {connection_id} not found in sandbox {probe.config.sandbox}: {exc}",
            "create a cloud-storage source account (e.g. Amazon S3) in this sandbox and use "
            "its base connection id",
        ) from None
    found = (items.get("items") or [{}])[0]
    if found.get("state", "enabled") != "enabled":
        raise CheckFailed(
            f"base connection {connection_id} is {found.get('state')}",
            "enable the source account in the AEP UI",
        )
    return f"base connection {found.get('name') or connection_id} is enabled"


def check_storage_location(probe: Probe) -> str:
    """We can write where the files go (a probe file, removed again)."""
    location = probe.config.external_location
    if not location:
        raise CheckFailed(
            "extra.external_location is not set",
            "set it to the folder the base connection reads (external_source_path: the same "
            "folder as the connection names it)",
        )
    target = lake_path(location) / ".cja-audiences-doctor"
    try:
        makedirs(target.parent)
        target.write_text("ok")
        target.unlink()
    except OSError as exc:
        raise CheckFailed(
            f"cannot write to {location}: {exc}",
            "give the workers write access to the folder (or bucket prefix)",
        ) from None
    return f"files can be written to {location}"


# the external_audience mode needs neither inlet, profile schema nor audience namespace
EXTERNAL_AUDIENCE_CHECKS: tuple[tuple[str, Check], ...] = (
    ("credentials", check_credentials),
    ("sandbox", check_sandbox),
    ("base_connection", check_base_connection),
    ("storage_location", check_storage_location),
)
STREAMING_CHECKS: tuple[tuple[str, Check], ...] = (
    ("credentials", check_credentials),
    ("sandbox", check_sandbox),
    ("schema", check_schema),
    ("dataset", check_dataset),
    ("inlet", check_inlet),
    ("namespace", check_namespace),
    ("audiences", check_audiences),
)


def checks_for(mode: str) -> Sequence[tuple[str, Check]]:
    """The checks a publishing mode needs (``streaming`` or ``external_audience``)."""
    return EXTERNAL_AUDIENCE_CHECKS if mode == "external_audience" else STREAMING_CHECKS


def run_doctor(
    config: AdobeConfig,
    checks: Sequence[tuple[str, Check]] | None = None,
    tokens: TokenProvider | None = None,
) -> DoctorReport:
    """Every check in order (default: those of the connection's ``publish_mode``); after a
    failed credentials check the rest are skipped."""
    checks = checks if checks is not None else checks_for(config.publish_mode)
    verdicts: list[Verdict] = []
    with PlatformClient(config, tokens or TokenProvider(config), max_retries=2) as client:
        probe = Probe(config, client)
        for name, check in checks:
            if verdicts and not verdicts[0].ok and verdicts[0].check == "credentials":
                verdicts.append(Verdict(name, False, "skipped: needs valid credentials"))
                continue
            try:
                verdicts.append(Verdict(name, True, check(probe)))
            except CheckFailed as exc:
                verdicts.append(Verdict(name, False, exc.detail, exc.fix))
            except PlatformError as exc:
                verdicts.append(Verdict(name, False, str(exc), "see the message"))
    return DoctorReport(verdicts)
