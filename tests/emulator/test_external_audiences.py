"""External Audiences ``/data/core/ais/external-audience``: create, operations, runs, files."""

from __future__ import annotations

import os
import time

import pytest

from cja_audiences.adobe.external_audiences import create_request
from tests.object_storage import new_s3_bucket

BASE = "/data/core/ais/external-audience"
pytestmark = pytest.mark.integration


@pytest.fixture
def folder(client, tmp_path):
    client.emu.base_connection(tmp_path, "conn-a")
    (tmp_path / "aud").mkdir()
    return tmp_path / "aud"


def body(**overrides):
    fields = dict(
        name="Buyers (buyers)",
        description="d",
        namespace="ECID",
        path="aud",
        base_connection_id="conn-a",
        ttl_days=30,
    )
    return create_request(**{**fields, **overrides})


def write(folder, name: str, rows: list[tuple[str, int]], stamp: int) -> None:
    path = folder / name
    path.write_text("identity,delete\n" + "".join(f"{i},{d}\n" for i, d in rows))
    os.utime(path, (stamp, stamp))


def create(client) -> str:
    operation = client.send("POST", BASE + "/", body()).json()["operationId"]
    answer = client.get(f"{BASE}/operations/{operation}").json()
    assert answer["status"] == "SUCCESS"
    return answer["audienceId"]


def run(client, audience: str, start: int, differential: bool = True) -> dict:
    started = client.send(
        "POST",
        f"{BASE}/{audience}/runs",
        {"dataFilterStartTime": start, "differentialIngestion": differential},
    )
    assert started.status_code == 200, started.text
    return client.get(f"{BASE}/{audience}/runs/{started.json()['runId']}").json()


def test_files_in_the_window_are_ingested_full_then_differentially(client, folder):
    audience = create(client)
    write(folder, "r1.csv", [("a", 0), ("b", 0), ("c", 0)], 1_000)
    assert run(client, audience, 1_000, differential=False)["status"] == "SUCCESS"
    held = {m["identity"] for m in client.emu.membership(audience)}
    assert held == {"a", "b", "c"}
    write(folder, "r2.csv", [("d", 0), ("a", 1)], 2_000)
    done = run(client, audience, 2_000)
    assert done["status"] == "SUCCESS" and [d["stage"] for d in done["details"]] == [
        "DATASET_INGEST",
        "PROFILE_STORE_INGEST",
    ]
    assert {m["identity"] for m in client.emu.membership(audience)} == {"b", "c", "d"}
    write(folder, "r3.csv", [("x", 0)], 3_000)
    run(client, audience, 3_000, differential=False)  # a full run replaces the membership
    assert {m["identity"] for m in client.emu.membership(audience)} == {"x"}
    runs = client.get(f"{BASE}/{audience}/runs").json()
    assert runs["_page"]["totalCount"] == 3


@pytest.mark.parametrize(
    ("change", "detail"),
    [
        ({"originName": "UPLOAD"}, "originName must be CUSTOM_UPLOAD"),
        ({"ttlInDays": 91}, "ttlInDays must be between 1 and 90"),
        ({"fields": [{"name": "x", "type": "string"}]}, "identityNs"),
        (
            {
                "sourceSpec": {
                    "params": {
                        "path": "a b",
                        "type": "folder",
                        "sourceType": "Cloud Storage",
                        "baseConnectionId": "conn-a",
                    }
                }
            },
            "spaces",
        ),
    ],
)
def test_bad_create_requests_are_refused_naming_the_field(client, folder, change, detail):
    answer = client.send("POST", BASE + "/", body() | change)
    assert answer.status_code == 400 and detail in answer.json()["detail"]
    assert answer.json()["type"].endswith("100910-400")


def test_an_unknown_base_connection_or_a_duplicate_name_is_refused(client, folder):
    unknown = client.send("POST", BASE + "/", body(base_connection_id="nope"))
    assert unknown.status_code == 422
    create(client)
    again = client.send("POST", BASE + "/", body())
    assert again.status_code == 409 and again.json()["title"] == "DUPLICATE_RESOURCE"
    assert client.get("/data/foundation/flowservice/connections/conn-a").json()["items"][0]["id"]
    assert client.get("/data/foundation/flowservice/connections/nope").status_code == 404


def test_slow_operations_and_runs_stay_processing_and_one_run_at_a_time(client, folder):
    client.emu.faults(external_delay_s=0.5)
    operation = client.send("POST", BASE + "/", body()).json()["operationId"]
    assert client.get(f"{BASE}/operations/{operation}").json()["status"] == "PROCESSING"
    time.sleep(0.6)
    audience = client.get(f"{BASE}/operations/{operation}").json()["audienceId"]
    write(folder, "r1.csv", [("a", 0)], 1_000)
    first = client.send("POST", f"{BASE}/{audience}/runs", {"dataFilterStartTime": 1_000})
    second = client.send("POST", f"{BASE}/{audience}/runs", {"dataFilterStartTime": 1_000})
    assert second.status_code == 422 and "in progress" in second.json()["detail"]
    time.sleep(0.6)
    done = client.get(f"{BASE}/{audience}/runs/{first.json()['runId']}").json()
    assert done["status"] == "SUCCESS"


def test_patch_delete_and_unknown_audiences(client, folder):
    audience = create(client)
    patched = client.send("PATCH", f"{BASE}/{audience}", {"ttlInDays": "45", "description": "n"})
    assert patched.json()["ttlInDays"] == 45 and patched.json()["description"] == "n"
    assert client.send("PATCH", f"{BASE}/{audience}", {"name": "x"}).status_code == 400
    assert client.send("DELETE", f"{BASE}/{audience}").status_code == 202
    assert client.get(f"{BASE}/{audience}").status_code == 404


def test_an_s3_base_connection_reads_objects_by_last_modified_and_hides_its_keys(client, s3_server):
    """Objects under <bucket>/<prefix> are selected by the LastModified the server set at
    upload; objects in deeper folders are not the folder's; GET shows no credentials."""
    import boto3

    bucket = new_s3_bucket(s3_server)
    s3 = boto3.client("s3", endpoint_url=s3_server.url)
    client.emu.s3_base_connection(s3_server.url, "testing", "testing", "conn-s3")
    shown = client.get("/data/foundation/flowservice/connections/conn-s3").json()["items"][0]
    assert shown["connectionSpec"]["id"] == "ecadc60c-7455-4d87-84dc-2a0e293d997b"
    assert "testing" not in str(shown)
    operation = client.send(
        "POST", BASE + "/", body(path=f"{bucket}/aud", base_connection_id="conn-s3")
    )
    audience = client.get(f"{BASE}/operations/{operation.json()['operationId']}").json()[
        "audienceId"
    ]
    s3.put_object(Bucket=bucket, Key="aud/r1.csv", Body=b"identity,delete\na,0\nb,0\n")
    s3.put_object(Bucket=bucket, Key="aud/old/r0.csv", Body=b"identity,delete\nz,0\n")
    uploaded = s3.head_object(Bucket=bucket, Key="aud/r1.csv")["LastModified"].timestamp()
    assert run(client, audience, int(uploaded), differential=False)["rows"] == 2
    assert {m["identity"] for m in client.emu.membership(audience)} == {"a", "b"}
    later = run(client, audience, int(uploaded) + 1)  # a window after the upload: nothing
    assert later["status"] == "SUCCESS" and later["rows"] == 0
