"""The per-org records/s budget in a SQL table, for deployments without Redis (Kubernetes
executors keep their state in the metadata DB Airflow already has).

One row per org in ``cja_audiences_rate_budget`` (created on first use). A reservation is one
atomic ``INSERT … ON CONFLICT DO UPDATE … RETURNING`` in autocommit: PostgreSQL locks the
org's row for the update, so concurrent publishers on every worker queue on that row and each
sees the previous one's tokens; SQLite serializes every write transaction on the file. Time is
the database's clock (``clock_timestamp()`` read after the row lock; SQLite's ``julianday``),
so workers' clocks never need to agree, and the stamp never moves back. The caller sleeps off
its debt outside the database, which is asked once per request and never held.
"""

from __future__ import annotations

import threading
import time
from typing import Any

TABLE = "cja_audiences_rate_budget"

_CREATE = f"""
CREATE TABLE IF NOT EXISTS {TABLE} (
    org_id VARCHAR(255) PRIMARY KEY,
    tokens DOUBLE PRECISION NOT NULL,
    stamp DOUBLE PRECISION NOT NULL
)
"""

_NOW = {
    "postgresql": "extract(epoch from clock_timestamp())",
    "sqlite": "((julianday('now') - 2440587.5) * 86400.0)",
}
_MIN = {"postgresql": "least", "sqlite": "min"}
_MAX = {"postgresql": "greatest", "sqlite": "max"}


def _reserve_sql(dialect: str) -> str:
    now, least, greatest = _NOW[dialect], _MIN[dialect], _MAX[dialect]
    return f"""
INSERT INTO {TABLE} AS b (org_id, tokens, stamp)
VALUES (:org_id, :capacity - :count, {now})
ON CONFLICT (org_id) DO UPDATE SET
    tokens = {least}(:capacity, b.tokens + {greatest}(0, {now} - b.stamp) * :rate) - :count,
    stamp = {greatest}(b.stamp, {now})
RETURNING tokens
"""


class SqlTokenBucket:
    """One records/s bucket per org in a PostgreSQL or SQLite table."""

    def __init__(self, engine: Any, org_id: str, rate: float, capacity: float) -> None:
        from sqlalchemy import text

        if rate <= 0:
            raise ValueError("rate must be positive (use no bucket to turn the limit off)")
        self.rate = rate
        self.capacity = capacity
        self.org_id = org_id
        self._engine = engine
        self._reserve = text(_reserve_sql(engine.dialect.name))
        _ensure_table(engine)

    def reserve(self, count: int) -> float:
        params = {"org_id": self.org_id, "rate": self.rate, "capacity": self.capacity}
        with self._engine.connect() as con:
            tokens = con.execute(self._reserve, {**params, "count": count}).scalar_one()
        return max(0.0, -tokens / self.rate)

    def acquire(self, count: int) -> None:
        wait = self.reserve(count)
        if wait:
            time.sleep(wait)


_engines: dict[str, Any] = {}
_engines_lock = threading.Lock()
_created: set[str] = set()


def engine_for(url: str) -> Any:
    """One autocommit engine per URL and process (a small pool: one request at a time)."""
    from sqlalchemy import create_engine

    with _engines_lock:
        engine = _engines.get(url)
        if engine is None:
            options: dict[str, Any] = {"isolation_level": "AUTOCOMMIT", "pool_pre_ping": True}
            if url.startswith("sqlite"):
                options["connect_args"] = {"timeout": 30}  # wait for the file's write lock
            else:
                options |= {"pool_size": 2, "max_overflow": 4}
            engine = _engines[url] = create_engine(url, **options)
        return engine


def _ensure_table(engine: Any) -> None:
    from sqlalchemy import text
    from sqlalchemy.exc import IntegrityError, ProgrammingError

    key = str(engine.url)
    if key in _created:
        return
    for attempt in range(3):
        try:
            with engine.connect() as con:
                con.execute(text(_CREATE))
            break
        except (IntegrityError, ProgrammingError):  # two workers creating it at once
            if attempt == 2:
                raise
            time.sleep(0.1)
    _created.add(key)
