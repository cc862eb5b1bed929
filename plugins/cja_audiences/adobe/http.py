"""The Adobe platform client: bearer tokens, headers and retries for JSON API calls.

Tokens come from ``adobe.auth.get_token`` (process cache, refreshed before expiry); retries
follow ``adobe.retry`` (the same rules as the streaming sender and the CJA clients).
"""

from __future__ import annotations

import threading
from collections.abc import Callable
from typing import Any

import requests

from cja_audiences.adobe.auth import AdobeConfig, get_token, invalidate_token
from cja_audiences.adobe.retry import RetriesExhausted, RetryPolicy, call_with_retries


class TokenProvider:
    """Bearer tokens for one config; refreshes at most once per token that got a 401.

    ``on_new_token`` lets an Airflow hook register each new token with the log masker.
    """

    def __init__(
        self, config: AdobeConfig, on_new_token: Callable[[str], None] | None = None
    ) -> None:
        self.config = config
        self._on_new_token = on_new_token
        self._lock = threading.Lock()
        self._seen: set[str] = set()

    def token(self) -> str:
        token = get_token(self.config)
        if token not in self._seen:
            with self._lock:
                if token not in self._seen:
                    self._seen.add(token)
                    if self._on_new_token:
                        self._on_new_token(token)
        return token

    def refresh(self, rejected: str) -> str:
        """A new token after ``rejected`` got a 401; concurrent callers share one IMS call."""
        with self._lock:
            if get_token(self.config) == rejected:
                invalidate_token(self.config)
        return self.token()

    def headers(self, token: str) -> dict[str, str]:
        return {**self.config.platform_headers(token), "Content-Type": "application/json"}


class PlatformError(RuntimeError):
    """A Platform API call failed for good; the message names the call and the status."""

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class PlatformClient:
    """JSON client for platform.adobe.io and cja.adobe.io routes (Audiences, Catalog, Segments)."""

    def __init__(
        self,
        config: AdobeConfig,
        tokens: TokenProvider,
        *,
        max_retries: int = 5,
        backoff_base: float = 0.5,
        backoff_cap: float = 30.0,
    ) -> None:
        self.config = config
        self.tokens = tokens
        self.policy = RetryPolicy(max_retries, backoff_base, backoff_cap)
        self.session = requests.Session()

    def request(
        self,
        method: str,
        path: str,
        *,
        json: Any = None,
        params: dict[str, Any] | None = None,
        headers: dict[str, str] | None = None,
    ) -> Any:
        """The decoded JSON body of a 2xx answer; raises ``PlatformError`` otherwise.

        ``headers`` add to (or override) the platform headers, e.g. the Schema Registry's
        ``Accept``."""
        url = f"{self.config.base_url}{path}"

        def send(token: str | None) -> requests.Response:
            return self.session.request(
                method,
                url,
                json=json,
                params=params,
                headers={**self.tokens.headers(token or ""), **(headers or {})},
                timeout=self.config.timeout,
            )

        try:
            response = call_with_retries(
                send, call=f"{method} {path}", policy=self.policy, tokens=self.tokens
            )
        except RetriesExhausted as exc:
            raise PlatformError(str(exc)) from None
        if response.status_code >= 400:
            raise PlatformError(
                f"{method} {path} failed: HTTP {response.status_code}: {response.text[:300]}",
                status=response.status_code,
            )
        return response.json() if response.content else {}

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
