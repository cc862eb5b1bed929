"""Data Collection Core Service: ``/collection/{inlet}`` and ``/collection/batch/{inlet}``.

Like DCCS, the envelope (header, schema, org, dataset) is checked while the request waits and
reported per message in a 207; XDM record validation (identities, membership fields, event
``_id``/``timestamp``) happens downstream and is reported only with
``synchronousValidation=true`` on ``/collection/{inlet}``; otherwise a bad record is accepted with an ``xactionId``
and then dropped before reaching Profile, as Adobe does. Accepted profile records are merged
into the profile store.
"""

from __future__ import annotations

import collections
import itertools
import os
import time
from typing import Any

import msgspec
from fastapi import APIRouter, Request
from msgspec import UNSET
from starlette.responses import Response

from emulator import errors
from emulator.auth import bearer, valid_token
from emulator.catalog import record_streaming
from emulator.config import Inlet
from emulator.faults import Faults, fault_error
from emulator.profiles import SEP, RecordError
from emulator.state import JournalEntry, State
from emulator.typed_messages import Membership, Message, as_dicts, decode_batch

router = APIRouter()

SYNC_VALIDATION_PER_MINUTE = 60
# msgspec parses these bodies (many small, repetitive objects) ~1.4x faster than
# pydantic-core; the parse is the largest single cost of a streaming request.
_decode = msgspec.json.Decoder().decode
_encode = msgspec.json.Encoder().encode
_counter = itertools.count(1)
_PID = os.getpid() % 10000
_AUTH_PROBLEM = "data-collection-service-authorization"
_UNSEEN = object()


class EnvelopeError(Exception):
    """A message DCCS refuses before accepting it: (status, text)."""

    def __init__(self, status: int, text: str) -> None:
        super().__init__(text)
        self.status = status
        self.text = text


def _transaction_base(received_ms: int) -> str:
    return f"{received_ms}:{_PID}:{next(_counter)}"


def _inlet(state: State, inlet_id: str) -> Inlet:
    inlet = state.inlets.get(inlet_id)
    if inlet is None:
        raise errors.dccs(404, "Not Found", f"inlet {inlet_id} does not exist")
    return inlet


def _check_inlet_auth(state: State, request: Request, inlet: Inlet) -> None:
    """Authenticated inlets need a valid IMS token of the inlet's org; open inlets need none."""
    if not inlet.authenticated:
        return
    token = bearer(request)
    rid = request.headers.get("x-request-id") or inlet.id
    if not token:
        raise errors.dccs(
            401, "Authorization", f"[{rid}] Ims service token is empty", _AUTH_PROBLEM
        )
    info = valid_token(state, token)
    if info is None or info.org_id != state.config.org_id:
        raise errors.dccs(
            403, "Authorization", f"[{rid}] Ims service token is not valid", _AUTH_PROBLEM
        )


async def _read_body(request: Request, state: State) -> bytes:
    limit = state.config.streaming.max_body_bytes
    declared = request.headers.get("content-length")
    if declared and declared.isdigit() and int(declared) > limit:
        raise _too_large(int(declared), limit)
    if not request.headers.get("content-type", "").startswith("application/json"):
        raise errors.dccs(400, "Bad Request", "Content-Type must be application/json")
    raw = await request.body()
    if len(raw) > limit:
        raise _too_large(len(raw), limit)
    return raw


def _parse(raw: bytes) -> Any:
    try:
        return _decode(raw)
    except msgspec.DecodeError as exc:
        raise errors.dccs(400, "Bad Request", f"Malformed JSON in request body: {exc}") from exc


def _too_large(size: int, limit: int) -> errors.AdobeHTTPError:
    return errors.dccs(
        413,
        "Payload Too Large",
        f"The total payload request is greater than 1MB ({size} bytes > {limit} bytes)",
    )


def _sync_validation(request: Request, state: State, inlet: Inlet) -> bool:
    """``synchronousValidation=true``, limited (as documented) to 60 requests per minute."""
    value = request.query_params.get("synchronousValidation") or request.query_params.get(
        "syncValidation"
    )
    if value is None or value.lower() != "true":
        return False
    windows: dict[str, collections.deque[float]] = request.app.state.sync_windows
    window = windows.setdefault(inlet.id, collections.deque())
    now = time.monotonic()
    while window and now - window[0] > 60:
        window.popleft()
    if len(window) >= SYNC_VALIDATION_PER_MINUTE:
        raise errors.dccs(
            429, "Too Many Requests", "synchronous validation is limited to 60 requests per minute"
        )
    window.append(now)
    return True


class Collector:
    """Validates and applies the messages of one request against one inlet."""

    def __init__(self, state: State, faults: Faults, inlet: Inlet, sync: bool) -> None:
        self.state = state
        self.faults = faults
        self.inlet = inlet
        self.sync = sync
        self.org = state.config.org_id
        self.prefix = f"inletId: [{inlet.id}] imsOrgId: [{self.org}]"
        self.store = state.profiles[inlet.sandbox]
        self.received = state.now()
        self.applied: list[Any] = []
        self.accepted = 0
        self.rejected = 0
        self.dropped = 0
        self.datasets: collections.Counter[str] = collections.Counter()
        self.failed_in: collections.Counter[str] = collections.Counter()
        self.sync_failures = 0
        self.valid_headers: dict[tuple[Any, Any, Any], tuple[str, bool]] = {}
        self.entries: dict[tuple[str, str, Membership], tuple[str, float, bytes] | None] = {}

    def envelope(self, message: Any) -> tuple[str, bool, dict[str, Any]]:
        """(dataset id, is profile, xdmEntity) of a well-formed message, else EnvelopeError.

        The messages of one request nearly always share a header, so a header seen valid
        once is accepted from a per-request cache; anything unusual takes the full check,
        which also words the error.
        """
        try:
            header = message["header"]
            ref_id = header["schemaRef"]["id"]
            known = self.valid_headers.get((ref_id, header.get("imsOrgId"), header["datasetId"]))
            body = message["body"]
            entity = body["xdmEntity"]
            if (
                known is not None
                and body["xdmMeta"]["schemaRef"]["id"] == ref_id
                and type(entity) is dict
            ):
                return known[0], known[1], entity
        except (KeyError, TypeError):
            pass
        dataset_id, is_profile, entity = self._check(message)
        header = message["header"]
        key = (header["schemaRef"]["id"], header.get("imsOrgId"), dataset_id)
        self.valid_headers[key] = (dataset_id, is_profile)
        return dataset_id, is_profile, entity

    def _check(self, message: Any) -> tuple[str, bool, dict[str, Any]]:
        if not isinstance(message, dict):
            raise EnvelopeError(400, "Message has unknown xdm format: not a JSON object")
        header = message.get("header")
        if not isinstance(header, dict):
            raise EnvelopeError(400, "Message has unknown xdm format: header is missing")
        ref = header.get("schemaRef")
        ref_id = ref.get("id") if isinstance(ref, dict) else None
        if not isinstance(ref_id, str):
            raise EnvelopeError(
                400, "Message has unknown xdm format: header.schemaRef.id is missing"
            )
        org = header.get("imsOrgId")
        if org is not None and org != self.org:
            raise EnvelopeError(400, "Message has an absent or wrong ims org in the header")
        schema = self.state.schemas.get(ref_id)
        if schema is None or schema.sandbox != self.inlet.sandbox:
            raise EnvelopeError(
                400, f"Message has unknown xdm format: schema {ref_id} does not exist"
            )
        dataset_id = header.get("datasetId")
        dataset = self.state.datasets.get(dataset_id) if isinstance(dataset_id, str) else None
        if dataset is None or dataset.sandbox != self.inlet.sandbox:
            raise EnvelopeError(400, f"Message has an unknown dataset in the header: {dataset_id}")
        if dataset.schemaId != ref_id:
            raise EnvelopeError(
                400,
                f"Schema mismatch: dataset {dataset_id} is based on {dataset.schemaId}, "
                f"the message references {ref_id}",
            )
        body = message.get("body")
        if not isinstance(body, dict):
            raise EnvelopeError(400, "Message has unknown xdm format: body is missing")
        meta = body.get("xdmMeta")
        meta_ref = meta.get("schemaRef") if isinstance(meta, dict) else None
        if not isinstance(meta_ref, dict) or meta_ref.get("id") != ref_id:
            raise EnvelopeError(
                400,
                "Message has unknown xdm format: body.xdmMeta.schemaRef.id must equal "
                "header.schemaRef.id",
            )
        entity = body.get("xdmEntity")
        if not isinstance(entity, dict):
            raise EnvelopeError(400, "Message has unknown xdm format: body.xdmEntity is missing")
        return dataset_id, schema.is_profile, entity

    def record(self, dataset_id: str, is_profile: bool, entity: dict[str, Any]) -> None:
        """Validate the XDM record and apply it; RecordError if it cannot be taken.

        Only a Profile-enabled dataset feeds Profile, and membership must be keyed by a
        provisioned custom non-people namespace (Adobe's external-audience tutorial; the
        refusal's wording and its downstream place are inferred).
        """
        if is_profile:
            membership = entity.get("segmentMembership")
            if isinstance(membership, dict):
                for namespace in membership:
                    self._check_membership_namespace(namespace)
            if self.state.datasets[dataset_id].profile_enabled:
                self.store.apply(entity, dataset_id, self.received)
        elif not entity.get("_id") or not entity.get("timestamp"):
            raise RecordError("an ExperienceEvent needs xdmEntity._id and xdmEntity.timestamp")

    def _check_membership_namespace(self, namespace: str) -> None:
        known = self.state.namespaces.get(namespace)
        if known is None or not known.keys_membership:
            raise RecordError(
                f"segmentMembership.{namespace}: {namespace!r} is not a custom non-people "
                "identity namespace provisioned for external audiences in this org"
            )

    def one(self, message: Any, xaction: str) -> dict[str, Any]:
        """The per-message response: {xactionId} or {statusCode, message}."""
        try:
            dataset_id, is_profile, entity = self.envelope(message)
        except EnvelopeError as exc:
            self.rejected += 1
            return {"statusCode": exc.status, "message": f"{self.prefix} {exc.text}"}
        if self.faults.record_faults_on:
            status = self.faults.record_failure(_identity_ids(entity))
            if status is not None:
                self.rejected += 1
                return {
                    "statusCode": status,
                    "message": f"{self.prefix} emulator fault: record failed with {status}",
                }
        return self.take(message, dataset_id, is_profile, entity, xaction)

    def take(
        self, message: Any, dataset_id: str, is_profile: bool, entity: dict[str, Any], xaction: str
    ) -> dict[str, Any]:
        """Apply a message whose envelope passed; accepted unless sync validation refuses it."""
        try:
            self.record(dataset_id, is_profile, entity)
        except RecordError as exc:
            if self.sync:
                self.rejected += 1
                self.sync_failures += 1
                return {"statusCode": 400, "message": f"{self.prefix} {exc}"}
            self.dropped += 1  # accepted by DCCS, refused downstream (async validation)
            self.failed_in[dataset_id] += 1
        else:
            if is_profile:
                self.applied.append(message)
        self.accepted += 1
        self.datasets[dataset_id] += 1
        return {"xactionId": xaction}

    def many(self, messages: list[Any], base: str) -> list[dict[str, Any]]:
        """Every message's response, in order (record faults checked once, not per message)."""
        if self.faults.record_faults_on:
            return [self.one(m, f"{base}:{i}") for i, m in enumerate(messages)]
        out = []
        for i, message in enumerate(messages):
            try:
                dataset_id, is_profile, entity = self.envelope(message)
            except EnvelopeError as exc:
                self.rejected += 1
                out.append({"statusCode": exc.status, "message": f"{self.prefix} {exc.text}"})
                continue
            out.append(self.take(message, dataset_id, is_profile, entity, f"{base}:{i}"))
        return out

    def many_typed(self, messages: list[Message], base: str) -> list[bytes]:
        """Every typed message's response as JSON, in order; the same answers and store as
        :meth:`many` (record faults off). A publisher record whose header was seen valid
        for a Profile-enabled dataset goes straight to the store; anything else (the first
        message of a header, an unprovisioned namespace, a bad time) is handed to
        :meth:`one` as dicts, which checks it, words its error and caches its header.

        The messages of a request nearly always share their header, namespace code and a
        few membership entries, so each is looked at only when it differs from the
        previous message's.
        """
        received = self.received
        merge = self.store.merge_one
        counts = self.datasets
        applied = self.applied
        accepted = b'{"xactionId":"%s:' % base.encode()
        out = []
        taken = run = 0  # records stored inline: in all, and since the header last changed
        ref_id = org = dataset_id = None  # the previous message's header
        inline = False  # whether its records may go straight to the store
        code = prefix = None  # the previous identity's namespace code, and its key prefix
        ns = audience_id = entry = parts = None  # the previous membership, checked and packed
        for i, message in enumerate(messages):
            header = message.header
            if not (
                header.schemaRef.id == ref_id
                and header.datasetId == dataset_id
                and header.imsOrgId == org
            ):
                if run:
                    counts[dataset_id] += run
                    run = 0
                ref_id, org, dataset_id = header.schemaRef.id, header.imsOrgId, header.datasetId
                inline = self._inline_header(ref_id, org, dataset_id)
            body = message.body
            entity = body.xdmEntity
            identities = entity.identityMap
            memberships = entity.segmentMembership
            stored = False
            if (
                inline
                and len(identities) == 1
                and len(memberships) == 1
                and body.xdmMeta.schemaRef.id == ref_id
            ):
                [(this_code, values)] = identities.items()
                [(this_ns, audiences)] = memberships.items()
                if len(values) == 1 and len(audiences) == 1:
                    [(this_audience, this_entry)] = audiences.items()
                    if not (this_ns == ns and this_audience == audience_id and this_entry == entry):
                        ns, audience_id, entry = this_ns, this_audience, this_entry
                        parts = self._membership(ns, audience_id, entry)
                    value = values[0]
                    if parts is not None and value.id:
                        if this_code is not code:
                            code = this_code
                            prefix = f"{code.lower()}{SEP}"
                        merge(prefix + value.id, code, value, *parts, dataset_id, received)
                        stored = True
            if not stored:
                out.append(_encode(self.one(as_dicts(message), f"{base}:{i}")))
                ref_id = None  # the general path may have found the header valid
                continue
            run += 1
            taken += 1
            applied.append(message)
            out.append(b'%s%d"}' % (accepted, i))
        if run:
            counts[dataset_id] += run
        self.accepted += taken
        return out

    def _inline_header(self, ref_id: str, org: str | None, dataset_id: str) -> bool:
        """Whether records under this header may skip the general path: the header passed
        it once in this request, for a profile schema and a Profile-enabled dataset."""
        known = self.valid_headers.get((ref_id, org, dataset_id))
        return known is not None and known[1] and self.state.datasets[dataset_id].profile_enabled

    def _membership(
        self, ns: str, audience_id: str, entry: Membership
    ) -> tuple[str, float, bytes] | None:
        """A typed entry checked and packed by the store (once per request per distinct
        entry); None when the general path must look at it."""
        found = self.entries.get((ns, audience_id, entry), _UNSEEN)
        if found is not _UNSEEN:
            return found
        known = self.state.namespaces.get(ns)
        parts = None
        if known is not None and known.keys_membership:
            until = entry.validUntil
            parts = self.store.membership_parts(
                ns,
                audience_id,
                entry,
                entry.status,
                entry.lastQualificationTime,
                None if until is UNSET else until,
            )
        self.entries[(ns, audience_id, entry)] = parts
        return parts

    def finish(self, raw: bytes | None, total: int) -> None:
        """Count, journal what was applied and record it in the datasets' streaming batches.

        ``raw`` (the request body) is journaled as is when every message was applied.
        """
        stats = self.state.stats
        sandbox = self.inlet.sandbox
        stats.accepted[sandbox] += self.accepted
        stats.rejected[sandbox] += self.rejected
        stats.dropped[sandbox] += self.dropped
        if self.applied:
            body = raw if raw is not None and len(self.applied) == total else None
            if body is None:
                body = _encode({"messages": self.applied})
            self.state.journal(JournalEntry(self.received, sandbox, body))
        for dataset_id, count in self.datasets.items():
            record_streaming(self.state, sandbox, dataset_id, count, self.failed_in[dataset_id])

    def sync_block(self) -> dict[str, Any]:
        return {"status": "fail" if self.sync_failures else "pass"}


def _identity_ids(entity: dict[str, Any]) -> list[str]:
    identity_map = entity.get("identityMap")
    if not isinstance(identity_map, dict):
        return []
    return [
        v["id"]
        for values in identity_map.values()
        if isinstance(values, list)
        for v in values
        if isinstance(v, dict) and isinstance(v.get("id"), str)
    ]


def _admit(faults: Faults, path: str, count: int) -> None:
    if not faults.admit_messages(count):
        err = fault_error(path, 429)
        err.headers.update(faults.retry_after_header())
        raise err


@router.post("/collection/batch/{inlet_id}")
async def collect_batch(inlet_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    faults: Faults = request.app.state.faults
    inlet = _inlet(state, inlet_id)
    _check_inlet_auth(state, request, inlet)
    raw = await _read_body(request, state)
    typed = None if faults.record_faults_on else decode_batch(raw)
    if typed is not None:
        messages: list[Any] = typed.messages
    else:
        payload = _parse(raw)
        messages = payload.get("messages") if isinstance(payload, dict) else None
    if not isinstance(messages, list) or not messages:
        raise errors.dccs(
            400,
            "Bad Request",
            'The request body must be {"messages": [...]} with at least one message',
        )
    state.stats.received_records(state.config.org_id, len(messages))
    _admit(faults, request.url.path, len(messages))
    # Adobe offers synchronous validation on /collection/{inlet} only (KB ka-19680): the
    # batch endpoint ignores the parameter, as DCCS does.
    collector = Collector(state, faults, inlet, sync=False)
    received_ms = int(collector.received * 1000)
    base = _transaction_base(received_ms)
    if typed is not None:
        responses = collector.many_typed(messages, base)
    else:
        responses = [_encode(r) for r in collector.many(messages, base)]
    collector.finish(raw, len(messages))
    return Response(
        _batch_body(inlet.id, base, received_ms, responses),
        status_code=207,
        media_type=errors.JSON,
    )


def _batch_body(inlet_id: str, base: str, received_ms: int, responses: list[bytes]) -> bytes:
    """The 207 body, its per-message answers spliced in as already-encoded JSON."""
    head = {"inletId": inlet_id, "batchId": base, "receivedTimeMs": received_ms, "responses": []}
    return _encode(head)[:-2] + b",".join(responses) + b"]}"  # [:-2] drops the empty "]}"


@router.post("/collection/{inlet_id}")
async def collect_one(inlet_id: str, request: Request) -> Response:
    state: State = request.app.state.emulator
    faults: Faults = request.app.state.faults
    inlet = _inlet(state, inlet_id)
    _check_inlet_auth(state, request, inlet)
    payload = _parse(await _read_body(request, state))
    state.stats.received_records(state.config.org_id, 1)
    _admit(faults, request.url.path, 1)
    sync = _sync_validation(request, state, inlet)
    collector = Collector(state, faults, inlet, sync)
    received_ms = int(collector.received * 1000)
    xaction = _transaction_base(received_ms)
    result = collector.one(payload, xaction)
    collector.finish(None, 1)
    if "statusCode" in result:
        raise errors.dccs(result["statusCode"], "Bad Request", result["message"])
    body: dict[str, Any] = {
        "inletId": inlet.id,
        "xactionId": xaction,
        "receivedTimeMs": received_ms,
    }
    if sync:
        body["synchronousValidation"] = collector.sync_block()
    return errors.json_response(body)
