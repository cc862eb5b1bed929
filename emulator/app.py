"""The FastAPI application: every Adobe host's routes on one base URL, plus admin routes."""

from __future__ import annotations

import asyncio
import contextlib
import gc
from collections.abc import AsyncIterator
from pathlib import Path

from fastapi import FastAPI, Request
from starlette.responses import Response

from emulator import (
    admin,
    audiences,
    auth,
    catalog,
    cja,
    external_audiences,
    profile_access,
    streaming,
)
from emulator.config import EmulatorConfig
from emulator.errors import AdobeHTTPError, json_response
from emulator.faults import FaultMiddleware, Faults, quiet_dropped_connections
from emulator.state import State

FLUSH_INTERVAL_S = 0.5
# The profile store holds millions of long-lived objects. With CPython's default gen-0
# threshold (700) every parsed request triggers collections that rescan them, which cut
# throughput five-fold; a larger threshold plus freezing survivors (below) keeps the
# collector on young objects only. Requests' garbage is nearly all freed by refcount.
GC_THRESHOLDS = (50_000, 50, 100)


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
            state.persistence.append_journal(state.take_journal(), state.persistence.generation)
            state.persistence.close()

    app = FastAPI(
        title="cja-audiences Adobe API emulator",
        lifespan=lifespan,
        docs_url="/_emulator/docs",
        openapi_url="/_emulator/openapi.json",
        redoc_url=None,
    )
    app.state.emulator = state
    app.state.faults = Faults(state)
    app.state.sync_windows = {}
    app.state.cja_windows = {}
    app.state.report_cache = cja.ReportCache()

    @app.exception_handler(AdobeHTTPError)
    async def adobe_error(_request: Request, exc: AdobeHTTPError) -> Response:
        return json_response(exc.body, exc.status, exc.headers)

    routers = (auth, streaming, audiences, external_audiences, profile_access, catalog, cja, admin)
    for module in routers:
        app.include_router(module.router)
    app.add_middleware(FaultMiddleware, state=state, faults=app.state.faults, router=app.router)
    return app
