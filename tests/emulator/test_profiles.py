"""Unit tests of the profile store (no server): merging, identities, last-write-wins."""

from __future__ import annotations

import pickle

import pytest

from emulator.profiles import (
    Profile,
    ProfileStore,
    RecordError,
    entity_id,
    identity_key,
    parse_time,
)


def _record(ident, audience="a", status="realized", when="2026-11-01T00:00:00Z", ns="ECID"):
    entry = {"status": status}
    if when is not None:
        entry["lastQualificationTime"] = when
    return {
        "identityMap": {ns: [{"id": ident, "primary": True}]},
        "segmentMembership": {"ups": {audience: entry}},
    }


def test_last_qualification_time_wins_regardless_of_arrival_order():
    store = ProfileStore()
    store.apply(_record("x", when="2026-11-02T00:00:00Z"), "ds", 0.0)
    store.apply(_record("x", status="exited", when="2026-11-01T23:00:00Z"), "ds", 1.0)
    [(_, entry)] = store.audience_members("ups", "a")
    assert entry["status"] == "realized"
    store.apply(_record("x", status="exited", when=1793577600000), "ds", 2.0)  # epoch ms
    [(_, entry)] = store.audience_members("ups", "a")
    assert entry["status"] == "exited"


def test_secondary_identities_link_to_one_profile():
    store = ProfileStore()
    record = _record("ecid-1")
    record["identityMap"]["Email"] = [{"id": "a@example.com"}]
    store.apply(record, "ds", 0.0)
    store.apply(_record("a@example.com", audience="b", ns="email"), "ds", 1.0)
    assert store.profile_count == 1
    profile = store.lookup("ecid", "ecid-1")
    assert profile is store.lookup("EMAIL", "a@example.com")
    assert set(profile.entity()["segmentMembership"]["ups"]) == {"a", "b"}


@pytest.mark.parametrize(
    ("entity", "text"),
    [
        ({}, "identityMap is missing"),
        ({"identityMap": {"ECID": "x"}}, "must be a list"),
        ({"identityMap": {"ECID": [{"id": ""}]}}, "non-empty string id"),
        ({"identityMap": {"ECID": [{"id": "x"}]}, "segmentMembership": []}, "must be an object"),
        (
            {"identityMap": {"ECID": [{"id": "x"}]}, "segmentMembership": {"ups": 1}},
            "keyed by audience",
        ),
        (
            {"identityMap": {"ECID": [{"id": "x"}]}, "segmentMembership": {"ups": {"a": 1}}},
            "must be an object",
        ),
        (_record("x", status="gone"), "is not one of"),
        (_record("x", when="soon"), "not an ISO-8601"),
        (_record("x", when=[1]), "not an ISO-8601"),
    ],
)
def test_invalid_records_change_nothing(entity, text):
    store = ProfileStore()
    with pytest.raises(RecordError, match=text):
        store.apply(entity, "ds", 0.0)
    assert store.profile_count == 0 and not store.by_identity


def test_parse_time_treats_naive_as_utc():
    assert parse_time("2026-11-01T00:00:00") == parse_time("2026-11-01T01:00:00+01:00")


def test_entity_ids_are_stable_and_distinct():
    assert entity_id(identity_key("ECID", "1")) == entity_id(identity_key("ecid", "1"))
    assert entity_id(identity_key("ecid", "1")) != entity_id(identity_key("ecid", "2"))


def test_the_store_adds_one_gc_tracked_object_per_profile():
    """Why the layout is what it is: the collector must not rescan millions of parts."""
    import gc

    store = ProfileStore()
    record = _record("x", audience="a")
    record["identityMap"]["Email"] = [{"id": "x@example.com"}]
    profile = store.apply(record, "ds", 0.0)
    gc.collect()
    assert gc.is_tracked(profile)
    assert not gc.is_tracked(profile.identities)
    assert not gc.is_tracked(profile.memberships)
    assert not gc.is_tracked(profile.sources)
    assert profile.attributes is None


def test_the_inline_path_for_publisher_records_matches_the_general_one(monkeypatch):
    records = [
        _record("e1", when="2026-11-02T00:00:00Z"),
        _record("e1", status="exited", when="2026-11-01T00:00:00Z"),  # older: ignored
        _record("E2", audience="b", ns="Email"),
        _record("e1", audience="b", status="exited", when="2026-11-03T00:00:00Z"),
        _record("e3", when="2026-11-01T00:00:00Z"),
    ]
    inline, general = ProfileStore(), ProfileStore()
    monkeypatch.setattr(general, "_apply_simple", lambda *args: None)
    for i, record in enumerate(records):
        inline.apply(dict(record), "ds", float(i))
        general.apply(dict(record), "ds", float(i))
    assert inline.profile_count == general.profile_count == 3
    for key, profile in general.by_identity.items():
        assert inline.by_identity[key].entity() == profile.entity()
        assert inline.by_identity[key].sources == profile.sources
    assert {k: list(v) for k, v in inline.members.items()} == {
        k: list(v) for k, v in general.members.items()
    }
    with pytest.raises(RecordError):
        inline.apply(_record("e9", when="not a time"), "ds", 9.0)
    assert inline.lookup("ECID", "e9") is None


def test_a_profile_pickles_as_its_fields():
    store = ProfileStore()
    record = _record("x", audience="a")
    record["identityMap"]["Email"] = [{"id": "x@example.com"}]
    record["loyalty"] = {"tier": "gold"}
    store.apply(record, "ds", 5.0)
    copy = pickle.loads(pickle.dumps(store))
    [(key, profile)] = [(k, p) for k, p in store.by_identity.items() if k.startswith("ecid")]
    restored = copy.by_identity[key]
    assert restored is copy.by_identity[identity_key("Email", "x@example.com")]
    assert [getattr(restored, f) for f in Profile.__slots__] == [
        getattr(profile, f) for f in Profile.__slots__
    ]
    assert restored.entity() == profile.entity()
