"""Helpers for AEP publish tests: member files in MEMBER_SCHEMA, sorted by person_id."""

from __future__ import annotations

from pathlib import Path

import pyarrow as pa
import pytest

from cja_audiences.lake import write_parquet
from cja_audiences.schema import MEMBER_SCHEMA


def member_table(ids: list[int] | range, namespace: str = "ECID", prefix: str = "id") -> pa.Table:
    persons = sorted(f"p{i:09d}" for i in ids)
    return pa.table(
        {
            "person_id": persons,
            "namespace": [namespace] * len(persons),
            "identity": [f"{prefix}-{p}" for p in persons],
        },
        schema=MEMBER_SCHEMA,
    )


def write_members(path: Path, ids: list[int] | range, **kwargs) -> Path:
    return write_parquet(member_table(ids, **kwargs), path)


@pytest.fixture
def run_dir(tmp_path: Path) -> Path:
    path = tmp_path / "audiences" / "high_value" / "runs" / "r1"
    path.mkdir(parents=True)
    return path
