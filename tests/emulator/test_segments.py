"""Unit tests of the CJA segment definition compiler (Adobe's grammar)."""

from __future__ import annotations

import duckdb
import pytest

from emulator.cja import DIMENSIONS
from emulator.segments import SegmentCompileError, compile_segment, glob_to_like

SCALAR_DIMENSIONS = {"variables/personid": "person_id"} | {
    k: v for k, v in DIMENSIONS.items() if not v.startswith("unnest")
}

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
        ({"func": "starts-with", "str": "HO", "val": PAGE}, ["p1", "p2"]),
        ({"func": "ends-with", "str": "RCH", "val": PAGE}, ["p2"]),
        ({"func": "not-ends-with", "str": "me", "val": PAGE}, ["p1", "p2"]),
        ({"func": "matches", "glob": "s*h", "val": PAGE}, ["p2"]),
        ({"func": "matches", "glob": "ca", "val": PAGE}, []),
        ({"func": "not-matches", "glob": "*", "val": PAGE}, []),
        ({"func": "not-streq", "str": "home", "val": PAGE}, ["p1", "p2"]),
        ({"func": "not-streq-in", "list": ["home", "cart"], "val": PAGE}, ["p2"]),
        ({"func": "contains-any-of", "list": ["ART", "zzz"], "val": PAGE}, ["p1"]),
        (
            {
                "func": "eq-any-of",
                "list": [5, 6],
                "val": {"func": "attr", "name": "variables/orderid"},
            },
            ["p2"],
        ),
        (  # hits without an order id are "not equal" too, so p1 qualifies
            {"func": "not-eq", "num": 20, "val": {"func": "attr", "name": "variables/orderid"}},
            ["p1", "p2"],
        ),
        (
            {"func": "not-event-exists", "evt": {"func": "event", "name": "metrics/orders"}},
            ["p1", "p2"],
        ),
        ({"func": "streq-in", "list": ["search", "nowhere"], "val": PAGE}, ["p2"]),
        (
            {"func": "streq", "str": "sku-2", "val": {"func": "attr", "name": "variables/product"}},
            ["p2"],
        ),
        ({"func": "gt", "num": 10, "val": {"func": "attr", "name": "variables/orderid"}}, ["p1"]),
        ({"func": "le", "num": 5, "val": {"func": "attr", "name": "variables/orderid"}}, ["p2"]),
        ({"func": "event-exists", "evt": {"func": "event", "name": "metrics/orders"}}, ["p1"]),
        ({"func": "without", "pred": {"func": "streq", "str": "cart", "val": PAGE}}, ["p1", "p2"]),
        (
            {
                "func": "without",
                "pred": {
                    "func": "container",
                    "context": "visitors",
                    "pred": {"func": "streq", "str": "cart", "val": PAGE},
                },
            },
            ["p2"],
        ),
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


def test_segment_def_wrapper_of_newer_cja_examples():
    definition = {
        "func": "segment-def",
        "version": [1, 0, 0],
        "container": {
            "func": "segment",
            "context": "visitors",
            "pred": {"func": "streq", "str": "cart", "val": PAGE},
        },
    }
    assert compile_segment(definition, SCALAR_DIMENSIONS).params == ["cart"]


def test_glob_is_adobes():
    assert glob_to_like("a*b") == "a%b"
    assert glob_to_like(r"5\*off_%") == "5*off\\_\\%"


@pytest.mark.parametrize("func", ["not", "strne", "ne", "sequence", "matches-regex"])
def test_invented_or_unsupported_names_are_refused(func):
    pred = {
        "func": func,
        "str": "x",
        "num": 1,
        "val": PAGE,
        "pred": {"func": "exists", "val": PAGE},
    }
    with pytest.raises(SegmentCompileError, match=func):
        _people(pred)


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
