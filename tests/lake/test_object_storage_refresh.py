"""Every stage on an object-storage lake (s3:// on moto, gs:// on fake-gcs-server, abfs:// on
Azurite) gives what it gives on a local folder."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq
import pytest

from cja_audiences import snapshots
from cja_audiences.extract.aep import AEPExportSource, write_xdm_export
from cja_audiences.extract.exports import ExportSource, complete_deliveries, write_delivery
from cja_audiences.extract.source import run_extract
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.freshness import partition_ready
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.partitions import partition_files
from cja_audiences.lake.runs import read_run_record
from cja_audiences.lake.storage import move, parquet_file, upload_tree
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, RefreshRequest
from cja_audiences.settings import PROJECT_ROOT, Settings
from cja_audiences.specs.model import spec_by_id
from tests.publish.helpers import fast_options, held

pytestmark = pytest.mark.integration

END = date(2026, 11, 20)
SPECS = PROJECT_ROOT / "include" / "audiences"


def settings_for(home) -> Settings:
    return Settings(
        home=home, audiences_dir=SPECS, filters_dir=PROJECT_ROOT / "include" / "filters"
    )


def land(lake: Lake, source: Lake, tmp_path, seed: int) -> dict:
    """Synthetic history, then one AEP export merged into the last day (writer + persons)."""
    generate_synthetic(lake, persons=2000, days=5, end=END, seed=seed)
    last_day = [str(f) for f in partition_files(source.event_partition(END.isoformat()))]
    export = write_xdm_export(last_day, tmp_path / f"export-{seed}.json")
    return run_extract(AEPExportSource([export]), lake, run_id="aep__1")


def refresh(settings: Settings, run_id: str, emu=None) -> AudienceRefresh:
    spec = spec_by_id(SPECS, "cart_abandoners")
    stages = AudienceRefresh(
        spec, settings, RefreshRequest(run_id=run_id, as_of=END, force=True, dry_run=emu is None)
    )
    assert stages.gate()["due"]
    stages.compute()
    stages.diff()
    stages.check()
    if emu is not None:
        publish_run(emu.adobe_config(), spec, stages.run_dir, options=fast_options())
    stages.commit()
    return stages


def members(run_dir) -> list[tuple]:
    table = parquet_file(run_dir / "members.parquet").read()
    return sorted(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


@pytest.fixture(params=["s3", "gs", "abfs"])
def remote_home(request) -> str:
    return request.getfixturevalue(f"{request.param}_home")


def test_a_refresh_on_object_storage_matches_the_local_lake_and_aep(remote_home, tmp_path, emu):
    local = Lake(tmp_path / "local")
    remote = Lake(remote_home)
    generate_synthetic(Lake(tmp_path / "source"), persons=2000, days=5, end=END, seed=9)
    source = Lake(tmp_path / "source")
    landed = {
        name: land(lake, source, tmp_path, 9) for name, lake in [("l", local), ("remote", remote)]
    }
    assert landed["l"]["rows"] == landed["remote"]["rows"] > 0
    assert partition_ready(str(remote.events), END.isoformat())
    assert not partition_ready(str(remote.events), "2026-12-01")
    local_files = partition_files(local.event_partition(END.isoformat()))
    local_rows = sum(pq.ParquetFile(f).metadata.num_rows for f in local_files)
    assert landed["remote"]["partitions"][END.isoformat()] == local_rows

    remote_run = refresh(settings_for(remote_home), "manual__1", emu)
    on_disk = refresh(settings_for(local.root), "manual__1")
    assert members(remote_run.run_dir) == members(on_disk.run_dir) != []
    record = read_run_record(remote_run.run_dir)
    assert record["status"] == "committed" and record["publish"]["status"] == "ok"
    assert held(emu, "cart_abandoners", status="realized") == {
        (ns, identity) for _, ns, identity, *_ in members(remote_run.run_dir)
    }

    # a second run diffs against the committed snapshot in the bucket and moves current.json
    second = refresh(settings_for(remote_home), "manual__2", emu)
    assert read_run_record(second.run_dir)["diff"]["previous_run_id"] == "manual__1"
    assert snapshots.current_run(second.audience_dir)["run_id"] == "manual__2"
    statuses = {r["run_id"]: r["status"] for r in snapshots.list_runs(second.audience_dir)}
    assert statuses == {"manual__1": "published", "manual__2": "current"}
    assert snapshots.prune(second.audience_dir, keep=1) == ["manual__1"]


def test_a_delivery_landed_on_s3_is_found_read_and_claimed(s3_home, tmp_path):
    source = Lake(tmp_path / "source")
    generate_synthetic(source, persons=300, days=2, end=END, seed=4)
    local_landing = tmp_path / "delivery"
    events = [str(f) for f in partition_files(source.event_partition(END.isoformat()))]
    write_delivery(events, local_landing, report_instance_id="ri1", files=2)
    lake = Lake(s3_home)
    assert complete_deliveries(lake.landing) == []
    upload_tree(local_landing, lake.landing)  # what the watcher in the triggerer polls
    [delivery] = complete_deliveries(str(lake.landing))
    summary = run_extract(ExportSource(delivery), lake, run_id="export__1")
    assert summary["rows"] == sum(pq.ParquetFile(f).metadata.num_rows for f in events)
    for path in (*delivery.files, delivery.manifest):
        move(path, lake.landing / "processed" / delivery.id / path.name)
    assert complete_deliveries(lake.landing) == []
    assert len(list((lake.landing / "processed" / delivery.id).iterdir())) == 3
