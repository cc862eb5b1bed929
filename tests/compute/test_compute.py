"""compute_audience over a lake: window pruning, identities, hashing, stats, run.json."""

from __future__ import annotations

import hashlib
import json
from datetime import date, timedelta
from pathlib import Path

import pyarrow.parquet as pq
import pytest

from cja_audiences.compute import (
    AudienceError,
    compute_audience,
    evaluate_audience,
    render_audience,
)
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import MEMBER_FILE_SCHEMA
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec
from tests.compute.helpers import ADD, BUY, T0, VIEW, ev, write_lake

DAY = 24 * 60
AS_OF = (T0 + timedelta(days=2)).date()  # T0 is day 0; the lake holds days -5 .. 2
ROWS = [
    ev("old", -5 * DAY, ADD),  # outside a 7-day... inside; outside a 3-day window
    ev("p1", 0, ADD),
    ev("p1", 1, BUY, revenue=40.0, order_id="o1"),
    ev("p2", DAY, ADD, revenue=None),
    ev("p3", 2 * DAY, ADD),
    ev("p4", 2 * DAY, VIEW, revenue=60.0),
    ev("p5", 2 * DAY, ADD),
]
PERSONS = {
    "old": {"email": "old@example.com"},
    "p1": {"email": "p1@example.com"},
    "p2": {"email": " P2@Example.com ", "crm_id": "CRM2"},
    "p3": {"email": "p3@example.com", "crm_id": "CRM3"},
    "p4": {},
    "p5": {"ecid": None, "email": None},  # selected, but no identity value
}
ADDERS = {
    "person": {
        "all": [
            {"event": {"field": "event_type", "op": "equals", "value": {"param": "add"}}},
            {"exclude": {"event": {"field": "event_type", "op": "equals", "value": BUY}}},
        ]
    }
}


@pytest.fixture
def settings(tmp_path: Path) -> Settings:
    write_lake(tmp_path / "home", ROWS, PERSONS)
    return Settings(
        home=tmp_path / "home",
        audiences_dir=tmp_path / "audiences",
        filters_dir=tmp_path / "filters",
    )


def make_spec(**overrides: object) -> AudienceSpec:
    raw = {
        "id": "adders",
        "name": "Adders",
        "refresh": {"frequency": "daily", "lookback_days": 3},
        "filter": {"rules": ADDERS, "params": {"add": ADD}},
        **overrides,
    }
    return AudienceSpec.model_validate(raw)


def test_compute_writes_sorted_members_and_records_stats(
    settings: Settings, tmp_path: Path
) -> None:
    run_dir = tmp_path / "run"
    stats = compute_audience(make_spec(), settings=settings, run_dir=run_dir, as_of=AS_OF)
    table = pq.read_table(run_dir / "members.parquet")
    assert table.schema.equals(MEMBER_FILE_SCHEMA)
    # window = days 0..2: "old" is not read; p1 bought; p5 has no ECID
    assert table.to_pylist() == [
        {"person_id": "p2", "namespace": "ECID", "identity": "ECID-p2", "why": 3, "split": None},
        {"person_id": "p3", "namespace": "ECID", "identity": "ECID-p3", "why": 3, "split": None},
    ]
    assert stats["why"]["combine"] == "all" and len(stats["why"]["branches"]) == 2
    assert stats["size"] == 2 and stats["size_by_namespace"] == {"ECID": 2}
    assert stats["members_path"] == str(run_dir / "members.parquet")
    assert stats["window"] == {
        "start": (AS_OF - timedelta(days=2)).isoformat(),
        "end": AS_OF.isoformat(),
    }
    assert stats["rows_scanned"] == 6  # the partition of day -5 was never opened
    assert sorted(stats["sample_ids"]) == ["p2", "p3"]
    metrics = stats["preview_metrics"]
    assert metrics["missing_identity"] == 1
    assert metrics["persons_in_window"] == 5
    assert metrics["total_revenue"] == 100.0 and metrics["member_revenue"] == 0.0
    assert stats["params"] == {"p_add": ADD, "v1": BUY}
    assert "$p_add" in stats["sql"] and ADD not in stats["sql"]
    record = json.loads((run_dir / "run.json").read_text())
    assert record["compute"]["size"] == 2 and record["compute"]["elapsed_s"] >= 0


def test_email_namespace_hashed(settings: Settings, tmp_path: Path) -> None:
    spec = make_spec(identity={"namespace": "Email", "hash_email": True})
    members = evaluate_audience(spec, settings=settings, as_of=AS_OF).members.to_pylist()
    expected = hashlib.sha256(b"p2@example.com").hexdigest()  # trimmed and lower-cased
    assert [m["identity"] for m in members] == [
        expected,
        hashlib.sha256(b"p3@example.com").hexdigest(),
    ]
    assert {m["namespace"] for m in members} == {"Email"}


def test_crmid_namespace_skips_persons_without_one(settings: Settings) -> None:
    result = evaluate_audience(
        make_spec(identity={"namespace": "CRMID"}), settings=settings, as_of=AS_OF
    )
    assert result.members.column("identity").to_pylist() == ["CRM2", "CRM3"]
    result = evaluate_audience(
        make_spec(identity={"namespace": "CRMID"}), settings=settings, as_of=AS_OF, lookback_days=1
    )
    assert result.members.column("person_id").to_pylist() == ["p3"]
    assert result.stats["preview_metrics"]["missing_identity"] == 1  # p5


def test_one_time_date_range(settings: Settings) -> None:
    day0 = T0.date()
    spec = make_spec(
        refresh={
            "frequency": "one_time",
            "date_range": {
                "start": (day0 - timedelta(days=5)).isoformat(),
                "end": day0.isoformat(),
            },
        }
    )
    result = evaluate_audience(spec, settings=settings, as_of=date(2030, 1, 1))
    assert result.members.column("person_id").to_pylist() == ["old"]  # p1 bought on day 0


def test_run_params_override_spec_params_and_stay_data(settings: Settings) -> None:
    spec = make_spec()
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"add": VIEW})
    assert result.members.column("person_id").to_pylist() == ["p4"]
    injection = "x' OR '1'='1"
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"add": injection})
    assert result.members.num_rows == 0 and injection not in result.stats["sql"]
    with pytest.raises(AudienceError, match="run param 'limit' is not a filter param"):
        evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"limit": 1})


def test_injection_attempts_in_params_stay_data(settings: Settings) -> None:
    """Values that would break out of a string literal, end the statement or read files are
    compared as plain strings: the rendered SQL never contains them."""
    attempts = [
        "'; DROP TABLE raw_events; --",
        "commerce.productListAdds' OR 1=1 --",
        "x$$; COPY raw_persons TO '/tmp/leak.csv'; --",
        "') UNION SELECT person_id FROM raw_persons --",
    ]
    spec = make_spec(
        filter={
            "rules": {"field": "page_name", "op": "in", "value": {"param": "pages"}},
            "params": {"pages": ["home"]},
        }
    )
    for attempt in attempts:
        rendered = render_audience(spec, settings=settings, params={"pages": [attempt]})
        assert attempt not in rendered.sql and rendered.params["p_pages"] == [attempt]
        result = evaluate_audience(
            spec, settings=settings, as_of=AS_OF, params={"pages": [attempt]}
        )
        assert result.members.num_rows == 0
    assert not Path("/tmp/leak.csv").exists()


def test_missing_lake_gives_an_empty_audience(tmp_path: Path) -> None:
    settings = Settings(home=tmp_path / "empty", audiences_dir=tmp_path, filters_dir=tmp_path)
    result = evaluate_audience(make_spec(), settings=settings, as_of=AS_OF)
    assert result.members.num_rows == 0 and result.stats["rows_scanned"] == 0


def test_template_filter_with_params_and_window(settings: Settings) -> None:
    settings.filters_dir.mkdir()
    (settings.filters_dir / "late_adders.sql.j2").write_text(
        '{% import "cja.sql.j2" as cja %}\n'
        "SELECT person_id FROM {{ events }} GROUP BY person_id\n"
        "HAVING {{ cja.ever('event_type', 'equals', params.add) }}\n"
        '   AND max("timestamp") >= {{ window_end }} - to_days({{ params.days }})\n'
    )
    spec = make_spec(filter={"template": "late_adders.sql.j2", "params": {"add": ADD, "days": 1}})
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF)
    assert result.members.column("person_id").to_pylist() == ["p3"]  # p5 has no ECID
    assert "$p_add" in result.stats["sql"] and "$window_end" in result.stats["sql"]


def test_template_rules_helper_and_unknown_param(settings: Settings) -> None:
    settings.filters_dir.mkdir()
    (settings.filters_dir / "r.sql.j2").write_text(
        "SELECT person_id FROM {{ rules({'event': {'field': 'event_type', 'op': 'equals', "
        "'value': params.add}}) }}"
    )
    spec = make_spec(filter={"template": "r.sql.j2", "params": {"add": BUY}})
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF)
    assert result.members.column("person_id").to_pylist() == ["p1"]
    (settings.filters_dir / "bad.sql.j2").write_text(
        "SELECT person_id FROM ev WHERE {{ params.nope }}"
    )
    with pytest.raises(AudienceError, match="undefined filter parameter 'nope'"):
        render_audience(make_spec(filter={"template": "bad.sql.j2"}), settings=settings)
    with pytest.raises(AudienceError, match="not found in include/filters"):
        render_audience(make_spec(filter={"template": "missing.sql.j2"}), settings=settings)


def test_segment_file_filter(settings: Settings, tmp_path: Path) -> None:
    segments = settings.audiences_dir.parent / "segments"
    segments.mkdir()
    (segments / "adds.json").write_text(
        json.dumps(
            {
                "definition": {
                    "func": "segment",
                    "version": [1, 0, 0],
                    "container": {
                        "func": "container",
                        "context": "visitors",
                        "pred": {
                            "func": "and",
                            "preds": [
                                {
                                    "func": "streq",
                                    "str": ADD,
                                    "val": {"func": "attr", "name": "variables/eventtype"},
                                },
                                {
                                    "func": "without",
                                    "pred": {
                                        "func": "event-exists",
                                        "evt": {"func": "event", "name": "metrics/orders"},
                                    },
                                },
                            ],
                        },
                    },
                }
            }
        )
    )
    spec = make_spec(filter={"segment": {"path": "adds.json"}})
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF)
    assert result.members.column("person_id").to_pylist() == ["p2", "p3"]
    with pytest.raises(AudienceError, match="segment file 'nope.json' not found"):
        render_audience(make_spec(filter={"segment": {"path": "nope.json"}}), settings=settings)


def test_lake_run_dir_layout(settings: Settings) -> None:
    run_dir = Lake(settings.home).run_dir("adders", "manual__2026-11-22T00:00:00+00:00")
    compute_audience(make_spec(), settings=settings, run_dir=run_dir, as_of=AS_OF)
    assert (run_dir / "members.parquet").is_file()
    assert not list(run_dir.glob(".*.tmp"))  # atomic write left no temporary file


def test_run_params_take_the_type_of_the_spec_default(settings: Settings) -> None:
    spec = make_spec(
        filter={
            "rules": {"metric": {"sum": "revenue"}, "op": "gte", "value": {"param": "min"}},
            "params": {"min": 50},
        }
    )
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"min": "55"})
    assert result.stats["params"]["p_min"] == 55
    assert result.members.column("person_id").to_pylist() == ["p4"]
    with pytest.raises(AudienceError, match="expected a number like 50 \\(got 'lots'\\)"):
        evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"min": "lots"})


def test_template_params_stay_data(settings: Settings) -> None:
    settings.filters_dir.mkdir()
    (settings.filters_dir / "page.sql.j2").write_text(
        "SELECT person_id FROM {{ events }} WHERE page_name = {{ params.page }}"
    )
    spec = make_spec(filter={"template": "page.sql.j2", "params": {"page": "home"}})
    attempt = "home' OR 1=1 --"
    result = evaluate_audience(spec, settings=settings, as_of=AS_OF, params={"page": attempt})
    assert result.members.num_rows == 0 and attempt not in result.stats["sql"]
    assert "page_name = $p_page" in result.stats["sql"]


def _saved(segments: Path, segment_id: str, pred: dict, *, by_name: bool = True) -> None:
    """A saved segment in include/segments/: as <id>.json, or under another name with its id."""
    segments.mkdir(parents=True, exist_ok=True)
    body = {
        "id": segment_id,
        "definition": {
            "func": "segment",
            "version": [1, 0, 0],
            "container": {"func": "container", "context": "hits", "pred": pred},
        },
    }
    name = f"{segment_id}.json" if by_name else f"saved-{segment_id}.json"
    (segments / name).write_text(json.dumps(body))


def test_segment_refs_resolve_from_include_segments_and_the_guardrail_counts_them(
    settings: Settings, tmp_path: Path
) -> None:
    from cja_audiences.diff import diff_members
    from cja_audiences.guardrails import check_run

    segments = tmp_path / "segments"  # beside the audiences folder
    adds = {"func": "streq", "str": ADD, "val": {"func": "attr", "name": "variables/eventtype"}}
    _saved(segments, "s_adds", adds, by_name=False)
    # s1 .. s19 each reference the next; s19 references s_adds: 20 saved segments in all
    for i in range(1, 20):
        ref = f"s{i + 1}" if i < 19 else "s_adds"
        _saved(segments, f"s{i}", {"func": "segment-ref", "id": ref})
    top = {
        "func": "segment",
        "version": [1, 0, 0],
        "container": {
            "func": "container",
            "context": "visitors",
            "pred": {"func": "segment-ref", "id": "s1"},
        },
    }
    (segments / "top.json").write_text(json.dumps(top))
    spec = make_spec(filter={"segment": {"path": "top.json"}})
    run_dir = tmp_path / "run"
    stats = compute_audience(spec, settings=settings, run_dir=run_dir, as_of=AS_OF)
    assert stats["size"] == 3  # p1, p2, p3 added to cart in the window (p5 has no identity)
    assert len(stats["segment_refs"]) == 20 and stats["segment_refs"][-1] == "s_adds"
    diff_members(run_dir, None)
    report = check_run(spec, settings, run_dir, None)
    assert report.blocked
    assert "segments: 21 segments combined is above the limit of 20" in report.message

    (segments / "s19.json").unlink()
    with pytest.raises(AudienceError, match="segment-ref 's19' is not in .*segments"):
        compute_audience(spec, settings=settings, run_dir=run_dir, as_of=AS_OF)


def test_sessions_come_from_the_lake_when_the_extract_wrote_them(tmp_path: Path) -> None:
    import pyarrow as pa

    from cja_audiences.extract.writer import PartitionWriter

    rows = [ev("a", 0, VIEW), ev("a", 45, ADD), ev("b", 0, VIEW), ev("b", 10, ADD)]
    in_one_session = {
        "session": {
            "sequence": {
                "steps": [
                    {"event": {"field": "event_type", "op": "equals", "value": VIEW}},
                    {"event": {"field": "event_type", "op": "equals", "value": ADD}},
                ]
            }
        }
    }
    second_visit = {"event": {"field": "session_number", "op": "gte", "value": 2}}
    spec = make_spec(filter={"rules": in_one_session})
    visit_spec = make_spec(filter={"rules": second_visit})
    helper_lake = tmp_path / "helper"
    write_lake(helper_lake, rows, {"a": {}, "b": {}})  # files without the extract's footer
    landed = tmp_path / "landed"
    write_lake(landed, [], {"a": {}, "b": {}})
    with PartitionWriter(Lake(landed), source="test", run_id="r") as writer:
        writer.write(
            pa.table(
                {
                    "event_id": [f"e{i}" for i in range(len(rows))],
                    "person_id": [r["person_id"] for r in rows],
                    "timestamp": [r["timestamp"].isoformat() for r in rows],
                    "event_type": [r["event_type"] for r in rows],
                    "_origin": ["t"] * len(rows),
                }
            )
        )
        writer.commit()
    for home, in_lake in ((helper_lake, False), (landed, True)):
        settings = Settings(home=home, audiences_dir=tmp_path, filters_dir=tmp_path)
        result = evaluate_audience(spec, settings=settings, as_of=T0.date())
        assert result.stats["sessions_in_lake"] is in_lake
        assert result.members.column("person_id").to_pylist() == ["b"]
        assert ("sess AS MATERIALIZED" in result.stats["sql"]) is not in_lake
    landed_settings = Settings(home=landed, audiences_dir=tmp_path, filters_dir=tmp_path)
    visits = evaluate_audience(visit_spec, settings=landed_settings, as_of=T0.date())
    assert visits.members.column("person_id").to_pylist() == ["a"]
    helper_settings = Settings(home=helper_lake, audiences_dir=tmp_path, filters_dir=tmp_path)
    with pytest.raises(AudienceError, match="visit number.*need sessions in the lake"):
        evaluate_audience(visit_spec, settings=helper_settings, as_of=T0.date())
