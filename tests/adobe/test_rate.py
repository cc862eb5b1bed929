"""Client-side rate limits: the records/s token bucket and the requests-per-window limiter."""

from __future__ import annotations

import threading
import time

import pytest

from cja_audiences.adobe.rate import SlidingWindowLimiter, TokenBucket, shared_bucket


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
    assert elapsed >= 0.38  # 800 records at 2,000/s = 0.4 s


def test_token_bucket_lets_a_request_larger_than_its_capacity_through():
    bucket = TokenBucket(rate=10_000, capacity=100)
    started = time.monotonic()
    bucket.acquire(1_000)
    assert time.monotonic() - started > 0.08  # 1,000 records at 10,000/s


def test_shared_bucket_is_one_per_org_and_off_at_zero():
    assert shared_bucket("org-a", 0) is None
    a = shared_bucket("org-a", 1_500)
    assert shared_bucket("org-a", 1_500) is a
    assert shared_bucket("org-b", 1_500) is not a


def test_the_limiter_allows_twelve_requests_per_six_seconds() -> None:
    now = [0.0]
    slept: list[float] = []

    def sleep(seconds: float) -> None:
        slept.append(seconds)
        now[0] += seconds

    limiter = SlidingWindowLimiter(clock=lambda: now[0], sleep=sleep, margin_s=0.0)
    for _ in range(12):
        limiter.acquire()
    assert slept == []
    now[0] = 2.0
    assert limiter.acquire() == pytest.approx(4.0)
    assert now[0] == pytest.approx(6.0)
    assert SlidingWindowLimiter().window_s == 6.25  # the default keeps a margin for network jitter
