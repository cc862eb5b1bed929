"""Fixtures for the contract tests: an emulator client that checks every answer against the
spec, and a small CJA lake."""

from __future__ import annotations

from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import requests
from starlette.routing import Match

from cja_audiences.lake.schema import EVENT_SCHEMA
from emulator.app import create_app
from emulator.config import load_config
from emulator.process import EmulatorServer
from tests.contract.openapi import check_response

_APP = create_app(load_config(), None)  # in-process, only to name the route a URL hits


def route_of(method: str, path: str) -> str:
    """The emulator's route template for ``method path`` ("POST /segments/validate")."""
    scope = {"type": "http", "path": path, "method": method.upper()}
    for route in _APP.router.routes:
        if route.matches(scope)[0] == Match.FULL:
            return f"{method.upper()} {route.path}"
    return f"{method.upper()} {path} (no route)"


def adobe_routes() -> set[str]:
    """Every Adobe route the emulator serves (not its own ``/_emulator`` routes)."""
    return {
        f"{method} {route.path}"
        for route in _APP.router.routes
        if not route.path.startswith("/_emulator")
        for method in getattr(route, "methods", ()) or ()
        if method != "HEAD"
    }


class CheckedClient:
    """Calls the emulator as an Adobe client would; every answer is checked against the spec
    of its route, and the routes hit are recorded."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.emu = emu
        self.token = emu.token()
        self.http = requests.Session()
        self.http.hooks["response"].append(self._check)
        self.routes: set[str] = set()
        self.statuses: list[tuple[str, int]] = []

    def _check(self, response: requests.Response, *_args: Any, **_kwargs: Any) -> None:
        request = response.request
        path = requests.utils.urlparse(request.url).path
        body = response.json() if response.content else None
        check_response(request.method, request.url, response.status_code, body)
        route = route_of(request.method, path)
        self.routes.add(route)
        self.statuses.append((route, response.status_code))

    def headers(self, **extra: str) -> dict[str, str]:
        return self.emu.headers(self.token) | {"Accept": "application/json"} | extra

    def call(self, method: str, path: str, body: Any = None, **kwargs: Any) -> requests.Response:
        headers = self.headers() | kwargs.pop("headers", {})
        return self.http.request(
            method, self.emu.url + path, json=body, headers=headers, timeout=30, **kwargs
        )


@pytest.fixture
def checked(emu: EmulatorServer) -> CheckedClient:
    return CheckedClient(emu)


def write_events(root: Path, rows: list[dict[str, Any]]) -> Path:
    """A lake root holding ``rows`` (EVENT_SCHEMA fields) in UTC date partitions."""
    by_date: dict[str, list[dict[str, Any]]] = {}
    for i, row in enumerate(rows):
        ts = row["timestamp"]
        if isinstance(ts, str):
            ts = datetime.fromisoformat(ts)
        ts = ts.astimezone(UTC)
        full = {"event_id": f"ev{i}", "person_namespace": "ECID", **row, "timestamp": ts}
        by_date.setdefault(ts.date().isoformat(), []).append(full)
    for day, day_rows in by_date.items():
        folder = root / "lake" / "events" / f"date={day}"
        folder.mkdir(parents=True, exist_ok=True)
        table = pa.Table.from_pylist(day_rows, schema=EVENT_SCHEMA)
        pq.write_table(table, folder / "part-0.parquet")
    return root
