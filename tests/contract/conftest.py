"""Fixtures for the contract tests: an emulator client that checks every answer against the
spec of its route."""

from __future__ import annotations

from typing import Any

import pytest
import requests
from starlette.routing import Match

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
