"""Split tests and holdouts: stable assignment, plain SQL, validation (issue 19)."""

from __future__ import annotations

from collections import Counter

import duckdb
import pyarrow as pa
import pytest

from cja_audiences import splits
from cja_audiences.specs.model import AudienceSpec

BASE = {
    "id": "promo",
    "name": "Promo",
    "refresh": {"frequency": "daily", "lookback_days": 7},
    "filter": {"template": "x.sql.j2"},
}
ARMS = {
    "splits": [{"name": "control", "share": 0.45}, {"name": "variant", "share": 0.45}],
    "holdout": 0.1,
    "salt": "2026-q1",
}


def make(**fields) -> AudienceSpec:
    return AudienceSpec.model_validate(BASE | fields)


PERSONS = [f"person-{i}" for i in range(20_000)]


def test_shares_are_respected_and_the_holdout_comes_first() -> None:
    spec = make(**ARMS)
    counts = Counter(splits.assign(spec, p) for p in PERSONS)
    assert set(counts) == {"holdout", "control", "variant"}
    assert abs(counts["holdout"] / len(PERSONS) - 0.1) < 0.01
    assert abs(counts["control"] / len(PERSONS) - 0.45) < 0.015
    assert all(splits.assign(spec, p) == "holdout" for p in PERSONS if splits.bucket(spec, p) < 0.1)


def test_assignment_is_stable_as_the_audience_grows_and_moves_with_the_salt() -> None:
    spec = make(**ARMS)
    small = {p: splits.assign(spec, p) for p in PERSONS[:500]}
    grown = {p: splits.assign(spec, p) for p in PERSONS}  # another run, more members
    assert all(grown[p] == arm for p, arm in small.items())
    other = make(**ARMS | {"salt": "2026-q2"})
    moved = sum(splits.assign(other, p) != small[p] for p in small)
    assert moved > 200  # a new salt reshuffles
    # another audience with the same arms assigns independently
    sibling = AudienceSpec.model_validate(BASE | ARMS | {"id": "promo_two"})
    assert sum(splits.assign(sibling, p) != small[p] for p in small) > 200


@pytest.mark.parametrize("fields", [ARMS, {"holdout": 0.2}, {}])
def test_the_documented_sql_assigns_exactly_like_the_engine(fields) -> None:
    spec = make(**fields)
    literal, params = splits.split_sql(spec, literal=True)
    assert params == {}
    bound, bound_params = splits.split_sql(spec)
    table = pa.table({"person_id": PERSONS[:3_000]})
    con = duckdb.connect()
    con.register("m", table)
    by_literal = [r[0] for r in con.execute(f"SELECT {literal} FROM m").fetchall()]
    by_bound = [r[0] for r in con.execute(f"SELECT {bound} FROM m", bound_params).fetchall()]
    assert by_literal == by_bound == [splits.assign(spec, p) for p in PERSONS[:3_000]]


def test_holdout_alone_publishes_the_rest_as_the_audience() -> None:
    spec = make(holdout=0.2)
    assert {splits.assign(spec, p) for p in PERSONS[:200]} == {"holdout", None}
    assert [a.id for a in splits.published_audiences(spec)] == ["promo"]
    assert splits.target_audience(spec, None) == "promo"
    assert splits.target_audience(spec, "holdout") is None


def test_separate_and_combined_publishing() -> None:
    separate = make(**ARMS)
    assert [(a.id, a.name) for a in splits.published_audiences(separate)] == [
        ("promo__control", "Promo [control]"),
        ("promo__variant", "Promo [variant]"),
    ]
    assert splits.target_audience(separate, "variant") == "promo__variant"
    combined = make(**ARMS | {"publish_splits": "combined"})
    assert [a.id for a in splits.published_audiences(combined)] == ["promo"]
    assert splits.target_audience(combined, "variant") == "promo"


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        (
            {"splits": [{"name": "a", "share": 0.5}, {"name": "b", "share": 0.4}]},
            "add up to 1 (got 0.9)",
        ),
        ({"splits": [{"name": "a", "share": 0.5}, {"name": "a", "share": 0.5}]}, "must be unique"),
        (
            {"splits": [{"name": "holdout", "share": 0.5}, {"name": "b", "share": 0.5}]},
            "not 'holdout'",
        ),
        ({"splits": [{"name": "a", "share": 0.9}], "holdout": 0.1}, "two or more arms"),
        ({"holdout": 1}, "holdout"),
    ],
)
def test_bad_splits_are_refused_with_the_rule(fields, message) -> None:
    with pytest.raises(ValueError) as err:
        make(**fields)
    assert message in str(err.value)
