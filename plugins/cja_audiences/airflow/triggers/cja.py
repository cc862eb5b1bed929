"""Event trigger on the landing zone: a complete CJA export delivery starts an extract."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.triggers.base import BaseEventTrigger, TriggerEvent

FIRED_KEY = "fired_deliveries"
REMEMBERED_DELIVERIES = 1000


class LandingDeliveryTrigger(BaseEventTrigger):
    """Fires once per complete CJA export delivery (manifest and every file, MD5s matching).

    The ids it fired for live in the asset state store, so a delivery dropped again, or a
    triggerer restart, never starts a second extract.
    """

    def __init__(self, *, landing_dir: str, poll_interval: float = 30.0) -> None:
        super().__init__()
        self.landing_dir = landing_dir
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "cja_audiences.airflow.triggers.cja.LandingDeliveryTrigger",
            {"landing_dir": self.landing_dir, "poll_interval": self.poll_interval},
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Here, not at module level: the extract DAG builds this trigger at parse time.
        from cja_audiences.extract.exports import complete_deliveries

        store = self.asset_state_store
        fired: list[str] = list(await store.aget(FIRED_KEY, [])) if store else []
        while True:
            deliveries = await asyncio.to_thread(complete_deliveries, self.landing_dir)
            fresh = [d for d in deliveries if d.id not in fired]
            if fresh:
                delivery = fresh[0]
                if store:
                    await store.aset(FIRED_KEY, [*fired, delivery.id][-REMEMBERED_DELIVERIES:])
                yield TriggerEvent({"delivery_id": delivery.id, "landing_dir": self.landing_dir})
                return
            await asyncio.sleep(self.poll_interval)
