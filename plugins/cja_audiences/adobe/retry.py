"""Retries for every Adobe call: one policy, one backoff formula, one 401 refresh.

429, 5xx, timeouts and dropped connections are retried with exponential backoff and full
jitter, waiting at least as long as a ``Retry-After`` asks; an authentication refusal
refreshes the bearer token once. IMS, the Platform APIs, the streaming inlet and the CJA
APIs all go through :func:`call_with_retries` (tenacity underneath).
"""

from __future__ import annotations

import logging
import random
import time
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from email.utils import parsedate_to_datetime
from typing import Protocol

import requests
import tenacity

log = logging.getLogger(__name__)

MAX_RETRY_AFTER_S = 300.0
TRANSIENT_ERRORS = (requests.Timeout, requests.ConnectionError)


@dataclass(frozen=True)
class RetryPolicy:
    """How often a transient failure is retried and how the waits grow."""

    max_retries: int = 5
    backoff_base: float = 0.5
    backoff_cap: float = 30.0


class Tokens(Protocol):
    """What a retried call needs of a token source (``http.TokenProvider``)."""

    def token(self) -> str: ...

    def refresh(self, rejected: str) -> str: ...


class RetriesExhausted(RuntimeError):
    """Every retry failed; the message names the call and the last failure."""

    def __init__(self, call: str, retries: int, last: str) -> None:
        super().__init__(f"{call}: gave up after {retries} retries; last: {last}")
        self.last = last


class _Transient(Exception):
    def __init__(self, what: str, retry_after: float | None = None) -> None:
        super().__init__(what)
        self.what = what
        self.retry_after = retry_after


def is_transient_status(status: int) -> bool:
    """Statuses worth retrying unchanged: throttling and server-side failures."""
    return status == 429 or status >= 500


def parse_retry_after(value: str | None, now: datetime | None = None) -> float | None:
    """Seconds asked for by a ``Retry-After`` header (delta-seconds or HTTP date), capped."""
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


def call_with_retries(
    send: Callable[[str | None], requests.Response],
    *,
    call: str,
    policy: RetryPolicy,
    tokens: Tokens | None = None,
    refresh_on: tuple[int, ...] = (401,),
    on_retry: Callable[[float], None] | None = None,
    on_refresh: Callable[[], None] | None = None,
    sleep: Callable[[float], None] = time.sleep,
) -> requests.Response:
    """The first answer of ``send(token)`` that is neither transient nor an auth refusal.

    ``send`` makes one request with the given bearer token (None without ``tokens``) and may
    wait for a rate limit first. The token is read from the cache on every attempt, since a
    long backoff may outlast it. Raises :class:`RetriesExhausted` when every retry failed.
    """
    refreshed = False

    def attempt() -> requests.Response:
        nonlocal refreshed
        token = tokens.token() if tokens else None
        while True:
            try:
                response = send(token)
            except TRANSIENT_ERRORS as exc:
                raise _Transient(f"{type(exc).__name__}: {exc}") from exc
            if response.status_code in refresh_on and tokens and not refreshed:
                refreshed = True
                token = tokens.refresh(token or "")
                if on_refresh:
                    on_refresh()
                continue
            if is_transient_status(response.status_code):
                raise _Transient(
                    f"HTTP {response.status_code}: {response.text[:200]}",
                    parse_retry_after(response.headers.get("Retry-After")),
                )
            return response

    def wait(state: tenacity.RetryCallState) -> float:
        failure = state.outcome.exception()  # type: ignore[union-attr]
        return backoff_delay(
            state.attempt_number,
            base=policy.backoff_base,
            cap=policy.backoff_cap,
            retry_after=getattr(failure, "retry_after", None),
        )

    def before_sleep(state: tenacity.RetryCallState) -> None:
        delay = state.next_action.sleep if state.next_action else 0.0
        failure = state.outcome.exception()  # type: ignore[union-attr]
        log.warning("%s failed (%s); retry %d in %.2fs", call, failure, state.attempt_number, delay)
        if on_retry:
            on_retry(delay)

    retrying = tenacity.Retrying(
        retry=tenacity.retry_if_exception_type(_Transient),
        stop=tenacity.stop_after_attempt(policy.max_retries + 1),
        wait=wait,
        sleep=sleep,
        before_sleep=before_sleep,
        reraise=True,
    )
    try:
        return retrying(attempt)
    except _Transient as exc:
        raise RetriesExhausted(call, policy.max_retries, exc.what) from None
