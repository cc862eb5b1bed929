"""The audiences dashboard, a FastAPI app the plugin mounts in Airflow's API server.

Pages: the overview, one page per audience (size history, runs, spec, SQL, preview,
reconcile; for a spec that no longer loads, what is still live in AEP), one page per run
(review of entered / exited members, guardrails, approve, override), and the overlap matrix. Every route needs a signed-in Airflow user and the audience DAG's
permissions (see :mod:`.auth`). Actions start DAG runs through Airflow; the web server never
publishes anything itself.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import AsyncIterator, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta
from typing import Annotated, Any

import duckdb
from fastapi import Depends, FastAPI, Form, HTTPException, Query, Request
from fastapi.responses import (
    HTMLResponse,
    JSONResponse,
    PlainTextResponse,
    RedirectResponse,
    Response,
    StreamingResponse,
)
from fastapi.staticfiles import StaticFiles

from cja_audiences import guardrails, reconcile, review
from cja_audiences.airflow.dag_factory import RECONCILE_DAG
from cja_audiences.airflow.web.auth import (
    DAG_PREFIX,
    NotAuthenticated,
    Viewer,
    login_url,
    same_origin,
    viewer,
)
from cja_audiences.airflow.web.render import HERE, environment
from cja_audiences.dashboard.overlap import overlap_matrix, overlap_pair
from cja_audiences.dashboard.overview import overview
from cja_audiences.dashboard.runs import (
    RunView,
    audience_runs,
    current_run_id,
    dead_letter_file,
    find_run,
)
from cja_audiences.dashboard.specs import spec_of
from cja_audiences.lake.layout import AUDIENCE_ID, Lake
from cja_audiences.lake.runs import RUNS
from cja_audiences.settings import Settings, get_settings
from cja_audiences.specs.model import AudienceSpec, SpecError

SPEC_SHOWN = 64 * 1024  # of a broken spec file's text (a spec is at most 256 KiB)

log = logging.getLogger(__name__)
# (dag_id, conf, user name) -> the new DAG run's id
Trigger = Callable[[str, dict[str, Any], str], str]
ViewerDep = Annotated[Viewer, Depends(viewer)]


@dataclass(frozen=True)
class BrokenSpec:
    """An audience whose spec no longer loads: what its pages can still say about it."""

    id: str
    error: SpecError

    @property
    def name(self) -> str:
        return self.id

    @property
    def file(self) -> str:
        return self.error.path.name

    @property
    def problem(self) -> str:
        return str(self.error).removeprefix(f"{self.error.path}: ")


def airflow_trigger(dag_id: str, conf: dict[str, Any], user: str) -> str:
    """Start a DAG run as the UI's Trigger button does, in the API server's process."""
    from airflow.api.common.trigger_dag import trigger_dag
    from airflow.utils.types import DagRunTriggeredByType

    run = trigger_dag(
        dag_id,
        triggered_by=DagRunTriggeredByType.UI,
        triggering_user_name=user,
        conf=conf,
        run_after=datetime.now(UTC),
    )
    if run is None:
        raise HTTPException(409, f"Airflow did not create a run of {dag_id}")
    return run.run_id


class Dashboard:
    """The app's routes over one lake and specs folder (settings read per request)."""

    def __init__(self, trigger: Trigger) -> None:
        self.trigger = trigger
        self.env = environment()

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def settings() -> Settings:
        return get_settings()

    def page(self, template: str, request: Request, who: Viewer, **context: Any) -> HTMLResponse:
        body = self.env.get_template(template).render(
            root=str(request.scope.get("root_path", "")).rstrip("/"),
            user=who.name,
            notice=request.query_params.get("notice"),
            error=request.query_params.get("error"),
            **context,
        )
        return HTMLResponse(body)

    def spec(self, audience_id: str) -> AudienceSpec:
        try:
            return spec_of(self.settings().audiences_dir, audience_id)
        except SpecError as exc:
            raise HTTPException(404, f"no usable audience {audience_id!r}: {exc}") from None

    def spec_or_broken(self, audience_id: str) -> AudienceSpec | BrokenSpec:
        """The spec, or, for an audience whose spec file fails to load (or is gone) but that
        has runs, why: its pages still show what is live in AEP."""
        try:
            return spec_of(self.settings().audiences_dir, audience_id)
        except SpecError as exc:
            if not exc.path.exists() and not (
                AUDIENCE_ID.fullmatch(audience_id) and self.runs(audience_id)
            ):
                raise HTTPException(404, f"no usable audience {audience_id!r}: {exc}") from None
            return BrokenSpec(audience_id, exc)

    def audience_dir(self, audience_id: str) -> Any:
        return Lake(self.settings().home).audience_dir(audience_id)

    def runs(self, audience_id: str) -> list[RunView]:
        return audience_runs(Lake(self.settings().home).audience_dir(audience_id))

    def run_dir(self, audience_id: str, run_id: str) -> Any:
        runs_dir = Lake(self.settings().home).audience_dir(audience_id) / RUNS
        path = runs_dir / run_id
        if run_id in ("", ".", "..") or "/" in run_id or not path.is_dir():
            raise HTTPException(404, f"audience {audience_id} has no run {run_id!r}")
        return path

    @staticmethod
    def back(request: Request, path: str, **query: str) -> RedirectResponse:
        from urllib.parse import urlencode

        root = str(request.scope.get("root_path", "")).rstrip("/")
        suffix = f"?{urlencode(query)}" if query else ""
        return RedirectResponse(f"{root}{path}{suffix}", status_code=303)

    @staticmethod
    def check_origin(request: Request) -> None:
        if not same_origin(request):
            raise HTTPException(403, "refused: the form was posted from another site")

    # -- pages -----------------------------------------------------------------------------
    def overview_page(self, request: Request, who: Viewer) -> HTMLResponse:
        rows = overview(self.settings(), allowed=who.readable)
        tags = sorted({t for r in rows for t in r.tags})
        frequencies = sorted({r.frequency for r in rows if r.frequency != "-"})
        statuses = sorted({r.status for r in rows})
        return self.page(
            "overview.html",
            request,
            who,
            rows=rows,
            tags=tags,
            frequencies=frequencies,
            statuses=statuses,
        )

    def audience_page(
        self,
        request: Request,
        who: Viewer,
        audience_id: str,
        preview: dict[str, Any] | None = None,
        form: dict[str, str] | None = None,
    ) -> HTMLResponse:
        who.require_read(audience_id)
        spec = self.spec_or_broken(audience_id)
        runs = self.runs(audience_id)
        current = next((r for r in runs if r.is_current), None)
        shared: dict[str, Any] = {
            "spec": spec,
            "runs": runs,
            "chart_runs": list(reversed(runs[:60])),
            "current": current,
            "aep_url": next((r.aep_url for r in runs if r.aep_url), None),
            "drift": next((r.drift for r in runs if r.drift), None),
            "can_trigger": who.can_trigger(audience_id),
            "recon": self._reconcile_view(spec, current),
        }
        if isinstance(spec, BrokenSpec):
            return self.page(
                "audience_invalid.html", request, who, spec_yaml=_spec_text(spec), **shared
            )
        sql, params, window = self._committed_sql(spec, current)
        return self.page(
            "audience.html",
            request,
            who,
            spec_yaml=spec.source_path.read_text() if spec.source_path else "",
            sql=sql,
            params=params,
            window=window,
            preview=preview,
            form=form or {},
            **shared,
        )

    def _reconcile_view(
        self, spec: AudienceSpec | BrokenSpec, current: RunView | None
    ) -> dict[str, Any]:
        """The last reconcile's result, the dashboard request in flight (or failed), and why
        a reconcile cannot start, if it cannot."""
        audience_dir = self.audience_dir(spec.id)
        blocked = None
        if isinstance(spec, BrokenSpec):
            blocked = f"the spec does not load: fix {spec.file} first"
        else:
            try:
                reconcile.reconcilable(spec, audience_dir)
            except reconcile.ReconcileError as exc:
                blocked = str(exc)
        return {
            "result": (current.record.get("reconcile") if current else None) or None,
            "request": reconcile.last_request(audience_dir),
            "pending": reconcile.pending_request(audience_dir),
            "blocked": blocked,
        }

    def _committed_sql(
        self, spec: AudienceSpec, current: RunView | None
    ) -> tuple[str, dict[str, Any], dict[str, Any]]:
        """The SQL and bound values of the committed run's window (else yesterday's)."""
        compute = (current.record.get("compute") or {}) if current else {}
        if compute.get("sql"):
            return compute["sql"], compute.get("params", {}), compute.get("window", {})
        from cja_audiences.compute import audience_window, render_audience

        as_of = datetime.now(UTC).date() - timedelta(days=1)
        try:
            rendered = render_audience(spec, settings=self.settings(), as_of=as_of)
        except Exception as exc:  # a segment by id needs the CJA API: say so, keep the page
            return f"-- the filter could not be rendered here: {exc}", {}, {}
        return rendered.sql, rendered.params, audience_window(spec, as_of).as_dict()

    def preview_page(
        self, request: Request, who: Viewer, audience_id: str, form: dict[str, str]
    ) -> HTMLResponse:
        """Size, sample and preview metrics for another window or params; writes no run."""
        from cja_audiences.compute import AudienceError, evaluate_audience

        who.require_read(audience_id)
        spec = self.spec(audience_id)
        try:
            as_of = date.fromisoformat(form["as_of"]) if form.get("as_of") else None
            lookback = int(form["lookback_days"]) if form.get("lookback_days") else None
            params = {k[2:]: v for k, v in form.items() if k.startswith("p_") and v != ""}
            result = evaluate_audience(
                spec,
                settings=self.settings(),
                as_of=as_of or datetime.now(UTC).date() - timedelta(days=1),
                lookback_days=lookback,
                params=params or None,
            )
            preview: dict[str, Any] = {"stats": result.stats}
        except (ValueError, AudienceError, duckdb.Error) as exc:
            preview = {"error": str(exc)}
        return self.audience_page(request, who, audience_id, preview=preview, form=form)

    def run_page(
        self,
        request: Request,
        who: Viewer,
        audience_id: str,
        run_id: str,
        side: str,
        q: str | None,
        page: int,
        reveal: bool,
    ) -> HTMLResponse:
        who.require_read(audience_id)
        spec = self.spec_or_broken(audience_id)
        run_dir = self.run_dir(audience_id, run_id)
        runs = self.runs(audience_id)
        run = find_run(runs, run_id)
        assert run is not None
        broken = isinstance(spec, BrokenSpec)
        reveal = reveal and who.can_reveal(audience_id)
        side_name = "exited" if side == "exited" else "entered"
        members = review.member_page(
            run_dir,
            side_name,  # type: ignore[arg-type]
            search=q,
            offset=max(page - 1, 0) * review.PAGE_SIZE,
            reveal=reveal,
            legend=review.why_legend(run.record),
        )
        current = current_run_id(run_dir.parent.parent)
        stale = None
        if run.status == "dry_run":
            try:
                review.check_fresh(run_dir, current, run.record)
            except (review.StaleReview, review.NotReviewable) as exc:
                stale = str(exc)
        return self.page(
            "run.html",
            request,
            who,
            spec=spec,
            run=run,
            members=members,
            side=side_name,
            q=q or "",
            page=max(page, 1),
            pages=max((members.total + review.PAGE_SIZE - 1) // review.PAGE_SIZE, 1),
            reveal=reveal,
            can_reveal=who.can_reveal(audience_id),
            can_trigger=who.can_trigger(audience_id) and not broken,
            broken=spec if broken else None,
            stale=stale,
            overridable=[] if broken else guardrails.overridable_blocks(spec, run.record),
            shared_branches=review.shared_branches(run.record),
            dead_letters=dead_letter_file(run_dir) is not None,
            publish=run.record.get("publish") or {},
        )

    def overlap_page(self, request: Request, who: Viewer) -> HTMLResponse:
        from cja_audiences.specs.model import spec_paths

        ids = [p.stem for p in spec_paths(self.settings().audiences_dir)]
        matrix = overlap_matrix(Lake(self.settings().home), sorted(who.readable(ids)))
        return self.page("overlap.html", request, who, matrix=matrix)

    def pair_page(self, request: Request, who: Viewer, a: str, b: str) -> HTMLResponse:
        who.require_read(a)
        who.require_read(b)
        try:
            pair = overlap_pair(Lake(self.settings().home), a, b)
        except LookupError as exc:
            raise HTTPException(404, str(exc)) from None
        reveal = who.can_reveal(a) and who.can_reveal(b)
        sample = pair.sample if reveal else [review.mask(s) for s in pair.sample]
        return self.page("pair.html", request, who, pair=pair, sample=sample)

    # -- actions ---------------------------------------------------------------------------
    def start_dry_run(self, request: Request, who: Viewer, audience_id: str) -> Response:
        self.check_origin(request)
        who.require_trigger(audience_id)
        self.spec(audience_id)
        conf = {"dry_run": True, "force": True}
        run_id = self.trigger(DAG_PREFIX + audience_id, conf, who.name)
        return self.back(
            request,
            f"/audiences/{audience_id}",
            notice=f"Dry run {run_id} started: it appears below when it has computed",
        )

    def start_reconcile(
        self, request: Request, who: Viewer, audience_id: str, mode: str, repair: bool
    ) -> Response:
        """Read the committed snapshot back from AEP, on a worker (the reconcile DAG).

        Not in this request: a full read-back is rate-limited lookups for minutes (10 per
        second of 100 identities), a repair sends to AEP; a worker has the AEP connection, a
        task log and a retry, and an API server restart does not lose it. The page shows the
        request's progress from the audience folder and the result from run.json."""
        self.check_origin(request)
        who.require_trigger(audience_id)
        spec = self.spec(audience_id)
        if mode not in reconcile.MODES:
            raise HTTPException(422, f"reconcile mode {mode!r}: choose sample or full")
        page = f"/audiences/{audience_id}"
        audience_dir = self.audience_dir(audience_id)
        try:
            reconcile.reconcilable(spec, audience_dir)
        except reconcile.ReconcileError as exc:
            return self.back(request, page, error=f"Cannot reconcile: {exc}")
        pending = reconcile.pending_request(audience_dir)
        if pending:
            return self.back(
                request,
                page,
                error=f"A reconcile is already {pending['state']} (Airflow run "
                f"{pending['dag_run_id']}, by {pending.get('by') or 'someone'}): wait for it",
            )
        conf = {"audience_id": audience_id, "mode": mode, "repair": repair}
        run_id = self.trigger(RECONCILE_DAG, conf, who.name)
        reconcile.note_request(
            audience_dir, run_id, "queued", by=who.name, mode=mode, repair=repair
        )
        what = f"{mode} reconcile{' and repair' if repair else ''}"
        return self.back(request, page, notice=f"{what} {run_id} started by {who.name}")

    def approve(self, request: Request, who: Viewer, audience_id: str, run_id: str) -> Response:
        """Publish exactly the reviewed diff; refused if the committed snapshot moved."""
        self.check_origin(request)
        who.require_trigger(audience_id)
        run_dir = self.run_dir(audience_id, run_id)
        run = find_run(self.runs(audience_id), run_id)
        if run is None or run.status != "dry_run":
            raise HTTPException(409, f"run {run_id} is not a dry run: only dry runs are approved")
        try:
            review.check_fresh(run_dir, current_run_id(run_dir.parent.parent), run.record)
        except (review.StaleReview, review.NotReviewable) as exc:
            return self.back(request, f"/audiences/{audience_id}/runs/{run_id}", error=str(exc))
        conf = {"approve_run": run_id, "as_of": run.as_of}
        new_run = self.trigger(DAG_PREFIX + audience_id, conf, who.name)
        review.record_approval(run_dir, "approval", who.name, new_run)
        return self.back(
            request,
            f"/audiences/{audience_id}",
            notice=f"Approved by {who.name}: run {new_run} publishes run {run_id}'s diff",
        )

    def override(
        self, request: Request, who: Viewer, audience_id: str, run_id: str, checks: list[str]
    ) -> Response:
        """Publish a blocked run with the chosen (spec-allowed) checks overridden once."""
        self.check_origin(request)
        who.require_trigger(audience_id)
        spec = self.spec(audience_id)
        run_dir = self.run_dir(audience_id, run_id)
        run = find_run(self.runs(audience_id), run_id)
        allowed = guardrails.overridable_blocks(spec, run.record if run else {})
        if run is None or run.status != "blocked":
            raise HTTPException(409, f"run {run_id} is not blocked: nothing to override")
        chosen = [c for c in checks if c]
        refused = sorted(set(chosen) - set(allowed))
        if not chosen or refused:
            raise HTTPException(
                422,
                f"choose checks to override among {', '.join(allowed) or 'none'}"
                + (f"; not overridable: {', '.join(refused)}" if refused else ""),
            )
        try:
            review.check_fresh(run_dir, current_run_id(run_dir.parent.parent), run.record)
        except (review.StaleReview, review.NotReviewable) as exc:
            return self.back(request, f"/audiences/{audience_id}/runs/{run_id}", error=str(exc))
        conf = {"approve_run": run_id, "override": chosen, "as_of": run.as_of}
        new_run = self.trigger(DAG_PREFIX + audience_id, conf, who.name)
        review.record_approval(run_dir, "override", who.name, new_run, checks=chosen)
        return self.back(
            request,
            f"/audiences/{audience_id}",
            notice=f"{who.name} overrode {', '.join(chosen)} for run {new_run} only",
        )


def _warm_caches() -> None:
    """Parse every spec and run record once, so the first person's overview is fast too."""
    try:
        overview(get_settings())
    except Exception:  # a broken lake must not stop the API server; pages will say why
        log.exception("audiences dashboard: warming the caches failed")


@asynccontextmanager
async def _lifespan(app: FastAPI) -> AsyncIterator[None]:
    threading.Thread(target=_warm_caches, name="cja-dashboard-warm", daemon=True).start()
    yield


def create_app(trigger: Trigger | None = None) -> FastAPI:
    app = FastAPI(
        title="CJA audiences", docs_url=None, redoc_url=None, openapi_url=None, lifespan=_lifespan
    )
    board = Dashboard(trigger or airflow_trigger)
    app.mount("/static", StaticFiles(directory=HERE / "static"), name="static")

    @app.exception_handler(NotAuthenticated)
    async def _login(request: Request, exc: NotAuthenticated) -> Response:
        wants_page = request.method == "GET" and "text/html" in request.headers.get("accept", "")
        if wants_page:
            return RedirectResponse(login_url(request), status_code=307)
        return JSONResponse({"detail": f"sign in to Airflow first ({exc})"}, status_code=401)

    @app.get("/", response_class=HTMLResponse)
    def _overview(request: Request, who: ViewerDep) -> HTMLResponse:
        return board.overview_page(request, who)

    @app.get("/overlap", response_class=HTMLResponse)
    def _overlap(request: Request, who: ViewerDep) -> HTMLResponse:
        return board.overlap_page(request, who)

    @app.get("/overlap/{a}/{b}", response_class=HTMLResponse)
    def _pair(request: Request, who: ViewerDep, a: str, b: str) -> HTMLResponse:
        return board.pair_page(request, who, a, b)

    @app.get("/audiences/{audience_id}", response_class=HTMLResponse)
    def _audience(request: Request, who: ViewerDep, audience_id: str) -> HTMLResponse:
        return board.audience_page(request, who, audience_id)

    @app.get("/audiences/{audience_id}/preview", response_class=HTMLResponse)
    def _preview(request: Request, who: ViewerDep, audience_id: str) -> HTMLResponse:
        return board.preview_page(request, who, audience_id, dict(request.query_params))

    @app.get("/audiences/{audience_id}/sql", response_class=PlainTextResponse)
    def _sql(who: ViewerDep, audience_id: str) -> str:
        who.require_read(audience_id)
        spec = board.spec(audience_id)
        current = next((r for r in board.runs(audience_id) if r.is_current), None)
        sql, params, window = board._committed_sql(spec, current)
        bound = "\n".join(f"--   ${k} = {v!r}" for k, v in params.items())
        span = f"{window.get('start', '?')} .. {window.get('end', '?')}"
        return (
            f"-- {spec.name} ({spec.id}), window {span}\n-- bound parameters:\n{bound}\n\n{sql}\n"
        )

    @app.get("/audiences/{audience_id}/runs")
    def _runs(who: ViewerDep, audience_id: str) -> list[dict[str, Any]]:
        who.require_read(audience_id)
        board.spec(audience_id)
        return [_run_json(r) for r in board.runs(audience_id)]

    @app.get("/audiences/{audience_id}/runs/{run_id}", response_class=HTMLResponse)
    def _run(
        request: Request,
        who: ViewerDep,
        audience_id: str,
        run_id: str,
        side: str = "entered",
        q: str | None = None,
        page: Annotated[int, Query(ge=1)] = 1,
        reveal: bool = False,
    ) -> HTMLResponse:
        return board.run_page(request, who, audience_id, run_id, side, q, page, reveal)

    @app.get("/audiences/{audience_id}/runs/{run_id}/{side}.csv")
    def _members_csv(
        who: ViewerDep, audience_id: str, run_id: str, side: str, reveal: bool = False
    ) -> StreamingResponse:
        who.require_read(audience_id)
        if side not in review.FILES:
            raise HTTPException(404, "download entered.csv or exited.csv")
        run_dir = board.run_dir(audience_id, run_id)
        if not (run_dir / review.FILES[side]).exists():
            raise HTTPException(404, f"run {run_id} has no {side} members yet")
        unmasked = reveal and who.can_reveal(audience_id)
        name = f"{audience_id}-{run_id}-{side}{'' if unmasked else '-masked'}.csv"
        return StreamingResponse(
            review.members_csv(run_dir, side, reveal=unmasked),  # type: ignore[arg-type]
            media_type="text/csv",
            headers={"content-disposition": f'attachment; filename="{name}"'},
        )

    @app.get("/audiences/{audience_id}/runs/{run_id}/dead_letters.csv")
    def _dead_letters(who: ViewerDep, audience_id: str, run_id: str) -> PlainTextResponse:
        who.require_read(audience_id)
        path = dead_letter_file(board.run_dir(audience_id, run_id))
        if path is None:
            raise HTTPException(404, f"run {run_id} has no dead letters")
        return PlainTextResponse(
            review.parquet_csv(path),
            media_type="text/csv",
            headers={
                "content-disposition": f'attachment; filename="{audience_id}-{run_id}-dead-letters.csv"'
            },
        )

    @app.post("/audiences/{audience_id}/dry-run")
    def _dry_run(request: Request, who: ViewerDep, audience_id: str) -> Response:
        return board.start_dry_run(request, who, audience_id)

    @app.post("/audiences/{audience_id}/reconcile")
    def _reconcile(
        request: Request,
        who: ViewerDep,
        audience_id: str,
        mode: Annotated[str, Form()] = "sample",
        repair: Annotated[bool, Form()] = False,
    ) -> Response:
        return board.start_reconcile(request, who, audience_id, mode, repair)

    @app.get("/audiences/{audience_id}/reconcile")
    def _reconcile_state(who: ViewerDep, audience_id: str) -> dict[str, Any]:
        """The reconcile in flight and the last result (for scripts and polling)."""
        who.require_read(audience_id)
        spec = board.spec_or_broken(audience_id)
        current = next((r for r in board.runs(audience_id) if r.is_current), None)
        return board._reconcile_view(spec, current)

    @app.post("/audiences/{audience_id}/runs/{run_id}/approve")
    def _approve(request: Request, who: ViewerDep, audience_id: str, run_id: str) -> Response:
        return board.approve(request, who, audience_id, run_id)

    @app.post("/audiences/{audience_id}/runs/{run_id}/override")
    def _override(
        request: Request,
        who: ViewerDep,
        audience_id: str,
        run_id: str,
        checks: Annotated[list[str] | None, Form()] = None,
    ) -> Response:
        return board.override(request, who, audience_id, run_id, checks or [])

    return app


def _run_json(run: RunView) -> dict[str, Any]:
    return {
        "run_id": run.run_id,
        "created_at": run.created_at.isoformat(timespec="seconds"),
        "status": run.status,
        "kind": run.kind,
        "current": run.is_current,
        "size": run.size,
        "entered": run.entered,
        "exited": run.exited,
        "renewed": run.renewed,
        "verdict": run.verdict,
        "failed_stage": run.failed_stage,
        "reason": run.reason,
        "messages": run.messages,
        "dead_letters": run.dead_letters,
    }


def _spec_text(spec: BrokenSpec) -> str:
    """A broken spec file as written (its start, if huge), or why it cannot be shown."""
    try:
        with spec.error.path.open(errors="replace") as handle:
            return handle.read(SPEC_SHOWN)
    except OSError:
        return f"# {spec.file} cannot be read (it may have been deleted)"
