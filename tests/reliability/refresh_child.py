"""One audience refresh (diff, guardrails, publish, commit) in its own process, resumable.

Usage: python -m tests.reliability.refresh_child RUN_ID FIRST LAST [--rollback TARGET]
Members are persons FIRST..LAST-1 (tests.publish.helpers). The lake, specs, lease timing and
the AEP connection come from the environment, as for a worker. Stages already done (per
run.json) are skipped, so running it again with the same RUN_ID is a task retry.
``CJA_TEST_KILL_AT=<function>:<n>`` SIGKILLs the process just before the n-th call of
``cja_audiences.snapshots.<function>`` (a crash at a chosen point inside commit);
``CJA_TEST_AUDIENCE`` picks the audience (default high_value; bench/soak.py runs ten).
Exit codes: 0 committed, 3 skipped (another run holds the audience), 4 refused (superseded
or lost the lease).
"""

from __future__ import annotations

import os
import signal
import sys
from datetime import date

from cja_audiences import snapshots
from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.lake.lease import AudienceBusy, LeaseLost
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, RefreshRequest
from cja_audiences.settings import get_settings
from cja_audiences.specs.model import spec_by_id
from tests.publish.helpers import fast_options, write_members

AUDIENCE = os.environ.get("CJA_TEST_AUDIENCE", "high_value")
CHUNK = int(os.environ.get("CJA_TEST_CHUNK", "500"))


def kill_before(function: str, n: int) -> None:
    original = getattr(snapshots, function)
    calls = {"n": 0}

    def wrapper(*args, **kwargs):
        calls["n"] += 1
        if calls["n"] == n:
            os.kill(os.getpid(), signal.SIGKILL)
        return original(*args, **kwargs)

    setattr(snapshots, function, wrapper)


def main(argv: list[str]) -> int:
    run_id, first, last = argv[0], int(argv[1]), int(argv[2])
    if os.environ.get("CJA_TEST_KILL_AT"):
        function, n = os.environ["CJA_TEST_KILL_AT"].split(":")
        kill_before(function, int(n))
    settings = get_settings()
    spec = spec_by_id(settings.audiences_dir, AUDIENCE)
    refresh = AudienceRefresh(spec, settings, RefreshRequest(run_id, date.today(), force=True))
    config = AdobeConfig.from_env("aep_default")
    if "--rollback" in argv:
        target = argv[argv.index("--rollback") + 1]
        publish = lambda d: publish_run(config, spec, d, options=fast_options(CHUNK))  # noqa: E731
        try:
            snapshots.rollback(
                refresh.audience_dir,
                target,
                refresh.run_dir,
                publish,
                lease_wait_s=settings.lease_wait_s,
            )
        except AudienceBusy:
            return 3
        return 0
    record = read_run_record(refresh.run_dir)
    try:
        if "diff" not in record:
            if not (refresh.run_dir / "members.parquet").exists():
                write_members(refresh.run_dir / "members.parquet", range(first, last))
            refresh.diff()
            refresh.check()
        if (record.get("publish") or {}).get("status") != "ok":
            publish_run(config, spec, refresh.run_dir, options=fast_options(CHUNK))
        refresh.commit()
    except AudienceBusy:
        return 3
    except LeaseLost:
        return 4
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv[1:]))
