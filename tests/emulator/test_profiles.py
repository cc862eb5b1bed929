"""Unit tests of the profile store (no server): merging, identities, last-write-wins."""

from __future__ import annotations

import pytest

from emulator.profiles import ProfileStore, RecordError, entity_id, identity_key, parse_time


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
