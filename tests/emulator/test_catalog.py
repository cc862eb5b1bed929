"""Catalog ``/data/foundation/catalog/batches``: streaming batches and seeded CJA batches."""

from __future__ import annotations

import pytest

from tests.emulator.xdm import profile_message

PATH = "/data/foundation/catalog/batches"


def test_seeded_batches_for_the_cja_dataset(client):
    emu = client.emu
    cja = emu.config["cja_dataset_id"]
    old = emu.add_batch(created=1_000, records=10)
    new = emu.add_batch(created=2_000, records=20)
    failed = emu.add_batch(created=3_000, status="failed")
    listed = client.get(PATH, params={"dataSet": cja}).json()
    assert list(listed) == [old["id"], new["id"], failed["id"]]
    assert listed[new["id"]]["relatedObjects"] == [{"type": "dataSet", "id": cja}]
    assert listed[new["id"]]["metrics"]["inputRecordCount"] == 20
    assert listed[new["id"]]["imsOrg"] == emu.config["org_id"]
    after = client.get(PATH, params={"dataSet": cja, "createdAfter": 1_000, "status": "success"})
    assert list(after.json()) == [new["id"]]
    newest = client.get(PATH, params={"orderBy": "desc:created", "limit": 1})
    assert list(newest.json()) == [failed["id"]]
    assert newest.headers["x-total-count"] == "3"
    page = client.get(PATH, params={"limit": 1, "start": 1}).json()
    assert list(page) == [new["id"]]
    assert client.get(PATH, params={"createdBefore": 2_000}).json().keys() == {old["id"]}


def test_get_one_batch(client):
    batch = client.emu.add_batch()
    assert client.get(f"{PATH}/{batch['id']}").json() == {batch["id"]: batch}
    assert client.get(f"{PATH}/NOPE").status_code == 404


@pytest.mark.parametrize(
    "params",
    [
        {"status": "sideways"},
        {"createdAfter": "yesterday"},
        {"orderBy": "up:created"},
        {"limit": 0},
        {"limit": 101},
        {"start": -1},
    ],
)
def test_bad_parameters(client, params):
    response = client.get(PATH, params=params)
    assert response.status_code == 400
    assert response.json()["title"] == "Bad Request"


def test_streaming_ingestion_records_a_batch(client):
    c = client.emu.config
    client.stream([profile_message(c, f"e{i}") for i in range(3)])
    client.stream([profile_message(c, "e9")])
    [loading] = client.get(PATH, params={"dataSet": c["dataset_id"]}).json().values()
    assert (loading["status"], loading["metrics"]["inputRecordCount"]) == ("loading", 4)
    client.emu.admin("POST", "/catalog/seal")
    [sealed] = client.get(PATH, params={"dataSet": c["dataset_id"]}).json().values()
    assert sealed["status"] == "success"
    assert sealed["completed"] >= sealed["created"]


def test_batches_are_per_sandbox(client):
    client.emu.add_batch()
    assert client.get(PATH, sandbox="dev").json() == {}


def test_admin_refuses_unknown_dataset_and_status(emu):
    for body in ({"datasetId": "nope"}, {"status": "weird"}, {"records": "many"}):
        with pytest.raises(AssertionError, match="HTTP 400"):
            emu.add_batch(**body)


def test_records_failing_validation_count_as_failed_in_the_batch(client):
    c = client.emu.config
    bad = profile_message(c, "e9", status="qualified")  # accepted by DCCS, dropped downstream
    client.stream([profile_message(c, "e1"), profile_message(c, "e2"), bad])
    client.emu.admin("POST", "/catalog/seal")
    [batch] = client.get(PATH, params={"dataSet": c["dataset_id"]}).json().values()
    assert batch["status"] == "success"
    assert batch["metrics"] == {
        "inputRecordCount": 3,
        "outputRecordCount": 2,
        "failedRecordCount": 1,
    }
    client.stream([bad])
    client.emu.admin("POST", "/catalog/seal")
    statuses = sorted(b["status"] for b in client.get(PATH).json().values())
    assert statuses == ["failed", "success"]
