"""Our Adobe clients send what Adobe's specs ask for: required headers and query parameters,
request bodies that match the request schemas. Every request is captured at the transport
(so whichever client code sends it) and checked; IMS has no spec in the set and is skipped."""

from __future__ import annotations

from collections.abc import Iterator
from datetime import UTC, datetime
from pathlib import Path
from typing import Any
from urllib.parse import parse_qs, urlsplit

import pyarrow as pa
import pytest
import requests
from pydantic_core import from_json
from requests.adapters import HTTPAdapter

from cja_audiences.adobe.audiences import deactivate_audience, ensure_audience
from cja_audiences.adobe.catalog import new_batches
from cja_audiences.adobe.http import PlatformClient, TokenProvider
from cja_audiences.adobe.sender import SendOptions
from cja_audiences.extract.reporting import (
    ReportingClient,
    ReportingSource,
    extract_reporting,
    fetch_data_view_timezone,
)
from cja_audiences.filters.segment import fetch_definition
from cja_audiences.lake.layout import Lake, write_parquet
from cja_audiences.lake.schema import MEMBER_SCHEMA
from cja_audiences.publish.streaming import PublishOptions, publish_run
from cja_audiences.specs.model import AudienceSpec
from tests.contract.openapi import check_request
from tests.extract.conftest import write_events

pytestmark = pytest.mark.integration

SPEC = AudienceSpec.model_validate(
    {
        "id": "contract_buyers",
        "name": "Contract buyers",
        "refresh": {"frequency": "daily", "lookback_days": 30},
        "filter": {"template": "bench.sql.j2"},
    }
)


@pytest.fixture
def sent(monkeypatch: pytest.MonkeyPatch) -> Iterator[list[requests.PreparedRequest]]:
    """Every request any client sends in the test, as it went on the wire."""
    captured: list[requests.PreparedRequest] = []
    original = HTTPAdapter.send

    def send(self: HTTPAdapter, request: requests.PreparedRequest, **kwargs: Any) -> Any:
        captured.append(request.copy())
        return original(self, request, **kwargs)

    monkeypatch.setattr(HTTPAdapter, "send", send)
    yield captured


def check_all(sent: list[requests.PreparedRequest]) -> set[str]:
    """Check every non-IMS request against its spec; the operations seen."""
    seen = set()
    for request in sent:
        url = urlsplit(request.url)
        if url.path.startswith(("/ims/", "/_emulator")):
            continue
        body: Any = request.body
        if isinstance(body, bytes | str) and body:
            body = from_json(body)
        query = {k: v[-1] for k, v in parse_qs(url.query).items()}
        headers = dict(request.headers)
        seen.add(str(check_request(request.method, request.url, headers, body or None, query)))
    return seen


def test_cja_clients(emu, sent, tmp_path: Path) -> None:
    emu.set_lake(
        write_events(
            tmp_path / "cja",
            [
                {
                    "timestamp": "2026-11-01T10:00:00+00:00",
                    "person_id": "p1",
                    "event_type": "commerce.purchases",
                    "order_id": "o1",
                    "revenue": 9.5,
                }
            ],
        )
    )
    segment = emu.add_segment(
        name="Buyers",
        definition={
            "func": "segment",
            "version": [1, 0, 0],
            "container": {
                "func": "container",
                "context": "hits",
                "pred": {
                    "func": "event-exists",
                    "evt": {"func": "event", "name": "metrics/orders"},
                },
            },
        },
    )
    config = emu.adobe_config("cja")
    assert fetch_definition(config, segment["id"])["container"]["context"] == "hits"
    zone = fetch_data_view_timezone(config, config.data_view_id)
    source = ReportingSource(
        ReportingClient(config, sleep=lambda s: None),
        data_view_id=config.data_view_id,
        start=datetime(2026, 11, 1, tzinfo=UTC),
        end=datetime(2026, 11, 2, tzinfo=UTC),
        checkpoint_dir=tmp_path / "checkpoints",
        timezone=zone,
    )
    assert extract_reporting(source, Lake(tmp_path / "home"), run_id="c")["rows"] == 1
    assert check_all(sent) == {
        "GET /segments/{id} (cja-swagger.json)",
        "GET /data/dataviews/{dataViewId} (cja-swagger.json)",
        "POST /reports (cja-swagger.json)",
    }


def test_aep_clients(emu, sent, tmp_path: Path) -> None:
    config = emu.adobe_config("aep", rate_limit=0)
    with PlatformClient(config, TokenProvider(config)) as client:
        created = ensure_audience(client, SPEC, segment_namespace=config.segment_namespace)
        renamed = SPEC.model_copy(update={"name": "Contract buyers, renamed"})
        ensure_audience(client, renamed, segment_namespace=config.segment_namespace)
        deactivate_audience(client, SPEC.id)
    assert created["action"] == "created"
    emu.add_batch(datasetId=emu.config["cja_dataset_id"], status="success", records=5)
    assert len(new_batches(config, emu.config["cja_dataset_id"], 0)) == 1
    run_dir = tmp_path / "run"
    run_dir.mkdir()
    people = {"person_id": ["p1", "p2"], "namespace": ["ECID"] * 2, "identity": ["e1", "e2"]}
    write_parquet(pa.table(people, schema=MEMBER_SCHEMA), run_dir / "entered.parquet")
    write_parquet(
        pa.table({k: [] for k in people}, schema=MEMBER_SCHEMA), run_dir / "exited.parquet"
    )
    options = PublishOptions(send=SendOptions(rate_limit=0, concurrency=1))
    assert publish_run(config, SPEC, run_dir, options=options)["sent"] >= 2
    assert check_all(sent) >= {
        "GET /audiences (segmentation.yaml)",
        "POST /audiences (segmentation.yaml)",
        "PATCH /audiences/{AUDIENCE_ID} (segmentation.yaml)",
        "GET /batches (catalog.yaml)",
        "POST /collection/batch/{CONNECTION_ID} (streaming-ingestion.yaml)",
    }
