"""One records/s budget per org across processes: buckets in Redis, PostgreSQL and SQLite,
measured by the emulator."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import threading
import time
from pathlib import Path

import pytest
import redis
from sqlalchemy import create_engine, text

from cja_audiences.adobe.rate import (
    RedisTokenBucket,
    TokenBucket,
    burst,
    records_per_request,
    shared_bucket,
)
from cja_audiences.adobe.rate_sql import TABLE, SqlTokenBucket
from cja_audiences.adobe.sender import pack
from tests.publish.helpers import write_members

REPO = Path(__file__).resolve().parents[2]
BUDGET = 2000.0


def test_publishers_send_small_requests_under_a_budget():
    assert records_per_request(2000) == 40 and records_per_request(0) is None
    items = [(i, b"x" * 10) for i in range(100)]
    requests_, _ = pack(items, 900_000, records_per_request(2000))
    assert [len(r) for r in requests_] == [40, 40, 20]


@pytest.fixture(params=["redis", "postgresql", "sqlite"])
def budget_url(request, tmp_path) -> str:
    """A budget store every process can name: Redis, a PostgreSQL server, a SQLite file."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path / 'budget.db'}"
    return request.getfixturevalue(
        {"redis": "redis_url", "postgresql": "postgres_url"}[request.param]
    )


def test_shared_bucket_picks_the_backend_from_the_url(redis_url, postgres_url, tmp_path):
    assert isinstance(shared_bucket("org-a", 100.0), TokenBucket)
    assert isinstance(shared_bucket("org-a", 100.0, redis_url), RedisTokenBucket)
    assert isinstance(shared_bucket("org-a", 100.0, postgres_url), SqlTokenBucket)
    assert isinstance(shared_bucket("org-a", 100.0, f"sqlite:///{tmp_path}/b.db"), SqlTokenBucket)
    assert shared_bucket("org-a", 0.0, redis_url) is None
    with pytest.raises(ValueError, match="scheme 'memcached'") as error:
        shared_bucket("org-a", 100.0, "memcached://user:secret@host")
    assert "secret" not in str(error.value)


def test_airflow_means_the_metadata_db(monkeypatch, tmp_path):
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", f"sqlite:///{tmp_path}/airflow.db")
    bucket = shared_bucket("org-airflow", 100.0, "airflow")
    assert isinstance(bucket, SqlTokenBucket)
    bucket.acquire(1)
    with create_engine(f"sqlite:///{tmp_path}/airflow.db").connect() as con:
        assert con.execute(text(f"SELECT org_id FROM {TABLE}")).scalars().all() == ["org-airflow"]
    monkeypatch.setenv("AIRFLOW__DATABASE__SQL_ALCHEMY_CONN", "mysql://airflow:secret@db/airflow")
    with pytest.raises(ValueError, match="sql_alchemy_conn, which has scheme 'mysql'") as error:
        shared_bucket("org-airflow-2", 100.0, "airflow")  # (buckets are kept per org)
    assert "secret" not in str(error.value)


def _client_bucket(url: str, org_id: str, rate: float):
    """A bucket with its own connection, as another worker would hold."""
    if url.startswith("redis://"):
        return RedisTokenBucket(redis.Redis.from_url(url), org_id, rate)
    engine = create_engine(url, isolation_level="AUTOCOMMIT")
    return SqlTokenBucket(engine, org_id, rate, burst(rate))


def test_a_shared_bucket_holds_the_rate_across_clients(budget_url):
    """Four clients (as four workers would be) drawing 1.5 s of one org's budget between
    them (a loaded machine only makes that take longer: nothing here bounds it from below)."""
    rate, count, deadline_s = 1000.0, 20, 20.0
    taken = [0] * 4
    started = time.monotonic()
    org_id = f"org-threads-{time.time_ns()}"

    def draw(index: int) -> None:
        bucket = _client_bucket(budget_url, org_id, rate)
        while sum(taken) < rate * 1.5 and time.monotonic() - started < deadline_s:
            bucket.acquire(count)
            taken[index] += count

    threads = [threading.Thread(target=draw, args=(i,)) for i in range(4)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    elapsed = time.monotonic() - started
    # what was taken never beats the rate by more than the burst and one request per client
    assert sum(taken) <= rate * elapsed + rate * 0.02 + 4 * count
    assert sum(taken) >= rate * 1.5  # every client drew until the end, none was shut out
    assert min(taken) > 0


def _forget_budget(url: str, org_id: str) -> None:
    """Start from a full bucket: the org's state left by an earlier test is dropped."""
    if url.startswith("redis://"):
        redis.Redis.from_url(url).flushdb()
        return
    _client_bucket(url, org_id, 1.0)  # creates the table if needed
    with create_engine(url, isolation_level="AUTOCOMMIT").connect() as con:
        con.execute(text(f"DELETE FROM {TABLE} WHERE org_id = :org"), {"org": org_id})


@pytest.mark.integration
@pytest.mark.parametrize("budget_url", ["redis", "postgresql"], indirect=True)
def test_four_publishers_in_four_processes_stay_within_the_org_budget(emu, budget_url, tmp_path):
    """No second of the emulator's clock receives more than the budget + 5 %."""
    _forget_budget(budget_url, emu.config["org_id"])
    env = os.environ | {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn()),
        "CJA_AUDIENCES_RATE_BUDGET_URL": budget_url,
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    children = []
    for index in range(4):
        run_dir = tmp_path / f"aud_{index}" / "runs" / "r1"
        write_members(run_dir / "entered.parquet", range(index * 10_000, index * 10_000 + 1500))
        write_members(run_dir / "exited.parquet", [])
        command = [sys.executable, "-m", "tests.adobe.budget_child", str(run_dir)]
        children.append(
            subprocess.Popen(
                [*command, f"aud_{index}", str(BUDGET)],
                cwd=REPO,
                env=env,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
            )
        )
    results = [child.communicate(timeout=120) for child in children]
    for child, (out, err) in zip(children, results, strict=True):
        assert child.returncode == 0, err.decode()[-2000:]
        assert json.loads(out)["acknowledged"] == 1500
    rate = emu.stats()["records_per_s_by_org"][emu.config["org_id"]]
    assert rate["received"] == 6000
    assert rate["max_calendar_second"] <= BUDGET * 1.05, rate
    # more than any static quarter share could give: idle budget went to whoever published
    assert rate["max_calendar_second"] > BUDGET / 4 * 1.5, rate
