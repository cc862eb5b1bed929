"""Reading delivered text files in streaming batches, with each row's file and line.

Shared by the export and AEP sources: JSON lines are read as raw text lines (so a malformed
line is kept and quarantined, never fatal) and parsed set-wise in DuckDB.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import duckdb
import numpy as np
import pyarrow as pa
import pyarrow.csv as pcsv

BLOCK_SIZE = 8 << 20  # bytes of decompressed text per batch


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
