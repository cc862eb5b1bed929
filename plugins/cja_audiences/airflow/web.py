"""A small read-only web view of the audiences, mounted in the Airflow API server by the plugin.

It shows what the DAG pages cannot: each audience's committed snapshot, its runs and the SQL
its filter renders to. It reads specs and run records only: no member lists, no secrets.
"""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from html import escape
from typing import Any

from fastapi import FastAPI, HTTPException
from fastapi.responses import HTMLResponse, PlainTextResponse

from cja_audiences import snapshots
from cja_audiences.lake.layout import Lake
from cja_audiences.settings import get_settings
from cja_audiences.specs.model import AudienceSpec, SpecError, load_specs, spec_by_id

PAGE = """<!doctype html><html><head><meta charset="utf-8"><title>CJA audiences</title>
<style>body{{font-family:system-ui,sans-serif;margin:2rem}}table{{border-collapse:collapse}}
td,th{{border-bottom:1px solid #ddd;padding:.4rem .8rem;text-align:left}}</style></head>
<body><h1>CJA audiences</h1>{body}</body></html>"""


def _spec(audience_id: str) -> AudienceSpec:
    settings = get_settings()
    try:
        return spec_by_id(settings.audiences_dir, audience_id)
    except SpecError as exc:
        raise HTTPException(404, f"no usable audience {audience_id!r}: {exc}") from None


def _row(spec: AudienceSpec, lake: Lake) -> str:
    current = snapshots.current_run(lake.audience_dir(spec.id)) or {}
    cells = [
        f'<a href="/dags/cja_audience__{spec.id}">{escape(spec.name)}</a>',
        escape(spec.id),
        spec.refresh.frequency,
        str(current.get("size", "-")),
        escape(str(current.get("committed_at", "never"))),
        f'<a href="audiences/{spec.id}/sql">SQL</a> · <a href="audiences/{spec.id}/runs">runs</a>',
    ]
    return "<tr>" + "".join(f"<td>{c}</td>" for c in cells) + "</tr>"


def create_app() -> FastAPI:
    app = FastAPI(title="CJA audiences", docs_url=None, redoc_url=None)

    @app.get("/", response_class=HTMLResponse)
    def overview() -> str:
        settings = get_settings()
        specs, errors = load_specs(settings.audiences_dir)
        lake = Lake(settings.home)
        head = "<tr><th>audience</th><th>id</th><th>refresh</th><th>size</th><th>committed</th><th></th></tr>"
        body = "<table>" + head + "".join(_row(s, lake) for s in specs) + "</table>"
        if errors:
            body += (
                "<h2>Invalid specs</h2><ul>"
                + "".join(f"<li>{escape(str(e))}</li>" for e in errors)
                + "</ul>"
            )
        return PAGE.format(body=body)

    @app.get("/audiences/{audience_id}/sql", response_class=PlainTextResponse)
    def rendered_sql(audience_id: str) -> str:
        from cja_audiences.compute import render_audience

        spec = _spec(audience_id)
        as_of = datetime.now(UTC).date() - timedelta(days=1)
        rendered = render_audience(spec, settings=get_settings(), as_of=as_of)
        sql = rendered.sql
        bound = "\n".join(f"--   ${k} = {v!r}" for k, v in rendered.params.items())
        return (
            f"-- {spec.name} ({spec.id}), as of {as_of}\n-- bound parameters:\n{bound}\n\n{sql}\n"
        )

    @app.get("/audiences/{audience_id}/runs")
    def runs(audience_id: str) -> list[dict[str, Any]]:
        spec = _spec(audience_id)
        return snapshots.list_runs(Lake(get_settings().home).audience_dir(spec.id))

    return app
