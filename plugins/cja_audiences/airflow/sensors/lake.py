"""The freshness gate: an audience run waits until the lake holds its window's last day."""

from __future__ import annotations

from collections.abc import Sequence
from datetime import timedelta
from typing import Any

from airflow.sdk import BaseSensorOperator, Context
from airflow.sdk.exceptions import AirflowSkipException

from cja_audiences.airflow.operators.audience import audience_refresh
from cja_audiences.airflow.triggers.lake import LakePartitionTrigger
from cja_audiences.lake.freshness import partition_ready
from cja_audiences.lake.layout import Lake


class LakeFreshnessSensor(BaseSensorOperator):
    """Waits (deferred by default, holding no worker slot) for the run's ``as_of`` partition."""

    template_fields: Sequence[str] = ("audience_id",)
    ui_color = "#fffbe4"

    def __init__(self, *, audience_id: str, deferrable: bool = True, **kwargs: Any) -> None:
        kwargs.setdefault("timeout", timedelta(hours=12))
        kwargs.setdefault("poke_interval", 60)
        super().__init__(**kwargs)
        self.audience_id = audience_id
        self.deferrable = deferrable

    def _target(self, context: Context) -> tuple[str, str]:
        refresh = audience_refresh(self.audience_id, context)
        return str(Lake(refresh.settings.home).events), refresh.request.as_of.isoformat()

    def poke(self, context: Context) -> bool:
        events_dir, date = self._target(context)
        self.log.info("waiting for %s/date=%s", events_dir, date)
        return partition_ready(events_dir, date)

    def execute(self, context: Context) -> Any:
        if not self.deferrable:
            return super().execute(context)
        events_dir, date = self._target(context)
        if partition_ready(events_dir, date):
            return {"date": date, "waited": False}
        self.log.info("deferring until %s/date=%s holds data", events_dir, date)
        self.defer(
            trigger=LakePartitionTrigger(
                events_dir=events_dir, date=date, poll_interval=float(self.poke_interval)
            ),
            method_name="execute_complete",
            timeout=timedelta(seconds=self.timeout),
        )

    def execute_complete(self, context: Context, event: dict[str, Any] | None = None) -> Any:
        if not event or event.get("status") != "ready":
            raise AirflowSkipException(f"lake never became fresh: {event}")
        return {"date": event["date"], "waited": True}
