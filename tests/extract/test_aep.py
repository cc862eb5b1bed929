"""AEP dataset exports of XDM ExperienceEvents: nested fields, identities, bad lines."""

from __future__ import annotations

import gzip
import json
from pathlib import Path

from cja_audiences.extract.aep import AEPExportSource, dataset_files, write_xdm_export
from cja_audiences.extract.source import run_extract
from cja_audiences.lake.layout import Lake
from tests.extract.conftest import lake_digest, query
from tests.extract.test_exports import COMPARED


def test_an_xdm_export_round_trips_the_lake_exactly(
    tmp_path: Path, source_lake: Lake, source_glob: str
) -> None:
    export = write_xdm_export(source_glob, tmp_path / "export" / "part-00000.json.gz")
    lake = Lake(tmp_path / "home")
    source = AEPExportSource(dataset_files(tmp_path / "export"), tenant_field="_demo")
    summary = run_extract(source, lake, run_id="x")
    assert summary["quarantined"] == 0
    assert summary["rows_per_file"] == {export.name: summary["rows"]}
    expected = query(source_lake, f"SELECT {COMPARED} FROM events ORDER BY event_id")
    assert query(lake, f"SELECT {COMPARED} FROM events ORDER BY event_id") == expected
    digest = lake_digest(lake)
    run_extract(source, lake, run_id="again")
    assert lake_digest(lake) == digest


def _event(**fields) -> dict:
    base = {
        "_id": "ev-1",
        "timestamp": "2026-11-27T08:30:00+01:00",
        "eventType": "commerce.purchases",
        "identityMap": {
            "Email": [{"id": "a@example.com"}],
            "CRMID": [{"id": "crm-1", "primary": True}],
            "ECID": [{"id": "1" * 38}],
        },
        "web": {"webPageDetails": {"name": "order confirmation", "URL": "https://x/done"}},
        "commerce": {"order": {"purchaseID": "o-1", "priceTotal": 59.5}},
        "productListItems": [
            {"SKU": "A", "quantity": 2, "productCategories": [{"categoryID": "shoes"}]},
            {"SKU": "B", "quantity": 1, "productCategories": [{"categoryID": "toys"}]},
        ],
        "placeContext": {"geo": {"countryCode": "DE", "stateProvince": "BY"}},
        "marketing": {"trackingCode": "em_spring"},
        "channel": {"typeAtSource": "Email"},
        "device": {"type": "mobile"},
        "environment": {"browserDetails": {"name": "Safari"}, "type": "browser"},
        "web_referrer": None,
    }
    base.update(fields)
    return base


def test_nested_xdm_fields_map_to_the_schema(tmp_path: Path) -> None:
    path = tmp_path / "events.json"
    no_primary = _event(
        _id="ev-2", identityMap={"Email": [{"id": "b@example.com"}], "ECID": [{"id": "2" * 38}]}
    )
    path.write_text(json.dumps(_event()) + "\n" + json.dumps(no_primary) + "\n")
    lake = Lake(tmp_path / "home")
    run_extract(AEPExportSource([path]), lake, run_id="n")
    rows = query(
        lake,
        "SELECT event_id, strftime(timestamp, '%H:%M'), person_id, person_namespace, identities,"
        " product_skus, product_categories, revenue, quantity, order_id, country, region,"
        " device_type, browser, marketing_channel, campaign, page_name, dimensions"
        " FROM events ORDER BY event_id",
    )
    assert rows[0] == (
        "ev-1",
        "07:30",
        "crm-1",
        "CRMID",
        {"Email": "a@example.com", "ECID": "1" * 38},
        ["A", "B"],
        ["shoes", "toys"],
        59.5,
        3,
        "o-1",
        "DE",
        "BY",
        "Mobile",
        "Safari",
        "Email",
        "em_spring",
        "order confirmation",
        {"environment_type": "browser"},
    )
    assert rows[1][2:4] == ("2" * 38, "ECID")  # no primary flag: ECID comes first by default


def test_bad_lines_are_quarantined_with_a_reason(tmp_path: Path) -> None:
    path = tmp_path / "events.json.gz"
    lines = [json.dumps(_event(_id=f"ev-{i}")) for i in range(200)]
    lines += [
        "{truncated",
        json.dumps(_event(_id="no-ids", identityMap=None)),
        json.dumps(_event(_id="no-time", timestamp="never")),
    ]
    path.write_bytes(gzip.compress("\n".join(lines).encode()))
    summary = run_extract(
        AEPExportSource([path]), Lake(tmp_path / "home"), run_id="b", max_bad_row_share=0.05
    )
    assert summary["rows"] == 200 and summary["quarantined"] == 3
    assert summary["reasons"] == {
        "malformed JSON": 1,
        "identityMap: missing or not {namespace: [{id}]}": 1,
        "timestamp: cannot parse": 1,
    }
