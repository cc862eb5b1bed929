from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cja_audiences.publish.ledger import Ledger, LedgerMismatch, fingerprint, iter_chunks
from tests.publish.helpers import member_table, write_members


def test_chunks_are_fixed_size_in_file_order_across_row_groups(tmp_path):
    path = tmp_path / "entered.parquet"
    pq.write_table(member_table(range(2_500)), path, row_group_size=333)
    chunks = list(iter_chunks(path, "entered", "realized", 1_000))
    assert [len(c) for c in chunks] == [1_000, 1_000, 500]
    assert [c.id for c in chunks] == ["entered-000000", "entered-000001", "entered-000002"]
    ids = [p for c in chunks for p in c.table.column("person_id").to_pylist()]
    assert ids == member_table(range(2_500)).column("person_id").to_pylist()


def test_chunk_boundaries_do_not_depend_on_how_the_file_was_written(tmp_path):
    a, b = tmp_path / "a.parquet", tmp_path / "b.parquet"
    pq.write_table(member_table(range(1_234)), a, row_group_size=100)
    pq.write_table(member_table(range(1_234)), b, row_group_size=1_000_000)
    first = [c.table for c in iter_chunks(a, "entered", "realized", 250)]
    second = [c.table for c in iter_chunks(b, "entered", "realized", 250)]
    assert all(x.equals(y) for x, y in zip(first, second, strict=True))


def test_unsorted_input_is_refused_with_the_file_name(tmp_path):
    path = tmp_path / "exited.parquet"
    table = member_table(range(10))
    pq.write_table(table.take([1, 0, *range(2, 10)]), path)
    with pytest.raises(ValueError, match="exited.parquet.*not sorted"):
        list(iter_chunks(path, "exited", "exited", 4))


def test_unsorted_across_batches_is_refused(tmp_path):
    path = tmp_path / "entered.parquet"
    table = member_table(range(10))
    pq.write_table(table.take([5, 6, 7, 8, 9, 0, 1, 2, 3, 4]), path, row_group_size=5)
    with pytest.raises(ValueError, match="not sorted"):
        list(iter_chunks(path, "entered", "realized", 5))


def test_empty_input_yields_no_chunk(tmp_path):
    path = write_members(tmp_path / "exited.parquet", [])
    assert list(iter_chunks(path, "exited", "exited", 10)) == []


def test_ledger_survives_reopen_and_keeps_first_qualification_time(run_dir):
    path = write_members(run_dir / "entered.parquet", range(10))
    ledger = Ledger(run_dir)
    first = ledger.open(5, {"entered": {**fingerprint(path), "qualification_time": "T1"}})
    ledger.acknowledge({"chunk": "entered-000000", "kind": "entered", "records": 5})
    reopened = Ledger(run_dir)
    again = reopened.open(5, {"entered": {**fingerprint(path), "qualification_time": "T2"}})
    assert (
        again["inputs"]["entered"]["qualification_time"]
        == "T1"
        == first["inputs"]["entered"]["qualification_time"]
    )
    assert reopened.is_acknowledged("entered-000000")
    assert not reopened.is_acknowledged("entered-000001")
    assert [e["chunk"] for e in reopened.entries({"entered"})] == ["entered-000000"]
    assert list(reopened.entries({"exited"})) == []
    assert not list(run_dir.glob("ledger/.*.tmp"))  # atomic writes leave no temp files


def test_ledger_refuses_changed_input_or_chunk_size(run_dir):
    path = write_members(run_dir / "entered.parquet", range(10))
    Ledger(run_dir).open(5, {"entered": {**fingerprint(path), "qualification_time": "T"}})
    with pytest.raises(LedgerMismatch, match="chunk_size"):
        Ledger(run_dir).open(6, {"entered": {**fingerprint(path), "qualification_time": "T"}})
    write_members(path, range(11))
    with pytest.raises(LedgerMismatch, match="entered input changed"):
        Ledger(run_dir).open(5, {"entered": {**fingerprint(path), "qualification_time": "T"}})
