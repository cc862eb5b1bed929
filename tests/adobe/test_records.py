from __future__ import annotations

import json

import pytest

from cja_audiences.adobe.records import (
    PROFILE_RECORD_SCHEMA,
    STATUS_EXITED,
    STATUS_REALIZED,
    InvalidRecord,
    RecordFactory,
    RecordSchemaError,
    qualification_time,
    validate,
)


def factory(**overrides) -> RecordFactory:
    fields = {
        "org_id": "ORG@AdobeOrg",
        "dataset_id": "ds1",
        "schema_id": "https://ns.adobe.com/tenant/schemas/abc",
        "segment_namespace": "cjaAudiences",
        "audience_id": "high_value",
        "qualification_time": "2026-11-28T10:00:00.000+00:00",
    }
    return RecordFactory(**(fields | overrides))


@pytest.mark.parametrize("status", [STATUS_REALIZED, STATUS_EXITED])
@pytest.mark.parametrize("identity", ["abc", 'quote"and\\slash', "ünïcødé", "a" * 1024])
def test_encoded_message_equals_built_dict_and_meets_schema(status, identity):
    f = factory()
    encoded = json.loads(f.encode("ECID", identity, status))
    assert encoded == f.build("ECID", identity, status)
    assert validate(encoded, PROFILE_RECORD_SCHEMA) == []
    entity = encoded["body"]["xdmEntity"]
    assert entity["identityMap"] == {"ECID": [{"id": identity, "primary": True}]}
    membership = entity["segmentMembership"]["cjaAudiences"]["high_value"]
    assert membership == {"status": status, "lastQualificationTime": f.qualification_time}
    assert encoded["header"]["schemaRef"] == encoded["body"]["xdmMeta"]["schemaRef"]


@pytest.mark.parametrize("identity", ["", "   ", None, 12, "x" * 1025])
def test_unusable_identity_is_one_invalid_record(identity):
    with pytest.raises(InvalidRecord, match="identityMap.ECID"):
        factory().encode("ECID", identity, STATUS_REALIZED)


@pytest.mark.parametrize(
    ("overrides", "namespace", "path"),
    [
        ({"dataset_id": None}, "ECID", "header.datasetId"),
        ({"schema_id": ""}, "ECID", "schemaRef.id"),
        ({"qualification_time": "yesterday"}, "ECID", "lastQualificationTime"),
        ({}, "bad namespace!", "identityMap key"),
    ],
)
def test_configuration_that_breaks_the_schema_fails_before_any_record(overrides, namespace, path):
    with pytest.raises(RecordSchemaError, match=path):
        factory(**overrides).encode(namespace, "abc", STATUS_REALIZED)


def test_validator_reports_every_violation_with_its_path():
    message = factory().build("ECID", "abc", "qualified")
    message["body"]["xdmEntity"]["identityMap"]["ECID"][0]["primary"] = False
    message["header"]["extra"] = 1
    del message["header"]["imsOrgId"]
    errors = validate(message, PROFILE_RECORD_SCHEMA)
    assert any("status" in e and "qualified" in e for e in errors)
    assert any(e.endswith(".primary: must be True") for e in errors)
    assert "$.header.extra: unknown key" in errors
    assert "$.header.imsOrgId: required" in errors


def test_two_identities_or_two_audiences_are_refused():
    message = factory().build("ECID", "abc", STATUS_REALIZED)
    entity = message["body"]["xdmEntity"]
    entity["identityMap"]["Email"] = [{"id": "a@b.c", "primary": True}]
    entity["segmentMembership"]["cjaAudiences"]["other"] = entity["segmentMembership"][
        "cjaAudiences"
    ]["high_value"]
    errors = validate(message, PROFILE_RECORD_SCHEMA)
    assert any("identityMap: at most 1" in e for e in errors)
    assert any("segmentMembership.cjaAudiences: at most 1" in e for e in errors)


def test_qualification_time_is_utc_iso_with_milliseconds():
    value = qualification_time()
    assert value.endswith("+00:00") and len(value.split(".")[1]) == len("000+00:00")


@pytest.mark.parametrize("identity", ["abc", 'quote"and\\slash'])
def test_realized_records_carry_valid_until(identity):
    f = factory()
    until = "2026-12-28T10:00:00.000+00:00"
    encoded = json.loads(f.encode("ECID", identity, STATUS_REALIZED, until))
    assert encoded == f.build("ECID", identity, STATUS_REALIZED, until)
    assert validate(encoded, PROFILE_RECORD_SCHEMA) == []
    membership = encoded["body"]["xdmEntity"]["segmentMembership"]["cjaAudiences"]["high_value"]
    assert membership["validUntil"] == until
    assert json.loads(f.encode("ECID", identity, STATUS_REALIZED)) == f.build(
        "ECID", identity, STATUS_REALIZED
    )


def test_flow_id_goes_in_the_header_when_the_connection_has_one():
    """Adobe's streaming spec lists header.flowId (the HTTP API dataflow); tutorials omit it."""
    with_flow = json.loads(factory(flow_id="flow-1").encode("ECID", "e1", STATUS_REALIZED))
    assert with_flow["header"]["flowId"] == "flow-1"
    assert validate(with_flow, PROFILE_RECORD_SCHEMA) == []
    assert "flowId" not in factory().build("ECID", "e1", STATUS_REALIZED)["header"]
