"""Every audience at a glance: one :class:`AudienceRow` per spec file, usable or not.

A spec that no longer loads (or that spec-level guardrails block) is still listed: if it was
published before, its audience is still live in AEP although nothing refreshes it.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

from cja_audiences import guardrails
from cja_audiences.dashboard.runs import RunView, audience_runs
from cja_audiences.dashboard.specs import specs_in
from cja_audiences.lake.layout import Lake, read_json
from cja_audiences.lake.runs import CURRENT
from cja_audiences.settings import Settings
from cja_audiences.specs import calendar
from cja_audiences.specs.model import AudienceSpec, SpecError, spec_paths

SPARK_POINTS = 30
SPEC_TTL = timedelta(seconds=60)


@dataclass
class AudienceRow:
    id: str
    name: str
    tags: list[str] = field(default_factory=list)
    frequency: str = "-"
    status: str = "never"  # the last run's status, or never / invalid
    size: int | None = None  # the committed size
    sizes: list[int] = field(default_factory=list)  # committed sizes, oldest first
    entered: int | None = None  # of the last publish
    exited: int | None = None
    verdict: str | None = None  # of the last run
    last_refresh: datetime | None = None
    next_refresh: datetime | None = None
    aep_url: str | None = None
    drift: dict | None = None
    error: str | None = None  # the spec does not load or is blocked
    live_in_aep: bool = False
    last_run: RunView | None = None

    @property
    def dag_id(self) -> str:
        return f"cja_audience__{self.id}"


def _published(runs: list[RunView]) -> list[RunView]:
    return [r for r in runs if r.status == "published"]


def _fill(row: AudienceRow, audience_dir: Path) -> AudienceRow:
    """The run-derived columns, from the audience's runs (newest first)."""
    runs = audience_runs(audience_dir)
    published = _published(runs)
    current = read_json(audience_dir / CURRENT)
    row.last_run = runs[0] if runs else None
    if row.last_run and row.status != "invalid":
        row.status = row.last_run.status
        row.verdict = row.last_run.verdict
    if current:
        row.size = current.get("size")
        row.last_refresh = datetime.fromisoformat(current["committed_at"])
        row.live_in_aep = True
    row.sizes = [r.size for r in reversed(published[:SPARK_POINTS]) if r.size is not None]
    if published:
        row.entered, row.exited = published[0].entered, published[0].exited
    row.aep_url = next((r.aep_url for r in runs if r.aep_url), None)
    row.drift = next((r.drift for r in runs if r.drift), None)
    return row


def _spec_row(spec: AudienceSpec, error: str | None, now: datetime) -> AudienceRow:
    return AudienceRow(
        id=spec.id,
        name=spec.name,
        tags=list(spec.tags),
        frequency=spec.refresh.frequency,
        next_refresh=None if error else calendar.next_refresh(spec, now),
        status="invalid" if error else "never",
        error=error,
    )


@dataclass(frozen=True)
class _SpecState:
    key: tuple[Any, ...]
    at: datetime
    specs: list[AudienceSpec]
    errors: list[SpecError]
    blocked: dict[str, str]  # audience id -> why spec-level guardrails block it


_spec_state: list[_SpecState] = []


def _specs(settings: Settings, now: datetime) -> _SpecState:
    """Specs, load errors and spec-level blocks, reused while no spec file changed (and for
    at most SPEC_TTL, since expiry checks depend on the time): parsing and checking every
    spec is most of an overview's cost."""
    paths = spec_paths(settings.audiences_dir)
    key = (str(settings.audiences_dir), tuple((p.name, p.stat().st_mtime_ns) for p in paths))
    cached = _spec_state[0] if _spec_state else None
    if cached and cached.key == key and timedelta(0) <= now - cached.at < SPEC_TTL:
        return cached
    specs, errors = specs_in(settings.audiences_dir)
    blocked = {}
    for spec in specs:
        report = guardrails.check_spec(spec, settings, all_specs=specs, now=now)
        if report.blocked:
            blocked[spec.id] = report.message
    state = _SpecState(key, now, specs, errors, blocked)
    _spec_state[:] = [state]
    return state


def overview(
    settings: Settings,
    allowed: Callable[[list[str]], set[str]] | None = None,
    now: datetime | None = None,
) -> list[AudienceRow]:
    """Rows for every spec file; ``allowed`` narrows a list of audience ids to those the
    viewer may read (asked once for all of them)."""
    now = now or datetime.now(UTC)
    lake = Lake(settings.home)
    state = _specs(settings, now)
    specs, errors, blocked = state.specs, state.errors, state.blocked
    rows = [_spec_row(s, blocked.get(s.id), now) for s in specs]
    rows += [_error_row(e) for e in errors]
    if allowed is not None:
        permitted = allowed([r.id for r in rows])
        rows = [r for r in rows if r.id in permitted]
    return sorted((_fill(r, lake.audience_dir(r.id)) for r in rows), key=lambda r: r.name.lower())


def _error_row(error: SpecError) -> AudienceRow:
    message = str(error).removeprefix(f"{error.path}: ")
    return AudienceRow(id=error.path.stem, name=error.path.stem, status="invalid", error=message)
