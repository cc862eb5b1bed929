"""A real `airflow standalone` for end-to-end tests: start, wait until usable, drive, stop.

`airflow standalone` runs the scheduler, dag-processor, triggerer and api-server as child
processes and restarts none of them. It is started here in its own process group (so a
stop kills every child, including LocalExecutor workers) on free ports (so a test run
never collides with `make airflow` or another test session), with an admin password we
choose (so tests and a browser can log in), and logging to a file (so a failure can quote
the component that broke). Nothing here is specific to cja-audiences except the default
dags/plugins folders.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import time
from collections.abc import Iterable, Mapping
from datetime import UTC, datetime
from pathlib import Path
from types import TracebackType
from typing import Any

import httpx
import psutil

REPO = Path(__file__).resolve().parents[1]
VENV_BIN = Path(sys.executable).parent
ADMIN_USER = "admin"
FINISHED_STATES = frozenset({"success", "failed"})
COMPONENTS = ("metadatabase", "scheduler", "triggerer", "dag_processor")
# Process counts for a 2-core machine. Airflow's defaults fork 32 LocalExecutor workers at
# start ([core] parallelism) and 2 parsing processes: ~32 processes for a laptop demo.
SMALL_MACHINE = {
    "AIRFLOW__CORE__PARALLELISM": "4",  # LocalExecutor workers = concurrent tasks
    "AIRFLOW__API__WORKERS": "1",  # api-server (UI, REST API, Execution API) processes
    "AIRFLOW__DAG_PROCESSOR__PARSING_PROCESSES": "1",
}


class StandaloneError(RuntimeError):
    """Airflow did not come up or a run did not finish; the message quotes the log's tail."""


def free_port() -> int:
    """A port nobody listens on right now (the OS picks it; tiny race accepted for tests)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        return sock.getsockname()[1]


class StandaloneAirflow:
    """`airflow standalone` as a context manager, with a small client for its REST API.

    ``env`` is added to the environment of every Airflow process (connections, lake paths,
    extra config). ``dag_ids`` are waited for after start-up: the DAGs must be parsed
    before a test can trigger them. ``pools`` are created through the API once it answers.
    """

    def __init__(
        self,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        dag_ids: Iterable[str] = (),
        pools: Mapping[str, int] | None = None,
        dags_folder: Path = REPO / "dags",
        plugins_folder: Path = REPO / "plugins",
        password: str = "e2e-admin-password",
        unpause: bool = True,
        startup_timeout: float = 240.0,
        stop_grace: float = 30.0,
    ) -> None:
        self.home = Path(home)
        self.password = password
        self.dag_ids = list(dag_ids)
        self.pools = dict(pools or {})
        self.startup_timeout = startup_timeout
        self.stop_grace = stop_grace
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}"
        self.log_path = self.home / "standalone.log"
        self.passwords_file = self.home / "simple_auth_manager_passwords.json"
        self.env = self._environment(env or {}, dags_folder, plugins_folder, unpause)
        self.healthy_s: float | None = None
        self.startup_s: float | None = None
        self._process: subprocess.Popen[bytes] | None = None
        self._extra: list[subprocess.Popen[bytes]] = []
        self._http = httpx.Client(base_url=self.url, timeout=30.0)
        self._token: str | None = None

    def _environment(
        self, extra: Mapping[str, str], dags: Path, plugins: Path, unpause: bool
    ) -> dict[str, str]:
        env = dict(os.environ)
        env.update(
            AIRFLOW_HOME=str(self.home),
            PATH=os.pathsep.join([str(VENV_BIN), env.get("PATH", "")]),
            PYTHONPATH=os.pathsep.join([str(plugins), str(REPO)]),
            AIRFLOW__CORE__DAGS_FOLDER=str(dags),
            AIRFLOW__CORE__PLUGINS_FOLDER=str(plugins),
            AIRFLOW__CORE__LOAD_EXAMPLES="False",
            AIRFLOW__CORE__UNIT_TEST_MODE="False",
            AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION=str(not unpause),
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_USERS=f"{ADMIN_USER}:admin",
            AIRFLOW__CORE__SIMPLE_AUTH_MANAGER_PASSWORDS_FILE=str(self.passwords_file),
            AIRFLOW__API__HOST="127.0.0.1",
            AIRFLOW__API__PORT=str(self.port),
            # Workers reach the execution API through base_url; its default is port 8080.
            AIRFLOW__API__BASE_URL=self.url,
            AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT=str(free_port()),
            AIRFLOW__LOGGING__TRIGGER_LOG_SERVER_PORT=str(free_port()),
            # New DAG files in seconds, not the default 5 minutes.
            AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL="5",
            AIRFLOW__SCHEDULER__SCHEDULER_HEARTBEAT_SEC="2",
            AIRFLOW__TRIGGERER__JOB_HEARTBEAT_SEC="2",
        )
        env.update(SMALL_MACHINE)
        env.update(extra)
        return env

    # -- life cycle ---------------------------------------------------------------------

    def __enter__(self) -> StandaloneAirflow:
        self.start()
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    def start(self) -> None:
        """Start standalone and return once every component is healthy and the DAGs parsed."""
        self.home.mkdir(parents=True, exist_ok=True)
        # A passwords file that already names the user stops standalone generating one.
        self.passwords_file.write_text(json.dumps({ADMIN_USER: self.password}))
        began = time.monotonic()
        with self.log_path.open("ab") as log:
            self._process = subprocess.Popen(
                [str(VENV_BIN / "airflow"), "standalone"],
                env=self.env,
                stdout=log,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        try:
            self._ready(began)
        except BaseException:
            self.stop()
            raise

    def _ready(self, began: float) -> None:
        """Wait until healthy, create the pools, wait for the DAGs; record the timings."""
        self._wait_healthy(began + self.startup_timeout)
        self.healthy_s = round(time.monotonic() - began, 1)
        for name, slots in self.pools.items():
            self.api("POST", "/api/v2/pools", json={"name": name, "slots": slots})
        self.wait_for_dags(self.dag_ids, timeout=began + self.startup_timeout - time.monotonic())
        self.startup_s = round(time.monotonic() - began, 1)

    def stop(self) -> None:
        """SIGTERM every process group we started, SIGKILL what is left after ``stop_grace``."""
        if self._process is None:
            return
        self._http.close()  # an open keep-alive connection slows the API server's shutdown
        started = [self._process, *self._extra]
        stop_groups([p.pid for p in started], self.stop_grace)
        for process in started:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._process = None

    def _check_alive(self) -> None:
        if self._process is None or self._process.poll() is not None:
            raise StandaloneError(f"airflow standalone exited.\n{self.log_tail()}")

    def log_tail(self, lines: int = 40) -> str:
        """The end of standalone's log (all four components), for failure messages."""
        if not self.log_path.exists():
            return "(no log yet)"
        text = self.log_path.read_text(errors="replace").splitlines()
        return f"--- last {lines} lines of {self.log_path} ---\n" + "\n".join(text[-lines:])

    # -- readiness ----------------------------------------------------------------------

    def health(self) -> dict[str, Any]:
        """GET /api/v2/monitor/health (no auth needed); {} while the API server is down."""
        try:
            response = self._http.get("/api/v2/monitor/health", timeout=5.0)
        except httpx.TransportError:
            return {}
        return response.json() if response.status_code == 200 else {}

    def _wait_healthy(self, deadline: float, triggerer_after: datetime | None = None) -> None:
        """Until every component is healthy (and the triggerer heartbeat is newer than)."""
        health: dict[str, Any] = {}
        while time.monotonic() < deadline:
            self._check_alive()
            health = self.health()
            healthy = bool(health) and all(
                (health.get(c) or {}).get("status") == "healthy" for c in COMPONENTS
            )
            if healthy and (triggerer_after is None or _beat(health) > triggerer_after):
                return
            time.sleep(0.5)
        raise StandaloneError(f"Airflow not healthy in time: {health}\n{self.log_tail()}")

    def wait_for_dags(self, dag_ids: Iterable[str], timeout: float = 120.0) -> None:
        """Until the dag-processor has serialized every DAG id; import errors fail at once."""
        wanted = set(dag_ids)
        deadline = time.monotonic() + timeout
        while wanted:
            self._check_alive()
            found = {d["dag_id"] for d in self.api("GET", "/api/v2/dags?limit=1000").json()["dags"]}
            missing = wanted - found
            if not missing:
                return
            errors = self.api("GET", "/api/v2/importErrors").json()["import_errors"]
            if errors:
                detail = "\n".join(f"{e['filename']}: {e['stack_trace']}" for e in errors)
                raise StandaloneError(
                    f"DAGs {sorted(missing)} not parsed; import errors:\n{detail}"
                )
            if time.monotonic() > deadline:
                raise StandaloneError(
                    f"DAGs {sorted(missing)} not parsed in {timeout:.0f} s (have {sorted(found)})"
                )
            time.sleep(1.0)

    # -- REST API -----------------------------------------------------------------------

    def token(self) -> str:
        """A JWT from POST /auth/token with the admin's credentials (cached)."""
        if self._token is None:
            response = self._http.post(
                "/auth/token", json={"username": ADMIN_USER, "password": self.password}
            )
            response.raise_for_status()
            self._token = response.json()["access_token"]
        return self._token

    def api(self, method: str, path: str, *, check: bool = True, **kwargs: Any) -> httpx.Response:
        """One authenticated call; ``check`` raises on a 4xx/5xx with the response body."""
        headers = {"Authorization": f"Bearer {self.token()}", **kwargs.pop("headers", {})}
        response = self._http.request(method, path, headers=headers, **kwargs)
        if check and response.is_error:
            raise StandaloneError(
                f"{method} {path} -> {response.status_code}: {response.text[:2000]}"
            )
        return response

    def trigger(self, dag_id: str, conf: Mapping[str, Any] | None = None) -> dict[str, Any]:
        """POST /api/v2/dags/{dag_id}/dagRuns now (logical_date null) with ``conf``."""
        body = {"logical_date": None, "conf": dict(conf or {})}
        return self.api("POST", f"/api/v2/dags/{dag_id}/dagRuns", json=body).json()

    def dag_runs(self, dag_id: str) -> list[dict[str, Any]]:
        """Every run of ``dag_id``, oldest first."""
        path = f"/api/v2/dags/{dag_id}/dagRuns?limit=100&order_by=run_after"
        return self.api("GET", path).json()["dag_runs"]

    def task_states(self, dag_id: str, run_id: str) -> dict[str, str | None]:
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances"
        instances = self.api("GET", path).json()["task_instances"]
        return {
            f"{ti['task_id']}[{ti['map_index']}]" if ti["map_index"] >= 0 else ti["task_id"]: ti[
                "state"
            ]
            for ti in instances
        }

    def wait_for_run(self, dag_id: str, run_id: str, timeout: float = 120.0) -> dict[str, Any]:
        """Until the run is success or failed; returns it. Timeouts name every task's state."""
        deadline = time.monotonic() + timeout
        while True:
            self._check_alive()
            run = self.api("GET", f"/api/v2/dags/{dag_id}/dagRuns/{run_id}").json()
            if run["state"] in FINISHED_STATES:
                return run
            if time.monotonic() > deadline:
                raise StandaloneError(
                    f"{dag_id} run {run_id} still {run['state']} after {timeout:.0f} s; "
                    f"tasks: {self.task_states(dag_id, run_id)}\n{self.log_tail()}"
                )
            time.sleep(1.0)

    # -- components ---------------------------------------------------------------------

    def component(self, name: str) -> psutil.Process:
        """The running `airflow <name>` process: a child of standalone or our replacement."""
        assert self._process is not None, "not started"
        candidates = psutil.Process(self._process.pid).children()
        candidates += [psutil.Process(p.pid) for p in self._extra if p.poll() is None]
        for process in candidates:
            try:
                args = process.cmdline()
            except (psutil.NoSuchProcess, psutil.ZombieProcess):
                continue
            if len(args) >= 2 and Path(args[-2]).name == "airflow" and args[-1] == name:
                return process
        raise StandaloneError(f"no running `airflow {name}` under standalone")

    def restart_triggerer(
        self, sig: signal.Signals = signal.SIGTERM, timeout: float = 90.0
    ) -> None:
        """Stop the triggerer (standalone will not restart it) and start a replacement.

        The replacement gets the same environment and a process group of its own (a process
        cannot join a group in another session), which `stop()` ends as well. Returns (the
        seconds it took) once the health endpoint shows a heartbeat from the new triggerer.
        """
        began = time.monotonic()
        old = self.component("triggerer")
        family = [old, *old.children(recursive=True)]
        for process in family:
            process.send_signal(sig)
        deadline = time.monotonic() + 30
        while any(map(_running, family)) and time.monotonic() < deadline:
            time.sleep(0.2)
        for process in filter(_running, family):
            process.kill()
        stopped = datetime.now(UTC)
        with (self.home / f"triggerer-{len(self._extra) + 1}.log").open("ab") as log:
            self._extra.append(
                subprocess.Popen(
                    [str(VENV_BIN / "airflow"), "triggerer"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )
        self._wait_healthy(time.monotonic() + timeout, triggerer_after=stopped)
        return time.monotonic() - began


def interrupt_on_term() -> None:
    """Ctrl-C or a TERM raise KeyboardInterrupt (also in the background, where SIGINT may be
    ignored), so a dev script's ``finally`` stops what it started."""

    def interrupt(signum: int, frame: object) -> None:
        raise KeyboardInterrupt

    signal.signal(signal.SIGINT, interrupt)
    signal.signal(signal.SIGTERM, interrupt)


def stop_groups(groups: list[int], grace: float) -> None:
    """SIGTERM every process group, then SIGKILL whatever is left after ``grace`` seconds."""
    for pgid in groups:
        _signal_group(pgid, signal.SIGTERM)
    deadline = time.monotonic() + grace
    while any(map(_group_alive, groups)) and time.monotonic() < deadline:
        time.sleep(0.5)
    for pgid in filter(_group_alive, groups):
        _signal_group(pgid, signal.SIGKILL)


def _signal_group(pgid: int, sig: signal.Signals) -> None:
    with contextlib.suppress(ProcessLookupError):
        os.killpg(pgid, sig)


def _beat(health: dict[str, Any]) -> datetime:
    """The triggerer's latest heartbeat as an aware datetime (epoch if none yet)."""
    beat = (health.get("triggerer") or {}).get("latest_triggerer_heartbeat")
    return datetime.fromisoformat(beat) if beat else datetime.fromtimestamp(0, UTC)


def _running(process: psutil.Process) -> bool:
    """Still running; a zombie counts as gone (standalone never reaps its children)."""
    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.NoSuchProcess:
        return False


def _group_alive(pgid: int) -> bool:
    """Any non-zombie process left in the group (orphans may never be reaped in a container)."""
    for process in psutil.process_iter(["status"]):
        try:
            if os.getpgid(process.pid) == pgid and process.info["status"] != psutil.STATUS_ZOMBIE:
                return True
        except (ProcessLookupError, psutil.NoSuchProcess):
            continue
    return False
