"""Sixty daily refreshes with the emulator's clock moving a day each time (issue 12).

Each day runs the refresh's real stages (gate, compute, diff with renewals, guardrails,
publish over HTTP, commit: what the audience DAG's tasks call) with the package clock and the
emulator clock moved together. After every refresh AEP's unexpired realized set must equal
the committed snapshot exactly, including members unchanged since day 1, which survive only
because they are renewed before their validUntil: the emulator drops a membership at its
validUntil, as AEP does.
"""

from __future__ import annotations

from datetime import date, timedelta

import pyarrow.parquet as pq
import pytest

from cja_audiences.clock import OFFSET_ENV
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, RefreshRequest
from cja_audiences.settings import Settings
from cja_audiences.snapshots import current_run_dir
from cja_audiences.specs.model import AudienceSpec
from tests.publish.helpers import fast_options

pytestmark = pytest.mark.e2e

DAYS = 60
LOOKBACK = 14
FIRST = date(2026, 9, 1)
SPEC = {
    "id": "product_viewers",
    "name": "Product viewers (14 days)",
    "identity": {"namespace": "ECID"},
    "refresh": {"frequency": "daily", "lookback_days": LOOKBACK, "start": "2026-01-01T06:00:00Z"},
    "filter": {
        "rules": {
            "person": {
                "all": [{"field": "event_type", "op": "equals", "value": "commerce.productViews"}]
            }
        }
    },
    "guardrails": {"min_size": 1, "max_change_pct": 100},
}


def committed(audience_dir) -> set[tuple[str, str]]:
    table = pq.read_table(current_run_dir(audience_dir) / "members.parquet")
    return set(zip(table["namespace"].to_pylist(), table["identity"].to_pylist(), strict=True))


def test_sixty_daily_refreshes_keep_aep_equal_to_the_snapshot(emu, tmp_path, monkeypatch):
    lake = Lake(tmp_path / "home")
    generate_synthetic(lake, persons=400, days=DAYS + LOOKBACK, end=FIRST + timedelta(DAYS), seed=5)
    settings = Settings(home=lake.root, audiences_dir=tmp_path, filters_dir=tmp_path)
    spec = AudienceSpec.model_validate(SPEC)
    config = emu.adobe_config()
    monkeypatch.setattr("cja_audiences.publish.streaming.get_settings", lambda: settings)
    options = fast_options(chunk_size=200)
    since_day_1: set[tuple[str, str]] | None = None
    renewed_total = 0
    for day in range(DAYS):
        monkeypatch.setenv(OFFSET_ENV, str(day * 86400))
        refresh = AudienceRefresh(
            spec, settings, RefreshRequest(run_id=f"day{day:02d}", as_of=FIRST + timedelta(day))
        )
        assert refresh.gate()["due"], f"day {day}: the daily refresh was not due"
        refresh.compute()
        diff = refresh.diff()
        refresh.check()
        summary = publish_run(config, spec, refresh.run_dir, options=options)
        assert summary["status"] == "ok" and summary["by_kind"]["renewed"] == diff["renewed"]
        refresh.commit()
        renewed_total += diff["renewed"]

        members = committed(refresh.audience_dir)
        held = {
            (m["namespace"], m["identity"])
            for m in emu.membership(spec.id)
            if m["status"] == "realized"
        }
        assert held == members, (
            f"day {day}: {len(members - held)} committed members not realized in AEP, "
            f"{len(held - members)} realized but not committed"
        )
        since_day_1 = members if since_day_1 is None else since_day_1 & members
        emu.advance_clock(days=1)

    assert since_day_1, "no member stayed from day 1 to day 60: the test would prove nothing"
    assert renewed_total >= len(since_day_1) * 2  # each lived through at least two TTLs
    record = read_run_record(lake.run_dir(spec.id, f"day{DAYS - 1:02d}"))
    assert record["diff"]["renewed"] == record["publish"]["by_kind"]["renewed"]
