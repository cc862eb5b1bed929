"""A worker clock 2 h fast in one run and right in the next: AEP keeps the later
lastQualificationTime, so the second run's exits must still carry a later time."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest

from cja_audiences import clock, snapshots
from cja_audiences.diff import diff_members
from cja_audiences.publish.streaming import publish_run
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    write_members,
)

pytestmark = [pytest.mark.reliability, pytest.mark.integration]


def refresh(emu, audience, run_id, ids):
    run_dir = audience / "runs" / run_id
    write_members(run_dir / "members.parquet", ids)
    diff_members(run_dir, snapshots.current_run_dir(audience))
    publish_run(emu.adobe_config(rate_limit=0), make_spec(), run_dir, options=fast_options())
    snapshots.commit(audience, run_dir)


def test_exits_after_a_run_with_a_fast_clock_are_not_ignored(emu, tmp_path, monkeypatch):
    audience = tmp_path / "audiences" / "high_value"
    with monkeypatch.context() as fast:
        fast.setenv(clock.OFFSET_ENV, str(2 * 3600))  # the worker's clock is 2 h fast
        refresh(emu, audience, "r1", range(1_000))
    refresh(emu, audience, "r2", range(500))

    assert held(emu, status="realized") == identities(member_table(range(500)))
    assert held(emu, status="exited") == identities(member_table(range(500, 1_000)))
    times = {m["status"]: m["last_qualification_time"] for m in emu.membership("high_value")}
    assert times["exited"] > times["realized"] > datetime.now(UTC).isoformat()
