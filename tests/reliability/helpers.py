"""A lake with one audience, refreshes as worker processes, and what AEP and the lake hold."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from dataclasses import dataclass, field
from pathlib import Path

import pyarrow.parquet as pq
import yaml

from cja_audiences import snapshots
from tests.publish.helpers import held, identities, make_spec

REPO = Path(__file__).resolve().parents[2]
AUDIENCE = "high_value"
# every guardrail that would block a big swing is opened: these tests are about AEP state
OPEN_GUARDRAILS = {
    "max_change_pct": 1_000_000,
    "max_exits": 10_000_000,
    "allow_empty": True,
    "max_invalid_identities": 10_000_000,  # test identities are not real ECIDs
}


@dataclass
class AudienceLake:
    """``home`` (the lake), ``specs``, and the environment a worker process gets."""

    home: Path
    specs: Path
    env: dict[str, str] = field(default_factory=dict)

    @property
    def audience_dir(self) -> Path:
        return self.home / "audiences" / AUDIENCE

    def run_dir(self, run_id: str) -> Path:
        return self.audience_dir / "runs" / run_id

    def start(self, run_id: str, ids: range, *args: str, **env: str) -> subprocess.Popen[bytes]:
        """A refresh of run ``run_id`` with members ``ids`` in a new process."""
        return subprocess.Popen(
            [sys.executable, "-m", "tests.reliability.refresh_child", run_id]
            + [str(ids.start), str(ids.stop), *args],
            cwd=REPO,
            env=self.env | env,
            stdout=subprocess.DEVNULL,
            stderr=subprocess.PIPE,
        )

    def refresh(self, run_id: str, ids: range, *args: str, **env: str) -> int:
        """Run a refresh to its end; returns the exit code (0 committed, 3 skipped, 4 refused)."""
        child = self.start(run_id, ids, *args, **env)
        _out, err = child.communicate(timeout=120)
        if child.returncode not in (0, 3, 4, -9):
            raise AssertionError(f"refresh {run_id} failed ({child.returncode}): {err.decode()}")
        return child.returncode

    def committed(self) -> set[tuple[str, str]]:
        """(namespace, identity) of the committed snapshot's members."""
        run_dir = snapshots.current_run_dir(self.audience_dir)
        return identities(pq.read_table(run_dir / "members.parquet")) if run_dir else set()


def make_lake(tmp_path: Path, emu, **settings: str) -> AudienceLake:
    specs = tmp_path / "specs"
    specs.mkdir()
    spec = make_spec(guardrails=OPEN_GUARDRAILS).model_dump(mode="json", exclude={"source_path"})
    (specs / f"{AUDIENCE}.yaml").write_text(yaml.safe_dump(spec))
    home = tmp_path / "home"
    env = os.environ | {
        "CJA_AUDIENCES_HOME": str(home),
        "CJA_AUDIENCES_SPECS": str(specs),
        "CJA_AUDIENCES_LEASE_TTL_S": "3",
        "CJA_AUDIENCES_LEASE_WAIT_S": "0",
        "AIRFLOW_CONN_AEP_DEFAULT": json.dumps(emu.aep_conn(rate_limit=0)),
        "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)]),
    }
    return AudienceLake(home, specs, env | settings)


def aep_matches_snapshot(emu, lake: AudienceLake) -> None:
    """The invariant: whoever holds the audience as realized in AEP is exactly the snapshot."""
    realized = held(emu, AUDIENCE, status="realized")
    committed = lake.committed()
    assert realized == committed, (
        f"AEP differs from the committed snapshot: {len(realized - committed)} realized but "
        f"not members, {len(committed - realized)} members not realized"
    )


def wait_for_chunks(run_dir: Path, count: int, child: subprocess.Popen[bytes]) -> None:
    """Until ``count`` chunks of the run are acknowledged (the child must still run)."""
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if child.poll() is not None:
            raise AssertionError(f"refresh ended early: {child.stderr.read().decode()[-2000:]}")
        ledger = run_dir / "ledger"
        if ledger.is_dir() and len(list(ledger.glob("*-*.json"))) >= count:
            return
        time.sleep(0.005)
    raise AssertionError("the refresh made no progress")
