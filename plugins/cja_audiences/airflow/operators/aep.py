"""The publish task: sends a run's membership changes to AEP through :class:`AEPHook`.

By default it publishes the current DAG run's folder (as the other stage operators do);
``run_dir`` points it at any run folder instead. A task retry resumes from the run's ledger.
The hook and the publishing core are imported in ``execute``: DAG parsing loads neither.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from airflow.sdk import BaseOperator, BaseOperatorLink, Context
from airflow.sdk.exceptions import AirflowFailException

from cja_audiences.lake.runs import read_run_record
from cja_audiences.lake.storage import lake_path
from cja_audiences.settings import get_settings
from cja_audiences.specs.model import spec_by_id

if TYPE_CHECKING:
    from cja_audiences.publish.streaming import PublishOptions

DEFAULT_AEP_CONN_ID = "aep_default"  # AEPHook.default_conn_name


class AEPAudienceLink(BaseOperatorLink):
    """Opens the published audience in the AEP UI (computed on the worker after execute)."""

    name = "AEP audience"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        return getattr(operator, "audience_url", None) or ""


class AudienceDashboardLink(BaseOperatorLink):
    """Opens this run's page in the audiences dashboard (review, guardrails, dead letters)."""

    name = "Audience dashboard"

    def get_link(self, operator: BaseOperator, *, ti_key: Any) -> str:
        from cja_audiences.lake.layout import safe_name

        audience = getattr(operator, "audience_id", None)
        if not isinstance(audience, str):  # mapped over audiences: the overview
            return "/cja-audiences/"
        return f"/cja-audiences/audiences/{audience}/runs/{safe_name(ti_key.run_id)}"


class AEPProfilePublishOperator(BaseOperator):
    """Publish one audience run to AEP; returns the publish summary (small, for XCom).

    :param audience_id: the spec id (templated).
    :param aep_conn_id: the AEP connection (templated).
    :param run_dir: run folder to publish; default: this DAG run's folder (templated).
    :param full_republish: send the whole membership as realized; default: the run's
        ``full_republish`` param (templated).
    :param dry_run: encode and check everything, send nothing; default: the run's param.
    :param decommission: send every member of the last committed run as exited and mark
        the AEP audience inactive (it is never deleted).
    :param chunk_size: records per ledger chunk (resume granularity).
    :param max_dead_letter_share: fail when more than this share of records is refused.
    :param bucket: for a bucketed audience, the one bucket this (mapped) task publishes;
        None publishes every bucket in turn.
    """

    template_fields: Sequence[str] = (
        "audience_id",
        "aep_conn_id",
        "run_dir",
        "full_republish",
        "dry_run",
        "decommission",
    )
    operator_extra_links = (AEPAudienceLink(), AudienceDashboardLink())
    ui_color = "#ffe4e4"

    def __init__(
        self,
        *,
        audience_id: str,
        aep_conn_id: str = DEFAULT_AEP_CONN_ID,
        run_dir: str | None = None,
        full_republish: bool | str | None = None,
        dry_run: bool | str | None = None,
        decommission: bool | str = False,
        chunk_size: int | None = None,
        max_dead_letter_share: float | None = None,
        bucket: int | None = None,
        **kwargs: Any,
    ) -> None:
        super().__init__(**kwargs)
        self.bucket = bucket
        self.audience_id = audience_id
        self.aep_conn_id = aep_conn_id
        self.run_dir = run_dir
        self.full_republish = full_republish
        self.dry_run = dry_run
        self.decommission = decommission
        self.chunk_size = chunk_size
        self.max_dead_letter_share = max_dead_letter_share
        self.audience_url: str | None = None

    def execute(self, context: Context) -> dict[str, Any]:
        from cja_audiences.adobe.audiences import RegistrationRefused
        from cja_audiences.adobe.auth import MissingAudienceNamespace
        from cja_audiences.airflow.hooks.aep import AEPHook
        from cja_audiences.lake.lease import AudienceBusy, LeaseLost
        from cja_audiences.publish import publish_mode
        from cja_audiences.publish.streaming import DeadLetterThresholdExceeded
        from cja_audiences.refresh import publish_line, summarize

        spec, run_dirs, full_republish, dry_run = self._target(context)
        hook = AEPHook(aep_conn_id=self.aep_conn_id)
        if spec.refresh.buckets and publish_mode(spec, hook.get_config()) != "streaming":
            raise AirflowFailException(
                f"audience {spec.id} is bucketed (refresh.buckets) but its connection publishes "
                "external audiences; buckets publish as streaming records: set publish.mode: "
                "streaming in the spec, or drop refresh.buckets"
            )
        summary: dict[str, Any] = {}
        for run_dir in run_dirs:  # one folder, or a bucketed audience's buckets
            try:
                if _flag(self.decommission):
                    summary = hook.decommission(
                        spec, run_dir, dry_run=dry_run, options=self._options()
                    )
                else:
                    summary = hook.publish(
                        spec,
                        run_dir,
                        full_republish=full_republish,
                        dry_run=dry_run,
                        options=self._options(),
                    )
            except (
                DeadLetterThresholdExceeded,
                RegistrationRefused,
                MissingAudienceNamespace,
                LeaseLost,
                AudienceBusy,
            ) as exc:
                raise AirflowFailException(str(exc)) from None  # a retry would fail the same way
            if summary.get("publish_mode") != "external_audience":  # one file, one run
                self._log_sends(spec.id, run_dir.name, summary)
            self.log.info("%s", publish_line({"publish": summary}))
            self.log.info("%s", summarize(read_run_record(run_dir)))
        self.audience_url = (summary.get("audience") or {}).get("url")
        return summary

    def _log_sends(self, audience_id: str, run: str, summary: dict[str, Any]) -> None:
        self.log.info(
            "audience %s (%s): %s of %s records acknowledged this run (by kind: %s), "
            "%s dead-lettered, %s requests, %s records/s",
            audience_id,
            run,
            summary.get("acknowledged", 0),
            summary.get("records"),
            summary.get("by_kind"),
            summary.get("dead_lettered", 0),
            summary.get("requests"),
            summary.get("records_per_s"),
        )

    def _target(self, context: Context) -> tuple[Any, list[Any], bool, bool]:
        """(spec, run folders, full_republish, dry_run) from arguments or the DAG run."""
        if self.run_dir:
            spec = spec_by_id(get_settings().audiences_dir, self.audience_id)
            return spec, [lake_path(self.run_dir)], _flag(self.full_republish), _flag(self.dry_run)
        from cja_audiences.airflow.operators.audience import audience_refresh

        refresh = audience_refresh(self.audience_id, context)
        run_dirs = refresh.publish_dirs(self.bucket)
        if _flag(self.decommission):
            previous = refresh.previous_run_dir
            if previous is None:
                raise AirflowFailException(
                    f"audience {self.audience_id} has no committed run: nothing to decommission"
                )
            run_dirs = [previous]
        full = (
            refresh.request.full_republish if self.full_republish is None else self.full_republish
        )
        dry = refresh.request.dry_run if self.dry_run is None else self.dry_run
        return refresh.spec, run_dirs, _flag(full), _flag(dry)

    def _options(self) -> PublishOptions | None:
        from cja_audiences.publish.streaming import PublishOptions

        overrides: dict[str, Any] = {}
        if self.chunk_size is not None:
            overrides["chunk_size"] = self.chunk_size
        if self.max_dead_letter_share is not None:
            overrides["max_dead_letter_share"] = self.max_dead_letter_share
        return PublishOptions(**overrides) if overrides else None


def _flag(value: Any) -> bool:
    """A templated flag: rendered templates are strings unless rendered as native objects."""
    if isinstance(value, str):
        return value.strip().lower() in {"true", "1", "yes", "on"}
    return bool(value)


class _AudienceAEPOperator(BaseOperator):
    """An audience task that talks to AEP through one connection."""

    template_fields: Sequence[str] = ("audience_id", "aep_conn_id")

    def __init__(
        self, *, audience_id: str, aep_conn_id: str = DEFAULT_AEP_CONN_ID, **kwargs: Any
    ) -> None:
        super().__init__(**kwargs)
        self.audience_id = audience_id
        self.aep_conn_id = aep_conn_id


class AEPPreflightOperator(_AudienceAEPOperator):
    """Before an audience's first publish, the doctor's checks (``cja_audiences.doctor``);
    fails at once, without retries, with one line per check when any fails.

    Skipped once the audience has a committed run, and for dry runs (nothing is sent).
    """

    ui_color = "#fff0e4"

    def execute(self, context: Context) -> dict[str, Any]:
        from cja_audiences.airflow.hooks.aep import AEPHook
        from cja_audiences.airflow.operators.audience import audience_refresh
        from cja_audiences.doctor import run_doctor

        refresh = audience_refresh(self.audience_id, context)
        if refresh.request.dry_run:
            return {"checked": False, "reason": "dry run: nothing will be sent"}
        if refresh.previous_run_dir is not None:
            return {"checked": False, "reason": "published before: checked on the first run"}
        from cja_audiences.doctor import checks_for
        from cja_audiences.publish import publish_mode

        hook = AEPHook(aep_conn_id=self.aep_conn_id)
        config = hook.get_config()
        mode = publish_mode(refresh.spec, config)
        report = run_doctor(config, checks_for(mode), tokens=hook.tokens)
        for verdict in report.verdicts:
            self.log.info("%s", verdict.line())
        if not report.ok:
            raise AirflowFailException(
                f"AEP is not ready for audience {self.audience_id}'s first publish "
                f"(connection {self.aep_conn_id}):\n{report.text()}"
            )
        return {"checked": True, **report.as_dict()}


class AEPReconcileOperator(_AudienceAEPOperator):
    """After commit, reads membership back from AEP (the spec's ``reconcile``: off / sample /
    full) and records drift in the committed run's run.json; drift is logged as a warning.
    """

    ui_color = "#e4fffa"

    def execute(self, context: Context) -> dict[str, Any]:
        from cja_audiences import splits
        from cja_audiences.airflow.hooks.aep import AEPHook
        from cja_audiences.airflow.operators.audience import audience_refresh
        from cja_audiences.publish import live_mode
        from cja_audiences.reconcile import reconcile_audience

        refresh = audience_refresh(self.audience_id, context)
        mode = refresh.spec.reconcile
        if mode == "off" or refresh.request.dry_run:
            return {
                "checked": False,
                "reason": f"reconcile {mode}, dry run {refresh.request.dry_run}",
            }
        if live_mode(refresh.audience_dir) is None:
            return {"checked": False, "reason": "not live in AEP"}
        if splits.has_arms(refresh.spec):
            return {"checked": False, "reason": "split-test arms are not reconciled"}
        hook = AEPHook(aep_conn_id=self.aep_conn_id)
        result = reconcile_audience(
            hook.get_config(),
            refresh.spec,
            refresh.audience_dir,
            mode=mode,
            sample=refresh.settings.reconcile_sample,
            tokens=hook.tokens,
        )
        if result["drifted"]:
            self.log.warning(
                "audience %s has drifted in AEP: %s (examples: %s); run `python -m "
                "cja_audiences reconcile %s --full --repair`",
                self.audience_id,
                result["drift"],
                result["examples"],
                self.audience_id,
            )
        else:
            self.log.info("AEP matches the committed snapshot: %s", result["checked"])
        return {k: result[k] for k in ("run_id", "mode", "checked", "drift", "drifted")}


class AEPRequestedReconcileOperator(BaseOperator):
    """A reconcile someone started from the dashboard's Reconcile button (the
    ``cja_audiences_reconcile`` DAG): the audience, mode and repair come from the run's
    params; its progress goes to the audience folder for the page, its result to the
    committed run's run.json (as after every refresh)."""

    template_fields: Sequence[str] = ("aep_conn_id",)
    ui_color = "#e4fffa"

    def __init__(self, *, aep_conn_id: str = DEFAULT_AEP_CONN_ID, **kwargs: Any) -> None:
        super().__init__(**kwargs)
        self.aep_conn_id = aep_conn_id

    def execute(self, context: Context) -> dict[str, Any]:
        from cja_audiences.airflow.hooks.aep import AEPHook
        from cja_audiences.cli.reconcile import summary
        from cja_audiences.lake.layout import Lake
        from cja_audiences.reconcile import ReconcileError, note_request, reconcile_on_request
        from cja_audiences.specs.model import SpecError

        params = context["params"]
        settings = get_settings()
        audience_dir = Lake(settings.home).audience_dir(params["audience_id"])
        try:
            spec = spec_by_id(settings.audiences_dir, params["audience_id"])
        except SpecError as exc:
            note_request(audience_dir, context["run_id"], "failed", error=str(exc))
            raise AirflowFailException(str(exc)) from None
        hook = AEPHook(aep_conn_id=self.aep_conn_id)
        try:
            result = reconcile_on_request(
                hook.get_config(),
                spec,
                audience_dir,
                dag_run_id=context["run_id"],
                requested_by=getattr(context.get("dag_run"), "triggering_user_name", None),
                mode=params.get("mode") or "sample",
                sample=settings.reconcile_sample,
                repair=bool(params.get("repair")),
                tokens=hook.tokens,
            )
        except ReconcileError as exc:
            raise AirflowFailException(str(exc)) from None  # a retry would refuse it again
        self.log.info("%s", summary(result))
        return {k: result[k] for k in ("run_id", "mode", "checked", "drift", "drifted")}
