"""Person buckets give exactly the unbucketed audience: members, diffs and what AEP holds."""

from __future__ import annotations

from datetime import date, timedelta

import pytest

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import read_run_record
from cja_audiences.lake.storage import parquet_file
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, RefreshRequest
from cja_audiences.settings import PROJECT_ROOT, Settings
from cja_audiences.snapshots import current_run
from cja_audiences.specs.model import spec_by_id
from tests.publish.helpers import fast_options, held

pytestmark = pytest.mark.integration

END = date(2026, 11, 20)
SPECS = PROJECT_ROOT / "include" / "audiences"
BUCKETS = 3


@pytest.fixture(scope="module")
def settings(tmp_path_factory) -> Settings:
    home = tmp_path_factory.mktemp("buckets")
    generate_synthetic(Lake(home), persons=3000, days=10, end=END, seed=12)
    return Settings(
        home=home, audiences_dir=SPECS, filters_dir=PROJECT_ROOT / "include" / "filters"
    )


def spec_for(audience_id: str, buckets: int | None):
    spec = spec_by_id(SPECS, "cart_abandoners")
    refresh = spec.refresh.model_copy(update={"buckets": buckets, "lookback_days": 5})
    guardrails = spec.guardrails.model_copy(update={"max_change_pct": 400.0})
    return spec.model_copy(update={"id": audience_id, "refresh": refresh, "guardrails": guardrails})


def stages(spec, settings, run_id: str, as_of: date) -> AudienceRefresh:
    request = RefreshRequest(run_id=run_id, as_of=as_of, force=True)
    refresh = AudienceRefresh(spec, settings, request)
    assert refresh.gate()["due"]
    return refresh


def rows(path) -> list[tuple]:
    table = parquet_file(path).read()
    return list(zip(*(table.column(c).to_pylist() for c in table.column_names), strict=True))


def refresh_both(emu, settings, run_id: str, as_of: date) -> tuple[AudienceRefresh, ...]:
    config = emu.adobe_config()
    done = []
    for audience_id, buckets in (("whole", None), ("bucketed", BUCKETS)):
        refresh = stages(spec_for(audience_id, buckets), settings, run_id, as_of)
        refresh.compute()
        if buckets:  # as the DAG's mapped tasks do: one bucket per task, then the merge
            for bucket in range(buckets):
                refresh.diff(bucket)
            refresh.merge()
        else:
            refresh.diff()
        refresh.check()
        for folder in refresh.publish_dirs():
            publish_run(config, refresh.spec, folder, options=fast_options(chunk_size=200))
        refresh.commit()
        done.append(refresh)
    return tuple(done)


def test_bucketed_runs_equal_unbucketed_runs_and_aep_state(emu, settings):
    for run_id, as_of in (("r1", END - timedelta(days=3)), ("r2", END)):
        whole, bucketed = refresh_both(emu, settings, run_id, as_of)
        for name in ("members.parquet", "entered.parquet", "exited.parquet"):
            assert rows(bucketed.run_dir / name) == rows(whole.run_dir / name), (run_id, name)
        one, split = read_run_record(whole.run_dir), read_run_record(bucketed.run_dir)
        for key in ("entered", "exited", "unchanged", "size", "previous_size"):
            assert split["diff"][key] == one["diff"][key], key
        assert split["diff"]["buckets"] == BUCKETS
        assert split["publish"]["status"] == "ok"
        assert split["publish"]["acknowledged"] == one["publish"]["acknowledged"]
        assert held(emu, "bucketed", "realized") == held(emu, "whole", "realized")
        assert held(emu, "bucketed", "exited") == held(emu, "whole", "exited")
    assert whole.buckets is None and len(whole.publish_dirs()) == 1
    assert read_run_record(bucketed.run_dir)["diff"]["exited"] > 0  # r2 really changed


def test_guardrails_judge_the_whole_and_a_bucket_resumes_alone(emu, settings):
    config = emu.adobe_config()
    spec = spec_for("resumed", BUCKETS)
    refresh = stages(spec, settings, "r1", END)
    refresh.compute()
    refresh.diff()  # every bucket, then the merge
    report = refresh.check()
    assert not report["blocked"]
    assert read_run_record(refresh.run_dir)["guardrails"]["blocked"] is False
    first, *rest = refresh.publish_dirs()
    for folder in rest:
        publish_run(config, spec, folder, options=fast_options(chunk_size=200))
    with pytest.raises(RuntimeError, match=r"buckets \[0\] were not published"):
        refresh.commit()  # a bucket crashed before publishing: nothing is committed
    assert current_run(refresh.audience_dir) is None
    sent_before = emu.stats()["records_per_s_by_org"][emu.config["org_id"]]["received"]
    again = [publish_run(config, spec, f, options=fast_options(chunk_size=200)) for f in rest]
    assert all(s["sent"] == 0 for s in again)  # the finished buckets resend nothing
    publish_run(config, spec, first, options=fast_options(chunk_size=200))
    sent = emu.stats()["records_per_s_by_org"][emu.config["org_id"]]["received"] - sent_before
    assert sent == read_run_record(first)["diff"]["entered"]  # only the crashed bucket
    assert refresh.commit()["committed"]
    assert current_run(refresh.audience_dir)["run_id"] == "r1"
    again = stages(spec, settings, "r1", END).commit()  # a retried commit changes nothing
    assert (
        again["committed"]
        and again["committed_at"] == current_run(refresh.audience_dir)["committed_at"]
    )
