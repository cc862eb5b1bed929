"""One records/s budget per org across processes: Redis-backed buckets, measured by the emulator."""

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

from cja_audiences.adobe.rate import (
    RedisTokenBucket,
    TokenBucket,
    records_per_request,
    shared_bucket,
)
from cja_audiences.adobe.sender import pack
from tests.publish.helpers import write_members

REPO = Path(__file__).resolve().parents[2]
BUDGET = 2000.0


def test_publishers_send_small_requests_under_a_budget():
    assert records_per_request(2000) == 40 and records_per_request(0) is None
    items = [(i, b"x" * 10) for i in range(100)]
    requests_, _ = pack(items, 900_000, records_per_request(2000))
    assert [len(r) for r in requests_] == [40, 40, 20]


def test_shared_bucket_picks_the_backend_from_the_url(redis_url):
    assert isinstance(shared_bucket("org-a", 100.0), TokenBucket)
    assert isinstance(shared_bucket("org-a", 100.0, redis_url), RedisTokenBucket)
    assert shared_bucket("org-a", 0.0, redis_url) is None
    with pytest.raises(ValueError, match="scheme 'memcached'") as error:
        shared_bucket("org-a", 100.0, "memcached://user:secret@host")
    assert "secret" not in str(error.value)


def test_redis_bucket_holds_the_rate_across_clients(redis_url):
    """Four clients (as four workers would be) drawing on one org's bucket for about 1 s."""
    rate, count = 1000.0, 20
    taken = [0] * 4
    started = time.monotonic()

    def draw(index: int) -> None:
        bucket = RedisTokenBucket(redis.Redis.from_url(redis_url), "org-threads", rate)
        while time.monotonic() - started < 1.0:
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
    assert sum(taken) >= rate * 0.8  # and idle budget is used: nothing is split per client
    assert min(taken) > 0


@pytest.mark.integration
def test_four_publishers_in_four_processes_stay_within_the_org_budget(emu, redis_url, tmp_path):
    """No second of the emulator's clock receives more than the budget + 5 %."""
    redis.Redis.from_url(redis_url).flushdb()
    env = os.environ | {
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn()),
        "CJA_AUDIENCES_RATE_BUDGET_URL": redis_url,
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
