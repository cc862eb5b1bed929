"""Operators for the stages of an audience refresh: each reads context, calls the core.

The work lives in :mod:`cja_audiences.refresh`; these only turn an Airflow context into a
:class:`RefreshRequest`, map outcomes to Airflow states, and return a small summary for XCom.
The core is imported when a task runs, never when a DAG file is parsed.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import date, timedelta
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, Context
from airflow.sdk.exceptions import AirflowFailException, AirflowSkipException

from cja_audiences.settings import get_settings
from cja_audiences.specs.model import spec_by_id

if TYPE_CHECKING:
    from cja_audiences.refresh import AudienceRefresh


def last_complete_day(context: Context) -> date:
    """The day before the run's end (or its start time, for manual and event runs), in UTC."""
    moment = context.get("data_interval_end") or context["dag_run"].run_after
    return moment.date() - timedelta(days=1)


def audience_refresh(audience_id: str, context: Context) -> AudienceRefresh:
    from cja_audiences.refresh import AudienceRefresh, RefreshRequest

    settings = get_settings()
    spec = spec_by_id(settings.audiences_dir, audience_id)
    dag_run = context.get("dag_run")
    run_type = getattr(dag_run, "run_type", None)
    request = RefreshRequest.from_params(
        context["run_id"],
        dict(context["params"]),
        default_as_of=last_complete_day(context),
        run_type=getattr(run_type, "value", run_type),
        requested_by=getattr(dag_run, "triggering_user_name", None),
        dag_id=getattr(dag_run, "dag_id", None),
    )
    return AudienceRefresh(spec, settings, request)


def record_failure(context: Context) -> None:
    """``on_failure_callback`` of audience tasks: run.json names the failed stage and reason."""
    audience_id = getattr(context["task"], "audience_id", None)
    if not isinstance(audience_id, str):
        return
    from cja_audiences.refresh import RunIdTaken

    refresh = audience_refresh(audience_id, context)
    try:
        refresh.claim()
    except RunIdTaken:
        return  # the folder is another DAG's run: record nothing there
    refresh.record_failure(context["ti"].task_id, str(context.get("exception") or "unknown"))
    context["task"].log.error("%s", refresh.summary())


def _line(stage: str, refresh: AudienceRefresh) -> str:
    """The stage's one-line summary for its task log (sizes, counts, verdicts; no paths)."""
    from cja_audiences import refresh as core
    from cja_audiences.lake.runs import read_run_record

    lines = {
        "compute": core.compute_line,
        "diff": core.diff_line,
        "guardrails": core.guardrails_line,
    }
    return lines[stage](read_run_record(refresh.run_dir))


class AudienceStageOperator(BaseOperator):
    """Base for one stage of one audience's refresh; subclasses implement :meth:`run_stage`.

    ``bucket``: for a bucketed audience's mapped compute and diff, the bucket of this task.
    """

    template_fields: Sequence[str] = ("audience_id",)

    def __init__(self, *, audience_id: str, bucket: int | None = None, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.audience_id = audience_id
        self.bucket = bucket

    def execute(self, context: Context) -> dict[str, Any]:
        return self.run_stage(audience_refresh(self.audience_id, context))

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        raise NotImplementedError


class RefreshGateOperator(AudienceStageOperator):
    """Skips the run (and everything after it) when a refresh is not allowed yet."""

    ui_color = "#f0e4ff"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        from cja_audiences.refresh import RunIdTaken

        try:
            verdict = refresh.gate()
        except RunIdTaken as exc:
            raise AirflowFailException(str(exc)) from None  # a retry would refuse it again
        if not verdict["due"]:
            raise AirflowSkipException(verdict["reason"])
        self.log.info("refresh allowed: %s", verdict["reason"])
        return verdict


class AudienceComputeOperator(AudienceStageOperator):
    """Computes the members; a segment given by id is fetched through the CJA connection
    (any Airflow secrets backend, secret masked), not only from the environment."""

    ui_color = "#e4f0ff"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        from cja_audiences.refresh import ReviewOutdated

        segment = refresh.spec.filter.segment
        definition = None
        if segment is not None and segment.id is not None:
            from cja_audiences.airflow.hooks.cja import CJAHook
            from cja_audiences.filters.segment import fetch_definition

            config = CJAHook(cja_conn_id=refresh.settings.cja_conn_id).get_config()
            definition = fetch_definition(config, segment.id)
        try:
            result = refresh.compute(definition=definition, bucket=self.bucket)
        except ReviewOutdated as exc:
            raise AirflowFailException(str(exc)) from None  # a retry would refuse it again
        self.log.info("%s", _line("compute", refresh))
        keys = ("size", "members_path", "window", "elapsed_s", "buckets")
        return {k: result[k] for k in keys if k in result}


class AudienceDiffOperator(AudienceStageOperator):
    """Takes the audience's lease, then diffs; skips the run (with the holder named) when
    another run of the audience is still between diff and commit after ``lease_wait_s``."""

    ui_color = "#e4fff0"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        """Renewals only for streaming audiences: the mode comes from the spec or the AEP
        connection's ``publish_mode``. Another run holding the audience skips this one."""
        from cja_audiences.airflow.hooks.aep import AEPHook
        from cja_audiences.lake.lease import AudienceBusy
        from cja_audiences.publish import publish_mode
        from cja_audiences.refresh import ReviewOutdated

        config = AEPHook(aep_conn_id=refresh.settings.aep_conn_id).get_config()
        try:
            result = refresh.diff(self.bucket, mode=publish_mode(refresh.spec, config))
        except ReviewOutdated as exc:
            raise AirflowFailException(str(exc)) from None  # a retry would refuse it again
        except AudienceBusy as exc:
            raise AirflowSkipException(str(exc)) from None
        self.log.info("%s", _line("diff", refresh))
        return result


class AudienceMergeOperator(AudienceStageOperator):
    """A bucketed audience's buckets become the run's members and diff (guardrails next)."""

    ui_color = "#e4fff0"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        return refresh.merge()


class AudienceGuardrailsOperator(AudienceStageOperator):
    """Fails (without retries) when a guardrail blocks: retrying would block again."""

    ui_color = "#fff4e4"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        from cja_audiences.refresh import GuardrailBlocked

        try:
            report = refresh.check()
        except GuardrailBlocked as exc:
            self.log.error("%s", _line("guardrails", refresh))
            raise AirflowFailException(str(exc)) from None
        self.log.info("%s", _line("guardrails", refresh))
        warnings = [c for c in report["checks"] if c["verdict"] == "warn"]
        return {"blocked": False, "warnings": len(warnings)}


class AudienceCommitOperator(AudienceStageOperator):
    """Moves the audience's current snapshot, then logs the run's summary."""

    ui_color = "#e8ffe4"

    def run_stage(self, refresh: AudienceRefresh) -> dict[str, Any]:
        from cja_audiences.lake.lease import LeaseLost

        try:
            result = refresh.commit()
        except LeaseLost as exc:  # another run owns the audience now: a retry fails again
            raise AirflowFailException(str(exc)) from None
        self.log.info("%s", refresh.summary())
        return result
