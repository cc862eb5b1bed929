"""The sandboxed DuckDB connection: its inputs only, one SELECT, locked limits."""

from __future__ import annotations

import duckdb
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from cja_audiences.filters.sandbox import (
    UnsafeSQL,
    check_select,
    expression_problem,
    sandboxed_connection,
)


@pytest.fixture
def files(tmp_path):
    inside, outside = tmp_path / "in.parquet", tmp_path / "out.parquet"
    pq.write_table(pa.table({"person_id": ["a"]}), inside)
    pq.write_table(pa.table({"person_id": ["secret"]}), outside)
    return inside, outside


def test_reads_its_inputs_and_nothing_else(files, tmp_path):
    inside, outside = files
    with sandboxed_connection([inside], memory_limit="256MB", threads=1) as con:
        assert con.sql(f"SELECT * FROM read_parquet('{inside}')").fetchall() == [("a",)]
        for sql in (
            f"SELECT * FROM read_parquet('{outside}')",
            f"SELECT * FROM read_parquet('{tmp_path}/*.parquet')",
            f"COPY (SELECT 1) TO '{tmp_path}/x.csv'",
            f"ATTACH '{tmp_path}/x.duckdb'",
            "INSTALL httpfs",
        ):
            with pytest.raises(duckdb.Error):
                con.execute(sql)
        with pytest.raises(duckdb.Error, match="locked"):
            con.execute("SET memory_limit = '100GB'")
        assert con.execute("SELECT current_setting('threads')").fetchone()[0] == 1
    assert not (tmp_path / "x.csv").exists() and not (tmp_path / "x.duckdb").exists()


@pytest.mark.parametrize(
    "sql", ["SELECT 1; SELECT 2", "COPY t TO 'x'", "PRAGMA version", "SET threads = 1", ""]
)
def test_only_one_select_statement_passes(sql):
    con = duckdb.connect()
    with pytest.raises(UnsafeSQL, match="spec.yaml: filter"):
        check_select(con, sql, "spec.yaml: filter")
    check_select(con, "WITH x AS (SELECT 1) SELECT * FROM x", "spec.yaml: filter")


def test_expression_problems_name_what_is_wrong():
    assert expression_problem("coalesce(revenue, 0) * 2") is None
    assert "subqueries" in expression_problem("(SELECT 1)")
    assert "one expression" in expression_problem("1) AS a, (2")
    assert "not a SQL expression" in expression_problem("revenue +")
