"""cja_extract: land CJA data in the Parquet lake hourly, on new data, or on demand.

New data = a complete CJA export delivery in the landing zone, or (when
CJA_AUDIENCES_CATALOG_DATASET is set) a new AEP batch of the dataset behind CJA; each fires
once, remembered in the asset state. Emits ``cja_events``, which audience DAGs follow.

Wiring only. The trigger form picks the source and the date range; everything else lives in
CJAExtractOperator and the extract core (cja_audiences.extract).
"""

from __future__ import annotations

from datetime import datetime, timedelta

from airflow.sdk import DAG, Param

from cja_audiences.airflow.assets import CJA_EVENTS, extract_schedule, watched_assets
from cja_audiences.airflow.operators.cja import SOURCES, CJAExtractOperator
from cja_audiences.settings import get_settings

with DAG(
    dag_id="cja_extract",
    description="Extract CJA data (exports, AEP dataset exports, Reporting API, synthetic) "
    "into the lake",
    schedule=extract_schedule(*watched_assets(get_settings())),
    start_date=datetime(2026, 1, 1),
    catchup=False,
    max_active_runs=1,
    tags=["cja-audiences", "extract"],
    default_args={"owner": "cja-audiences", "retries": 2, "retry_delay": timedelta(minutes=2)},
    params={
        "source": Param(
            "export",
            enum=list(SOURCES),
            title="Source",
            description_md="`export`: complete CJA export deliveries in the landing folder; "
            "`aep`: XDM dataset export files; `reporting`: the CJA Reporting API; "
            "`synthetic`: demo data.",
        ),
        "start": Param(
            None,
            type=["null", "string"],
            format="date",
            title="Start date (UTC)",
            description="Empty: the hour before the run (reporting), 30 days (synthetic).",
        ),
        "end": Param(
            None,
            type=["null", "string"],
            format="date",
            title="End date (UTC, inclusive)",
            description="Empty: the run's hour (reporting) or today (synthetic).",
        ),
        "delivery_id": Param(
            None,
            type=["null", "string"],
            title="Export delivery id",
            description="Empty: every complete delivery (or the one that triggered the run).",
        ),
        "mode": Param(
            None,
            type=["null", "string"],
            enum=[None, "merge", "replace"],
            title="Partition mode",
            description="merge keeps rows already in a date and adds/updates; replace makes "
            "this extract the whole date. Empty: merge (reporting over whole days: replace).",
        ),
        "options": Param(
            {},
            type="object",
            title="Source options",
            description='e.g. {"persons": 1000, "seed": 7} (synthetic), '
            '{"granularity": "hour"} (reporting)',
        ),
    },
) as dag:
    CJAExtractOperator(task_id="extract", outlets=[CJA_EVENTS])
