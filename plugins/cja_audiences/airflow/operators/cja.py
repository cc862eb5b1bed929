"""The extract task: lands one source in the lake and returns a small summary for XCom.

Sources: ``synthetic`` (the embedded demo data), ``export`` (CJA full-table export
deliveries in the landing folder), ``aep`` (AEP dataset exports of XDM ExperienceEvents) and
``reporting`` (the CJA Reporting API through :class:`CJAHook`). Arguments left as None come
from the DAG run's params, so one operator serves scheduled, manual and event-started runs.

Nothing to extract skips the task, so the ``cja_events`` outlet only fires when the lake
changed (its event's extra names the dates touched). A delivery with too many bad rows, or
a file that cannot be read (truncated gzip, not UTF-8, a line over 8 MiB), moves to
``landing/rejected/<delivery id>/`` with ``REJECTED.txt`` saying why; the deliveries after it
still land, then the task fails without retries naming every rejected one.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import UTC, date, datetime, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cja_audiences.airflow.assets import CJA_EVENTS
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.sessions import SessionRules
from cja_audiences.lake.storage import LakePath, atomic_path, lake_path, move
from cja_audiences.settings import get_settings

if TYPE_CHECKING:  # the extract core is imported when a task runs, not when the DAG parses
    from cja_audiences.extract.exports import Delivery

SOURCES = ("synthetic", "export", "aep", "reporting")
REJECTED_REASON = "REJECTED.txt"  # in landing/rejected/<delivery id>/: why it was set aside
CATALOG_LOOKBACK = timedelta(days=1)
DEFAULT_SYNTHETIC = {"persons": 10_000, "days": 30, "seed": 42}
SYNTHETIC_OPTIONS = (*DEFAULT_SYNTHETIC, "events_per_person")


class CJAExtractOperator(BaseOperator):
    """Extract one source into the lake; returns {source, rows, partitions, quarantined, ...}.

    :param source: one of synthetic, export, aep, reporting (templated; default: what the
        triggering watcher event implies: a delivery -> export, new AEP batches -> reporting;
        else the run's params).
    :param start: first day / instant of the range, ISO 8601 (templated; default: params,
        else the hour before the run for ``reporting`` (from yesterday 00:00 UTC after new
        AEP batches) and 30 days to today for synthetic).
    :param end: end of the range, exclusive for instants, inclusive for dates (templated).
    :param delivery_id: the export delivery to land (templated; default: from the triggering
        asset event, else every complete delivery in the landing folder).
    :param path: file or folder of an AEP dataset export (default ``landing/aep``).
    :param mode: merge (default) or replace; ``reporting`` over whole days replaces.
    :param buckets: person buckets per partition (None: one file per date).
    :param cja_conn_id: the CJA connection for ``reporting`` (templated).
    :param column_mapping: export column labels by schema field (templated, a dict).
    :param options: source-specific extras, e.g. {"persons": 1000, "seed": 7} for synthetic,
        {"granularity": "hour", "page_limit": 500} for reporting (templated, a dict).
    """

    template_fields: Sequence[str] = (
        "source",
        "start",
        "end",
        "delivery_id",
        "path",
        "mode",
        "cja_conn_id",
        "column_mapping",
        "options",
    )
    ui_color = "#e4f0ff"

    def __init__(
        self,
        *,
        source: str | None = None,
        start: str | None = None,
        end: str | None = None,
        delivery_id: str | None = None,
        path: str | None = None,
        mode: str | None = None,
        buckets: int | None = None,
        cja_conn_id: str | None = None,
        column_mapping: dict[str, str] | None = None,
        options: dict[str, Any] | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.source = source
        self.start = start
        self.end = end
        self.delivery_id = delivery_id
        self.path = path
        self.mode = mode
        self.buckets = buckets
        self.cja_conn_id = cja_conn_id
        self.column_mapping = column_mapping
        self.options = options

    def _arg(self, context: Context, name: str) -> Any:
        value = getattr(self, name)
        if value in (None, ""):
            value = (context.get("params") or {}).get(name)
        return None if value in ("", "None") else value

    def execute(self, context: Context) -> dict[str, Any]:
        from cja_audiences.extract.writer import ExtractRejected

        settings = get_settings()
        lake = Lake(settings.home)
        source = self.source or _triggered_source(context) or self._arg(context, "source")
        if source not in SOURCES:
            raise AirflowFailException(f"source {source!r}: use one of {', '.join(SOURCES)}")
        common = {
            "run_id": str(context.get("run_id") or "manual"),
            "max_bad_row_share": settings.max_bad_row_share,
            "buckets": self.buckets,
            "sessions": SessionRules.from_settings(settings),
        }
        mode = self._arg(context, "mode")
        if mode:
            common["mode"] = mode
        try:
            summary = getattr(self, f"_extract_{source}")(context, lake, common)
        except ExtractRejected as exc:
            raise AirflowFailException(str(exc)) from exc
        self._announce(context, summary)
        return summary

    # -- sources ---------------------------------------------------------------------------

    def _extract_synthetic(self, context: Context, lake: Lake, common: dict) -> dict:
        from cja_audiences.extract.synthetic import generate_synthetic

        given = self._arg(context, "options") or {}
        _refuse_for_synthetic(given, common)
        opts = {**DEFAULT_SYNTHETIC, **given}
        end = _date(self._arg(context, "end")) or _run_moment(context).date()
        start = _date(self._arg(context, "start"))
        days = (end - start).days + 1 if start else int(opts["days"])
        return generate_synthetic(
            lake,
            persons=int(opts["persons"]),
            days=days,
            end=end,
            seed=int(opts["seed"]),
            events_per_person=opts.get("events_per_person"),
            sessions=common["sessions"],
        )

    def _extract_export(self, context: Context, lake: Lake, common: dict) -> dict:
        from cja_audiences.extract.exports import DeliveryUnreadable, ExportSource
        from cja_audiences.extract.source import run_extract
        from cja_audiences.extract.writer import ExtractRejected

        deliveries = self._deliveries(context, lake)
        if not deliveries:
            raise AirflowSkipException(f"no complete export delivery in {lake.landing}")
        mapping = self._arg(context, "column_mapping")
        landed, rejected = [], []
        for delivery in deliveries:
            source = ExportSource(delivery, **({"column_mapping": mapping} if mapping else {}))
            try:
                summary = run_extract(
                    source, lake, **{**common, "run_id": f"{common['run_id']}-{delivery.id}"}
                )
            except (ExtractRejected, DeliveryUnreadable) as exc:
                # set aside, so it neither blocks the deliveries after it nor comes back
                folder = lake.landing / "rejected" / delivery.id
                _move(delivery, folder)
                with atomic_path(folder / REJECTED_REASON) as reason:
                    reason.write_text(f"{exc}\n")
                self.log.error("delivery %s rejected (files in %s): %s", delivery.id, folder, exc)
                rejected.append(f"{delivery.id}: {exc}")
                continue
            _move(delivery, lake.landing / "processed" / delivery.id)
            landed.append(summary)
        if rejected:
            raise AirflowFailException(
                f"{len(rejected)} of {len(deliveries)} deliveries rejected, moved to "
                f"{lake.landing / 'rejected'} (the others landed):\n" + "\n".join(rejected)
            )
        return _combine("export", landed)

    def _deliveries(self, context: Context, lake: Lake) -> list[Delivery]:
        from cja_audiences.extract.exports import complete_deliveries, find_delivery

        wanted = self._arg(context, "delivery_id")
        ids = [wanted] if wanted else _triggered_delivery_ids(context)
        if ids:
            return [find_delivery(lake.landing, delivery_id) for delivery_id in ids]
        return complete_deliveries(lake.landing)

    def _extract_aep(self, context: Context, lake: Lake, common: dict) -> dict:
        from cja_audiences.extract.aep import AEPExportSource, dataset_files
        from cja_audiences.extract.source import run_extract

        path = lake_path(self._arg(context, "path") or lake.landing / "aep")
        files = [path] if path.is_file() else dataset_files(path)
        if not files:
            raise AirflowSkipException(f"no XDM JSON-lines files under {path}")
        options = self._arg(context, "options") or {}
        return run_extract(AEPExportSource(files, **options), lake, **common)

    def _extract_reporting(self, context: Context, lake: Lake, common: dict) -> dict:
        from cja_audiences.airflow.hooks.cja import CJAHook
        from cja_audiences.extract.reporting import extract_reporting

        options = dict(self._arg(context, "options") or {})
        end = _instant(self._arg(context, "end"), end=True) or _hour(_run_moment(context))
        start = _instant(self._arg(context, "start")) or _default_start(context, end)
        hook = CJAHook(cja_conn_id=self._arg(context, "cja_conn_id") or get_settings().cja_conn_id)
        source = hook.reporting_source(
            start=start,
            end=end,
            checkpoint_dir=lake.landing / ".cja-reports",
            granularity=options.pop(
                "granularity", "day" if end - start >= timedelta(days=1) else "hour"
            ),
            **options,
        )
        return extract_reporting(source, lake, **common)

    def _announce(self, context: Context, summary: dict[str, Any]) -> None:
        """Attach what changed to the ``cja_events`` asset event (when it is an outlet)."""
        outlet_events = context.get("outlet_events")
        if outlet_events is None or CJA_EVENTS not in [*self.outlets]:
            return
        outlet_events[CJA_EVENTS].extra = {
            "source": summary.get("source"),
            "rows": summary.get("rows"),
            "dates": sorted(summary.get("partitions", {})),
        }


def _combine(source: str, summaries: list[dict[str, Any]]) -> dict[str, Any]:
    partitions: dict[str, int] = {}
    for summary in summaries:
        for day, rows in summary["partitions"].items():
            partitions[day] = partitions.get(day, 0) + rows
    return {
        "source": source,
        "rows": sum(s["rows"] for s in summaries),
        "partitions": dict(sorted(partitions.items())),
        "quarantined": sum(s["quarantined"] for s in summaries),
        "elapsed_s": round(sum(s["elapsed_s"] for s in summaries), 3),
        "deliveries": [
            {k: s[k] for k in ("rows", "quarantined", "quarantine_path")}
            | {"id": s["delivery"]["id"]}
            for s in summaries
        ],
    }


def _payloads(context: Context, key: str) -> list[Any]:
    """``payload[key]`` of each watcher event that started this run (asset event extras)."""
    found = []
    for events in (context.get("triggering_asset_events") or {}).values():
        for event in events:
            payload = (getattr(event, "extra", None) or {}).get("payload") or {}
            if payload.get(key):
                found.append(payload[key])
    return found


def _triggered_delivery_ids(context: Context) -> list[str]:
    """Delivery ids from the landing-zone watcher's events."""
    return _payloads(context, "delivery_id")


def _triggered_source(context: Context) -> str | None:
    """The source a watcher event implies: a delivery -> export, new AEP batches of the
    dataset behind CJA -> reporting (the data is queryable in CJA)."""
    if _payloads(context, "delivery_id"):
        return "export"
    if _payloads(context, "batches"):
        return "reporting"
    return None


def _refuse_for_synthetic(options: dict[str, Any], common: dict[str, Any]) -> None:
    """Synthetic data is generated valid and written whole per date (the same seed gives the
    same lake), so merge mode, person buckets and unknown options would be silently ignored:
    refuse them instead. (Nothing is ever quarantined, so the bad-row share never applies.)"""
    unknown = sorted(set(options) - set(SYNTHETIC_OPTIONS))
    if unknown:
        raise AirflowFailException(
            f"options {unknown} do not apply to source synthetic; allowed: "
            f"{', '.join(SYNTHETIC_OPTIONS)}"
        )
    if common.get("mode", "replace") != "replace":
        raise AirflowFailException(
            f"mode={common['mode']}: source synthetic always replaces the dates it generates; "
            "leave mode empty or set replace"
        )
    if common.get("buckets"):
        raise AirflowFailException(
            f"buckets={common['buckets']}: source synthetic writes one file per date; "
            "leave buckets unset"
        )


def _move(delivery: Delivery, target: LakePath) -> None:
    """Claim a delivery's files so neither the trigger nor the next hourly run sees them again."""
    for path in (*delivery.files, *([delivery.manifest] if delivery.manifest else [])):
        move(path, target / path.name)


def _run_moment(context: Context) -> datetime:
    for key in ("logical_date", "data_interval_end"):
        if context.get(key):
            return context[key].astimezone(UTC)
    dag_run = context.get("dag_run")
    run_after = getattr(dag_run, "run_after", None)
    return run_after.astimezone(UTC) if run_after else datetime.now(UTC)


def _hour(moment: datetime) -> datetime:
    return moment.replace(minute=0, second=0, microsecond=0)


def _default_start(context: Context, end: datetime) -> datetime:
    """The hour before ``end``; after new AEP batches (which may hold any recent time),
    from the start of the previous UTC day."""
    if not _payloads(context, "batches"):
        return end - timedelta(hours=1)
    return datetime.combine((end - CATALOG_LOOKBACK).date(), datetime.min.time(), tzinfo=UTC)


def _date(value: Any) -> date | None:
    if value in (None, ""):
        return None
    if isinstance(value, datetime):
        return value.date()
    if isinstance(value, date):
        return value
    return date.fromisoformat(str(value)[:10])


def _instant(value: Any, *, end: bool = False) -> datetime | None:
    """An ISO date or date-time as a UTC instant; a date as ``end`` means the day after it."""
    if value in (None, ""):
        return None
    text = str(value)
    if len(text) == 10:
        day = datetime.combine(date.fromisoformat(text), datetime.min.time(), tzinfo=UTC)
        return day + timedelta(days=1) if end else day
    moment = datetime.fromisoformat(text)
    return moment.replace(tzinfo=UTC) if moment.tzinfo is None else moment.astimezone(UTC)
