"""Streams membership messages to AEP's batch endpoint ``/collection/batch/{inlet}``.

What keeps it fast: requests packed close to a byte budget under the 1 MB limit, a few
keep-alive sessions working in parallel, and work that is skipped (acknowledged chunks) never
serialized. What keeps it safe: a token bucket shared by every publish in the process, backoff
with jitter on throttling and server errors, per-message handling of 207 answers, halving of
requests AEP refuses as a whole, and a dead letter (with AEP's status and message) for a
record that keeps failing instead of failing the whole publish for it.
"""

from __future__ import annotations

import json
import logging
import threading
import time
from collections.abc import Callable, Iterable
from concurrent.futures import Future, ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import Any

import requests
from requests.adapters import HTTPAdapter

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.adobe.http import TokenProvider
from cja_audiences.adobe.rate import RateLimiter
from cja_audiences.adobe.retry import (
    RetriesExhausted,
    RetryPolicy,
    backoff_delay,
    call_with_retries,
)

log = logging.getLogger(__name__)

MAX_REQUEST_BYTES = 1_000_000  # AEP answers 413 above 1 MB (adobe-apis.md §4.5)
DEFAULT_BYTE_BUDGET = 900_000  # headroom for proxies that count differently
_OPEN = b'{"messages":['
_CLOSE = b"]}"

Item = tuple[int, bytes]  # (row index within its chunk, encoded message)


@dataclass(frozen=True)
class SendOptions:
    """Knobs of the streaming sender; defaults follow AEP's documented limits."""

    concurrency: int = 4
    rate_limit: float = 1500.0  # records/s for the whole process and org; 0 = off
    byte_budget: int = DEFAULT_BYTE_BUDGET
    timeout: float = 60.0
    max_retries: int = 8  # transient failures of one request before the publish fails
    message_attempts: int = 3  # sends of a message AEP keeps refusing before it is dead-lettered
    backoff_base: float = 0.5
    backoff_cap: float = 30.0

    def __post_init__(self) -> None:
        if not 0 < self.byte_budget <= MAX_REQUEST_BYTES:
            raise ValueError(f"byte_budget must be in 1..{MAX_REQUEST_BYTES}")
        if self.concurrency < 1:
            raise ValueError("concurrency must be at least 1")


def request_body(messages: Iterable[bytes]) -> bytes:
    return _OPEN + b",".join(messages) + _CLOSE


def pack(
    items: list[Item], budget: int, max_records: int | None = None
) -> tuple[list[list[Item]], list[Item]]:
    """Split items into request bodies of at most ``budget`` bytes (and ``max_records``
    messages), keeping their order.

    Returns (requests, oversize): an item that alone exceeds the budget cannot be sent.
    """
    requests_: list[list[Item]] = []
    oversize: list[Item] = []
    current: list[Item] = []
    size = len(_OPEN) + len(_CLOSE)
    for item in items:
        length = len(item[1])
        if len(_OPEN) + len(_CLOSE) + length > budget:
            oversize.append(item)
            continue
        added = length + (1 if current else 0)
        full = max_records is not None and len(current) >= max_records
        if current and (size + added > budget or full):
            requests_.append(current)
            current, size, added = [], len(_OPEN) + len(_CLOSE), length
        current.append(item)
        size += added
    if current:
        requests_.append(current)
    return requests_, oversize


@dataclass(frozen=True)
class Failure:
    """A message AEP refused (status may be None when AEP gave no per-message status)."""

    key: int
    status_code: int | None
    message: str


def parse_multi_status(body: Any, count: int) -> list[tuple[int, int | None, str]]:
    """Failed positions of a 207 answer: ``responses[]`` is in request order (§4.4).

    A response item with ``xactionId`` and no error status succeeded; missing items count as
    failed so they are retried rather than silently assumed delivered.
    """
    responses = body.get("responses") if isinstance(body, dict) else None
    if not isinstance(responses, list):
        return [(i, None, "207 answer without a responses list") for i in range(count)]
    failed = []
    for i in range(count):
        item = responses[i] if i < len(responses) else None
        if not isinstance(item, dict):
            failed.append((i, None, "no per-message response"))
            continue
        status = item.get("statusCode")
        status = int(status) if status is not None else None
        if (status is None or status < 400) and item.get("xactionId"):
            continue
        failed.append((i, status, str(item.get("message") or "message refused")))
    return failed


class SendError(RuntimeError):
    """The publish cannot continue (retries exhausted, credentials or inlet refused)."""


@dataclass
class SendStats:
    """Counters for one publish session (thread-safe through ``add``)."""

    sent: int = 0  # distinct records handed to the sender
    acknowledged: int = 0
    retried: int = 0  # message re-sends after a failure
    requests: int = 0  # HTTP requests, retries included
    splits: int = 0  # whole-request 400/413 answers split in halves
    token_refreshes: int = 0
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, **counts: int) -> None:
        with self._lock:
            for name, value in counts.items():
                setattr(self, name, getattr(self, name) + value)

    def as_dict(self) -> dict[str, int]:
        return {
            name: getattr(self, name)
            for name in ("sent", "acknowledged", "retried", "requests", "splits", "token_refreshes")
        }


class StreamingSender:
    """Delivers packed requests with bounded concurrency over keep-alive sessions."""

    def __init__(
        self,
        config: AdobeConfig,
        options: SendOptions,
        tokens: TokenProvider | None,
        stats: SendStats | None = None,
        bucket: RateLimiter | None = None,
    ) -> None:
        if not config.inlet_id:
            raise ValueError("the AEP connection has no inlet_id (extra field 'inlet_id')")
        self.url = f"{config.streaming_url.rstrip('/')}/collection/batch/{config.inlet_id}"
        self.config = config
        self.options = options
        self.tokens = tokens if config.authenticated_inlet else None
        self.stats = stats or SendStats()
        self.bucket = bucket
        self.policy = RetryPolicy(options.max_retries, options.backoff_base, options.backoff_cap)
        self._local = threading.local()
        self._sessions: list[requests.Session] = []
        self._sessions_lock = threading.Lock()

    # -- one request, with every retry rule -------------------------------------------------
    def deliver(self, items: list[Item]) -> list[Failure]:
        """Send ``items`` until each is acknowledged or dead; returns the dead ones."""
        dead: list[Failure] = []
        attempts = dict.fromkeys((key for key, _ in items), 0)
        pending = items
        rounds = 0
        while pending:
            for key, _ in pending:
                attempts[key] += 1
            response = self._post(pending)
            status = response.status_code
            if status in (400, 413):
                return dead + self._split(pending, status, response.text)
            if status not in (200, 207):
                raise SendError(
                    f"POST {self.url} refused: HTTP {status}: {response.text[:300]} "
                    "(check the connection's inlet_id, streaming_url and credentials)"
                )
            failed = parse_multi_status(_json(response), len(pending)) if status == 207 else []
            self.stats.add(acknowledged=len(pending) - len(failed))
            retry: list[Item] = []
            for position, code, message in failed:
                item = pending[position]
                if attempts[item[0]] >= self.options.message_attempts:
                    dead.append(Failure(item[0], code, message))
                else:
                    retry.append(item)
            if retry:
                rounds += 1
                self.stats.add(retried=len(retry))
                time.sleep(self._backoff(rounds))
            pending = retry
        return dead

    def _split(self, items: list[Item], status: int, text: str) -> list[Failure]:
        """AEP refused the request as a whole: halve it until the bad records stand alone."""
        if len(items) == 1:
            return [Failure(items[0][0], status, _message(text))]
        self.stats.add(splits=1, retried=len(items))
        middle = len(items) // 2
        return self.deliver(items[:middle]) + self.deliver(items[middle:])

    def _post(self, items: list[Item]) -> requests.Response:
        """POST until answered with something other than 429, 5xx or no answer; an auth refusal
        (DCCS: 401 for a missing token, 403 for an invalid or expired one) refreshes it once."""
        body = request_body(message for _, message in items)
        session = self._session()

        def send(token: str | None) -> requests.Response:
            if self.bucket:
                self.bucket.acquire(len(items))
            self.stats.add(requests=1)
            return session.post(
                self.url, data=body, headers=self._headers(token), timeout=self.options.timeout
            )

        try:
            return call_with_retries(
                send,
                call=f"POST {self.url}",
                policy=self.policy,
                tokens=self.tokens,
                refresh_on=(401, 403),
                on_retry=lambda _delay: self.stats.add(retried=len(items)),
                on_refresh=lambda: self.stats.add(token_refreshes=1),
            )
        except RetriesExhausted as exc:
            raise SendError(
                f"{exc}. Acknowledged chunks are in the ledger: rerun to resume."
            ) from None

    def _backoff(self, attempt: int) -> float:
        return backoff_delay(attempt, base=self.options.backoff_base, cap=self.options.backoff_cap)

    def _headers(self, token: str | None) -> dict[str, str]:
        if token is None:
            return {"Content-Type": "application/json"}
        return self.tokens.headers(token)  # type: ignore[union-attr]

    def _session(self) -> requests.Session:
        session = getattr(self._local, "session", None)
        if session is None:
            session = requests.Session()
            session.mount("http://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            session.mount("https://", HTTPAdapter(pool_connections=1, pool_maxsize=1))
            self._local.session = session
            with self._sessions_lock:
                self._sessions.append(session)
        return session

    def close(self) -> None:
        with self._sessions_lock:
            for session in self._sessions:
                session.close()
            self._sessions.clear()

    # -- many chunks in parallel ------------------------------------------------------------
    def run(
        self,
        work: Iterable[tuple[Any, list[list[Item]]]],
        on_chunk_done: Callable[[Any, list[Failure], int], None],
    ) -> None:
        """Send every chunk's requests; ``on_chunk_done(chunk, failures, requests)`` runs once
        per chunk after all its requests finished (from a worker thread, one at a time).

        At most ``2 * concurrency`` requests are queued or in flight, so memory stays flat.
        The first error stops new submissions; it is raised once in-flight requests finish.
        """
        slots = threading.BoundedSemaphore(2 * self.options.concurrency)
        done_lock = threading.Lock()
        errors: list[BaseException] = []

        def finished(tracker: _ChunkTracker, future: Future[list[Failure]]) -> None:
            try:
                exc = future.exception()
                if exc is not None:
                    errors.append(exc)
                elif tracker.add(future.result()):
                    with done_lock:
                        on_chunk_done(tracker.chunk, tracker.failures, tracker.total)
            except BaseException as exc:  # noqa: BLE001 - surfaced to the caller below
                errors.append(exc)
            finally:
                slots.release()

        with ThreadPoolExecutor(self.options.concurrency, thread_name_prefix="aep-send") as pool:
            for chunk, requests_ in work:
                if errors:
                    break
                if not requests_:  # nothing sendable: every record failed before sending
                    with done_lock:
                        on_chunk_done(chunk, [], 0)
                    continue
                tracker = _ChunkTracker(chunk, len(requests_))
                for request in requests_:
                    slots.acquire()
                    if errors:
                        slots.release()
                        break
                    self.stats.add(sent=len(request))
                    future = pool.submit(self.deliver, request)
                    future.add_done_callback(lambda f, t=tracker: finished(t, f))
        if errors:
            raise errors[0]


class _ChunkTracker:
    """Collects the outcome of a chunk's requests; ``add`` is True for the last one."""

    def __init__(self, chunk: Any, total: int) -> None:
        self.chunk = chunk
        self.total = total
        self.failures: list[Failure] = []
        self._remaining = total
        self._lock = threading.Lock()

    def add(self, failures: list[Failure]) -> bool:
        with self._lock:
            self.failures.extend(failures)
            self._remaining -= 1
            return self._remaining == 0


def _json(response: requests.Response) -> Any:
    try:
        return response.json()
    except ValueError:
        return None


def _message(text: str) -> str:
    """AEP's error message from a JSON error body, else the start of the raw text."""
    try:
        body = json.loads(text)
    except ValueError:
        return text[:300]
    if isinstance(body, dict):
        for key in ("message", "detail", "title"):
            if body.get(key):
                return str(body[key])[:300]
        report = body.get("report")
        if isinstance(report, dict) and report.get("message"):
            return str(report["message"])[:300]
    return text[:300]
