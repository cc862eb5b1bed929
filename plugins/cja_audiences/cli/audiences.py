"""Commands on audience specs: validate, render, preview, compute.

The Airflow-free path users and scripts rely on; the forms are stable:
``validate [PATHS...]``, ``render ID_OR_PATH``, ``preview ID_OR_PATH [--as-of DATE] [--json]``,
``compute ID_OR_PATH [--as-of DATE] [--json]``.
"""

from __future__ import annotations

import argparse
import json
import sys
from datetime import UTC, date, datetime
from pathlib import Path
from typing import Any

from cja_audiences.settings import Settings, settings_from_env
from cja_audiences.specs.model import AudienceSpec, SpecError, load_spec, spec_paths


def audiences_option() -> argparse.ArgumentParser:
    """The ``--audiences DIR`` option every command on specs takes (a parent parser)."""
    common = argparse.ArgumentParser(add_help=False)
    common.add_argument(
        "--audiences", type=Path, help="folder of audience YAML files (default include/audiences)"
    )
    return common


def register(subparsers: argparse._SubParsersAction) -> None:
    """Add this group's commands to the parser."""
    common = audiences_option()

    validate = subparsers.add_parser(
        "validate", parents=[common], help="check audience specs and compile their filters"
    )
    validate.add_argument("paths", nargs="*", type=Path, help="spec files or folders")
    validate.set_defaults(func=cmd_validate)

    run_opts = argparse.ArgumentParser(add_help=False, parents=[common])
    run_opts.add_argument("target", metavar="ID_OR_PATH", help="audience id or spec file")
    run_opts.add_argument(
        "--param",
        action="append",
        default=[],
        metavar="NAME=VALUE",
        help="override a filter param (VALUE is JSON, else a string); repeatable",
    )
    run_opts.add_argument("--json", action="store_true", help="print JSON")

    render = subparsers.add_parser(
        "render", parents=[run_opts], help="print the SQL and bound parameters"
    )
    render.set_defaults(func=cmd_render)

    for name, func, text in (
        ("preview", cmd_preview, "compute without writing: size, sample, metrics"),
        ("compute", cmd_compute, "compute and write members.parquet into a run folder"),
    ):
        sub = subparsers.add_parser(name, parents=[run_opts], help=text)
        sub.add_argument(
            "--as-of",
            type=date.fromisoformat,
            help="last day of the window (default: the lake's latest event date)",
        )
        sub.add_argument("--lookback-days", type=int, help="override refresh.lookback_days")
        sub.set_defaults(func=func)
    subparsers.choices["compute"].add_argument(
        "--run-id", help="run folder name (default cli-<UTC timestamp>)"
    )


def _settings(args: argparse.Namespace) -> Settings:
    settings = settings_from_env()
    if args.audiences is not None:
        settings = settings.model_copy(update={"audiences_dir": args.audiences})
    return settings


def _spec(args: argparse.Namespace, settings: Settings) -> AudienceSpec:
    target = Path(args.target)
    if target.suffix in (".yaml", ".yml") or target.is_file():
        return load_spec(target)
    for suffix in (".yaml", ".yml"):
        path = settings.audiences_dir / f"{args.target}{suffix}"
        if path.is_file():
            return load_spec(path)
    raise SpecError(
        settings.audiences_dir / f"{args.target}.yaml",
        "no such audience; give an id from --audiences or a spec file path",
    )


def _params(pairs: list[str]) -> dict[str, Any]:
    params: dict[str, Any] = {}
    for pair in pairs:
        name, sep, raw = pair.partition("=")
        if not sep:
            raise ValueError(f"--param {pair!r}: use NAME=VALUE")
        try:
            params[name] = json.loads(raw)
        except json.JSONDecodeError:
            params[name] = raw
    return params


def _latest_event_date(settings: Settings) -> date:
    from cja_audiences.lake.layout import Lake

    days = sorted(p.name.removeprefix("date=") for p in Lake(settings.home).events.glob("date=*"))
    return date.fromisoformat(days[-1]) if days else datetime.now(UTC).date()


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _check(spec: AudienceSpec, settings: Settings) -> list[str]:
    """Compile the filter (no data read; a segment id is not fetched) and apply the
    spec-level guardrails."""
    from cja_audiences import guardrails
    from cja_audiences.compute import AudienceError, render_audience

    problems = []
    if spec.filter.segment is None or spec.filter.segment.id is None:
        try:
            render_audience(spec, settings=settings)
        except AudienceError as exc:
            problems.append(str(exc))
    check_spec = getattr(guardrails, "check_spec", None)
    if check_spec is not None:
        report = check_spec(spec, settings)
        if report.blocked:
            problems.append(f"{spec.source_path}: guardrails: {report.message}")
    return problems


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    files: list[Path] = []
    for path in args.paths or [settings.audiences_dir]:
        files.extend(spec_paths(path) if path.is_dir() else [path])
    if not files:
        return _fail(
            ValueError(f"no audience specs found in {args.paths or settings.audiences_dir}")
        )
    failed = 0
    for path in files:
        try:
            spec = load_spec(path)
            problems = _check(spec, settings)
        except SpecError as exc:
            problems = [str(exc)]
        failed += bool(problems)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if not problems:
            print(f"ok     {path}")
    print(f"{len(files) - failed} valid, {failed} invalid")
    return 1 if failed else 0


def cmd_render(args: argparse.Namespace) -> int:
    from cja_audiences.compute import AudienceError, render_audience

    settings = _settings(args)
    try:
        spec = _spec(args, settings)
        rendered = render_audience(spec, settings=settings, params=_params(args.param))
    except (SpecError, AudienceError, ValueError, LookupError) as exc:
        return _fail(exc)
    if args.json:
        print(
            json.dumps(
                {"id": spec.id, "sql": rendered.sql, "params": rendered.params},
                indent=2,
                default=str,
            )
        )
    else:
        print(f"-- {spec.name} ({spec.id})\n-- bound parameters:")
        for name, value in rendered.params.items():
            print(f"--   ${name} = {value!r}")
        print(f"\n{rendered.sql};")
    return 0


def _run(args: argparse.Namespace, write: bool) -> int:
    from cja_audiences.compute import AudienceError, compute_audience, evaluate_audience
    from cja_audiences.lake.layout import Lake

    settings = _settings(args)
    try:
        spec = _spec(args, settings)
        as_of = args.as_of or _latest_event_date(settings)
        kwargs = {
            "settings": settings,
            "as_of": as_of,
            "lookback_days": args.lookback_days,
            "params": _params(args.param),
        }
        if write:
            run_id = args.run_id or "cli-" + datetime.now(UTC).strftime("%Y%m%dT%H%M%S")
            run_dir = Lake(settings.home).run_dir(spec.id, run_id)
            stats = compute_audience(spec, run_dir=run_dir, **kwargs)
        else:
            stats = evaluate_audience(spec, why_codes=False, **kwargs).stats
    except (SpecError, AudienceError, ValueError, LookupError, OSError) as exc:
        return _fail(exc)
    if args.json:
        print(json.dumps({"id": spec.id, **stats}, indent=2, default=str))
        return 0
    metrics = stats["preview_metrics"]
    lines = [
        f"{spec.name} ({spec.id}), window {stats['window']['start']} .. {stats['window']['end']}",
        f"  size:            {stats['size']:,} ({spec.identity.namespace})",
        f"  persons scanned: {metrics['persons_in_window']:,} in {stats['rows_scanned']:,} events",
        f"  member share:    {metrics['member_share_of_persons']:.1%} of persons, "
        f"{metrics['member_revenue_share']:.1%} of revenue ({metrics['member_revenue']:,.2f})",
        f"  no identity:     {metrics['missing_identity']:,} selected persons not published",
        f"  sample:          {', '.join(stats['sample_ids'][:5]) or '-'}",
        f"  elapsed:         {stats['elapsed_s']} s",
    ]
    if write:
        lines.append(f"  members:         {stats['members_path']}")
    print("\n".join(lines))
    return 0


def cmd_preview(args: argparse.Namespace) -> int:
    return _run(args, write=False)


def cmd_compute(args: argparse.Namespace) -> int:
    return _run(args, write=True)
