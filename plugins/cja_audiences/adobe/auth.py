"""Adobe credentials and IMS OAuth server-to-server tokens, shared by the AEP and CJA clients.

No Airflow here: the hooks build an :class:`AdobeConfig` from a connection; scripts can build
one from an ``AIRFLOW_CONN_*`` JSON value. Secrets are ``SecretStr`` so they never print.
"""

from __future__ import annotations

import hashlib
import json
import os
import threading
import time
from dataclasses import dataclass
from typing import Any, Literal

import requests
from pydantic import BaseModel, SecretStr

from cja_audiences.adobe.retry import RetriesExhausted, RetryPolicy, call_with_retries

DEFAULT_SCOPES = "openid,AdobeID,read_organizations,additional_info.projectedProductContext,session"


class AdobeConfig(BaseModel):
    """Everything a client needs to talk to one Adobe org and sandbox."""

    base_url: str  # platform.adobe.io for AEP connections, cja.adobe.io for CJA connections
    client_id: str
    client_secret: SecretStr
    org_id: str
    sandbox: str = "prod"
    scopes: str = DEFAULT_SCOPES
    ims_url: str = "https://ims-na1.adobelogin.com"
    streaming_url: str = "https://dcs.adobedc.net"
    inlet_id: str | None = None
    flow_id: str | None = None  # the streaming dataflow's id (header.flowId), if it has one
    dataset_id: str | None = None
    schema_id: str | None = None
    segment_namespace: str | None = None  # the custom audience namespace; no default
    authenticated_inlet: bool = True
    rate_limit: float = 1500.0  # records/s; 0 = off
    concurrency: int = 4
    data_view_id: str | None = None  # CJA data view ("rsid" in Reporting API requests)
    # The data view's time zone (IANA name); None = ask CJA (GET /data/dataviews/{id})
    data_view_timezone: str | None = None
    # The data view's Person ID component (its id differs between data views)
    person_dimension: str = "variables/personid"
    publish_mode: Literal["streaming", "external_audience"] = "streaming"  # a spec may override
    external_base_connection_id: str | None = None  # AEP cloud-storage base connection
    external_location: str | None = None  # where membership files are written (a folder)
    external_source_path: str = ""  # the same folder as the base connection sees it
    timeout: float = 60.0

    @classmethod
    def from_connection(
        cls, host: str, login: str, password: str, extra: dict[str, Any] | None
    ) -> AdobeConfig:
        """From an Airflow http connection: host, login = client id, password = secret."""
        known = set(cls.model_fields) - {"base_url", "client_id", "client_secret"}
        fields = {k: v for k, v in (extra or {}).items() if k in known}
        return cls(base_url=host.rstrip("/"), client_id=login, client_secret=password, **fields)

    @classmethod
    def from_env(cls, conn_id: str) -> AdobeConfig:
        """From ``AIRFLOW_CONN_<CONN_ID>`` in JSON form, for the Airflow-free CLI."""
        name = f"AIRFLOW_CONN_{conn_id.upper()}"
        raw = os.environ.get(name)
        if not raw:
            raise LookupError(
                f"connection {conn_id!r} not found: set {name} to the connection's JSON form"
            )
        conn = json.loads(raw)
        extra = conn.get("extra") or {}
        if isinstance(extra, str):
            extra = json.loads(extra)
        return cls.from_connection(conn["host"], conn["login"], conn["password"], extra)

    def audience_namespace(self) -> str:
        """The custom identity namespace keying ``segmentMembership``; a clear error if unset."""
        if not self.segment_namespace:
            raise MissingAudienceNamespace(
                "the AEP connection (CJA_AUDIENCES_AEP_CONN_ID, default aep_default) has no "
                "extra field 'segment_namespace'. Name the "
                "custom identity namespace that keys this org's external audience membership. "
                "Adobe provisions it: create it in Identity Service (Identities > Create "
                "identity namespace, type Non-people identifier), then ask Adobe support to "
                "enable it for external audiences (help/segmentation/tutorials/"
                "using-external-audiences.md). AEP's own 'ups' namespace is not for this."
            )
        return self.segment_namespace

    def platform_headers(self, token: str) -> dict[str, str]:
        """The headers every Platform and CJA API call carries."""
        return {
            "Authorization": f"Bearer {token}",
            "x-api-key": self.client_id,
            "x-gw-ims-org-id": self.org_id,
            "x-sandbox-name": self.sandbox,
            "Accept": "application/json",
        }


class MissingAudienceNamespace(ValueError):
    """The AEP connection names no custom audience namespace."""


class ImsError(RuntimeError):
    """IMS refused the credentials or answered something unexpected."""


@dataclass
class _CachedToken:
    value: str
    refresh_at: float


_cache: dict[tuple[str, str, str, str], _CachedToken] = {}
_lock = threading.Lock()
REFRESH_MARGIN_S = 300.0
IMS_RETRIES = RetryPolicy(max_retries=5, backoff_base=0.5, backoff_cap=15.0)


def _cache_key(config: AdobeConfig) -> tuple[str, str, str, str]:
    """One token per credential: a rotated or wrong secret never reuses another's token."""
    secret = hashlib.sha256(config.client_secret.get_secret_value().encode()).hexdigest()
    return (config.ims_url, config.client_id, config.scopes, secret)


def get_token(config: AdobeConfig, session: requests.Session | None = None) -> str:
    """A bearer token for ``config``, cached per process until 5 minutes before expiry."""
    key = _cache_key(config)
    with _lock:
        cached = _cache.get(key)
        if cached and time.monotonic() < cached.refresh_at:
            return cached.value
        token, expires_in = _request_token(config, session or requests.Session())
        margin = min(REFRESH_MARGIN_S, expires_in * 0.1)
        _cache[key] = _CachedToken(token, time.monotonic() + expires_in - margin)
        return token


def invalidate_token(config: AdobeConfig) -> None:
    """Forget the cached token (after a 401), so the next call asks IMS again."""
    with _lock:
        _cache.pop(_cache_key(config), None)


def _request_token(config: AdobeConfig, session: requests.Session) -> tuple[str, float]:
    """POST /ims/token/v3, retried on throttling, 5xx and dropped connections like every call."""

    def send(_token: str | None) -> requests.Response:
        return session.post(
            f"{config.ims_url.rstrip('/')}/ims/token/v3",
            data={
                "grant_type": "client_credentials",
                "client_id": config.client_id,
                "client_secret": config.client_secret.get_secret_value(),
                "scope": config.scopes,
            },
            timeout=config.timeout,
        )

    try:
        response = call_with_retries(send, call="IMS token request", policy=IMS_RETRIES)
    except RetriesExhausted as exc:
        raise ImsError(str(exc)) from None
    if response.status_code != 200:
        # IMS error bodies name the problem (e.g. invalid_client) and never echo the secret.
        raise ImsError(
            f"IMS token request failed: HTTP {response.status_code}: {response.text[:300]}"
        )
    body = response.json()
    return body["access_token"], float(body["expires_in"])
