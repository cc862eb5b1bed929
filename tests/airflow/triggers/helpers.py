"""What trigger tests share: the triggerer's asset state store, and running a trigger."""

from __future__ import annotations

import asyncio

from airflow.triggers.base import BaseTrigger, TriggerEvent


class MemoryStateStore:
    """The asset state store's async accessors, kept in a dict (as the triggerer's would be)."""

    def __init__(self) -> None:
        self.values: dict[str, object] = {}

    async def aget(self, key: str, default: object = None) -> object:
        return self.values.get(key, default)

    async def aset(self, key: str, value: object) -> None:
        self.values[key] = value


def first_event(trigger: BaseTrigger, timeout: float = 5.0) -> TriggerEvent:
    """The trigger's first event; TimeoutError when it has none within ``timeout``."""

    async def first() -> TriggerEvent:
        async for event in trigger.run():
            return event
        raise AssertionError("the trigger ended without an event")

    return asyncio.run(asyncio.wait_for(first(), timeout))
