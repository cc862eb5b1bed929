"""CJA Reporting API ``POST /reports`` over a Parquet lake, and the Segments API."""

from __future__ import annotations

import time
from datetime import UTC, datetime, timedelta

import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cja_audiences.lake.schema import EVENT_SCHEMA

RANGE = "2026-11-01T00:00:00.000/2026-11-03T00:00:00.000"
VIEW = "web.webpagedetails.pageViews"
BUY = "commerce.purchases"
EVENTS = [  # person, time, type, page, revenue, skus
    ("p1", "2026-11-01T10:00", VIEW, "home", None, None),
    ("p1", "2026-11-01T10:10", BUY, "checkout", 100.0, ["sku-1", "sku-2"]),
    ("p1", "2026-11-02T09:00", VIEW, "home", None, None),
    ("p2", "2026-11-01T12:00", VIEW, "cart", None, None),
    ("p2", "2026-11-01T12:50", VIEW, None, None, None),
    ("p3", "2026-11-03T08:00", VIEW, "home", None, None),
]


@pytest.fixture(scope="module")
def lake(tmp_path_factory):
    root = tmp_path_factory.mktemp("cja-lake")
    by_date: dict[str, list[dict]] = {}
    for i, (person, when, kind, page, revenue, skus) in enumerate(EVENTS):
        ts = datetime.fromisoformat(when).replace(tzinfo=UTC)
        row = {
            "event_id": f"ev{i}",
            "timestamp": ts,
            "person_id": person,
            "person_namespace": "ECID",
            "event_type": kind,
            "page_name": page,
            "revenue": revenue,
            "order_id": f"o{i}" if kind == BUY else None,
            "product_skus": skus,
            "dimensions": [("plan", "gold")] if person == "p1" else None,
        }
        by_date.setdefault(ts.date().isoformat(), []).append(row)
    for day, rows in by_date.items():
        folder = root / "lake" / "events" / f"date={day}"
        folder.mkdir(parents=True)
        pq.write_table(pa.Table.from_pylist(rows, schema=EVENT_SCHEMA), folder / "part-0.parquet")
    return root


@pytest.fixture
def cja(client, lake):
    client.emu.set_lake(lake)
    return client


def _report(client, dimension="variables/personid", metrics=("metrics/occurrences",), **extra):
    body = {
        "rsid": client.emu.config["data_view_id"],
        "globalFilters": [{"type": "DATE_RANGE", "dateRange": RANGE}],
        "metricContainer": {
            "metrics": [{"columnId": str(i), "id": m} for i, m in enumerate(metrics)]
        },
        "settings": {"limit": 50, "page": 0},
    }
    if dimension:
        body["dimension"] = dimension
    for key, value in extra.items():
        body[key] = value
    return client.send("POST", "/reports", body)


def test_person_report_with_metrics(cja):
    metrics = ("metrics/occurrences", "metrics/revenue", "metrics/visits", "metrics/pageviews")
    response = _report(cja, metrics=metrics)
    assert response.status_code == 200
    body = response.json()
    assert [(r["value"], r["data"]) for r in body["rows"]] == [
        ("p1", [3, 100, 2, 2]),
        ("p2", [2, 0, 2, 2]),
    ]
    assert body["summaryData"]["totals"] == [5, 100, 4, 4]
    assert body["columns"] == {
        "columnIds": ["0", "1", "2", "3"],
        "dimension": {"id": "variables/personid", "type": "STRING"},
    }
    assert (body["totalElements"], body["totalPages"], body["number"]) == (2, 1, 0)
    assert body["firstPage"] and body["lastPage"]
    assert body["rows"][0]["itemId"].isdigit()


def test_paging_is_zero_based(cja):
    pages = []
    for page in (0, 1):
        body = _report(cja, settings={"limit": 1, "page": page}).json()
        pages.append(body)
    assert [p["rows"][0]["value"] for p in pages] == ["p1", "p2"]
    assert (pages[0]["firstPage"], pages[0]["lastPage"]) == (True, False)
    assert (pages[1]["firstPage"], pages[1]["lastPage"]) == (False, True)
    assert pages[1]["totalPages"] == 2
    beyond = _report(cja, settings={"limit": 1, "page": 5}).json()
    assert beyond["rows"] == [] and beyond["lastPage"]


def test_totals_only_without_dimension(cja):
    body = _report(cja, dimension=None, metrics=("metrics/people", "metrics/orders")).json()
    assert body["rows"] == []
    assert body["summaryData"]["totals"] == [2, 1]


def test_date_range_is_end_exclusive_and_zone_aware(cja):
    filters = [{"type": "DATE_RANGE", "dateRange": "2026-11-03T09:00:00+01:00/2026-11-04T00:00:00"}]
    body = _report(cja, globalFilters=filters).json()
    assert [r["value"] for r in body["rows"]] == ["p3"]


def test_nones_behaviour_and_dimension_sort(cja):
    excluded = _report(cja, dimension="variables/page", settings={"dimensionSort": "asc"}).json()
    assert [r["value"] for r in excluded["rows"]] == ["cart", "checkout", "home"]
    included = _report(cja, dimension="variables/page", settings={"nonesBehavior": "return-nones"})
    unspecified = [r for r in included.json()["rows"] if r["value"] == "Unspecified"]
    assert unspecified[0]["itemId"] == "0"


def test_list_and_map_dimensions(cja):
    products = _report(cja, dimension="variables/product").json()
    assert sorted(r["value"] for r in products["rows"]) == ["sku-1", "sku-2"]
    plans = _report(cja, dimension="variables/dimensions.plan").json()
    assert [(r["value"], r["data"]) for r in plans["rows"]] == [("gold", [3])]


def test_sort_ascending_and_statistics(cja):
    metrics = [{"columnId": "0", "id": "metrics/occurrences", "sort": "asc"}]
    body = _report(
        cja, metricContainer={"metrics": metrics}, statistics={"functions": ["col-max", "col-min"]}
    ).json()
    assert [r["value"] for r in body["rows"]] == ["p2", "p1"]
    assert (body["summaryData"]["col-max"], body["summaryData"]["col-min"]) == ([3], [2])


def test_no_lake_means_an_empty_data_view(client):
    client.emu.set_lake(None)
    body = _report(client).json()
    assert (body["totalElements"], body["rows"], body["summaryData"]["totals"]) == (0, [], [0])


@pytest.mark.parametrize(
    ("change", "status", "code"),
    [
        ({"rsid": None}, 400, "invalid_request"),
        ({"rsid": "dv_other"}, 404, "resource_not_found"),
        ({"dimension": "variables/shoesize"}, 400, "invalid_dimension_access"),
        ({"dimension": "variables/dimensions.bad key"}, 400, "invalid_dimension_access"),
        ({"metricContainer": {"metrics": [{"id": "metrics/joy"}]}}, 400, "invalid_metric_access"),
        ({"metricContainer": {"metrics": []}}, 400, "invalid_request"),
        ({"globalFilters": []}, 400, "invalid_request"),
        (
            {"globalFilters": [{"type": "DATE_RANGE", "dateRange": "yesterday"}]},
            400,
            "invalid_parameters",
        ),
        (
            {"globalFilters": [{"type": "DATE_RANGE", "dateRange": "2026-11-02/2026-11-01"}]},
            400,
            "invalid_parameters",
        ),
        (
            {"globalFilters": [{"type": "DATE_RANGE", "dateRange": "2026-13-02/2026-11-01"}]},
            400,
            "invalid_parameters",
        ),
        (
            {"globalFilters": [{"type": "DATE_RANGE", "dateRange": RANGE}, {"type": "BREAKDOWN"}]},
            400,
            "invalid_parameters",
        ),
        ({"settings": {"limit": 0}}, 400, "invalid_parameters"),
        ({"settings": {"limit": 50001}}, 400, "invalid_parameters"),
        ({"settings": {"page": -1}}, 400, "invalid_parameters"),
        ({"settings": {"nonesBehavior": "maybe"}}, 400, "invalid_request"),
        ({"statistics": {"functions": ["col-median"]}}, 400, "invalid_request"),
    ],
)
def test_report_errors(cja, change, status, code):
    response = _report(cja, **change)
    assert response.status_code == status
    assert response.json()["errorCode"] == code


def test_report_needs_json(cja):
    response = cja.send("POST", "/reports", data=b"{", headers={"Content-Type": "application/json"})
    assert (response.status_code, response.json()["errorCode"]) == (400, "invalid_json_input")
    response = cja.send("POST", "/reports", data=b"{}", headers={"Content-Type": "text/plain"})
    assert response.status_code == 400


def test_rate_limit_12_requests_per_6_seconds(client):
    statuses = [client.get("/segments").status_code for _ in range(13)]
    assert statuses[:12] == [200] * 12
    throttled = client.get("/segments")
    assert throttled.status_code == 429
    assert throttled.json() == {"error_code": "429050", "message": "Too many requests"}


def test_rate_limit_window_slides(client):
    client.emu.faults(cja_rate_limit_requests=2, cja_rate_limit_window_s=0.5)
    assert [client.get("/segments").status_code for _ in range(3)] == [200, 200, 429]
    time.sleep(0.55)
    assert client.get("/segments").status_code == 200


HITS_PURCHASE = {
    "func": "segment",
    "version": [1, 0, 0],
    "container": {
        "func": "container",
        "context": "hits",
        "pred": {"func": "event-exists", "evt": {"func": "event", "name": "metrics/orders"}},
    },
}
CART_VISITORS = {
    "func": "segment",
    "version": [1, 0, 0],
    "container": {
        "func": "container",
        "context": "visitors",
        "pred": {"func": "streq", "str": "cart", "val": {"func": "attr", "name": "variables/page"}},
    },
}


def test_segments_admin_list_get(client):
    emu = client.emu
    stored = emu.add_segment(name="Cart visitors", definition=CART_VISITORS, id="s200_cart")
    emu.add_segment(name="Buyers", definition=HITS_PURCHASE, dataId="dv_other")
    expanded = client.get("/segments/s200_cart", params={"expansion": "definition"}).json()
    assert expanded["definition"] == CART_VISITORS
    assert "definition" not in client.get("/segments/s200_cart").json()
    assert stored["dataId"] == emu.config["data_view_id"]
    listed = client.get("/segments", params={"limit": 1}).json()
    assert (listed["totalElements"], listed["totalPages"], listed["numberOfElements"]) == (2, 2, 1)
    assert listed["firstPage"] and not listed["lastPage"]
    assert [
        s["name"] for s in client.get("/segments", params={"name": "buy"}).json()["content"]
    ] == ["Buyers"]
    by_view = client.get("/segments", params={"dataIds": "dv_other"}).json()["content"]
    assert [s["name"] for s in by_view] == ["Buyers"]
    missing = client.get("/segments/nope")
    assert (missing.status_code, missing.json()["errorCode"]) == (404, "resource_not_found")
    assert client.get("/segments", params={"limit": 0}).status_code == 400


def test_create_segment(client):
    body = {
        "name": "Buyers",
        "dataId": client.emu.config["data_view_id"],
        "definition": HITS_PURCHASE,
    }
    created = client.send("POST", "/segments", body | {"id": "mine"}).json()
    assert created["id"].startswith("s") and created["id"] != "mine"
    expanded = client.get(f"/segments/{created['id']}", params={"expansion": "definition"})
    assert expanded.json()["definition"] == HITS_PURCHASE
    view = client.emu.config["data_view_id"]
    bad = client.send(
        "POST", "/segments", {"name": "x", "dataId": view, "definition": {"func": "nope"}}
    )
    assert (bad.status_code, bad.json()["errorCode"]) == (400, "invalid_data")
    assert client.send("POST", "/segments", {"definition": HITS_PURCHASE}).status_code == 400


def test_update_then_get_segment(client):
    emu = client.emu
    emu.add_segment(name="Cart visitors", definition=CART_VISITORS, id="s200_cart")
    before = client.get("/segments/s200_cart", params={"expansion": "modified"}).json()
    change = {"name": "Buyers", "description": "bought", "definition": HITS_PURCHASE}
    readonly = {"id": "other", "isDeleted": True, "createdDate": "2020-01-01T00:00:00Z"}
    updated = client.send(
        "PUT", "/segments/s200_cart", change | readonly, params={"expansion": "definition"}
    )
    assert updated.status_code == 200
    assert updated.json()["definition"] == HITS_PURCHASE and updated.json()["id"] == "s200_cart"
    got = client.get(
        "/segments/s200_cart", params={"expansion": "definition,isDeleted,createdDate,modified"}
    ).json()
    assert (got["name"], got["description"], got["definition"]) == (
        "Buyers",
        "bought",
        HITS_PURCHASE,
    )
    assert got["isDeleted"] is False and got["createdDate"] != "2020-01-01T00:00:00Z"
    assert got["modified"] >= before["modified"]
    view = emu.config["data_view_id"]
    for bad, code in [
        ({"definition": [1]}, "invalid_data"),
        ({"definition": {"func": "nope"}}, "invalid_data"),
        ({"name": ""}, "invalid_request"),
        ({"owner": "me"}, "invalid_request"),
    ]:
        refused = client.send("PUT", "/segments/s200_cart", bad)
        assert (refused.status_code, refused.json()["errorCode"]) == (400, code), bad
    assert client.send("PUT", "/segments/s200_cart", {"dataId": "dv_other"}).status_code == 404
    assert client.send("PUT", "/segments/nope", {"dataId": view}).status_code == 404
    assert client.get("/segments/s200_cart").json()["name"] == "Buyers"  # refusals changed nothing


def test_delete_then_404(cja):
    cja.emu.add_segment(name="Cart visitors", definition=CART_VISITORS, id="s200_cart")
    deleted = cja.send("DELETE", "/segments/s200_cart")
    assert deleted.status_code == 200 and deleted.json()["result"] == "success"
    missing = cja.get("/segments/s200_cart")
    assert missing.status_code == 404
    assert missing.json() == {
        "errorCode": "resource_not_found",
        "errorDescription": "segment 's200_cart' was not found",
    }
    assert cja.get("/segments").json()["totalElements"] == 0
    again = cja.send("DELETE", "/segments/s200_cart")
    assert (again.status_code, again.json()["errorCode"]) == (404, "resource_not_found")
    by_id = [
        {"type": "DATE_RANGE", "dateRange": RANGE},
        {"type": "SEGMENT", "segmentId": "s200_cart"},
    ]
    assert _report(cja, globalFilters=by_id).status_code == 400


def test_report_filtered_by_stored_and_inline_segments(cja):
    cja.emu.add_segment(name="Cart visitors", definition=CART_VISITORS, id="s200_cart")
    filters = [{"type": "DATE_RANGE", "dateRange": RANGE}]
    by_id = _report(cja, globalFilters=filters + [{"type": "SEGMENT", "segmentId": "s200_cart"}])
    assert [(r["value"], r["data"]) for r in by_id.json()["rows"]] == [("p2", [2])]
    inline = _report(
        cja, globalFilters=filters + [{"type": "SEGMENT", "segmentDefinition": HITS_PURCHASE}]
    )
    assert [(r["value"], r["data"]) for r in inline.json()["rows"]] == [("p1", [1])]


@pytest.mark.parametrize(
    ("segment", "status"),
    [
        ({"type": "SEGMENT", "segmentId": "nope"}, 400),
        (
            {
                "type": "SEGMENT",
                "segmentDefinition": {
                    "func": "segment",
                    "container": {
                        "func": "container",
                        "context": "hits",
                        "pred": {"func": "fuzzy"},
                    },
                },
            },
            400,
        ),
    ],
)
def test_report_segment_errors(cja, segment, status):
    filters = [{"type": "DATE_RANGE", "dateRange": RANGE}, segment]
    assert _report(cja, globalFilters=filters).status_code == status


def test_set_lake_refuses_missing_folder(emu, tmp_path):
    with pytest.raises(AssertionError, match="HTTP 400"):
        emu.set_lake(tmp_path / "nope")


def test_top_items(cja):
    params = {"rsid": cja.emu.config["data_view_id"], "dimension": "variables/page", "limit": 2}
    body = cja.get("/reports/topItems", params=params).json()
    assert [r["value"] for r in body["rows"]] == ["home", "cart"]
    assert set(body["rows"][0]) == {"itemId", "value", "data"}
    assert (body["totalElements"], body["totalPages"], body["lastPage"]) == (4, 2, False)
    second = cja.get("/reports/topItems", params=params | {"page": 1}).json()
    assert {r["value"] for r in second["rows"]} == {"checkout", "Unspecified"}
    ranged = cja.get(
        "/reports/topItems",
        params=params
        | {"dateRange": "2026-11-03T00:00:00/2026-11-04T00:00:00", "lookupNoneValues": "false"},
    ).json()
    assert [r["value"] for r in ranged["rows"]] == ["home"]


@pytest.mark.parametrize(
    ("params", "status"),
    [
        ({"dimension": "variables/page", "limit": 1001}, 400),
        ({"dimension": "variables/page", "limit": "ten"}, 400),
        ({}, 400),
        ({"dimension": "variables/page", "rsid": "dv_other"}, 404),
    ],
)
def test_top_items_errors(cja, params, status):
    params = {"rsid": cja.emu.config["data_view_id"]} | params
    assert cja.get("/reports/topItems", params=params).status_code == status


def test_data_view_as_data_id_and_camel_case_filters(cja):
    view = cja.emu.config["data_view_id"]
    body = {
        "dataId": view,
        "globalFilters": [
            {"type": "dateRange", "dateRange": RANGE},
            {"type": "segment", "segmentDefinition": HITS_PURCHASE},
        ],
        "metricContainer": {"metrics": [{"columnId": "0", "id": "metrics/occurrences"}]},
        "dimension": "variables/personid",
    }
    rows = cja.send("POST", "/reports", body).json()["rows"]
    assert [(r["value"], r["data"]) for r in rows] == [("p1", [1])]


def test_breakdown_filter_and_multi_dimension_refusal(cja):
    pages = {
        r["value"]: r["itemId"] for r in _report(cja, dimension="variables/page").json()["rows"]
    }
    breakdown = {"type": "breakdown", "dimension": "variables/page", "itemId": pages["home"]}
    filters = [{"type": "DATE_RANGE", "dateRange": RANGE}, breakdown]
    rows = _report(cja, globalFilters=filters).json()["rows"]
    assert [(r["value"], r["data"]) for r in rows] == [("p1", [2])]
    refused = _report(cja, dimensions=["variables/page", "variables/personid"])
    assert refused.status_code == 400
    assert "BREAKDOWN" in refused.json()["errorDescription"]
    searched = _report(cja, search={"clause": "( CONTAINS 'p1' )"})
    assert searched.status_code == 400 and "topItems" in searched.json()["errorDescription"]


def test_metric_filters_apply_to_their_metrics(cja):
    container = {
        "metrics": [
            {"columnId": "all", "id": "metrics/occurrences"},
            {"columnId": "home", "id": "metrics/occurrences", "filters": ["f-home"]},
            {"columnId": "day1", "id": "metrics/occurrences", "filters": ["f-day"]},
        ],
        "metricFilters": [
            {
                "id": "f-home",
                "type": "segment",
                "segmentDefinition": {
                    "func": "segment",
                    "container": {
                        "func": "container",
                        "context": "hits",
                        "pred": {
                            "func": "streq",
                            "str": "home",
                            "val": {"func": "attr", "name": "variables/page"},
                        },
                    },
                },
            },
            {
                "id": "f-day",
                "type": "DATE_RANGE",
                "dateRange": "2026-11-01T00:00:00/2026-11-02T00:00:00",
            },
        ],
    }
    body = _report(cja, metricContainer=container).json()
    assert [(r["value"], r["data"]) for r in body["rows"]] == [("p1", [3, 2, 2]), ("p2", [2, 0, 2])]
    unknown = {"metrics": [{"id": "metrics/occurrences", "filters": ["nope"]}]}
    assert _report(cja, metricContainer=unknown).status_code == 400


def test_per_request_limits(cja):
    many = {"metrics": [{"id": "metrics/occurrences"}] * 21}
    assert "at most 20 metrics" in _report(cja, metricContainer=many).json()["errorDescription"]
    long = [{"type": "DATE_RANGE", "dateRange": "2024-01-01T00:00:00/2026-01-01T00:00:00"}]
    assert "18 months" in _report(cja, globalFilters=long).json()["errorDescription"]


def test_data_view_time_zone_moves_days_and_date_ranges(cja):
    cja.emu.set_data_view(timezone="America/New_York")
    days = _report(cja, dimension="variables/daterangeday", settings={"dimensionSort": "asc"})
    # 2026-11-01T10:00Z is 05:00 in New York; p3's 2026-11-03T08:00Z is 03:00 there
    assert [r["value"] for r in days.json()["rows"]] == ["2026-11-01", "2026-11-02"]
    local = [{"type": "DATE_RANGE", "dateRange": "2026-11-03T00:00:00/2026-11-04T00:00:00"}]
    assert [r["value"] for r in _report(cja, globalFilters=local).json()["rows"]] == ["p3"]
    early = [{"type": "DATE_RANGE", "dateRange": "2026-11-03T04:00:00/2026-11-04T00:00:00"}]
    assert _report(cja, globalFilters=early).json()["rows"] == []  # p3 is 03:00 local
    view = cja.get(
        f"/data/dataviews/{cja.emu.config['data_view_id']}",
        params={"expansion": "timezoneDesignator,currentTimezoneOffset"},
    ).json()
    assert view["timezoneDesignator"] == "America/New_York"
    assert view["currentTimezoneOffset"] in (-5.0, -4.0)


def test_person_dimension_is_the_data_views(cja):
    cja.emu.set_data_view(person_dimension="variables/endUserIDs._experience.aaid.id")
    assert _report(cja).status_code == 400  # variables/personid is not in this data view
    rows = _report(cja, dimension="variables/endUserIDs._experience.aaid.id").json()["rows"]
    assert [r["value"] for r in rows] == ["p1", "p2"]


def test_org_limits_per_minute_and_concurrency(client):
    client.emu.faults(cja_rate_limit_requests=1000)
    statuses = [_report(client).status_code for _ in range(61)]
    assert statuses[:60] == [200] * 60
    throttled = _report(client)
    assert throttled.status_code == 429 and throttled.json()["error_code"] == "429050"
    assert "per org" in throttled.json()["message"]


def test_top_items_take_data_id_and_whole_dates(cja):
    params = {"dataId": cja.emu.config["data_view_id"], "dimension": "variables/page"}
    default = cja.get("/reports/topItems", params=params).json()
    today = datetime.now(UTC).date()
    last_90 = f"{today - timedelta(days=90)}/{today}"
    explicit = cja.get("/reports/topItems", params=params | {"dateRange": last_90}).json()
    assert default["rows"] == explicit["rows"]  # the default window is the last 90 days
    ranged = cja.get("/reports/topItems", params=params | {"dateRange": "2026-11-03/2026-11-03"})
    assert [r["value"] for r in ranged.json()["rows"]] == ["home"]
    both = cja.get(
        "/reports/topItems", params=params | {"startDate": "2026-11-01", "endDate": "2026-11-03"}
    ).json()
    assert both["totalElements"] == 4 and both["columns"]["columnIds"] == ["0"]


@pytest.mark.parametrize(
    ("search", "values"),
    [
        ({"search-clause": "'HOM'"}, ["home"]),
        ({"search-clause": "'home' OR 'cart'"}, ["home", "cart"]),
        ({"search-clause": "'ch' OR 'ca' AND NOT ('cart' OR 'x')"}, ["checkout"]),
        ({"search-clause": "NOT 'e'"}, ["cart"]),
        ({"search-clause": "'unspec'", "lookupNoneValues": "false"}, []),
        ({"searchAnd": "c t", "searchNot": "checkout"}, ["cart"]),
        ({"searchOr": "zzz car", "searchPhrase": "ar"}, ["cart"]),
    ],
)
def test_top_items_search(cja, search, values):
    params = {"dataId": cja.emu.config["data_view_id"], "dimension": "variables/page"}
    body = cja.get("/reports/topItems", params=params | search).json()
    assert [r["value"] for r in body["rows"]] == values
    assert body["totalElements"] == len(values)
    assert {k: body[k] for k in search if k.startswith("search") and k != "search-clause"} == {
        k: v for k, v in search.items() if k.startswith("search") and k != "search-clause"
    }


@pytest.mark.parametrize(
    "clause", ["'home", "'home' 'cart'", "home", "('home'", "'a' AND", "AND 'a'"]
)
def test_top_items_search_clause_errors_name_the_position(cja, clause):
    params = {"dataId": cja.emu.config["data_view_id"], "dimension": "variables/page"}
    refused = cja.get("/reports/topItems", params=params | {"search-clause": clause})
    assert refused.status_code == 400
    assert refused.json()["errorCode"] == "invalid_parameters"
    assert "position" in refused.json()["errorDescription"]
    wrong = cja.get("/reports/topItems", params=params | {"lookupNoneValues": "maybe"})
    assert wrong.status_code == 400
