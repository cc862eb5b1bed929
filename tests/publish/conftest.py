"""Fixtures of the publish tests."""

from __future__ import annotations

from pathlib import Path

import pytest


@pytest.fixture
def storage(emu, tmp_path) -> Path:
    """A folder behind the emulator's base connection conn-1 (``helpers.external_conn``)."""
    root = tmp_path / "cloud"
    root.mkdir()
    emu.base_connection(root, "conn-1")
    return root
