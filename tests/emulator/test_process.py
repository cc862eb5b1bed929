"""Starting a private emulator, even when a port is taken."""

from __future__ import annotations

import socket

from emulator import process


def test_start_retries_when_the_picked_port_is_taken(tmp_path, monkeypatch):
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        taken_port = taken.getsockname()[1]
        ports = iter([taken_port])
        real_free_port = process.free_port
        monkeypatch.setattr(process, "free_port", lambda: next(ports, None) or real_free_port())
        server = process.start_emulator(tmp_path)
    try:
        assert server.url != f"http://127.0.0.1:{taken_port}"
        assert server.stats()["requests_total"] == 0
        assert "address already in use" in (tmp_path / "emulator.log").read_text().lower()
    finally:
        server.stop()
    assert server.process.poll() is not None
