"""The doctor against the emulator over HTTP: each misconfiguration named with its fix."""

from __future__ import annotations

import json

import pytest
from pydantic import SecretStr

from cja_audiences.cli.main import main as cli
from cja_audiences.doctor import run_doctor

pytestmark = pytest.mark.integration

BARE_SCHEMA = "https://ns.adobe.com/cjaaudiencesdemo/schemas/4d1e2f3a5b6c4d7e8f9a0b1c2d3e4f5a"
NOT_PROFILE_DATASET = "65d0a1b2c3d4e5f60718293a"


def verdicts(config) -> dict:
    report = run_doctor(config)
    return {v.check: v for v in report.verdicts}


def test_a_well_configured_org_passes_every_check(emu):
    report = run_doctor(emu.adobe_config())
    assert report.ok, report.text()
    assert [v.check for v in report.verdicts] == [
        "credentials",
        "sandbox",
        "schema",
        "dataset",
        "inlet",
        "namespace",
        "audiences",
    ]
    assert all(line.startswith("ok ") for line in report.text().splitlines())


def test_wrong_secret(emu):
    config = emu.adobe_config().model_copy(update={"client_secret": SecretStr("wrong")})
    found = verdicts(config)
    assert not found["credentials"].ok
    assert "invalid_client" in found["credentials"].detail
    assert "OAuth Server-to-Server credential" in found["credentials"].fix
    assert found["schema"].detail == "skipped: needs valid credentials"
    assert "wrong" not in json.dumps([v.detail for v in found.values()])


def test_missing_segment_membership_field_group(emu):
    found = verdicts(emu.adobe_config(schema_id=BARE_SCHEMA))
    assert not found["schema"].ok
    assert "lacks the field group(s) Segment Membership Details" in found["schema"].detail
    assert "Add field groups" in found["schema"].fix
    assert found["credentials"].ok and found["inlet"].ok


def test_dataset_not_profile_enabled(emu):
    found = verdicts(emu.adobe_config(dataset_id=NOT_PROFILE_DATASET))
    assert not found["dataset"].ok
    assert "is not enabled for Profile" in found["dataset"].detail
    assert "Profile toggle" in found["dataset"].fix
    assert found["schema"].ok


def test_unknown_inlet(emu):
    found = verdicts(emu.adobe_config(inlet_id="0" * 32))
    assert not found["inlet"].ok
    assert f"no HTTP API streaming connection has inlet {'0' * 32}" in found["inlet"].detail
    assert "Sources > HTTP API" in found["inlet"].fix


def test_unprovisioned_or_people_namespace(emu):
    found = verdicts(emu.adobe_config(segment_namespace="myAudiences"))
    assert not found["namespace"].ok
    assert "'myAudiences' is not provisioned" in found["namespace"].detail
    assert "Non-people identifier" in found["namespace"].fix
    people = verdicts(emu.adobe_config(segment_namespace="Email"))["namespace"]
    assert not people.ok and "needs a custom non-people namespace" in people.detail


def test_missing_namespace_names_the_connection_field(emu):
    found = verdicts(emu.adobe_config(segment_namespace=None))
    assert not found["namespace"].ok
    assert "extra field 'segment_namespace'" in found["namespace"].detail


def test_unknown_sandbox(emu):
    found = verdicts(emu.adobe_config(sandbox="nosuch"))
    assert not found["sandbox"].ok and "technical name" in found["sandbox"].fix


def test_cli_prints_one_line_per_check_and_exits_1_on_a_problem(emu, monkeypatch, capsys):
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DEFAULT", json.dumps(emu.aep_conn()))
    assert cli(["doctor"]) == 0
    assert len(capsys.readouterr().out.strip().splitlines()) == 7
    monkeypatch.setenv("AIRFLOW_CONN_AEP_DOCTORED", json.dumps(emu.aep_conn(inlet_id="x")))
    assert cli(["doctor", "--conn", "aep_doctored"]) == 1
    lines = capsys.readouterr().out.strip().splitlines()
    assert [line.split()[0] for line in lines].count("FAIL") == 1
    assert next(line for line in lines if line.startswith("FAIL")).startswith("FAIL inlet: ")


def test_the_external_audience_mode_checks_its_source_and_storage(emu, tmp_path):
    emu.base_connection(tmp_path / "cloud", "conn-doctor")
    good = emu.adobe_config(
        publish_mode="external_audience",
        external_base_connection_id="conn-doctor",
        external_location=str(tmp_path / "cloud" / "files"),
    )
    report = run_doctor(good)
    assert report.ok, report.text()
    assert [v.check for v in report.verdicts][-2:] == ["base_connection", "storage_location"]
    unknown = verdicts(good.model_copy(update={"external_base_connection_id": "nope"}))
    assert not unknown["base_connection"].ok and "source account" in unknown["base_connection"].fix
    (tmp_path / "blocked").write_text("a file, not a folder")
    unwritable = verdicts(good.model_copy(update={"external_location": str(tmp_path / "blocked")}))
    assert not unwritable["storage_location"].ok
    assert "write access" in unwritable["storage_location"].fix
