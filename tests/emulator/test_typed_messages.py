"""The typed (publisher-shape) streaming path answers, stores and journals as the general one."""

from __future__ import annotations

import json

import msgspec
from pydantic_core import from_json

from emulator.config import load_config
from emulator.faults import Faults
from emulator.state import State
from emulator.streaming import Collector
from emulator.typed_messages import decode_batch
from tests.emulator.xdm import profile_message

INLET = "c4f17584a8574259bd5d3d02b32a0505"
EVENT_SCHEMA = "https://ns.adobe.com/cjaaudiencesdemo/schemas/69e398645c204a44a09c0b63581e725e"
EVENT_DATASET = "659261be458ceedd76146386"
NOT_PROFILE_ENABLED = "65d0a1b2c3d4e5f60718293a"


def _messages(c):
    def entry(message):
        [audiences] = message["body"]["xdmEntity"]["segmentMembership"].values()
        [value] = audiences.values()
        return value

    until = profile_message(c, "e5", qualified_at="2026-11-02T00:00:00Z")
    entry(until)["validUntil"] = "2026-12-02T00:00:00Z"
    bad_until = profile_message(c, "e6")
    entry(bad_until)["validUntil"] = "soon"
    no_org = profile_message(c, "e7")
    del no_org["header"]["imsOrgId"]
    two_ids = profile_message(c, "e8")
    two_ids["body"]["xdmEntity"]["identityMap"]["Email"] = [{"id": "e8@example.com"}]
    meta = profile_message(c, "e9")
    meta["body"]["xdmMeta"] = {"schemaRef": {"id": EVENT_SCHEMA}}
    wrong_org = profile_message(c, "e10")
    wrong_org["header"]["imsOrgId"] = "OTHER@AdobeOrg"
    return [
        profile_message(c, "e1", qualified_at="2026-11-02T00:00:00Z"),  # first: caches header
        profile_message(c, "e2"),
        profile_message(c, "e1", status="exited", qualified_at="2026-11-01T00:00:00Z"),  # older
        profile_message(c, "e1", "aud-2", status="exited", qualified_at="2026-11-03T00:00:00Z"),
        profile_message(c, "e3", segment_namespace="ECID"),  # not provisioned: dropped
        profile_message(c, "e4", qualified_at="not a time"),  # dropped
        profile_message(c, "e4", status="bogus"),  # dropped
        until,
        bad_until,
        no_org,
        two_ids,
        meta,  # 400: xdmMeta must match the header
        wrong_org,  # 400
        profile_message(c, "e11", dataset_id="nope"),  # 400
        profile_message(c, "e12", dataset_id=NOT_PROFILE_ENABLED),  # accepted, not stored
        profile_message(c, "e14", dataset_id=NOT_PROFILE_ENABLED),  # its header now cached
        profile_message(c, "e13", dataset_id=EVENT_DATASET, schema_id=EVENT_SCHEMA),  # dropped
        profile_message(c, "e15", dataset_id=EVENT_DATASET, schema_id=EVENT_SCHEMA),  # again
        profile_message(c, "E2", namespace="ecid", qualified_at="2026-11-05T00:00:00Z"),
    ]


def _collect(tmp_path, raw, typed):
    """What one request did, and how many messages the typed path handed to ``one``."""
    state = State(load_config(None), tmp_path)
    state.datasets[EVENT_DATASET].profile_enabled = True  # events are still no profiles
    collector = Collector(state, Faults(state), state.inlets[INLET], sync=False)
    collector.received = 1_800_000_000.0
    general = collector.one
    handed = []
    collector.one = lambda message, xaction: handed.append(xaction) or general(message, xaction)
    if typed:
        batch = decode_batch(raw)
        assert batch is not None, "the body must be in the typed shape"
        answers = [json.loads(r) for r in collector.many_typed(batch.messages, "b")]
    else:
        answers = collector.many(msgspec.json.decode(raw)["messages"], "b")
    collector.finish(raw, len(answers))
    store = state.profiles["prod"]
    [journaled] = state.take_journal()
    replayed = [
        (m["header"]["datasetId"], m["body"]["xdmEntity"])
        for m in from_json(journaled.body)["messages"]
    ]
    return {
        "answers": answers,
        "profiles": {k: (p.entity(), p.sources) for k, p in store.by_identity.items()},
        "members": {k: list(v) for k, v in store.members.items()},
        "counts": (collector.accepted, collector.rejected, collector.dropped),
        "datasets": dict(collector.datasets),
        "failed_in": dict(collector.failed_in),
        "journal": replayed,
    }, len(handed)


def test_the_typed_path_matches_the_general_one(tmp_path):
    c = {
        "org_id": "DEMO1234567890ABCDEF0123@AdobeOrg",
        "schema_id": "https://ns.adobe.com/cjaaudiencesdemo/schemas/0bf7ffcc8f734ed18b883796ddda804f",
        "dataset_id": "65cfea99ea9d43c2b00f14bc",
    }
    raw = json.dumps({"messages": _messages(c)}).encode()
    typed, handed = _collect(tmp_path / "typed", raw, typed=True)
    general, _ = _collect(tmp_path / "general", raw, typed=False)
    assert typed == general
    assert handed == 14  # 5 records went straight to the store: e2, e1 twice, e5 and E2
    assert typed["counts"] == (16, 3, 6)  # accepted (dropped ones included), rejected, dropped
    identities = {k.split("\x1f")[1] for k in typed["profiles"]}
    assert identities == {"e1", "e2", "E2", "e5", "e7", "e8", "e8@example.com"}
    assert {k.split("\x1f")[1] for k in typed["members"]} == {"aud-1", "aud-2"}


def test_other_shapes_are_left_to_the_general_path():
    c = {"org_id": "o", "schema_id": "s", "dataset_id": "d"}
    good = profile_message(c, "e1")
    assert decode_batch(json.dumps({"messages": [good]}).encode()) is not None
    for change in (
        lambda m: m["body"]["xdmEntity"].update(_id="x"),  # an attribute
        lambda m: m["body"]["xdmEntity"]["identityMap"]["ECID"][0].update(authenticatedState="x"),
        lambda m: m["body"]["xdmEntity"].pop("segmentMembership"),
        lambda m: m["header"].pop("schemaRef"),
    ):
        message = json.loads(json.dumps(good))
        change(message)
        assert decode_batch(json.dumps({"messages": [message]}).encode()) is None
    assert decode_batch(b'{"messages": [') is None
