"""DCCS streaming: ``/collection/batch/{inlet}`` (207) and ``/collection/{inlet}`` (200)."""

from __future__ import annotations

import json

import pytest
import requests

from emulator.process import start_emulator
from tests.emulator.xdm import profile_message, recent

EVENT_SCHEMA = "https://ns.adobe.com/cjaaudiencesdemo/schemas/69e398645c204a44a09c0b63581e725e"
EVENT_DATASET = "659261be458ceedd76146386"
DEV_DATASET = "65a1f046dbc5ad1dba86ba8e"
DEV_SCHEMA = "https://ns.adobe.com/cjaaudiencesdemo/schemas/9fb12b3fef194ed8b730560cf83dfb7f"
DEV_INLET = "9d7a3c1e5b2f4a6c8e0d1f2a3b4c5d6e"


def test_batch_answers_207_per_message_in_request_order(client):
    c = client.emu.config
    good = [profile_message(c, f"ecid-{i}") for i in range(3)]
    bad = {"header": {}, "body": {}}
    response = client.stream([good[0], bad, good[1], good[2]])
    assert response.status_code == 207
    body = response.json()
    assert body["inletId"] == c["inlet_id"]
    assert isinstance(body["receivedTimeMs"], int)
    statuses = [r.get("statusCode") for r in body["responses"]]
    assert statuses == [None, 400, None, None]
    assert body["responses"][0]["xactionId"].startswith(body["batchId"])
    assert "Message has unknown xdm format" in body["responses"][1]["message"]
    assert f"inletId: [{c['inlet_id']}]" in body["responses"][1]["message"]
    assert [m["identity"] for m in client.emu.membership("aud-1")] == ["ecid-0", "ecid-1", "ecid-2"]
    stats = client.emu.stats()["messages"]
    assert (stats["accepted"], stats["rejected"]) == (3, 1)


def _mutate(message, path, value):
    target = message
    for key in path[:-1]:
        target = target[key]
    if value is ...:
        del target[path[-1]]
    else:
        target[path[-1]] = value
    return message


@pytest.mark.parametrize(
    ("path", "value", "text"),
    [
        (("header",), ..., "header is missing"),
        (("header", "schemaRef"), ..., "header.schemaRef.id is missing"),
        (("header", "imsOrgId"), "OTHER@AdobeOrg", "absent or wrong ims org"),
        (("header", "schemaRef", "id"), "https://ns.adobe.com/x/schemas/nope", "does not exist"),
        (("header", "datasetId"), "nope", "unknown dataset"),
        (("header", "datasetId"), ..., "unknown dataset"),
        (("header", "datasetId"), EVENT_DATASET, "Schema mismatch"),
        (("header", "datasetId"), DEV_DATASET, "unknown dataset"),  # another sandbox's dataset
        (("body",), ..., "body is missing"),
        (("body", "xdmMeta"), ..., "xdmMeta.schemaRef.id must equal"),
        (("body", "xdmEntity"), ..., "xdmEntity is missing"),
    ],
)
def test_envelope_errors(client, path, value, text):
    message = _mutate(profile_message(client.emu.config, "ecid-1"), path, value)
    response = client.stream([message])
    assert response.status_code == 207
    [result] = response.json()["responses"]
    assert result["statusCode"] == 400
    assert text in result["message"]
    assert client.emu.membership("aud-1") == []


def test_non_object_message(client):
    [result] = client.stream(["not a message"]).json()["responses"]
    assert result["statusCode"] == 400


def test_absent_ims_org_is_filled_in(client):
    message = _mutate(profile_message(client.emu.config, "ecid-1"), ("header", "imsOrgId"), ...)
    [result] = client.stream([message]).json()["responses"]
    assert "xactionId" in result


def test_single_message_endpoint(client):
    c = client.emu.config
    response = client.send("POST", f"/collection/{c['inlet_id']}", profile_message(c, "ecid-9"))
    assert response.status_code == 200
    body = response.json()
    assert set(body) == {"inletId", "xactionId", "receivedTimeMs"}
    assert client.emu.membership("aud-1")[0]["identity"] == "ecid-9"


def test_single_message_envelope_error(client):
    c = client.emu.config
    message = _mutate(profile_message(c, "ecid-9"), ("header", "imsOrgId"), "X@AdobeOrg")
    response = client.send("POST", f"/collection/{c['inlet_id']}", message)
    assert response.status_code == 400
    assert "absent or wrong ims org" in response.json()["report"]["message"]


def test_payload_over_one_megabyte_is_413(client):
    c = client.emu.config
    message = profile_message(c, "ecid-1")
    message["body"]["xdmEntity"]["padding"] = "x" * (1024 * 1024)
    response = client.stream([message])
    assert response.status_code == 413
    assert "greater than 1MB" in response.json()["report"]["message"]
    assert client.emu.stats()["messages"]["accepted"] == 0


def test_payload_just_under_one_megabyte_is_accepted(client):
    c = client.emu.config
    message = profile_message(c, "ecid-1")
    size = len(json.dumps({"messages": [message]}))
    message["body"]["xdmEntity"]["padding"] = "x" * (1024 * 1024 - size - 200)
    assert client.stream([message]).status_code == 207


@pytest.mark.parametrize(
    ("data", "text"),
    [
        (b'{"messages": [', "Malformed JSON"),
        (b'{"records": []}', '{"messages": [...]}'),
        (b'{"messages": []}', "at least one message"),
        (b"[1, 2]", '{"messages": [...]}'),
    ],
)
def test_malformed_bodies_are_400(client, data, text):
    inlet = client.emu.config["inlet_id"]
    response = client.send(
        "POST",
        f"/collection/batch/{inlet}",
        data=data,
        headers={"Content-Type": "application/json"},
    )
    assert response.status_code == 400
    assert text in response.json()["report"]["message"]


def test_non_json_content_type_is_400(client):
    inlet = client.emu.config["inlet_id"]
    response = client.send(
        "POST", f"/collection/batch/{inlet}", data=b"{}", headers={"Content-Type": "text/plain"}
    )
    assert response.status_code == 400


def test_unknown_inlet_is_404(client):
    response = client.stream([profile_message(client.emu.config, "e")], inlet="nope")
    assert response.status_code == 404


def test_authenticated_inlet_without_token_is_401(emu):
    c = emu.config
    response = requests.post(
        f"{emu.url}/collection/batch/{c['inlet_id']}",
        json={"messages": [profile_message(c, "e")]},
        timeout=10,
    )
    assert response.status_code == 401
    body = response.json()
    assert (
        body["type"]
        == "https://ns.adobe.com/adobecloud/problem/data-collection-service-authorization"
    )
    assert body["title"] == "Authorization"
    assert "Ims service token is empty" in body["report"]["message"]


def test_authenticated_inlet_with_expired_token_is_403(client):
    client.emu.faults(expire_tokens=True)
    response = client.stream([profile_message(client.emu.config, "e")])
    assert response.status_code == 403
    assert "Ims service token is not valid" in response.json()["report"]["message"]


def test_open_inlet_needs_no_headers(emu):
    c = emu.config
    response = requests.post(
        f"{emu.url}/collection/batch/{c['unauthenticated_inlet_id']}",
        json={"messages": [profile_message(c, "e")]},
        timeout=10,
    )
    assert response.status_code == 207
    assert "xactionId" in response.json()["responses"][0]


def test_bad_record_is_accepted_then_dropped_without_sync_validation(client):
    c = client.emu.config
    bad = profile_message(c, "e1", status="qualified")
    no_identity = profile_message(c, "e2")
    del no_identity["body"]["xdmEntity"]["identityMap"]
    body = client.stream([bad, no_identity]).json()
    assert all("xactionId" in r for r in body["responses"])
    assert "synchronousValidation" not in body
    assert client.emu.membership("aud-1") == []
    assert client.emu.stats()["messages"]["dropped"] == 2


def _one(client, message, **params):
    """POST /collection/{inlet}: the endpoint Adobe offers synchronous validation on."""
    inlet = client.emu.config["inlet_id"]
    return client.send("POST", f"/collection/{inlet}", message, params=params)


def test_synchronous_validation_reports_record_errors(client):
    c = client.emu.config
    good, bad = profile_message(c, "e1"), profile_message(c, "e2", status="qualified")
    failed = _one(client, bad, syncValidation="true")
    assert failed.status_code == 400
    assert "is not one of existing, realized, exited" in failed.json()["report"]["message"]
    passing = _one(client, good, synchronousValidation="true").json()
    assert passing["synchronousValidation"] == {"status": "pass"}


def test_batch_endpoint_has_no_synchronous_validation(client):
    c = client.emu.config
    bad = profile_message(c, "e2", status="qualified")
    body = client.stream([bad], params={"synchronousValidation": "true"}).json()
    assert "xactionId" in body["responses"][0] and "synchronousValidation" not in body


def test_synchronous_validation_is_limited_to_60_requests_per_minute(client):
    message = profile_message(client.emu.config, "e1")
    statuses = [_one(client, message, syncValidation="true").status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60
    assert statuses[60] == 429
    assert _one(client, message).status_code == 200  # without it, no such limit


def test_event_records_need_id_and_timestamp(client):
    c = client.emu.config
    event = profile_message(c, "e1", dataset_id=EVENT_DATASET, schema_id=EVENT_SCHEMA)
    refused = _one(client, event, syncValidation="true").json()
    assert "xdmEntity._id and xdmEntity.timestamp" in refused["report"]["message"]
    event["body"]["xdmEntity"].update(_id="ev-1", timestamp="2026-11-01T00:00:00Z")
    assert "xactionId" in _one(client, event, syncValidation="true").json()
    assert client.emu.membership("aud-1") == []  # events do not reach the profile store


def test_membership_last_qualification_time_wins(client):
    c = client.emu.config
    client.stream([profile_message(c, "e1", qualified_at=recent(3))])
    client.stream([profile_message(c, "e1", status="exited", qualified_at=recent(4))])
    [member] = client.emu.membership("aud-1")
    assert (member["status"], member["last_qualification_time"]) == ("realized", recent(3))
    client.stream([profile_message(c, "e1", status="exited", qualified_at=recent(2, 1))])
    [member] = client.emu.membership("aud-1")
    assert member["status"] == "exited"


def test_memberships_merge_per_namespace_and_audience(client):
    c = client.emu.config
    client.stream(
        [
            profile_message(c, "e1", "aud-1"),
            profile_message(c, "e1", "aud-2"),
            profile_message(c, "e1", "aud-1", segment_namespace="cjaAudiencesDev"),
        ]
    )
    assert len(client.emu.membership("aud-1")) == 1
    assert len(client.emu.membership("aud-2")) == 1
    assert len(client.emu.membership("aud-1", namespace="cjaAudiencesDev")) == 1
    assert client.emu.stats()["profiles"]["prod"] == 1


def test_missing_qualification_time_defaults_to_receipt(client):
    client.stream([profile_message(client.emu.config, "e1", qualified_at=None)])
    [member] = client.emu.membership("aud-1")
    assert member["last_qualification_time"].endswith("Z")


def test_sandboxes_are_isolated(client):
    c = client.emu.config
    dev = profile_message(c, "e-dev", dataset_id=DEV_DATASET, schema_id=DEV_SCHEMA)
    body = client.stream([dev], inlet=DEV_INLET).json()
    assert "xactionId" in body["responses"][0]
    assert client.emu.membership("aud-1") == []
    assert [m["identity"] for m in client.emu.membership("aud-1", sandbox="dev")] == ["e-dev"]
    stats = client.emu.stats()["messages"]
    assert stats["accepted_by_sandbox"] == {"dev": 1}


def test_state_survives_a_restart(tmp_path, emu):
    server = start_emulator(tmp_path)
    try:
        c = server.config
        headers = server.headers()
        requests.post(
            f"{server.url}/collection/batch/{c['inlet_id']}",
            json={"messages": [profile_message(c, f"e{i}") for i in range(3)]},
            headers=headers,
            timeout=10,
        ).raise_for_status()
        partial = [profile_message(c, "e3", "aud-2"), {"header": {}}]  # journaled re-encoded
        requests.post(
            f"{server.url}/collection/batch/{c['inlet_id']}",
            json={"messages": partial},
            headers=headers,
            timeout=10,
        ).raise_for_status()
        requests.post(
            f"{server.url}/data/core/ups/audiences",
            json={"name": "kept", "audienceId": "aud-1"},
            headers=headers,
            timeout=10,
        ).raise_for_status()
    finally:
        server.stop()
    server = start_emulator(tmp_path)
    try:
        assert len(server.membership("aud-1")) == 3
        assert [m["identity"] for m in server.membership("aud-2")] == ["e3"]
        listed = requests.get(
            f"{server.url}/data/core/ups/audiences", headers=server.headers(), timeout=10
        ).json()
        assert [a["name"] for a in listed["children"]] == ["kept"]
    finally:
        server.stop()


def test_stats_count_received_records_per_org_in_a_one_second_window(client):
    c = client.emu.config
    for batch in (3, 4):
        client.stream([profile_message(c, f"ecid-{batch}-{i}") for i in range(batch)])
    rate = client.emu.stats()["records_per_s_by_org"][c["org_id"]]
    assert rate["window_s"] == 1.0 and rate["received"] == 7
    assert rate["max"] == 7  # both requests fell in one second
    assert rate["current"] in (0, 7)


def test_the_sliding_window_forgets_old_arrivals():
    from emulator.state import OrgRate

    rate = OrgRate()
    rate.add(5, now=0.0, wall=100.9)
    rate.add(5, now=0.5, wall=101.4)
    rate.add(3, now=1.2, wall=102.1)  # the first arrival left the window
    stats = rate.as_dict(now=1.3)
    assert (stats["current"], stats["max"], stats["received"]) == (8, 10, 13)
    assert stats["per_second"] == {"100": 5, "101": 5, "102": 3}
    assert stats["max_calendar_second"] == 5
    assert rate.as_dict(now=5.0)["current"] == 0


def test_membership_needs_a_provisioned_custom_non_people_namespace(client):
    """Inferred from Adobe's external-audience tutorial: the record is refused downstream."""
    c = client.emu.config
    for namespace in ("ups", "Email", "nosuch"):
        message = profile_message(c, "e1", segment_namespace=namespace)
        refused = _one(client, message, synchronousValidation="true")
        assert refused.status_code == 400, refused.text
        message = refused.text
        assert f"segmentMembership.{namespace}" in message
        assert "custom non-people identity namespace" in message
    assert client.emu.membership("aud-1", namespace="ups") == []


def test_a_dataset_not_enabled_for_profile_never_reaches_profile(client):
    c = client.emu.config
    body = client.stream([profile_message(c, "e1", dataset_id="65d0a1b2c3d4e5f60718293a")]).json()
    assert "xactionId" in body["responses"][0]
    assert client.emu.membership("aud-1") == []
