"""CJA segment definitions (reference §5 examples and more) on hand-made events."""

from __future__ import annotations

import pytest

from cja_audiences.filters.segment import (
    DataViewMapping,
    SegmentError,
    glob_to_like,
    parse_segment,
    read_segment,
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


def visits(pred: dict[str, object]) -> dict[str, object]:
    return {"func": "container", "context": "visits", "pred": pred}


def seq(*stream: dict[str, object]) -> dict[str, object]:
    return {"func": "sequence", "stream": list(stream)}


def visit_number(func: str, num: int) -> dict[str, object]:
    return {"func": func, "num": num, "val": attr("visitnumber")}


EXCLUDE = {"func": "exclude-next-checkpoint"}
DAY = 60 * 24
# a: home then search in visit 1, search in visit 2 (a day later); b: one visit only;
# c: visit 1 home, visit 2 (three days later) search
VISITS = [
    ev("a", 0, PAGE, page_name="Main Landing Page"),
    ev("a", 5, PAGE, page_name="Product Search"),
    ev("a", DAY, PAGE, page_name="Product Search"),
    ev("b", 0, PAGE, page_name="Main Landing Page"),
    ev("b", 5, PAGE, page_name="Product Search"),
    ev("c", 0, PAGE, page_name="Main Landing Page"),
    ev("c", 3 * DAY, PAGE, page_name="Product Search"),
]


def test_not_contains_any_of_and_all_of_follow_adobes_operator_guide() -> None:
    rows = [
        ev("sr", 0, page_name="Search Results"),
        ev("r", 0, page_name="results page"),
        ev("h", 0, page_name="Home"),
    ]
    words = ["search", "RESULTS"]
    cases = {
        "contains-any-of": {"sr", "r"},
        "contains-all-of": {"sr"},
        "not-contains-any-of": {"h"},  # contains none of them
        "not-contains-all-of": {"r", "h"},  # misses at least one
    }
    for func, expected in cases.items():
        definition = segment("hits", {"func": func, "list": words, "val": attr("page")})
        assert members(definition, rows) == expected, func


def test_visit_number_first_and_returning_visits() -> None:
    first_visit_search = segment(
        "visits", {"func": "and", "preds": [visit_number("eq", 1), page_is("Product Search")]}
    )
    assert members(first_visit_search, VISITS) == {"a", "b"}
    returning = segment("visitors", visit_number("gt", 1))
    assert members(returning, VISITS) == {"a", "c"}
    sessionnumber = segment("hits", {"func": "ge", "num": 2, "val": attr("sessionnumber")})
    assert members(sessionnumber, VISITS) == {"a", "c"}


def test_visit_one_then_visit_two_within_a_day() -> None:
    definition = segment(
        "visitors",
        seq(
            visits(visit_number("eq", 1)),
            {"func": "time-restriction", "limit": "within", "count": 2, "unit": "day"},
            visits(visit_number("eq", 2)),
        ),
    )
    # a's visit 2 starts a day after visit 1 ended; c's three days later; b has no visit 2
    assert members(definition, VISITS) == {"a"}


def test_visit_checkpoints_need_a_later_visit() -> None:
    then_in_another_visit = segment(
        "visitors",
        seq(visits(page_is("Main Landing Page")), visits(page_is("Product Search"))),
    )
    assert members(then_in_another_visit, VISITS) == {"a", "c"}  # b did both in one visit
    # a hit, then a visit that starts after it: the visit holding the hit does not count
    mixed = segment(
        "visitors", seq(hits(page_is("Product Search")), visits(page_is("Product Search")))
    )
    assert members(mixed, VISITS) == {"a"}
    # the next checkpoint's clock starts when the visit ends: a's visit 1 lasted 5 minutes
    after_visit = segment(
        "visitors",
        seq(
            visits(page_is("Main Landing Page")),
            {"func": "time-restriction", "limit": "within", "count": 1, "unit": "minute"},
            hits(page_is("Product Search")),
        ),
    )
    assert members(after_visit, VISITS) == set()


LOGIC = [
    # a: home, then men / kids / women in some order, then checkout
    ev("a", 0, page_name="Home"),
    ev("a", 1, page_name="Kids"),
    ev("a", 2, page_name="Men"),
    ev("a", 3, page_name="Women"),
    ev("a", 4, page_name="Checkout"),
    # b: women before home: the group is incomplete after home
    ev("b", 0, page_name="Women"),
    ev("b", 1, page_name="Home"),
    ev("b", 2, page_name="Men"),
    ev("b", 3, page_name="Kids"),
    ev("b", 4, page_name="Checkout"),
    # c: complete group, but checkout before its last member
    ev("c", 0, page_name="Home"),
    ev("c", 1, page_name="Men"),
    ev("c", 2, page_name="Checkout"),
    ev("c", 3, page_name="Kids"),
    ev("c", 4, page_name="Women"),
]


def logic(func: str, *pages: str) -> dict[str, object]:
    return {"func": func, "checkpoints": [hits(page_is(p)) for p in pages]}


def test_logic_group_any_order_then_next_checkpoint() -> None:
    definition = segment(
        "visitors",
        seq(
            hits(page_is("Home")),
            logic("sequence-and", "Men", "Women", "Kids"),
            hits(page_is("Checkout")),
        ),
    )
    assert members(definition, LOGIC) == {"a"}
    # bounds before the group hold for every member: c's Women came 4 minutes after Home
    for minutes, expected in ((3, {"a"}), (4, {"a", "c"})):
        within = segment(
            "visitors",
            seq(
                hits(page_is("Home")),
                {"func": "time-restriction", "limit": "within", "count": minutes, "unit": "minute"},
                logic("sequence-and", "Men", "Women"),
            ),
        )
        assert members(within, LOGIC) == expected


def test_logic_group_first_match_and_excluded() -> None:
    first_match = segment(
        "visitors", seq(logic("sequence-or", "Women", "Men"), hits(page_is("Checkout")))
    )
    assert members(first_match, LOGIC) == {"a", "b", "c"}
    # home, then neither men nor women, then kids
    excluded = segment(
        "visitors",
        seq(
            hits(page_is("Home")),
            EXCLUDE,
            logic("sequence-or", "Men", "Women"),
            hits(page_is("Kids")),
        ),
    )
    assert members(excluded, LOGIC) == {"a"}
    # outside a sequence a Logic Group is its containers in any order
    unordered = segment("visitors", logic("sequence-and", "Kids", "Checkout"))
    assert members(unordered, LOGIC) == {"a", "b", "c"}


def test_dimension_restriction_within_one_page() -> None:
    rows = [
        ev("a", 0, page_name="Women | Shoes"),
        ev("a", 1, page_name="Checkout | Thank You"),
        ev("b", 0, page_name="Women | Shoes"),
        ev("b", 1, page_name="Women | Tops"),
        ev("b", 2, page_name="Checkout | Thank You"),
        ev("c", 0, page_name="Women | Shoes"),
        ev("c", 1, VIEW, page_name=None),  # no page: not a page value
        ev("c", 2, page_name="Checkout | Thank You"),
    ]
    one_page = {
        "func": "dimension-restriction",
        "limit": "within",
        "count": 1,
        "attribute": attr("page"),
    }
    definition = segment(
        "visitors",
        seq(hits(page_is("Women | Shoes")), one_page, hits(page_is("Checkout | Thank You"))),
    )
    assert members(definition, rows) == {"a", "c"}  # Adobe's own example: b does not match
    after_two = segment(
        "visitors",
        seq(
            hits(page_is("Women | Shoes")),
            {**one_page, "limit": "after", "count": 2},
            hits(page_is("Checkout | Thank You")),
        ),
    )
    assert members(after_two, rows) == {"b"}


def test_exclude_next_checkpoint_in_every_position() -> None:
    rows = [
        ev("a", 0, page_name="help"),
        ev("a", 1, page_name="Home"),
        ev("a", 2, page_name="Checkout"),
        ev("b", 0, page_name="Home"),
        ev("b", 1, page_name="help"),
        ev("b", 2, page_name="Checkout"),
        ev("c", 0, page_name="Home"),
        ev("c", 1, page_name="Checkout"),
        ev("c", 2, page_name="help"),
    ]
    start = segment(
        "visitors",
        seq(EXCLUDE, hits(page_is("help")), hits(page_is("Home")), hits(page_is("Checkout"))),
    )
    middle = segment(
        "visitors",
        seq(hits(page_is("Home")), EXCLUDE, hits(page_is("help")), hits(page_is("Checkout"))),
    )
    end = segment(
        "visitors",
        seq(hits(page_is("Home")), hits(page_is("Checkout")), EXCLUDE, hits(page_is("help"))),
    )
    assert members(start, rows) == {"b", "c"}
    assert members(middle, rows) == {"a", "c"}
    assert members(end, rows) == {"a", "b"}
    # before a visit checkpoint: no help between the hit and the visit
    visit = segment(
        "visitors",
        seq(
            hits(page_is("Home")),
            EXCLUDE,
            hits(page_is("help")),
            visits(page_is("Checkout")),
        ),
    )
    far = [ev("a", 0, page_name="Home"), ev("a", 60, page_name="Checkout")]
    assert members(visit, far) == {"a"}
    assert members(visit, [*far, ev("a", 30, page_name="help")]) == set()


SAVED = {
    "s_search": segment("hits", page_is("Product Search")),
    "s_landing": {"id": "s_landing", "definition": segment("hits", page_is("Main Landing Page"))},
    "s_both": segment(
        "visitors",
        {
            "func": "and",
            "preds": [
                {"func": "segment-ref", "id": "s_search"},
                {"func": "segment-ref", "id": "s_landing"},
            ],
        },
    ),
    "s_loop": segment("visitors", {"func": "segment-ref", "id": "s_loop2"}),
    "s_loop2": segment("visitors", {"func": "segment-ref", "id": "s_loop"}),
}


def lookup(segment_id: str) -> dict[str, object]:
    if segment_id not in SAVED:
        raise SegmentError(f"segment-ref {segment_id}", "not found (test lookup)")
    return SAVED[segment_id]


def test_segment_ref_resolves_nested_references() -> None:
    definition = segment(
        "visitors",
        {
            "func": "and",
            "preds": [
                {"func": "segment-ref", "id": "s_both"},
                {"func": "without", "pred": {"func": "segment-ref", "segmentId": "s_search"}},
            ],
        },
    )
    parsed = read_segment(definition, resolve=lookup)
    assert parsed.references == ("s_both", "s_search", "s_landing")
    assert run(parsed.tree, ROWS) == set()  # the same persons cannot both have and lack it
    visits_of_both = segment("visitors", {"func": "segment-ref", "id": "s_both"})
    assert run(parse_segment(visits_of_both, resolve=lookup), ROWS) == {"a", "b", "c"}


def test_segment_ref_cycles_and_missing_segments_are_named() -> None:
    with pytest.raises(SegmentError, match="cycle: s_loop -> s_loop2 -> s_loop"):
        read_segment(segment("visitors", {"func": "segment-ref", "id": "s_loop"}), resolve=lookup)
    with pytest.raises(SegmentError, match="s_nope.*not found"):
        parse_segment(segment("visitors", {"func": "segment-ref", "id": "s_nope"}), resolve=lookup)


def only_before(*stream: dict[str, object], page: str | None = None) -> dict[str, object]:
    """Hits of an Only Before Sequence (``sequence-suffix``), optionally also on ``page``."""
    suffix = {"func": "sequence-suffix", "context": "visitors", "stream": list(stream)}
    return segment(
        "hits", suffix if page is None else {"func": "and", "preds": [suffix, page_is(page)]}
    )


def test_logic_group_in_only_before_sequence() -> None:
    # the last occurrence of {Men, Women} then Checkout starts at Men@10 (its earliest member)
    rows = [
        ev("a", 0, page_name="Men"),
        ev("a", 1, page_name="Kids"),
        ev("a", 2, page_name="Women"),
        ev("a", 3, page_name="Checkout"),
        ev("a", 10, page_name="Men"),
        ev("a", 11, page_name="Women"),
        ev("a", 12, page_name="Checkout"),
        ev("a", 13, page_name="Kids"),
    ]
    group_first = [logic("sequence-and", "Men", "Women"), hits(page_is("Checkout"))]
    assert members(only_before(*group_first, page="Checkout"), rows) == {"a"}  # Checkout@3
    assert members(only_before(*group_first, page="Kids"), rows) == {"a"}  # Kids@1
    late = [r for r in rows if r["timestamp"] >= ev("a", 10)["timestamp"]]
    assert members(only_before(*group_first, page="Checkout"), late) == set()
    assert members(only_before(*group_first, page="Men"), late) == {"a"}  # the mark itself
    assert members(only_before(*group_first, page="Women"), late) == set()


def test_logic_group_later_in_only_before_sequence_bounds_every_member() -> None:
    # c: Home, then Men 1 and Women 5 minutes later; d: Help between Men and Women
    rows = [
        ev("c", 0, page_name="Home"),
        ev("c", 1, page_name="Men"),
        ev("c", 5, page_name="Women"),
        ev("d", 0, page_name="Home"),
        ev("d", 1, page_name="Men"),
        ev("d", 2, page_name="help"),
        ev("d", 3, page_name="Women"),
    ]
    for minutes, expected in ((3, {"d"}), (5, {"c", "d"})):
        within = {"func": "time-restriction", "limit": "within", "count": minutes, "unit": "minute"}
        stream = [hits(page_is("Home")), within, logic("sequence-and", "Men", "Women")]
        assert members(only_before(*stream, page="Home"), rows) == expected
        assert members(only_before(*stream, page="Men"), rows) == set()  # after the mark
    excluded = [
        hits(page_is("Home")),
        EXCLUDE,
        hits(page_is("help")),
        logic("sequence-and", "Men", "Women"),
    ]
    assert members(only_before(*excluded), rows) == {"c"}


@pytest.mark.parametrize(
    ("pred", "construct"),
    [
        ({"func": "not", "pred": page_is("x")}, "'not' is not an Adobe func"),
        (
            seq(hits(page_is("x")), EXCLUDE, logic("sequence-and", "y", "z"), hits(page_is("w"))),
            "exclude-next-checkpoint before a sequence-and",
        ),
        (
            seq(hits(page_is("x")), EXCLUDE, visits(page_is("y")), hits(page_is("w"))),
            "exclude-next-checkpoint before a visits checkpoint",
        ),
        (
            seq(
                {"func": "container", "context": "visitors", "pred": page_is("x")},
                hits(page_is("y")),
            ),
            "a sequence checkpoint is a hits or visits container",
        ),
        (
            seq(
                hits(page_is("x")), {"func": "sequence-and", "checkpoints": [visits(page_is("y"))]}
            ),
            "a Logic Group inside a sequence groups hits",
        ),
        ({"func": "segment-ref", "id": "s1"}, "no place to look saved segments up"),
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
