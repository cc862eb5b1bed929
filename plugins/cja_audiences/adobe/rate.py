"""Client-side rate limits for Adobe's APIs: records per second and requests per window.

AEP's streaming capacity is counted in records per second per org, so every publisher of an
org draws from one budget (:func:`shared_bucket`): in one process a :class:`TokenBucket`;
across processes and workers a :class:`RedisTokenBucket` (one bucket per org in the Redis a
Celery deployment already runs as its broker) or a :class:`~cja_audiences.adobe.rate_sql.
SqlTokenBucket` (one row per org in PostgreSQL or SQLite, e.g. Airflow's own metadata DB when
there is no Redis), chosen by ``CJA_AUDIENCES_RATE_BUDGET_URL``.
Idle budget goes to whoever publishes: nothing is split per task. The CJA Reporting API
counts requests in a sliding window per user, so its client holds a
:class:`SlidingWindowLimiter`.

Both buckets reserve first and sleep off the debt outside any lock, hold at most
``BURST_S`` seconds of budget when idle, and publishers send requests of at most that many
records (``records_per_request``), so no one-second span carries more than the budget plus
a few percent, however many publishers share it.
"""

from __future__ import annotations

import collections
import math
import threading
import time
from collections.abc import Callable
from typing import Any, Protocol

REPORTING_REQUESTS_PER_WINDOW = 12
REPORTING_WINDOW_S = 6.0
REPORTING_MARGIN_S = 0.25


BURST_S = 0.02  # idle budget kept (and records per request): 20 ms worth of the rate


def burst(rate: float) -> float:
    return max(1.0, rate * BURST_S)


def records_per_request(rate: float) -> int | None:
    """The largest request a budgeted publisher sends (None: no budget, bytes decide)."""
    return math.ceil(burst(rate)) if rate > 0 else None


class RateLimiter(Protocol):
    """What a sender needs: take ``count`` records of budget, waiting as long as it takes."""

    rate: float

    def acquire(self, count: int) -> None: ...


class TokenBucket:
    """Records-per-second limit; callers reserve tokens and sleep off any debt outside the lock.

    A request larger than the bucket still goes, after waiting for the tokens it needs, so
    the long-run rate holds whatever the request size.
    """

    def __init__(self, rate: float, capacity: float | None = None) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (use no bucket to turn the limit off)")
        self.rate = rate
        self.capacity = capacity or burst(rate)
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


# KEYS[1] = the org's bucket; ARGV = rate, capacity, count. Redis's own clock, so every
# worker agrees on time; the state expires when nobody has published for an hour.
_RESERVE_LUA = """
local rate = tonumber(ARGV[1])
local capacity = tonumber(ARGV[2])
local t = redis.call('TIME')
local now = tonumber(t[1]) + tonumber(t[2]) / 1000000
local state = redis.call('HMGET', KEYS[1], 'tokens', 'stamp')
local tokens = tonumber(state[1]) or capacity
local stamp = tonumber(state[2]) or now
tokens = math.min(capacity, tokens + math.max(0, now - stamp) * rate) - tonumber(ARGV[3])
redis.call('HSET', KEYS[1], 'tokens', tostring(tokens), 'stamp', tostring(now))
redis.call('EXPIRE', KEYS[1], 3600)
if tokens >= 0 then return '0' end
return tostring(-tokens / rate)
"""


class RedisTokenBucket:
    """One records/s bucket per org in Redis, shared by every process and worker.

    The reservation is one atomic Lua script on Redis's clock; the caller sleeps off its
    debt locally, so Redis is asked once per request and never held.
    """

    def __init__(self, client: Any, org_id: str, rate: float) -> None:
        if rate <= 0:
            raise ValueError("rate must be positive (use no bucket to turn the limit off)")
        self.rate = rate
        self.capacity = burst(rate)
        self.key = f"cja_audiences:rate:{org_id}"
        self._reserve = client.register_script(_RESERVE_LUA)

    def reserve(self, count: int) -> float:
        return float(self._reserve(keys=[self.key], args=[self.rate, self.capacity, count]))

    def acquire(self, count: int) -> None:
        wait = self.reserve(count)
        if wait:
            time.sleep(wait)


_buckets: dict[tuple[str, str], RateLimiter] = {}
_buckets_lock = threading.Lock()


def shared_bucket(org_id: str, rate: float, budget_url: str = "") -> RateLimiter | None:
    """The org's budget (AEP's capacity is per org); None when rate is 0.

    ``budget_url`` empty: one bucket per process (the fallback for single-process runs: the
    demo, ``make airflow``, one worker). ``redis://…``: one bucket per org for every process
    that names the same Redis (Celery deployments). ``postgresql://…`` / ``sqlite:///…``: one
    row per org in that database; ``airflow``: in Airflow's own metadata DB
    (``[database] sql_alchemy_conn``), for deployments without Redis (Kubernetes).
    """
    if rate <= 0:
        return None
    with _buckets_lock:
        bucket = _buckets.get((budget_url, org_id))
        if bucket is None or bucket.rate != rate:
            bucket = _buckets[(budget_url, org_id)] = _new_bucket(org_id, rate, budget_url)
        return bucket


def _new_bucket(org_id: str, rate: float, budget_url: str) -> RateLimiter:
    if not budget_url:
        return TokenBucket(rate)
    if budget_url.startswith(("redis://", "rediss://", "unix://")):
        import redis

        return RedisTokenBucket(redis.Redis.from_url(budget_url), org_id, rate)
    database_url = _database_url(budget_url)
    from cja_audiences.adobe.rate_sql import SqlTokenBucket, engine_for

    return SqlTokenBucket(engine_for(database_url), org_id, rate, burst(rate))


_SQL_SCHEMES = ("postgresql", "sqlite")


def _database_url(budget_url: str) -> str:
    """A SQLAlchemy URL for the budget table (``airflow``: the metadata DB's own)."""
    where = "CJA_AUDIENCES_RATE_BUDGET_URL"
    url = budget_url
    if budget_url == "airflow":
        from airflow.configuration import conf

        url = conf.get("database", "sql_alchemy_conn")
        where = "CJA_AUDIENCES_RATE_BUDGET_URL=airflow names Airflow's sql_alchemy_conn, which"
    if url.startswith("postgres://"):  # Heroku-style spelling SQLAlchemy refuses
        url = "postgresql://" + url.removeprefix("postgres://")
    scheme = url.split(":", 1)[0]  # never echo the URL: it may hold a password
    if scheme.split("+", 1)[0] in _SQL_SCHEMES:
        return url
    raise ValueError(
        f"{where} has scheme {scheme!r}: use redis://host:port/db (the Celery broker's Redis "
        "works), postgresql://… or sqlite:///… (a table in that database), airflow (Airflow's "
        "metadata DB, when it is PostgreSQL or SQLite), or leave it empty for one budget per "
        "process"
    )


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
