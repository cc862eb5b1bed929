"""Hostile files and ids: malformed specs never hide the other audiences, ids never leave
the lake, a run id of dots is refused, rollback and prune stay inside one audience."""

from __future__ import annotations

import json
from pathlib import Path

import pytest
import yaml

from cja_audiences import snapshots
from cja_audiences.cli.main import main
from cja_audiences.lake.layout import Lake, safe_name
from cja_audiences.settings import get_settings
from cja_audiences.specs.model import load_specs
from tests.publish.helpers import make_spec

pytestmark = pytest.mark.reliability


def good_spec(folder: Path, audience_id: str) -> None:
    spec = make_spec(id=audience_id).model_dump(mode="json", exclude={"source_path"})
    (folder / f"{audience_id}.yaml").write_text(yaml.safe_dump(spec))


BAD = {
    "latin1.yaml": b"id: latin1\nname: caf\xe9\n",
    "bomb.yaml": b"a: &a [x, x, x, x, x, x, x, x, x]\nb: &b [*a, *a, *a, *a, *a, *a, *a, *a]\n"
    b"c: &c [*b, *b, *b, *b, *b, *b, *b, *b]\nd: [*c, *c, *c, *c, *c, *c, *c, *c]\n",
    "deep.yaml": b"k: " + b"[" * 3000 + b"]" * 3000 + b"\n",
    "huge.yaml": b"name: '" + b"x" * 300_000 + b"'\n",
    "list.yaml": b"- just\n- a list\n",
    "json.yaml": b'{"id": "json", "name": ',
}


def test_malformed_specs_each_name_their_file_and_hide_nothing(tmp_path):
    good_spec(tmp_path, "high_value")
    good_spec(tmp_path, "zz_last")
    for name, data in BAD.items():
        (tmp_path / name).write_bytes(data)
    (tmp_path / "folder.yaml").mkdir()

    specs, errors = load_specs(tmp_path)

    assert sorted(s.id for s in specs) == ["high_value", "zz_last"]
    named = {Path(str(e).split(":")[0]).name: str(e) for e in errors}
    assert sorted(named) == sorted([*BAD, "folder.yaml"])
    assert "not UTF-8" in named["latin1.yaml"] and "line 2" in named["latin1.yaml"]
    assert "aliases" in named["bomb.yaml"]
    assert "nested deeper" in named["deep.yaml"]
    assert "is a folder" in named["folder.yaml"]


@pytest.mark.parametrize("run_id", [".", "..", "...", ""])
def test_a_run_id_of_dots_cannot_name_a_folder(run_id):
    with pytest.raises(ValueError, match="cannot name a run folder"):
        Lake("/lake").run_dir("high_value", run_id)


def test_run_ids_and_audience_ids_stay_inside_the_lake(tmp_path):
    lake = Lake(tmp_path)
    assert lake.run_dir("high_value", "../../x").parent == lake.audience_dir("high_value") / "runs"
    assert safe_name(".hidden") == "_hidden"
    for audience_id in ("../etc", "a/b", "..", "High"):
        with pytest.raises(ValueError, match="not an audience id"):
            lake.audience_dir(audience_id)


@pytest.fixture
def two_audiences(tmp_path, monkeypatch):
    home = tmp_path / "home"
    monkeypatch.setenv("CJA_AUDIENCES_HOME", str(home))
    get_settings.cache_clear()
    lake = Lake(home)
    for audience_id in ("high_value", "other"):
        run = lake.run_dir(audience_id, "r1")
        run.mkdir(parents=True)
        (run / "run.json").write_text(json.dumps({"commit": {"run_id": "r1"}}))
    outside = tmp_path / "outside" / "runs" / "keep_me"
    outside.mkdir(parents=True)
    yield lake, outside
    get_settings.cache_clear()


def test_prune_with_a_path_argument_deletes_nothing_outside(two_audiences, capsys):
    _lake, outside = two_audiences
    assert main(["runs", "prune", "../outside", "--keep", "1"]) == 1
    assert "not an audience id" in capsys.readouterr().err
    assert outside.is_dir()


def test_rollback_refuses_another_audiences_run(two_audiences):
    lake, _outside = two_audiences
    audience = lake.audience_dir("high_value")
    (audience / "current.json").write_text(json.dumps({"run_id": "r1"}))
    with pytest.raises(snapshots.SnapshotError, match="is not a run id"):
        snapshots.rollback(
            audience, "../../other/runs/r1", lake.run_dir("high_value", "r2"), lambda d: {}
        )
