"""Every emulator route answers what Adobe's published specs allow (tests/contract/specs).

Each scenario drives a few routes as a client following Adobe's docs would; the client
checks every answer against the spec's response schema. ``test_every_route_is_covered``
keeps the scenarios in step with the routes the emulator serves.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path

import pytest
import requests

from tests.contract.conftest import CheckedClient, adobe_routes
from tests.emulator.xdm import profile_message
from tests.extract.conftest import write_events

pytestmark = pytest.mark.integration

# Routes of services with no spec in the set copied from Adobe (tests/contract/specs):
# IMS, the External Audiences API (/data/core/ais), Flow Service connections, the Schema
# Registry and Identity Service namespaces (the doctor reads the last three)
NO_SPEC_PREFIXES = (
    "/ims/",
    "/data/core/ais/",
    "/data/foundation/flowservice/",
    "/data/foundation/schemaregistry/",
    "/data/core/idnamespace/",
)
AUDIENCES = "/data/core/ups/audiences"
DEFINITIONS = "/data/core/ups/segment/definitions"
ENTITIES = "/data/core/ups/access/entities"
BATCHES = "/data/foundation/catalog/batches"
SEGMENT = {
    "func": "segment",
    "version": [1, 0, 0],
    "container": {
        "func": "container",
        "context": "visitors",
        "pred": {"func": "streq", "str": "home", "val": {"func": "attr", "name": "variables/page"}},
    },
}


@dataclass
class Scenario:
    routes: tuple[str, ...]
    run: Callable[[CheckedClient, Path], None]


SCENARIOS: dict[str, Scenario] = {}


def scenario(*routes: str) -> Callable[[Callable[[CheckedClient, Path], None]], None]:
    def register(fn: Callable[[CheckedClient, Path], None]) -> None:
        SCENARIOS[fn.__name__] = Scenario(routes, fn)

    return register


@scenario("POST /collection/batch/{inlet_id}", "POST /collection/{inlet_id}")
def streaming(c: CheckedClient, _tmp: Path) -> None:
    config = c.emu.config
    inlet = config["inlet_id"]
    good = profile_message(config, "ecid-1")
    bad = {"header": {}, "body": {}}
    batch = c.call("POST", f"/collection/batch/{inlet}", {"messages": [good, bad]})
    assert batch.status_code == 207
    assert [("xactionId" in r, r.get("statusCode")) for r in batch.json()["responses"]] == [
        (True, None),
        (False, 400),
    ]
    one = c.call("POST", f"/collection/{inlet}", good, params={"syncValidation": "true"})
    assert one.status_code == 200 and one.json()["synchronousValidation"] == {"status": "pass"}


@scenario(
    "POST /data/core/ups/audiences",
    "GET /data/core/ups/audiences",
    "GET /data/core/ups/audiences/{audience_id}",
    "PUT /data/core/ups/audiences/{audience_id}",
    "PATCH /data/core/ups/audiences/{audience_id}",
    "DELETE /data/core/ups/audiences/{audience_id}",
)
def audiences(c: CheckedClient, _tmp: Path) -> None:
    external = c.call(
        "POST",
        AUDIENCES,
        {
            "name": "CJA buyers",
            "type": "ExternalAudience",
            "namespace": "AEPSegments",
            "audienceId": "cja-buyers",
            "originName": "CUSTOM_UPLOAD",
        },
    )
    assert external.status_code == 201, external.text
    aid = external.json()["id"]
    page = {"name": "Page form", "audienceId": "page-form", "namespace": "CustomerAudienceUpload"}
    assert c.call("POST", AUDIENCES, page).json()["type"] == "ExternalSegment"
    listed = c.call("GET", AUDIENCES, params={"limit": 1}).json()
    assert listed["_page"]["totalCount"] == 2 and listed["_page"]["next"] == 1
    assert c.call("GET", f"{AUDIENCES}/{aid}").json()["audienceId"] == "cja-buyers"
    renamed = c.call("PUT", f"{AUDIENCES}/{aid}", {"name": "CJA buyers (renamed)"})
    assert renamed.status_code == 201
    moved = c.call("PUT", f"{AUDIENCES}/{aid}", {"name": "x", "namespace": "AAM"})
    assert moved.status_code == 400 and "immutable" in moved.json()["detail"]
    ops = [{"op": "add", "path": "/lifecycleState", "value": "archived"}]
    assert c.call("PATCH", f"{AUDIENCES}/{aid}", ops).json()["lifecycleState"] == "archived"
    assert c.call("DELETE", f"{AUDIENCES}/{aid}").status_code == 204
    assert c.call("GET", f"{AUDIENCES}/{aid}").status_code == 404


@scenario(
    "GET /data/core/ups/segment/definitions", "GET /data/core/ups/segment/definitions/{segment_id}"
)
def segment_definitions(c: CheckedClient, _tmp: Path) -> None:
    pql = {"type": "PQL", "format": "pql/text", "value": 'homeAddress.country = "US"'}
    created = c.call("POST", AUDIENCES, {"name": "US", "expression": pql}).json()
    c.call("POST", AUDIENCES, {"name": "external", "audienceId": "e1"})
    listed = c.call("GET", DEFINITIONS).json()
    assert [s["name"] for s in listed["segments"]] == ["US"]
    assert listed["page"]["totalCount"] == 1
    one = c.call("GET", f"{DEFINITIONS}/{created['id']}").json()
    assert one["expression"] == pql and one["schema"] == {"name": "_xdm.context.profile"}
    assert c.call("GET", f"{DEFINITIONS}/nope").status_code == 404


@scenario("GET /data/core/ups/access/entities", "POST /data/core/ups/access/entities")
def profile_access(c: CheckedClient, _tmp: Path) -> None:
    config = c.emu.config
    c.call(
        "POST",
        f"/collection/batch/{config['inlet_id']}",
        {"messages": [profile_message(config, "ecid-7")]},
    )
    params = {"schema.name": "_xdm.context.profile", "entityId": "ecid-7", "entityIdNS": "ECID"}
    found = c.call("GET", ENTITIES, params=params).json()
    [entity] = found.values()
    assert entity["entity"]["identities"] == [{"id": "ecid-7", "namespace": {"code": "ECID"}}]
    bulk = {
        "schema": {"name": "_xdm.context.profile"},
        "identities": [{"entityId": "ecid-7", "entityIdNS": {"code": "ECID"}}],
    }
    assert len(c.call("POST", ENTITIES, bulk).json()) == 1
    assert c.call("GET", ENTITIES, params={"entityId": "x"}).status_code == 400


@scenario("GET /data/foundation/catalog/batches", "GET /data/foundation/catalog/batches/{batch_id}")
def catalog(c: CheckedClient, _tmp: Path) -> None:
    failed = c.emu.add_batch(status="failed", records=3)
    c.emu.add_batch(status="staging", records=1)
    listed = c.call("GET", BATCHES, params={"orderBy": "desc:created"})
    assert listed.headers["x-total-count"] == "2"
    one = c.call("GET", f"{BATCHES}/{failed['id']}").json()[failed["id"]]
    assert one["status"] == "failed" and one["failedRecordCount"] == 3
    assert one["errors"][0]["code"] and one["sandboxId"]
    assert c.call("GET", BATCHES, params={"status": "nope"}).status_code == 400


@scenario("GET /data/foundation/catalog/dataSets/{dataset_id}")
def catalog_dataset(c: CheckedClient, _tmp: Path) -> None:
    dataset_id = c.emu.config["dataset_id"]
    body = c.call("GET", f"/data/foundation/catalog/dataSets/{dataset_id}").json()
    assert body[dataset_id]["tags"]["unifiedProfile"] == ["enabled:true"]
    assert c.call("GET", "/data/foundation/catalog/dataSets/nope").status_code == 404


@scenario("POST /reports", "GET /reports/topItems", "GET /data/dataviews/{data_view_id}")
def reports(c: CheckedClient, tmp: Path) -> None:
    lake = write_events(
        tmp,
        [
            {
                "timestamp": "2026-11-01T10:00:00+00:00",
                "person_id": "p1",
                "page_name": "home",
                "event_type": "web.webpagedetails.pageViews",
            },
            {
                "timestamp": "2026-11-01T11:00:00+00:00",
                "person_id": "p2",
                "page_name": "cart",
                "event_type": "web.webpagedetails.pageViews",
            },
        ],
    )
    c.emu.set_lake(lake)
    view = c.emu.config["data_view_id"]
    body = {
        "dataId": view,
        "globalFilters": [
            {"type": "dateRange", "dateRange": "2026-11-01T00:00:00/2026-11-02T00:00:00"}
        ],
        "metricContainer": {"metrics": [{"columnId": "0", "id": "metrics/occurrences"}]},
        "dimension": "variables/page",
    }
    rows = c.call("POST", "/reports", body).json()["rows"]
    assert sorted(r["value"] for r in rows) == ["cart", "home"]
    refused = c.call("POST", "/reports", body | {"dimensions": ["variables/page"]})
    assert refused.status_code == 400 and "dimensions[]" in refused.json()["errorDescription"]
    day = {"dataId": view, "dimension": "variables/page", "dateRange": "2026-11-01/2026-11-01"}
    top = c.call("GET", "/reports/topItems", params=day).json()
    assert {r["value"] for r in top["rows"]} == {"cart", "home"}
    search = {"search-clause": "'HO' OR 'x'", "searchNot": "cart", "lookupNoneValues": "false"}
    searched = c.call("GET", "/reports/topItems", params=day | search).json()
    assert [r["value"] for r in searched["rows"]] == ["home"] and searched["searchNot"] == "cart"
    zone = c.call("GET", f"/data/dataviews/{view}", params={"expansion": "timezoneDesignator"})
    assert zone.json() == {"id": view, "timezoneDesignator": "UTC"}
    assert c.call("GET", "/data/dataviews/dv_nope").status_code == 404


@scenario(
    "GET /segments",
    "POST /segments",
    "GET /segments/{segment_id}",
    "PUT /segments/{segment_id}",
    "DELETE /segments/{segment_id}",
    "POST /segments/validate",
)
def cja_segments(c: CheckedClient, _tmp: Path) -> None:
    view = c.emu.config["data_view_id"]
    wrapped = {
        "func": "segment-def",
        "version": [1, 0, 0],
        "container": {**SEGMENT["container"], "func": "segment"},
    }
    created = c.call("POST", "/segments", {"name": "Home", "dataId": view, "definition": wrapped})
    sid = created.json()["id"]
    listed = c.call("GET", "/segments").json()
    assert listed["totalElements"] == 1 and "definition" not in listed["content"][0]
    expanded = c.call("GET", f"/segments/{sid}", params={"expansion": "definition,modified"})
    assert expanded.json()["definition"] == wrapped
    ok = c.call("POST", "/segments/validate", {"dataId": view, "definition": SEGMENT}).json()
    assert ok["valid"] is True
    invented = {
        **SEGMENT,
        "container": {
            **SEGMENT["container"],
            "pred": {
                "func": "strne",
                "str": "x",
                "val": {"func": "attr", "name": "variables/page"},
            },
        },
    }
    refused = c.call("POST", "/segments/validate", {"definition": invented}).json()
    assert refused["valid"] is False and "strne" in refused["errors"][0]
    renamed = c.call(
        "PUT",
        f"/segments/{sid}",
        {"name": "Home page", "definition": SEGMENT},
        params={"expansion": "definition,modified"},
    ).json()
    assert renamed["name"] == "Home page" and renamed["definition"] == SEGMENT
    assert c.call("PUT", f"/segments/{sid}", {"definition": "x"}).status_code == 400
    deleted = c.call("DELETE", f"/segments/{sid}")
    assert deleted.status_code == 200 and deleted.json()["result"] == "success"
    assert c.call("GET", f"/segments/{sid}").status_code == 404


def _ids() -> list[str]:
    return sorted(SCENARIOS)


@pytest.mark.parametrize("name", _ids())
def test_routes_answer_as_specified(name: str, checked: CheckedClient, tmp_path: Path) -> None:
    SCENARIOS[name].run(checked, tmp_path)
    missing = set(SCENARIOS[name].routes) - checked.routes
    assert not missing, f"scenario {name} did not reach {missing}"


def test_every_route_is_covered() -> None:
    covered = {route for s in SCENARIOS.values() for route in s.routes}
    specified = {r for r in adobe_routes() if not r.split(" ", 1)[1].startswith(NO_SPEC_PREFIXES)}
    assert specified == covered


def test_unknown_routes_answer_in_adobe_dialects(emu) -> None:
    """Paths in none of the specs (so not checked by the hook): the owning service's shape."""
    platform = requests.get(emu.url + "/data/core/ups/nope", timeout=10)
    assert platform.status_code == 404 and platform.json()["title"] == "Not Found"
    filters = requests.get(emu.url + "/filters", headers=emu.headers(), timeout=10)
    assert filters.status_code == 404 and filters.json()["errorCode"] == "resource_not_found"
    wrong = requests.put(emu.url + "/reports", timeout=10)
    assert wrong.status_code == 405 and "errorDescription" in wrong.json()
