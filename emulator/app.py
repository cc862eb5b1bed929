"""The FastAPI application: every Adobe host's routes on one base URL, plus admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from http import HTTPStatus
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.exceptions import HTTPException
from starlette.responses import Response

from emulator import (
    admin,
    audiences,
    auth,
    catalog,
    cja,
    cja_limits,
    cja_segments,
    dataviews,
    external_audiences,
    org_setup,
    profile_access,
    segment_definitions,
    streaming,
)
from emulator.config import EmulatorConfig
from emulator.errors import AdobeHTTPError, for_path, json_response
from emulator.faults import FaultMiddleware, Faults, quiet_dropped_connections
from emulator.state import State

# One module per Adobe API; a new API is a new module added here.
ROUTERS = (
    auth,
    streaming,
    audiences,
    segment_definitions,
    external_audiences,
    profile_access,
    catalog,
    org_setup,
    cja,
    cja_segments,
    dataviews,
    admin,
)
FLUSH_INTERVAL_S = 0.5
# The profile store holds millions of long-lived objects, and each in-flight streaming
# request holds ~20 tracked objects per message until it is answered. CPython's default
# gen-0 threshold (700) made collections cost 5x the throughput; at 50,000 they still
# rescan the in-flight bodies over and over (~8% of the per-message CPU with eight
# 500-message requests in flight). Gen-0 therefore runs every million allocations, and
# the flusher collects the young generation and freezes the survivors every 0.5 s
# (below). Requests' garbage is nearly all freed by refcount.
GC_THRESHOLDS = (1_000_000, 50, 100)


def _settle_garbage() -> None:
    """Collect the young generation, then move every survivor out of the collector's sight.

    Survivors are overwhelmingly profile-store objects that live until a reset; freezing
    them means no later collection traverses them again.
    """
    gc.collect(0)
    gc.freeze()


async def _flush_forever(state: State) -> None:
    """Append buffered streaming requests to the DuckDB journal off the event loop."""
    while True:
        await asyncio.sleep(FLUSH_INTERVAL_S)
        _settle_garbage()
        entries = state.take_journal()
        if entries:
            generation = state.persistence.generation
            await asyncio.to_thread(state.persistence.append_journal, entries, generation)
        if state.checkpoint_due():
            state.checkpoint()


def create_app(config: EmulatorConfig, state_dir: Path | None) -> FastAPI:
    state = State(config, state_dir)

    @contextlib.asynccontextmanager
    async def lifespan(app: FastAPI) -> AsyncIterator[None]:
        quiet_dropped_connections()
        gc.set_threshold(*GC_THRESHOLDS)
        flusher = asyncio.create_task(_flush_forever(state))
        try:
            yield
        finally:
            flusher.cancel()
            catalog.seal_batches(state, force=True)
            state.checkpoint()  # the next start loads it instead of replaying the journal
            state.persistence.close()

    app = FastAPI(
        title="cja-audiences Adobe API emulator",
        lifespan=lifespan,
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        redoc_url=None,
        swagger_ui_oauth2_redirect_url=None,
    )
    app.state.emulator = state
    app.state.faults = Faults(state)
    app.state.sync_windows = {}
    app.state.cja_limits = cja_limits.CjaLimits()
    app.state.report_cache = cja.ReportCache()

    @app.exception_handler(AdobeHTTPError)
    async def adobe_error(_request: Request, exc: AdobeHTTPError) -> Response:
        return json_response(exc.body, exc.status, exc.headers)

    @app.exception_handler(HTTPException)
    async def unknown_route(request: Request, exc: HTTPException) -> Response:
        """Unknown paths and methods answer in the owning service's dialect, not FastAPI's."""
        path = request.url.path
        title = HTTPStatus(exc.status_code).phrase
        detail = f"{request.method} {path}: {title.lower()}"
        err = for_path(path, exc.status_code, title, detail)
        return json_response(err.body, err.status)

    for module in ROUTERS:
        app.include_router(module.router)
    app.add_middleware(FaultMiddleware, state=state, faults=app.state.faults, router=app.router)
    return app
