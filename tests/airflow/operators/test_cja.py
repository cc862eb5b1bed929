"""CJAExtractOperator on real files and over HTTP; the cja_extract DAG run with dag.test()."""

from __future__ import annotations

import gzip
import json
from datetime import UTC, datetime
from pathlib import Path
from types import SimpleNamespace

import pytest
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cja_audiences.airflow.operators.cja import CJAExtractOperator
from cja_audiences.extract.aep import write_xdm_export
from cja_audiences.extract.exports import complete_deliveries, write_delivery
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from tests.extract.conftest import END, query

SUMMARY_KEYS = {"source", "rows", "partitions", "quarantined", "elapsed_s"}


@pytest.fixture(scope="module")
def source_lake(tmp_path_factory: pytest.TempPathFactory) -> Lake:
    """Data to deliver: a small synthetic lake exported by each test in its own format."""
    lake = Lake(tmp_path_factory.mktemp("operator-source"))
    generate_synthetic(lake, persons=300, days=3, end=END, seed=5)
    return lake


@pytest.fixture
def source_glob(source_lake: Lake) -> str:
    return str(source_lake.events / "*" / "*.parquet")


@pytest.fixture
def lake(tmp_path, monkeypatch, fresh_settings) -> Lake:
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(tmp_path / "home"))
    return Lake(tmp_path / "home")


def _run(params: dict, **context) -> dict:
    op = CJAExtractOperator(task_id="extract")
    summary = op.execute(context={"params": params, "run_id": "manual__1", **context})
    json.dumps(summary)  # XCom-safe
    return summary


def test_init_is_keyword_only_and_fields_are_templated() -> None:
    with pytest.raises(TypeError):
        CJAExtractOperator("extract", "synthetic")  # type: ignore[misc]
    op = CJAExtractOperator(task_id="extract", source="{{ params.source }}")
    assert isinstance(op.template_fields, tuple)
    assert {"source", "start", "end", "delivery_id", "cja_conn_id"} <= set(op.template_fields)


def test_synthetic_source_from_params(lake: Lake) -> None:
    summary = _run(
        {
            "source": "synthetic",
            "start": "2026-11-20",
            "end": "2026-11-22",
            "options": {"persons": 200, "seed": 3},
        }
    )
    assert set(summary) >= SUMMARY_KEYS
    assert list(summary["partitions"]) == ["2026-11-20", "2026-11-21", "2026-11-22"]
    assert query(lake, "SELECT count(*) FROM events") == [(summary["rows"],)]


@pytest.mark.parametrize(
    ("params", "buckets", "message"),
    [
        ({"mode": "merge"}, None, "mode=merge: source synthetic always replaces"),
        ({}, 4, "buckets=4: source synthetic writes one file per date"),
        ({"options": {"persons": 10, "bad_row_share": 0.1}}, None, r"options \['bad_row_share'\]"),
    ],
)
def test_synthetic_refuses_what_it_cannot_honour(lake: Lake, params, buckets, message) -> None:
    from airflow.sdk.exceptions import AirflowFailException

    op = CJAExtractOperator(task_id="extract", buckets=buckets)
    with pytest.raises(AirflowFailException, match=message):
        op.execute(context={"params": {"source": "synthetic", **params}, "run_id": "manual__1"})
    assert not lake.events.exists()


def test_export_deliveries_are_landed_once_and_claimed(
    lake: Lake, source_glob: str, source_lake: Lake
) -> None:
    write_delivery(source_glob, lake.landing, report_instance_id="d1", files=2)
    summary = _run({"source": "export"})
    assert summary["rows"] == query(source_lake, "SELECT count(*) FROM events")[0][0]
    [delivery] = summary["deliveries"]
    assert sorted(p.name for p in (lake.landing / "processed" / delivery["id"]).iterdir()) == [
        "cja-export-d1-0.csv.gz",
        "cja-export-d1-1.csv.gz",
        "cja-export-d1-2.json.gz",
    ]
    with pytest.raises(AirflowSkipException, match="no complete export delivery"):
        _run({"source": "export"})


def test_the_triggering_delivery_is_the_one_landed(lake: Lake, source_glob: str) -> None:
    write_delivery(source_glob, lake.landing, report_instance_id="a", fmt="json")
    write_delivery(source_glob, lake.landing, report_instance_id="b", fmt="csv")
    wanted = {d.report_instance_id: d.id for d in complete_deliveries(lake.landing)}["b"]
    event = SimpleNamespace(extra={"from_trigger": True, "payload": {"delivery_id": wanted}})
    summary = _run({"source": "export"}, triggering_asset_events={"cja_landing": [event]})
    assert [d["id"] for d in summary["deliveries"]] == [wanted]
    assert [d.report_instance_id for d in complete_deliveries(lake.landing)] == ["a"]


def test_a_bad_delivery_fails_without_retry_and_is_set_aside(lake: Lake) -> None:
    lake.landing.mkdir(parents=True)
    path = lake.landing / "cja-export-bad-0.csv.gz"
    path.write_bytes(gzip.compress(b"Person ID,Timestamp\n,2026-11-27\np,2026-11-27\n"))
    with pytest.raises(AirflowFailException, match="1 of 2 rows"):
        _run({"source": "export", "delivery_id": "bad"})
    assert (lake.landing / "rejected").is_dir()
    assert not lake.events.exists() or not list(lake.events.rglob("*.parquet"))


def test_aep_source_reads_a_dataset_export_folder(lake: Lake, source_glob: str) -> None:
    write_xdm_export(source_glob, lake.landing / "aep" / "part-0.json.gz")
    summary = _run({"source": "aep"})
    assert summary["rows"] > 0 and summary["quarantined"] == 0


@pytest.mark.integration
def test_reporting_source_pulls_through_the_hook(
    lake: Lake, emu, source_lake: Lake, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))
    emu.set_lake(source_lake.root)
    summary = _run(
        {"source": "reporting", "start": "2026-11-26", "end": "2026-11-27"},
        logical_date=datetime(2026, 11, 28, tzinfo=UTC),
    )
    assert summary["mode"] == "replace" and summary["granularity"] == "day"
    assert list(summary["partitions"]) == ["2026-11-26", "2026-11-27"]


@pytest.mark.integration
def test_new_aep_batches_pull_yesterday_and_today_from_the_reporting_api(
    lake: Lake, emu, source_lake: Lake, monkeypatch
) -> None:
    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))
    emu.set_lake(source_lake.root)
    event = SimpleNamespace(extra={"from_trigger": True, "payload": {"batches": ["b1"]}})
    summary = _run(
        {"source": "export"},  # the form default; the watcher event decides
        triggering_asset_events={"aep_cja_dataset_batches": [event]},
        logical_date=datetime(2026, 11, 27, 15, 20, tzinfo=UTC),
    )
    assert summary["source"] == "cja_reporting" and summary["mode"] == "merge"
    assert summary["window"] == {
        "start": "2026-11-26T00:00:00+00:00",
        "end": "2026-11-27T15:00:00+00:00",
    }
    assert list(summary["partitions"]) == ["2026-11-26", "2026-11-27"]


@pytest.mark.e2e
def test_the_dag_lands_synthetic_data_and_emits_cja_events(airflow_db, lake: Lake) -> None:
    from airflow.dag_processing.dagbag import DagBag

    from tests.conftest import REPO

    dag = DagBag(dag_folder=str(REPO / "dags" / "cja_extract.py")).get_dag("cja_extract")
    run = dag.test(
        run_conf={
            "source": "synthetic",
            "start": "2026-11-26",
            "end": "2026-11-27",
            "options": {"persons": 100, "seed": 1},
        }
    )
    assert run.state == "success"
    dates = [r[0] for r in query(lake, "SELECT DISTINCT date::VARCHAR FROM events ORDER BY 1")]
    assert dates == ["2026-11-26", "2026-11-27"]
    assert Path(lake.persons / "persons.parquet").exists()
    assert _asset_event_extras(run.run_id) == [
        {
            "source": "synthetic",
            "rows": query(lake, "SELECT count(*) FROM events")[0][0],
            "dates": ["2026-11-26", "2026-11-27"],
        }
    ]


def _asset_event_extras(run_id: str) -> list[dict]:
    """The extras of the cja_events asset events the run's extract task emitted."""
    from airflow.models.asset import AssetEvent, AssetModel
    from airflow.utils.session import create_session
    from sqlalchemy import select

    with create_session() as session:
        events = session.scalars(
            select(AssetEvent)
            .join(AssetModel, AssetEvent.asset_id == AssetModel.id)
            .where(AssetModel.name == "cja_events", AssetEvent.source_run_id == run_id)
        ).all()
        return [event.extra for event in events]
