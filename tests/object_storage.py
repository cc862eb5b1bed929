"""Pytest fixtures: a real S3-compatible server (moto's standalone server) on a free port.

``s3_server`` (session) starts ``python -m moto.server`` on 127.0.0.1 and points botocore at
it through the environment (test credentials, region); ``s3_home`` (function) is a fresh
bucket as an ``s3://`` lake root with ``CJA_AUDIENCES_STORAGE_OPTIONS`` naming the endpoint,
exactly as a deployment configures a private S3-compatible store.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator

import pytest
import requests

from emulator.process import free_port

START_TIMEOUT_S = 90.0  # moto imports slowly on a loaded 2-core machine
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}


class S3Server:
    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def create_bucket(self) -> str:
        import boto3

        name = f"lake-{uuid.uuid4().hex[:12]}"
        boto3.client("s3", endpoint_url=self.url).create_bucket(Bucket=name)
        return name

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_s3_server() -> S3Server:
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    process = subprocess.Popen(
        [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"moto server exited with {process.returncode}")
        try:
            requests.get(url, timeout=1)
            return S3Server(url, process)
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"moto server did not answer on {url} within {START_TIMEOUT_S} s")


@pytest.fixture(scope="session")
def s3_server() -> Iterator[S3Server]:
    saved = {name: os.environ.get(name) for name in CREDENTIALS}
    os.environ.update(CREDENTIALS)
    server = start_s3_server()
    try:
        yield server
    finally:
        server.stop()
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@pytest.fixture
def s3_home(s3_server: S3Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket as the lake root, ``s3://<bucket>/home``."""
    from cja_audiences.settings import get_settings

    bucket = s3_server.create_bucket()
    home = f"s3://{bucket}/home"
    monkeypatch.setenv("CJA_AUDIENCES_HOME", home)
    monkeypatch.setenv("CJA_AUDIENCES_STORAGE_OPTIONS", json.dumps({"endpoint_url": s3_server.url}))
    get_settings.cache_clear()
    return home
