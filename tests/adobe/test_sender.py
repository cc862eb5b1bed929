from __future__ import annotations

import json
import random
import threading
import time
from datetime import UTC, datetime, timedelta
from email.utils import format_datetime

import pytest

from cja_audiences.adobe.http import backoff_delay, parse_retry_after
from cja_audiences.adobe.sender import (
    MAX_REQUEST_BYTES,
    TokenBucket,
    pack,
    parse_multi_status,
    request_body,
    shared_bucket,
)


def items(sizes: list[int]) -> list[tuple[int, bytes]]:
    return [(i, json.dumps("x" * (n - 2)).encode()) for i, n in enumerate(sizes)]


@pytest.mark.parametrize("seed", range(5))
def test_pack_keeps_order_and_every_body_fits_the_budget(seed):
    rng = random.Random(seed)
    sizes = [rng.choice([50, 400, 5_000, 90_000]) for _ in range(500)]
    budget = 200_000
    requests_, oversize = pack(items(sizes), budget)
    assert oversize == []
    assert [k for r in requests_ for k, _ in r] == list(range(500))
    for request in requests_:
        body = request_body(m for _, m in request)
        assert len(body) <= budget
        assert len(json.loads(body)["messages"]) == len(request)
    # greedy: adding the next request's first message would have broken the budget
    for left, right in zip(requests_, requests_[1:], strict=False):
        assert len(request_body([*(m for _, m in left), right[0][1]])) > budget


def test_pack_exact_fit_and_oversize():
    budget = 1_000
    exact = budget - len(b'{"messages":[]}')
    requests_, oversize = pack(items([exact, exact + 1, 10]), budget)
    assert [[k for k, _ in r] for r in requests_] == [[0], [2]]
    assert [k for k, _ in oversize] == [1]
    assert len(request_body([requests_[0][0][1]])) == budget


def test_default_budget_is_safely_under_one_megabyte():
    from cja_audiences.adobe.sender import SendOptions

    assert SendOptions().byte_budget <= 0.95 * MAX_REQUEST_BYTES
    with pytest.raises(ValueError):
        SendOptions(byte_budget=MAX_REQUEST_BYTES + 1)


def test_multi_status_is_read_per_message():
    body = {
        "inletId": "i",
        "batchId": "b",
        "responses": [
            {"xactionId": "1:2:3:0"},
            {"statusCode": 400, "message": "Message has unknown xdm format"},
            {"xactionId": "1:2:3:2"},
            {"statusCode": 503, "message": "busy"},
        ],
    }
    assert parse_multi_status(body, 4) == [
        (1, 400, "Message has unknown xdm format"),
        (3, 503, "busy"),
    ]


def test_multi_status_missing_answers_count_as_failed():
    assert parse_multi_status({"responses": [{"xactionId": "x"}]}, 3) == [
        (1, None, "no per-message response"),
        (2, None, "no per-message response"),
    ]
    assert len(parse_multi_status("not json", 2)) == 2


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


def test_token_bucket_holds_the_rate_across_threads():
    bucket = TokenBucket(rate=2_000, capacity=100)
    bucket.reserve(100)  # start empty so the burst does not count
    sent = []

    def worker():
        for _ in range(10):
            bucket.acquire(20)
            sent.append(20)

    started = time.monotonic()
    threads = [threading.Thread(target=worker) for _ in range(4)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    elapsed = time.monotonic() - started
    assert sum(sent) == 800
    assert 0.38 <= elapsed < 1.0  # 800 records at 2,000/s = 0.4 s


def test_token_bucket_lets_a_request_larger_than_its_capacity_through():
    bucket = TokenBucket(rate=10_000, capacity=100)
    started = time.monotonic()
    bucket.acquire(1_000)
    assert 0.08 < time.monotonic() - started < 0.3


def test_shared_bucket_is_one_per_org_and_off_at_zero():
    assert shared_bucket("org-a", 0) is None
    a = shared_bucket("org-a", 1_500)
    assert shared_bucket("org-a", 1_500) is a
    assert shared_bucket("org-b", 1_500) is not a
