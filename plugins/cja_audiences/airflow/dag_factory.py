"""Builds one Airflow DAG per audience spec, and the DAG that refreshes a chosen set at once.

DAG files call these; all wiring lives here so every audience DAG looks the same. Parsing
stays cheap: specs are YAML + pydantic, nothing here touches the lake or the network.
"""

from __future__ import annotations

from datetime import UTC, date, datetime, time, timedelta
from itertools import pairwise
from pathlib import Path
from typing import Any

from airflow.sdk import (
    DAG,
    Asset,
    AssetOrTimeSchedule,
    CronTriggerTimetable,
    MultipleCronTriggerTimetable,
    Param,
    task,
    task_group,
)

from cja_audiences import guardrails
from cja_audiences.airflow.operators.aep import (
    AEPPreflightOperator,
    AEPProfilePublishOperator,
    AEPReconcileOperator,
    AEPRequestedReconcileOperator,
)
from cja_audiences.airflow.operators.audience import (
    AudienceCommitOperator,
    AudienceComputeOperator,
    AudienceDiffOperator,
    AudienceGuardrailsOperator,
    AudienceMergeOperator,
    RefreshGateOperator,
    record_failure,
)
from cja_audiences.airflow.sensors.lake import LakeFreshnessSensor
from cja_audiences.lake.layout import AUDIENCE_ID
from cja_audiences.settings import Settings
from cja_audiences.specs.calendar import schedule_crons
from cja_audiences.specs.model import AudienceSpec, SpecError, load_specs, spec_paths

DAG_PREFIX = "cja_audience__"
RECONCILE_DAG = "cja_audiences_reconcile"
PUBLISH_POOL = "aep_publish"
DEFAULT_ARGS = {
    "owner": "cja-audiences",
    "retries": 1,
    "retry_delay": timedelta(minutes=1),
    "on_failure_callback": record_failure,
}


class InvalidSpecs(Exception):
    """Raised by the errors DAG file so the UI lists every unusable spec in one import error."""

    def __init__(self, errors: list[SpecError]) -> None:
        lines = "\n".join(f"- {error}" for error in errors)
        super().__init__(f"{len(errors)} audience spec(s) cannot be scheduled:\n{lines}")


def load_schedulable_specs(settings: Settings) -> tuple[list[AudienceSpec], list[SpecError]]:
    """Specs that load and pass the spec-level guardrails; the rest become errors.

    Both DAG files call this; within one process (a DagBag over dags/, `airflow dags test`)
    the folder is read and checked once, until a spec file or the day changes.
    """
    key = (settings.model_dump_json(), _folder_state(settings.audiences_dir), date.today())
    if key not in _SCHEDULABLE:
        _SCHEDULABLE.clear()
        _SCHEDULABLE[key] = _schedulable(settings)
    good, errors = _SCHEDULABLE[key]
    return list(good), list(errors)


_SCHEDULABLE: dict[tuple, tuple[list[AudienceSpec], list[SpecError]]] = {}


def _folder_state(folder: Path) -> tuple:
    return tuple((p.name, p.stat().st_mtime_ns, p.stat().st_size) for p in spec_paths(folder))


def _schedulable(settings: Settings) -> tuple[list[AudienceSpec], list[SpecError]]:
    specs, errors = load_specs(settings.audiences_dir)
    reports = guardrails.check_specs(specs, settings)
    good: list[AudienceSpec] = []
    for spec in specs:
        if reports[spec.id].blocked:
            errors.append(SpecError(spec.source_path, reports[spec.id].message))
        else:
            good.append(spec)
    return good, errors


def timetable_for(spec: AudienceSpec) -> CronTriggerTimetable | MultipleCronTriggerTimetable | None:
    """The refresh calendar's period starts as a timetable (specs.calendar.schedule_crons)."""
    crons = schedule_crons(spec)
    if not crons:
        return None  # one_time: manual runs only
    if len(crons) == 1:
        return CronTriggerTimetable(crons[0], timezone="UTC")
    return MultipleCronTriggerTimetable(*crons, timezone="UTC")


def schedule_for(spec: AudienceSpec, new_data: Asset | None) -> Any:
    """The refresh timetable, or-ed with new data landing (the refresh gate still applies)."""
    timetable = timetable_for(spec)
    if timetable is None or new_data is None:
        return timetable
    return AssetOrTimeSchedule(timetable=timetable, assets=[new_data])


def refresh_params(spec: AudienceSpec | None = None) -> dict[str, Param]:
    """The trigger form: every field validated by the form before a run is created."""
    default_lookback = spec.refresh.lookback_days if spec else None
    return {
        "publish": Param(
            False,
            type="boolean",
            title="Publish to AEP",
            section="Run mode",
            description="A run you trigger is a dry run you can review in the audiences "
            "dashboard unless this is on. Scheduled and new-data runs always publish.",
        ),
        "dry_run": Param(
            False,
            type="boolean",
            title="Dry run",
            section="Run mode",
            description="Compute, check and diff; report what would be sent; "
            "send and commit nothing (also for scheduled and new-data runs).",
        ),
        "force": Param(
            False,
            type="boolean",
            title="Force",
            section="Run mode",
            description="Refresh even if the audience's frequency does not allow it "
            "yet (the refresh-frequency guard).",
        ),
        "full_republish": Param(
            False,
            type="boolean",
            title="Full republish",
            section="Run mode",
            description="Send every member as realized, not only changes "
            "(for a new sandbox or a repair).",
        ),
        "lookback_days": Param(
            default_lookback,
            type=["null", "integer"],
            minimum=1,
            maximum=90,
            title="Lookback days",
            section="Window",
            description="Days of history evaluated (1-90). Empty: the spec's.",
        ),
        "as_of": Param(
            None,
            type=["null", "string"],
            format="date",
            title="As of",
            section="Window",
            description="Last day of the window (YYYY-MM-DD). Empty: yesterday.",
        ),
        "approve_run": Param(
            None,
            type=["null", "string"],
            title="Approve reviewed run",
            section="Review (set by the audiences dashboard)",
            description="Publish exactly this reviewed run's entered and exited members; "
            "refused if another run was committed since.",
        ),
        "override": Param(
            [],
            type="array",
            items={"type": "string"},
            title="Override guardrails",
            section="Review (set by the audiences dashboard)",
            description="Blocking checks to override for this run only (only those the spec "
            "lists in guardrails.overridable).",
        ),
    }


def doc_md(spec: AudienceSpec) -> str:
    f = spec.filter
    how = {
        "template": f"Jinja template `{f.template}`",
        "rules": "declarative rules",
        "segment": f"CJA segment definition `{f.segment}`",
    }[f.kind]
    window = (
        f"{spec.refresh.lookback_days}-day lookback"
        if spec.refresh.lookback_days
        else f"{spec.refresh.date_range.start} to {spec.refresh.date_range.end}"
    )
    return "\n".join(
        [
            f"# {spec.name}",
            spec.description or "",
            "",
            f"* **Audience id**: `{spec.id}` (spec: `{spec.source_path}`)",
            f"* **Filter**: {how}",
            f"* **Identity**: {spec.identity.namespace}",
            f"* **Refresh**: {spec.refresh.frequency}, {window}, expires {spec.refresh.expires or '-'}",
            f"* **Guardrails**: {spec.guardrails.model_dump(exclude_none=True) or 'defaults'}",
            f"* **Dashboard**: [size history, runs, review and approve]"
            f"(/cja-audiences/audiences/{spec.id})",
            f"* **Rendered SQL**: [/cja-audiences/audiences/{spec.id}/sql]"
            f"(/cja-audiences/audiences/{spec.id}/sql) or `python -m cja_audiences render {spec.id}`",
            "",
            "A run you trigger is a **dry run** unless you switch on *Publish to AEP*: review "
            "who would enter and exit in the dashboard, then approve it there.",
        ]
    )


def add_refresh_tasks(audience_id: Any, aep_conn_id: str, buckets: int | None = None) -> Any:
    """gate -> preflight -> freshness -> compute -> diff -> guardrails -> publish -> commit ->
    reconcile; returns gate.

    With ``buckets`` compute, diff and publish are mapped over the person buckets (spread
    over the workers) and a merge between diff and guardrails makes the whole audience the
    guardrails' input. Without it (also in ``cja_audiences_all``, where the audience is only
    known at run time) a bucketed audience runs its buckets in turn inside each task.
    """
    gate = RefreshGateOperator(task_id="refresh_gate", audience_id=audience_id)
    preflight = AEPPreflightOperator(
        task_id="preflight", audience_id=audience_id, aep_conn_id=aep_conn_id, retries=0
    )
    fresh = LakeFreshnessSensor(task_id="wait_for_data", audience_id=audience_id)
    checked = AudienceGuardrailsOperator(task_id="guardrails", audience_id=audience_id, retries=0)
    publish = {
        "task_id": "publish",
        "audience_id": audience_id,
        "aep_conn_id": aep_conn_id,
        "pool": PUBLISH_POOL,
        "retries": 3,
        "retry_delay": timedelta(seconds=30),
        "retry_exponential_backoff": True,
    }
    committed = AudienceCommitOperator(task_id="commit", audience_id=audience_id)
    if buckets:
        each = {"bucket": list(range(buckets))}
        computed = AudienceComputeOperator.partial(task_id="compute", audience_id=audience_id)
        diffed = AudienceDiffOperator.partial(task_id="diff", audience_id=audience_id)
        merged = AudienceMergeOperator(task_id="merge", audience_id=audience_id)
        published = AEPProfilePublishOperator.partial(**publish).expand(**each)
        chain = [computed.expand(**each), diffed.expand(**each), merged]
    else:
        chain = [
            AudienceComputeOperator(task_id="compute", audience_id=audience_id),
            AudienceDiffOperator(task_id="diff", audience_id=audience_id),
        ]
        published = AEPProfilePublishOperator(**publish)
    reconciled = AEPReconcileOperator(
        task_id="reconcile", audience_id=audience_id, aep_conn_id=aep_conn_id
    )
    stages = [gate, preflight, fresh, *chain, checked, published, committed, reconciled]
    for upstream, downstream in pairwise(stages):
        upstream >> downstream
    return gate


def build_audience_dag(spec: AudienceSpec, settings: Settings, new_data: Asset | None) -> DAG:
    expires = spec.refresh.expires
    with DAG(
        dag_id=f"{DAG_PREFIX}{spec.id}",
        dag_display_name=f"Audience: {spec.name}",
        description=(spec.description or spec.name)[:200],
        schedule=schedule_for(spec, new_data),
        # No start_date: Airflow would create empty manual runs before it (the UI form's
        # logical date is now); the refresh gate skips scheduled runs before refresh.start.
        end_date=datetime.combine(expires, time.max, tzinfo=UTC) if expires else None,
        catchup=False,
        max_active_runs=1,  # runs of one audience diff against each other: never overlap
        tags=["cja-audience", spec.refresh.frequency, *spec.tags],
        default_args=DEFAULT_ARGS,
        params=refresh_params(spec),
        doc_md=doc_md(spec),
    ) as dag:
        add_refresh_tasks(spec.id, settings.aep_conn_id, spec.refresh.buckets)
    return dag


def build_all_dag(specs: list[AudienceSpec], settings: Settings) -> DAG:
    """Refreshes a chosen set of audiences at once, one mapped task group per audience."""
    ids = [s.id for s in specs]
    params = refresh_params()
    params["audiences"] = Param(
        ids,
        type="array",
        items={"type": "string", "enum": ids or [""]},
        title="Audiences",
        section="Audiences",
        uniqueItems=True,
        description="Which audiences to refresh (default: all).",
    )
    with DAG(
        dag_id="cja_audiences_all",
        dag_display_name="Audiences: refresh a set",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["cja-audience", "manual"],
        default_args=DEFAULT_ARGS,
        params=params,
        doc_md="Refresh several audiences in one run (one mapped group per audience).",
    ) as dag:

        @task
        def chosen_audiences(params: dict[str, Any] | None = None) -> list[str]:
            chosen = list((params or {}).get("audiences") or [])
            unknown = sorted(set(chosen) - set(ids))
            if unknown:
                raise ValueError(f"unknown audience ids {unknown}; known: {ids}")
            return chosen

        @task_group(group_id="refresh")
        def refresh(audience_id: str) -> None:
            add_refresh_tasks(audience_id, settings.aep_conn_id)

        refresh.expand(audience_id=chosen_audiences())
    return dag


def build_reconcile_dag(specs: list[AudienceSpec], settings: Settings) -> DAG:
    """Reads one audience's membership back from AEP on request (the dashboard's Reconcile
    button triggers it): a worker does the minutes of rate-limited lookups, with the AEP
    connection, a task log and a retry, rather than an HTTP request in the API server."""
    ids = sorted(s.id for s in specs)
    with DAG(
        dag_id=RECONCILE_DAG,
        dag_display_name="Audiences: reconcile with AEP",
        schedule=None,
        start_date=datetime(2026, 1, 1, tzinfo=UTC),
        catchup=False,
        tags=["cja-audience", "manual"],
        default_args={"owner": "cja-audiences", "retries": 1, "retry_delay": timedelta(minutes=1)},
        params={
            "audience_id": Param(  # not an enum: a published audience whose spec-level
                ids[0] if ids else "",  # guardrails now block it is still reconcilable
                type="string",
                pattern=f"^{AUDIENCE_ID.pattern}$",
                examples=ids,
                title="Audience",
                description="The audience whose committed snapshot is read back from AEP.",
            ),
            "mode": Param(
                "sample",
                type="string",
                enum=["sample", "full"],
                title="Mode",
                description="sample: a random sample of members and recent exits "
                "(CJA_AUDIENCES_RECONCILE_SAMPLE); full: every one of them.",
            ),
            "repair": Param(
                False,
                type="boolean",
                title="Repair",
                description="Send exactly the corrections for the drift found, then read back.",
            ),
        },
        doc_md="Reconcile one audience with AEP: drift is recorded in the committed run's "
        "run.json and shown on its dashboard page, which starts these runs.",
    ) as dag:
        AEPRequestedReconcileOperator(task_id="reconcile", aep_conn_id=settings.aep_conn_id)
    return dag
