"""Commands on an audience's runs and snapshots: list, show, rollback, prune.

    python -m cja_audiences runs list ID [--json]
    python -m cja_audiences runs show ID RUN
    python -m cja_audiences runs rollback ID RUN [--dry-run | --resume]
    python -m cja_audiences runs prune ID [--keep N]

The lake root is ``CJA_AUDIENCES_HOME``; rollback publishes through the AEP connection
``CJA_AUDIENCES_AEP_CONN_ID`` (``AIRFLOW_CONN_<ID>`` in JSON form) and holds the audience's
lease like a refresh: while a run of the audience is publishing it waits up to
``CJA_AUDIENCES_LEASE_WAIT_S``, then stops with the other run named.
"""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from cja_audiences import snapshots
from cja_audiences.lake.layout import Lake, safe_name
from cja_audiences.lake.lease import AudienceBusy, LeaseLost
from cja_audiences.settings import Settings, get_settings
from cja_audiences.specs.model import SpecError, spec_by_id

LIST_COLUMNS = ("run_id", "created_at", "status", "size", "entered", "exited", "rollback_of")


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the parser."""
    group = subparsers.add_parser(
        "runs", help="list, show, roll back and prune an audience's runs"
    ).add_subparsers(dest="runs_command", required=True, metavar="ACTION")

    show_list = group.add_parser("list", help="the audience's runs, oldest first")
    show_list.add_argument("audience_id")
    show_list.add_argument("--json", action="store_true", help="print JSON instead of a table")
    show_list.set_defaults(func=list_command)

    show = group.add_parser("show", help="one run: summary, run.json and file row counts")
    show.add_argument("audience_id")
    show.add_argument("run_id")
    show.set_defaults(func=show_command)

    back = group.add_parser(
        "rollback", help="publish the diff from the current run to RUN and make it current"
    )
    back.add_argument("audience_id")
    back.add_argument("run_id", help="a run that was current once (see `runs list`)")
    how = back.add_mutually_exclusive_group()
    how.add_argument(
        "--dry-run", action="store_true", help="report what would be sent; send and commit nothing"
    )
    how.add_argument(
        "--resume",
        action="store_true",
        help="finish the rollback to RUN that a crash interrupted (the same run, resumed)",
    )
    back.set_defaults(func=rollback_command)

    prune = group.add_parser("prune", help="delete old runs, keeping the current one")
    prune.add_argument("audience_id")
    prune.add_argument(
        "--keep", type=int, help="runs to keep (default: CJA_AUDIENCES_RUN_RETENTION)"
    )
    prune.set_defaults(func=prune_command)


def _audience_dir(settings: Settings, audience_id: str) -> Path:
    audience_dir = Lake(settings.home).audience_dir(audience_id)
    if not audience_dir.is_dir():
        raise snapshots.SnapshotError(
            f"no runs for audience {audience_id!r} under {settings.home} (CJA_AUDIENCES_HOME)"
        )
    return audience_dir


def _run(action: Callable[[Settings], int]) -> int:
    """Turn the expected failures into a message on stderr and exit code 1."""
    try:
        return action(get_settings())
    except (
        snapshots.SnapshotError,
        SpecError,
        LookupError,
        ValueError,
        AudienceBusy,
        LeaseLost,
    ) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1


def list_command(args: argparse.Namespace) -> int:
    def action(settings: Settings) -> int:
        runs = snapshots.list_runs(_audience_dir(settings, args.audience_id))
        print(json.dumps(runs, indent=2) if args.json else _table(runs))
        return 0

    return _run(action)


def _table(rows: list[dict[str, Any]]) -> str:
    """A markdown table: readable in a terminal and pasteable into a ticket."""
    cells = [[_cell(row[c]) for c in LIST_COLUMNS] for row in rows]
    lines = ["| " + " | ".join(LIST_COLUMNS) + " |", "|" + "---|" * len(LIST_COLUMNS)]
    lines += ["| " + " | ".join(row) + " |" for row in cells]
    return "\n".join(lines)


def _cell(value: Any) -> str:
    if value is None:
        return ""
    return f"{value:,}" if isinstance(value, int) else str(value)


def show_command(args: argparse.Namespace) -> int:
    def action(settings: Settings) -> int:
        audience_dir = _audience_dir(settings, args.audience_id)
        print(json.dumps(snapshots.show_run(audience_dir, args.run_id), indent=2, default=str))
        return 0

    return _run(action)


def rollback_command(args: argparse.Namespace) -> int:
    def action(settings: Settings) -> int:
        audience_dir = _audience_dir(settings, args.audience_id)
        # Microseconds: a dry run and the real rollback often start within one second.
        run_id = safe_name(f"rollback__{datetime.now(UTC):%Y-%m-%dT%H:%M:%S.%f}")
        new_run_dir = Lake(settings.home).run_dir(args.audience_id, run_id)
        publish = _no_publish if args.dry_run else _publisher(settings, args.audience_id)
        result = snapshots.rollback(
            audience_dir,
            args.run_id,
            new_run_dir,
            publish,
            dry_run=args.dry_run,
            lease_wait_s=settings.lease_wait_s,
            resume=args.resume,
        )
        print(json.dumps(result, indent=2, default=str))
        return 0

    return _run(action)


def _no_publish(run_dir: Path) -> dict[str, Any]:
    raise AssertionError(f"a dry run must not publish ({run_dir})")


def _publisher(settings: Settings, audience_id: str) -> Callable[[Path], dict[str, Any]]:
    """publish_run with the configured AEP connection (imported here: only rollback needs it)."""
    from cja_audiences.adobe.auth import AdobeConfig
    from cja_audiences.publish import publish_run

    spec = spec_by_id(settings.audiences_dir, audience_id)
    config = AdobeConfig.from_env(settings.aep_conn_id)
    return lambda run_dir: publish_run(config, spec, run_dir)


def prune_command(args: argparse.Namespace) -> int:
    def action(settings: Settings) -> int:
        keep = settings.run_retention if args.keep is None else args.keep
        removed = snapshots.prune(_audience_dir(settings, args.audience_id), keep)
        print(f"pruned {len(removed)} run(s), kept the newest {keep} and the current one")
        for run_id in removed:
            print(f"  - {run_id}")
        return 0

    return _run(action)
