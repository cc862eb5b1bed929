from __future__ import annotations

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cja_audiences.lake.layout import Lake, atomic_path, safe_name, write_parquet
from cja_audiences.lake.runs import read_run_record, update_run_record


def test_layout_follows_the_design(tmp_path):
    lake = Lake(tmp_path)
    assert lake.event_partition("2026-11-20") == tmp_path / "lake/events/date=2026-11-20"
    assert lake.quarantine("export", "r1") == tmp_path / "quarantine/export/r1"
    run = lake.run_dir("cart", "manual__2026-11-20T06:00:00+00:00")
    assert run == tmp_path / "audiences/cart/runs/manual__2026-11-20T06_00_00_00_00"


def test_safe_name_keeps_plain_ids():
    assert safe_name("scheduled__2026-11-20") == "scheduled__2026-11-20"


def test_a_failed_write_leaves_neither_the_file_nor_a_temporary(tmp_path):
    target = tmp_path / "members.parquet"
    with pytest.raises(RuntimeError), atomic_path(target) as tmp:
        tmp.write_text("half")
        raise RuntimeError("crash mid-write")
    assert list(tmp_path.iterdir()) == []


def test_write_parquet_replaces_whole(tmp_path):
    target = tmp_path / "t.parquet"
    write_parquet(pa.table({"a": [1, 2]}), target)
    write_parquet(pa.table({"a": [3]}), target)
    assert pq.read_table(target)["a"].to_pylist() == [3]
    assert [p.name for p in tmp_path.iterdir()] == ["t.parquet"]


def test_run_record_sections_merge(tmp_path):
    update_run_record(tmp_path, compute={"size": 3})
    update_run_record(tmp_path, diff={"entered": 3})
    assert read_run_record(tmp_path) == {"compute": {"size": 3}, "diff": {"entered": 3}}
