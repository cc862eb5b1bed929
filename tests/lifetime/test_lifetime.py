"""validUntil, the spread of first sends, the renewal cut-off and the snapshot's membership file."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pyarrow.parquet as pq
import pytest

from cja_audiences.diff import diff_members
from cja_audiences.lake.runs import MEMBERSHIP
from cja_audiences.lifetime import (
    ONE_TIME_TTL,
    Lifetime,
    epoch_ms,
    lifetime_for,
    renew_before,
    write_membership,
)
from cja_audiences.settings import Settings
from tests.publish.helpers import make_spec, write_members

DAY = timedelta(days=1)
LIFE = Lifetime(ttl=30 * DAY, margin=timedelta(hours=48), spread=21 * DAY)
SENT = epoch_ms(datetime(2026, 12, 1, 6, tzinfo=UTC))


def test_first_sends_spread_over_the_spread_days_and_renewals_get_the_full_ttl():
    untils = [LIFE.valid_until_ms(SENT, "ECID", f"id-{i}", True) for i in range(20_000)]
    days = [(u - SENT) / 86_400_000 for u in untils]
    assert min(days) >= 9 and max(days) <= 30
    per_day = [sum(int(d) == k for d in days) / len(days) for k in range(9, 30)]
    assert max(per_day) < 0.06  # about 1/21 a day: no day renews a large share
    assert LIFE.valid_until_ms(SENT, "ECID", "id-1", True) == untils[1]  # deterministic
    assert LIFE.valid_until_ms(SENT, "ECID", "id-1", False) == SENT + 30 * 86_400_000


def test_settings_and_one_time_audiences(tmp_path):
    settings = Settings(home=tmp_path, audiences_dir=tmp_path, filters_dir=tmp_path)
    assert lifetime_for(make_spec(), settings) == Lifetime(30 * DAY, 2 * DAY, 21 * DAY)
    one_time = make_spec(
        refresh={
            "frequency": "one_time",
            "date_range": {"start": "2026-11-01", "end": "2026-11-30"},
        }
    )
    assert lifetime_for(one_time, settings).ttl == ONE_TIME_TTL == 420 * DAY
    assert renew_before(one_time, lifetime_for(one_time, settings), datetime.now(UTC)) is None
    with pytest.raises(ValueError, match="RENEWAL_SPREAD_DAYS"):
        Lifetime(ttl=10 * DAY, margin=2 * DAY, spread=9 * DAY)


def test_renew_before_is_the_next_scheduled_refresh_plus_the_margin():
    spec = make_spec(
        refresh={"frequency": "daily", "lookback_days": 30, "start": "2026-01-01T06:00:00Z"}
    )
    now = datetime(2026, 12, 1, 7, 30, tzinfo=UTC)
    assert renew_before(spec, LIFE, now) == datetime(2026, 12, 4, 6, tzinfo=UTC)


def test_diff_renews_only_unchanged_members_due_before_the_cutoff(tmp_path):
    first, second = tmp_path / "r1", tmp_path / "r2"
    write_members(first / "members.parquet", range(100))
    diff_members(first, None)
    write_membership(
        first, None, [(first / "entered.parquet", "2026-11-01T06:00:00.000+00:00", True)], LIFE
    )
    write_members(second / "members.parquet", range(10, 110))
    cutoff = datetime(2026, 11, 21, tzinfo=UTC)
    record = diff_members(second, first, renew_before=cutoff)
    held = pq.read_table(first / MEMBERSHIP).to_pylist()
    due = {
        r["person_id"] for r in held if r["valid_until"] < cutoff and r["person_id"] >= "p000000010"
    }
    renewed = set(pq.read_table(second / "renewed.parquet")["person_id"].to_pylist())
    assert renewed == due and 0 < len(due) < 90
    assert (record["entered"], record["exited"], record["renewed"]) == (10, 10, len(due))

    write_membership(
        second,
        first,
        [
            (second / "entered.parquet", "2026-11-02T06:00:00.000+00:00", True),
            (second / "renewed.parquet", "2026-11-02T06:00:00.000+00:00", False),
        ],
        LIFE,
    )
    after = {r["person_id"]: r for r in pq.read_table(second / MEMBERSHIP).to_pylist()}
    assert len(after) == 100 and "p000000005" not in after
    before = {r["person_id"]: r for r in held}
    unchanged = next(p for p in after if p not in renewed and p < "p000000100")
    assert after[unchanged]["valid_until"] == before[unchanged]["valid_until"]  # carried
    renewed_one = next(iter(renewed))
    assert after[renewed_one]["valid_until"] == datetime(2026, 12, 2, 6, tzinfo=UTC)


def test_a_snapshot_from_before_valid_until_renews_every_unchanged_member(tmp_path):
    first, second = tmp_path / "r1", tmp_path / "r2"
    write_members(first / "members.parquet", range(50))
    diff_members(first, None)
    write_members(second / "members.parquet", range(5, 50))
    assert diff_members(second, first, renew_before=datetime.now(UTC))["renewed"] == 45
