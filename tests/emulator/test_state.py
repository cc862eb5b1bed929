"""The emulator's DuckDB persistence: the streaming journal's format and its checkpoints."""

from __future__ import annotations

import time
import zlib

import pytest
from pydantic_core import to_json

from emulator.config import load_config
from emulator.profiles import audience_key, identity_key
from emulator.state import JournalEntry, Persistence, State, pack_body, unpack_body


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


def _accept(state: State, sandbox: str, identities: list[str]) -> None:
    """What the streaming route does with an accepted request: apply, then journal it."""
    dataset = state.config.datasets[0].id
    messages = [
        {
            "header": {"datasetId": dataset},
            "body": {
                "xdmEntity": {
                    "identityMap": {"ECID": [{"id": ident, "primary": True}]},
                    "segmentMembership": {"cjaAudiences": {"aud-1": {"status": "realized"}}},
                }
            },
        }
        for ident in identities
    ]
    for message in messages:
        state.profiles[sandbox].apply(message["body"]["xdmEntity"], dataset, time.time())
    state.journal(JournalEntry(time.time(), sandbox, to_json({"messages": messages})))


def test_a_checkpoint_replaces_the_journal_and_a_restart_loads_it(tmp_path):
    config = load_config()
    sandbox = config.default_sandbox.name
    state = State(config, tmp_path)
    _accept(state, sandbox, ["e0", "e1", "e2"])
    state.checkpoint()
    assert state.persistence.journal() == []  # replaced, not replayed again
    _accept(state, sandbox, ["e3"])  # after the checkpoint: journaled as usual
    state.persistence.append_journal(state.take_journal(), state.persistence.generation)
    state.persistence.close()

    restored = State(config, tmp_path)
    store = restored.profiles[sandbox]
    assert sorted(store.members[audience_key("cjaAudiences", "aud-1")]) == [
        identity_key("ECID", f"e{i}") for i in range(4)
    ]
    assert store.lookup("ECID", "e0") is not None and restored.journaled_bytes == 0


def test_a_reset_drops_the_checkpoint_too(tmp_path):
    config = load_config()
    state = State(config, tmp_path)
    _accept(state, config.default_sandbox.name, ["e0"])
    state.checkpoint()
    state.reset()
    state.persistence.close()
    assert State(config, tmp_path).profiles == {}
