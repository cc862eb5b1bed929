"""The emulator as a subprocess on a free port: start it, wait until it answers, drive it.

Used by the pytest fixtures, the demo, `make airflow` and the benchmarks.
"""

from __future__ import annotations

import os
import socket
import subprocess
import sys
import time
from pathlib import Path
from typing import TYPE_CHECKING, Any

import requests

if TYPE_CHECKING:
    from cja_audiences.adobe.auth import AdobeConfig

ROOT = Path(__file__).resolve().parents[1]
START_TIMEOUT_S = 30.0
PORT_ATTEMPTS = 3


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class EmulatorServer:
    """A running emulator and the helpers tests use to drive and inspect it."""

    def __init__(
        self,
        url: str,
        process: subprocess.Popen[bytes] | None,
        state_dir: Path,
        config: dict[str, Any] | None = None,
    ) -> None:
        """``config``: the summary of the configuration it serves; asked of it when omitted."""
        self.url = url.rstrip("/")
        self.process = process
        self.state_dir = state_dir
        self.http = requests.Session()
        self.config: dict[str, Any] = config or self.admin("GET", "/config")["summary"]

    # -- connections ------------------------------------------------------------------
    def aep_conn(self, **extra: Any) -> dict[str, Any]:
        """The ``aep_default`` Airflow connection (JSON form); ``extra`` overrides fields."""
        c = self.config
        fields = {
            "org_id": c["org_id"],
            "sandbox": c["sandbox"],
            "scopes": c["scopes"],
            "ims_url": self.url,
            "streaming_url": self.url,
            "inlet_id": c["inlet_id"],
            "flow_id": c["flow_id"],
            "dataset_id": c["dataset_id"],
            "schema_id": c["schema_id"],
            "segment_namespace": c["segment_namespace"],
            "authenticated_inlet": True,
        }
        return self._conn(fields | extra)

    def cja_conn(self, **extra: Any) -> dict[str, Any]:
        """The ``cja_default`` Airflow connection (JSON form); ``extra`` overrides fields."""
        c = self.config
        fields = {
            "org_id": c["org_id"],
            "sandbox": c["sandbox"],
            "scopes": c["scopes"],
            "ims_url": self.url,
            "data_view_id": c["data_view_id"],
            "dataset_id": c["cja_dataset_id"],
        }
        return self._conn(fields | extra)

    def _conn(self, extra: dict[str, Any]) -> dict[str, Any]:
        return {
            "conn_type": "http",
            "host": self.url,
            "login": self.config["client_id"],
            "password": self.config["client_secret"],
            "extra": extra,
        }

    def adobe_config(self, kind: str = "aep", **extra: Any) -> AdobeConfig:
        """An :class:`AdobeConfig` for the AEP (default) or CJA connection."""
        from cja_audiences.adobe.auth import AdobeConfig

        conn = self.cja_conn(**extra) if kind == "cja" else self.aep_conn(**extra)
        return AdobeConfig.from_connection(
            conn["host"], conn["login"], conn["password"], conn["extra"]
        )

    def token(self) -> str:
        """A fresh IMS token for the demo client."""
        c = self.config
        response = self.http.post(
            f"{self.url}/ims/token/v3",
            data={
                "grant_type": "client_credentials",
                "client_id": c["client_id"],
                "client_secret": c["client_secret"],
                "scope": c["scopes"],
            },
            timeout=10,
        )
        response.raise_for_status()
        return response.json()["access_token"]

    def headers(self, token: str | None = None, sandbox: str | None = None) -> dict[str, str]:
        """Platform headers for the demo client (a new token unless one is given)."""
        c = self.config
        return {
            "Authorization": f"Bearer {token or self.token()}",
            "x-api-key": c["client_id"],
            "x-gw-ims-org-id": c["org_id"],
            "x-sandbox-name": sandbox or c["sandbox"],
        }

    # -- admin ------------------------------------------------------------------------
    def admin(self, method: str, path: str, **kwargs: Any) -> Any:
        """Call an admin route (path relative to /_emulator); fail loudly on HTTP errors."""
        response = self.http.request(method, f"{self.url}/_emulator{path}", timeout=30, **kwargs)
        if response.status_code >= 400:
            raise AssertionError(
                f"emulator admin {method} {path}: HTTP {response.status_code} {response.text}"
            )
        return response.json()

    def reset(self) -> None:
        """Forget all state and switch every fault off."""
        self.admin("POST", "/reset")

    def faults(self, **modes: Any) -> dict[str, Any]:
        """Merge fault modes into the active ones (``emu.faults()`` just reads them)."""
        if not modes:
            return self.admin("GET", "/faults")
        return self.admin("POST", "/faults", json=modes)

    def clear_faults(self) -> dict[str, Any]:
        return self.admin("DELETE", "/faults")

    def stats(self) -> dict[str, Any]:
        return self.admin("GET", "/stats")

    def membership(
        self, audience_id: str, namespace: str | None = None, sandbox: str | None = None
    ) -> list[dict[str, Any]]:
        """One dict per profile holding the audience (memberships that have not lapsed):
        namespace, identity, status, last_qualification_time, valid_until."""
        params = {
            "namespace": namespace or self.config["segment_namespace"],
            "sandbox": sandbox or self.config["sandbox"],
        }
        return self.admin("GET", f"/membership/{audience_id}", params=params)["members"]

    def advance_clock(self, days: float = 0, seconds: float = 0) -> dict[str, Any]:
        """Move the emulator's clock forward (memberships lapse by it)."""
        return self.admin("POST", "/clock", json={"days": days, "seconds": seconds})

    def tamper(self, audience_id: str, *changes: tuple[str, str, str]) -> dict[str, Any]:
        """Drift on purpose: each change is (action, member namespace, identity)."""
        body = {"changes": [{"action": a, "namespace": n, "identity": i} for a, n, i in changes]}
        return self.admin("POST", f"/membership/{audience_id}/tamper", json=body)

    def org(self, **switches: bool) -> dict[str, Any]:
        """Org entitlements: ``external_segments``, ``abac_write``."""
        return self.admin("POST", "/org", json=switches)

    def add_batch(self, **batch: Any) -> dict[str, Any]:
        """Add a Catalog batch (default: a successful one on the CJA dataset)."""
        return self.admin("POST", "/catalog/batches", json=batch)

    def add_segment(self, **segment: Any) -> dict[str, Any]:
        """Store a CJA segment (``name``, ``definition``, optional ``id``, ``dataId``)."""
        return self.admin("POST", "/cja/segments", json=segment)

    def set_data_view(self, **settings: Any) -> dict[str, Any]:
        """Change the CJA data view's ``timezone`` or ``person_dimension``."""
        return self.admin("POST", "/cja/dataview", json=settings)

    def base_connection(self, root: Path | str, connection_id: str = "emu-storage") -> str:
        """Register a folder as a cloud-storage base connection; returns its id."""
        self.admin("POST", "/base-connections", json={"id": connection_id, "root": str(root)})
        return connection_id

    def s3_base_connection(
        self, service_url: str, access_key: str, secret_key: str, connection_id: str = "emu-s3"
    ) -> str:
        """Register an S3 account (an S3-compatible server at ``service_url``) as a base
        connection; its ``sourceSpec`` paths are ``<bucket>/<prefix>``. Returns its id."""
        params = {"s3AccessKey": access_key, "s3SecretKey": secret_key, "serviceUrl": service_url}
        self.admin(
            "POST", "/base-connections", json={"id": connection_id, "auth": {"params": params}}
        )
        return connection_id

    def set_lake(self, path: Path | str | None) -> dict[str, Any]:
        """Point CJA ``/reports`` at a lake root (the folder holding ``lake/events``)."""
        return self.admin("POST", "/cja/lake", json={"path": str(path) if path else None})

    # -- lifecycle --------------------------------------------------------------------
    def __enter__(self) -> EmulatorServer:
        return self

    def __exit__(self, *exc_info: object) -> None:
        self.stop()

    def stop(self) -> None:
        self.http.close()
        if self.process is not None and self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(timeout=10)


def start_emulator(
    state_dir: Path,
    config_path: Path | None = None,
    extra_args: list[str] | None = None,
    port: int | None = None,
) -> EmulatorServer:
    """Start ``python -m emulator`` on a free port (or ``port``) and wait until it answers.

    The port is picked before the server binds it, so another process may take it first;
    that case is retried on a new port. With ``port`` (a restart of a stopped server on the
    same address and ``state_dir``, so clients keep their URLs) there is one attempt.
    """
    for _ in range(1 if port else PORT_ATTEMPTS):
        server = _start_once(state_dir, config_path, extra_args or [], port or free_port())
        if server is not None:
            return server
    raise RuntimeError(f"emulator could not bind port {port or 'any free port'}")


def _start_once(
    state_dir: Path, config_path: Path | None, extra_args: list[str], port: int
) -> EmulatorServer | None:
    log_path = state_dir / "emulator.log"
    cmd = [sys.executable, "-m", "emulator", "--host", "127.0.0.1", "--port", str(port)]
    cmd += ["--state", str(state_dir)]
    if config_path:
        cmd += ["--config", str(config_path)]
    env = os.environ | {"PYTHONPATH": os.pathsep.join([str(ROOT), str(ROOT / "plugins")])}
    with log_path.open("ab") as log:
        process = subprocess.Popen(
            cmd + extra_args, cwd=ROOT, stdout=log, stderr=subprocess.STDOUT, env=env
        )
    url = f"http://127.0.0.1:{port}"
    deadline = time.monotonic() + START_TIMEOUT_S
    while time.monotonic() < deadline:
        if process.poll() is not None:
            log = log_path.read_text(errors="replace")
            if "address already in use" in log.lower():
                return None
            raise RuntimeError(f"emulator exited with {process.returncode}; log: {log[-2000:]}")
        try:
            if requests.get(f"{url}/_emulator/health", timeout=1).status_code == 200:
                return EmulatorServer(url, process, state_dir)
        except requests.RequestException:  # not listening yet, or someone else's socket
            time.sleep(0.05)
    process.kill()
    raise RuntimeError(f"emulator did not answer on {url} within {START_TIMEOUT_S} s")
