"""Membership tests: every example audience's pass, a broken one fails readably (issue 19).

``make test`` runs pytest, so this module is what runs every audience's membership tests in
CI: one test per spec in include/audiences/.
"""

from __future__ import annotations

import shutil
from pathlib import Path

import pytest

from cja_audiences import membership
from cja_audiences.cli.main import main
from cja_audiences.settings import Settings
from cja_audiences.specs.model import load_spec, spec_paths

REPO = Path(__file__).resolve().parents[2]
AUDIENCES = REPO / "include" / "audiences"
BROKEN = Path(__file__).parent / "broken"


def repo_settings(tmp_path: Path, audiences: Path = AUDIENCES) -> Settings:
    return Settings(
        home=tmp_path, audiences_dir=audiences, filters_dir=REPO / "include" / "filters"
    )


@pytest.mark.parametrize("path", spec_paths(AUDIENCES), ids=lambda p: p.stem)
def test_every_example_audience_passes_its_membership_tests(path: Path, tmp_path: Path) -> None:
    spec = load_spec(path)
    case = membership.load_case(spec)
    assert case is not None, f"{path}: add {membership.fixture_path(spec).name}"
    result = membership.run_case(spec, repo_settings(tmp_path), case)
    assert result.ok, result.report()
    assert result.checked >= 3


def test_the_template_for_new_audiences_carries_passing_tests(tmp_path: Path) -> None:
    folder = tmp_path / "audiences"
    folder.mkdir()
    for name in ("new_audience.yaml", "new_audience.test.yaml"):
        text = (REPO / "include" / "templates" / name).read_text()
        (folder / name.replace("new_audience", "my_audience")).write_text(
            text.replace("id: new_audience", "id: my_audience")
        )
    spec = load_spec(folder / "my_audience.yaml")
    result = membership.run_case(spec, repo_settings(tmp_path, folder), membership.load_case(spec))
    assert result.ok, result.report()


def test_a_broken_audience_fails_naming_spec_person_expectation_and_reason(tmp_path: Path) -> None:
    spec = load_spec(BROKEN / "cart_abandoners_broken.yaml")
    result = membership.run_case(spec, repo_settings(tmp_path, BROKEN), membership.load_case(spec))
    assert not result.ok and [f.person for f in result.failures] == ["no_consent"]
    report = result.report()
    assert report.startswith("FAIL  cart_abandoners_broken: 1 of 6 persons\n")
    assert "cart_abandoners_broken.test.yaml): person 'no_consent': expected OUT, got IN" in report
    assert "[held    ] 1. sequence: event_type = 'commerce.productViews'" in report
    assert "no_consent-2  event_type=commerce.productListAdds  matches #2" in report


def test_the_cli_runs_tests_and_exits_nonzero_on_a_failure(
    tmp_path: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    assert main(["test", "cart_abandoners", "churn_risk", "--audiences", str(AUDIENCES)]) == 0
    assert "2 passed, 0 failed, 0 without tests" in capsys.readouterr().out
    folder = tmp_path / "specs"
    shutil.copytree(BROKEN, folder)
    shutil.copy(AUDIENCES / "churn_risk.yaml", folder)  # a spec without tests is reported
    assert main(["test", "--audiences", str(folder)]) == 1
    out = capsys.readouterr().out
    assert "none  churn_risk: no churn_risk.test.yaml and no tests: section" in out
    assert "0 passed, 1 failed, 1 without tests" in out
    assert main(["test", "nope", "--audiences", str(folder)]) == 1


def test_an_inline_tests_section_works_like_a_test_file(tmp_path: Path) -> None:
    text = (AUDIENCES / "checkout_in_one_session.yaml").read_text()
    fixture = (AUDIENCES / "checkout_in_one_session.test.yaml").read_text()
    indented = "".join(f"  {line}\n" for line in fixture.splitlines())
    path = tmp_path / "checkout_in_one_session.yaml"
    path.write_text(f"{text}tests:\n{indented}")
    spec = load_spec(path)
    assert spec.tests is not None
    result = membership.run_case(
        spec, repo_settings(tmp_path, tmp_path), membership.load_case(spec)
    )
    assert result.ok and result.source.endswith("checkout_in_one_session.yaml: tests")


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (
            {
                "persons": {"ann": {"events": [{"at": "-1d", "colour": "red"}]}},
                "expect": {"in": ["ann"]},
            },
            "t.yaml: persons.ann.events[0]: unknown event fields ['colour']; allowed: person_namespace",
        ),
        (
            {"persons": {"ann": {"events": [{"at": "yesterday"}]}}, "expect": {"in": ["ann"]}},
            "t.yaml: persons.ann.events[0]: at 'yesterday': use days relative to as_of",
        ),
        (
            {"persons": {"ann": {"profile": {"vip": True}}}, "expect": {"in": ["ann"]}},
            "t.yaml: persons.ann.profile: unknown columns ['vip']",
        ),
        (
            {"persons": {"ann": {}}, "expect": {"in": ["bob"]}},
            "t.yaml: expect names 'bob', who is not under persons",
        ),
        ({"persons": {"ann": {}}, "expect": {}}, "t.yaml: expect: name at least one person"),
        ({"persons": {"ann": {}}, "expected": {}}, "t.yaml: unknown keys ['expected']"),
    ],
)
def test_bad_fixtures_name_the_file_person_and_row(raw: dict, message: str) -> None:
    with pytest.raises(membership.FixtureError) as err:
        membership.parse_case(raw, "t.yaml")
    assert str(err.value).startswith(message)


def test_times_are_relative_to_as_of() -> None:
    from datetime import date

    as_of = date(2026, 3, 10)
    assert membership.at_time("-2d 10:05", as_of, "w").isoformat() == "2026-03-08T10:05:00+00:00"
    assert membership.at_time("09:30:15", as_of, "w").isoformat() == "2026-03-10T09:30:15+00:00"
    assert membership.at_time("+1d", as_of, "w").isoformat() == "2026-03-11T12:00:00+00:00"
    with pytest.raises(membership.FixtureError, match="not a time of day"):
        membership.at_time("-1d 25:00", as_of, "w")
    with pytest.raises(membership.FixtureError, match="quote it"):
        membership.at_time(600, as_of, "w")  # what YAML makes of an unquoted 10:00


def test_test_files_are_not_loaded_as_specs() -> None:
    assert all(not p.name.endswith(".test.yaml") for p in spec_paths(AUDIENCES))
    assert len(list(AUDIENCES.glob("*.test.yaml"))) == len(spec_paths(AUDIENCES))
