from __future__ import annotations

import asyncio

import pytest

from cja_audiences.airflow.triggers.lake import LakePartitionTrigger
from tests.airflow.triggers.helpers import first_event


def test_partition_trigger_waits_for_the_partition(tmp_path):
    trigger = LakePartitionTrigger(events_dir=str(tmp_path), date="2026-11-20", poll_interval=0.05)

    async def land_later():
        await asyncio.sleep(0.2)
        part = tmp_path / "date=2026-11-20"
        part.mkdir()
        (part / "part-0.parquet").write_bytes(b"x")

    async def both():
        landing = asyncio.create_task(land_later())
        async for event in trigger.run():
            await landing
            return event

    event = asyncio.run(asyncio.wait_for(both(), 5))
    assert event.payload == {"status": "ready", "date": "2026-11-20"}


def test_partition_trigger_serializes_to_its_own_kwargs():
    trigger = LakePartitionTrigger(events_dir="/lake/events", date="2026-11-20", poll_interval=5)
    classpath, kwargs = trigger.serialize()
    assert classpath == "cja_audiences.airflow.triggers.lake.LakePartitionTrigger"
    assert LakePartitionTrigger(**kwargs).serialize() == (classpath, kwargs)


def test_partition_trigger_keeps_waiting_without_data(tmp_path):
    trigger = LakePartitionTrigger(events_dir=str(tmp_path), date="2026-11-20", poll_interval=0.05)
    with pytest.raises(TimeoutError):
        first_event(trigger, timeout=0.3)
