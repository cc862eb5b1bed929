"""The Airflow assets and the extract schedule that connect extract runs to audience refreshes.

``dags/cja_extract.py`` takes its schedule from :func:`extract_schedule`: hourly on its own,
or hourly *or* whenever one of the given assets changes, e.g. the landing zone asset with a
watcher that fires on each complete CJA export delivery::

    extract_schedule(landing_asset([AssetWatcher(name="cja_landing_watcher",
                                                 trigger=LandingDeliveryTrigger(...))]))
"""

from __future__ import annotations

from airflow.sdk import Asset, AssetOrTimeSchedule, AssetWatcher, CronTriggerTimetable

from cja_audiences.lake.layout import Lake
from cja_audiences.settings import Settings

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


def watched_assets(settings: Settings) -> list[Asset]:
    """The assets whose watchers start an extract: each complete delivery in the landing
    zone, and, when ``catalog_dataset_id`` is set, each new batch of the dataset behind CJA.
    Trigger kwargs come from settings only, so every parse builds the same watcher."""
    from cja_audiences.airflow.triggers.aep import CatalogBatchTrigger
    from cja_audiences.airflow.triggers.cja import LandingDeliveryTrigger

    landing = LandingDeliveryTrigger(
        landing_dir=str(Lake(settings.home).landing), poll_interval=settings.landing_poll_s
    )
    assets = [landing_asset([AssetWatcher(name="cja_landing_deliveries", trigger=landing)])]
    if settings.catalog_dataset_id:
        batches = CatalogBatchTrigger(
            aep_conn_id=settings.aep_conn_id,
            dataset_id=settings.catalog_dataset_id,
            poll_interval=settings.catalog_poll_s,
        )
        assets.append(
            Asset(
                name="aep_cja_dataset_batches",
                uri=f"cja-audiences://aep/datasets/{settings.catalog_dataset_id}/batches",
                group="cja-audiences",
                watchers=[AssetWatcher(name="aep_catalog_batches", trigger=batches)],
            )
        )
    return assets
