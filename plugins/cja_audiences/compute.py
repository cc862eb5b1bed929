"""Compute an audience: its filter compiled to DuckDB SQL, run in process over the lake.

Each call opens a fresh in-memory DuckDB connection over the window's event partitions
(only the dates of the lookback window or the one-time range are read) and the persons
table. Members are the persons the filter selects that have a value in the spec's identity
namespace; the rest are counted, not published.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass, replace
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, NamedTuple

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cja_audiences import splits, why
from cja_audiences.buckets import bucket_filter
from cja_audiences.filters.compiler import CompiledQuery, CompileError, QueryBuilder
from cja_audiences.filters.fields import quote
from cja_audiences.filters.ir import Node
from cja_audiences.filters.rules import parse_rules
from cja_audiences.filters.sandbox import UnsafeSQL, check_select, sandboxed_connection
from cja_audiences.filters.segment import (
    DataViewMapping,
    Resolver,
    SegmentError,
    fetch_definition,
    read_definition,
    read_segment,
)
from cja_audiences.lake.layout import Lake, write_parquet
from cja_audiences.lake.partitions import partition_files
from cja_audiences.lake.runs import MEMBERS, update_run_record
from cja_audiences.lake.schema import EVENT_SCHEMA, MEMBER_FILE_SCHEMA, PERSON_SCHEMA
from cja_audiences.lake.sessions import SessionRules, sessionized
from cja_audiences.lake.storage import LakePath, lake_path
from cja_audiences.settings import Settings
from cja_audiences.specs.model import AudienceSpec

SAMPLE_SIZE = 20


class AudienceError(ValueError):
    """An audience that cannot be computed as specified; names the spec and the cause."""


@dataclass(frozen=True)
class Window:
    start: date
    end: date  # inclusive

    def days(self) -> list[date]:
        return [self.start + timedelta(days=i) for i in range((self.end - self.start).days + 1)]

    def bounds(self) -> tuple[datetime, datetime]:
        """[start, end) as UTC timestamps, for filters that look at time within the window."""
        start = datetime.combine(self.start, datetime.min.time(), tzinfo=UTC)
        end = datetime.combine(self.end + timedelta(days=1), datetime.min.time(), tzinfo=UTC)
        return start, end

    def as_dict(self) -> dict[str, str]:
        return {"start": self.start.isoformat(), "end": self.end.isoformat()}


def audience_window(spec: AudienceSpec, as_of: date, lookback_days: int | None = None) -> Window:
    """The one-time date range, or ``lookback_days`` days ending with ``as_of``."""
    if spec.refresh.frequency == "one_time" and lookback_days is None:
        assert spec.refresh.date_range is not None
        return Window(spec.refresh.date_range.start, spec.refresh.date_range.end)
    days = lookback_days or spec.refresh.lookback_days
    if days is None or not 1 <= days <= 90:
        raise AudienceError(f"{spec.id}: lookback_days must be 1-90 (got {days})")
    return Window(as_of - timedelta(days=days - 1), as_of)


def filter_params(spec: AudienceSpec, overrides: dict[str, Any] | None) -> dict[str, Any]:
    """The spec's filter params with a run's overrides; a run cannot invent new params."""
    params = dict(spec.filter.params)
    for name, value in (overrides or {}).items():
        if name not in params:
            raise AudienceError(
                f"{spec.id}: run param {name!r} is not a filter param of this audience; "
                f"allowed: {', '.join(sorted(params)) or 'none'}"
            )
        if not _is_param_value(value):
            raise AudienceError(f"{spec.id}: run param {name!r} must be a literal or a list")
        params[name] = _like(params[name], value, f"{spec.id}: run param {name!r}")
    return params


def _like(default: Any, value: Any, where: str) -> Any:
    """``value`` in the type of the spec's default: forms send numbers as text, and a bound
    VARCHAR never compares with a number."""
    if (
        isinstance(default, bool)
        or not isinstance(default, int | float)
        or not isinstance(value, str)
    ):
        return value
    try:
        number = float(value)
    except ValueError:
        raise AudienceError(
            f"{where}: expected a number like {default!r} (got {value!r})"
        ) from None
    return int(number) if isinstance(default, int) and number.is_integer() else number


def _is_param_value(value: Any) -> bool:
    scalar = (str, int, float, bool)
    return isinstance(value, scalar) or (
        isinstance(value, list) and all(isinstance(v, scalar) for v in value)
    )


def _fetch(spec: AudienceSpec, settings: Settings, segment_id: str, what: str) -> dict[str, Any]:
    from cja_audiences.adobe.auth import AdobeConfig

    try:
        config = AdobeConfig.from_env(settings.cja_conn_id)
    except LookupError as exc:
        raise AudienceError(f"{spec.id}: {what} needs the CJA connection: {exc}") from None
    return fetch_definition(config, segment_id)


def segments_dir(settings: Settings) -> Path:
    return settings.audiences_dir.parent / "segments"


def segment_resolver(spec: AudienceSpec, settings: Settings) -> Resolver:
    """Looks up a ``segment-ref``: ``include/segments/<id>.json``, else a JSON file there
    whose segment object has that ``id``, else the CJA Segments API (``cja_default``)."""
    folder = segments_dir(settings)
    index: dict[str, Path] | None = None

    def by_id() -> dict[str, Path]:
        found: dict[str, Path] = {}
        for path in sorted(folder.glob("*.json")):
            try:
                saved = json.loads(path.read_text())
            except (OSError, json.JSONDecodeError):
                continue
            if isinstance(saved, dict) and isinstance(saved.get("id"), str):
                found.setdefault(saved["id"], path)
        return found

    def resolve(segment_id: str) -> dict[str, Any]:
        nonlocal index
        path = folder / f"{segment_id}.json"
        if not path.is_file():
            index = by_id() if index is None else index
            path = index.get(segment_id, path)
        if path.is_file():
            return read_definition(path)
        try:
            return _fetch(spec, settings, segment_id, f"segment-ref {segment_id!r}")
        except (AudienceError, SegmentError) as exc:
            raise AudienceError(
                f"{spec.id}: segment-ref {segment_id!r} is not in {folder} (as {segment_id}.json "
                f'or a file with "id": "{segment_id}") and the CJA Segments API did not '
                f"give it: {exc}"
            ) from None

    return resolve


def segment_definition(spec: AudienceSpec, settings: Settings) -> dict[str, Any]:
    """The CJA definition of a segment filter: from its JSON file or the CJA API."""
    ref = spec.filter.segment
    assert ref is not None
    if ref.id is not None:
        return _fetch(spec, settings, ref.id, "filter.segment.id")
    assert ref.path is not None
    candidates = [Path(ref.path)]
    if spec.source_path is not None:
        candidates.append(spec.source_path.parent / ref.path)
    candidates.append(segments_dir(settings) / ref.path)
    for path in candidates:
        if path.is_file():
            return read_definition(path)
    raise AudienceError(
        f"{spec.id}: segment file {ref.path!r} not found (looked in "
        f"{', '.join(str(p.parent) for p in candidates[1:])})"
    )


class RenderedAudience(NamedTuple):
    """The members query exactly as compute runs it, its bound parameters and the saved
    segments its CJA segment references."""

    sql: str
    params: dict[str, Any]
    references: tuple[str, ...] = ()


def render_audience(
    spec: AudienceSpec,
    *,
    settings: Settings,
    as_of: date | None = None,
    lookback_days: int | None = None,
    params: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
    why_codes: bool = True,
    sessions_in_lake: bool | None = None,
) -> RenderedAudience:
    """The SQL and bound parameters compute runs for ``spec``. The window (``as_of``,
    ``lookback_days``) selects which partitions are read, and whether their session columns
    can be used (else the query sessionizes), so it is accepted to render exactly what a run
    would."""
    window = audience_window(spec, as_of, lookback_days) if as_of is not None else None
    in_lake = sessions_in_lake
    if in_lake is None:
        in_lake = window is None or lake_sessions(settings, window)
    query = compile_audience(
        spec,
        settings=settings,
        params=params,
        definition=definition,
        window=window,
        why_codes=why_codes,
        sessions_in_lake=in_lake,
    )
    _, split_params = splits.split_sql(spec, "c.person_id")
    return RenderedAudience(
        _members_sql(query, spec), {**query.params, **split_params}, query.references
    )


def compile_audience(
    spec: AudienceSpec,
    *,
    settings: Settings,
    params: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
    window: Window | None = None,
    why_codes: bool = True,
    sessions_in_lake: bool = True,
) -> CompiledQuery:
    """The audience's filter as SQL selecting candidate person ids and their why code (see
    :mod:`cja_audiences.why`), with bound parameters.

    An ``any`` filter is compiled branch by branch: a person is a candidate when some branch
    selects them (the outermost container's existential distributes over OR), and which
    branches did is their code, from the same query. Members of ``all`` and one-branch
    filters hold every branch, so their code is a constant. ``why_codes=False``: one tree, a NULL code.
    ``sessions_in_lake``: read sessions from the lake instead of computing them.
    """
    builder = QueryBuilder(
        params=filter_params(spec, params),
        computed_fields=spec.computed_fields,
        filters_dir=settings.filters_dir,
        window=window.bounds() if window else None,
        session_rules=SessionRules.from_settings(settings),
        sessions_in_lake=sessions_in_lake,
    )
    try:
        tree, references = _parsed_filter(spec, settings, definition)
        found = why.branches(tree, builder.binder.params, spec.filter.template)
        if tree is None:
            assert spec.filter.template is not None
            body = builder.template(spec.filter.template)
        elif found.member_code is None and why_codes:
            branches = [builder.tree(b.node) for b in found.items if b.node is not None]
            body = " UNION ".join(f"SELECT person_id FROM {name}" for name in branches)
            code = " + ".join(
                f"CASE WHEN person_id IN (SELECT person_id FROM {name}) THEN {1 << i} ELSE 0 END"
                for i, name in enumerate(branches)
            )
            query = builder.build(body, select=f"SELECT person_id, {code} AS why FROM candidates")
            return replace(query, references=references)
        else:
            body = f"SELECT person_id FROM {builder.tree(tree)}"
        code = found.member_code if why_codes and found.member_code is not None else "NULL"
        query = builder.build(
            body, select=f"SELECT person_id, {code}::BIGINT AS why FROM candidates"
        )
        return replace(query, references=references)
    except CompileError as exc:
        raise AudienceError(f"{spec.source_path or spec.id}: filter: {exc}") from None


def filter_tree(
    spec: AudienceSpec, settings: Settings, definition: dict[str, Any] | None = None
) -> Node | None:
    """The filter as a tree (None for a template, which is SQL of its own)."""
    return _parsed_filter(spec, settings, definition)[0]


def _parsed_filter(
    spec: AudienceSpec, settings: Settings, definition: dict[str, Any] | None = None
) -> tuple[Node | None, tuple[str, ...]]:
    """The filter's tree and the saved segments its CJA segment references."""
    f = spec.filter
    try:
        if f.rules is not None:
            return parse_rules(f.rules), ()
        if f.segment is not None:
            definition = definition or segment_definition(spec, settings)
            parsed = read_segment(
                definition, DataViewMapping(f.segment.mapping), segment_resolver(spec, settings)
            )
            return parsed.tree, parsed.references
    except SegmentError as exc:
        raise AudienceError(f"{spec.source_path or spec.id}: filter: {exc}") from None
    return None, ()


@dataclass
class Evaluation:
    members: pa.Table
    stats: dict[str, Any]


def evaluate_audience(
    spec: AudienceSpec,
    *,
    settings: Settings,
    as_of: date,
    lookback_days: int | None = None,
    params: dict[str, Any] | None = None,
    preview: bool = True,
    definition: dict[str, Any] | None = None,
    why_codes: bool = True,
    bucket: tuple[int, int] | None = None,
) -> Evaluation:
    """Members (MEMBER_FILE_SCHEMA, sorted by person_id) and the stats of one computation;
    ``preview=False`` skips the preview figures (another pass over the window's events);
    ``definition`` is a segment definition the caller already fetched; ``why_codes=False``
    leaves ``why`` null (nothing is written, so nobody reads it: previews, tests); ``bucket``
    (b, N) keeps only the persons of one bucket (``buckets``)."""
    started = time.perf_counter()
    window = audience_window(spec, as_of, lookback_days)
    lake = Lake(settings.home)
    events, persons = _event_files(lake, window), sorted(lake.persons.glob("*.parquet"))
    in_lake = sessionized(events, SessionRules.from_settings(settings))
    if definition is None and spec.filter.segment is not None:
        definition = segment_definition(spec, settings)
    rendered = render_audience(
        spec,
        settings=settings,
        as_of=as_of,
        lookback_days=lookback_days,
        params=params,
        definition=definition,
        why_codes=why_codes,
        sessions_in_lake=in_lake,
    )
    only = bucket_filter(*bucket) if bucket else None
    with sandboxed_connection(
        [*events, *persons],
        memory_limit=settings.compute_memory_limit,
        threads=settings.compute_threads,
        lake=lake.root,
    ) as con:
        _register(con, "raw_events", events, EVENT_SCHEMA, only)
        _register(con, "raw_persons", persons, PERSON_SCHEMA, only)
        table = _run_filter(con, rendered, spec)
        has_identity = pc.fill_null(pc.not_equal(table["identity"], ""), False)
        chosen = table.filter(has_identity)
        found = why.branches(
            filter_tree(spec, settings, definition),
            filter_params(spec, params),
            spec.filter.template,
        )
        members = pa.table(
            {
                "person_id": chosen["person_id"],
                "namespace": pa.array([spec.identity.namespace] * chosen.num_rows, pa.string()),
                "identity": chosen["identity"],
                "why": pc.cast(chosen["why"], pa.int64()),
                "split": chosen["split"],
            },
            schema=MEMBER_FILE_SCHEMA,
        )
        missing = table.num_rows - members.num_rows
        stats = _stats(con, members, missing) if preview else {"missing_identity": missing}
    stats.update(
        why=found.legend(),
        filter_params=filter_params(spec, params),
        splits=_arm_sizes(spec, members),
        split_targets=splits.arm_targets(spec) if splits.has_arms(spec) else {},
        size=members.num_rows,
        size_by_namespace={spec.identity.namespace: members.num_rows},
        window=window.as_dict(),
        filter=spec.filter.kind,
        sessions_in_lake=in_lake,
        segment_refs=list(rendered.references),
        sql=rendered.sql,
        params=_jsonable(rendered.params),
        elapsed_s=round(time.perf_counter() - started, 3),
    )
    if spec.filter.segment is not None:
        stats["definition"] = definition  # explain re-evaluates this run with it
    return Evaluation(members, stats)


def _run_filter(
    con: duckdb.DuckDBPyConnection, rendered: RenderedAudience, spec: AudienceSpec
) -> pa.Table:
    """The members query on the sandboxed connection; file access outside the query's
    inputs and anything but one SELECT become an error naming the spec."""
    where = f"{spec.source_path or spec.id}: filter"
    try:
        check_select(con, rendered.sql, where)
        return con.sql(rendered.sql, params=rendered.params).to_arrow_table()
    except UnsafeSQL as exc:
        raise AudienceError(str(exc)) from None
    except duckdb.PermissionException as exc:
        raise AudienceError(
            f"{where} reaches outside its inputs (the window's events and the persons table "
            f"are the only files it may read, and it may write none): {exc}"
        ) from None


def _arm_sizes(spec: AudienceSpec, members: pa.Table) -> dict[str, int]:
    """Members per arm (the holdout included; the audience's id for members in no arm)."""
    if not splits.has_arms(spec):
        return {}
    counts = {c["values"]: c["counts"] for c in pc.value_counts(members["split"]).to_pylist()}
    names: list[str | None] = [arm.name for arm in splits.arms(spec)]
    if not spec.splits:
        names.append(None)
    return {name or spec.id: counts.get(name, 0) for name in names}


def compute_audience(
    spec: AudienceSpec,
    *,
    settings: Settings,
    run_dir: LakePath,
    as_of: date,
    lookback_days: int | None = None,
    params: dict[str, Any] | None = None,
    definition: dict[str, Any] | None = None,
    bucket: tuple[int, int] | None = None,
) -> dict[str, Any]:
    """Write ``run_dir/members.parquet`` atomically; record and return the stats."""
    run_dir = lake_path(run_dir)
    started = time.perf_counter()
    result = evaluate_audience(
        spec,
        settings=settings,
        as_of=as_of,
        lookback_days=lookback_days,
        params=params,
        definition=definition,
        bucket=bucket,
        preview=bucket is None,  # preview figures are for the whole audience
    )
    path = write_parquet(result.members, run_dir / MEMBERS)
    stats = {
        **result.stats,
        "members_path": str(path),
        "elapsed_s": round(time.perf_counter() - started, 3),
    }
    update_run_record(run_dir, compute=stats)
    return stats


def lake_sessions(settings: Settings, window: Window) -> bool:
    """Do the window's partitions carry sessions built with the configured rules?"""
    return sessionized(
        _event_files(Lake(settings.home), window), SessionRules.from_settings(settings)
    )


def _event_files(lake: Lake, window: Window) -> list[LakePath]:
    """Parquet files of the window's partitions only (hive partition pruning by path)."""
    files: list[LakePath] = []
    for day in window.days():
        files.extend(partition_files(lake.event_partition(day.isoformat())))
    return files


def _register(
    con: duckdb.DuckDBPyConnection,
    name: str,
    files: list[LakePath],
    schema: pa.Schema,
    where: str | None = None,
) -> None:
    if files:
        relation = con.read_parquet([str(f) for f in files], union_by_name=True)
    else:
        relation = con.from_arrow(schema.empty_table())
    (relation.filter(where) if where else relation).create_view(name)


def _members_sql(query: CompiledQuery, spec: AudienceSpec) -> str:
    column = f"pr.{quote(spec.identity.column)}"
    identity = f"sha256(lower(trim({column})))" if spec.identity.hash_email else column
    split, _ = splits.split_sql(spec, "c.person_id")
    return (
        f"SELECT c.person_id, {identity} AS identity, c.why, {split} AS split\n"
        f"FROM (\n{query.sql}\n) AS c LEFT JOIN raw_persons AS pr USING (person_id)\n"
        "ORDER BY c.person_id"
    )


def _stats(con: duckdb.DuckDBPyConnection, members: pa.Table, missing: int) -> dict[str, Any]:
    """Preview figures: what share of the window's persons and revenue the members hold."""
    member_ids = members.select(["person_id"])
    con.register("member_ids", member_ids)
    row = con.execute(
        """
        SELECT count(*), count(DISTINCT e.person_id), coalesce(sum(e.revenue), 0),
               count(m.person_id), coalesce(sum(e.revenue) FILTER (WHERE m.person_id IS NOT NULL), 0)
          FROM raw_events AS e LEFT JOIN member_ids AS m USING (person_id)
        """
    ).fetchone()
    rows, persons, revenue, member_events, member_revenue = row or (0, 0, 0, 0, 0)
    sample = [
        r[0]
        for r in con.execute(
            "SELECT person_id FROM member_ids ORDER BY hash(person_id), person_id LIMIT $n",
            {"n": SAMPLE_SIZE},
        ).fetchall()
    ]
    return {
        "rows_scanned": rows,
        "sample_ids": sample,
        "preview_metrics": {
            "persons_in_window": persons,
            "member_share_of_persons": round(members.num_rows / persons, 4) if persons else 0.0,
            "missing_identity": missing,
            "member_events": member_events,
            "member_revenue": round(float(member_revenue), 2),
            "total_revenue": round(float(revenue), 2),
            "member_revenue_share": round(float(member_revenue) / float(revenue), 4)
            if revenue
            else 0.0,
        },
    }


def _jsonable(params: dict[str, Any]) -> dict[str, Any]:
    return {
        k: v if isinstance(v, str | int | float | bool | list) else str(v)
        for k, v in params.items()
    }
