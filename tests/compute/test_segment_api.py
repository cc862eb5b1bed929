"""A segment filter given by id is fetched from the CJA Segments API (the emulator here)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from cja_audiences.compute import evaluate_audience, render_audience
from cja_audiences.filters.segment import SegmentError, fetch_definition
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec
from tests.compute.helpers import ADD, BUY, T0, ev, write_lake

pytestmark = pytest.mark.integration

DEFINITION = {
    "func": "segment",
    "version": [1, 0, 0],
    "container": {
        "func": "container",
        "context": "visitors",
        "pred": {
            "func": "streq",
            "str": ADD,
            "val": {"func": "attr", "name": "variables/eventtype"},
        },
    },
}


def test_fetch_by_id_and_compute(emu, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    segment = emu.add_segment(name="Adders", definition=DEFINITION)
    config = emu.adobe_config("cja")
    assert fetch_definition(config, segment["id"]) == DEFINITION

    monkeypatch.setenv("AIRFLOW_CONN_CJA_DEFAULT", json.dumps(emu.cja_conn()))
    write_lake(tmp_path, [ev("a", 0, ADD), ev("b", 0, BUY)], {"a": {}, "b": {}})
    settings = Settings(home=tmp_path, audiences_dir=tmp_path, filters_dir=tmp_path)
    spec = AudienceSpec.model_validate(
        {
            "id": "adders",
            "name": "Adders",
            "refresh": {"frequency": "daily", "lookback_days": 1},
            "filter": {"segment": {"id": segment["id"]}},
        }
    )
    result = evaluate_audience(spec, settings=settings, as_of=T0.date())
    assert result.members.column("person_id").to_pylist() == ["a"]
    assert "$v1" in render_audience(spec, settings=settings).sql


def test_unknown_segment_id_is_named(emu) -> None:
    with pytest.raises(SegmentError, match="s_missing.*not found in CJA"):
        fetch_definition(emu.adobe_config("cja"), "s_missing")
