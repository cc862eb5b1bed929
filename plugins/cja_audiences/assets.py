"""The Airflow assets that connect extract runs to audience refreshes."""

from __future__ import annotations

from airflow.sdk import Asset

# Updated by every successful cja_extract run; audience DAGs refresh when it changes.
CJA_EVENTS = Asset(name="cja_events", uri="cja-audiences://lake/events", group="cja-audiences")
