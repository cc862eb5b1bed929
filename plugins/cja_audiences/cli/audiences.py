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


FILL_THE_LAKE = (
    "fill it with `make demo` (then `source dev/env.sh` points CJA_AUDIENCES_HOME at the demo "
    "lake), a cja_extract run, or `python -m cja_audiences.extract.synthetic --home DIR`"
)


class LakeMissing(LookupError):
    """The lake holds no events where CJA_AUDIENCES_HOME points; says how to fill it."""


def _event_dates(settings: Settings) -> list[date]:
    """The dates the lake holds events for, oldest first; reads only, creates nothing."""
    from cja_audiences.lake.layout import Lake
    from cja_audiences.lake.partitions import partition_files

    events = Lake(settings.home).events
    dates = sorted(
        date.fromisoformat(p.name.removeprefix("date="))
        for p in events.glob("date=*")
        if partition_files(p)
    )
    if not dates:
        state = "holds no event partitions" if events.is_dir() else "does not exist"
        raise LakeMissing(
            f"the lake {events} {state} (CJA_AUDIENCES_HOME={settings.home}); {FILL_THE_LAKE}"
        )
    return dates


def _check_window(spec: AudienceSpec, settings: Settings, args: argparse.Namespace) -> date:
    """The run's ``as_of`` (default: the lake's latest date), once the window holds events."""
    from cja_audiences.compute import audience_window

    held = _event_dates(settings)
    as_of = args.as_of or held[-1]
    window = audience_window(spec, as_of, args.lookback_days)
    if not set(window.days()) & set(held):
        raise LakeMissing(
            f"{spec.id}: the window {window.start} .. {window.end} holds no events; the lake "
            f"under CJA_AUDIENCES_HOME={settings.home} holds {held[0]} .. {held[-1]} "
            "(omit --as-of for its latest date)"
        )
    return as_of


def _fail(exc: Exception) -> int:
    print(f"error: {exc}", file=sys.stderr)
    return 1


def _segment_definition(spec: AudienceSpec, settings: Settings) -> dict[str, Any] | None:
    """A segment given by id, fetched as compute fetches it; None for every other filter.

    Raises LookupError when the CJA connection is not configured (the filter cannot be
    compiled here), SegmentError when CJA refuses or does not know the segment."""
    ref = spec.filter.segment
    if ref is None or ref.id is None:
        return None
    from cja_audiences.adobe.auth import AdobeConfig
    from cja_audiences.filters.segment import fetch_definition

    return fetch_definition(AdobeConfig.from_env(settings.cja_conn_id), ref.id)


def _check(spec: AudienceSpec, settings: Settings, report: Any) -> tuple[list[str], str | None]:
    """(problems, what could not be checked): the filter compiled as compute compiles it, and
    ``report``, the spec-level guardrails exactly as DAG parsing applies them."""
    from cja_audiences.compute import AudienceError, render_audience
    from cja_audiences.filters.segment import SegmentError

    problems, unchecked = [], None
    try:
        definition = _segment_definition(spec, settings)
        render_audience(spec, settings=settings, definition=definition)
    except LookupError as exc:
        unchecked = (
            f"{spec.source_path}: filter not compiled: segment {spec.filter.segment.id} is "
            f"fetched from the CJA Segments API and {exc}"
        )
    except (AudienceError, SegmentError) as exc:
        problems.append(str(exc))
    if report.blocked:
        problems.append(f"{spec.source_path}: guardrails: {report.message}")
    return problems, unchecked


def _reports(specs: list[AudienceSpec], settings: Settings) -> dict[Path, Any]:
    """Each spec's spec-level guardrails, counted among the specs of its own folder (the
    refreshing and streaming audience counts), as DAG parsing counts the deployed folder."""
    from cja_audiences.guardrails import check_specs, spec_folder_with

    reports: dict[Path, Any] = {}
    for folder in {s.source_path.parent for s in specs}:
        given = [s for s in specs if s.source_path.parent == folder]
        by_id = check_specs(spec_folder_with(folder, given), settings)
        reports |= {s.source_path: by_id[s.id] for s in given}
    return reports


def cmd_validate(args: argparse.Namespace) -> int:
    settings = _settings(args)
    files: list[Path] = []
    for path in args.paths or [settings.audiences_dir]:
        files.extend(spec_paths(path) if path.is_dir() else [path])
    if not files:
        return _fail(
            ValueError(f"no audience specs found in {args.paths or settings.audiences_dir}")
        )
    loaded: dict[Path, AudienceSpec | SpecError] = {}
    for path in files:
        try:
            loaded[path] = load_spec(path)
        except SpecError as exc:
            loaded[path] = exc
    reports = _reports([s for s in loaded.values() if isinstance(s, AudienceSpec)], settings)
    failed = unchecked = 0
    for path, spec in loaded.items():
        if isinstance(spec, SpecError):
            problems, skipped = [str(spec)], None
        else:
            problems, skipped = _check(spec, settings, reports[spec.source_path])
        failed += bool(problems)
        for problem in problems:
            print(f"error: {problem}", file=sys.stderr)
        if skipped and not problems:
            unchecked += 1
            print(f"warning: {skipped}", file=sys.stderr)
            print(f"ok*    {path} (filter not compiled)")
        elif not problems:
            print(f"ok     {path}")
    summary = f"{len(files) - failed} valid, {failed} invalid"
    if unchecked:
        summary += f" ({unchecked} valid but not compiled: see the warnings)"
    print(summary)
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
        as_of = _check_window(spec, settings, args)
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
