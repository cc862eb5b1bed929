from __future__ import annotations

import random
from pathlib import Path

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cja_audiences import diff
from cja_audiences.diff import diff_members, key_ranges
from cja_audiences.lake.runs import read_run_record
from cja_audiences.lake.schema import MEMBER_SCHEMA
from tests.guardrails.helpers import ecid, read_members, write_members

A = ("p001", "ECID", ecid(1))
B = ("p002", "ECID", ecid(2))
C = ("p003", "ECID", ecid(3))
D = ("p004", "ECID", ecid(4))


def run(tmp_path: Path, name: str, members) -> Path:
    run_dir = tmp_path / "runs" / name
    write_members(run_dir / "members.parquet", members)
    return run_dir


def test_first_run_everybody_enters(tmp_path: Path) -> None:
    first = run(tmp_path, "r1", [B, A])
    counts = diff_members(first, None)
    assert read_members(first / "entered.parquet") == [A, B]
    assert read_members(first / "exited.parquet") == []
    assert pq.read_schema(first / "exited.parquet").names == diff.CHANGE_SCHEMA.names
    assert counts == read_run_record(first)["diff"]
    assert (counts["entered"], counts["exited"], counts["previous_run_id"]) == (2, 0, None)


def test_entered_and_exited_are_exact_sorted_and_keep_the_schema(tmp_path: Path) -> None:
    previous = run(tmp_path, "r1", [A, B, C])
    current = run(tmp_path, "r2", [D, B, A])
    counts = diff_members(current, previous)
    assert read_members(current / "entered.parquet") == [D]
    assert read_members(current / "exited.parquet") == [C]
    for name in ("entered.parquet", "exited.parquet"):
        assert pq.read_schema(current / name).names == diff.CHANGE_SCHEMA.names
    assert {k: counts[k] for k in ("entered", "exited", "unchanged", "size", "previous_size")} == {
        "entered": 1,
        "exited": 1,
        "unchanged": 2,
        "size": 3,
        "previous_size": 3,
    }
    assert counts["previous_run_id"] == "r1"


def test_a_changed_identity_exits_with_the_old_value_and_enters_with_the_new(
    tmp_path: Path,
) -> None:
    new_b = ("p002", "ECID", ecid(222))
    moved_c = ("p003", "Email", "c@example.com")
    previous = run(tmp_path, "r1", [A, B, C])
    current = run(tmp_path, "r2", [A, new_b, moved_c])
    diff_members(current, previous)
    assert read_members(current / "entered.parquet") == [new_b, moved_c]
    assert read_members(current / "exited.parquet") == [B, C]


def test_an_unchanged_audience_sends_nothing(tmp_path: Path) -> None:
    previous = run(tmp_path, "r1", [A, B])
    current = run(tmp_path, "r2", [A, B])
    assert diff_members(current, previous)["unchanged"] == 2
    assert read_members(current / "entered.parquet") == []


def write_in_row_groups(path: Path, members, rows_per_group: int) -> None:
    path.parent.mkdir(parents=True, exist_ok=True)
    table = pa.Table.from_pylist(
        [dict(zip(MEMBER_SCHEMA.names, m, strict=True)) for m in members], schema=MEMBER_SCHEMA
    )
    pq.write_table(table, path, row_group_size=rows_per_group)


def test_key_ranges_split_sorted_files_and_give_up_on_unsorted_ones(tmp_path: Path) -> None:
    members = [(f"p{i:04d}", "ECID", ecid(i)) for i in range(100)]
    write_in_row_groups(tmp_path / "sorted.parquet", members, 10)
    ranges = key_ranges([tmp_path / "sorted.parquet"], 30)
    assert ranges == [(None, "p0029"), ("p0029", "p0059"), ("p0059", "p0089"), ("p0089", None)]
    shuffled = members[:]
    random.Random(1).shuffle(shuffled)
    write_in_row_groups(tmp_path / "unsorted.parquet", shuffled, 10)
    assert key_ranges([tmp_path / "sorted.parquet", tmp_path / "unsorted.parquet"], 30) == [
        (None, None)
    ]


identities = st.sampled_from([ecid(1), ecid(2), "a@example.com"])
memberships = st.dictionaries(
    st.integers(0, 60).map(lambda i: f"p{i:03d}"),
    st.tuples(st.sampled_from(["ECID", "Email"]), identities),
    max_size=60,
)


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(previous=memberships, current=memberships, sort=st.booleans())
def test_diff_equals_set_difference_over_many_key_ranges(
    tmp_path_factory: pytest.TempPathFactory,
    monkeypatch: pytest.MonkeyPatch,
    previous,
    current,
    sort,
) -> None:
    """Many tiny ranges (sorted input) or one range (unsorted) give the same exact answer."""
    monkeypatch.setattr(diff, "RANGE_ROWS", 7)
    tmp = tmp_path_factory.mktemp("prop")
    old = [(p, ns, i) for p, (ns, i) in previous.items()]
    new = [(p, ns, i) for p, (ns, i) in current.items()]
    if not sort:
        random.Random(len(old)).shuffle(old)
    write_in_row_groups(
        tmp / "runs" / "old" / "members.parquet", old if not sort else sorted(old), 3
    )
    write_in_row_groups(tmp / "runs" / "new" / "members.parquet", sorted(new), 3)
    counts = diff_members(tmp / "runs" / "new", tmp / "runs" / "old")
    assert read_members(tmp / "runs" / "new" / "entered.parquet") == sorted(set(new) - set(old))
    assert read_members(tmp / "runs" / "new" / "exited.parquet") == sorted(set(old) - set(new))
    assert counts["unchanged"] == len(set(new) & set(old))
