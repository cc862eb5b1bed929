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
