from __future__ import annotations

from pathlib import Path

import pytest
from pydantic import ValidationError

from cja_audiences.settings import PROJECT_ROOT, Settings, env_name, settings_from_env


def test_defaults_point_at_the_repo_include_folders():
    settings = settings_from_env({})
    assert settings.audiences_dir == PROJECT_ROOT / "include" / "audiences"
    assert settings.filters_dir == PROJECT_ROOT / "include" / "filters"
    assert settings.aep_conn_id == "aep_default"
    assert settings.max_refreshing_audiences == 150


def test_environment_overrides(tmp_path):
    settings = settings_from_env(
        {
            "CJA_AUDIENCES_HOME": str(tmp_path),
            "CJA_AUDIENCES_MAX_REFRESHING": "75",
            "CJA_AUDIENCES_AEP_CONN_ID": "aep_prod",
        }
    )
    assert settings.home == Path(tmp_path)
    assert settings.max_refreshing_audiences == 75
    assert settings.aep_conn_id == "aep_prod"


def test_a_hard_limit_cannot_be_loosened_from_the_environment():
    with pytest.raises(ValidationError, match="max_refreshing_audiences"):
        settings_from_env({"CJA_AUDIENCES_MAX_REFRESHING": "500"})


def test_every_setting_is_read_from_its_documented_variable(monkeypatch, tmp_path):
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(tmp_path / "specs"))
    monkeypatch.setenv("CJA_AUDIENCES_CATALOG_DATASET", "ds1")
    monkeypatch.setenv("CJA_AUDIENCES_LANDING_POLL_S", "5")
    monkeypatch.setenv("CJA_AUDIENCES_RUN_RETENTION", "")  # empty means unset
    settings = settings_from_env()
    assert settings.audiences_dir == tmp_path / "specs"
    assert settings.catalog_dataset_id == "ds1" and settings.landing_poll_s == 5.0
    assert settings.run_retention == 30
    readme = (PROJECT_ROOT / "README.md").read_text()
    for field in Settings.model_fields:
        assert f"`{env_name(field)}`" in readme, f"{env_name(field)} is not in the README"


def test_session_rules_come_from_the_environment():
    settings = settings_from_env(
        {
            "CJA_AUDIENCES_SESSION_TIMEOUT_MINUTES": "45",
            "CJA_AUDIENCES_SESSION_START_EVENT_TYPES": "commerce.purchases, web.login",
        }
    )
    assert settings.session_timeout_minutes == 45
    assert settings.session_start_event_types == ("commerce.purchases", "web.login")
    with pytest.raises(ValidationError, match="session_timeout_minutes"):
        settings_from_env({"CJA_AUDIENCES_SESSION_TIMEOUT_MINUTES": "0"})
