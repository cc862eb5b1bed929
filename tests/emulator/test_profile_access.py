"""Profile Access ``/data/core/ups/access/entities``: GET one identity and the bulk POST."""

from __future__ import annotations

import pytest

from tests.emulator.xdm import RECENT, profile_message

PATH = "/data/core/ups/access/entities"
PROFILE = "_xdm.context.profile"


def _params(ident, ns="ECID", **extra):
    return {"schema.name": PROFILE, "entityId": ident, "entityIdNS": ns} | extra


@pytest.fixture
def profiled(client):
    c = client.emu.config
    message = profile_message(c, "ecid-1", "aud-1")
    message["body"]["xdmEntity"]["identityMap"]["Email"] = [{"id": "jane@example.com"}]
    message["body"]["xdmEntity"]["person"] = {"name": {"firstName": "Jane", "lastName": "Doe"}}
    client.stream([message, profile_message(c, "ecid-1", "aud-2", status="exited")])
    return client


def test_get_returns_the_merged_profile(profiled):
    response = profiled.get(PATH, params=_params("ecid-1"))
    assert response.status_code == 200
    [(entity_id, view)] = response.json().items()
    assert view["entityId"] == entity_id
    assert view["sources"] == [profiled.emu.config["dataset_id"]]
    assert len(view["identityGraph"]) == 2
    assert view["lastModifiedAt"].endswith("Z")
    entity = view["entity"]
    assert entity["person"]["name"]["firstName"] == "Jane"
    assert entity["identityMap"]["Email"] == [{"id": "jane@example.com"}]
    assert entity["segmentMembership"]["cjaAudiences"]["aud-1"] == {
        "status": "realized",
        "lastQualificationTime": RECENT,
    }
    assert entity["segmentMembership"]["cjaAudiences"]["aud-2"]["status"] == "exited"


def test_any_identity_and_namespace_case_finds_the_profile(profiled):
    by_ecid = profiled.get(PATH, params=_params("ecid-1")).json()
    by_email = profiled.get(PATH, params=_params("jane@example.com", ns="email")).json()
    assert by_ecid.keys() == by_email.keys()


def test_fields_select_paths(profiled):
    response = profiled.get(
        PATH, params=_params("ecid-1", fields="segmentMembership,person.name.lastName")
    )
    [view] = response.json().values()
    assert view["entity"] == {
        "segmentMembership": view["entity"]["segmentMembership"],
        "person": {"name": {"lastName": "Doe"}},
    }


def test_unknown_identity_is_an_empty_entity(client):
    [view] = client.get(PATH, params=_params("nobody")).json().values()
    assert view["entity"] == {}
    assert view["lastModifiedAt"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("params", "text"),
    [
        ({"entityId": "x", "entityIdNS": "ECID"}, "schema.name is required"),
        ({"schema.name": "_xdm.context.other", "entityId": "x", "entityIdNS": "ECID"}, "must be"),
        ({"schema.name": PROFILE, "entityIdNS": "ECID"}, "entityId is required"),
        ({"schema.name": PROFILE, "entityId": "x"}, "entityIdNS is required"),
        ({"schema.name": "_xdm.context.experienceevent"}, "relatedEntityId is required"),
    ],
)
def test_get_errors(client, params, text):
    response = client.get(PATH, params=params)
    assert response.status_code == 400
    assert text in response.json()["detail"]


def test_experience_events_are_an_empty_page(client):
    params = {
        "schema.name": "_xdm.context.experienceevent",
        "relatedSchema.name": PROFILE,
        "relatedEntityId": "ecid-1",
        "relatedEntityIdNS": "ECID",
    }
    assert client.get(PATH, params=params).json()["children"] == []


def test_bulk_lookup(profiled):
    body = {
        "schema": {"name": PROFILE},
        "fields": ["segmentMembership"],
        "identities": [
            {"entityId": "ecid-1", "entityIdNS": {"code": "ECID"}},
            {"entityId": "jane@example.com", "entityIdNS": {"code": "Email"}},
            {"entityId": "nobody", "entityIdNS": {"code": "ECID"}},
        ],
    }
    response = profiled.send("POST", PATH, body)
    assert response.status_code == 200
    views = list(response.json().values())
    assert len(views) == 2  # both identities resolve to one profile
    known = next(v for v in views if v["entity"])
    assert len(known["requestedIdentities"]) == 2
    assert set(known["entity"]) == {"segmentMembership"}
    unknown = next(v for v in views if not v["entity"])
    assert unknown["lastModifiedAt"] == "1970-01-01T00:00:00Z"


@pytest.mark.parametrize(
    ("body", "text"),
    [
        ({"identities": [{"entityId": "x", "entityIdNS": {"code": "ECID"}}]}, "schema.name"),
        ({"schema": {"name": PROFILE}}, "identities must be"),
        ({"schema": {"name": PROFILE}, "identities": [{"entityId": "x"}]}, "needs entityId"),
        (
            {
                "schema": {"name": PROFILE},
                "identities": [{"entityId": "x", "entityIdNS": {"code": "E"}}] * 1001,
            },
            "at most 1000",
        ),
        (
            {
                "schema": {"name": PROFILE},
                "fields": 3,
                "identities": [{"entityId": "x", "entityIdNS": {"code": "E"}}],
            },
            "fields",
        ),
    ],
)
def test_bulk_errors(client, body, text):
    response = client.send("POST", PATH, body)
    assert response.status_code == 400
    assert text in response.json()["detail"]


def test_too_many_related_identities_is_422(client):
    message = profile_message(client.emu.config, "ecid-0")
    message["body"]["xdmEntity"]["identityMap"]["CRMID"] = [{"id": f"crm-{i}"} for i in range(50)]
    client.stream([message])
    response = client.get(PATH, params=_params("ecid-0"))
    assert response.status_code == 422
    assert response.json()["detail"] == "Too many related identities"


def test_profiles_are_per_sandbox(profiled):
    [view] = profiled.get(PATH, params=_params("ecid-1"), sandbox="dev").json().values()
    assert view["entity"] == {}
