"""The local set-up shared by `make demo`, `make airflow` and the end-to-end tests.

Everything lives under .local/ in the repo (gitignored): the Airflow home, the lake and the
emulator's state, so a demo never touches anything outside the checkout.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

from dev.standalone import SMALL_MACHINE
from emulator.process import EmulatorServer, start_emulator

REPO = Path(__file__).resolve().parents[1]
LOCAL = REPO / ".local"
AIRFLOW_BIN = Path(sys.executable).with_name("airflow")


def demo_environment(
    airflow_home: Path, cja_home: Path, emulator: EmulatorServer
) -> dict[str, str]:
    """The variables the demo, `make airflow` and `dev/env.sh` share (one list, one place).

    Local only: DAGs are created unpaused (a deployment keeps Airflow's default, paused) and
    process counts fit a 2-core laptop.
    """
    return {
        "AIRFLOW_HOME": str(airflow_home),
        "AIRFLOW__CORE__DAGS_FOLDER": str(REPO / "dags"),
        "AIRFLOW__CORE__PLUGINS_FOLDER": str(REPO / "plugins"),
        "AIRFLOW__CORE__LOAD_EXAMPLES": "False",
        "AIRFLOW__CORE__DAGS_ARE_PAUSED_AT_CREATION": "False",
        **SMALL_MACHINE,
        "CJA_AUDIENCES_HOME": str(cja_home),
        "CJA_AUDIENCES_SPECS": str(REPO / "include" / "audiences"),
        "CJA_AUDIENCES_FILTERS": str(REPO / "include" / "filters"),
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emulator.aep_conn()),
        "AIRFLOW_CONN_CJA_DEFAULT": json.dumps(emulator.cja_conn()),
    }


def airflow_env(airflow_home: Path, cja_home: Path, emulator: EmulatorServer) -> dict[str, str]:
    """Environment for Airflow processes: the demo environment over this process's."""
    env = dict(os.environ)
    env.update(demo_environment(airflow_home, cja_home, emulator))
    env["PATH"] = os.pathsep.join([str(AIRFLOW_BIN.parent), env.get("PATH", "")])
    return env


@contextmanager
def running_emulator(state_dir: Path, lake_dir: Path) -> Iterator[EmulatorServer]:
    """The emulator on a free port, its state kept in ``state_dir`` across runs."""
    state_dir.mkdir(parents=True, exist_ok=True)
    server = start_emulator(state_dir, extra_args=["--lake", str(lake_dir)])
    try:
        yield server
    finally:
        server.stop()


def airflow(args: list[str], env: dict[str, str], **kwargs: object) -> subprocess.CompletedProcess:
    """Run the `airflow` CLI of this venv; raises with its output when it fails."""
    return subprocess.run([str(AIRFLOW_BIN), *args], env=env, check=True, **kwargs)


def prepare_airflow(env: dict[str, str]) -> None:
    """Migrate the metadata DB and create the pool that bounds concurrent AEP publishers."""
    airflow(["db", "migrate"], env, stdout=subprocess.DEVNULL)
    airflow(
        ["pools", "set", "aep_publish", "4", "Concurrent AEP publishers (cja-audiences)"],
        env,
        stdout=subprocess.DEVNULL,
    )
