"""The audience commands: validate, render, preview, compute (stable forms, exit codes)."""

from __future__ import annotations

import json
from pathlib import Path

import pyarrow.parquet as pq
import pytest
import yaml

from cja_audiences.cli.main import main
from cja_audiences.settings import PROJECT_ROOT
from tests.compute.helpers import ADD, BUY, T0, ev, write_lake

EXAMPLES = PROJECT_ROOT / "include" / "audiences"
SPEC = {
    "id": "adders",
    "name": "Adders",
    "identity": {"namespace": "ECID"},
    "refresh": {"frequency": "daily", "lookback_days": 7},
    "filter": {
        "params": {"add": ADD},
        "rules": {
            "person": {
                "all": [
                    {"event": {"field": "event_type", "op": "equals", "value": {"param": "add"}}},
                    {"exclude": {"event": {"field": "event_type", "op": "equals", "value": BUY}}},
                ]
            }
        },
    },
}


@pytest.fixture
def home(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    write_lake(
        tmp_path / "home", [ev("a", 0, ADD), ev("b", 0, ADD), ev("b", 1, BUY)], {"a": {}, "b": {}}
    )
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(tmp_path / "home"))
    specs = tmp_path / "specs"
    specs.mkdir()
    (specs / "adders.yaml").write_text(yaml.safe_dump(SPEC))
    return tmp_path


def test_validate_examples(capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["validate", "--audiences", str(EXAMPLES)]) == 0
    out = capsys.readouterr().out
    assert "7 valid, 0 invalid" in out


def test_validate_reports_each_bad_file(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    bad = home / "specs" / "bad.yaml"
    bad.write_text(yaml.safe_dump({**SPEC, "id": "bad", "colour": "red"}))
    unknown = home / "specs" / "unknown_field.yaml"
    unknown.write_text(
        yaml.safe_dump(
            {**SPEC, "id": "unknown_field", "filter": {"rules": {"field": "nope", "op": "exists"}}}
        )
    )
    assert main(["validate", str(home / "specs")]) == 1
    captured = capsys.readouterr()
    assert f"{bad}: field colour: unknown field" in captured.err
    assert "unknown event field 'nope'" in captured.err
    assert "1 valid, 2 invalid" in captured.out


def test_render_prints_sql_and_bound_params(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["render", "adders", "--audiences", str(home / "specs")]) == 0
    out = capsys.readouterr().out
    assert (
        f"$p_add = '{ADD}'" in out
        and "bool_or(" in out
        and f"'{ADD}'" not in out.split("\n\n", 1)[1]
    )
    assert (
        main(["render", str(home / "specs" / "adders.yaml"), "--json", "--param", "add=x'--"]) == 0
    )
    rendered = json.loads(capsys.readouterr().out)
    assert rendered["params"]["p_add"] == "x'--" and "x'--" not in rendered["sql"]


def test_preview_json_writes_nothing(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    argv = [
        "preview",
        "adders",
        "--audiences",
        str(home / "specs"),
        "--as-of",
        T0.date().isoformat(),
        "--json",
    ]
    assert main(argv) == 0
    stats = json.loads(capsys.readouterr().out)
    assert stats["size"] == 1 and stats["sample_ids"] == ["a"]
    assert not (home / "home" / "audiences").exists()
    assert main(argv[:-1]) == 0
    assert "size:            1 (ECID)" in capsys.readouterr().out


def test_compute_json_has_size_and_members_path(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    argv = ["compute", "adders", "--audiences", str(home / "specs"), "--json", "--run-id", "r1"]
    assert main(argv) == 0  # --as-of defaults to the lake's latest event date
    stats = json.loads(capsys.readouterr().out)
    assert stats["size"] == 1
    assert (
        Path(stats["members_path"])
        == home / "home" / "audiences" / "adders" / "runs" / "r1" / "members.parquet"
    )
    assert pq.read_table(stats["members_path"]).column("person_id").to_pylist() == ["a"]


def test_unknown_audience_and_bad_param(home: Path, capsys: pytest.CaptureFixture[str]) -> None:
    assert main(["preview", "nobody", "--audiences", str(home / "specs")]) == 1
    assert "no such audience" in capsys.readouterr().err
    assert (
        main(["preview", "adders", "--audiences", str(home / "specs"), "--param", "limit=3"]) == 1
    )
    assert "run param 'limit' is not a filter param" in capsys.readouterr().err


def test_module_entry_point(home: Path) -> None:
    import subprocess
    import sys

    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "cja_audiences",
            "preview",
            "adders",
            "--audiences",
            str(home / "specs"),
            "--json",
        ],
        capture_output=True,
        text=True,
        check=False,
        cwd=PROJECT_ROOT,
        env={
            **__import__("os").environ,
            "PYTHONPATH": f"{PROJECT_ROOT / 'plugins'}:{PROJECT_ROOT}",
        },
    )
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["size"] == 1


def write_specs(folder: Path, count: int) -> list[Path]:
    """``count`` copies of SPEC created a day apart (the last is the newest)."""
    paths = []
    for i in range(count):
        spec = {**SPEC, "id": f"adders_{i}", "refresh": {**SPEC["refresh"]}}
        spec["refresh"]["start"] = f"2026-01-{i + 1:02d}T00:00:00Z"
        paths.append(folder / f"adders_{i}.yaml")
        paths[-1].write_text(yaml.safe_dump(spec))
    return paths


def test_validate_counts_refreshing_audiences_as_dag_parsing_does(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from cja_audiences.airflow.dag_factory import load_schedulable_specs
    from cja_audiences.settings import settings_from_env

    folder = home / "many"
    folder.mkdir()
    newest = write_specs(folder, 3)[-1]
    monkeypatch.setenv("CJA_AUDIENCES_MAX_REFRESHING", "2")
    monkeypatch.setenv("CJA_AUDIENCES_SPECS", str(folder))

    assert main(["validate", str(newest)]) == 1
    captured = capsys.readouterr()
    assert "3 refreshing audiences is above the limit of 2" in captured.err
    assert "0 valid, 1 invalid" in captured.out
    _, errors = load_schedulable_specs(settings_from_env())
    assert [e.path for e in errors] == [newest]


def test_validate_says_a_segment_by_id_was_not_compiled_without_the_connection(
    home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.delenv("AIRFLOW_CONN_CJA_DEFAULT", raising=False)
    spec = home / "specs" / "by_id.yaml"
    spec.write_text(yaml.safe_dump({**SPEC, "id": "by_id", "filter": {"segment": {"id": "s1"}}}))
    assert main(["validate", str(spec)]) == 0
    captured = capsys.readouterr()
    assert "filter not compiled: segment s1 is fetched from the CJA Segments API" in captured.err
    assert "AIRFLOW_CONN_CJA_DEFAULT" in captured.err
    assert "1 valid, 0 invalid (1 valid but not compiled" in captured.out


@pytest.mark.integration
def test_validate_compiles_a_segment_by_id_through_the_cja_connection(
    emu, home: Path, capsys: pytest.CaptureFixture[str], monkeypatch: pytest.MonkeyPatch
) -> None:
    from tests.compute.test_segment_api import DEFINITION

    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))
    refused = {
        **DEFINITION,
        "container": {**DEFINITION["container"], "pred": {"func": "segment-ref", "id": "s_x"}},
    }
    good = emu.add_segment(name="Adders", definition=DEFINITION)
    bad = emu.add_segment(name="Refs", definition=refused)
    for name, segment_id in (("good_id", good["id"]), ("bad_id", bad["id"]), ("gone", "s_nope")):
        spec = {**SPEC, "id": name, "filter": {"segment": {"id": segment_id}}}
        (home / "specs" / f"{name}.yaml").write_text(yaml.safe_dump(spec))

    assert main(["validate", str(home / "specs")]) == 1
    captured = capsys.readouterr()
    assert f"ok     {home / 'specs' / 'good_id.yaml'}" in captured.out
    assert "segment s_nope: not found in CJA" in captured.err
    assert "segment-ref 's_x' is not in" in captured.err  # a reference to a missing segment
    assert captured.out.strip().splitlines()[-1] == "2 valid, 2 invalid"


@pytest.mark.parametrize("command", ["preview", "compute"])
def test_a_missing_lake_is_named_with_how_to_fill_it_and_never_created(
    tmp_path: Path, command: str, capsys: pytest.CaptureFixture[str], monkeypatch
) -> None:
    home = tmp_path / "nowhere"
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(home))
    assert main([command, "cart_abandoners", "--audiences", str(EXAMPLES)]) == 1
    err = capsys.readouterr().err
    assert f"the lake {home / 'lake' / 'events'} does not exist" in err
    assert f"CJA_AUDIENCES_HOME={home}" in err and "make demo" in err and "cja_extract" in err
    assert not home.exists()


def test_a_window_outside_the_lake_names_the_dates_it_holds(
    home: Path, capsys: pytest.CaptureFixture[str]
) -> None:
    args = ["preview", "adders", "--audiences", str(home / "specs"), "--as-of", "2020-01-31"]
    assert main(args) == 1
    err = capsys.readouterr().err
    assert "the window 2020-01-25 .. 2020-01-31 holds no events" in err
    assert f"holds {T0.date()} .. {T0.date()}" in err
