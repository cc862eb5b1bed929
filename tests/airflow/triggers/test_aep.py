from __future__ import annotations

import json

import pytest

from cja_audiences.airflow.triggers.aep import WATERMARK_KEY, CatalogBatchTrigger
from tests.airflow.triggers.helpers import MemoryStateStore, first_event

pytestmark = pytest.mark.integration


def fire_once(trigger: CatalogBatchTrigger, store: MemoryStateStore, timeout: float = 10):
    trigger.asset_state_store = store
    return first_event(trigger, timeout)


@pytest.fixture
def trigger(emu, monkeypatch) -> CatalogBatchTrigger:
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn()))
    dataset = emu.config["cja_dataset_id"]
    return CatalogBatchTrigger(aep_conn_id="aep_default", dataset_id=dataset, poll_interval=0.1)


def test_each_new_batch_fires_once_across_restarts(emu, trigger):
    store = MemoryStateStore()
    first = emu.add_batch(status="success", records=10, created=1_000)

    event = fire_once(trigger, store)
    assert event.payload["batches"] == [first["id"]]
    assert store.values[WATERMARK_KEY] == 1_000

    # A restarted watcher (same store) waits for the next batch instead of firing again.
    with pytest.raises(TimeoutError):
        fire_once(trigger, store, timeout=0.5)
    second = emu.add_batch(status="success", records=3, created=2_000)
    assert fire_once(trigger, store).payload["batches"] == [second["id"]]


def test_failed_batches_do_not_fire(emu, trigger):
    emu.add_batch(status="failed", records=10, created=1_000)
    with pytest.raises(TimeoutError):
        fire_once(trigger, MemoryStateStore(), timeout=0.5)


def test_serialize_round_trips():
    trigger = CatalogBatchTrigger(aep_conn_id="aep_default", dataset_id="ds1", poll_interval=30)
    classpath, kwargs = trigger.serialize()
    assert classpath == "cja_audiences.airflow.triggers.aep.CatalogBatchTrigger"
    assert CatalogBatchTrigger(**kwargs).serialize() == (classpath, kwargs)
