"""Unit tests of the emulator configuration (defaults merged with a user file)."""

from __future__ import annotations

import json

import pytest

from emulator.config import load_config


def test_defaults_are_consistent():
    config = load_config()
    summary = config.summary()
    assert config.inlet(summary["inlet_id"]).authenticated
    assert config.dataset(summary["dataset_id"]).schemaId == summary["schema_id"]
    assert config.schema(summary["schema_id"]).is_profile
    assert config.dataset(summary["cja_dataset_id"]) is not None
    assert config.default_sandbox.name == "prod"


def test_user_file_and_overrides_merge_over_defaults(tmp_path):
    path = tmp_path / "org.json"
    path.write_text(json.dumps({"org_id": "OTHER@AdobeOrg", "cja": {"data_view_id": "dv_x"}}))
    config = load_config(path, token_lifetime_s=5)
    assert config.org_id == "OTHER@AdobeOrg"
    assert config.cja.data_view_id == "dv_x"
    assert config.cja.rate_limit_requests == 12  # untouched nested default
    assert config.token_lifetime_s == 5


def test_unreadable_file_names_the_file(tmp_path):
    path = tmp_path / "broken.json"
    path.write_text("{")
    with pytest.raises(SystemExit, match="broken.json"):
        load_config(path)
