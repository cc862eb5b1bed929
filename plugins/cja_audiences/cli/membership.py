"""Commands that explain and test membership: explain, test.

    python -m cja_audiences explain ID PERSON_ID [--run RUN | --as-of DATE] [--events N]
    python -m cja_audiences test [IDS...]

``explain`` defaults to the audience's current (committed) run, else its newest run, else
the lake as of its latest event date.
"""

from __future__ import annotations

import argparse
import sys
from datetime import date

from cja_audiences import explain, membership, snapshots
from cja_audiences.cli.audiences import _event_dates, _settings, audiences_option
from cja_audiences.compute import AudienceError
from cja_audiences.lake.layout import Lake
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec, SpecError, load_spec, spec_by_id, spec_paths


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the parser."""
    common = audiences_option()
    why = subparsers.add_parser(
        "explain", parents=[common], help="why a person is in or out of an audience, in words"
    )
    why.add_argument("audience_id")
    why.add_argument("person_id")
    where = why.add_mutually_exclusive_group()
    where.add_argument("--run", help="run id (default: the current run, else the newest)")
    where.add_argument(
        "--as-of", type=date.fromisoformat, help="evaluate now for this day instead of a run"
    )
    why.add_argument(
        "--events", type=int, default=explain.EVENT_LIMIT, help="matching events to list"
    )
    why.set_defaults(func=cmd_explain)

    test = subparsers.add_parser(
        "test", parents=[common], help="run audiences' membership tests (<id>.test.yaml)"
    )
    test.add_argument("ids", nargs="*", help="audience ids (default: every audience)")
    test.set_defaults(func=cmd_test)


def _context(
    args: argparse.Namespace, settings: Settings, spec: AudienceSpec
) -> explain.RunContext:
    audience_dir = Lake(settings.home).audience_dir(spec.id)
    if args.as_of is not None:
        return explain.RunContext.at(spec, settings, args.as_of)
    run_dir = (
        Lake(settings.home).run_dir(spec.id, args.run)
        if args.run
        else snapshots.current_run_dir(audience_dir) or snapshots.newest_run_dir(audience_dir)
    )
    if run_dir is None:
        return explain.RunContext.at(spec, settings, _event_dates(settings)[-1])
    if not run_dir.is_dir():
        raise ValueError(f"{run_dir}: no such run of {spec.id} (see `runs list {spec.id}`)")
    return explain.RunContext.from_run(spec, settings, run_dir)


def cmd_explain(args: argparse.Namespace) -> int:
    settings = _settings(args)
    try:
        spec = spec_by_id(settings.audiences_dir, args.audience_id)
        result = explain.explain(_context(args, settings, spec), args.person_id, args.events)
    except (SpecError, AudienceError, ValueError, LookupError, OSError) as exc:
        print(f"error: {exc}", file=sys.stderr)
        return 1
    print(result.text)
    return 0


def cmd_test(args: argparse.Namespace) -> int:
    settings = _settings(args)
    paths = spec_paths(settings.audiences_dir)
    if args.ids:
        known = {p.stem: p for p in paths}
        missing = [i for i in args.ids if i not in known]
        if missing:
            print(
                f"error: no audience spec {', '.join(missing)} in {settings.audiences_dir}",
                file=sys.stderr,
            )
            return 1
        paths = [known[i] for i in args.ids]
    failed = untested = 0
    for path in paths:
        try:
            spec = load_spec(path)
            case = membership.load_case(spec)
            if case is None:
                untested += 1
                print(
                    f"none  {spec.id}: no {membership.fixture_path(spec).name} and no tests: section"
                )
                continue
            result = membership.run_case(spec, settings, case)
        except (SpecError, membership.FixtureError, AudienceError) as exc:
            failed += 1
            print(f"ERROR {path.stem}: {exc}")
            continue
        failed += not result.ok
        print(result.report())
    print(f"{len(paths) - failed - untested} passed, {failed} failed, {untested} without tests")
    return 1 if failed else 0
