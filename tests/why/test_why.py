"""Why codes: compute records them, the diff explains every entry and exit (issue 19)."""

from __future__ import annotations

from datetime import date, timedelta
from pathlib import Path
from typing import Any

import pyarrow.parquet as pq

from cja_audiences import why
from cja_audiences.compute import compute_audience
from cja_audiences.diff import diff_members
from cja_audiences.explain import exit_explainer
from cja_audiences.lake.runs import read_run_record
from cja_audiences.membership import build_lake, parse_case
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec

D = date(2026, 3, 10)
BUY = "commerce.purchases"


def spec(rules: dict[str, Any]) -> AudienceSpec:
    return AudienceSpec.model_validate(
        {
            "id": "why_test",
            "name": "why test",
            "refresh": {"frequency": "daily", "lookback_days": 7},
            "filter": {"rules": rules},
        }
    )


BUYERS_NOT_UNSUBSCRIBED = spec(
    {
        "person": {
            "all": [
                {"metric": "orders", "op": "gte", "value": 1},
                {"exclude": {"field": "page_name", "op": "equals", "value": "unsubscribe"}},
            ]
        }
    }
)


def lake(settings: Settings, persons: dict[str, Any]) -> None:
    build_lake(
        parse_case({"as_of": D, "persons": persons, "expect": {"in": [next(iter(persons))]}}, "t"),
        settings.home,
    )


def buy(at: str) -> dict[str, Any]:
    return {"at": at, "event_type": BUY, "revenue": 10.0}


def rows(path: Path) -> dict[str, dict[str, Any]]:
    return {r["person_id"]: r for r in pq.read_table(path).to_pylist()}


def make_settings(tmp_path: Path) -> Settings:
    return Settings(home=tmp_path / "home", audiences_dir=tmp_path, filters_dir=tmp_path)


def test_an_any_filter_records_which_branches_held(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    any_spec = spec(
        {
            "person": {
                "any": [
                    {"metric": "orders", "op": "gte", "value": 1},
                    {"field": "page_name", "op": "equals", "value": "promo"},
                ]
            }
        }
    )
    lake(
        settings,
        {
            "buyer": {"events": [buy("-1d 10:00")]},
            "promo": {"events": [{"at": "-1d 11:00", "page_name": "promo"}]},
            "both": {"events": [buy("-2d 10:00"), {"at": "-2d 10:05", "page_name": "promo"}]},
            "neither": {"events": [{"at": "-2d 10:00", "page_name": "home"}]},
        },
    )
    stats = compute_audience(any_spec, settings=settings, run_dir=tmp_path / "r1", as_of=D)
    members = rows(tmp_path / "r1" / "members.parquet")
    assert {p: r["why"] for p, r in members.items()} == {"buyer": 1, "promo": 2, "both": 3}
    legend = read_run_record(tmp_path / "r1")["compute"]["why"]
    assert legend == stats["why"]
    assert legend["combine"] == "any" and legend["full"] == 3
    assert [b["mask"] for b in legend["branches"]] == [1, 2]
    assert legend["branches"][1]["text"] == "page_name = 'promo'"


def test_the_diff_says_why_each_member_entered_or_exited(tmp_path: Path) -> None:
    settings = make_settings(tmp_path)
    s = BUYERS_NOT_UNSUBSCRIBED
    first = {
        "aged": {"events": [buy("-6d 10:00")]},
        "unsubscribed": {
            "events": [buy("-1d 10:00"), {"at": "+2d 10:00", "page_name": "unsubscribe"}]
        },
        "lost_identity": {"events": [buy("-1d 10:00")]},
        "new_identity": {"events": [buy("-1d 10:00")]},
        "newcomer": {"events": [buy("+3d 10:00")]},
        "stays": {"events": [buy("-1d 09:00")]},
    }
    lake(settings, first)
    r1, r2 = tmp_path / "runs" / "r1", tmp_path / "runs" / "r2"
    compute_audience(s, settings=settings, run_dir=r1, as_of=D)
    assert diff_members(r1, None)["entered"] == 5  # newcomer's purchase is after D
    assert {r["reason"] for r in rows(r1 / "entered.parquet").values()} == {why.FIRST_RUN}
    second = {
        **first,
        "lost_identity": {"profile": {"ecid": None}, "events": [buy("-1d 10:00")]},
        "new_identity": {"profile": {"ecid": "9" * 38}, "events": [buy("-1d 10:00")]},
    }
    lake(settings, second)
    compute_audience(s, settings=settings, run_dir=r2, as_of=D + timedelta(days=5))
    diff_members(r2, r1, exit_explainer(s, settings, r2, r1))
    entered, exited = rows(r2 / "entered.parquet"), rows(r2 / "exited.parquet")
    assert {p: (r["reason"], r["why"]) for p, r in entered.items()} == {
        "newcomer": (why.NOW_HOLDS, 3),
        "new_identity": (why.IDENTITY_CHANGED, 3),
    }
    assert entered["new_identity"]["why_before"] == 3
    assert {p: (r["reason"], r["why"], r["why_before"]) for p, r in exited.items()} == {
        "aged": (why.AGED_OUT, 0, 3),  # nothing since the first window: it aged out
        "unsubscribed": (why.STOPPED_HOLDING, 1, 3),  # still a buyer, branch 2 stopped
        "lost_identity": (why.IDENTITY_LOST, 3, 3),
        "new_identity": (why.IDENTITY_CHANGED, 3, 3),
    }


def test_without_an_explainer_exits_are_left_and_old_member_files_still_diff(
    tmp_path: Path,
) -> None:
    from tests.guardrails.helpers import write_members

    previous = write_members(
        tmp_path / "p" / "members.parquet", [("a", "ECID", "1"), ("b", "ECID", "2")]
    )
    current = write_members(
        tmp_path / "c" / "members.parquet", [("b", "ECID", "2"), ("c", "ECID", "3")]
    )
    diff_members(current.parent, previous.parent)
    assert rows(current.parent / "exited.parquet")["a"]["reason"] == why.LEFT
    assert rows(current.parent / "entered.parquet")["c"]["reason"] == why.NOW_HOLDS
    assert rows(current.parent / "entered.parquet")["c"]["why"] is None


def test_branches_of_each_filter_shape() -> None:
    from cja_audiences.filters.rules import parse_rules

    one = why.branches(parse_rules({"field": "page_name", "op": "equals", "value": "x"}), {})
    assert (one.combine, one.full, one.member_code) == ("one", 1, 1)
    session = why.branches(
        parse_rules(
            {
                "session": {
                    "all": [
                        {"metric": "events", "op": "gte", "value": 2},
                        {"field": "page_name", "op": "exists"},
                    ]
                }
            }
        ),
        {},
    )
    assert session.combine == "all" and session.member_code == 3
    assert session.items[0].text == "a session where events >= 2"
    template = why.branches(None, {}, "x.sql.j2")
    assert template.items[0].node is None and template.member_code == 1
