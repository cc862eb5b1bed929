"""One real DAG run with ``dag.test()`` in its own process, started together with another.

Usage: python -m tests.reliability.dag_child DAG_ID AUDIENCE AS_OF BARRIER_DIR
The DAG comes from the repo's dags/ folder, as the dag-processor would parse it; Airflow's
home, the lake, the specs, the lease timing and the AEP connection come from the
environment. Once its DAG is parsed the process marks itself ready in BARRIER_DIR and starts
its run when both processes are ready, so the two runs overlap. It prints the run's id,
state and each task's state, start and end (by task id without its group) as JSON on the output line starting with ``DAG_RESULT``.
"""

from __future__ import annotations

import json
import sys
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[2]
PARTIES = 2
START_TIMEOUT_S = 120
RESULT = "DAG_RESULT "  # prefix of the output line holding the run's outcome


def wait_for_peers(barrier: Path, name: str) -> None:
    (barrier / name).touch()
    deadline = time.monotonic() + START_TIMEOUT_S
    while len(list(barrier.iterdir())) < PARTIES:
        if time.monotonic() > deadline:
            raise SystemExit(f"the other DAG process never got ready ({barrier})")
        time.sleep(0.02)


def main(dag_id: str, audience: str, as_of: str, barrier: str) -> int:
    from airflow.dag_processing.dagbag import DagBag

    dag = DagBag(dag_folder=str(REPO / "dags")).get_dag(dag_id)
    conf = {"as_of": as_of, "force": True, "publish": True}
    if dag_id == "cja_audiences_all":
        conf["audiences"] = [audience]
    wait_for_peers(Path(barrier), dag_id)
    run = dag.test(run_conf=conf)
    tasks = {
        ti.task_id.rsplit(".", 1)[-1]: {
            "state": ti.state,
            "start": ti.start_date.isoformat() if ti.start_date else None,
            "end": ti.end_date.isoformat() if ti.end_date else None,
        }
        for ti in run.get_task_instances()
    }
    result = {"dag_id": dag_id, "run_id": run.run_id, "state": run.state, "tasks": tasks}
    print(RESULT + json.dumps(result), flush=True)
    return 0


if __name__ == "__main__":
    sys.exit(main(*sys.argv[1:]))
