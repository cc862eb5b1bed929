"""Review before publishing: the approval publishes exactly the reviewed diff, or refuses."""

from __future__ import annotations

import pyarrow.parquet as pq
import pytest

from cja_audiences import buckets, review
from cja_audiences.lake.runs import read_run_record
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, GuardrailBlocked, RefreshRequest, ReviewOutdated
from cja_audiences.specs.model import spec_by_id
from tests.dashboard.lakes import (
    AUDIENCE,
    BLOCKED,
    YESTERDAY,
    build_lake,
    publish,
    refresh,
    write_spec,
)
from tests.publish.helpers import fast_options

pytestmark = pytest.mark.integration


@pytest.fixture
def lake(tmp_path, emu):
    return build_lake(tmp_path, emu)


def approval(lake, run_id: str, approve: str, **request) -> AudienceRefresh:
    audience = request.pop("audience", AUDIENCE)
    spec = spec_by_id(lake.settings.audiences_dir, audience)
    req = RefreshRequest.from_params(
        run_id,
        {"approve_run": approve, **request},
        default_as_of=YESTERDAY,
        run_type="manual",
        requested_by="ana",
    )
    return AudienceRefresh(spec, lake.settings, req)


def keys(path) -> set[tuple[str, str, str]]:
    table = pq.read_table(path)
    return set(
        zip(*(table[c].to_pylist() for c in ("person_id", "namespace", "identity")), strict=True)
    )


def test_an_approval_publishes_the_reviewed_members_and_commits(lake, emu):
    reviewed = lake.lake.run_dir(AUDIENCE, lake.dry)
    stages = approval(lake, "manual__approve", lake.dry)
    assert stages.request.force and not stages.request.dry_run  # approved: publish now
    stages.gate()
    assert stages.compute()["adopted_from"] == lake.dry
    assert stages.diff()["reviewed_run"] == lake.dry
    for name in ("members.parquet", "entered.parquet", "exited.parquet"):
        assert keys(stages.run_dir / name) == keys(reviewed / name)
    stages.check()
    publish_run(emu.adobe_config(), stages.spec, stages.run_dir, options=fast_options())
    stages.commit()
    realized = {m["identity"] for m in emu.membership(AUDIENCE) if m["status"] == "realized"}
    assert realized == {identity for _, _, identity in keys(reviewed / "members.parquet")}


def test_an_approval_is_refused_once_another_run_was_committed(lake, emu):
    publish(refresh(lake.settings, AUDIENCE, "scheduled__later"), emu)
    stages = approval(lake, "manual__late", lake.dry)
    stages.compute()
    with pytest.raises(ReviewOutdated, match="start a new dry run"):
        stages.diff()
    assert not (stages.run_dir / "entered.parquet").exists()


SPLIT = "split_cart"  # cart_abandoners in 3 person buckets
PIECES = ("members.parquet", "entered.parquet", "exited.parquet")


def bucketed_review(lake, emu, buckets_now: int = 3):
    """A published bucketed audience and a dry run of it on a shorter window (so recomputing
    at approval time would give other members than the reviewed ones)."""
    specs = lake.settings.audiences_dir
    cut = {"frequency": "daily", "lookback_days": 7, "start": "2026-01-01T06:00:00Z"}
    write_spec(specs, AUDIENCE, id=SPLIT, refresh={**cut, "buckets": 3})
    publish(refresh(lake.settings, SPLIT, "scheduled__split"), emu)
    dry = refresh(
        lake.settings, SPLIT, "manual__split_dry", run_type="manual", dry_run=True, lookback_days=4
    )
    dry.check()
    dry.commit()
    if buckets_now != 3:
        write_spec(specs, AUDIENCE, id=SPLIT, refresh={**cut, "buckets": buckets_now})
    return dry.run_dir


def test_a_bucketed_approval_publishes_each_buckets_reviewed_diff(lake, emu):
    reviewed = bucketed_review(lake, emu)
    first = lake.lake.run_dir(SPLIT, "scheduled__split")
    assert keys(reviewed / "members.parquet") != keys(first / "members.parquet")
    stages = approval(lake, "manual__split_ok", reviewed.name, audience=SPLIT)
    stages.gate()
    for bucket in range(3):  # as the DAG's mapped tasks: one bucket each, then the merge
        assert stages.compute(bucket=bucket)["adopted_from"] == reviewed.name
    for bucket in range(3):
        assert stages.diff(bucket)["reviewed_run"] == reviewed.name
    assert stages.merge()["reviewed_run"] == reviewed.name
    for bucket in range(3):
        mine, theirs = (
            buckets.bucket_dir(stages.run_dir, bucket),
            buckets.bucket_dir(reviewed, bucket),
        )
        for name in PIECES:
            assert keys(mine / name) == keys(theirs / name), (bucket, name)
    for name in PIECES:
        assert keys(stages.run_dir / name) == keys(reviewed / name)
    publish(stages, emu)
    realized = {m["identity"] for m in emu.membership(SPLIT) if m["status"] == "realized"}
    assert realized == {identity for _, _, identity in keys(reviewed / "members.parquet")}


def test_a_bucketed_approval_is_refused_when_the_snapshot_or_the_buckets_moved(lake, emu):
    reviewed = bucketed_review(lake, emu, buckets_now=2)
    stages = approval(lake, "manual__split_recut", reviewed.name, audience=SPLIT)
    with pytest.raises(ReviewOutdated, match="refresh.buckets 2"):
        stages.compute(bucket=0)
    write_spec(
        lake.settings.audiences_dir,
        AUDIENCE,
        id=SPLIT,
        refresh={"frequency": "daily", "lookback_days": 7, "buckets": 3},
    )
    publish(refresh(lake.settings, SPLIT, "scheduled__split_later"), emu)
    stages = approval(lake, "manual__split_late", reviewed.name, audience=SPLIT)
    stages.compute()
    with pytest.raises(ReviewOutdated, match="start a new dry run"):
        stages.diff(0)
    assert not (buckets.bucket_dir(stages.run_dir, 0) / "entered.parquet").exists()


def test_an_override_lets_the_allowed_check_pass_once_and_records_who(lake):
    stages = approval(
        lake, "manual__override", lake.blocked, audience=BLOCKED, override=["min_size"]
    )
    stages.compute()
    stages.diff()
    report = stages.check()
    min_size = next(c for c in report["checks"] if c["name"] == "min_size")
    assert min_size["verdict"] == "warn" and "overridden for this run by ana" in min_size["message"]
    record = read_run_record(stages.run_dir)
    assert record["override"]["by"] == "ana" and record["override"]["checks"] == ["min_size"]


def test_an_override_of_a_check_the_spec_does_not_allow_is_refused(lake):
    stages = approval(lake, "manual__nope", lake.blocked, audience=BLOCKED, override=["size"])
    stages.compute()
    stages.diff()
    with pytest.raises(ValueError, match="may not be overridden"):
        stages.check()


def test_without_an_override_the_reviewed_blocked_run_blocks_again(lake):
    stages = approval(lake, "manual__again", lake.blocked, audience=BLOCKED)
    stages.compute()
    stages.diff()
    with pytest.raises(GuardrailBlocked, match="privacy floor"):
        stages.check()


def test_member_pages_mask_search_and_page(lake):
    run_dir = lake.lake.run_dir(AUDIENCE, lake.published)
    everyone = review.member_page(run_dir, "entered", limit=1000, reveal=True)
    first = everyone.rows[0]
    found = review.member_page(run_dir, "entered", search=first["person_id"], reveal=True)
    assert found.total == 1 and found.rows[0] == first
    masked = review.member_page(run_dir, "entered", limit=2)
    assert len(masked.rows) == 2 and masked.total == everyone.total
    assert all("•••" in row["identity"] for row in masked.rows)
    second = review.member_page(run_dir, "entered", offset=1, limit=1, reveal=True)
    assert second.rows[0] == everyone.rows[1]


def test_members_carry_their_reason_and_the_branches_that_held(lake):
    run_dir = lake.lake.run_dir(AUDIENCE, lake.published)
    record = read_run_record(run_dir)
    shared = review.shared_branches(record)  # an all-of filter: said once for every member
    assert len(shared) == 2 and review.why_legend(record) == []
    page = review.member_page(run_dir, "entered", legend=review.why_legend(record))
    assert page.has_why and page.rows[0]["explained"] == {"reason": "first publish", "held": []}
    any_of = {
        "compute": {
            "why": {
                "combine": "any",
                "branches": [{"mask": 1, "text": "bought"}, {"mask": 2, "text": "browsed"}],
            }
        }
    }
    assert review.why_legend(any_of) == [(1, "bought"), (2, "browsed")]
    row = {"reason": "now_holds", "why": 2}
    assert review.explain_member(row, review.why_legend(any_of)) == {
        "reason": "now matches the filter",
        "held": ["browsed"],
    }
    assert review.why_legend({}) == [] and review.shared_branches({}) == []


def test_a_member_without_codes_is_explained_by_nothing():
    assert review.explain_member({"person_id": "p"}, [(1, "x")]) == {"reason": None, "held": []}


@pytest.mark.parametrize(
    ("value", "masked"),
    [
        ("jane.doe@example.com", "ja•••@ex•••.com"),
        ("12345678901234567890123456789012345678", "1234•••78"),
        ("abc", "a•••"),
        ("", ""),
    ],
)
def test_mask(value, masked):
    assert review.mask(value) == masked
