"""Pytest fixture: a real PostgreSQL (Debian's package; ``.ci/run`` installs it) on a free
port, started as ``make celery`` starts the metadata DB (``dev.celery.Postgres``)."""

from __future__ import annotations

import shutil
import tempfile
from collections.abc import Iterator
from pathlib import Path

import pytest

from dev.celery import Postgres
from emulator.process import free_port


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """``postgresql+psycopg2://airflow@127.0.0.1:<port>/airflow`` (trust auth, throwaway)."""
    scratch = Path(tempfile.mkdtemp(prefix="cja-postgres-"))
    scratch.chmod(0o755)  # under root the server runs as ``postgres``, which must reach it
    server = Postgres(scratch / "data", free_port())
    try:
        server.start(scratch / "postgres.log")
        yield server.url
    finally:
        server.stop()
        shutil.rmtree(scratch, ignore_errors=True)
