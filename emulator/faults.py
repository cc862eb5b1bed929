"""Fault injection: the failures Adobe's APIs show in production, switchable at run time.

Request-level faults (latency, 429/500/503, hangs, dropped connections, throughput caps) are
applied by :class:`FaultMiddleware` before a request reaches its route. Record-level faults
(a 207 with chosen records failed) are applied by the streaming route through
:meth:`Faults.record_failure`. Every mode is off by default.
"""

from __future__ import annotations

import asyncio
import logging
import math
import random
import time
from typing import Any

from pydantic import BaseModel, ConfigDict, Field
from pydantic_core import to_json
from starlette.routing import Match
from starlette.types import ASGIApp, Receive, Scope, Send

from emulator import errors
from emulator.state import State

ADMIN_PREFIX = "/_emulator"
TRANSPORT_KEY = "emulator.transport"


class FaultModes(BaseModel):
    """The switchable modes; unknown names are refused so a typo cannot silently do nothing."""

    model_config = ConfigDict(extra="forbid")

    latency_ms: float = Field(0.0, ge=0)
    jitter_ms: float = Field(0.0, ge=0)
    error_429_rate: float = Field(0.0, ge=0, le=1)
    error_429_for_s: float = Field(0.0, ge=0)  # every request is throttled for this long
    retry_after_s: float | None = Field(None, ge=0)  # sent as Retry-After on injected 429s
    error_500_rate: float = Field(0.0, ge=0, le=1)
    error_503_rate: float = Field(0.0, ge=0, le=1)
    hang_rate: float = Field(0.0, ge=0, le=1)  # never answer (until the client gives up)
    drop_rate: float = Field(0.0, ge=0, le=1)  # close the TCP connection without an answer
    times: int | None = Field(None, ge=0)  # request faults hit at most this many requests
    paths: list[str] = Field(default_factory=list)  # path prefixes; empty = every Adobe route
    max_requests_per_s: float = Field(0.0, ge=0)  # 0 = no cap (AEP guidance: 1,000)
    max_messages_per_s: float = Field(0.0, ge=0)  # 0 = no cap (AEP guidance: 10,000)
    fail_records: list[str] = Field(default_factory=list)  # identity ids whose records fail
    fail_record_rate: float = Field(0.0, ge=0, le=1)
    fail_record_status: int = Field(500, ge=400, le=599)
    fail_record_times: int | None = Field(None, ge=0)  # per identity; None = always
    expire_tokens: bool = False  # action: expire every issued token now
    token_lifetime_s: float | None = Field(None, gt=0)  # for tokens issued from now on
    cja_rate_limit_requests: int | None = Field(None, ge=1)
    cja_rate_limit_window_s: float | None = Field(None, gt=0)
    external_delay_s: float = Field(0.0, ge=0)  # External Audiences operations and runs
    external_run_failures: int = Field(0, ge=0)  # the next N ingestion runs fail
    seed: int | None = None


class Faults:
    """The active modes plus the counters the modes need (windows, remaining hits)."""

    def __init__(self, state: State) -> None:
        self.state = state
        self.clear()

    def clear(self) -> None:
        self.modes = FaultModes()
        self.rng = random.Random()
        self.throttle_until = 0.0
        self.remaining: int | None = None
        self.record_failures: dict[str, int] = {}
        self.window_start = 0
        self.window_requests = 0
        self.window_messages = 0
        self.state.token_lifetime_s = self.state.config.token_lifetime_s

    def update(self, changes: dict[str, Any]) -> dict[str, Any]:
        """Merge ``changes`` into the active modes; actions run once and are not kept."""
        merged = self.modes.model_dump() | changes
        modes = FaultModes.model_validate(merged)
        if modes.expire_tokens:
            self.state.expire_tokens()
            modes.expire_tokens = False
        if modes.token_lifetime_s is not None:
            self.state.token_lifetime_s = modes.token_lifetime_s
        if "error_429_for_s" in changes:
            self.throttle_until = time.time() + modes.error_429_for_s
        if "times" in changes:
            self.remaining = modes.times
        if "seed" in changes and modes.seed is not None:
            self.rng = random.Random(modes.seed)
        if "fail_records" in changes or "fail_record_times" in changes:
            self.record_failures = {}
        self.modes = modes
        return self.describe()

    def describe(self) -> dict[str, Any]:
        out = self.modes.model_dump()
        out["throttled_for_s"] = max(0.0, round(self.throttle_until - time.time(), 3))
        out["remaining"] = self.remaining
        return out

    # -- request level ----------------------------------------------------------------
    def applies_to(self, path: str) -> bool:
        prefixes = self.modes.paths
        return not prefixes or any(path.startswith(p) for p in prefixes)

    def _take(self) -> bool:
        """Consume one of the ``times`` budget; False once it is spent."""
        if self.remaining is None:
            return True
        if self.remaining <= 0:
            return False
        self.remaining -= 1
        return True

    def pick(self) -> str | None:
        """Which request fault (if any) hits this request."""
        m = self.modes
        if time.time() < self.throttle_until and self._take():
            return "429"
        for name, rate in (
            ("drop", m.drop_rate),
            ("hang", m.hang_rate),
            ("429", m.error_429_rate),
            ("503", m.error_503_rate),
            ("500", m.error_500_rate),
        ):
            if rate and self.rng.random() < rate and self._take():
                return name
        return None

    def delay_s(self) -> float:
        m = self.modes
        if not (m.latency_ms or m.jitter_ms):
            return 0.0
        return (m.latency_ms + self.rng.uniform(0, m.jitter_ms)) / 1000.0

    def _roll_window(self) -> None:
        second = int(time.monotonic())
        if second != self.window_start:
            self.window_start = second
            self.window_requests = 0
            self.window_messages = 0

    def admit_request(self) -> bool:
        cap = self.modes.max_requests_per_s
        if not cap:
            return True
        self._roll_window()
        if self.window_requests >= cap:
            return False
        self.window_requests += 1
        return True

    def admit_messages(self, count: int) -> bool:
        cap = self.modes.max_messages_per_s
        if not cap:
            return True
        self._roll_window()
        if self.window_messages + count > cap:
            return False
        self.window_messages += count
        return True

    def retry_after_header(self) -> dict[str, str]:
        if self.modes.retry_after_s is None:
            return {}
        return {"Retry-After": str(math.ceil(self.modes.retry_after_s))}

    # -- record level -----------------------------------------------------------------
    @property
    def record_faults_on(self) -> bool:
        return bool(self.modes.fail_records or self.modes.fail_record_rate)

    def record_failure(self, identity_ids: list[str]) -> int | None:
        """The status a record with these identity ids fails with, or None if it passes."""
        m = self.modes
        chosen = next((i for i in identity_ids if i in m.fail_records), None)
        if chosen is None and m.fail_record_rate and self.rng.random() < m.fail_record_rate:
            chosen = identity_ids[0] if identity_ids else ""
        if chosen is None:
            return None
        if m.fail_record_times is not None:
            used = self.record_failures.get(chosen, 0)
            if used >= m.fail_record_times:
                return None
            self.record_failures[chosen] = used + 1
        return m.fail_record_status


def fault_error(path: str, status: int) -> errors.AdobeHTTPError:
    """An injected error in the dialect of the service that owns ``path``."""
    titles = {
        429: ("Too Many Requests", "Too many requests within specified time duration"),
        500: ("Internal Server Error", "Internal server error, please try again later"),
        503: (
            "Service Unavailable",
            "Service is not currently available. Retry at least 3 times using an "
            "exponential back-off strategy",
        ),
    }
    title, message = titles[status]
    if status == 429 and path.startswith(errors.CJA_PREFIXES):
        return errors.cja_throttled()
    return errors.for_path(path, status, title, message)


async def send_error(send: Send, err: errors.AdobeHTTPError) -> None:
    body = to_json(err.body)
    headers = [(b"content-type", b"application/json"), (b"content-length", str(len(body)).encode())]
    headers += [(k.lower().encode(), v.encode()) for k, v in err.headers.items()]
    await send({"type": "http.response.start", "status": err.status, "headers": headers})
    await send({"type": "http.response.body", "body": body})


class FaultMiddleware:
    """Applies request-level faults and counts every request by route and status."""

    def __init__(self, app: ASGIApp, state: State, faults: Faults, router: Any) -> None:
        self.app = app
        self.state = state
        self.faults = faults
        self.router = router

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        path: str = scope["path"]
        if path.startswith(ADMIN_PREFIX):
            await self.app(scope, receive, send)
            return
        status_box = [0]

        async def counting_send(message: dict[str, Any]) -> None:
            if message["type"] == "http.response.start":
                status_box[0] = message["status"]
            await send(message)

        try:
            await self._serve(scope, receive, counting_send, path)
        finally:
            self.state.stats.requests[(self._route_of(scope), status_box[0])] += 1

    async def _serve(self, scope: Scope, receive: Receive, send: Send, path: str) -> None:
        faults = self.faults
        if faults.applies_to(path):
            delay = faults.delay_s()
            if delay:
                await asyncio.sleep(delay)
            action = faults.pick()
            if action == "drop":
                _drop(scope)
                return
            if action == "hang":
                await _wait_for_disconnect(receive)
                return
            if action is not None:
                err = fault_error(path, int(action))
                if action == "429":
                    err.headers.update(faults.retry_after_header())
                await send_error(send, err)
                return
            if not faults.admit_request():
                err = fault_error(path, 429)
                err.headers.update(faults.retry_after_header())
                await send_error(send, err)
                return
        await self.app(scope, receive, send)

    def _route_of(self, scope: Scope) -> str:
        route = scope.get("route")
        if route is None:
            route = next((r for r in self.router.routes if r.matches(scope)[0] == Match.FULL), None)
        template = getattr(route, "path", None) or scope["path"]
        return f"{scope['method']} {template}"


async def _wait_for_disconnect(receive: Receive) -> None:
    while (await receive())["type"] != "http.disconnect":
        pass


def _drop(scope: Scope) -> None:
    """Abort the TCP connection (RST), as a crashed load balancer or server would."""
    transport = scope.get("extensions", {}).get(TRANSPORT_KEY)
    if transport is None:
        raise ConnectionAbortedError("emulator fault: drop (transport not exposed)")
    transport.abort()


NO_RESPONSE_LOG = "ASGI callable returned without starting response."


class DroppedConnectionFilter(logging.Filter):
    """A "drop" fault returns without answering on purpose; uvicorn would log it as an error."""

    def filter(self, record: logging.LogRecord) -> bool:
        return record.getMessage() != NO_RESPONSE_LOG


def quiet_dropped_connections() -> None:
    logging.getLogger("uvicorn.error").addFilter(DroppedConnectionFilter())
