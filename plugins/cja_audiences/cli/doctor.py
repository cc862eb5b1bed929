"""``doctor``: check the AEP org and connection before publishing.

    python -m cja_audiences doctor [--conn aep_default] [--json]

One line per check (ok / the problem / the fix); exit code 1 when any check fails. The
connection is ``AIRFLOW_CONN_<CONN>`` in JSON form (default: CJA_AUDIENCES_AEP_CONN_ID).
"""

from __future__ import annotations

import argparse
import json
import sys

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.doctor import run_doctor
from cja_audiences.settings import get_settings


def register(subparsers: argparse._SubParsersAction) -> None:
    doctor = subparsers.add_parser(
        "doctor", help="check credentials, sandbox, schema, dataset, inlet, namespace, audiences"
    )
    doctor.add_argument("--conn", help="AEP connection id (default: CJA_AUDIENCES_AEP_CONN_ID)")
    doctor.add_argument("--json", action="store_true", help="print JSON instead of lines")
    doctor.set_defaults(func=doctor_command)


def doctor_command(args: argparse.Namespace) -> int:
    conn_id = args.conn or get_settings().aep_conn_id
    try:
        config = AdobeConfig.from_env(conn_id)
    except (LookupError, ValueError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    report = run_doctor(config)
    print(json.dumps(report.as_dict(), indent=2) if args.json else report.text())
    return 0 if report.ok else 1
