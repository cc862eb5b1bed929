"""Publishing audience membership to Adobe Experience Platform (no Airflow imports).

Two modes, chosen per audience (``publish.mode``) or per connection (``publish_mode``):
``streaming`` sends each change as an XDM profile record through the streaming inlet and
keeps a ledger so a crashed publish resumes (``publish.streaming``); ``external_audience``
writes a file and runs an ingestion through AEP's External Audiences API
(``publish.external``). ``publish_run`` and ``decommission_run`` pick the mode.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.lake.layout import read_json
from cja_audiences.lake.runs import CURRENT, RUNS, read_run_record
from cja_audiences.lake.storage import lake_path
from cja_audiences.publish import external, streaming


class ModeSwitchError(RuntimeError):
    """The audience is live in AEP in the other mode; switching needs a decommission first."""


def publish_mode(spec: Any, config: AdobeConfig) -> str:
    """The spec's ``publish.mode``, else the connection's ``publish_mode``."""
    return spec.publish.mode or config.publish_mode


def live_mode(audience_dir: Path) -> str | None:
    """The mode of the committed snapshot's publish (None before the first commit)."""
    current = read_json(audience_dir / CURRENT)
    if not current:
        return None
    record = read_run_record(audience_dir / RUNS / current["run_id"])
    if (record.get("decommission") or {}).get("status") == "ok":
        return None  # taken out of AEP: either mode may publish it again
    published = record.get("publish") or {}
    return published.get("publish_mode", "streaming") if published else None


def publish_run(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    *,
    full_republish: bool = False,
    dry_run: bool = False,
    options: streaming.PublishOptions | None = None,
    poll: external.PollPolicy | None = None,
    tokens: Any = None,
) -> dict[str, Any]:
    """Publish the run in the audience's mode; refuses a silent switch of modes.

    ``options`` tune the streaming sender, ``poll`` how external-audience runs are awaited.
    """
    mode = _checked_mode(spec, config, lake_path(run_dir))
    if mode == external.MODE:
        return external.publish_external(
            config,
            spec,
            run_dir,
            full_republish=full_republish,
            dry_run=dry_run,
            poll=poll,
            tokens=tokens,
        )
    return streaming.publish_run(
        config,
        spec,
        run_dir,
        full_republish=full_republish,
        dry_run=dry_run,
        options=options,
        tokens=tokens,
    )


def decommission_run(
    config: AdobeConfig,
    spec: Any,
    run_dir: Path,
    *,
    dry_run: bool = False,
    options: streaming.PublishOptions | None = None,
    tokens: Any = None,
) -> dict[str, Any]:
    """Take the audience out of AEP in the mode it was published in."""
    mode = live_mode(lake_path(run_dir).parent.parent) or publish_mode(spec, config)
    if mode == external.MODE:
        return external.publish_external(
            config, spec, run_dir, decommission=True, dry_run=dry_run, tokens=tokens
        )
    return streaming.decommission_run(
        config, spec, run_dir, dry_run=dry_run, options=options, tokens=tokens
    )


def _checked_mode(spec: Any, config: AdobeConfig, run_dir: Path) -> str:
    wanted = publish_mode(spec, config)
    live = live_mode(run_dir.parent.parent)
    if live is not None and live != wanted:
        raise ModeSwitchError(
            f"audience {spec.id} is live in AEP in {live} mode and this run would publish it "
            f"in {wanted} mode, leaving the {live} memberships behind. Decommission it first "
            f"(the publish task with decommission=true), then publish in {wanted} mode; or "
            f"set publish.mode: {live} in its spec"
        )
    return wanted


__all__ = ["ModeSwitchError", "decommission_run", "live_mode", "publish_mode", "publish_run"]
