"""publish_run end to end against the emulator: what AEP holds afterwards, and the ledger."""

from __future__ import annotations

import json

import pyarrow.parquet as pq
import pytest

from cja_audiences.adobe.http import TokenProvider
from cja_audiences.adobe.sender import SendOptions, StreamingSender
from cja_audiences.lake.runs import DEAD_LETTERS, read_run_record
from cja_audiences.publish.ledger import Ledger
from cja_audiences.publish.streaming import (
    DeadLetterThresholdExceeded,
    decommission_run,
    publish_run,
)
from tests.publish.helpers import (
    fast_options,
    held,
    identities,
    make_spec,
    member_table,
    streaming_requests,
    write_members,
)

pytestmark = pytest.mark.integration


def first_run(run_dir, n: int):
    write_members(run_dir / "members.parquet", range(n))
    write_members(run_dir / "entered.parquet", range(n))
    write_members(run_dir / "exited.parquet", [])
    return identities(member_table(range(n)))


def test_first_publish_registers_the_audience_and_streams_every_member(emu, run_dir):
    expected = first_run(run_dir, 1_234)
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())

    assert held(emu, status="realized") == expected
    assert summary["status"] == "ok"
    assert (summary["sent"], summary["acknowledged"], summary["dead_lettered"]) == (1_234, 1_234, 0)
    assert summary["chunks"] == {
        "total": 3,
        "acknowledged_before": 0,
        "acknowledged_now": 3,
        "complete": True,
    }
    assert summary["requests"] == streaming_requests(emu)["207"]
    audience = summary["audience"]
    assert audience["action"] == "created"
    assert audience["name"] == "High value customers (high_value)"
    assert audience["url"].endswith(audience["id"])
    assert read_run_record(run_dir)["publish"] == json.loads(json.dumps(summary))
    assert len(list(Ledger(run_dir).entries())) == 3
    assert not (run_dir / DEAD_LETTERS).exists()


def test_publishing_again_sends_nothing(emu, run_dir):
    first_run(run_dir, 700)
    publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    before = streaming_requests(emu)
    again = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert streaming_requests(emu) == before
    assert (again["sent"], again["requests"], again["skipped"]) == (0, 0, 700)
    assert again["audience"]["action"] == "unchanged"
    assert again["chunks"]["complete"]


def test_second_run_sends_only_the_changes_and_exits_leave(emu, tmp_path):
    config, spec = emu.adobe_config(), make_spec()
    run1, run2 = tmp_path / "r1", tmp_path / "r2"
    run1.mkdir(), run2.mkdir()
    first_run(run1, 1_000)
    publish_run(config, spec, run1, options=fast_options())

    now = range(300, 1_500)  # 0..299 exit, 1000..1499 enter
    write_members(run2 / "members.parquet", now)
    write_members(run2 / "entered.parquet", range(1_000, 1_500))
    write_members(run2 / "exited.parquet", range(300))
    summary = publish_run(config, spec, run2, options=fast_options())

    assert summary["sent"] == 800
    assert held(emu, status="realized") == identities(member_table(now))
    assert held(emu, status="exited") == identities(member_table(range(300)))


def test_spec_changes_update_the_audience_and_nothing_is_deleted(emu, run_dir):
    first_run(run_dir, 10)
    config = emu.adobe_config()
    created = publish_run(config, make_spec(), run_dir, options=fast_options())["audience"]
    changed = make_spec(name="Top customers", description="now 60 days", tags=["a", "b"])
    updated = publish_run(config, changed, run_dir, options=fast_options())["audience"]
    assert (updated["action"], updated["id"]) == ("updated", created["id"])
    assert updated["name"] == "Top customers (high_value)"
    assert emu.stats()["requests"].get("DELETE /data/core/ups/audiences/{audience_id}") is None


def test_full_republish_sends_the_whole_membership(emu, run_dir):
    expected = first_run(run_dir, 900)
    write_members(run_dir / "entered.parquet", range(5))  # a small delta ...
    summary = publish_run(
        emu.adobe_config(), make_spec(), run_dir, full_republish=True, options=fast_options()
    )
    assert summary["mode"] == "full" and summary["sent"] == 900  # ... but all members go
    assert held(emu, status="realized") == expected


def test_decommission_exits_everyone_and_marks_the_audience_inactive(emu, run_dir):
    expected = first_run(run_dir, 600)
    config, spec = emu.adobe_config(), make_spec()
    publish_run(config, spec, run_dir, options=fast_options())
    summary = decommission_run(config, spec, run_dir, options=fast_options())
    assert held(emu, status="exited") == expected
    assert held(emu, status="realized") == set()
    assert summary["audience"]["lifecycleState"] == "inactive"
    assert read_run_record(run_dir)["decommission"]["status"] == "ok"
    # the exits are newer than the entries, so the emulator's last-write-wins kept them
    times = {m["last_qualification_time"] for m in emu.membership("high_value")}
    assert len(times) == 1


def test_dry_run_sends_nothing_and_records_what_it_would_send(emu, run_dir):
    first_run(run_dir, 300)
    write_members(run_dir / "exited.parquet", range(300, 320))
    summary = publish_run(
        emu.adobe_config(), make_spec(), run_dir, dry_run=True, options=fast_options()
    )
    assert summary["status"] == "dry_run" and summary["would_send"] == 320
    assert summary["by_status"] == {
        "realized": {"records": 300, "would_send": 300},
        "exited": {"records": 20, "would_send": 20},
    }
    assert summary["requests"] >= 1 and summary["bytes"] > 0
    assert emu.stats()["requests_total"] == 0
    assert not (run_dir / "ledger").exists()
    assert read_run_record(run_dir)["publish"] == summary


def test_invalid_identities_are_dead_lettered_not_sent(emu, run_dir):
    table = member_table(range(2_000))
    identity = table.column("identity").to_pylist()
    identity[7] = " "
    table = table.set_column(2, "identity", [identity])
    pq.write_table(table, run_dir / "entered.parquet")
    write_members(run_dir / "exited.parquet", [])
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert summary["dead_lettered"] == 1
    dead = pq.read_table(run_dir / DEAD_LETTERS).to_pylist()
    assert dead[0]["person_id"] == table.column("person_id")[7].as_py()
    assert dead[0]["status_code"] is None and "empty identity" in dead[0]["message"]
    assert len(held(emu)) == 1_999


def test_missing_diff_output_names_the_file(emu, run_dir):
    write_members(run_dir / "members.parquet", range(3))
    with pytest.raises(FileNotFoundError, match="entered.parquet"):
        publish_run(emu.adobe_config(), make_spec(), run_dir)


def test_207_partial_failure_retries_only_the_failed_messages(emu, run_dir):
    expected = first_run(run_dir, 1_000)
    flaky = sorted(identity for _, identity in expected)[10:15]
    emu.faults(fail_records=flaky, fail_record_status=503, fail_record_times=1)
    summary = publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    assert summary["retried"] == 5
    assert summary["dead_lettered"] == 0
    assert held(emu, status="realized") == expected
    assert emu.stats()["messages"]["accepted"] == 1_000


def test_records_refused_for_good_go_to_the_dead_letter_file(emu, run_dir):
    expected = first_run(run_dir, 2_000)
    bad = sorted(identity for _, identity in expected)[:2]
    emu.faults(fail_records=bad, fail_record_status=400)
    summary = publish_run(
        emu.adobe_config(),
        make_spec(),
        run_dir,
        options=fast_options(max_dead_letter_share=0.001, message_attempts=2),
    )
    assert summary["dead_lettered"] == 2 and summary["status"] == "ok"  # 2 <= 0.1% of 2000
    dead = pq.read_table(run_dir / DEAD_LETTERS).to_pylist()
    assert {d["identity"] for d in dead} == set(bad)
    assert all(d["status_code"] == 400 and "fault" in d["message"] for d in dead)
    assert summary["retried"] == 2  # each sent twice, then given up
    assert held(emu) == expected - {("ECID", b) for b in bad}


def test_too_many_dead_letters_fail_the_run(emu, run_dir):
    expected = first_run(run_dir, 1_000)
    emu.faults(fail_records=sorted(i for _, i in expected)[:5], fail_record_status=400)
    with pytest.raises(DeadLetterThresholdExceeded, match="must not be committed"):
        publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    record = read_run_record(run_dir)["publish"]
    assert record["status"] == "failed" and record["dead_lettered"] >= 2
    assert (run_dir / DEAD_LETTERS).exists()


def test_an_unauthenticated_inlet_gets_no_token(emu, run_dir):
    expected = first_run(run_dir, 300)
    config = emu.adobe_config(
        inlet_id=emu.config["unauthenticated_inlet_id"], authenticated_inlet=False
    )
    publish_run(config, make_spec(), run_dir, options=fast_options())
    assert held(emu) == expected
    sender = StreamingSender(config, SendOptions(), TokenProvider(config))
    assert sender.tokens is None and "Authorization" not in sender._headers(None)


def test_a_rerun_does_not_forget_earlier_dead_letters(emu, run_dir):
    expected = first_run(run_dir, 1_000)
    emu.faults(fail_records=sorted(i for _, i in expected)[:5], fail_record_status=400)
    with pytest.raises(DeadLetterThresholdExceeded):
        publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    emu.clear_faults()
    with pytest.raises(DeadLetterThresholdExceeded):  # refused for good: recompute the run
        publish_run(emu.adobe_config(), make_spec(), run_dir, options=fast_options())
    record = read_run_record(run_dir)["publish"]
    assert record["status"] == "failed" and record["chunks"]["complete"]
    assert held(emu) == expected - {("ECID", i) for i in sorted(i for _, i in expected)[:5]}
