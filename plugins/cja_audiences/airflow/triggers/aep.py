"""Event trigger on AEP Catalog: fires when new successful batches land in the CJA dataset."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from typing import Any

from airflow.sdk import BaseHook
from airflow.triggers.base import BaseEventTrigger, TriggerEvent
from asgiref.sync import sync_to_async

WATERMARK_KEY = "catalog_created_after"


class CatalogBatchTrigger(BaseEventTrigger):
    """Polls Catalog for new batches of ``dataset_id``; the watermark lives in the asset state.

    One event per poll that finds batches, then the watcher restarts with the new watermark,
    so each batch fires once, also across triggerer restarts.
    """

    def __init__(self, *, aep_conn_id: str, dataset_id: str, poll_interval: float = 60.0) -> None:
        super().__init__()
        self.aep_conn_id = aep_conn_id
        self.dataset_id = dataset_id
        self.poll_interval = poll_interval

    def serialize(self) -> tuple[str, dict[str, Any]]:
        return (
            "cja_audiences.airflow.triggers.aep.CatalogBatchTrigger",
            {
                "aep_conn_id": self.aep_conn_id,
                "dataset_id": self.dataset_id,
                "poll_interval": self.poll_interval,
            },
        )

    async def run(self) -> AsyncIterator[TriggerEvent]:
        # Here, not at module level: the extract DAG builds this trigger at parse time.
        from cja_audiences.adobe.auth import AdobeConfig
        from cja_audiences.adobe.catalog import new_batches

        store = self.asset_state_store
        watermark = int(await store.aget(WATERMARK_KEY, 0)) if store else 0
        conn = await sync_to_async(BaseHook.get_connection)(self.aep_conn_id)
        config = AdobeConfig.from_connection(
            conn.host, conn.login, conn.password, conn.extra_dejson
        )
        while True:
            batches = await asyncio.to_thread(new_batches, config, self.dataset_id, watermark)
            if batches:
                newest = int(batches[-1]["created"])
                if store:
                    await store.aset(WATERMARK_KEY, newest)
                yield TriggerEvent(
                    {
                        "dataset_id": self.dataset_id,
                        "batches": [b["id"] for b in batches],
                        "created_after": watermark,
                        "watermark": newest,
                    }
                )
                return
            await asyncio.sleep(self.poll_interval)
