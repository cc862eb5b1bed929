"""The spec model and loader: every example loads; errors name file, field and fix."""

from __future__ import annotations

from pathlib import Path

import pytest
import yaml

from cja_audiences.settings import PROJECT_ROOT
from cja_audiences.specs.model import AudienceSpec, SpecError, load_spec, load_specs, spec_by_id

EXAMPLES = PROJECT_ROOT / "include" / "audiences"
BASE = {
    "id": "buyers",
    "name": "Buyers",
    "refresh": {"frequency": "daily", "lookback_days": 30},
    "filter": {"rules": {"event": {"field": "event_type", "op": "equals", "value": "x"}}},
}


def write(tmp_path: Path, raw: dict, name: str = "buyers.yaml") -> Path:
    path = tmp_path / name
    path.write_text(yaml.safe_dump(raw))
    return path


def with_(**changes: object) -> dict:
    return {**BASE, **changes}


def test_every_example_loads_and_covers_every_filter_form() -> None:
    specs, errors = load_specs(EXAMPLES)
    assert errors == []
    assert {s.filter.kind for s in specs} == {"rules", "template", "segment"}
    assert {s.identity.namespace for s in specs} == {"ECID", "Email", "CRMID"}
    assert all(s.source_path and s.source_path.stem == s.id for s in specs)


def test_valid_spec_round_trip(tmp_path: Path) -> None:
    spec = load_spec(write(tmp_path, BASE))
    assert spec.id == "buyers" and spec.identity.column == "ecid"
    assert spec.source_path == tmp_path / "buyers.yaml"


@pytest.mark.parametrize(
    ("raw", "message"),
    [
        (with_(colour="red"), r"field colour: unknown field"),
        (
            with_(refresh={"frequency": "hourly", "lookback_days": 1}),
            r"field refresh.frequency: Input should be 'one_time', 'every_4_hours', 'daily', "
            r"'weekly' or 'monthly' \(got 'hourly'\)",
        ),
        (with_(refresh={"frequency": "daily"}), r"needs refresh.lookback_days \(1-90\)"),
        (
            with_(refresh={"frequency": "daily", "lookback_days": 91}),
            r"lookback_days: .*less than or equal to 90",
        ),
        (with_(refresh={"frequency": "one_time"}), r"one_time audience needs refresh.date_range"),
        (
            with_(
                refresh={
                    "frequency": "one_time",
                    "date_range": {"start": "2026-01-01", "end": "2026-04-01"},
                }
            ),
            r"refresh.date_range: 2026-01-01 to 2026-04-01 is 91 days; a window holds at most 90",
        ),
        (with_(filter={}), r"give exactly one of template, rules or segment \(got none\)"),
        (
            with_(
                filter={"template": "a.sql.j2", "rules": {"event": {"field": "x", "op": "exists"}}}
            ),
            r"exactly one of template, rules or segment \(got \['template', 'rules'\]\)",
        ),
        (
            with_(filter={"template": "../etc/passwd"}),
            r"filter.template: a file name in include/filters/",
        ),
        (
            with_(filter={"rules": {"person": {"field": "page_name", "op": "is", "value": 1}}}),
            r"filter.rules.person.op: got 'is'; allowed: equals, in",
        ),
        (with_(filter={"segment": {"path": "a.json", "id": "s1"}}), r"exactly one of segment.path"),
        (
            with_(filter={"segment": {"path": "a.json", "mapping": {"dims": {}}}}),
            r"unknown mapping keys",
        ),
        (with_(filter={"segment": {"uri": "x"}}), r"filter.segment.uri: unknown field"),
        (
            with_(identity={"namespace": "Phone"}),
            r"namespace 'Phone' has no default persons column",
        ),
        (
            with_(identity={"namespace": "Phone", "source": "password"}),
            r"not a persons column; allowed: .*email",
        ),
        (
            with_(identity={"namespace": "ECID", "hash_email": True}),
            r"hash_email applies only to namespace Email",
        ),
        (with_(computed_fields={"revenue": "1"}), r"use a new name .*not an event column"),
        (
            with_(computed_fields={"x": "1; DROP TABLE raw_events"}),
            r"computed field 'x': give one SQL expression",
        ),
        (with_(computed_fields={"x": "(SELECT 1)"}), r"computed field 'x'"),
        (with_(computed_fields={"x": "read_csv('/etc/passwd')"}), r"computed field 'x'"),
        (with_(id="Buyers!"), r"field id: use lower-case letters"),
        (with_(guardrails={"min_size": -1}), r"field guardrails.min_size"),
        (
            with_(filter={"rules": {"field": "x", "op": "exists"}, "params": {"bad name": 1}}),
            r"params \['bad name'\]",
        ),
    ],
)
def test_errors_name_the_file_the_field_and_the_fix(
    tmp_path: Path, raw: dict, message: str
) -> None:
    path = write(tmp_path, raw)
    with pytest.raises(SpecError, match=message) as info:
        load_spec(path)
    assert str(info.value).startswith(str(path))


def test_id_must_equal_file_name(tmp_path: Path) -> None:
    with pytest.raises(SpecError, match="id 'buyers' must equal the file name 'other'"):
        load_spec(write(tmp_path, BASE, "other.yaml"))


def test_not_yaml_and_not_a_mapping(tmp_path: Path) -> None:
    bad = tmp_path / "bad.yaml"
    bad.write_text("id: [unclosed")
    with pytest.raises(SpecError, match="not valid YAML"):
        load_spec(bad)
    bad.write_text("- a list")
    with pytest.raises(SpecError, match="must hold a mapping"):
        load_spec(bad)


def test_one_bad_file_never_hides_the_others(tmp_path: Path) -> None:
    write(tmp_path, BASE)
    write(tmp_path, with_(id="broken", colour=1), "broken.yaml")
    specs, errors = load_specs(tmp_path)
    assert [s.id for s in specs] == ["buyers"]
    assert len(errors) == 1 and errors[0].path == tmp_path / "broken.yaml"


def test_a_hundred_specs_load(tmp_path: Path) -> None:
    """Loading reads YAML only (tests/test_layout.py: no DuckDB, no PyArrow imported)."""
    for i in range(100):
        write(tmp_path, with_(id=f"a{i:03d}"), f"a{i:03d}.yaml")
    specs, errors = load_specs(tmp_path)
    assert len(specs) == 100 and not errors


def test_params_accept_literals_and_lists() -> None:
    spec = AudienceSpec.model_validate(
        with_(
            filter={
                "rules": {"field": "page_name", "op": "in", "value": {"param": "pages"}},
                "params": {"pages": ["a", "b"], "n": 3, "flag": True},
            }
        )
    )
    assert spec.filter.params["pages"] == ["a", "b"]


def test_spec_by_id_finds_yml_too_and_names_the_folder_when_missing(tmp_path: Path) -> None:
    source = PROJECT_ROOT / "include" / "audiences" / "churn_risk.yaml"
    (tmp_path / "churn_risk.yml").write_text(source.read_text())
    assert spec_by_id(tmp_path, "churn_risk").id == "churn_risk"
    with pytest.raises(SpecError, match=f"no audience spec 'nope' in {tmp_path}"):
        spec_by_id(tmp_path, "nope")
