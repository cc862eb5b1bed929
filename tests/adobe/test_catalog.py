from __future__ import annotations

import pytest

from cja_audiences.adobe.catalog import new_batches

pytestmark = pytest.mark.integration


def test_new_batches_are_the_successful_ones_after_the_watermark(emu):
    config = emu.adobe_config()
    dataset = emu.config["cja_dataset_id"]
    old = emu.add_batch(status="success", records=10, created=1_000)
    failed = emu.add_batch(status="failed", records=5, created=2_000)
    newer = emu.add_batch(status="success", records=7, created=3_000)

    found = new_batches(config, dataset, created_after=1_000)

    assert [b["id"] for b in found] == [newer["id"]]
    assert {old["id"], failed["id"]}.isdisjoint(b["id"] for b in found)
    assert [b["id"] for b in new_batches(config, dataset, created_after=0)] == [
        old["id"],
        newer["id"],
    ]
    assert new_batches(config, dataset, created_after=3_000) == []
