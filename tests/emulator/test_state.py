"""The emulator's DuckDB persistence: the streaming journal's format."""

from __future__ import annotations

import zlib

import pytest

from emulator.state import JournalEntry, Persistence, pack_body, unpack_body


def test_journal_bodies_round_trip_compressed(tmp_path):
    raw = b'{"messages": [' + b'{"header": {}, "body": {}},' * 500 + b"{}]}"
    assert unpack_body(pack_body(raw)) == raw
    assert len(pack_body(raw)) < len(raw) / 20
    store = Persistence(tmp_path)
    store.append_journal([JournalEntry(1.0, "prod", raw)], store.generation)
    assert [e.body for e in store.journal()] == [raw]


def test_a_journal_of_an_older_version_is_named_not_misread(tmp_path):
    store = Persistence(tmp_path)
    store.db.execute("INSERT INTO journal VALUES (1, 1.0, 'prod', ?)", [zlib.compress(b"{}")])
    with pytest.raises(RuntimeError, match="older emulator"):
        store.journal()
