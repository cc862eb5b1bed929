"""Unit tests of the CJA segment definition compiler."""

from __future__ import annotations

import duckdb
import pytest

from emulator.cja import SCALAR_DIMENSIONS
from emulator.segments import SegmentCompileError, compile_segment

ROWS = [  # person, session, page, type, skus, order id
    ("p1", "p1:1", "home", "web.webpagedetails.pageViews", [], None),
    ("p1", "p1:1", "cart", "commerce.purchases", ["sku-1"], "20"),
    ("p2", "p2:1", "home", "web.webpagedetails.pageViews", [], None),
    ("p2", "p2:2", "search", "web.webpagedetails.pageViews", ["sku-2"], "5"),
]


def _people(pred, context="visitors"):
    definition = {
        "func": "segment",
        "container": {"func": "container", "context": context, "pred": pred},
    }
    compiled = compile_segment(definition, SCALAR_DIMENSIONS)
    with duckdb.connect() as db:
        db.execute(
            "CREATE TABLE base (person_id VARCHAR, session_id VARCHAR, page_name VARCHAR, "
            "event_type VARCHAR, product_skus VARCHAR[], order_id VARCHAR)"
        )
        db.executemany("INSERT INTO base VALUES (?, ?, ?, ?, ?, ?)", ROWS)
        rows = db.execute(
            f"SELECT DISTINCT person_id FROM base WHERE {compiled.sql} ORDER BY 1", compiled.params
        ).fetchall()
    return [r[0] for r in rows]


PAGE = {"func": "attr", "name": "variables/page"}


@pytest.mark.parametrize(
    ("pred", "people"),
    [
        ({"func": "streq", "str": "cart", "val": PAGE}, ["p1"]),
        ({"func": "contains", "str": "ear", "val": PAGE}, ["p2"]),
        ({"func": "starts-with", "str": "ho", "val": PAGE}, ["p1", "p2"]),
        ({"func": "streq-in", "list": ["search", "nowhere"], "val": PAGE}, ["p2"]),
        (
            {"func": "streq", "str": "sku-2", "val": {"func": "attr", "name": "variables/product"}},
            ["p2"],
        ),
        ({"func": "gt", "num": 10, "val": {"func": "attr", "name": "variables/orderid"}}, ["p1"]),
        ({"func": "le", "num": 5, "val": {"func": "attr", "name": "variables/orderid"}}, ["p2"]),
        ({"func": "event-exists", "evt": {"func": "event", "name": "metrics/orders"}}, ["p1"]),
        ({"func": "not", "pred": {"func": "streq", "str": "cart", "val": PAGE}}, ["p1", "p2"]),
        (
            {
                "func": "and",
                "preds": [
                    {"func": "streq", "str": "home", "val": PAGE},
                    {"func": "exists", "val": {"func": "attr", "name": "variables/product"}},
                ],
            },
            [],
        ),
    ],
)
def test_visitor_predicates(pred, people):
    assert _people(pred) == people


def test_visit_context_keeps_whole_sessions():
    pred = {"func": "streq", "str": "cart", "val": PAGE}
    assert _people(pred, context="visits") == ["p1"]


@pytest.mark.parametrize(
    ("definition", "text"),
    [
        ({"func": "filter"}, "must be"),
        (
            {
                "func": "segment",
                "container": {"func": "container", "context": "decades", "pred": {}},
            },
            "context",
        ),
        (
            {
                "func": "segment",
                "container": {
                    "func": "container",
                    "context": "hits",
                    "pred": {"func": "fuzzy", "val": PAGE},
                },
            },
            "fuzzy",
        ),
        (
            {
                "func": "segment",
                "container": {
                    "func": "container",
                    "context": "hits",
                    "pred": {"func": "streq", "val": {"func": "attr", "name": "variables/shoe"}},
                },
            },
            "not a known dimension",
        ),
        (
            {
                "func": "segment",
                "container": {
                    "func": "container",
                    "context": "hits",
                    "pred": {"func": "and", "preds": []},
                },
            },
            "non-empty preds",
        ),
    ],
)
def test_unsupported_definitions_say_what(definition, text):
    with pytest.raises(SegmentCompileError, match=text):
        compile_segment(definition, SCALAR_DIMENSIONS)
