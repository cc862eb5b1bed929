"""AEPHook over the emulator: connection parsing, bearer sessions, 401 refresh, masking."""

from __future__ import annotations

import json
import logging

import pytest
from airflow.sdk.log import redact

from cja_audiences.adobe.auth import invalidate_token
from cja_audiences.airflow.hooks.aep import AEPHook
from tests.publish.helpers import fast_options, held, make_spec, write_members

pytestmark = pytest.mark.integration


@pytest.fixture
def hook(emu, monkeypatch) -> AEPHook:
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn(rate_limit=0)))
    return AEPHook()


def test_connection_becomes_an_adobe_config(hook, emu):
    config = hook.get_config()
    assert config.base_url == emu.url
    assert config.client_id == emu.config["client_id"]
    assert config.client_secret.get_secret_value() == emu.config["client_secret"]
    assert (config.org_id, config.inlet_id, config.dataset_id) == (
        emu.config["org_id"],
        emu.config["inlet_id"],
        emu.config["dataset_id"],
    )
    assert config.rate_limit == 0 and config.authenticated_inlet
    assert emu.config["client_secret"] not in repr(config)


def test_run_sends_platform_headers_not_basic_auth_or_extras(hook):
    response = AEPHook(method="GET").run("/data/core/ups/audiences")
    assert response.status_code == 200 and response.json()["children"] == []
    sent = response.request.headers
    assert sent["Authorization"].startswith("Bearer ")
    assert sent["x-gw-ims-org-id"] == hook.get_config().org_id
    assert sent["x-sandbox-name"] == hook.get_config().sandbox
    assert "inlet_id" not in sent and "org_id" not in sent


def test_run_refreshes_a_revoked_token_once(hook, emu):
    invalidate_token(hook.get_config())
    hook.get_token()
    emu.faults(expire_tokens=True)
    response = AEPHook(method="GET").run("/data/core/ups/audiences")
    assert response.status_code == 200
    assert emu.stats()["tokens_issued"] == 2


def test_run_still_raises_for_other_errors(hook):
    from airflow.sdk.exceptions import AirflowException

    with pytest.raises(AirflowException, match="404"):
        AEPHook(method="GET").run("/data/core/ups/audiences/unknown")


def test_secret_and_tokens_are_masked_and_never_logged(hook, emu, tmp_path, caplog):
    write_members(tmp_path / "entered.parquet", range(50))
    write_members(tmp_path / "exited.parquet", [])
    secret = emu.config["client_secret"]
    with caplog.at_level(logging.DEBUG):
        invalidate_token(hook.get_config())
        token = hook.get_token()
        summary = hook.publish(make_spec(), tmp_path, options=fast_options())
    assert summary["acknowledged"] == 50 and len(held(emu)) == 50
    assert redact(f"secret={secret} token={token}") == "secret=*** token=***"
    assert secret not in caplog.text and token not in caplog.text
    assert token not in json.dumps(summary) and secret not in json.dumps(summary)


def test_decommission_through_the_hook(hook, emu, tmp_path):
    write_members(tmp_path / "members.parquet", range(20))
    write_members(tmp_path / "entered.parquet", range(20))
    write_members(tmp_path / "exited.parquet", [])
    hook.publish(make_spec(), tmp_path, options=fast_options())
    summary = hook.decommission(make_spec(), tmp_path, options=fast_options())
    assert summary["audience"]["lifecycleState"] == "inactive"
    assert held(emu, status="realized") == set()
