"""The house rules of the layout: the core never imports Airflow; spec loading stays light."""

from __future__ import annotations

import json
import os
import pkgutil
import subprocess
import sys

import cja_audiences
from tests.conftest import REPO

CORE = sorted(
    m.name
    for m in pkgutil.walk_packages(cja_audiences.__path__, "cja_audiences.")
    if not m.name.startswith("cja_audiences.airflow") and not m.name.endswith("__main__")
)


def imported_after(code: str) -> list[str]:
    """The modules a fresh interpreter holds after running ``code``."""
    program = f"import json, sys\n{code}\nprint(json.dumps(sorted(sys.modules)))"
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO / "plugins"), str(REPO)])}
    done = subprocess.run(
        [sys.executable, "-c", program], env=env, capture_output=True, text=True, cwd=REPO
    )
    assert done.returncode == 0, done.stderr
    return json.loads(done.stdout.splitlines()[-1])


def test_the_core_list_covers_every_stage():
    stages = {"cja_audiences.compute", "cja_audiences.cli.main", "cja_audiences.extract.writer"}
    assert stages <= set(CORE)


def test_importing_the_whole_core_imports_no_airflow():
    modules = imported_after("\n".join(f"import {name}" for name in CORE))
    assert [m for m in modules if m == "airflow" or m.startswith("airflow.")] == []


def test_loading_every_example_spec_imports_no_duckdb_or_pyarrow():
    modules = imported_after(
        "from pathlib import Path\n"
        "from cja_audiences.specs.model import load_specs\n"
        f"specs, errors = load_specs(Path({str(REPO / 'include' / 'audiences')!r}))\n"
        "assert specs and not errors, errors"
    )
    assert [m for m in modules if m.split(".")[0] in ("duckdb", "pyarrow", "jinja2")] == []
