"""Client-side rate limits for Adobe's APIs: records per second and requests per window.

AEP's streaming capacity is counted in records per second per org, so publishers share a
token bucket per org (:func:`shared_bucket`); the CJA Reporting API counts requests in a
sliding window per user, so its client holds a :class:`SlidingWindowLimiter`.
"""

from __future__ import annotations

import collections
import threading
import time
from collections.abc import Callable

REPORTING_REQUESTS_PER_WINDOW = 12
REPORTING_WINDOW_S = 6.0
REPORTING_MARGIN_S = 0.25


class TokenBucket:
    """Records-per-second limit; callers reserve tokens and sleep off any debt outside the lock.

    A request larger than the bucket still goes, after waiting for the tokens it needs, so
    the long-run rate holds whatever the request size.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (use no bucket to turn the limit off)")
        self.rate = rate
        self.capacity = capacity or rate
        self._tokens = self.capacity
        self._stamp = time.monotonic()
        self._lock = threading.Lock()

    def reserve(self, count: int) -> float:
        """Take ``count`` tokens now; returns how long the caller must wait before sending."""
        with self._lock:
            now = time.monotonic()
            self._tokens = min(self.capacity, self._tokens + (now - self._stamp) * self.rate)
            self._stamp = now
            self._tokens -= count
            return max(0.0, -self._tokens / self.rate)

    def acquire(self, count: int) -> None:
        wait = self.reserve(count)
        if wait:
            time.sleep(wait)


_buckets: dict[str, TokenBucket] = {}
_buckets_lock = threading.Lock()


def shared_bucket(org_id: str, rate: float) -> TokenBucket | None:
    """The process-wide bucket for an org (AEP's capacity is per org); None when rate is 0."""
    if rate <= 0:
        return None
    with _buckets_lock:
        bucket = _buckets.get(org_id)
        if bucket is None or bucket.rate != rate:
            bucket = _buckets[org_id] = TokenBucket(rate)
        return bucket


class SlidingWindowLimiter:
    """At most ``requests`` calls in any ``window_s`` seconds (a sliding log, thread-safe).

    ``margin_s`` widens the window: the server counts arrivals, and network jitter can bring
    two requests closer together than they were sent. Defaults: the CJA Reporting API's 12
    requests per 6 seconds.
    """

    def __init__(
        self,
        requests: int = REPORTING_REQUESTS_PER_WINDOW,
        window_s: float = REPORTING_WINDOW_S,
        *,
        margin_s: float = REPORTING_MARGIN_S,
        clock: Callable[[], float] = time.monotonic,
        sleep: Callable[[float], None] = time.sleep,
    ) -> None:
        self.requests = requests
        self.window_s = window_s + margin_s
        self._clock = clock
        self._sleep = sleep
        self._sent: collections.deque[float] = collections.deque()
        self._lock = threading.Lock()

    def acquire(self) -> float:
        """Wait until one more call is allowed; returns the seconds waited."""
        waited = 0.0
        with self._lock:
            while True:
                now = self._clock()
                while self._sent and now - self._sent[0] >= self.window_s:
                    self._sent.popleft()
                if len(self._sent) < self.requests:
                    self._sent.append(now)
                    return waited
                pause = self.window_s - (now - self._sent[0])
                self._sleep(pause)
                waited += pause
