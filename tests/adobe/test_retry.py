"""The one retry policy: Retry-After parsing, full-jitter backoff, 401 refresh, giving up."""

from __future__ import annotations

import random
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest
import requests

from cja_audiences.adobe.retry import (
    RetriesExhausted,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
    parse_retry_after,
)


def test_retry_after_seconds_and_http_date():
    now = datetime(2026, 11, 28, 12, 0, tzinfo=UTC)
    assert parse_retry_after("7") == 7.0
    assert parse_retry_after(format_datetime(now + timedelta(seconds=30), usegmt=True), now) == 30
    assert parse_retry_after("garbage") is None
    assert parse_retry_after(None) is None
    assert parse_retry_after("100000") == 300.0  # capped


def test_backoff_grows_exponentially_with_full_jitter_and_honours_retry_after():
    rng = random.Random(1)
    for attempt in range(1, 8):
        draws = [backoff_delay(attempt, base=0.5, cap=8, rng=rng) for _ in range(300)]
        ceiling = min(8, 0.5 * 2**attempt)
        assert max(draws) <= ceiling
        assert max(draws) > 0.8 * ceiling and min(draws) < 0.2 * ceiling  # jitter spreads
    assert all(backoff_delay(1, base=0.5, cap=8, retry_after=5, rng=rng) >= 5 for _ in range(50))


def answer(status: int, headers: dict[str, str] | None = None) -> requests.Response:
    response = requests.Response()
    response.status_code = status
    response.headers.update(headers or {})
    response._content = b"{}"
    return response


class FakeTokens:
    def __init__(self) -> None:
        self.issued = ["t1"]

    def token(self) -> str:
        return self.issued[-1]

    def refresh(self, rejected: str) -> str:
        self.issued.append(f"t{len(self.issued) + 1}")
        return self.issued[-1]


def test_throttling_waits_at_least_retry_after_then_succeeds():
    answers = [answer(429, {"Retry-After": "3"}), answer(503), answer(200)]
    slept: list[float] = []
    response = call_with_retries(
        lambda token: answers.pop(0), call="GET /x", policy=RetryPolicy(), sleep=slept.append
    )
    assert response.status_code == 200
    assert slept[0] >= 3 and len(slept) == 2


def test_dropped_connections_are_retried_and_giving_up_names_the_last_failure():
    def send(token):
        raise requests.ConnectionError("connection reset")

    with pytest.raises(RetriesExhausted, match="GET /x: gave up after 2 retries; last: Connection"):
        call_with_retries(
            send, call="GET /x", policy=RetryPolicy(max_retries=2), sleep=lambda s: None
        )


def test_an_auth_refusal_refreshes_the_token_once_and_is_not_a_retry():
    tokens = FakeTokens()
    seen: list[str | None] = []

    def send(token):
        seen.append(token)
        return answer(401 if token == "t1" else 200)

    retried: list[float] = []
    response = call_with_retries(
        send, call="GET /x", policy=RetryPolicy(), tokens=tokens, on_retry=retried.append
    )
    assert response.status_code == 200 and seen == ["t1", "t2"] and retried == []
    always = call_with_retries(
        lambda token: answer(401), call="GET /x", policy=RetryPolicy(), tokens=FakeTokens()
    )
    assert always.status_code == 401  # a second refusal is the caller's to report


def test_other_client_errors_are_returned_unretried():
    calls = []
    response = call_with_retries(
        lambda token: calls.append(token) or answer(404), call="GET /x", policy=RetryPolicy()
    )
    assert response.status_code == 404 and calls == [None]
