"""The DuckDB connection filter SQL runs on: it can read its inputs and nothing else.

Templates, computed fields and compiled segments are SQL written by audience authors, so
the connection they run on is locked down before any of it is seen:

- external access off, except the exact Parquet files of the query's own inputs
  (``allowed_paths``): no other lake file, no ``/etc``, no URL, no ``COPY ... TO`` a file,
  no ``ATTACH``, no ``INSTALL``/``LOAD`` (extension autoloading off), no persistent secrets;
- configuration locked (``lock_configuration``): SQL cannot lift any of it, nor raise the
  memory and thread limits set from settings, so one big audience cannot take the worker
  down — DuckDB spills to a private temporary folder, then fails cleanly;
- :func:`check_select` accepts exactly one SELECT statement, so ``;``-chained statements
  (``COPY``, ``ATTACH``, ``SET``, ``PRAGMA``, ``CREATE SECRET``) never run at all.

Templates stay expressive: any SELECT over the provided relations works.
"""

from __future__ import annotations

import json
import tempfile
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import duckdb

from cja_audiences.lake.storage import LakePath, connect


class UnsafeSQL(ValueError):
    """Filter SQL that is not one SELECT statement over the provided relations."""


@contextmanager
def sandboxed_connection(
    inputs: Sequence[LakePath],
    *,
    memory_limit: str = "2GB",
    threads: int = 2,
    lake: LakePath | None = None,
) -> Iterator[duckdb.DuckDBPyConnection]:
    """An in-memory connection that may read only ``inputs``, spilling to a private
    temporary folder; closed on exit."""
    with tempfile.TemporaryDirectory(prefix="cja-compute-") as spill:
        con = locked_connection(
            inputs, memory_limit=memory_limit, threads=threads, spill=spill, lake=lake
        )
        try:
            yield con
        finally:
            con.close()


def locked_connection(
    inputs: Sequence[LakePath | str],
    *,
    memory_limit: str,
    threads: int,
    spill: str | None = None,
    lake: LakePath | None = None,
) -> duckdb.DuckDBPyConnection:
    """The locked-down connection itself (the caller closes it). ``allowed_paths`` would let
    a COPY overwrite an input, so filter SQL must also pass :func:`check_select`. ``lake``
    registers an object-storage lake's filesystem (``storage.connect``) before the lock."""
    config: dict[str, Any] = {
        "threads": threads,
        "memory_limit": memory_limit,
        "autoload_known_extensions": False,
        "autoinstall_known_extensions": False,
        "allow_community_extensions": False,
    }
    if spill is not None:
        config["temp_directory"] = spill
    con = connect(*([lake] if lake is not None else []), config=config)
    con.execute("SET enable_progress_bar = false")
    con.execute("SET allowed_paths = $paths", {"paths": [str(p) for p in inputs]})
    con.execute("SET enable_external_access = false")
    con.execute("SET lock_configuration = true")
    return con


def check_select(con: duckdb.DuckDBPyConnection, sql: str, where: str) -> None:
    """Raise :class:`UnsafeSQL` (naming ``where``) unless ``sql`` is one SELECT statement."""
    try:
        statements = con.extract_statements(sql)
    except duckdb.Error as exc:
        raise UnsafeSQL(f"{where}: the SQL does not parse: {exc}") from None
    kinds = [s.type.name for s in statements]
    if kinds != ["SELECT"]:
        raise UnsafeSQL(
            f"{where}: filter SQL must be one SELECT statement over the provided relations "
            f"(found {', '.join(kinds) or 'nothing'}); statements such as COPY, ATTACH, SET "
            "or INSTALL are not allowed"
        )


def expression_problem(expr: str) -> str | None:
    """Why ``expr`` is not one scalar SQL expression over event columns, or None.

    Parsed by DuckDB itself (``json_serialize_sql``), so ``(VALUES ...)``, ``(TABLE 'f.csv')``,
    ``WITH ... TABLE``, ``PIVOT``, ``SUMMARIZE``, ``EXISTS (...)`` and ``;`` are all caught
    whatever their spelling: a subquery anywhere in the tree is refused.
    """
    with _parser() as con:
        row = con.execute("SELECT json_serialize_sql($sql)", {"sql": f"SELECT ({expr}) FROM ev"})
        tree = json.loads(row.fetchone()[0])
    if tree.get("error"):
        return f"not a SQL expression ({tree.get('error_message', 'does not parse')})"
    statements = tree.get("statements", [])
    if len(statements) != 1:
        return "one expression only (no ';')"
    node = statements[0]["node"]
    if (
        len(node.get("select_list", [])) != 1
        or node.get("from_table", {}).get("table_name") != "ev"
    ):
        return "one expression only (no ',' or ')' closing it early)"
    if any(part.get("class") == "SUBQUERY" for part in _nodes(node["select_list"])):
        return "no subqueries (SELECT, VALUES, TABLE, WITH, PIVOT, SUMMARIZE, EXISTS)"
    return None


@contextmanager
def _parser() -> Iterator[duckdb.DuckDBPyConnection]:
    """A connection that only parses: no file, no extension, nothing to lift."""
    con = duckdb.connect(config={"enable_external_access": False, "threads": 1})
    try:
        yield con
    finally:
        con.close()


def _nodes(value: Any) -> Iterator[dict[str, Any]]:
    if isinstance(value, dict):
        yield value
        for child in value.values():
            yield from _nodes(child)
    elif isinstance(value, list):
        for child in value:
            yield from _nodes(child)
