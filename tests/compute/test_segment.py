"""CJA segment definitions (reference §5 examples and more) on hand-made events."""

from __future__ import annotations

import pytest

from cja_audiences.filters.segment import (
    DataViewMapping,
    SegmentError,
    glob_to_like,
    parse_segment,
)
from tests.compute.helpers import BUY, PAGE, VIEW, ev, run


def attr(name: str) -> dict[str, str]:
    return {"func": "attr", "name": f"variables/{name}"}


def page_is(value: str) -> dict[str, object]:
    return {"func": "streq", "str": value, "val": attr("page")}


def hits(pred: dict[str, object]) -> dict[str, object]:
    return {"func": "container", "context": "hits", "pred": pred}


def segment(context: str, pred: dict[str, object]) -> dict[str, object]:
    return {
        "func": "segment",
        "version": [1, 0, 0],
        "container": {"func": "container", "context": context, "pred": pred},
    }


def members(definition: dict[str, object], rows: list[dict], **mapping: dict) -> set[str]:
    return run(parse_segment(definition, DataViewMapping(mapping or None)), rows)


ROWS = [
    ev("a", 0, PAGE, page_name="Main Landing Page"),
    ev("a", 10, PAGE, page_name="Product Search"),
    ev("b", 0, PAGE, page_name="Product Search"),
    ev("b", 10, PAGE, page_name="Main Landing Page"),
    ev("c", 0, PAGE, page_name="Main Landing Page"),
    ev("c", 60 * 24 * 40, PAGE, page_name="Product Search"),  # 40 days later
    ev("d", 0, VIEW, page_name=None),
]


def test_r4_visitor_string_equals() -> None:
    assert members(segment("visitors", page_is("Main Landing Page")), ROWS) == {"a", "b", "c"}


def test_r3_visitor_exists() -> None:
    definition = segment("visitors", {"func": "exists", "val": attr("page")})
    assert members(definition, ROWS) == {"a", "b", "c"}


def test_r13_nested_hit_containers_with_and() -> None:
    definition = segment(
        "visitors",
        {
            "func": "and",
            "preds": [
                hits({"func": "exists", "val": attr("page")}),
                hits(page_is("Product Search")),
            ],
        },
    )
    assert members(definition, ROWS) == {"a", "b", "c"}


def test_r14_then_across_visits() -> None:
    definition = segment(
        "visitors",
        {
            "func": "sequence",
            "stream": [hits(page_is("Main Landing Page")), hits(page_is("Product Search"))],
        },
    )
    assert members(definition, ROWS) == {"a", "c"}  # b did it the other way round


def test_r16_then_within_one_month_count_as_string() -> None:
    definition = segment(
        "visitors",
        {
            "func": "sequence",
            "stream": [
                hits(page_is("Main Landing Page")),
                {"func": "time-restriction", "count": "1", "limit": "within", "unit": "month"},
                hits(page_is("Product Search")),
            ],
        },
    )
    assert members(definition, ROWS) == {"a"}  # c took 40 days


def test_visits_sequence_stays_in_one_session() -> None:
    definition = segment(
        "visits",
        {
            "func": "sequence",
            "stream": [hits(page_is("Main Landing Page")), hits(page_is("Product Search"))],
        },
    )
    assert members(definition, ROWS) == {"a"}


def test_r6_total_visits_at_least_two() -> None:
    definition = segment(
        "visitors",
        {
            "func": "ge",
            "num": 2,
            "val": {"func": "total", "evt": {"func": "event", "name": "metrics/visits"}},
        },
    )
    assert members(definition, ROWS) == {"c"}  # c's two hits are 40 days apart


def test_both_negation_encodings() -> None:
    not_streq = segment(
        "visitors", {"func": "not-streq", "str": "Main Landing Page", "val": attr("page")}
    )
    without = segment("visitors", {"func": "without", "pred": page_is("Main Landing Page")})
    # not-streq holds per hit: a person with any other hit (or an unset page) qualifies
    assert members(not_streq, ROWS) == {"a", "b", "c", "d"}
    # without complements at the visitor level: persons who never saw the page
    assert members(without, ROWS) == {"d"}
    # at hit level the two encodings agree
    hit_not = segment("hits", {"func": "not-streq", "str": "Product Search", "val": attr("page")})
    hit_without = segment("hits", {"func": "without", "pred": page_is("Product Search")})
    assert members(hit_not, ROWS) == members(hit_without, ROWS) == {"a", "b", "c", "d"}


def test_event_exists_and_metric_totals() -> None:
    rows = [
        ev("a", 0, BUY, revenue=30.0, order_id="o1"),
        ev("a", 5, BUY, revenue=30.0, order_id="o2"),
        ev("b", 0, VIEW),
        ev("c", 0, BUY, revenue=100.0, order_id="o3"),
    ]
    orders = {"func": "event", "name": "metrics/orders"}
    assert members(segment("hits", {"func": "event-exists", "evt": orders}), rows) == {"a", "c"}
    assert members(segment("visitors", {"func": "not-event-exists", "evt": orders}), rows) == {"b"}
    revenue = {"func": "total", "evt": {"func": "event", "name": "metrics/revenue"}}
    assert members(segment("visitors", {"func": "gt", "num": 50, "val": revenue}), rows) == {
        "a",
        "c",
    }
    assert members(segment("visits", {"func": "gt", "num": 50, "val": revenue}), rows) == {"a", "c"}
    assert members(segment("hits", {"func": "gt", "num": 50, "val": revenue}), rows) == {"c"}
    distinct = {"func": "total-distinct", "field": attr("orderid")}
    assert members(segment("visitors", {"func": "ge", "num": 2, "val": distinct}), rows) == {"a"}
    rng = {"func": "range", "low": 50, "high": 70, "val": revenue}
    assert members(segment("visitors", rng), rows) == {"a"}


def test_list_and_string_funcs() -> None:
    definition = segment(
        "hits", {"func": "streq-in", "list": ["Product Search", "x"], "val": attr("page")}
    )
    assert members(definition, ROWS) == {"a", "b", "c"}
    definition = segment("hits", {"func": "matches", "glob": "main*page", "val": attr("page")})
    assert members(definition, ROWS) == {"a", "b", "c"}
    definition = segment(
        "hits", {"func": "contains-any-of", "list": ["SEARCH"], "val": attr("page")}
    )
    assert members(definition, ROWS) == {"a", "b", "c"}
    numbers = segment("hits", {"func": "eq-in", "list": [30, 31], "val": attr("revenue")})
    assert members(numbers, [ev("a", 0, revenue=30.0), ev("b", 0, revenue=32.0)]) == {"a"}


def test_exclude_next_checkpoint_and_prefix() -> None:
    rows = [
        ev("a", 0, PAGE, page_name="Main Landing Page"),
        ev("a", 1, PAGE, page_name="help"),
        ev("a", 2, PAGE, page_name="Product Search"),
        ev("b", 0, PAGE, page_name="Main Landing Page"),
        ev("b", 2, PAGE, page_name="Product Search"),
    ]
    definition = segment(
        "visitors",
        {
            "func": "sequence",
            "stream": [
                hits(page_is("Main Landing Page")),
                {"func": "exclude-next-checkpoint"},
                hits(page_is("help")),
                hits(page_is("Product Search")),
            ],
        },
    )
    assert members(definition, rows) == {"b"}
    # Only After Sequence (sequence-prefix): hits from the end of "landing THEN help" onward
    prefix = segment(
        "hits",
        {
            "func": "and",
            "preds": [
                page_is("Product Search"),
                {
                    "func": "sequence-prefix",
                    "context": "visitors",
                    "stream": [hits(page_is("Main Landing Page")), hits(page_is("help"))],
                },
            ],
        },
    )
    assert members(prefix, rows) == {"a"}


def test_custom_data_view_mapping() -> None:
    rows = [ev("a", 0, dimensions={"evar7": "gold"}), ev("b", 0, dimensions={"evar7": "none"})]
    definition = segment("visitors", {"func": "streq", "str": "gold", "val": attr("evar7")})
    assert members(definition, rows, dimensions={"variables/evar7": "dimensions.evar7"}) == {"a"}


def test_cja_doc_variant_segment_def() -> None:
    definition = {
        "func": "segment-def",
        "version": [1, 0, 0],
        "container": {"func": "segment", "context": "hits", "pred": page_is("Product Search")},
    }
    assert members(definition, ROWS) == {"a", "b", "c"}


@pytest.mark.parametrize(
    ("pred", "construct"),
    [
        ({"func": "sequence-and", "checkpoints": []}, "sequence-and"),
        ({"func": "segment-ref", "id": "s1"}, "segment-ref"),
        ({"func": "not", "pred": page_is("x")}, "'not' is not an Adobe func"),
        (
            {"func": "not-contains-any-of", "list": ["x"], "val": attr("page")},
            "not-contains-any-of",
        ),
        (
            {
                "func": "sequence",
                "stream": [
                    hits(page_is("x")),
                    {
                        "func": "dimension-restriction",
                        "limit": "within",
                        "count": 1,
                        "attribute": attr("page"),
                    },
                    hits(page_is("y")),
                ],
            },
            "dimension-restriction",
        ),
        (
            {
                "func": "sequence",
                "stream": [
                    {"func": "container", "context": "visits", "pred": page_is("x")},
                    hits(page_is("y")),
                ],
            },
            "checkpoint containers with context 'visits'",
        ),
        (
            {
                "func": "streq",
                "str": "x",
                "val": {
                    "func": "attr",
                    "name": "variables/page",
                    "allocation-model": {
                        "func": "allocation-dedupedInstance",
                        "context": "visitors",
                    },
                },
            },
            "allocation-dedupedInstance",
        ),
        (
            {
                "func": "gt",
                "num": 1,
                "val": {"func": "total", "evt": {"func": "event", "name": "metrics/event42"}},
            },
            "metrics/event42",
        ),
        ({"func": "frobnicate"}, "frobnicate"),
    ],
)
def test_unsupported_constructs_are_named(pred: dict[str, object], construct: str) -> None:
    with pytest.raises(SegmentError, match=construct):
        parse_segment(segment("visitors", pred))


def test_glob_translation() -> None:
    assert glob_to_like(r"a*b\*c%_") == r"a%b*c\%\_"
