"""Reading delivered text files in streaming batches, with each row's file and line.

Shared by the export and AEP sources: JSON lines are read as raw text lines (so a malformed
line is kept and quarantined, never fatal) and parsed set-wise in DuckDB.

A file that cannot be read at all (a gzip stream that ends early or is corrupt, bytes that
are not UTF-8, a line longer than ``MAX_LINE_BYTES``) makes the reader fail without saying
where; :func:`diagnose` then scans the file once to name the line and what is wrong.
"""

from __future__ import annotations

import codecs
import zlib
from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

BLOCK_SIZE = 8 << 20  # bytes of decompressed text per batch
# the longest line read: a longer one may not fit a block, so it is refused wherever it is
MAX_LINE_BYTES = BLOCK_SIZE
_SCAN_BYTES = 1 << 20  # compressed bytes per read while diagnosing (output bounded as well)


def compression(path: Path) -> str | None:
    return "gzip" if path.name.endswith(".gz") else None


def read_lines(path: Path) -> pcsv.CSVStreamingReader:
    """The file's lines as batches of one string column ``line`` (blank lines skipped)."""
    return pcsv.open_csv(
        pa.input_stream(str(path), compression=compression(path)),
        read_options=pcsv.ReadOptions(block_size=BLOCK_SIZE, column_names=["line"]),
        parse_options=pcsv.ParseOptions(delimiter="\x1f", quote_char=False, escape_char=False),
        convert_options=pcsv.ConvertOptions(column_types={"line": pa.string()}),
    )


# the line as JSON when it is one object (else NULL); the cast parses once, validating
JSON_OBJECT = "CASE WHEN starts_with(ltrim(line), '{') THEN try_cast(line AS JSON) END"


def numbered(
    con: duckdb.DuckDBPyConnection,
    batch: pa.RecordBatch,
    select: str,
    *,
    file: str,
    first: int,
    derived: str = "",
    inner: str | None = None,
    params: dict[str, Any] | None = None,
) -> pa.Table:
    """Run ``select`` over ``batch`` (as ``b``, plus ``derived`` columns), each row's
    ``file:line`` as ``_origin``. Line numbers are joined by position, not computed by a
    window, so they stay right however DuckDB parallelises the scan."""
    lines = pa.table({"_line": np.arange(first, first + batch.num_rows)})
    con.register("batch", batch)
    con.register("lines", lines)
    try:
        return con.sql(
            f"SELECT {select}, $file || ':' || _line::VARCHAR AS _origin"
            f" FROM ({inner or f'SELECT *{derived} FROM batch'}) b POSITIONAL JOIN lines",
            params={**(params or {}), "file": file},
        ).to_arrow_table()
    finally:
        con.unregister("batch")
        con.unregister("lines")


def first_long_line(lengths: list[pa.Array], first: int) -> tuple[int, int] | None:
    """(line, bytes) of the first row whose ``lengths`` (bytes per field) sum over
    ``MAX_LINE_BYTES``, rows numbered from ``first``; None when every row is short enough."""
    if not lengths or not len(lengths[0]):
        return None
    total = pc.fill_null(lengths[0].cast(pa.int64()), 0)
    for length in lengths[1:]:
        total = pc.add(total, pc.fill_null(length.cast(pa.int64()), 0))
    if pc.max(total).as_py() <= MAX_LINE_BYTES:
        return None
    index = pc.index(pc.greater(total, MAX_LINE_BYTES), True).as_py()
    return first + index, total[index].as_py()


def diagnose(path: Path) -> tuple[int, str] | None:
    """(line, problem) of the first thing that makes ``path`` unreadable, or None.

    Decompresses (when ``.gz``) and decodes the file as a stream: a gzip stream that ends
    early or does not check, bytes that are not UTF-8, a line over ``MAX_LINE_BYTES``.
    """
    unzip = zlib.decompressobj(wbits=31) if compression(path) else None
    decoder = codecs.getincrementaldecoder("utf-8")()
    line, length, size = 1, 0, 0  # the current line, its bytes so far, bytes decoded

    def check(data: bytes) -> tuple[int, str] | None:
        nonlocal line, length, size
        try:
            decoder.decode(data)
        except UnicodeDecodeError as exc:
            before = data[: max(exc.start, 0)]
            at = line + before.count(b"\n")
            column = len(before) - (before.rfind(b"\n") + 1) + (length if at == line else 0) + 1
            return at, (
                f"not UTF-8: byte 0x{data[exc.start]:02x} at column {column} "
                "(CJA exports are UTF-8: re-export the data, or convert the file)"
            )
        pieces = data.split(b"\n")
        for i, piece in enumerate(pieces):
            length += len(piece)
            if length > MAX_LINE_BYTES:
                return line, f"over the maximum line length of {MAX_LINE_BYTES:,} bytes"
            if i < len(pieces) - 1:
                line, length = line + 1, 0
        size += len(data)
        return None

    with path.open("rb") as handle:
        while chunk := handle.read(_SCAN_BYTES):
            while chunk:
                if unzip is None:
                    data, chunk = chunk, b""
                else:
                    try:
                        data = unzip.decompress(chunk, _SCAN_BYTES)
                    except zlib.error as exc:
                        return line, f"gzip data is corrupt after {size:,} bytes ({exc})"
                    chunk = unzip.unconsumed_tail
                    if unzip.eof and unzip.unused_data:  # one more gzip member follows
                        chunk = unzip.unused_data + chunk
                        unzip = zlib.decompressobj(wbits=31)
                if problem := check(data):
                    return problem
    try:
        decoder.decode(b"", final=True)
    except UnicodeDecodeError:
        return line, "not UTF-8: the file ends inside a multi-byte character"
    if unzip is not None and not unzip.eof:
        return line, f"gzip stream ends early after {size:,} bytes (the file is truncated)"
    return None
