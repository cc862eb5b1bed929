"""One audience refresh, stage by stage: gate, compute, diff, guardrails, (publish), commit.

Each method is one Airflow task; publish goes through the AEP hook. Stages talk only
through the run folder, so any stage can be retried alone and XCom carries summaries only.
From diff to commit the run holds its audience's lease (``lake.lease``): a second run of
the same audience — another DAG, a manual trigger, a CLI rollback — waits, then skips.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cja_audiences import (
    buckets,
    clock,
    compute,
    diff,
    explain,
    guardrails,
    lifetime,
    review,
    snapshots,
)
from cja_audiences.lake.layout import Lake, safe_name
from cja_audiences.lake.lease import AudienceBusy, RunLease, lake_leases
from cja_audiences.lake.runs import RUN_OWNER, read_run_record, update_run_record
from cja_audiences.lake.storage import create_exclusive, makedirs, read_versioned
from cja_audiences.publish import sent
from cja_audiences.settings import Settings
from cja_audiences.specs import calendar
from cja_audiences.specs.model import AudienceSpec


class GuardrailBlocked(RuntimeError):
    """Guardrails refused the run; nothing was sent and the snapshot did not move."""


class ReviewOutdated(RuntimeError):
    """An approved dry run no longer matches the committed snapshot: its diff is stale."""


class RunIdTaken(RuntimeError):
    """Another DAG's run of the audience has this run id, so its run folder and its lease."""


@dataclass(frozen=True)
class RefreshRequest:
    """What one run was asked to do (from a schedule, an event, the UI form or the CLI)."""

    run_id: str
    as_of: date
    lookback_days: int | None = None
    force: bool = False
    dry_run: bool = False
    full_republish: bool = False
    filter_params: dict[str, Any] = field(default_factory=dict)
    scheduled: bool = False  # started by the timetable (not by a person or an event)
    run_type: str | None = None  # Airflow's: manual, scheduled, asset_triggered, backfill
    approve_run: str | None = None  # publish exactly this reviewed run's diff
    override: tuple[str, ...] = ()  # guardrail checks a person overrides for this run only
    requested_by: str | None = None  # the person who triggered the run, when Airflow knows
    dag_id: str | None = None  # the Airflow DAG running it (run ids are unique per DAG only)

    @classmethod
    def from_params(
        cls,
        run_id: str,
        params: dict[str, Any],
        default_as_of: date,
        *,
        run_type: str | None = None,
        requested_by: str | None = None,
        dag_id: str | None = None,
    ) -> RefreshRequest:
        """From a DAG run's params; ``as_of`` defaults to the last complete day.

        A manual run (a person pressing Trigger, the REST API, the CLI) is a dry run unless
        ``publish`` is on or it approves a reviewed run; scheduled and new-data runs publish.
        """
        as_of = params.get("as_of")
        lookback = params.get("lookback_days")
        if lookback is not None and not 1 <= int(lookback) <= 90:
            raise ValueError(f"param lookback_days={lookback}: use a whole number from 1 to 90")
        approve_run = params.get("approve_run") or None
        held_for_review = run_type == "manual" and not params.get("publish") and not approve_run
        return cls(
            run_id=run_id,
            as_of=date.fromisoformat(as_of) if as_of else default_as_of,
            lookback_days=int(lookback) if lookback is not None else None,
            force=bool(params.get("force")) or bool(approve_run),
            dry_run=bool(params.get("dry_run")) or held_for_review,
            full_republish=bool(params.get("full_republish")),
            filter_params=dict(params.get("filter_params") or {}),
            scheduled=run_type == "scheduled",
            run_type=run_type,
            approve_run=approve_run,
            override=tuple(params.get("override") or ()),
            requested_by=requested_by,
            dag_id=dag_id,
        )


class AudienceRefresh:
    """The stages of one run of one audience, over its run folder in the lake."""

    def __init__(self, spec: AudienceSpec, settings: Settings, request: RefreshRequest) -> None:
        self.spec = spec
        self.settings = settings
        self.request = request
        lake = Lake(settings.home)
        self.audience_dir = lake.audience_dir(spec.id)
        self.run_dir = lake.run_dir(spec.id, request.run_id)
        self.lease = RunLease(
            self.run_dir, lake_leases(lake.audiences, settings.lease_ttl_s), audience_id=spec.id
        )

    @property
    def previous_run_dir(self) -> Path | None:
        """The committed run this one diffs against (None before the first publish)."""
        return snapshots.current_run_dir(self.audience_dir)

    def gate(self, now: datetime | None = None) -> dict[str, Any]:
        """Is a refresh allowed now? (frequency guard, schedule expiry; ``force`` bypasses).
        First the run folder is claimed for the request's DAG (see :meth:`claim`)."""
        self.claim()
        now = now or clock.now()
        start = self.spec.refresh.start
        if self.request.scheduled and now < start:
            verdict = {
                "due": False,
                "reason": f"skipped: the audience's schedule starts at {start.isoformat()}; "
                "trigger a run by hand to publish earlier",
                "next_allowed": start,
            }
        else:
            last = snapshots.last_committed_at(self.audience_dir)
            due, reason, allowed = calendar.refresh_due(self.spec, last, now, self.request.force)
            verdict = {"due": due, "reason": reason, "next_allowed": allowed}
        update_run_record(
            self.run_dir,
            audience_id=self.spec.id,
            run_id=self.request.run_id,
            request=_jsonable(self.request),
            gate=verdict,
        )
        return verdict

    def claim(self) -> None:
        """Airflow's run ids are unique per DAG only, and the lake names a run's folder (and
        its lease holder) by the run id: a second DAG's run with the same id (a caller-chosen
        run id given to both ``cja_audience__<id>`` and ``cja_audiences_all``) would share
        both. The first DAG to gate creates the folder's owner file; another is refused
        before it computes or sends anything."""
        dag_id = self.request.dag_id
        if dag_id is None:  # the CLI and tests: one caller, no DAG
            return
        owner = self.run_dir / RUN_OWNER
        if create_exclusive(owner, dag_id.encode()):
            return
        held = read_versioned(owner)
        other = held.data.decode() if held else dag_id
        if other != dag_id:
            raise RunIdTaken(
                f"run id {self.request.run_id!r} of audience {self.spec.id} is already a run of "
                f"DAG {other}; DAG {dag_id} would share its run folder and lease. Trigger it "
                "again with another run id (Airflow picks unique ones when none is given)"
            )

    @property
    def reviewed_run_dir(self) -> Path | None:
        """The dry run a person reviewed and approved (its folder in this audience's runs)."""
        if not self.request.approve_run:
            return None
        return self.audience_dir / snapshots.RUNS / safe_name(self.request.approve_run)

    @property
    def buckets(self) -> int | None:
        """Person buckets of this audience (``refresh.buckets``); None: one piece."""
        return self.spec.refresh.buckets

    def compute(
        self, definition: dict[str, Any] | None = None, bucket: int | None = None
    ) -> dict[str, Any]:
        """``definition``: the CJA segment definition, when the caller fetched it already.
        A bucketed audience computes ``bucket`` (a mapped task), or every bucket in turn.
        An approval copies the reviewed run's members instead: it publishes what was seen."""
        if (reviewed := self.reviewed_run_dir) is not None:
            return self._adopt_members(reviewed, bucket)
        if self.buckets and bucket is None:
            sizes = [self.compute(definition, b)["size"] for b in range(self.buckets)]
            return {"size": sum(sizes), "buckets": self.buckets}
        return compute.compute_audience(
            self.spec,
            settings=self.settings,
            run_dir=self.run_dir if bucket is None else buckets.bucket_dir(self.run_dir, bucket),
            as_of=self.request.as_of,
            lookback_days=self.request.lookback_days,
            params=self.request.filter_params or None,
            definition=definition,
            bucket=None if bucket is None else (bucket, self.buckets or 1),
        )

    def diff(
        self, bucket: int | None = None, now: datetime | None = None, mode: str = "streaming"
    ) -> dict[str, Any]:
        """Entered and exited members, each exit explained on this run's window, and
        (streaming ``mode``) the unchanged members due for renewal before the next scheduled
        refresh (``lifetime.renew_before``); an external audience's lifetime is Adobe's
        ``ttlInDays``, so it renews nothing. A bucketed audience diffs ``bucket`` (a mapped
        task), or every bucket in turn and then merges them (:meth:`merge`).

        First the audience's lease is taken (waiting up to ``lease_wait_s``; ``AudienceBusy``
        after; a dry run sends nothing, so it takes none), and the base is the committed
        snapshot corrected by every uncommitted send (``publish.sent``)."""
        if not self.request.dry_run:
            try:
                self.lease.take(self.settings.lease_wait_s, reason="refresh")
            except AudienceBusy as exc:
                update_run_record(self.run_dir, status="skipped", busy=str(exc))
                raise
        previous = self.previous_run_dir
        cutoff = None
        if mode == "streaming":
            ttl = lifetime.lifetime_for(self.spec, self.settings)
            cutoff = lifetime.renew_before(self.spec, ttl, now or clock.now())
        if (reviewed := self.reviewed_run_dir) is not None:
            try:  # an approval publishes the reviewed diff, refused if the snapshot moved
                return self._adopt_diff(reviewed, previous, bucket, cutoff)
            except review.StaleReview as exc:
                raise ReviewOutdated(str(exc)) from None
        corrections = sent.corrections(self.audience_dir, self.run_dir.name)
        if not self.buckets:
            exits = explain.exit_explainer(self.spec, self.settings, self.run_dir, previous)
            return diff.diff_members(self.run_dir, previous, exits, cutoff, corrections=corrections)
        if bucket is None:
            for b in range(self.buckets):
                self.diff(b, now, mode)
            return self.merge()
        folder = buckets.bucket_dir(self.run_dir, bucket)
        mine = corrections.only(buckets.bucket_filter(bucket, self.buckets))
        if previous is None:
            return diff.diff_members(folder, None, corrections=mine)
        sliced = folder / buckets.PREVIOUS_DIR
        buckets.slice_previous(previous, sliced, bucket, self.buckets)
        exits = explain.exit_explainer(self.spec, self.settings, folder, previous)
        return diff.diff_members(
            folder,
            previous,
            exits,
            cutoff,
            previous_members=sliced / "members.parquet",
            corrections=mine,
        )

    def _pieces(self, reviewed: Path, bucket: int | None) -> list[tuple[Path, Path]]:
        """(reviewed folder, this run's folder) of each piece an approval adopts: the run,
        or ``bucket`` (a mapped task) or every bucket, each bucket's files from the same
        bucket of the reviewed run; refused if the reviewed run was cut differently."""
        if not self.buckets:
            return [(reviewed, self.run_dir)]
        review.check_buckets(reviewed, self.buckets)
        chosen = range(self.buckets) if bucket is None else [bucket]
        return [
            (buckets.bucket_dir(reviewed, b), buckets.bucket_dir(self.run_dir, b)) for b in chosen
        ]

    def _adopt_members(self, reviewed: Path, bucket: int | None) -> dict[str, Any]:
        try:
            pieces = self._pieces(reviewed, bucket)
        except review.StaleReview as exc:
            raise ReviewOutdated(str(exc)) from None
        adopted = []
        for source, target in pieces:
            makedirs(target)
            adopted.append(review.adopt_members(source, target, reviewed.name))
        if not (self.buckets and bucket is None):
            return adopted[0]
        return {"size": sum(a["size"] for a in adopted), "buckets": self.buckets}

    def _adopt_diff(
        self, reviewed: Path, previous: Path | None, bucket: int | None, cutoff: datetime | None
    ) -> dict:
        pieces = self._pieces(reviewed, bucket)
        diffs = [
            review.adopt_diff(src, dst, previous, reviewed.name, cutoff) for src, dst in pieces
        ]
        return self.merge() if self.buckets and bucket is None else diffs[0]

    def merge(self) -> dict[str, Any]:
        """The buckets' members and changes as the run's own: guardrails judge the whole."""
        assert self.buckets, "merge is for bucketed audiences"
        merged = buckets.merge_buckets(self.run_dir, self.buckets, self.previous_run_dir)
        if self.reviewed_run_dir is not None:  # the record says which review it publishes
            merged = {**merged, "reviewed_run": self.reviewed_run_dir.name}
            update_run_record(self.run_dir, diff=merged)
        return merged

    def publish_dirs(self, bucket: int | None = None) -> list[Path]:
        """The folders a publish sends: the run's, or its buckets' (each with its ledger)."""
        if not self.buckets:
            return [self.run_dir]
        chosen = range(self.buckets) if bucket is None else [bucket]
        return [buckets.bucket_dir(self.run_dir, b) for b in chosen]

    def collect_publish(self) -> dict[str, Any] | None:
        """After every bucket published: the run's publish record is their sum."""
        if not self.buckets or self.request.dry_run:
            return None
        return buckets.collect_publish(self.run_dir, self.buckets)

    def check(self) -> dict[str, Any]:
        """Data-level guardrails; a block raises with every violation in one message.
        Checks a person overrode for this run (and the spec allows) warn instead."""
        if not self.request.dry_run:
            self.lease.fence()
        report = guardrails.check_run(self.spec, self.settings, self.run_dir, self.previous_run_dir)
        if self.request.override:
            who = self.request.requested_by or "unknown user"
            report = guardrails.override(report, self.spec, self.request.override, who)
            update_run_record(
                self.run_dir,
                guardrails=report.as_dict(),
                override={
                    "by": who,
                    "checks": list(self.request.override),
                    "reviewed_run": self.request.approve_run,
                    "at": datetime.now(UTC).isoformat(timespec="seconds"),
                },
            )
        if report.blocked:
            update_run_record(self.run_dir, status="blocked")
            self.lease.release()
            raise GuardrailBlocked(report.message)
        return report.as_dict()

    def commit(self) -> dict[str, Any]:
        """Move current.json to this run; dry runs never move it."""
        self.collect_publish()
        if self.request.dry_run:
            update_run_record(self.run_dir, status="dry_run")
            return {"committed": False, "reason": "dry run: nothing sent, snapshot unchanged"}
        result = snapshots.commit(self.audience_dir, self.run_dir)
        update_run_record(self.run_dir, status="committed")
        return {"committed": True, **result}

    def record_failure(self, stage: str, reason: str) -> None:
        """The run record names the stage that failed and why, for people and for reruns;
        the run's lease is released (its sends, if any, stay for the next run to correct)."""
        update_run_record(self.run_dir, status="failed", failure={"stage": stage, "reason": reason})
        self.lease.release()

    def summary(self) -> str:
        return summarize(read_run_record(self.run_dir))


def _count(value: Any) -> str:
    return f"{value:,}" if isinstance(value, int | float) else "-"


def compute_line(record: dict[str, Any]) -> str:
    comp = record.get("compute") or {}
    window = comp.get("window") or {}
    metrics = comp.get("preview_metrics") or {}
    where = (
        f", adopted from reviewed run {comp['adopted_from']}" if comp.get("adopted_from") else ""
    )
    share = metrics.get("member_revenue_share")
    revenue = f", {share:.1%} of revenue" if isinstance(share, int | float) else ""
    return (
        f"computed: {_count(comp.get('size'))} members over {window.get('start', '?')} .. "
        f"{window.get('end', '?')}, {_count(comp.get('rows_scanned'))} events scanned{revenue}, "
        f"{comp.get('elapsed_s', 0)} s{where}"
    )


def diff_line(record: dict[str, Any]) -> str:
    dif = record.get("diff") or {}
    base = dif.get("previous_run_id") or "nothing (first publish)"
    renewed = f", {_count(dif['renewed'])} renewed" if "renewed" in dif else ""
    return (
        f"diff: +{_count(dif.get('entered'))} entered, -{_count(dif.get('exited'))} exited"
        f"{renewed}, {_count(dif.get('size'))} members against {base} "
        f"({_count(dif.get('previous_size', 0))} before)"
    )


def guardrails_line(record: dict[str, Any]) -> str:
    checks = (record.get("guardrails") or {}).get("checks", [])
    if not checks:
        return "guardrails: not checked"
    counts = {v: sum(c.get("verdict") == v for c in checks) for v in ("pass", "warn", "block")}
    verdict = "block" if counts["block"] else "warn" if counts["warn"] else "pass"
    lines = [
        f"guardrails: {verdict} ({counts['pass']} pass, {counts['warn']} warn, "
        f"{counts['block']} block)"
    ]
    lines += [
        f"  {c['verdict'].upper()} {c.get('message', c.get('name', ''))}"
        for c in checks
        if c.get("verdict") != "pass"
    ]
    return "\n".join(lines)


def publish_line(record: dict[str, Any]) -> str:
    pub = record.get("publish") or {}
    if not pub:
        return "publish: nothing sent"
    external = pub.get("publish_mode") == "external_audience"
    kind = "differential" if pub.get("differential") else "full"
    rows = (
        f"{_count(pub.get('records', 0))} rows, +{_count(pub.get('entered', 0))} / "
        f"-{_count(pub.get('exited', 0))}"
    )
    if pub.get("status") == "dry_run" and external:
        return (
            f"publish (dry run): external audience, a {kind} ingestion of {rows} would be "
            f"written to {pub.get('file', '-')} and run; nothing sent"
        )
    if pub.get("status") == "dry_run":
        return (
            f"publish (dry run): {_count(pub.get('would_send'))} of {_count(pub.get('records'))} "
            f"records would be sent in {_count(pub.get('requests'))} requests, "
            f"{_count(pub.get('refused'))} refused; nothing sent"
        )
    if external:
        return (
            f"publish: external audience ingestion {pub.get('run_id', '-')} ({kind}) of "
            f"{pub.get('file', '-')}: {rows}, {pub.get('status', '-')}"
        )
    return (
        f"publish: {_count(pub.get('acknowledged_total', pub.get('acknowledged')))} of "
        f"{_count(pub.get('records'))} records acknowledged, {_count(pub.get('dead_lettered', 0))} "
        f"dead-lettered, {_count(pub.get('retried', 0))} retried, "
        f"{_count(pub.get('records_per_s', 0))} records/s"
    )


def summarize(record: dict[str, Any]) -> str:
    """A few lines a person can read in a task log: computed, checked, sent (no paths)."""
    failure = record.get("failure")
    head = (
        f"audience {record.get('audience_id', '?')} run {record.get('run_id', '?')}: "
        f"{record.get('status', 'in progress')}"
        + (f" at stage {failure['stage']}: {failure['reason']}" if failure else "")
    )
    body = [compute_line(record), diff_line(record), guardrails_line(record), publish_line(record)]
    return "\n".join([head, *("  " + line for line in body)])


def _jsonable(request: RefreshRequest) -> dict[str, Any]:
    return {
        **request.__dict__,
        "as_of": request.as_of.isoformat(),
        "override": list(request.override),
    }
