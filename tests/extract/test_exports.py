"""CJA full-table export deliveries: completeness, MD5s, mapping, bad rows, round trips."""

from __future__ import annotations

import gzip
import hashlib
import json
from pathlib import Path

import pytest

from cja_audiences.extract.exports import (
    DeliveryError,
    ExportSource,
    check_delivery,
    complete_deliveries,
    find_delivery,
    write_delivery,
)
from cja_audiences.extract.source import run_extract
from cja_audiences.extract.writer import ExtractRejected
from cja_audiences.lake.layout import Lake
from tests.extract.conftest import lake_digest, query

COMPARED = (
    "event_id, timestamp, person_id, person_namespace, identities, event_type, page_name,"
    " page_url, marketing_channel, campaign, product_skus, product_categories, revenue,"
    " order_id, quantity, country, region, device_type, browser, dimensions"
)


def _gz(path: Path, text: str) -> Path:
    path.write_bytes(gzip.compress(text.encode()))
    return path


@pytest.mark.parametrize("fmt", ["csv", "json"])
def test_a_delivery_round_trips_the_lake_exactly(
    tmp_path: Path, source_lake: Lake, source_glob: str, fmt: str
) -> None:
    landing = tmp_path / "landing"
    write_delivery(source_glob, landing, report_instance_id="r-1", fmt=fmt, files=2)
    [delivery] = complete_deliveries(landing)
    lake = Lake(tmp_path / "home")
    summary = run_extract(ExportSource(delivery), lake, run_id="t")
    assert summary["quarantined"] == 0
    expected = query(source_lake, f"SELECT {COMPARED} FROM events ORDER BY event_id")
    assert query(lake, f"SELECT {COMPARED} FROM events ORDER BY event_id") == expected
    assert summary["rows"] == len(expected) == sum(summary["rows_per_file"].values())


def test_running_the_same_delivery_twice_changes_nothing(tmp_path: Path, source_glob: str) -> None:
    landing = tmp_path / "landing"
    write_delivery(source_glob, landing, report_instance_id="r-2", fmt="csv")
    lake = Lake(tmp_path / "home")
    [delivery] = complete_deliveries(landing)
    first = run_extract(ExportSource(delivery), lake, run_id="a")
    digest = lake_digest(lake)
    second = run_extract(ExportSource(delivery), lake, run_id="b")
    assert first["partitions"] == second["partitions"]
    assert lake_digest(lake) == digest


def test_partial_and_corrupt_deliveries_are_refused(tmp_path: Path, source_glob: str) -> None:
    landing = tmp_path / "landing"
    files = write_delivery(source_glob, landing, report_instance_id="r-3", fmt="csv", files=2)
    stable_id = complete_deliveries(landing)[0].id
    files[1].rename(tmp_path / files[1].name)  # still uploading
    assert complete_deliveries(landing) == []
    with pytest.raises(DeliveryError, match=r"cja-export-r-3-1\.csv\.gz is in the manifest"):
        check_delivery("r-3", sorted(landing.iterdir()))
    (tmp_path / files[1].name).rename(files[1])
    assert [d.id for d in complete_deliveries(landing)] == [stable_id]
    files[0].write_bytes(files[0].read_bytes()[:-10])  # truncated
    with pytest.raises(DeliveryError, match="has MD5 .*, the manifest says"):
        check_delivery("r-3", sorted(landing.iterdir()))
    assert complete_deliveries(landing) == []


def test_without_a_manifest_a_delivery_waits_unless_told_otherwise(
    tmp_path: Path, source_glob: str
) -> None:
    landing = tmp_path / "landing"
    write_delivery(source_glob, landing, report_instance_id="r-4", manifest=False)
    assert complete_deliveries(landing) == []
    [delivery] = complete_deliveries(landing, require_manifest=False)
    assert delivery.manifest is None and len(delivery.files) == 1
    assert find_delivery(landing, delivery.id) == delivery


def test_custom_mapping_and_unmapped_columns(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    _gz(
        landing.mkdir() or landing / "cja-export-x-0.csv.gz",
        "When,Visitor,Page,Loyalty Status,Revenue,Email\n"
        "2026-11-27T10:00:00Z,p1,home,gold,1.5,a@example.com\n"
        "2026-11-26T23:59:59+00:00,p2,cart,,,\n",
    )
    [delivery] = complete_deliveries(landing, require_manifest=False)
    mapping = {"timestamp": "When", "person_id": "visitor", "page_name": "Page"}
    lake = Lake(tmp_path / "home")
    summary = run_extract(ExportSource(delivery, column_mapping=mapping), lake, run_id="m")
    assert summary["partitions"] == {"2026-11-26": 1, "2026-11-27": 1}
    rows = query(
        lake,
        "SELECT person_id, page_name, revenue, dimensions, identities, event_id LIKE 'md5-%'"
        " FROM events ORDER BY person_id",
    )
    assert rows == [
        ("p1", "home", 1.5, {"Loyalty Status": "gold"}, {"Email": "a@example.com"}, True),
        ("p2", "cart", None, {}, {}, True),
    ]
    with pytest.raises(ValueError, match="unknown schema fields"):
        ExportSource(delivery, column_mapping={"visitor": "Visitor"})


def test_malformed_rows_are_quarantined_and_counted(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    good = "".join(
        f'{{"Person ID": "p{i}", "Timestamp": "2026-11-27T10:00:{i % 60:02d}Z"}}\n'
        for i in range(300)
    )
    _gz(landing / "cja-export-j-0.json.gz", good + "{not json\n" + '["an", "array"]\n')
    _gz(
        landing / "cja-export-c-0.csv.gz",
        "Person ID,Timestamp\n" + "p,2026-11-27\n" * 300 + "p,2026-11-27,extra\n,2026-11-27\n",
    )
    lake = Lake(tmp_path / "home")
    deliveries = {
        d.report_instance_id: d for d in complete_deliveries(landing, require_manifest=False)
    }
    json_summary = run_extract(
        ExportSource(deliveries["j"]), lake, run_id="j", max_bad_row_share=0.01
    )
    assert json_summary["rows"] == 300 and json_summary["quarantined"] == 2
    assert json_summary["reasons"] == {"malformed JSON": 2}
    csv_summary = run_extract(
        ExportSource(deliveries["c"]), lake, run_id="c", max_bad_row_share=0.01
    )
    assert csv_summary["quarantined"] == 2
    assert csv_summary["reasons"] == {"malformed CSV row": 1, "person_id: missing": 1}
    with pytest.raises(ExtractRejected, match="2 of 302 rows"):
        run_extract(
            ExportSource(deliveries["j"]),
            Lake(tmp_path / "strict"),
            run_id="s",
            max_bad_row_share=0.005,
        )
    assert not (tmp_path / "strict" / "lake" / "events").exists() or not list(
        (tmp_path / "strict" / "lake" / "events").rglob("*.parquet")
    )


def test_manifest_entries_accept_adobe_key_spellings(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    data = _gz(landing / "cja-export-k-0.csv.gz", "Person ID,Timestamp\np,2026-11-27\n")
    manifest = {
        "deliveredFiles": [
            {"fileName": data.name, "md5Checksum": hashlib.md5(data.read_bytes()).hexdigest()}
        ]
    }
    _gz(landing / "cja-export-k-1.json.gz", json.dumps(manifest))
    [delivery] = complete_deliveries(landing)
    assert delivery.files == (data,) and delivery.manifest.name == "cja-export-k-1.json.gz"


def test_a_csv_with_a_byte_order_mark_maps_its_first_column(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    _gz(landing / "cja-export-bom-0.csv.gz", "\ufeffPerson ID,Timestamp\np1,2026-11-27\n")
    [delivery] = complete_deliveries(landing, require_manifest=False)
    summary = run_extract(ExportSource(delivery), Lake(tmp_path / "home"), run_id="bom")
    assert summary["rows"] == 1 and summary["quarantined"] == 0


def test_json_keys_map_like_csv_headers_case_insensitively(tmp_path: Path) -> None:
    landing = tmp_path / "landing"
    landing.mkdir()
    lines = [
        {"person id": "p1", "TIMESTAMP": "2026-11-27T10:00:00Z", "crm id": "c1", "Extra": 1},
        {"person id": "p2", "TIMESTAMP": "2026-11-27T11:00:00Z", "Extra": None},
    ]
    _gz(landing / "cja-export-ci-0.json.gz", "\n".join(json.dumps(x) for x in lines))
    [delivery] = complete_deliveries(landing, require_manifest=False)
    lake = Lake(tmp_path / "home")
    assert run_extract(ExportSource(delivery), lake, run_id="ci")["rows"] == 2
    rows = query(lake, "SELECT person_id, identities, dimensions FROM events ORDER BY 1")
    assert rows == [("p1", {"CRMID": "c1"}, {"Extra": "1"}), ("p2", {}, {})]
