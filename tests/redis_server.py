"""Pytest fixture: a real ``redis-server`` (Debian's package; ``.ci/run`` installs it) on a
free port, for the cross-process rate budget."""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from dev.celery import start_redis
from dev.standalone import stop_groups
from emulator.process import free_port


@pytest.fixture(scope="session")
def redis_url(tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    port = free_port()
    process = start_redis(port, tmp_path_factory.mktemp("redis") / "redis.log")
    try:
        yield f"redis://127.0.0.1:{port}/0"
    finally:
        stop_groups([process.pid], 10)
        process.wait(timeout=10)
