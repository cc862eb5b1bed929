from __future__ import annotations

from cja_audiences.lake.freshness import partition_ready


def test_a_partition_is_ready_only_with_parquet_files(tmp_path):
    assert not partition_ready(tmp_path, "2026-11-20")
    partition = tmp_path / "date=2026-11-20"
    partition.mkdir()
    assert not partition_ready(tmp_path, "2026-11-20")
    (partition / ".part-0.parquet.tmp").write_bytes(b"")
    assert not partition_ready(tmp_path, "2026-11-20")
    (partition / "part-0.parquet").write_bytes(b"x")
    assert partition_ready(tmp_path, "2026-11-20")
