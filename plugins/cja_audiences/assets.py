"""The Airflow assets and the extract schedule that connect extract runs to audience refreshes.

``dags/cja_extract.py`` takes its schedule from :func:`extract_schedule`: hourly on its own,
or hourly *or* whenever one of the given assets changes, e.g. the landing zone asset with a
watcher that fires on each complete CJA export delivery::

    extract_schedule(landing_asset([AssetWatcher(name="cja_landing_watcher",
                                                 trigger=LandingDeliveryTrigger(...))]))
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable

# Updated by every successful cja_extract run; audience DAGs refresh when it changes.
CJA_EVENTS = Asset(name="cja_events", uri="cja-audiences://lake/events", group="cja-audiences")

EXTRACT_CRON = "0 * * * *"  # hourly, on the hour (UTC)


def landing_asset(watchers: list[AssetWatcher] | None = None) -> Asset:
    """The landing zone (CJA export deliveries) as an asset, with the given watchers."""
    return Asset(
        name="cja_landing",
        uri="cja-audiences://landing",
        group="cja-audiences",
        watchers=watchers or [],
    )


def extract_schedule(*assets: Asset) -> CronTriggerTimetable | AssetOrTimeSchedule:
    """Hourly, or hourly-or-when-``assets``-change when any are given."""
    hourly = CronTriggerTimetable(EXTRACT_CRON, timezone="UTC")
    return AssetOrTimeSchedule(timetable=hourly, assets=list(assets)) if assets else hourly
