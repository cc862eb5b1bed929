"""``reconcile``: read an audience's membership back from AEP and report (or repair) drift.

    python -m cja_audiences reconcile ID [--full | --sample N] [--repair] [--json]

Exit code 0 when AEP matches the committed snapshot (after a repair, if asked), 2 when drift
remains, 1 on an error. The result is also recorded in the committed run's run.json
(``reconcile``). Connection: ``CJA_AUDIENCES_AEP_CONN_ID`` (``AIRFLOW_CONN_<ID>`` JSON).
"""

from __future__ import annotations

import argparse
import json
import sys

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.lake.layout import Lake
from cja_audiences.publish.streaming import PublishOptions
from cja_audiences.reconcile import ReconcileError, reconcile_audience
from cja_audiences.settings import get_settings
from cja_audiences.specs.model import SpecError, spec_by_id


def register(subparsers: argparse._SubParsersAction) -> None:
    command = subparsers.add_parser(
        "reconcile", help="read membership back from AEP; report (and --repair) drift"
    )
    command.add_argument("audience_id")
    how = command.add_mutually_exclusive_group()
    how.add_argument("--full", action="store_true", help="check every member and recent exit")
    how.add_argument(
        "--sample", type=int, help="members (and recent exits) to check (default: settings)"
    )
    command.add_argument("--repair", action="store_true", help="send exactly the corrections")
    command.add_argument(
        "--chunk-size", type=int, default=None, help="records per repair ledger chunk"
    )
    command.add_argument("--json", action="store_true", help="print the JSON result")
    command.set_defaults(func=reconcile_command)


def reconcile_command(args: argparse.Namespace) -> int:
    settings = get_settings()
    try:
        spec = spec_by_id(settings.audiences_dir, args.audience_id)
        config = AdobeConfig.from_env(settings.aep_conn_id)
        result = reconcile_audience(
            config,
            spec,
            Lake(settings.home).audience_dir(spec.id),
            mode="full" if args.full else "sample",
            sample=args.sample or settings.reconcile_sample,
            repair=args.repair,
            options=PublishOptions(chunk_size=args.chunk_size) if args.chunk_size else None,
        )
    except (ReconcileError, SpecError, LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(json.dumps(result, indent=2) if args.json else summary(result))
    remaining = (result.get("repair") or {}).get("remaining_drift", result["drift"])
    return 2 if any(remaining.values()) else 0


def summary(result: dict) -> str:
    checked = result["checked"]
    drift = ", ".join(f"{k} {v}" for k, v in result["drift"].items())
    lines = [
        f"run {result['run_id']}: checked {checked['members']} members and "
        f"{checked['exits']} recent exits ({result['mode']}); drift: {drift}"
    ]
    for kind, examples in result.get("examples", {}).items():
        shown = ", ".join(f"{e['namespace']}:{e['identity']}" for e in examples)
        lines.append(f"  {kind}: {shown}")
    if "repair" in result:
        repair = result["repair"]
        lines.append(
            f"repaired: {repair['realized']} sent as realized, {repair['exited']} as exited; "
            f"remaining drift: {sum(repair['remaining_drift'].values())}"
        )
    if result.get("drifted") and "repair" not in result:
        lines.append("WARNING: AEP differs from the committed snapshot; run with --repair")
    return "\n".join(lines)
