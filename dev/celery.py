"""`make celery`: Airflow on its Celery executor, every component a process of its own.

PostgreSQL (Debian's ``postgresql``) is the metadata DB, Redis (``redis-server``) the broker
and the home of the per-org rate budget; then the scheduler, dag-processor, triggerer,
api-server and two Celery workers, all on 127.0.0.1 and free ports, beside the emulator.
Ctrl-C or TERM stops all of it (each component runs in its own process group, stopped as a
group; PostgreSQL gets a fast shutdown). The same :class:`CeleryCluster` backs the Celery
end-to-end test; ``docker-compose.yaml`` and ``deploy/helm`` mirror this topology.

Each worker names itself (``CJA_AUDIENCES_WORKER_NAME`` through ``[core]
hostname_callable``), so a task instance's ``hostname`` says which worker ran it.
"""

from __future__ import annotations

import json
import os
import pwd
import secrets
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import httpx

from dev.standalone import (
    ADMIN_USER,
    VENV_BIN,
    StandaloneAirflow,
    free_port,
    interrupt_on_term,
    stop_groups,
)

WORKERS = 2
WORKER_CONCURRENCY = 2
COMPONENTS = ("scheduler", "dag-processor", "triggerer", "api-server")


def worker_hostname() -> str:
    """``[core] hostname_callable`` of the workers: the name the cluster gave each one."""
    return os.environ.get("CJA_AUDIENCES_WORKER_NAME") or socket.getfqdn()


def start_redis(port: int, log: Path) -> subprocess.Popen[bytes]:
    """Debian's ``redis-server`` on 127.0.0.1:``port`` (no persistence), once it listens."""
    binary = shutil.which("redis-server")
    if binary is None:
        raise RuntimeError("redis-server is not installed: apt-get install redis-server")
    with log.open("ab") as out:
        process = subprocess.Popen(
            [
                binary,
                "--bind",
                "127.0.0.1",
                "--port",
                str(port),
                "--save",
                "",
                "--appendonly",
                "no",
            ],
            stdout=out,
            stderr=subprocess.STDOUT,
            start_new_session=True,
        )
    deadline = time.monotonic() + 20
    while time.monotonic() < deadline:
        try:
            socket.create_connection(("127.0.0.1", port), timeout=0.5).close()
            return process
        except OSError:
            if process.poll() is not None:
                break
            time.sleep(0.1)
    process.kill()
    raise RuntimeError(f"redis-server did not listen on 127.0.0.1:{port}; see {log}")


def _postgres_bin(name: str) -> Path:
    found = sorted(Path("/usr/lib/postgresql").glob(f"*/bin/{name}"))
    if not found:
        raise RuntimeError("PostgreSQL is not installed: apt-get install postgresql (.ci/run does)")
    return found[-1]


class Postgres:
    """A throwaway PostgreSQL cluster on 127.0.0.1 with trust auth for user ``airflow``.

    PostgreSQL refuses to run as root, so under root (CI, containers) it runs as the
    ``postgres`` user Debian's package creates, in a data folder that user owns.
    """

    def __init__(self, data_dir: Path, port: int) -> None:
        self.data_dir = data_dir
        self.port = port
        self.url = f"postgresql+psycopg2://airflow@127.0.0.1:{port}/airflow"
        self.process: subprocess.Popen[bytes] | None = None
        self._user = "postgres" if os.geteuid() == 0 else None

    def _as_owner(self, args: list[str]) -> list[str]:
        return ["runuser", "-u", self._user, "--", *args] if self._user else args

    def start(self, log: Path) -> None:
        if not (self.data_dir / "PG_VERSION").exists():
            self.data_dir.mkdir(parents=True, exist_ok=True)
            if self._user:
                entry = pwd.getpwnam(self._user)
                os.chown(self.data_dir, entry.pw_uid, entry.pw_gid)
            subprocess.run(
                self._as_owner(
                    [
                        str(_postgres_bin("initdb")),
                        "-D",
                        str(self.data_dir),
                        "-U",
                        "airflow",
                        "--auth=trust",
                        "--encoding=UTF8",
                        "--no-instructions",
                    ]
                ),
                check=True,
                stdout=subprocess.DEVNULL,
            )
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                self._as_owner(
                    [
                        str(_postgres_bin("postgres")),
                        "-D",
                        str(self.data_dir),
                        "-h",
                        "127.0.0.1",
                        "-p",
                        str(self.port),
                        "-k",
                        str(self.data_dir),
                    ]
                ),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )
        deadline = time.monotonic() + 60
        while subprocess.run(self._client("pg_isready"), stdout=subprocess.DEVNULL).returncode:
            if self.process.poll() is not None or time.monotonic() > deadline:
                raise RuntimeError(f"PostgreSQL did not start; see {log}")
            time.sleep(0.3)
        query = "SELECT 1 FROM pg_database WHERE datname = 'airflow'"
        found = subprocess.run(
            self._client("psql", "-d", "postgres", "-tAc", query),
            check=True,
            capture_output=True,
            text=True,
        )
        if not found.stdout.strip():
            subprocess.run(self._client("createdb", "airflow"), check=True)

    def _client(self, tool: str, *args: str) -> list[str]:
        """A PostgreSQL client command against this server as ``airflow``."""
        return [
            str(_postgres_bin(tool)),
            "-h",
            "127.0.0.1",
            "-p",
            str(self.port),
            "-U",
            "airflow",
            *args,
        ]

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGINT)  # PostgreSQL's fast shutdown
            try:
                self.process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                os.killpg(self.process.pid, signal.SIGKILL)
                self.process.wait()


class CeleryCluster(StandaloneAirflow):
    """PostgreSQL + Redis + every Airflow component + two Celery workers, as a context manager.

    Reuses the standalone helper's REST client, readiness checks and DAG waiting; only how
    the processes start and stop differs.
    """

    def __init__(
        self,
        home: Path,
        *,
        env: Mapping[str, str] | None = None,
        workers: int = WORKERS,
        worker_concurrency: int = WORKER_CONCURRENCY,
        postgres_dir: Path | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(home, env=env, **kwargs)
        self.workers = workers
        self.worker_concurrency = worker_concurrency
        self.redis_port = free_port()
        self.redis_url = f"redis://127.0.0.1:{self.redis_port}"
        self._pg_dir_is_temporary = postgres_dir is None
        if postgres_dir is None:
            scratch = Path(tempfile.mkdtemp(prefix="cja-postgres-"))
            scratch.chmod(0o755)  # the postgres user must reach the data folder inside
            postgres_dir = scratch / "data"
        pg_dir = postgres_dir
        self.postgres = Postgres(pg_dir, free_port())
        self.worker_names = [f"celery-worker-{i + 1}" for i in range(workers)]
        self.env.update(self._celery_environment(env or {}))
        # every component shares two cores here: the API may answer slowly, not fail
        self._http = httpx.Client(base_url=self.url, timeout=120.0)
        self._processes: list[subprocess.Popen[bytes]] = []
        self._redis: subprocess.Popen[bytes] | None = None

    def _celery_environment(self, extra: Mapping[str, str]) -> dict[str, str]:
        values = {
            "AIRFLOW__CORE__EXECUTOR": "CeleryExecutor",
            "AIRFLOW__DATABASE__SQL_ALCHEMY_CONN": self.postgres.url,
            "AIRFLOW__CELERY__BROKER_URL": f"{self.redis_url}/0",
            "AIRFLOW__CELERY__RESULT_BACKEND": f"db+postgresql+psycopg2://airflow@127.0.0.1:"
            f"{self.postgres.port}/airflow",
            "AIRFLOW__CELERY__WORKER_CONCURRENCY": str(self.worker_concurrency),
            "AIRFLOW__CORE__EXECUTION_API_SERVER_URL": f"{self.url}/execution/",
            # every component signs and checks the same task tokens
            "AIRFLOW__API_AUTH__JWT_SECRET": secrets.token_hex(32),
            "AIRFLOW__CORE__HOSTNAME_CALLABLE": "dev.celery.worker_hostname",
            "CJA_AUDIENCES_RATE_BUDGET_URL": f"{self.redis_url}/1",
        }
        return {**values, **extra}

    def start(self) -> None:
        self.home.mkdir(parents=True, exist_ok=True)
        self.passwords_file.write_text(json.dumps({ADMIN_USER: self.password}))
        began = time.monotonic()
        try:
            self._redis = start_redis(self.redis_port, self.home / "redis.log")
            self.postgres.start(self.home / "postgres.log")
            with (self.home / "db-migrate.log").open("ab") as log:
                migrated = subprocess.run(
                    [str(VENV_BIN / "airflow"), "db", "migrate"],
                    env=self.env,
                    stdout=log,
                    stderr=subprocess.STDOUT,
                )
            if migrated.returncode:
                raise RuntimeError(f"airflow db migrate failed.\n{self.log_tail()}")
            for component in COMPONENTS:
                self._spawn(component, ["airflow", *component.split()], self.env)
            for name in self.worker_names:
                env = self.env | {
                    "CJA_AUDIENCES_WORKER_NAME": name,
                    "AIRFLOW__LOGGING__WORKER_LOG_SERVER_PORT": str(free_port()),
                }
                args = ["airflow", "celery", "worker", "--celery-hostname", f"{name}@%h"]
                self._spawn(name, args, env)
            self._process = self._processes[COMPONENTS.index("api-server")]
            self._ready(began)
        except BaseException:
            self.stop()
            raise

    def _spawn(self, name: str, args: list[str], env: Mapping[str, str]) -> None:
        with (self.home / f"{name}.log").open("ab") as log:
            self._processes.append(
                subprocess.Popen(
                    [str(VENV_BIN / args[0]), *args[1:]],
                    env=dict(env),
                    stdout=log,
                    stderr=subprocess.STDOUT,
                    start_new_session=True,
                )
            )

    def _check_alive(self) -> None:
        for process in self._processes:
            if process.poll() is not None:
                raise RuntimeError(
                    f"`{' '.join(map(str, process.args[1:]))}` exited.\n{self.log_tail()}"
                )

    def log_tail(self, lines: int = 15) -> str:
        parts = []
        for log in sorted(self.home.glob("*.log")):
            text = log.read_text(errors="replace").splitlines()
            parts.append(f"--- last {lines} lines of {log} ---\n" + "\n".join(text[-lines:]))
        return "\n".join(parts)

    def stop(self) -> None:
        self._http.close()
        groups = [p.pid for p in self._processes if p.poll() is None]
        stop_groups(groups, self.stop_grace)
        for process in self._processes:
            try:
                process.wait(timeout=10)
            except subprocess.TimeoutExpired:
                process.kill()
        self._processes.clear()
        self._process = None
        self.postgres.stop()
        if self._redis is not None:
            stop_groups([self._redis.pid], 10)
            self._redis.wait(timeout=10)
            self._redis = None
        if self._pg_dir_is_temporary:
            shutil.rmtree(self.postgres.data_dir.parent, ignore_errors=True)

    def api(self, method: str, path: str, *, check: bool = True, **kwargs: Any) -> httpx.Response:
        """As the standalone client, retrying reads the busy API server timed out on."""
        attempts = 3 if method == "GET" else 1
        for attempt in range(1, attempts + 1):
            try:
                return super().api(method, path, check=check, **kwargs)
            except httpx.TimeoutException:
                if attempt == attempts:
                    raise
        raise RuntimeError(f"{method} {path}: no attempt made")

    def task_hosts(self, dag_id: str, run_id: str) -> dict[str, str]:
        """Which worker ran each task instance of a run (``task[map_index]`` -> hostname)."""
        path = f"/api/v2/dags/{dag_id}/dagRuns/{run_id}/taskInstances?limit=1000"
        return {
            f"{ti['task_id']}[{ti['map_index']}]": ti["hostname"]
            for ti in self.api("GET", path).json()["task_instances"]
            if ti.get("hostname")
        }


def main() -> int:
    """Start everything under .local/celery/ with the emulator; wait for Ctrl-C or TERM."""
    from dev.local import LOCAL, airflow_env, running_emulator

    interrupt_on_term()
    root = LOCAL / "celery"
    with running_emulator(LOCAL / "emulator", LOCAL / "home") as emulator:
        env = airflow_env(root / "airflow", LOCAL / "home", emulator)
        keep = {k: v for k, v in env.items() if k.startswith(("AIRFLOW_CONN_", "CJA_AUDIENCES_"))}
        cluster = CeleryCluster(
            root / "airflow",
            env=keep,
            postgres_dir=root / "postgres",
            pools={"aep_publish": 4},
            unpause=False,
            startup_timeout=600.0,
        )
        try:
            with cluster:
                print(f"emulator: {emulator.url}")
                print(
                    f"Airflow UI: {cluster.url}  (user {ADMIN_USER}, password {cluster.password})"
                )
                print(f"PostgreSQL: {cluster.postgres.url}   Redis: {cluster.redis_url}")
                print(f"workers: {', '.join(cluster.worker_names)}; logs in {cluster.home}")
                print("Ctrl-C stops every component, PostgreSQL, Redis and the emulator.")
                while True:
                    cluster._check_alive()
                    time.sleep(2)
        except KeyboardInterrupt:
            return 0


if __name__ == "__main__":
    sys.exit(main())
