from __future__ import annotations

import shutil
from datetime import date

import pytest

from cja_audiences.airflow.triggers.cja import FIRED_KEY, LandingDeliveryTrigger
from cja_audiences.extract.exports import write_delivery
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from tests.airflow.triggers.helpers import MemoryStateStore, first_event

pytestmark = pytest.mark.integration


@pytest.fixture(scope="module")
def events_glob(tmp_path_factory) -> str:
    lake = Lake(tmp_path_factory.mktemp("source"))
    generate_synthetic(lake, persons=50, days=1, end=date(2026, 11, 20), seed=3)
    return str(lake.events / "*" / "*.parquet")


def watcher(landing, store: MemoryStateStore) -> LandingDeliveryTrigger:
    trigger = LandingDeliveryTrigger(landing_dir=str(landing), poll_interval=0.05)
    trigger.asset_state_store = store
    return trigger


def test_fires_once_per_complete_delivery_even_when_dropped_again(tmp_path, events_glob):
    landing, store = tmp_path / "landing", MemoryStateStore()
    write_delivery(events_glob, landing, report_instance_id="r-1", files=2)
    dropped = shutil.copytree(landing, tmp_path / "dropped")

    event = first_event(watcher(landing, store))
    assert event.payload["delivery_id"].startswith("r-1")
    assert store.values[FIRED_KEY] == [event.payload["delivery_id"]]

    # The triggerer restarts the watcher after each event: the same delivery never refires,
    # not even when its files are dropped again.
    with pytest.raises(TimeoutError):
        first_event(watcher(landing, store), timeout=0.4)
    shutil.rmtree(landing)
    shutil.copytree(dropped, landing)
    with pytest.raises(TimeoutError):
        first_event(watcher(landing, store), timeout=0.4)

    write_delivery(events_glob, landing, report_instance_id="r-2")
    assert first_event(watcher(landing, store)).payload["delivery_id"].startswith("r-2")


def test_a_partial_delivery_does_not_fire(tmp_path, events_glob):
    landing = tmp_path / "landing"
    files = write_delivery(events_glob, landing, report_instance_id="r-3", files=2)
    files[1].unlink()  # a file still uploading
    with pytest.raises(TimeoutError):
        first_event(watcher(landing, MemoryStateStore()), timeout=0.4)
