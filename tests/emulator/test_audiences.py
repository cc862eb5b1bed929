"""Audiences API ``/data/core/ups/audiences``: create, get, list, patch, put, delete."""

from __future__ import annotations

import pytest

BASE = "/data/core/ups/audiences"


def _create(client, sandbox=None, **fields):
    body = {"name": "Car buyers", "audienceId": "car-buyers", "namespace": "ups"} | fields
    response = client.send("POST", BASE, body, sandbox=sandbox)
    assert response.status_code == 201, response.text  # the spec's 201 (the page shows 200)
    return response.json()


def test_create_external_audience(client):
    audience = _create(client, description="Really interested", labels=["core/C1"])
    assert audience["type"] == "ExternalSegment"
    assert audience["originName"] == "CUSTOM_UPLOAD"
    assert audience["lifecycleState"] == "published"
    assert audience["sandbox"] == {
        "sandboxId": "57e606c0-0cc2-479a-ba42-ff3303585574",
        "sandboxName": "prod",
        "type": "production",
        "default": True,
    }
    assert audience["imsOrgId"] == client.emu.config["org_id"]
    assert audience["labels"] == ["core/C1"]
    for field in ("id", "creationTime", "updateEpoch", "updateTime", "createEpoch"):
        assert audience[field]


def test_create_segment_definition_audience(client):
    audience = _create(
        client,
        audienceId="pql",
        name="PQL one",
        expression={"type": "PQL", "format": "pql/text", "value": 'homeAddress.country = "US"'},
        evaluationInfo={"continuous": {"enabled": True}},
    )
    assert audience["type"] == "SegmentDefinition"
    assert audience["schema"] == {"name": "_xdm.context.profile"}
    assert client.emu.stats()["audiences"]["prod"] == {"total": 1, "streaming": 1, "edge": 0}


@pytest.mark.parametrize(
    ("fields", "text"),
    [
        ({"name": ""}, "name is required"),
        ({"type": "Magic"}, "type 'Magic' must be one of"),
        ({"originName": "SOMEWHERE"}, "originName"),
        ({"lifecycleState": "live"}, "lifecycleState"),
        ({"namespace": ""}, "namespace"),
        ({"type": "SegmentDefinition"}, "needs expression"),
    ],
)
def test_create_validation(client, fields, text):
    body = {"name": "x", "audienceId": "x"} | fields
    response = client.send("POST", BASE, body)
    assert response.status_code == 400
    assert text in response.json()["detail"]


def test_create_malformed_json(client):
    response = client.send(
        "POST", BASE, data=b"{nope", headers={"Content-Type": "application/json"}
    )
    assert response.status_code == 400
    assert "not valid JSON" in response.json()["detail"]


def test_duplicates_conflict(client):
    _create(client)
    assert (
        client.send("POST", BASE, {"name": "Car buyers", "audienceId": "other"}).status_code == 409
    )
    response = client.send(
        "POST", BASE, {"name": "Other", "audienceId": "car-buyers", "namespace": "ups"}
    )
    assert response.status_code == 409


def test_get_and_404(client):
    audience = _create(client)
    assert client.get(f"{BASE}/{audience['id']}").json() == audience
    missing = client.get(f"{BASE}/nope")
    assert missing.status_code == 404
    assert missing.json()["status"] == 404


def test_list_pages_with_start_as_page_index(client):
    for i in range(5):
        _create(client, name=f"A{i}", audienceId=f"a{i}")
    first = client.get(BASE, params={"limit": 2, "sort": "name:asc"}).json()
    assert [a["name"] for a in first["children"]] == ["A0", "A1"]
    assert first["_page"] == {"totalCount": 5, "pageSize": 2, "next": 1}
    assert first["_links"]["next"]["href"] == "@/audiences?start=1&limit=2"
    last = client.get(BASE, params={"limit": 2, "start": 2, "sort": "name:asc"}).json()
    assert [a["name"] for a in last["children"]] == ["A4"]
    assert "next" not in last["_page"]


def test_list_filters(client):
    _create(client, name="Buyers EU", audienceId="eu", description="europe")
    _create(client, name="Buyers US", audienceId="us", lifecycleState="draft")
    _create(client, name="Browsers", audienceId="br")

    def names(**params):
        return sorted(a["name"] for a in client.get(BASE, params=params).json()["children"])

    assert names(property="audienceId==eu") == ["Buyers EU"]
    assert names(property="lifecycleState!=draft") == ["Browsers", "Buyers EU"]
    assert names(property="name~buyers") == ["Buyers EU", "Buyers US"]
    assert names(name="BUYERS") == ["Buyers EU", "Buyers US"]
    assert names(description="euro") == ["Buyers EU"]


def test_list_sorted_by_update_time_desc_by_default(client):
    _create(client, name="old", audienceId="old")
    _create(client, name="new", audienceId="new")
    assert client.get(BASE).json()["children"][0]["name"] == "new"


@pytest.mark.parametrize(
    "params",
    [{"limit": 0}, {"limit": "x"}, {"start": -1}, {"sort": "name:sideways"}, {"property": "junk"}],
)
def test_list_bad_parameters(client, params):
    assert client.get(BASE, params=params).status_code == 400


def test_patch_with_json_patch(client):
    audience = _create(client)
    ops = [
        {"op": "replace", "path": "/description", "value": "changed"},
        {"op": "add", "path": "/audienceMeta/refresh", "value": "daily"},
        {"op": "remove", "path": "/labels"},
    ]
    response = client.send("PATCH", f"{BASE}/{audience['id']}", ops)
    assert response.status_code == 201
    patched = response.json()
    assert patched["description"] == "changed"
    assert patched["audienceMeta"] == {"refresh": "daily"}
    assert "labels" not in patched
    assert patched["updateTime"] >= audience["updateTime"]
    assert client.get(f"{BASE}/{audience['id']}").json() == patched


@pytest.mark.parametrize(
    ("ops", "text"),
    [
        ([], "JSON Patch array"),
        ({"op": "replace"}, "JSON Patch array"),
        ([{"op": "move", "path": "/name", "from": "/x"}], "unsupported patch operation"),
        ([{"op": "replace", "path": "/id", "value": "x"}], "id cannot be changed"),
        ([{"op": "replace", "path": "/audienceId", "value": "x"}], "cannot be changed"),
        ([{"op": "replace", "path": "/nothing", "value": 1}], "does not exist"),
        ([{"op": "remove", "path": "/nothing"}], "does not exist"),
        ([{"op": "replace", "path": "/name"}], "needs a value"),
        ([{"op": "replace", "path": "/lifecycleState", "value": "gone"}], "lifecycleState"),
        ([{"op": "replace", "path": "name", "value": "x"}], "JSON pointer"),
    ],
)
def test_patch_errors(client, ops, text):
    audience = _create(client)
    response = client.send("PATCH", f"{BASE}/{audience['id']}", ops)
    assert response.status_code == 400
    assert text in response.json()["detail"]


def test_patch_rename_onto_existing_name_conflicts(client):
    _create(client, name="one", audienceId="one")
    two = _create(client, name="two", audienceId="two")
    ops = [{"op": "replace", "path": "/name", "value": "one"}]
    assert client.send("PATCH", f"{BASE}/{two['id']}", ops).status_code == 409


def test_put_replaces_but_keeps_identity(client):
    audience = _create(client, description="before", labels=["x"])
    response = client.send("PUT", f"{BASE}/{audience['id']}", {"name": "Renamed"})
    replaced = response.json()
    assert response.status_code == 201
    assert replaced["name"] == "Renamed"
    assert (replaced["id"], replaced["audienceId"]) == (audience["id"], "car-buyers")
    assert "labels" not in replaced
    assert replaced["creationTime"] == audience["creationTime"]


def test_put_cannot_move_an_audience_to_another_namespace(client):
    audience = _create(client)
    body = {"name": "Renamed", "namespace": "AEPSegments"}
    response = client.send("PUT", f"{BASE}/{audience['id']}", body)
    assert (response.status_code, response.json()["detail"]) == (
        400,
        "Namespace is immutable field",
    )


def test_spec_enums_are_accepted(client):
    created = _create(client, type="ExternalAudience", lifecycleState="archived")
    assert (created["type"], created["lifecycleState"]) == ("ExternalAudience", "archived")


def test_delete(client):
    audience = _create(client)
    assert client.send("DELETE", f"{BASE}/{audience['id']}").status_code == 204
    assert client.get(f"{BASE}/{audience['id']}").status_code == 404
    assert client.send("DELETE", f"{BASE}/{audience['id']}").status_code == 404
    assert client.emu.stats()["audiences"]["prod"]["total"] == 0


def test_sandboxes_are_isolated_and_counted(client):
    prod = _create(client)
    dev = _create(client, sandbox="dev", evaluationInfo={"synchronous": {"enabled": True}})
    assert dev["sandbox"]["sandboxName"] == "dev"
    assert client.get(f"{BASE}/{prod['id']}", sandbox="dev").status_code == 404
    assert [a["id"] for a in client.get(BASE, sandbox="dev").json()["children"]] == [dev["id"]]
    counts = client.emu.stats()["audiences"]
    assert counts["prod"]["total"] == 1
    assert counts["dev"] == {"total": 1, "streaming": 0, "edge": 1}
