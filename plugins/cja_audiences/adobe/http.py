"""HTTP plumbing shared by the streaming sender and the Audiences API client.

Tokens come from ``adobe.auth.get_token`` (process cache, refreshed before expiry). A 401
refreshes the token once; 429, 5xx, timeouts and dropped connections are retried with
exponential backoff and full jitter, waiting at least as long as a ``Retry-After`` asks.
"""

from __future__ import annotations

import random
import threading
import time
from collections.abc import Callable
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Any

import requests

from cja_audiences.adobe.auth import AdobeConfig, get_token, invalidate_token

MAX_RETRY_AFTER_S = 300.0
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError)


def is_transient_status(status: int) -> bool:
    """Statuses worth retrying unchanged: throttling and server-side failures."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date)."""
    if not value:
        return None
    value = value.strip()
    try:
        seconds = float(value)
    except ValueError:
        try:
            when = parsedate_to_datetime(value)
        except (TypeError, ValueError):
            return None
        if when.tzinfo is None:
            when = when.replace(tzinfo=UTC)
        seconds = (when - (now or datetime.now(UTC))).total_seconds()
    return min(max(seconds, 0.0), MAX_RETRY_AFTER_S)


def backoff_delay(
    attempt: int,
    *,
    base: float,
    cap: float,
    retry_after: float | None = None,
    rng: random.Random | None = None,
) -> float:
    """Seconds to wait before retry number ``attempt`` (1-based).

    Full jitter (uniform in [0, min(cap, base * 2**attempt)]) spreads retries from parallel
    workers; a server's Retry-After is a floor, never shortened by the jitter.
    """
    draw = (rng or random).uniform(0.0, min(cap, base * 2**attempt))
    return max(draw, retry_after) if retry_after is not None else draw


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
    """Small JSON client for platform.adobe.io routes (the Audiences API)."""

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
        self.max_retries = max_retries
        self.backoff_base = backoff_base
        self.backoff_cap = backoff_cap
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
        token = self.tokens.token()
        refreshed = False
        attempt = 0
        while True:
            try:
                response = self.session.request(
                    method,
                    url,
                    json=json,
                    params=params,
                    headers={**self.tokens.headers(token), **(headers or {})},
                    timeout=self.config.timeout,
                )
            except TRANSIENT_ERRORS as exc:
                attempt = self._wait_or_fail(attempt, f"{method} {path}: {exc}", None)
                continue
            if response.status_code == 401 and not refreshed:
                token, refreshed = self.tokens.refresh(token), True
                continue
            if is_transient_status(response.status_code):
                attempt = self._wait_or_fail(
                    attempt,
                    f"{method} {path}: HTTP {response.status_code}",
                    parse_retry_after(response.headers.get("Retry-After")),
                )
                continue
            if response.status_code >= 400:
                raise PlatformError(
                    f"{method} {path} failed: HTTP {response.status_code}: {response.text[:300]}",
                    status=response.status_code,
                )
            return response.json() if response.content else {}

    def _wait_or_fail(self, attempt: int, what: str, retry_after: float | None) -> int:
        attempt += 1
        if attempt > self.max_retries:
            raise PlatformError(f"{what} (gave up after {self.max_retries} retries)")
        time.sleep(
            backoff_delay(
                attempt, base=self.backoff_base, cap=self.backoff_cap, retry_after=retry_after
            )
        )
        return attempt

    def close(self) -> None:
        self.session.close()

    def __enter__(self) -> PlatformClient:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
