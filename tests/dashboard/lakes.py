"""Lakes for dashboard tests: real runs of real specs over synthetic data.

``build_lake`` computes, diffs and checks through :class:`AudienceRefresh` and publishes
through the emulator, so every run.json is what the pipeline writes.
"""

from __future__ import annotations

import shutil
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path

import yaml

from cja_audiences.extract.synthetic import generate_synthetic
from cja_audiences.lake.layout import Lake
from cja_audiences.publish.streaming import publish_run
from cja_audiences.refresh import AudienceRefresh, GuardrailBlocked, RefreshRequest
from cja_audiences.settings import Settings
from cja_audiences.specs.model import spec_by_id
from tests.conftest import REPO
from tests.publish.helpers import fast_options

YESTERDAY = datetime.now(UTC).date() - timedelta(days=1)
AUDIENCE = "cart_abandoners"
RECENT = "recent_abandoners"  # a 3-day window of the same filter: overlaps AUDIENCE
BLOCKED = "tiny_vip"  # min_size far above its size, overridable
RETIRED = "old_promo"  # published once, then its spec broke


@dataclass
class DashboardLake:
    root: Path
    settings: Settings
    published: str  # run folder names
    dry: str
    blocked: str

    @property
    def lake(self) -> Lake:
        return Lake(self.settings.home)

    def env(self) -> dict[str, str]:
        return {
            "CJA_AUDIENCES_HOME": str(self.settings.home),
            "CJA_AUDIENCES_SPECS": str(self.settings.audiences_dir),
        }


def write_spec(folder: Path, source: str, **changes) -> None:
    raw = yaml.safe_load((REPO / "include" / "audiences" / f"{source}.yaml").read_text())
    raw.update(changes)
    (folder / f"{raw['id']}.yaml").write_text(yaml.safe_dump(raw, sort_keys=False))


def refresh(settings: Settings, audience_id: str, run_id: str, **request) -> AudienceRefresh:
    spec = spec_by_id(settings.audiences_dir, audience_id)
    stages = AudienceRefresh(
        spec, settings, RefreshRequest(run_id=run_id, as_of=YESTERDAY, force=True, **request)
    )
    stages.gate()
    stages.compute()
    stages.diff()
    return stages


def publish(stages: AudienceRefresh, emulator) -> None:
    """Check, send (each person bucket on its own, as the DAG's mapped tasks) and commit."""
    stages.check()
    for folder in stages.publish_dirs():
        publish_run(emulator.adobe_config(), stages.spec, folder, options=fast_options())
    stages.commit()


def build_lake(root: Path, emulator) -> DashboardLake:
    specs = root / "specs"
    specs.mkdir(parents=True)
    settings = Settings(
        home=root / "home",
        audiences_dir=specs,
        filters_dir=REPO / "include" / "filters",
    )
    generate_synthetic(Lake(settings.home), persons=1500, days=8, end=YESTERDAY, seed=11)
    write_spec(specs, AUDIENCE)
    write_spec(
        specs,
        AUDIENCE,
        id=RECENT,
        name="Cart abandoners (last 3 days)",
        tags=["email"],
        guardrails={"min_size": 1},
        refresh={"frequency": "daily", "lookback_days": 3, "start": "2026-01-01T06:00:00Z"},
    )
    write_spec(
        specs,
        AUDIENCE,
        id=BLOCKED,
        name="Tiny VIP",
        tags=["vip"],
        guardrails={"min_size": 100_000, "overridable": ["min_size"]},
    )
    write_spec(specs, AUDIENCE, id=RETIRED, name="Old promo")

    first = refresh(settings, AUDIENCE, "scheduled__first", run_type="scheduled")
    publish(first, emulator)
    publish(refresh(settings, RECENT, "scheduled__recent"), emulator)
    publish(refresh(settings, RETIRED, "scheduled__promo"), emulator)
    (specs / f"{RETIRED}.yaml").write_text("id: old_promo\nname: Old promo\nrefresh: {}\n")

    dry = refresh(
        settings, AUDIENCE, "manual__dry", run_type="manual", dry_run=True, lookback_days=4
    )
    dry.check()
    dry.commit()
    blocked = refresh(settings, BLOCKED, "scheduled__blocked", run_type="scheduled")
    try:
        blocked.check()
    except GuardrailBlocked as exc:
        blocked.record_failure("guardrails", str(exc))
    return DashboardLake(root, settings, "scheduled__first", "manual__dry", "scheduled__blocked")


def copy_lake(source: DashboardLake, target: Path) -> DashboardLake:
    """A private copy for a test that changes the lake (approvals write run.json)."""
    shutil.copytree(source.root, target)
    settings = Settings(
        home=target / "home",
        audiences_dir=target / "specs",
        filters_dir=source.settings.filters_dir,
    )
    return DashboardLake(target, settings, source.published, source.dry, source.blocked)
