"""CJAHook: the cja_default connection -> AdobeConfig -> a Reporting API client (emulator)."""

from __future__ import annotations

import json
from datetime import UTC, datetime

import pytest
from airflow.providers.http.hooks.http import HttpHook
from airflow.sdk.log import redact

from cja_audiences.airflow.hooks.cja import CJAHook
from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake

pytestmark = pytest.mark.integration


@pytest.fixture
def hook(emu, monkeypatch) -> CJAHook:
    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))
    return CJAHook()


def test_is_an_http_hook_for_the_cja_connection() -> None:
    assert issubclass(CJAHook, HttpHook)
    assert (CJAHook.conn_type, CJAHook.default_conn_name) == ("http", "cja_default")
    assert CJAHook.get_ui_field_behaviour()["relabeling"]["login"] == "Client ID"


def test_config_comes_from_the_connection_and_secrets_are_masked(emu, hook) -> None:
    config = hook.get_config()
    assert config.base_url == emu.url and config.data_view_id == emu.config["data_view_id"]
    secret = config.client_secret.get_secret_value()
    client = hook.get_client()
    token = client.token()
    assert redact(f"secret={secret} token={token}") == "secret=*** token=***"
    assert secret not in repr(config)


def test_the_client_pulls_a_report_page(emu, hook, tmp_path) -> None:
    lake = Lake(tmp_path)
    generate_synthetic(lake, persons=50, days=1, end=datetime(2026, 11, 27).date(), seed=1)
    emu.set_lake(lake.root)
    source = hook.reporting_source(
        start=datetime(2026, 11, 27, tzinfo=UTC),
        end=datetime(2026, 11, 28, tzinfo=UTC),
        checkpoint_dir=tmp_path / "checkpoints",
    )
    [(window, page, body)] = list(source.pages())
    assert page == 0 and body["lastPage"] is True and body["rows"]
    assert window[0] == datetime(2026, 11, 27, tzinfo=UTC)


def test_a_missing_data_view_is_a_clear_error(emu, monkeypatch, tmp_path) -> None:
    conn = emu.cja_conn()
    conn["extra"].pop("data_view_id")
    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(conn))
    with pytest.raises(ValueError, match="no data_view_id in its extra"):
        CJAHook().reporting_source(
            start=datetime(2026, 11, 27, tzinfo=UTC),
            end=datetime(2026, 11, 28, tzinfo=UTC),
            checkpoint_dir=tmp_path,
        )
