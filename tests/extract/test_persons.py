"""The persons table follows the events: identities from every source, attributes kept."""

from __future__ import annotations

from pathlib import Path

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

from cja_audiences.extract.exports import ExportSource, complete_deliveries, write_delivery
from cja_audiences.extract.source import run_extract
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.extract.writer import PartitionWriter
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.schema import PERSON_SCHEMA
from tests.extract.conftest import END


def _persons(lake: Lake) -> dict[str, dict]:
    table = pq.read_table(lake.persons / "persons.parquet")
    assert [(f.name, f.type) for f in table.schema] == [(f.name, f.type) for f in PERSON_SCHEMA]
    return {row["person_id"]: row for row in table.to_pylist()}


def test_an_export_builds_persons_with_their_identities(
    tmp_path: Path, source_lake: Lake, source_glob: str
) -> None:
    write_delivery(source_glob, tmp_path / "landing", report_instance_id="p", fmt="csv")
    [delivery] = complete_deliveries(tmp_path / "landing")
    lake = Lake(tmp_path / "home")
    summary = run_extract(ExportSource(delivery), lake, run_id="p")
    persons = _persons(lake)
    expected = duckdb.sql(
        "SELECT person_id, max(identities['CRMID']) FROM read_parquet(?) GROUP BY 1",
        params=[source_glob],
    ).fetchall()
    assert summary["persons"] == len(persons) == len(expected)
    assert {p: persons[p]["crm_id"] for p, _ in expected} == dict(expected)
    assert all(row["ecid"] == pid for pid, row in persons.items())


def test_new_events_fill_gaps_and_never_overwrite_attributes(tmp_path: Path) -> None:
    lake = Lake(tmp_path)
    generate_synthetic(lake, persons=50, days=2, end=END, seed=3)
    before = _persons(lake)
    known = next(p for p, row in before.items() if row["crm_id"] is None)
    late = pa.table(
        {
            "event_id": ["n1", "n2"],
            "timestamp": ["2026-11-01T08:00:00Z", "2026-11-27T09:00:00Z"],
            "person_id": [known, "new-person"],
            "identities": pa.array(
                [[("CRMID", "crm-late")], [("Email", "x@example.com")]],
                pa.map_(pa.string(), pa.string()),
            ),
            "_origin": ["t:1", "t:2"],
        }
    )
    with PartitionWriter(lake, source="test", run_id="late") as writer:
        writer.write(late)
        writer.commit()
    after = _persons(lake)
    assert set(after) == set(before) | {"new-person"}
    assert after[known]["crm_id"] == "crm-late"
    assert after[known]["loyalty_tier"] == before[known]["loyalty_tier"]
    assert after[known]["attributes"] == before[known]["attributes"]
    assert after[known]["first_seen"].isoformat().startswith("2026-11-01T08:00")
    assert after["new-person"]["email"] == "x@example.com"
    assert after["new-person"]["loyalty_tier"] is None
