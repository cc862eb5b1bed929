"""Airflow hook for Adobe Experience Platform: connection -> AdobeConfig, tokens, publishing.

The connection is of type http (CONTRACTS.md): host = platform base URL, login = client id,
password = client secret, extra = org_id, sandbox, scopes, ims_url, streaming_url, inlet_id,
dataset_id, schema_id, segment_namespace, authenticated_inlet, rate_limit, concurrency.
The client secret and every IMS token are registered with Airflow's secrets masker before
anything can log them.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from airflow.sdk.log import mask_secret
from requests import Response, Session

from cja_audiences.adobe.http import TokenProvider
from cja_audiences.airflow.hooks.adobe import AdobeHook
from cja_audiences.publish import decommission_run, publish_run
from cja_audiences.publish.streaming import PublishOptions


class AEPHook(AdobeHook):
    """Platform API calls with IMS bearer tokens (cached per process, refreshed once on 401)."""

    conn_name_attr = "aep_conn_id"
    default_conn_name = "aep_default"
    hook_name = "Adobe Experience Platform"
    host_label = "Platform base URL"
    host_placeholder = "https://platform.adobe.io"
    extra_placeholder = (
        '{"org_id": "...@AdobeOrg", "sandbox": "prod", "inlet_id": "...", '
        '"dataset_id": "...", "schema_id": "https://ns.adobe.com/<tenant>/schemas/<id>"}'
    )

    def __init__(self, aep_conn_id: str = default_conn_name, method: str = "GET", **kwargs: Any):
        super().__init__(aep_conn_id, method, **kwargs)
        self.aep_conn_id = aep_conn_id
        self._tokens: TokenProvider | None = None
        self._token: str | None = None

    @property
    def tokens(self) -> TokenProvider:
        if self._tokens is None:
            self._tokens = TokenProvider(self.get_config(), on_new_token=mask_secret)
        return self._tokens

    def get_token(self) -> str:
        """A bearer token (process cache until shortly before expiry), masked in logs."""
        return self.tokens.token()

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> Session:
        """A session with Adobe's platform headers; no basic auth and no extra-as-headers,
        because Adobe takes a bearer token and our extra fields are configuration."""
        config = self.get_config()
        self.base_url = config.base_url
        self._base_url_initialized = True
        self.merged_extra = {"timeout": config.timeout, **(extra_options or {})}
        self._token = self.get_token()
        return self.keep_alive_session({**self.tokens.headers(self._token), **(headers or {})})

    def run(
        self,
        endpoint: str | None = None,
        data: dict[str, Any] | str | None = None,
        headers: dict[str, Any] | None = None,
        extra_options: dict[str, Any] | None = None,
        **request_kwargs: Any,
    ) -> Response:
        """HttpHook.run, plus one token refresh and retry when the platform answers 401."""
        options = {**(extra_options or {}), "check_response": False}
        response = super().run(endpoint, data, headers, options, **request_kwargs)
        if response.status_code == 401 and self._token:
            self.log.info("platform answered 401; refreshing the IMS token once")
            self.tokens.refresh(self._token)
            response = super().run(endpoint, data, headers, options, **request_kwargs)
        if (extra_options or {}).get("check_response", True):
            self.check_response(response)
        return response

    def publish(
        self,
        spec: Any,
        run_dir: Path,
        *,
        full_republish: bool = False,
        dry_run: bool = False,
        options: PublishOptions | None = None,
    ) -> dict[str, Any]:
        """``publish_run`` with this connection's config and masked tokens."""
        return publish_run(
            self.get_config(),
            spec,
            run_dir,
            full_republish=full_republish,
            dry_run=dry_run,
            options=options,
            tokens=self.tokens,
        )

    def decommission(
        self,
        spec: Any,
        run_dir: Path,
        *,
        dry_run: bool = False,
        options: PublishOptions | None = None,
    ) -> dict[str, Any]:
        """``decommission_run``: every member exited, then the audience marked inactive."""
        return decommission_run(
            self.get_config(),
            spec,
            run_dir,
            dry_run=dry_run,
            options=options,
            tokens=self.tokens,
        )
