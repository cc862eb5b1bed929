"""Admin and inspection routes under ``/_emulator/``."""

from __future__ import annotations

import io
import json

import pyarrow.parquet as pq
import pytest
import requests

from tests.emulator.xdm import RECENT, profile_message, recent


@pytest.fixture
def members(client):
    c = client.emu.config
    client.stream(
        [
            profile_message(c, "e1"),
            profile_message(c, "e2", status="exited"),
            profile_message(c, "e3", namespace="CRMID"),
            profile_message(c, "e4", "other"),
        ]
    )
    return client.emu


def test_membership_json(members):
    body = members.admin("GET", "/membership/aud-1")
    assert (body["count"], body["by_status"]) == (3, {"realized": 2, "exited": 1})
    assert body["members"][2] == {
        "namespace": "CRMID",
        "identity": "e3",
        "status": "realized",
        "last_qualification_time": RECENT,
        "valid_until": None,
    }
    only_exited = members.admin("GET", "/membership/aud-1", params={"status": "exited"})
    assert [m["identity"] for m in only_exited["members"]] == ["e2"]
    counted = members.admin("GET", "/membership/aud-1", params={"count_only": "true"})
    assert counted["count"] == 3 and "members" not in counted


def test_membership_exports(members):
    url = f"{members.url}/_emulator/membership/aud-1"
    lines = requests.get(url, params={"format": "jsonl"}, timeout=10).text.splitlines()
    assert [json.loads(line)["identity"] for line in lines] == ["e1", "e2", "e3"]
    parquet = requests.get(url, params={"format": "parquet"}, timeout=10).content
    table = pq.read_table(io.BytesIO(parquet))
    assert table.column_names == [
        "namespace",
        "identity",
        "status",
        "last_qualification_time",
        "valid_until",
    ]
    assert table.column("identity").to_pylist() == ["e1", "e2", "e3"]
    assert requests.get(url, params={"format": "xml"}, timeout=10).status_code == 400


def test_membership_of_unknown_audience_or_sandbox_is_empty(members):
    assert members.membership("nope") == []
    assert members.membership("aud-1", sandbox="nowhere") == []


def test_stats(members):
    stats = members.stats()
    assert stats["requests"]["POST /collection/batch/{inlet_id}"] == {"207": 1}
    assert stats["requests"]["POST /ims/token/v3"] == {"200": 1}
    assert stats["messages"]["accepted"] == 4
    assert stats["profiles"] == {"prod": 4}
    assert stats["tokens_issued"] == 1


def test_reset_forgets_everything(members):
    members.add_batch()
    members.reset()
    stats = members.stats()
    assert (stats["requests_total"], stats["messages"]["accepted"]) == (0, 0)
    assert members.membership("aud-1") == []


def test_config_exposes_ids_for_tests(emu):
    body = emu.admin("GET", "/config")
    assert body["summary"]["inlet_id"] in {i["id"] for i in body["config"]["inlets"]}
    assert emu.config["schema_id"].startswith("https://ns.adobe.com/")


def test_connections_point_every_url_at_the_emulator(emu):
    aep = emu.aep_conn()
    assert aep["host"] == aep["extra"]["ims_url"] == aep["extra"]["streaming_url"] == emu.url
    assert aep["extra"]["inlet_id"] == emu.config["inlet_id"]
    cja = emu.cja_conn(concurrency=2)
    assert cja["extra"]["data_view_id"] == emu.config["data_view_id"]
    assert cja["extra"]["concurrency"] == 2
    config = emu.adobe_config()
    assert config.client_secret.get_secret_value() == emu.config["client_secret"]
    assert emu.adobe_config("cja").data_view_id == emu.config["data_view_id"]


def test_flush_writes_the_journal(members):
    assert members.admin("POST", "/flush")["flushed"] in (0, 1)
    assert members.stats()["journal_pending"] == 0


def test_bad_admin_bodies(emu):
    for body in (b"{", b"[1]"):
        response = requests.post(f"{emu.url}/_emulator/faults", data=body, timeout=10)
        assert response.status_code == 400


def test_clock_lapses_memberships_by_valid_until_or_30_days(client):
    """validUntil rules a live membership; without it 30 days from lastQualificationTime;
    an exited one is deleted 30 days after the exit."""
    c = client.emu.config
    soon = profile_message(c, "v1")
    soon["body"]["xdmEntity"]["segmentMembership"]["cjaAudiences"]["aud-1"]["validUntil"] = recent(
        -24 * 10
    )
    client.stream([soon, profile_message(c, "d30"), profile_message(c, "x1", status="exited")])
    assert len(client.emu.membership("aud-1")) == 3
    client.emu.advance_clock(days=9)
    assert {m["identity"] for m in client.emu.membership("aud-1")} == {"v1", "d30", "x1"}
    lapsed = client.emu.advance_clock(days=2)["lapsed"]
    assert lapsed == 1 and {m["identity"] for m in client.emu.membership("aud-1")} == {"d30", "x1"}
    client.emu.advance_clock(days=19)
    assert client.emu.membership("aud-1") == []
    assert client.emu.admin("GET", "/clock")["offset_s"] == 30 * 86400


def test_tamper_deletes_flips_expires_and_adds(members):
    members.tamper(
        "aud-1",
        ("delete", "ECID", "e1"),
        ("flip", "ECID", "e2"),
        ("expire", "CRMID", "e3"),
        ("add", "ECID", "stranger"),
    )
    held = {m["identity"]: m for m in members.membership("aud-1")}
    assert set(held) == {"e2", "e3", "stranger"}
    assert held["e2"]["status"] == "realized" and held["stranger"]["status"] == "realized"
    assert held["e3"]["valid_until"] is not None
    members.advance_clock(seconds=7200)
    assert {m["identity"] for m in members.membership("aud-1")} == {"e2", "stranger"}


def test_membership_identities_format_is_one_column(members):
    url = f"{members.url}/_emulator/membership/aud-1"
    response = requests.get(url, params={"format": "identities", "status": "realized"}, timeout=10)
    assert pq.read_table(io.BytesIO(response.content)).column("identity").to_pylist() == [
        "e1",
        "e3",
    ]
