"""Airflow hook for Adobe Customer Journey Analytics: connection -> Reporting API client.

The connection is of type http (CONTRACTS.md): host = CJA base URL (https://cja.adobe.io),
login = client id, password = client secret, extra = org_id, sandbox, scopes, ims_url,
data_view_id, data_view_timezone (optional), person_dimension (optional). The client secret and every IMS token are registered with Airflow's secrets
masker before anything can log them. The client itself lives in the Airflow-free core
(``cja_audiences.extract.reporting``).
"""

from __future__ import annotations

from datetime import datetime
from pathlib import Path
from typing import Any

from airflow.sdk.log import mask_secret
from requests import Session

from cja_audiences.adobe.rate import SlidingWindowLimiter
from cja_audiences.airflow.hooks.adobe import AdobeHook
from cja_audiences.extract.reporting import (
    DEFAULT_PAGE_LIMIT,
    ReportingClient,
    ReportingSource,
    fetch_data_view_timezone,
)


class CJAHook(AdobeHook):
    """Reporting API calls with IMS bearer tokens, Adobe's rate limit and retries."""

    conn_name_attr = "cja_conn_id"
    default_conn_name = "cja_default"
    hook_name = "Adobe Customer Journey Analytics"
    host_label = "CJA base URL"
    host_placeholder = "https://cja.adobe.io"
    extra_placeholder = (
        '{"org_id": "...@AdobeOrg", "data_view_id": "dv_...", '
        '"ims_url": "https://ims-na1.adobelogin.com"}'
    )

    def __init__(self, cja_conn_id: str = default_conn_name, **kwargs: Any) -> None:
        super().__init__(cja_conn_id, "POST", **kwargs)
        self.cja_conn_id = cja_conn_id

    def get_conn(
        self, headers: dict[Any, Any] | None = None, extra_options: dict[str, Any] | None = None
    ) -> Session:
        """A keep-alive session; the client sets the bearer token per request."""
        return self.keep_alive_session(headers)

    def get_client(self, limiter: SlidingWindowLimiter | None = None) -> ReportingClient:
        """A Reporting API client for this connection (12 requests per 6 s by default)."""
        return ReportingClient(
            self.get_config(),
            session=self.get_conn(),
            limiter=limiter or SlidingWindowLimiter(),
            on_new_token=mask_secret,
        )

    def reporting_source(
        self,
        *,
        start: datetime,
        end: datetime,
        checkpoint_dir: Path,
        granularity: str = "day",
        page_limit: int = DEFAULT_PAGE_LIMIT,
        data_view_id: str | None = None,
    ) -> ReportingSource:
        """A resumable person-level pull of the connection's data view (or ``data_view_id``),
        cut at the data view's days: its time zone comes from the connection's
        ``data_view_timezone`` or, when that is unset, from CJA's Data Views API."""
        config = self.get_config()
        view = data_view_id or config.data_view_id
        if not view:
            raise ValueError(
                f"connection {self.cja_conn_id!r} has no data_view_id in its extra and none "
                "was given: add it to the connection or pass data_view_id"
            )
        return ReportingSource(
            self.get_client(),
            data_view_id=view,
            start=start,
            end=end,
            checkpoint_dir=checkpoint_dir,
            granularity=granularity,
            page_limit=page_limit,
            timezone=config.data_view_timezone or fetch_data_view_timezone(config, view),
            person_dimension=config.person_dimension,
        )
