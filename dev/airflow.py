"""`make airflow`: `airflow standalone` with this repo's DAGs and plugins, beside the emulator.

Connections point at the emulator through AIRFLOW_CONN_* (JSON form). Ctrl-C stops
everything this started: standalone runs in its own process group, stopped as a group
(standalone itself never stops or reaps its children).
"""

from __future__ import annotations

import subprocess
import sys

from dev.local import AIRFLOW_BIN, LOCAL, airflow_env, prepare_airflow, running_emulator
from dev.standalone import interrupt_on_term, stop_groups


def main() -> int:
    interrupt_on_term()
    airflow_home = LOCAL / "airflow"
    with running_emulator(LOCAL / "emulator", LOCAL / "home") as emulator:
        env = airflow_env(airflow_home, LOCAL / "home", emulator)
        env.setdefault("AIRFLOW__DAG_PROCESSOR__REFRESH_INTERVAL", "20")
        env.setdefault("AIRFLOW__API__HOST", "127.0.0.1")  # a dev UI: loopback only
        prepare_airflow(env)
        print(f"emulator: {emulator.url}")
        print("Airflow UI: http://localhost:8080  (user admin; the password is printed below on")
        print(
            f"first start and kept in {airflow_home}/simple_auth_manager_passwords.json.generated)"
        )
        print("Ctrl-C stops Airflow and the emulator.")
        standalone = subprocess.Popen(
            [str(AIRFLOW_BIN), "standalone"], env=env, start_new_session=True
        )
        try:
            return standalone.wait()
        except KeyboardInterrupt:
            return 0
        finally:
            stop_groups([standalone.pid], grace=30)
            standalone.wait(timeout=10)


if __name__ == "__main__":
    sys.exit(main())
