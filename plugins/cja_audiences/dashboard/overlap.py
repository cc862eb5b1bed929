"""Pairwise overlap of committed audiences, computed from their snapshots in DuckDB.

Persons are matched by ``person_id`` (the lake's person), so audiences published under
different identity namespaces still overlap where they hold the same people.
"""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import duckdb

from cja_audiences.dashboard.runs import current_run_id
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.runs import MEMBERS, RUNS

SAMPLE = 10


@dataclass(frozen=True)
class OverlapMatrix:
    ids: list[str]
    sizes: dict[str, int]
    both: dict[tuple[str, str], int]  # (a, b) with a <= b

    def count(self, a: str, b: str) -> int:
        return self.both.get((min(a, b), max(a, b)), 0)

    def share(self, a: str, b: str) -> float:
        """Share of ``a``'s members who are also in ``b``."""
        size = self.sizes.get(a, 0)
        return self.count(a, b) / size if size else 0.0


def committed_members(lake: Lake, audience_ids: list[str]) -> dict[str, Path]:
    """The committed snapshot's members file of every audience that has one."""
    files = {}
    for audience_id in audience_ids:
        audience_dir = lake.audience_dir(audience_id)
        run_id = current_run_id(audience_dir)
        path = audience_dir / RUNS / run_id / MEMBERS if run_id else None
        if path is not None and path.exists():
            files[audience_id] = path
    return files


def _members_view(con: duckdb.DuckDBPyConnection, files: dict[str, Path]) -> None:
    ids = list(files)
    con.execute(
        "CREATE TEMP TABLE names AS SELECT unnest($paths) AS filename, unnest($ids) AS audience",
        {"paths": [str(files[i]) for i in ids], "ids": ids},
    )
    con.execute(
        "CREATE TEMP TABLE m AS SELECT DISTINCT n.audience, p.person_id "
        "FROM read_parquet($paths, filename = true) AS p JOIN names AS n USING (filename)",
        {"paths": [str(files[i]) for i in ids]},
    )


def overlap_matrix(lake: Lake, audience_ids: list[str]) -> OverlapMatrix:
    files = committed_members(lake, audience_ids)
    ids = sorted(files)
    if not ids:
        return OverlapMatrix([], {}, {})
    with duckdb.connect() as con:
        _members_view(con, files)
        rows = con.execute(
            "SELECT x.audience, y.audience, count(*) FROM m AS x JOIN m AS y "
            "USING (person_id) WHERE x.audience <= y.audience GROUP BY ALL"
        ).fetchall()
    both = {(a, b): int(n) for a, b, n in rows}
    sizes = {a: both.get((a, a), 0) for a in ids}
    return OverlapMatrix(ids, sizes, both)


@dataclass(frozen=True)
class OverlapPair:
    a: str
    b: str
    only_a: int
    only_b: int
    both: int
    sample: list[str]  # person ids in both (masked by the caller unless revealed)


def overlap_pair(lake: Lake, a: str, b: str) -> OverlapPair:
    files = committed_members(lake, [a, b])
    if a not in files or b not in files:
        missing = [x for x in (a, b) if x not in files]
        raise LookupError(f"no committed snapshot for {', '.join(missing)}")
    with duckdb.connect() as con:
        _members_view(con, files)
        only_a, only_b, both = con.execute(
            "SELECT count(*) FILTER (WHERE has_a AND NOT has_b), "
            "count(*) FILTER (WHERE has_b AND NOT has_a), count(*) FILTER (WHERE has_a AND has_b) "
            "FROM (SELECT person_id, bool_or(audience = $a) AS has_a, bool_or(audience = $b) AS has_b "
            "FROM m GROUP BY person_id)",
            {"a": a, "b": b},
        ).fetchone()
        sample = [
            r[0]
            for r in con.execute(
                "SELECT person_id FROM m WHERE audience = $a INTERSECT "
                "SELECT person_id FROM m WHERE audience = $b ORDER BY 1 LIMIT $n",
                {"a": a, "b": b, "n": SAMPLE},
            ).fetchall()
        ]
    return OverlapPair(a, b, int(only_a), int(only_b), int(both), sample)
