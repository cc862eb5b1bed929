"""pyproject's build config: the script it installs exists, its package data ships."""

from __future__ import annotations

import importlib
import shutil
import subprocess
import sys
import tomllib
import zipfile

import pytest

from tests.conftest import REPO

PYPROJECT = tomllib.loads((REPO / "pyproject.toml").read_text())


def test_the_console_script_is_the_cli():
    from cja_audiences.cli.main import main

    module, _, name = PYPROJECT["project"]["scripts"]["cja-audiences"].partition(":")
    assert getattr(importlib.import_module(module), name) is main


@pytest.mark.integration
def test_the_wheel_holds_the_package_its_templates_and_the_script(tmp_path):
    """Built the way `pip install -e .` builds it (setuptools, from plugins/), from a copy of
    the checkout so the build leaves nothing in it."""
    source = tmp_path / "src"
    source.mkdir()
    for name in ("pyproject.toml", "requirements.txt"):
        shutil.copy(REPO / name, source / name)
    shutil.copytree(
        REPO / "plugins", source / "plugins", ignore=shutil.ignore_patterns("__pycache__")
    )
    done = subprocess.run(
        [sys.executable, "-m", "pip", "wheel", "--no-deps", "--quiet", "-w", str(tmp_path), "."],
        cwd=source,
        capture_output=True,
        text=True,
    )
    assert done.returncode == 0, done.stderr
    (wheel,) = tmp_path.glob("cja_audiences-*.whl")
    names = zipfile.ZipFile(wheel).namelist()
    assert "cja_audiences/filters/cja.sql.j2" in names
    web = REPO / "plugins" / "cja_audiences" / "airflow" / "web"
    for shipped in [*web.glob("templates/*.html"), *web.glob("static/*")]:  # the dashboard
        assert shipped.relative_to(REPO / "plugins").as_posix() in names
    assert "cja_audiences/airflow/dag_factory.py" in names
    assert not [n for n in names if n.startswith(("tests/", "dags/", "cja_audiences_plugin"))]
    entry_points = zipfile.ZipFile(wheel).read(
        next(n for n in names if n.endswith("entry_points.txt"))
    )
    assert b"cja-audiences = cja_audiences.cli.main:main" in entry_points
