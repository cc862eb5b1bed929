"""The dashboard parses each spec file once per change (the safe YAML loader is slow)."""

from __future__ import annotations

import os

import pytest
import yaml

from cja_audiences.dashboard import specs as dashboard_specs
from cja_audiences.specs.model import SpecError
from tests.conftest import REPO


@pytest.fixture
def folder(tmp_path):
    source = yaml.safe_load((REPO / "include/audiences/cart_abandoners.yaml").read_text())
    (tmp_path / "cart_abandoners.yaml").write_text(yaml.safe_dump(source))
    (tmp_path / "broken.yaml").write_text("id: broken\nname: [unclosed\n")
    return tmp_path


def test_a_spec_is_parsed_once_until_its_file_changes(folder, monkeypatch):
    parsed = []
    real = dashboard_specs.load_spec
    monkeypatch.setattr(dashboard_specs, "load_spec", lambda p: parsed.append(p.name) or real(p))
    first = dashboard_specs.spec_of(folder, "cart_abandoners")
    assert dashboard_specs.spec_of(folder, "cart_abandoners") is first
    specs, errors = dashboard_specs.specs_in(folder)
    assert [s.id for s in specs] == ["cart_abandoners"] and parsed.count(
        "cart_abandoners.yaml"
    ) == 1
    path = folder / "cart_abandoners.yaml"
    path.write_text(path.read_text().replace("Cart abandoners", "Cart leavers"))
    stat = path.stat()
    os.utime(path, ns=(stat.st_atime_ns, stat.st_mtime_ns + 1_000_000))
    assert dashboard_specs.spec_of(folder, "cart_abandoners").name.startswith("Cart leavers")
    assert parsed.count("cart_abandoners.yaml") == 2


def test_a_broken_spec_keeps_failing_with_its_message_and_a_fresh_error(folder):
    with pytest.raises(SpecError, match="not valid YAML") as first:
        dashboard_specs.spec_of(folder, "broken")
    with pytest.raises(SpecError, match="not valid YAML") as second:
        dashboard_specs.spec_of(folder, "broken")
    assert first.value is not second.value and str(first.value) == str(second.value)
    assert str(second.value).startswith(str(folder / "broken.yaml"))
    with pytest.raises(SpecError, match="no audience spec 'nope'"):
        dashboard_specs.spec_of(folder, "nope")
