"""Diagnosing unreadable delivery files: the line and what is wrong, or None when fine."""

from __future__ import annotations

import gzip
from pathlib import Path

import pyarrow as pa
import pytest

from cja_audiences.extract.lines import MAX_LINE_BYTES, diagnose, first_long_line

ROWS = b"".join(b"e%d,p%d,2026-11-27T10:00:00Z\n" % (i, i) for i in range(50_000))


def gz(path: Path, data: bytes) -> Path:
    path.write_bytes(gzip.compress(data, compresslevel=1))
    return path


def test_a_sound_file_has_nothing_to_diagnose(tmp_path):
    assert diagnose(gz(tmp_path / "a.csv.gz", b"Event ID,Person ID\n" + ROWS)) is None
    two_members = gzip.compress(b"x\n") + gzip.compress(ROWS)  # concatenated gzip is valid
    (tmp_path / "b.csv.gz").write_bytes(two_members)
    assert diagnose(tmp_path / "b.csv.gz") is None
    (tmp_path / "c.csv").write_bytes(ROWS)
    assert diagnose(tmp_path / "c.csv") is None


def test_a_truncated_gzip_names_the_line_and_the_bytes_read(tmp_path):
    path = gz(tmp_path / "t.csv.gz", ROWS)
    path.write_bytes(path.read_bytes()[:-8])  # only the trailer (CRC, size) is missing
    line, problem = diagnose(path)
    assert problem == f"gzip stream ends early after {len(ROWS):,} bytes (the file is truncated)"
    assert line == 50_001  # every line arrived; the stream just never ended
    path.write_bytes(path.read_bytes()[: len(path.read_bytes()) // 2])
    line, problem = diagnose(path)
    assert 1 < line < 50_000 and problem.startswith("gzip stream ends early after")


def test_corrupt_gzip_data_is_named(tmp_path):
    data = bytearray(gzip.compress(ROWS, compresslevel=1))
    data[len(data) // 2] ^= 0xFF
    (tmp_path / "x.csv.gz").write_bytes(bytes(data))
    _line, problem = diagnose(tmp_path / "x.csv.gz")
    assert problem.startswith("gzip data is corrupt after")


@pytest.mark.parametrize(
    ("data", "line", "where"),
    [
        (b"Page Name\ncaf\xe9\n", 2, "byte 0xe9 at column 4"),  # Latin-1 in a row
        (b"Caf\xe9\nx\n", 1, "byte 0xe9 at column 4"),  # in the header
        (ROWS + b"ok,\xff\n", 50_001, "byte 0xff at column 4"),  # past the first read
    ],
)
def test_bytes_that_are_not_utf8_name_line_and_column(tmp_path, data, line, where):
    assert diagnose(gz(tmp_path / "e.csv.gz", data)) == (
        line,
        f"not UTF-8: {where} (CJA exports are UTF-8: re-export the data, or convert the file)",
    )


def test_a_line_over_the_maximum_is_named(tmp_path):
    data = b"a\nb\n" + b"x" * (MAX_LINE_BYTES + 1) + b"\nc\n"
    assert diagnose(gz(tmp_path / "l.json.gz", data)) == (
        3,
        f"over the maximum line length of {MAX_LINE_BYTES:,} bytes",
    )
    assert diagnose(gz(tmp_path / "ok.json.gz", b"a\n" + b"x" * MAX_LINE_BYTES + b"\n")) is None


def test_first_long_line_sums_the_fields_of_a_row():
    short, long = "x" * 10, "x" * (MAX_LINE_BYTES // 2 + 1)
    lengths = [pa.array([len(short), len(long), None]), pa.array([len(short), len(long), 3])]
    assert first_long_line(lengths, first=7) == (8, 2 * len(long))
    assert first_long_line([pa.array([1, None])], first=1) is None
