"""The CJA Reporting API source over real HTTP against the emulator: paging, limits, resume."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta
from pathlib import Path
from zoneinfo import ZoneInfo

import pytest

from cja_audiences.adobe.rate import SlidingWindowLimiter
from cja_audiences.adobe.retry import RetryPolicy
from cja_audiences.extract.reporting import (
    ReportingClient,
    ReportingError,
    ReportingSource,
    extract_reporting,
    fetch_data_view_timezone,
    local_stamp,
    windows,
)
from cja_audiences.lake.layout import Lake
from tests.extract.conftest import lake_digest, query, write_events

pytestmark = pytest.mark.integration

START = datetime(2026, 11, 24, tzinfo=UTC)
END = datetime(2026, 11, 28, tzinfo=UTC)  # four whole UTC days of the source lake
COUNTS = (
    "SELECT person_id, date::VARCHAR, event_type, count(*), round(sum(revenue), 2)"
    " FROM events WHERE date >= DATE '2026-11-24' GROUP BY ALL ORDER BY ALL"
)


FAST_WINDOW_S = 0.5  # Adobe's 12 requests per 6 s, in a shorter window to keep tests quick


@pytest.fixture()
def cja(emu, source_lake: Lake):
    emu.set_lake(source_lake.root)
    emu.faults(cja_rate_limit_window_s=FAST_WINDOW_S)
    return emu


def _source(emu, tmp_path: Path, **options) -> ReportingSource:
    config = emu.adobe_config("cja")
    client = ReportingClient(
        config,
        sleep=options.pop("sleep", lambda s: None),
        limiter=SlidingWindowLimiter(window_s=FAST_WINDOW_S),
    )
    return ReportingSource(
        client,
        data_view_id=config.data_view_id,
        start=options.pop("start", START),
        end=options.pop("end", END),
        checkpoint_dir=tmp_path / "checkpoints",
        **options,
    )


def test_a_pull_has_every_persons_daily_funnel_counts(cja, tmp_path: Path, source_lake) -> None:
    source = _source(cja, tmp_path, page_limit=40)
    lake = Lake(tmp_path / "home")
    summary = extract_reporting(source, lake, run_id="pull")
    assert summary["mode"] == "replace" and summary["quarantined"] == 0
    assert summary["pages_fetched"] > 4  # several pages per day at 40 persons a page
    # one request per page (plus one 401 when the emulator reset outlived a cached token)
    assert summary["pages_fetched"] <= summary["requests"] <= summary["pages_fetched"] + 1
    assert query(lake, COUNTS) == query(source_lake, COUNTS)
    assert not source.pages_dir.exists()  # checkpoints go once the data has landed
    digest = lake_digest(lake)
    extract_reporting(_source(cja, tmp_path, page_limit=40), lake, run_id="again")
    assert lake_digest(lake) == digest


def test_throttling_is_retried_with_backoff(cja, tmp_path: Path) -> None:
    cja.faults(error_429_rate=1.0, times=3, retry_after_s=2, paths=["/reports"])
    pauses: list[float] = []
    source = _source(cja, tmp_path, sleep=pauses.append, start=START, end=START.replace(day=25))
    summary = extract_reporting(source, Lake(tmp_path / "home"), run_id="t")
    assert summary["retries"] == 3 and summary["rows"] > 0
    assert len(pauses) == 3 and min(pauses) >= 2.0  # Retry-After is a floor when sent
    cja.faults(error_429_rate=1.0, times=3, retry_after_s=None, cja_rate_limit_window_s=0.5)
    pauses.clear()
    source = _source(cja, tmp_path, sleep=pauses.append, start=START, end=START.replace(day=25))
    extract_reporting(source, Lake(tmp_path / "home2"), run_id="t")
    # otherwise exponential with full jitter: retry n waits at most 0.5 s * 2**n
    assert len(pauses) == 3 and all(0 <= p <= 0.5 * 2 ** (n + 1) for n, p in enumerate(pauses))


def test_an_expired_token_is_refreshed_once(cja, tmp_path: Path) -> None:
    source = _source(cja, tmp_path, end=START.replace(day=25))
    cja.faults(expire_tokens=True)
    summary = extract_reporting(source, Lake(tmp_path / "home"), run_id="e")
    assert summary["rows"] > 0


def test_a_failed_pull_resumes_from_its_last_complete_page(
    cja, tmp_path: Path, source_lake
) -> None:
    lake = Lake(tmp_path / "home")
    first = _source(cja, tmp_path, page_limit=40)
    pages = first.pages()
    for _ in range(3):
        next(pages)
    pages.close()
    cja.faults(error_500_rate=1.0, paths=["/reports"])
    failing = _source(cja, tmp_path, page_limit=40)
    failing.client.policy = RetryPolicy(max_retries=1)
    with pytest.raises(ReportingError, match="resumes from its last saved page"):
        extract_reporting(failing, lake, run_id="fail")
    assert not lake.events.exists() or not list(lake.events.rglob("*.parquet"))
    cja.faults(error_500_rate=0.0)
    resumed = _source(cja, tmp_path, page_limit=40)
    summary = extract_reporting(resumed, lake, run_id="resume")
    assert summary["pages_resumed"] == 3
    assert query(lake, COUNTS) == query(source_lake, COUNTS)


def test_the_client_keeps_under_the_servers_rate_limit(cja, tmp_path: Path) -> None:
    """30 requests against the emulator's 12-per-window limit: paced, never throttled."""
    source = _source(cja, tmp_path, page_limit=5, end=START.replace(day=25))
    started = time.monotonic()
    summary = extract_reporting(source, Lake(tmp_path / "home"), run_id="paced")
    assert summary["requests"] >= 25 and summary["retries"] == 0
    assert time.monotonic() - started >= 2 * FAST_WINDOW_S


def test_windows_cut_ranges_at_utc_days_and_hours() -> None:
    days = windows(datetime(2026, 11, 1, 12, tzinfo=UTC), datetime(2026, 11, 3, tzinfo=UTC), "day")
    assert [(a.isoformat(), b.isoformat()) for a, b in days] == [
        ("2026-11-01T12:00:00+00:00", "2026-11-02T00:00:00+00:00"),
        ("2026-11-02T00:00:00+00:00", "2026-11-03T00:00:00+00:00"),
    ]
    assert len(windows(START, START.replace(hour=5), "hour")) == 5
    with pytest.raises(ValueError, match="not after start"):
        windows(END, START, "day")


NY = ZoneInfo("America/New_York")


def test_windows_follow_the_data_view_zone_across_dst() -> None:
    # 2026-11-01 is the day New York leaves daylight saving time: 25 hours long
    start = datetime(2026, 11, 1, tzinfo=NY)
    days = windows(start, datetime(2026, 11, 3, tzinfo=NY), "day", "America/New_York")
    assert days == [
        (datetime(2026, 11, 1, 4, tzinfo=UTC), datetime(2026, 11, 2, 5, tzinfo=UTC)),
        (datetime(2026, 11, 2, 5, tzinfo=UTC), datetime(2026, 11, 3, 5, tzinfo=UTC)),
    ]
    hours = windows(start, datetime(2026, 11, 1, 7, tzinfo=UTC), "hour", "America/New_York")
    assert [h[0].astimezone(NY).strftime("%H:%M%z") for h in hours] == [
        "00:00-0400",
        "01:00-0400",
        "01:00-0500",  # the repeated hour
    ]
    # CJA reads naive wall-clock times; the repeated hour needs its offset to be told apart
    assert [local_stamp(h[0], NY) for h in hours] == [
        "2026-11-01T00:00:00.000",
        "2026-11-01T01:00:00.000-04:00",
        "2026-11-01T01:00:00.000-05:00",
    ]
    india = windows(
        datetime(2026, 11, 1, tzinfo=UTC),
        datetime(2026, 11, 1, 2, tzinfo=UTC),
        "hour",
        "Asia/Kolkata",
    )
    assert india[0] == (datetime(2026, 11, 1, tzinfo=UTC), datetime(2026, 11, 1, 0, 30, tzinfo=UTC))
    with pytest.raises(ValueError, match="IANA"):
        windows(start, start + timedelta(days=1), "day", "Mars/Olympus")


def test_a_new_york_data_view_is_pulled_by_new_york_days(emu, tmp_path: Path) -> None:
    """Events around New York midnight land in the day CJA reports them in, stored in UTC."""
    view = "web.webpagedetails.pageViews"
    lake_root = write_events(
        tmp_path / "cja",
        [
            {"timestamp": "2026-11-01T03:30:00+00:00", "person_id": "p0", "event_type": view},
            {"timestamp": "2026-11-02T04:30:00+00:00", "person_id": "p1", "event_type": view},
            {"timestamp": "2026-11-02T05:30:00+00:00", "person_id": "p2", "event_type": view},
        ],
    )
    emu.set_lake(lake_root)
    emu.set_data_view(timezone="America/New_York")
    config = emu.adobe_config("cja")
    zone = fetch_data_view_timezone(config, config.data_view_id)
    assert zone == "America/New_York"
    source = _source(
        emu,
        tmp_path,
        start=datetime(2026, 11, 1, tzinfo=NY),
        end=datetime(2026, 11, 3, tzinfo=NY),
        timezone=zone,
    )
    assert source.body(source_windows(source)[0], 0)["globalFilters"][0]["dateRange"] == (
        "2026-11-01T00:00:00.000/2026-11-02T00:00:00.000"
    )
    lake = Lake(tmp_path / "home")
    extract_reporting(source, lake, run_id="ny")
    rows = query(lake, "SELECT person_id, timestamp, date::VARCHAR FROM events ORDER BY 1")
    # p0 (23:30 on Oct 31 in New York) is outside; p1 (23:30 Nov 1 EST) is Nov 1's,
    # p2 (00:30 Nov 2) is Nov 2's; each event sits at its New York midnight, in UTC
    assert [(p, ts.astimezone(UTC), d) for p, ts, d in rows] == [
        ("p1", datetime(2026, 11, 1, 4, tzinfo=UTC), "2026-11-01"),
        ("p2", datetime(2026, 11, 2, 5, tzinfo=UTC), "2026-11-02"),
    ]


def test_the_person_dimension_comes_from_the_connection(emu, tmp_path: Path) -> None:
    component = "variables/endUserIDs._experience.aaid.id"
    lake_root = write_events(
        tmp_path / "cja",
        [
            {
                "timestamp": "2026-11-01T10:00:00+00:00",
                "person_id": "p1",
                "event_type": "commerce.productViews",
            }
        ],
    )
    emu.set_lake(lake_root)
    emu.set_data_view(person_dimension=component)
    source = _source(
        emu,
        tmp_path,
        start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 11, 2, tzinfo=UTC),
        person_dimension=component,
    )
    lake = Lake(tmp_path / "home")
    extract_reporting(source, lake, run_id="person")
    assert query(lake, "SELECT person_id, event_type FROM events") == [
        ("p1", "commerce.productViews")
    ]


def source_windows(source: ReportingSource) -> list[tuple[datetime, datetime]]:
    return windows(source.start, source.end, source.granularity, source.timezone)
