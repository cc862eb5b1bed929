"""`source dev/env.sh`: the demo's environment in your own shell, as `export` lines.

The same variables the demo and `make airflow` give Airflow (dev.local.demo_environment):
the Airflow home under .local/airflow, this repo's DAGs, plugins, specs and filters, the
lake under .local/home, and the aep_default / cja_default connections pointing at the
emulator that `make emulator` serves on 127.0.0.1:8765.
"""

from __future__ import annotations

import shlex

from dev.local import LOCAL, demo_environment
from emulator.config import load_config
from emulator.process import EmulatorServer

EMULATOR_URL = "http://127.0.0.1:8765"  # `make emulator`


def main() -> None:
    emulator = EmulatorServer(
        EMULATOR_URL, None, LOCAL / "emulator", config=load_config().summary()
    )
    for name, value in demo_environment(LOCAL / "airflow", LOCAL / "home", emulator).items():
        print(f"export {name}={shlex.quote(value)}")


if __name__ == "__main__":
    main()
