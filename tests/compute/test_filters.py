"""Every construct of the filter library on a tiny hand-made event table, with the members
worked out by hand in the comments."""

from __future__ import annotations

import pytest

from cja_audiences.filters.compiler import CompileError, QueryBuilder
from cja_audiences.filters.rules import RuleError, parse_rules
from tests.compute.helpers import ADD, BUY, CHECKOUT, PAGE, VIEW, ev, execute, run

# ---- dimension operators -------------------------------------------------------------------

PAGES = [
    ev("a", 0, page_name="Home", revenue=None, product_categories=["shoes", "toys"]),
    ev("b", 0, page_name="home page", revenue=50.0),
    ev("c", 0, page_name="Cart", revenue=150.0, product_categories=["books"]),
    ev("d", 0, page_name=None, revenue=100.0),
    ev("e", 0, page_name="Help: returns", marketing_channel="Email"),
]


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("equals", "Home", {"a"}),  # exact and case-sensitive
        ("not_equals", "Home", {"b", "c", "d", "e"}),  # unset (d) is "not Home" too
        ("contains", "HOME", {"a", "b"}),  # case-insensitive
        ("not_contains", "home", {"c", "d", "e"}),
        ("starts_with", "help", {"e"}),
        ("ends_with", "PAGE", {"b"}),
        ("not_starts_with", "h", {"c", "d"}),
        ("in", ["Cart", "Home"], {"a", "c"}),
        ("not_in", ["Cart", "Home"], {"b", "d", "e"}),
        ("contains_any", ["cart", "returns"], {"c", "e"}),
        ("contains_all", ["help", "returns"], {"e"}),
        ("not_contains_any", ["cart", "returns"], {"a", "b", "d"}),  # contains none of them
        ("not_contains_all", ["help", "returns"], {"a", "b", "c", "d"}),  # misses one of them
        ("matches", r"^[A-Z][a-z]+$", {"a", "c"}),  # regex, case-sensitive
        ("not_matches", r"^[A-Z][a-z]+$", {"b", "d", "e"}),
        ("like", "h%e", {"a", "b"}),  # CJA glob "h*e" after translation, case-insensitive
    ],
)
def test_string_operators(op: str, value: object, expected: set[str]) -> None:
    assert run({"event": {"field": "page_name", "op": op, "value": value}}, PAGES) == expected


@pytest.mark.parametrize(
    ("op", "expected"), [("exists", {"a", "b", "c", "e"}), ("not_exists", {"d"})]
)
def test_exists(op: str, expected: set[str]) -> None:
    assert run({"event": {"field": "page_name", "op": op}}, PAGES) == expected


@pytest.mark.parametrize(
    ("op", "value", "expected"),
    [
        ("gt", 100, {"c"}),
        ("gte", 100, {"c", "d"}),
        ("lt", 100, {"b"}),
        ("lte", 50, {"b"}),
        ("equals", 100, {"d"}),
        ("not_equals", 100, {"a", "b", "c", "e"}),
    ],
)
def test_numeric_comparisons(op: str, value: float, expected: set[str]) -> None:
    assert run({"event": {"field": "revenue", "op": op, "value": value}}, PAGES) == expected


def test_list_column_matches_any_element() -> None:
    assert run({"field": "product_categories", "op": "equals", "value": "toys"}, PAGES) == {"a"}
    assert run({"field": "product_categories", "op": "exists"}, PAGES) == {"a", "c"}
    assert run({"field": "product_categories", "op": "starts_with", "value": "BOO"}, PAGES) == {"c"}


def test_map_dimension_key_is_bound() -> None:
    rows = [ev("a", 0, dimensions={"login": "yes"}), ev("b", 0, dimensions={"login": "no"})]
    assert run({"field": "dimensions.login", "op": "equals", "value": "yes"}, rows) == {"a"}


# ---- containers, include / exclude, nesting ------------------------------------------------

TWO_EVENTS = [
    ev("a", 0, page_name="Home", marketing_channel="Email"),  # both on one event
    ev("b", 0, page_name="Home", marketing_channel="Direct"),
    ev("b", 5, page_name="Cart", marketing_channel="Email"),  # on different events
    ev("c", 0, page_name="Cart", marketing_channel="Direct"),
]
HOME = {"field": "page_name", "op": "equals", "value": "Home"}
EMAIL = {"field": "marketing_channel", "op": "equals", "value": "Email"}


def test_person_container_and_may_use_different_events() -> None:
    assert run({"person": {"all": [HOME, EMAIL]}}, TWO_EVENTS) == {"a", "b"}


def test_event_container_and_needs_one_event() -> None:
    assert run({"event": {"all": [HOME, EMAIL]}}, TWO_EVENTS) == {"a"}


def test_nested_event_containers_in_person() -> None:
    rules = {"person": {"all": [{"event": HOME}, {"event": EMAIL}]}}
    assert run(rules, TWO_EVENTS) == {"a", "b"}


def test_or_and_nesting() -> None:
    cart = {"field": "page_name", "op": "equals", "value": "Cart"}
    direct = {"field": "marketing_channel", "op": "equals", "value": "Direct"}
    # (Home AND Email on one event) OR (Cart AND Direct on one event)
    rules = {"any": [{"event": {"all": [HOME, EMAIL]}}, {"event": {"all": [cart, direct]}}]}
    assert run(rules, TWO_EVENTS) == {"a", "c"}


def test_exclude_is_complement_at_its_level() -> None:
    # person level: never had an Email event -> only c
    assert run({"person": {"exclude": {"event": EMAIL}}}, TWO_EVENTS) == {"c"}
    # event level: has some event that is not Email -> b and c
    assert run({"event": {"exclude": EMAIL}}, TWO_EVENTS) == {"b", "c"}
    # not_equals is per event, like the event-level exclude
    assert run(
        {"field": "marketing_channel", "op": "not_equals", "value": "Email"}, TWO_EVENTS
    ) == {"b", "c"}


def test_include_and_exclude_together() -> None:
    rows = [ev("a", 0, ADD), ev("a", 10, BUY), ev("b", 0, ADD), ev("c", 0, VIEW)]
    rules = {
        "person": {
            "all": [
                {"event": {"field": "event_type", "op": "equals", "value": ADD}},
                {"exclude": {"event": {"field": "event_type", "op": "equals", "value": BUY}}},
            ]
        }
    }
    assert run(rules, rows) == {"b"}


# ---- sessions ------------------------------------------------------------------------------


def test_sessions_split_after_30_minutes_of_inactivity() -> None:
    rows = [
        ev("a", 0, ADD),
        ev("a", 30, BUY),  # 30 min gap: same session
        ev("b", 0, ADD),
        ev("b", 31, BUY),  # 31 min gap: new session
        ev("c", 0, ADD),
        ev("c", 25, VIEW),
        ev("c", 50, BUY),  # chained: one session
    ]
    add_and_buy = {
        "session": {
            "all": [
                {"field": "event_type", "op": "equals", "value": ADD},
                {"field": "event_type", "op": "equals", "value": BUY},
            ]
        }
    }
    assert run(add_and_buy, rows) == {"a", "c"}
    assert run({"metric": "sessions", "op": "gte", "value": 2}, rows) == {"b"}


def test_session_level_exclude() -> None:
    rows = [ev("a", 0, ADD), ev("a", 100, BUY), ev("b", 0, ADD), ev("b", 5, BUY)]
    # a session with a cart add and without a purchase: a (its purchase is in a later session)
    rules = {
        "session": {
            "all": [
                {"field": "event_type", "op": "equals", "value": ADD},
                {"exclude": {"field": "event_type", "op": "equals", "value": BUY}},
            ]
        }
    }
    assert run(rules, rows) == {"a"}


# ---- metrics -------------------------------------------------------------------------------

BUYS = [
    ev("a", 0, BUY, revenue=60.0, order_id="o1"),
    ev("a", 100, BUY, revenue=60.0, order_id="o2"),
    ev("b", 0, BUY, revenue=150.0, order_id="o3"),
    ev("c", 0, BUY, revenue=40.0, order_id="o4"),
    ev("c", 5, BUY, revenue=40.0, order_id="o4"),
    ev("d", 0, VIEW),
]


def test_sum_revenue_per_person() -> None:
    assert run({"metric": {"sum": "revenue"}, "op": "gte", "value": 100}, BUYS) == {"a", "b"}


def test_sum_revenue_per_session_and_per_event() -> None:
    # a's 120 is spread over two sessions; c's 80 is in one session
    session = {"session": {"metric": {"sum": "revenue"}, "op": "gte", "value": 75}}
    assert run(session, BUYS) == {"b", "c"}
    event = {"event": {"metric": {"sum": "revenue"}, "op": "gt", "value": 100}}
    assert run(event, BUYS) == {"b"}


def test_counts_and_distinct_counts() -> None:
    assert run({"metric": "events", "op": "gte", "value": 2}, BUYS) == {"a", "c"}
    assert run({"metric": "orders", "op": "gte", "value": 2}, BUYS) == {"a", "c"}
    assert run({"metric": {"distinct": "order_id"}, "op": "gte", "value": 2}, BUYS) == {"a"}
    assert run({"metric": {"max": "revenue"}, "op": "lt", "value": 50}, BUYS) == {"c"}
    where = {"count": {"field": "revenue", "op": "gt", "value": 50}}
    assert run({"metric": where, "op": "equals", "value": 2}, BUYS) == {"a"}


def test_metric_zero_threshold_counts_persons_without_values() -> None:
    assert run({"metric": {"sum": "revenue"}, "op": "equals", "value": 0}, BUYS) == {"d"}


def test_computed_field() -> None:
    computed = {"net": "coalesce(revenue, 0) - 50"}
    rules = {"metric": {"sum": "net"}, "op": "gt", "value": 50}
    assert run(rules, BUYS, computed=computed) == {"b"}  # a: 10+10, b: 100, c: -10-10, d: -50
    assert run({"event": {"field": "net", "op": "lt", "value": -20}}, BUYS, computed=computed) == {
        "d"
    }


# ---- person attributes ---------------------------------------------------------------------


def test_person_attributes() -> None:
    persons = {
        "a": {"loyalty_tier": "gold", "attributes": {"segment": "vip"}},
        "b": {"loyalty_tier": "none"},
    }
    rules = {
        "person": {
            "any": [
                {"attribute": "loyalty_tier", "op": "in", "value": ["gold", "platinum"]},
                {"attribute": "attributes.segment", "op": "equals", "value": "vip"},
            ]
        }
    }
    assert run(rules, BUYS, persons=persons) == {"a"}
    missing = {"attribute": "loyalty_tier", "op": "not_exists"}
    assert run(missing, BUYS, persons=persons) == {"c", "d"}  # no persons row at all


def test_person_attribute_outside_person_container_fails() -> None:
    with pytest.raises(CompileError, match="person attributes can only be used in a person"):
        run({"event": {"attribute": "loyalty_tier", "op": "exists"}}, BUYS)


# ---- sequences -----------------------------------------------------------------------------


def step(event_type: str, **extra: object) -> dict[str, object]:
    return {"event": {"field": "event_type", "op": "equals", "value": event_type}, **extra}


FUNNEL = [
    ev("a", 0, VIEW),
    ev("a", 5, ADD),
    ev("a", 12, CHECKOUT),  # in order, quick
    ev("b", 0, ADD),
    ev("b", 5, VIEW),
    ev("b", 40, CHECKOUT),  # add before view; 2 sessions
    ev("c", 0, VIEW),
    ev("c", 20, ADD),
    ev("c", 200, ADD),
    ev("c", 210, CHECKOUT),
    ev("d", 0, VIEW),
    ev("d", 1, ADD, page_name="help"),
    ev("d", 2, ADD),
    ev("d", 3, CHECKOUT),
]


def seq(*steps: dict[str, object], **options: object) -> dict[str, object]:
    return {"sequence": {"steps": list(steps), **options}}


def test_then_needs_order() -> None:
    rules = seq(step(VIEW), step(ADD), step(CHECKOUT))
    assert run(rules, FUNNEL) == {"a", "c", "d"}  # b added before viewing... and then viewed


def test_then_within_minutes() -> None:
    # c: view@0 -> add@20 (within 30) -> checkout@210: 190 min after the add at 20, but the
    # add at 200 is not within 30 min of the view. So c fails a 30/30 bound.
    rules = seq(
        step(VIEW), step(ADD, within={"minutes": 30}), step(CHECKOUT, within={"minutes": 30})
    )
    assert run(rules, FUNNEL) == {"a", "d"}
    # widen the second bound to 4 hours: c qualifies through add@20 -> checkout@210
    rules = seq(step(VIEW), step(ADD, within={"minutes": 30}), step(CHECKOUT, within={"hours": 4}))
    assert run(rules, FUNNEL) == {"a", "c", "d"}


def test_then_after() -> None:
    # checkout at least 2 hours after the add: only c (add@20 or @200 ... checkout@210 >= 20+120)
    rules = seq(step(ADD), step(CHECKOUT, after={"hours": 2}))
    assert run(rules, FUNNEL) == {"c"}


def test_then_after_and_within_together() -> None:
    rows = [
        ev("a", 0, ADD),
        ev("a", 100, ADD),
        ev("a", 130, BUY),  # 130 from first add, 30 from 2nd
        ev("b", 0, ADD),
        ev("b", 200, BUY),
    ]
    rules = seq(step(ADD), step(BUY, after={"minutes": 60}, within={"minutes": 150}))
    assert run(rules, rows) == {"a"}  # b: 200 > 150


def test_then_within_sessions() -> None:
    # b's checkout (40) is in its second session; within 0 sessions = same session
    rows = [ev("b", 0, ADD), ev("b", 40, CHECKOUT), ev("a", 0, ADD), ev("a", 10, CHECKOUT)]
    rules = seq(step(ADD), step(CHECKOUT, within={"sessions": 0}))
    assert run(rules, rows) == {"a"}
    rules = seq(step(ADD), step(CHECKOUT, within={"sessions": 1}))
    assert run(rules, rows) == {"a", "b"}
    rules = seq(step(ADD), step(CHECKOUT, after={"sessions": 1}))
    assert run(rules, rows) == {"b"}


def test_then_within_events() -> None:
    rows = [ev("a", 0, ADD), ev("a", 1, VIEW), ev("a", 2, BUY), ev("b", 0, ADD), ev("b", 1, BUY)]
    assert run(seq(step(ADD), step(BUY, within={"events": 1})), rows) == {"b"}


def test_exclude_between_checkpoints() -> None:
    # d: view@0, add@1 (on the help page), add@2, checkout@3: no help event lies strictly
    # between add@1/add@2 and the checkout, so d qualifies.
    help_page = {"field": "page_name", "op": "equals", "value": "help"}
    rules = seq(step(VIEW), step(ADD), step(CHECKOUT, exclude=help_page))
    assert run(rules, FUNNEL) == {"a", "c", "d"}
    rows = [
        ev("a", 0, VIEW),
        ev("a", 1, PAGE, page_name="help"),
        ev("a", 2, ADD),
        ev("b", 0, VIEW),
        ev("b", 2, ADD),
    ]
    rules = seq(step(VIEW), step(ADD, exclude=help_page))
    assert run(rules, rows) == {"b"}


def test_exclude_before_first_and_after_last() -> None:
    rows = [
        ev("a", 0, ADD),
        ev("a", 5, BUY),
        ev("a", 10, ADD),  # last add not followed by a buy
        ev("b", 0, ADD),
        ev("b", 5, BUY),
        ev("c", 0, BUY),
        ev("c", 5, VIEW),
        ev("c", 6, ADD),
    ]
    abandon = seq(
        step(VIEW), step(ADD), exclude_after={"field": "event_type", "op": "equals", "value": BUY}
    )
    assert run(abandon, rows) == {"c"}  # a has no view
    first_time = seq(
        step(ADD), step(ADD), exclude_before={"field": "event_type", "op": "equals", "value": BUY}
    )
    # a: add@0 (no purchase before it) -> add@10; b and c have one add each
    assert run(first_time, rows) == {"a"}
    rows.append(ev("d", 0, ADD))
    rows.append(ev("d", 1, ADD))
    assert run(first_time, rows) == {"a", "d"}


def test_sequence_inside_one_session() -> None:
    rules = {"session": seq(step(VIEW), step(CHECKOUT))}
    # b: view@5 and checkout@40 are 35 min apart; c: view@0 and checkout@210 likewise split
    assert run(rules, FUNNEL) == {"a", "d"}
    rows = [ev("x", 0, VIEW), ev("x", 45, CHECKOUT)]
    assert run(rules, rows) == set()
    assert run(seq(step(VIEW), step(CHECKOUT)), rows) == {"x"}


def test_only_after_and_only_before() -> None:
    rows = [
        ev("a", 0, PAGE, marketing_channel="Email"),
        ev("a", 5, VIEW),
        ev("a", 6, BUY, revenue=9.0),
        ev("b", 0, BUY, revenue=9.0),
        ev("b", 5, PAGE, marketing_channel="Email"),
        ev("b", 6, VIEW),
    ]
    email_then_view = [
        {"event": {"field": "marketing_channel", "op": "equals", "value": "Email"}},
        step(VIEW),
    ]
    purchase = {"field": "event_type", "op": "equals", "value": BUY}
    after = {"event": {"all": [purchase, {"only_after": {"steps": email_then_view}}]}}
    assert run(after, rows) == {"a"}  # b bought before the sequence
    before = {"event": {"all": [purchase, {"only_before": {"steps": email_then_view}}]}}
    assert run(before, rows) == {"b"}
    # the kept events include the sequence's own end / start
    view = {"field": "event_type", "op": "equals", "value": VIEW}
    assert run({"event": {"all": [view, {"only_after": {"steps": email_then_view}}]}}, rows) == {
        "a",
        "b",
    }


def test_sequence_in_event_container_fails_with_hint() -> None:
    with pytest.raises(CompileError, match="only_after / only_before"):
        run({"event": seq(step(VIEW), step(ADD))}, FUNNEL)


def test_coarser_container_inside_finer_fails() -> None:
    with pytest.raises(CompileError, match="a person container inside a event container"):
        run({"event": {"person": HOME}}, FUNNEL)


def test_visit_checkpoints_logic_groups_and_value_spans_in_rules() -> None:
    # FUNNEL's sessions: a: one; b: 0-5, then 40; c: 0-20, then 200-210; d: one
    visit_then_visit = seq(
        {"session": {"field": "event_type", "op": "equals", "value": VIEW}},
        {"session": {"field": "event_type", "op": "equals", "value": CHECKOUT}},
    )
    assert run(visit_then_visit, FUNNEL) == {"b", "c"}  # a and d did both in one visit
    any_order = seq(step(VIEW), {"all_of": [step(ADD)["event"], step(CHECKOUT)["event"]]})
    assert run(any_order, FUNNEL) == {"a", "c", "d"}  # b's add came before its view
    first_match = seq({"any_of": [step(ADD)["event"], step(VIEW)["event"]]}, step(CHECKOUT))
    assert run(first_match, FUNNEL) == {"a", "b", "c", "d"}
    # within 1 page value: FUNNEL has no page between an add and its checkout
    one_page = seq(step(ADD), step(CHECKOUT, within={"values": 1, "field": "page_name"}))
    assert run(one_page, FUNNEL) == {"a", "b", "c", "d"}
    # two pages between, the checkout's own page is the third value
    rows = [ev("a", 0, ADD), ev("a", 1, PAGE, page_name="x"), ev("a", 2, PAGE, page_name="y")]
    rows += [ev("a", 3, CHECKOUT, page_name="Checkout")]
    assert (
        run(seq(step(ADD), step(CHECKOUT, within={"values": 2, "field": "page_name"})), rows)
        == set()
    )
    assert run(
        seq(step(ADD), step(CHECKOUT, within={"values": 3, "field": "page_name"})), rows
    ) == {"a"}


def test_session_number_is_the_visit_number() -> None:
    # b's and c's checkouts are in their second visit; a's and d's in their first
    second_visit_checkout = {
        "event": {
            "all": [
                {"field": "event_type", "op": "equals", "value": CHECKOUT},
                {"field": "session_number", "op": "equals", "value": 2},
            ]
        }
    }
    assert run(second_visit_checkout, FUNNEL) == {"b", "c"}
    returning = {"person": {"metric": {"max": "session_number"}, "op": "gte", "value": 2}}
    assert run(returning, FUNNEL) == {"b", "c"}


def test_visit_number_in_a_template(tmp_path) -> None:
    (tmp_path / "returning.sql.j2").write_text(
        '{% import "cja.sql.j2" as cja %}\n'
        "SELECT person_id FROM {{ events }} WHERE {{ cja.where('session_number', 'gte', 2) }}"
    )
    builder = QueryBuilder(filters_dir=tmp_path, sessions_in_lake=True)
    query = builder.build(builder.template("returning.sql.j2"))
    assert execute(query.sql, query.params, FUNNEL) == {"b", "c"}


def test_sessions_are_computed_once() -> None:
    rules = {
        "all": [
            {"session": seq(step(VIEW), step(ADD))},
            {"metric": "sessions", "op": "gte", "value": 1},
            {"session": {"field": "event_type", "op": "equals", "value": ADD}},
        ]
    }
    builder = QueryBuilder()
    query = builder.build(f"SELECT person_id FROM {builder.tree(parse_rules(rules))}")
    assert query.sql.count("lag(") == 1 and "sess AS MATERIALIZED" in query.sql
    # with the lake's sessions nothing is sessionized in the query
    builder = QueryBuilder(sessions_in_lake=True)
    query = builder.build(f"SELECT person_id FROM {builder.tree(parse_rules(rules))}")
    assert "lag(" not in query.sql and "session_number AS session_no" in query.sql


# ---- rules errors name the place and the allowed values -------------------------------------


@pytest.mark.parametrize(
    ("rules", "message"),
    [
        (
            {"person": {"field": "page_name", "op": "is", "value": 1}},
            r"filter.rules.person.op: got 'is'; allowed: equals",
        ),
        ({"all": []}, r"filter.rules.all: expected a non-empty list"),
        ({"metric": "profit", "op": "gt", "value": 1}, r"unknown metric 'profit'"),
        ({"sequence": {"steps": [step(VIEW)]}}, r"at least two steps"),
        (
            {"sequence": {"steps": [step(VIEW), step(ADD, within={"fortnights": 1})]}},
            r"unknown unit 'fortnights'; allowed: minutes",
        ),
        ({"field": "page_name", "op": "in", "value": "x"}, r"op in needs a non-empty list"),
        ({"person": {}, "extra": 1}, r"expected a mapping|takes exactly one key"),
        (
            {
                "sequence": {
                    "steps": [step(VIEW), {"event": {"field": "x", "op": "exists"}, "session": {}}]
                }
            },
            r"a step is one of \{event\|session\|all_of\|any_of",
        ),
        (
            {"sequence": {"steps": [step(VIEW), step(ADD, within={"values": 1})]}},
            r"a values span is \{values: N, field: FIELD\}",
        ),
    ],
)
def test_rule_errors(rules: dict[str, object], message: str) -> None:
    with pytest.raises(RuleError, match=message):
        parse_rules(rules)


def test_unknown_field_lists_allowed_fields() -> None:
    with pytest.raises(CompileError, match=r"unknown event field 'pagename'; allowed: .*page_name"):
        run({"field": "pagename", "op": "exists"}, FUNNEL)
