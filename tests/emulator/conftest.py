"""Shared helpers for the emulator's HTTP contract tests (the server comes from ``emu``)."""

from __future__ import annotations

from typing import Any

import pytest
import requests

from emulator.process import EmulatorServer


class Client:
    """A thin HTTP client holding one token, as an Adobe API client would."""

    def __init__(self, emu: EmulatorServer) -> None:
        self.emu = emu
        self.http = requests.Session()
        self.token = emu.token()

    def headers(self, sandbox: str | None = None, **extra: str) -> dict[str, str]:
        return self.emu.headers(self.token, sandbox) | extra

    def get(self, path: str, sandbox: str | None = None, **kwargs: Any) -> requests.Response:
        headers = self.headers(sandbox) | kwargs.pop("headers", {})
        kwargs.setdefault("timeout", 30)
        return self.http.get(self.emu.url + path, headers=headers, **kwargs)

    def send(
        self, method: str, path: str, body: Any = None, sandbox: str | None = None, **kwargs: Any
    ) -> requests.Response:
        headers = self.headers(sandbox) | kwargs.pop("headers", {})
        return self.http.request(
            method, self.emu.url + path, json=body, headers=headers, timeout=30, **kwargs
        )

    def stream(
        self, messages: list[dict[str, Any]], inlet: str | None = None, **kwargs: Any
    ) -> requests.Response:
        inlet = inlet or self.emu.config["inlet_id"]
        return self.send("POST", f"/collection/batch/{inlet}", {"messages": messages}, **kwargs)


@pytest.fixture
def client(emu: EmulatorServer) -> Client:
    return Client(emu)
