"""IMS ``POST /ims/token/v3``: client_credentials tokens and IMS's refusals."""

from __future__ import annotations

import time

import pytest
import requests


def _form(emu, **overrides):
    c = emu.config
    form = {
        "grant_type": "client_credentials",
        "client_id": c["client_id"],
        "client_secret": c["client_secret"],
        "scope": c["scopes"],
    }
    return {k: v for k, v in (form | overrides).items() if v is not None}


def test_token_from_form_body(emu):
    response = requests.post(f"{emu.url}/ims/token/v3", data=_form(emu), timeout=10)
    assert response.status_code == 200
    body = response.json()
    assert body["token_type"] == "bearer"
    assert body["expires_in"] == int(emu.config["token_lifetime_s"])
    assert body["access_token"]


def test_token_from_query_string(emu):
    response = requests.post(f"{emu.url}/ims/token/v3", params=_form(emu), timeout=10)
    assert response.status_code == 200
    assert response.json()["access_token"]


def test_tokens_are_distinct_and_work(emu):
    first, second = emu.token(), emu.token()
    assert first != second
    for token in (first, second):
        response = requests.get(
            f"{emu.url}/data/core/ups/audiences", headers=emu.headers(token), timeout=10
        )
        assert response.status_code == 200


@pytest.mark.parametrize(
    ("overrides", "status", "error", "text"),
    [
        ({"grant_type": None}, 400, "invalid_request", "missing grant_type parameter"),
        ({"grant_type": "password"}, 400, "unsupported_grant_type", "password"),
        ({"client_id": None}, 400, "invalid_request", "missing client_id parameter"),
        ({"client_secret": None}, 400, "invalid_request", "missing client_secret parameter"),
        ({"scope": None}, 400, "invalid_request", "missing scope parameter"),
        ({"client_id": "someone-else"}, 400, "invalid_client", "invalid client_id parameter"),
        ({"client_secret": "wrong"}, 401, "invalid_client", "invalid client_secret parameter"),
        ({"scope": "openid,admin_everything"}, 400, "invalid_scope", "admin_everything"),
    ],
)
def test_refusals(emu, overrides, status, error, text):
    response = requests.post(f"{emu.url}/ims/token/v3", data=_form(emu, **overrides), timeout=10)
    assert response.status_code == status
    body = response.json()
    assert body["error"] == error
    assert text in body["error_description"]
    assert emu.config["client_secret"] not in response.text


def test_short_token_lifetime_expires(emu):
    emu.faults(token_lifetime_s=1)
    response = requests.post(f"{emu.url}/ims/token/v3", data=_form(emu), timeout=10)
    assert response.json()["expires_in"] == 1
    token = response.json()["access_token"]
    url = f"{emu.url}/data/core/ups/audiences"
    assert requests.get(url, headers=emu.headers(token), timeout=10).status_code == 200
    time.sleep(1.05)
    expired = requests.get(url, headers=emu.headers(token), timeout=10)
    assert expired.status_code == 401
    assert expired.json() == {"error_code": "401013", "message": "Oauth token is not valid"}


def test_tokens_do_not_survive_reset(emu):
    token = emu.token()
    emu.reset()
    response = requests.get(
        f"{emu.url}/data/core/ups/audiences", headers=emu.headers(token), timeout=10
    )
    assert response.status_code == 401


def test_package_ims_client_works_against_the_emulator(emu):
    from cja_audiences.adobe.auth import ImsError, get_token, invalidate_token

    config = emu.adobe_config()
    invalidate_token(config)
    token = get_token(config)
    response = requests.get(
        f"{emu.url}/data/core/ups/audiences", headers=config.platform_headers(token), timeout=10
    )
    assert response.status_code == 200
    wrong = emu.adobe_config(scopes="openid,nope")
    invalidate_token(wrong)
    with pytest.raises(ImsError, match="invalid_scope"):
        get_token(wrong)
