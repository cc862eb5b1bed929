"""What every Adobe hook shares: the connection read as an AdobeConfig, secrets masked, and a
plain keep-alive session (Adobe takes a bearer token; our extra fields are configuration,
not headers, so HttpHook's basic auth and extra-as-headers do not apply)."""

from __future__ import annotations

from typing import Any

from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import mask_secret
from requests import Session

from cja_audiences.adobe.auth import AdobeConfig


class AdobeHook(HttpHook):
    """Base of the AEP and CJA hooks; subclasses name their host and extra fields for the UI."""

    conn_type = "http"
    host_label = "Adobe base URL"
    host_placeholder = "https://platform.adobe.io"
    extra_placeholder = '{"org_id": "...@AdobeOrg"}'

    def __init__(self, conn_id: str, method: str, **kwargs: Any) -> None:
        super().__init__(method=method, http_conn_id=conn_id, **kwargs)
        self._config: AdobeConfig | None = None

    @classmethod
    def get_ui_field_behaviour(cls) -> dict[str, Any]:
        """Connection form labels that say what each Adobe field holds."""
        return {
            "hidden_fields": ["schema", "port"],
            "relabeling": {
                "host": cls.host_label,
                "login": "Client ID",
                "password": "Client secret",
            },
            "placeholders": {"host": cls.host_placeholder, "extra": cls.extra_placeholder},
        }

    def get_config(self) -> AdobeConfig:
        """The connection as an AdobeConfig; the client secret is masked from here on."""
        if self._config is None:
            conn = self.get_connection(self.http_conn_id)
            if conn.password:
                mask_secret(conn.password)
            self._config = AdobeConfig.from_connection(
                conn.host or "", conn.login or "", conn.password or "", conn.extra_dejson
            )
        return self._config

    def keep_alive_session(self, headers: dict[str, Any] | None = None) -> Session:
        session = Session()
        if self.keep_alive_adapter:
            session.mount("https://", self.keep_alive_adapter)
            session.mount("http://", self.keep_alive_adapter)
        if headers:
            session.headers.update(headers)
        return session
