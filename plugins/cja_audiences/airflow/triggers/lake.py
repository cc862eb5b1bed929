"""The freshness trigger: an audience run, deferred, waits for its window's last partition."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseTrigger, TriggerEvent

from cja_audiences.lake.freshness import partition_ready


class LakePartitionTrigger(BaseTrigger):
    """Fires once the events partition for ``date`` holds data (freshness gate, deferred)."""

    def __init__(self, *, events_dir: str, date: str, poll_interval: float = 60.0) -> None:
        super().__init__()
        self.events_dir = events_dir
        self.date = date
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "cja_audiences.airflow.triggers.lake.LakePartitionTrigger",
            {"events_dir": self.events_dir, "date": self.date, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        while not await asyncio.to_thread(partition_ready, self.events_dir, self.date):
            await asyncio.sleep(self.poll_interval)
        yield TriggerEvent({"status": "ready", "date": self.date})
