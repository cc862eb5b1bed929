"""CJA's request limits: per user (12 per 6 s), per org (60 reports a minute, 6 at once).

Every CJA route counts against the user limit (Adobe's FAQ: 429 ``{"error_code": "429050"}``).
The reporting overview adds per-org limits for reports: requests per minute and concurrent
requests. All answer 429 in the gateway's ``429050`` shape, the only one Adobe documents.
"""

from __future__ import annotations

import collections
import contextlib
import time
from collections.abc import Iterator

from fastapi import Request

from emulator import errors
from emulator.auth import check_gateway
from emulator.faults import Faults
from emulator.state import State, Token


class CjaLimits:
    """Sliding windows per user and per org, and the org's reports in flight."""

    def __init__(self) -> None:
        self.users: dict[str, collections.deque[float]] = {}
        self.orgs: dict[str, collections.deque[float]] = {}
        self.running: collections.Counter[str] = collections.Counter()

    def clear(self) -> None:
        self.users.clear()
        self.orgs.clear()
        self.running.clear()

    @staticmethod
    def _admit(window: collections.deque[float], limit: int, window_s: float) -> bool:
        now = time.monotonic()
        while window and now - window[0] >= window_s:
            window.popleft()
        if len(window) >= limit:
            return False
        window.append(now)
        return True

    def user(self, client_id: str, limit: int, window_s: float) -> None:
        if not self._admit(self.users.setdefault(client_id, collections.deque()), limit, window_s):
            raise errors.cja_throttled()

    @contextlib.contextmanager
    def report(self, org_id: str, per_minute: int, concurrent: int) -> Iterator[None]:
        """A report slot of the org: within its per-minute budget and concurrency."""
        if self.running[org_id] >= concurrent:
            raise errors.gateway(
                "429050", f"Too many requests: at most {concurrent} concurrent reports per org"
            )
        if not self._admit(self.orgs.setdefault(org_id, collections.deque()), per_minute, 60.0):
            raise errors.gateway(
                "429050", f"Too many requests: at most {per_minute} reports per minute per org"
            )
        self.running[org_id] += 1
        try:
            yield
        finally:
            self.running[org_id] -= 1


def check_cja(request: Request) -> Token:
    """Gateway checks plus the per-user rate limit; returns the caller's token."""
    state: State = request.app.state.emulator
    faults: Faults = request.app.state.faults
    token = check_gateway(request)
    limit = faults.modes.cja_rate_limit_requests or state.config.cja.rate_limit_requests
    window_s = faults.modes.cja_rate_limit_window_s or state.config.cja.rate_limit_window_s
    limits: CjaLimits = request.app.state.cja_limits
    limits.user(token.client_id, limit, window_s)
    return token


def report_slot(request: Request, token: Token) -> contextlib.AbstractContextManager[None]:
    config = request.app.state.emulator.config.cja
    limits: CjaLimits = request.app.state.cja_limits
    return limits.report(
        token.org_id, config.org_rate_limit_per_minute, config.max_concurrent_reports
    )
