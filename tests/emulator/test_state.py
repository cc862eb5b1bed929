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


def test_a_flush_larger_than_one_insert_keeps_its_order(tmp_path, monkeypatch):
    monkeypatch.setattr("emulator.state.JOURNAL_ROWS_PER_INSERT", 2)
    store = Persistence(tmp_path)
    bodies = [b'{"messages": [%d]}' % i for i in range(5)]
    store.append_journal([JournalEntry(float(i), "prod", b) for i, b in enumerate(bodies)], 0)
    store.append_journal([JournalEntry(9.0, "dev", b"{}")], 0)
    assert [(e.received, e.sandbox, e.body) for e in store.journal()] == [
        *((float(i), "prod", b) for i, b in enumerate(bodies)),
        (9.0, "dev", b"{}"),
    ]
