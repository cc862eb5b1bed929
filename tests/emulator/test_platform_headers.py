"""The adobe.io gateway checks on Platform routes, with Adobe's codes and bodies."""

from __future__ import annotations

import json

import pytest
import requests

from emulator.process import start_emulator

AUDIENCES = "/data/core/ups/audiences"


@pytest.mark.parametrize(
    ("change", "status", "body"),
    [
        (
            {"Authorization": None},
            403,
            {"error_code": "403010", "message": "Oauth token is missing."},
        ),
        ({"x-api-key": None}, 403, {"error_code": "403000", "message": "Api Key is required"}),
        (
            {"x-api-key": "not-a-client"},
            403,
            {"error_code": "403003", "message": "Api Key is invalid"},
        ),
        (
            {"Authorization": "Bearer forged"},
            401,
            {"error_code": "401013", "message": "Oauth token is not valid"},
        ),
        (
            {"Authorization": "Basic abc"},
            401,
            {"error_code": "401013", "message": "Oauth token is not valid"},
        ),
        ({"x-gw-ims-org-id": None}, 400, {"error_code": "400003", "message": "Missing header"}),
        (
            {"x-gw-ims-org-id": "OTHER@AdobeOrg"},
            403,
            {"error_code": "403025", "message": "Profile is not valid"},
        ),
    ],
)
def test_gateway_refusals(client, change, status, body):
    headers = {k: v for k, v in (client.headers() | change).items() if v is not None}
    response = requests.get(client.emu.url + AUDIENCES, headers=headers, timeout=10)
    assert response.status_code == status
    assert response.json() == body


@pytest.mark.parametrize(
    "path",
    [
        AUDIENCES,
        "/data/core/ups/access/entities?schema.name=_xdm.context.profile&entityId=x&entityIdNS=ECID",
        "/data/foundation/catalog/batches",
        "/segments",
    ],
)
def test_every_platform_route_needs_a_token(emu, path):
    response = requests.get(emu.url + path, timeout=10)
    assert response.status_code == 403
    assert response.json()["error_code"] == "403010"


def test_expired_tokens_are_refused(client):
    assert client.get(AUDIENCES).status_code == 200
    client.emu.faults(expire_tokens=True)
    response = client.get(AUDIENCES)
    assert response.status_code == 401
    assert response.json()["error_code"] == "401013"
    assert client.emu.faults()["expire_tokens"] is False  # an action, not a mode


def test_absent_sandbox_header_is_refused_as_the_spec_requires(client):
    headers = client.headers()
    del headers["x-sandbox-name"]
    response = requests.get(client.emu.url + AUDIENCES, headers=headers, timeout=10)
    assert response.status_code == 400
    assert "x-sandbox-name" in response.json()["detail"]


def test_unknown_sandbox_is_forbidden(client):
    response = client.get(AUDIENCES, sandbox="nope")
    assert response.status_code == 403
    assert "nope" in response.json()["detail"]


def test_post_without_json_content_type(client):
    response = client.send(
        "POST", AUDIENCES, headers={"Content-Type": "text/plain"}, data=b'{"name": "x"}'
    )
    assert response.status_code == 400
    assert response.json() == {
        "type": "/placeholder/type/uri",
        "status": 400,
        "title": "BadRequestError",
        "detail": "A valid content-type must be specified",
    }


def test_token_of_another_client_and_org(tmp_path, emu):
    """A second client in another org: its token does not pass with the first client's key."""
    other = {
        "client_id": "other-client",
        "client_secret": "s2",
        "scopes": "openid",
        "org_id": "B@AdobeOrg",
    }
    path = tmp_path / "two-clients.json"
    base = emu.admin("GET", "/config")["config"]["clients"]
    path.write_text(json.dumps({"clients": [*base, other]}))
    server = start_emulator(tmp_path, path)
    try:
        token = requests.post(
            f"{server.url}/ims/token/v3",
            data={
                "grant_type": "client_credentials",
                "client_id": "other-client",
                "client_secret": "s2",
                "scope": "openid",
            },
            timeout=10,
        ).json()["access_token"]
        headers = server.headers(token)  # the demo client's api key and org
        response = requests.get(server.url + AUDIENCES, headers=headers, timeout=10)
        assert response.json() == {"error_code": "403003", "message": "Api Key is invalid"}
        headers["x-api-key"] = "other-client"
        response = requests.get(server.url + AUDIENCES, headers=headers, timeout=10)
        assert response.json() == {"error_code": "403025", "message": "Profile is not valid"}
        headers["x-gw-ims-org-id"] = "B@AdobeOrg"
        assert requests.get(server.url + AUDIENCES, headers=headers, timeout=10).status_code == 200
    finally:
        server.stop()
