"""The storage layer on every backend: a local folder and real S3, GCS and Azure Blob servers."""

from __future__ import annotations

import json
import threading
import time
from pathlib import Path

import pyarrow as pa
import pytest

from cja_audiences.lake.layout import Lake, read_json, write_json, write_parquet
from cja_audiences.lake.partitions import POINTER, partition_files, publish_generation
from cja_audiences.lake.storage import (
    StorageError,
    atomic_path,
    connect,
    copy_file,
    create_exclusive,
    delete_if,
    exclusive,
    is_remote,
    lake_path,
    parquet_rows,
    read_versioned,
    remove_tree,
    replace_if,
)
from cja_audiences.settings import settings_from_env

REMOTE = ["s3", "gs", "abfs"]  # moto, fake-gcs-server, Azurite (tests/object_storage.py)


@pytest.fixture(params=["local", *REMOTE])
def root(request, tmp_path):
    if request.param == "local":
        return lake_path(tmp_path / "home")
    return lake_path(request.getfixturevalue(f"{request.param}_home"))


@pytest.fixture(params=REMOTE)
def remote(request):
    return lake_path(request.getfixturevalue(f"{request.param}_home"))


def test_a_url_home_is_object_storage_and_a_folder_stays_a_path(tmp_path, s3_home):
    assert Lake(s3_home).events.protocol == "s3"
    assert str(Lake(s3_home).events) == f"{s3_home}/lake/events"
    assert isinstance(Lake(tmp_path).events, Path)
    settings = settings_from_env({"CJA_AUDIENCES_HOME": s3_home})
    assert settings.home == s3_home
    assert settings_from_env({"CJA_AUDIENCES_HOME": str(tmp_path)}).home == tmp_path


def test_atomic_writes_replace_whole_or_not_at_all(root):
    path = root / "audiences" / "a" / "current.json"
    write_json({"run_id": "r1"}, path)
    with pytest.raises(RuntimeError), atomic_path(path) as tmp:
        tmp.write_text('{"run_id": "half')
        raise RuntimeError("crash before the write completes")
    assert read_json(path) == {"run_id": "r1"}
    write_json({"run_id": "r2"}, path)
    assert read_json(path) == {"run_id": "r2"}
    assert read_json(root / "missing.json", default={}) == {}


def test_create_exclusive_admits_one_creator(root):
    path = root / "leases" / "a.json"
    assert create_exclusive(path, b"first")
    assert not create_exclusive(path, b"second")
    assert read_versioned(path).data == b"first"


def test_replace_if_is_compare_and_set(root):
    path = root / "pointer.json"
    assert read_versioned(path) is None
    assert replace_if(path, b"v1", None)
    assert not replace_if(path, b"again", None)  # exists already
    v1 = read_versioned(path)
    assert replace_if(path, b"v2", v1.token)
    assert not replace_if(path, b"v3", v1.token)  # stale token: someone wrote v2 first
    assert read_versioned(path).data == b"v2"
    assert not replace_if(root / "gone.json", b"v1", v1.token)  # nothing to replace


def test_delete_if_removes_only_the_version_it_read(root):
    path = root / "leases" / "b.json"
    assert replace_if(path, b"mine", None)
    mine = read_versioned(path)
    assert replace_if(path, b"theirs", mine.token)  # taken over meanwhile
    assert not delete_if(path, mine.token)
    assert read_versioned(path).data == b"theirs"
    assert delete_if(path, read_versioned(path).token)
    assert read_versioned(path) is None
    assert not delete_if(path, mine.token)


def test_exclusive_serialises_read_modify_write_across_threads(root):
    counter = root / "counter.json"
    write_json({"n": 0}, counter)

    def bump() -> None:
        for _ in range(3):
            with exclusive(root / ".lock"):
                value = read_json(counter)["n"]
                time.sleep(0.01)
                write_json({"n": value + 1}, counter)

    threads = [threading.Thread(target=bump) for _ in range(3)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert read_json(counter) == {"n": 9}


def test_a_lock_left_by_a_crashed_holder_expires(remote):
    lock = remote / ".lock"
    create_exclusive(lock, json.dumps({"owner": "dead", "expires": time.time() - 1}).encode())
    with exclusive(lock, timeout_s=5):
        assert json.loads(read_versioned(lock).data)["owner"] != "dead"
    assert not lock.exists()
    create_exclusive(lock, json.dumps({"owner": "alive", "expires": time.time() + 60}).encode())
    with (
        pytest.raises(StorageError, match="locked by another writer"),
        exclusive(lock, timeout_s=0.3),
    ):
        pass


def test_duckdb_reads_and_writes_the_lake_offline(root):
    source = write_parquet(pa.table({"x": [1, 2, 3]}), root / "a" / "t.parquet")
    con = connect(root)
    try:
        assert con.execute(
            "SELECT sum(x) FROM read_parquet($p)", {"p": str(source)}
        ).fetchone() == (6,)
        autoload = con.execute("SELECT current_setting('autoload_known_extensions')").fetchone()
        assert autoload == (False,)
        with atomic_path(root / "b" / "out.parquet") as tmp:
            con.execute("COPY (SELECT 42 AS y) TO $p (FORMAT parquet)", {"p": str(tmp)})
    finally:
        con.close()
    assert parquet_rows(root / "b" / "out.parquet") == 1
    copy_file(source, root / "c" / "copy.parquet")
    assert parquet_rows(root / "c" / "copy.parquet") == 3
    remove_tree(root / "c")
    assert not (root / "c" / "copy.parquet").exists()


def _staged(tmp_path: Path, name: str, rows: int) -> Path:
    folder = tmp_path / name
    folder.mkdir()
    write_parquet(pa.table({"x": list(range(rows))}), folder / "part-0.parquet")
    return folder


def test_object_storage_partitions_switch_generations_by_pointer(s3_home, tmp_path):
    partition = Lake(s3_home).event_partition("2026-11-20")
    assert partition_files(partition) == []
    first = publish_generation(_staged(tmp_path, "one", 2), partition)
    [live] = partition_files(partition)
    assert first in str(live) and parquet_rows(live) == 2
    second = publish_generation(_staged(tmp_path, "two", 5), partition)
    third = publish_generation(_staged(tmp_path, "three", 7), partition)
    assert [parquet_rows(f) for f in partition_files(partition)] == [7]
    generations = sorted(p.name for p in partition.iterdir() if p.name.startswith("gen="))
    assert generations == [f"gen={second}", f"gen={third}"]  # the previous one is kept
    # a crash after uploading a generation but before the pointer: readers never see it
    write_parquet(pa.table({"x": [0]}), partition / "gen=crashed" / "part-0.parquet")
    assert [parquet_rows(f) for f in partition_files(partition)] == [7]
    assert (partition / POINTER).exists()


def test_local_partitions_stay_plain_folders(tmp_path):
    partition = Lake(tmp_path).event_partition("2026-11-20")
    write_parquet(pa.table({"x": [1]}), partition / "part-0.parquet")
    assert partition_files(partition) == [partition / "part-0.parquet"]
    assert not is_remote(partition)


def test_a_store_without_conditional_writes_is_refused_by_name():
    with pytest.raises(StorageError, match=r"memory:// is not supported: move CJA_AUDIENCES_HOME"):
        create_exclusive(lake_path("memory://lake/home") / "lock", b"x")
