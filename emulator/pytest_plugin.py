"""Pytest fixtures: a real emulator server in a subprocess, reset between tests.

``emulator`` (session) starts ``python -m emulator`` on a free port and stops it at the end;
``emu`` (function) is the same handle after a reset of state and faults, so tests do not
see each other. Clients under test get connections whose every URL points at the server.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from emulator.process import EmulatorServer, start_emulator

__all__ = ["EmulatorServer", "emu", "emulator", "start_emulator"]


@pytest.fixture(scope="session")
def emulator(tmp_path_factory: pytest.TempPathFactory) -> Iterator[EmulatorServer]:
    """One emulator server for the whole test session."""
    with start_emulator(tmp_path_factory.mktemp("emulator")) as server:
        yield server


@pytest.fixture
def emu(emulator: EmulatorServer) -> Iterator[EmulatorServer]:
    """The session emulator, reset (state and faults) before the test."""
    emulator.reset()
    yield emulator
    emulator.clear_faults()
