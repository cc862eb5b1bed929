"""Sessions kept in the lake: across midnight and deliveries, late data, rules as configuration."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences.extract.sessions import rebuild_sessions
from cja_audiences.extract.writer import PartitionWriter
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.sessions import SessionRules, file_rules


def _batch(*events: tuple[str, str, str] | tuple[str, str, str, str]) -> pa.Table:
    """(event_id, person_id, timestamp[, event_type]) rows."""
    return pa.table(
        {
            "event_id": [e[0] for e in events],
            "person_id": [e[1] for e in events],
            "timestamp": [e[2] for e in events],
            "event_type": [e[3] if len(e) > 3 else "web.webpagedetails.pageViews" for e in events],
            "_origin": [f"test:{i}" for i, _ in enumerate(events)],
        }
    )


def _land(lake: Lake, batch: pa.Table, **options) -> dict:
    with PartitionWriter(lake, source="test", run_id="r", **options) as writer:
        writer.write(batch)
        return writer.commit()


def _sessions(lake: Lake) -> dict[str, tuple[int, str]]:
    """event id -> (session number, session start as HH:MM on its day)."""
    con = duckdb.connect()  # its own connection: never the process-wide default one
    rows = con.sql(
        "SELECT event_id, session_number, strftime(session_start AT TIME ZONE 'UTC', '%d %H:%M')"
        f" FROM read_parquet('{lake.events}/*/*.parquet')"
    ).fetchall()
    con.close()
    return {r[0]: (r[1], r[2]) for r in rows}


def test_a_session_crossing_midnight_keeps_its_key_and_number(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(
        lake,
        _batch(
            ("a1", "p", "2026-11-19T23:50:00Z"),
            ("a2", "p", "2026-11-20T00:10:00Z"),  # 20 min later, the next UTC day
            ("a3", "p", "2026-11-20T01:00:00Z"),  # 50 min later: session 2
        ),
    )
    assert _sessions(lake) == {
        "a1": (1, "19 23:50"),
        "a2": (1, "19 23:50"),
        "a3": (2, "20 01:00"),
    }


def test_numbers_continue_across_deliveries(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _batch(("a1", "p", "2026-11-19T10:00:00Z"), ("a2", "p", "2026-11-19T23:45:00Z")))
    summary = _land(
        lake,
        _batch(("b1", "p", "2026-11-20T00:05:00Z"), ("b2", "p", "2026-11-20T09:00:00Z")),
    )
    assert summary["sessions"]["rewritten"] == [] and not summary["sessions"]["recomputed_history"]
    assert _sessions(lake) == {
        "a1": (1, "19 10:00"),
        "a2": (2, "19 23:45"),
        "b1": (2, "19 23:45"),  # continues the session of the day before
        "b2": (3, "20 09:00"),
    }


def test_a_late_event_merges_sessions_and_later_partitions_are_rewritten(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(
        lake,
        _batch(
            ("a1", "p", "2026-11-19T10:00:00Z"),
            ("a2", "p", "2026-11-19T10:50:00Z"),
            ("b1", "p", "2026-11-20T08:00:00Z"),
            ("q1", "q", "2026-11-20T08:00:00Z"),
        ),
    )
    assert _sessions(lake)["b1"] == (3, "20 08:00")
    before = {f.name: f.stat().st_mtime_ns for f in lake.event_partition("2026-11-20").iterdir()}
    summary = _land(lake, _batch(("late", "p", "2026-11-19T10:25:00Z")))
    assert summary["sessions"]["rewritten"] == ["2026-11-20"]
    assert _sessions(lake) == {
        "a1": (1, "19 10:00"),
        "late": (1, "19 10:00"),
        "a2": (1, "19 10:00"),  # merged: 25 + 25 minutes
        "b1": (2, "20 08:00"),  # renumbered in the partition the extract did not receive
        "q1": (1, "20 08:00"),
    }
    assert before != {
        f.name: f.stat().st_mtime_ns for f in lake.event_partition("2026-11-20").iterdir()
    }


def test_a_late_event_splits_a_session_by_rule_and_replace_mode_splits_too(
    tmp_path: Path,
) -> None:
    lake = Lake(tmp_path)
    rules = SessionRules(30, ("commerce.purchases",))
    _land(
        lake,
        _batch(("a1", "p", "2026-11-19T10:00:00Z"), ("a2", "p", "2026-11-19T10:20:00Z")),
        sessions=rules,
    )
    _land(lake, _batch(("late", "p", "2026-11-19T10:10:00Z", "commerce.purchases")), sessions=rules)
    assert _sessions(lake) == {
        "a1": (1, "19 10:00"),
        "late": (2, "19 10:10"),  # a session-start event opens a new session
        "a2": (2, "19 10:10"),
    }
    # replace mode: the day is now only a1 and a2, 20 minutes apart again; then a1 goes
    _land(
        lake,
        _batch(("a1", "p", "2026-11-19T10:00:00Z"), ("x", "p", "2026-11-19T11:00:00Z")),
        mode="replace",
        sessions=rules,
    )
    assert _sessions(lake) == {"a1": (1, "19 10:00"), "x": (2, "19 11:00")}


def test_other_rules_recompute_the_whole_history(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _batch(("a1", "p", "2026-11-19T10:00:00Z"), ("a2", "p", "2026-11-19T10:45:00Z")))
    assert _sessions(lake)["a2"] == (2, "19 10:45")
    summary = _land(lake, _batch(("b1", "p", "2026-11-20T10:00:00Z")), sessions=SessionRules(60))
    assert summary["sessions"]["recomputed_history"]
    assert summary["sessions"]["rewritten"] == ["2026-11-19"]
    assert _sessions(lake) == {"a1": (1, "19 10:00"), "a2": (1, "19 10:00"), "b1": (2, "20 10:00")}
    for path in lake.events.glob("*/*.parquet"):
        assert file_rules(pq.read_metadata(path)) == SessionRules(60)


def test_rebuild_sessions_after_the_settings_change(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    _land(lake, _batch(("a1", "p", "2026-11-19T10:00:00Z"), ("a2", "p", "2026-11-19T10:45:00Z")))
    assert rebuild_sessions(lake, SessionRules())["rewritten"] == []  # nothing changes
    summary = rebuild_sessions(lake, SessionRules(60))
    assert summary["rewritten"] == ["2026-11-19"]
    assert _sessions(lake) == {"a1": (1, "19 10:00"), "a2": (1, "19 10:00")}


def test_synthetic_files_keep_their_row_order_and_get_the_generators_sessions(
    tmp_path: Path,
) -> None:
    """The synthetic source writes each person's rows together but not in time order: the
    sessions are computed in time order and written back in the file's own order."""
    from datetime import date

    from cja_audiences.extract.synthetic import generate_synthetic

    lake = Lake(tmp_path)
    summary = generate_synthetic(lake, persons=3000, days=2, end=date(2026, 11, 20), seed=3)
    con = duckdb.connect()
    [(sessions, gaps, wrong_start)] = con.sql(
        f"""
        WITH s AS (
            SELECT person_id, session_number, min("timestamp") AS first, any_value(session_start) AS start,
                   count(DISTINCT session_start) AS starts
              FROM read_parquet('{lake.events}/*/*.parquet') GROUP BY ALL)
        SELECT count(*),
               count(*) FILTER (WHERE session_number <> rank) ,
               count(*) FILTER (WHERE first <> start OR starts <> 1)
          FROM (SELECT *, rank() OVER (PARTITION BY person_id ORDER BY first) AS rank FROM s)
        """
    ).fetchall()
    con.close()
    assert sessions == summary["sessions"]  # the generator's own session count
    assert gaps == 0 and wrong_start == 0  # numbered 1, 2, ... in time; the key is the start


def test_the_writer_numbers_sessions_as_it_writes_across_batches_and_buckets(
    tmp_path: Path, monkeypatch
) -> None:
    """Sessions are numbered in the finalize stream: a person's rows spanning batches keep
    counting, and the files agree with numbering them afresh (nothing to rewrite)."""
    from cja_audiences.extract import writer

    monkeypatch.setattr(writer, "ROW_GROUP_SIZE", 2)  # every person spans batches
    lake = Lake(tmp_path)
    minutes = [0, 10, 50, 55, 200, 205, 210, 300]  # sessions at 0, 50, 200, 300
    _land(lake, _batch(("p0", "p", "2026-11-19T10:00:00Z")))
    rows = [(f"q{m:03d}", "q", f"2026-11-19T{10 + m // 60:02d}:{m % 60:02d}:00Z") for m in minutes]
    rows += [(f"r{m:03d}", "r", f"2026-11-19T{10 + m // 60:02d}:{m % 60:02d}:00Z") for m in minutes]
    _land(lake, _batch(*rows), buckets=2)
    got = _sessions(lake)
    assert [got[f"q{m:03d}"][0] for m in minutes] == [1, 1, 2, 2, 3, 3, 3, 4]
    assert [got[f"r{m:03d}"] for m in minutes[4:7]] == [(3, "19 13:20")] * 3
    assert got["p0"] == (1, "19 10:00")
    assert rebuild_sessions(lake, SessionRules())["rewritten"] == []
