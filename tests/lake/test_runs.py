"""run.json goes through one typed model: sections are named, checked and merged."""

from __future__ import annotations

import json

import pytest
from pydantic import ValidationError

from cja_audiences.lake.runs import RUN_RECORD, load_run, read_run_record, update_run_record


def test_sections_merge_and_read_back_as_written(run_dir):
    update_run_record(run_dir, audience_id="high_value", diff={"entered": 3, "exited": 1})
    update_run_record(run_dir, status="committed", failure=None)
    assert read_run_record(run_dir) == {
        "audience_id": "high_value",
        "diff": {"entered": 3, "exited": 1},
        "status": "committed",
    }
    assert load_run(run_dir).diff == {"entered": 3, "exited": 1}


def test_a_misspelt_section_or_status_is_refused_and_nothing_is_written(run_dir):
    update_run_record(run_dir, status="dry_run")
    before = (run_dir / RUN_RECORD).read_text()
    with pytest.raises(ValidationError, match="publsh"):
        update_run_record(run_dir, publsh={"status": "ok"})
    with pytest.raises(ValidationError, match="status"):
        update_run_record(run_dir, status="done")
    with pytest.raises(ValidationError, match="reason"):
        update_run_record(run_dir, failure={"stage": "publish"})
    assert (run_dir / RUN_RECORD).read_text() == before


def test_a_run_that_wrote_nothing_reads_as_empty(run_dir):
    assert read_run_record(run_dir) == {} and load_run(run_dir).status is None
    (run_dir / RUN_RECORD).write_text(json.dumps({"commit": {"run_id": "r1"}}))
    with pytest.raises(ValidationError, match="committed_at"):
        load_run(run_dir)
