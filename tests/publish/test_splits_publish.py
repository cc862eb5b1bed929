"""Split audiences end to end: compute assigns arms, each split is its own AEP audience, the
holdout is kept in the snapshot and never sent, guardrails hold per published audience."""

from __future__ import annotations

from datetime import date

import pyarrow.parquet as pq
import pytest

from cja_audiences import guardrails
from cja_audiences.compute import compute_audience
from cja_audiences.diff import diff_members
from cja_audiences.membership import build_lake, parse_case
from cja_audiences.publish.streaming import publish_run
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec
from tests.publish.helpers import external_conn, fast_options, fast_poll, held

pytestmark = pytest.mark.integration

AS_OF = date(2026, 3, 10)


def split_spec(**fields) -> AudienceSpec:
    return AudienceSpec.model_validate(
        {
            "id": "buyers",
            "name": "Buyers",
            "refresh": {"frequency": "daily", "lookback_days": 7},
            "filter": {"rules": {"metric": "orders", "op": "gte", "value": 1}},
            "splits": [{"name": "control", "share": 0.45}, {"name": "variant", "share": 0.45}],
            "holdout": 0.1,
            "salt": "s1",
        }
        | fields
    )


@pytest.fixture
def computed(tmp_path):
    """300 buyers in a lake, computed and diffed (first run) for a split spec."""
    settings = Settings(home=tmp_path / "home", audiences_dir=tmp_path, filters_dir=tmp_path)
    persons = {
        f"b{i:03d}": {"events": [{"at": "-1d 10:00", "event_type": "commerce.purchases"}]}
        for i in range(300)
    }
    build_lake(
        parse_case({"as_of": AS_OF, "persons": persons, "expect": {"in": ["b000"]}}, "t"),
        settings.home,
    )

    def run(spec: AudienceSpec, name: str):
        run_dir = tmp_path / name
        compute_audience(spec, settings=settings, run_dir=run_dir, as_of=AS_OF)
        diff_members(run_dir, None)
        members = pq.read_table(run_dir / "members.parquet").to_pylist()
        return settings, run_dir, members

    return run


def arm_identities(members, arm):
    return {(m["namespace"], m["identity"]) for m in members if m["split"] == arm}


def test_each_split_is_its_own_audience_and_the_holdout_is_never_sent(emu, computed):
    spec = split_spec()
    settings, run_dir, members = computed(spec, "r1")
    assert len(members) == 300  # the holdout stays in the snapshot
    assert {m["split"] for m in members} == {"holdout", "control", "variant"}
    summary = publish_run(emu.adobe_config(), spec, run_dir, options=fast_options())
    holdout = arm_identities(members, "holdout")
    assert summary["held_out"] == len(holdout) > 0
    assert summary["sent"] == summary["acknowledged"] == 300 - len(holdout)
    assert [a["audienceId"] for a in summary["audiences"]] == ["buyers__control", "buyers__variant"]
    assert summary["audiences"][0]["name"] == "Buyers [control] (buyers__control)"
    for arm in ("control", "variant"):
        assert held(emu, f"buyers__{arm}", status="realized") == arm_identities(members, arm)
    assert held(emu, "buyers") == set()
    report = guardrails.check_run(spec, settings, run_dir, None)
    names = {c.name: c.verdict for c in report.checks}
    assert names["min_size[buyers__control]"] == "pass"
    assert names["size[buyers__variant]"] == "pass"


def test_combined_splits_publish_one_audience_without_the_holdout(emu, computed):
    spec = split_spec(publish_splits="combined")
    _, run_dir, members = computed(spec, "r1")
    summary = publish_run(emu.adobe_config(), spec, run_dir, options=fast_options())
    published = arm_identities(members, "control") | arm_identities(members, "variant")
    assert held(emu, "buyers", status="realized") == published
    assert summary["held_out"] == 300 - len(published)


def test_a_split_below_the_privacy_floor_blocks_the_run(computed):
    spec = split_spec(
        splits=[{"name": "control", "share": 0.97}, {"name": "tiny", "share": 0.02}],
        holdout=0.01,
        guardrails={"min_size": 10},
    )
    settings, run_dir, members = computed(spec, "r1")
    assert sum(m["split"] == "tiny" for m in members) < 10
    report = guardrails.check_run(spec, settings, run_dir, None)
    assert report.blocked
    assert "min_size[buyers__tiny]:" in report.message


def test_a_new_salt_moves_members_between_split_audiences(emu, computed):
    from cja_audiences import why

    first = split_spec()
    _, r1, before = computed(first, "r1")
    publish_run(emu.adobe_config(), first, r1, options=fast_options())
    second = split_spec(salt="s2")
    settings, r2, after = computed(second, "r2")
    diff_members(r2, r1)
    entered = pq.read_table(r2 / "entered.parquet").to_pylist()
    exited = pq.read_table(r2 / "exited.parquet").to_pylist()
    old = {m["person_id"]: m["split"] for m in before}
    new = {m["person_id"]: m["split"] for m in after}
    moved = {p for p in new if new[p] != old[p]}
    assert {m["person_id"] for m in entered} == {m["person_id"] for m in exited} == moved
    assert {m["reason"] for m in entered + exited} == {why.SPLIT_CHANGED}
    assert all(m["split"] == old[m["person_id"]] for m in exited)
    publish_run(emu.adobe_config(), second, r2, options=fast_options())
    for arm in ("control", "variant"):
        assert held(emu, f"buyers__{arm}", status="realized") == arm_identities(after, arm)


def test_in_one_combined_audience_only_moves_into_or_out_of_the_holdout_are_sent(emu, computed):
    first = split_spec(publish_splits="combined")
    _, r1, before = computed(first, "r1")
    publish_run(emu.adobe_config(), first, r1, options=fast_options())
    second = split_spec(publish_splits="combined", salt="s2")
    _, r2, after = computed(second, "r2")
    diff_members(r2, r1)
    old = {m["person_id"]: m["split"] for m in before}
    new = {m["person_id"]: m["split"] for m in after}
    changed = {p for p in new if (old[p] == "holdout") != (new[p] == "holdout")}
    entered = {m["person_id"] for m in pq.read_table(r2 / "entered.parquet").to_pylist()}
    exited = {m["person_id"] for m in pq.read_table(r2 / "exited.parquet").to_pylist()}
    assert entered == exited == changed  # control <-> variant moves change nothing in AEP
    publish_run(emu.adobe_config(), second, r2, options=fast_options())
    published = arm_identities(after, "control") | arm_identities(after, "variant")
    assert held(emu, "buyers", status="realized") == published


def test_external_audiences_leave_the_holdout_out_and_refuse_separate_splits(
    emu,
    storage,
    computed,
):
    from cja_audiences import publish
    from cja_audiences.publish.external import ExternalAudienceError

    external = {"publish": {"mode": "external_audience"}}
    spec = split_spec(publish_splits="combined", **external)
    _, run_dir, members = computed(spec, "r1")
    config = emu.adobe_config(**external_conn(storage))
    publish.publish_run(config, spec, run_dir, poll=fast_poll())
    rows = (storage / "audiences" / "buyers" / "r1.csv").read_text().splitlines()[1:]
    published = {m["identity"] for m in members if m["split"] != "holdout"}
    assert {r.split(",")[0].strip('"') for r in rows} == published
    with pytest.raises(ExternalAudienceError, match="set publish_splits: combined"):
        publish.publish_run(config, split_spec(**external), run_dir, poll=fast_poll())
