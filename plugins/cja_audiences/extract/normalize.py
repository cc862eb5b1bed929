"""Turn a source's candidate rows into EVENT_SCHEMA rows, or into quarantine rows with a reason.

Why one shared step: every source has the same failure modes (no person id, a timestamp that
does not parse, a number that is not a number, a row that is not even a row), and the lake
must treat them the same way whatever the source. The check runs set-wise in DuckDB over each
Arrow batch, so it costs about as much as reading the data.

A *candidate batch* is an Arrow table whose columns are any subset of EVENT_SCHEMA's names,
scalars as strings (or already typed), ``product_skus``/``product_categories`` as lists of
strings (or one delimited string), ``identities``/``dimensions`` as string maps; plus
``_origin`` (where the row came from, e.g. ``file.csv.gz:123``), optionally ``_raw`` (the row
as delivered, kept for quarantine) and ``_error`` (a source-level reason, e.g. bad JSON).
Reasons read ``<field>: <problem> (<offending value>)``; the part before `` (`` is the kind
the summaries count.
"""

from __future__ import annotations

from dataclasses import dataclass

import duckdb
import pyarrow as pa
import pyarrow.compute as pc

from cja_audiences.lake.schema import EVENT_SCHEMA

DEFAULT_NAMESPACE = "ECID"
DEFAULT_LIST_SEPARATOR = ","
# Plausible event times: CJA data is younger than this, and clocks run at most a day ahead.
EARLIEST = "1990-01-01"
FUTURE_DAYS = 1

QUARANTINE_SCHEMA = pa.schema(
    [
        pa.field("reason", pa.string(), nullable=False),
        pa.field("origin", pa.string()),
        pa.field("raw", pa.string()),
    ]
)

_LIST_COLUMNS = ("product_skus", "product_categories")
_MAP_COLUMNS = ("identities", "dimensions")
_STRING_COLUMNS = tuple(
    f.name
    for f in EVENT_SCHEMA
    if pa.types.is_string(f.type) and f.name not in ("event_id", "person_id", "person_namespace")
)


@dataclass(frozen=True)
class Normalized:
    """One batch after checking: rows for the lake (with their UTC ``date``) and rejects."""

    good: pa.Table  # EVENT_SCHEMA + "date" (string YYYY-MM-DD)
    bad: pa.Table  # QUARANTINE_SCHEMA


def _text(column: str) -> str:
    return f"nullif(trim(\"{column}\"::VARCHAR), '')"


def _list_expr(column: str, arrow_type: pa.DataType | None) -> str:
    if arrow_type is None:
        return "NULL::VARCHAR[]"
    if pa.types.is_string(arrow_type) or pa.types.is_large_string(arrow_type):
        # one delimited string, e.g. "SKU-1,SKU-2"
        return (
            f"list_filter(list_transform(string_split({_text(column)}, $sep), "
            "lambda s: trim(s)), lambda s: s <> '')"
        )
    return f'"{column}"::VARCHAR[]'


def _sql(present: dict[str, pa.DataType]) -> str:
    """The checking query for a batch with the columns ``present`` (name -> Arrow type)."""

    def col(name: str) -> str:
        return _text(name) if name in present else "NULL::VARCHAR"

    raw = (
        '"_raw"::VARCHAR'
        if "_raw" in present
        else "to_json(struct_pack("
        + ", ".join(f'"{n}" := "{n}"' for n in present if not n.startswith("_"))
        + "))"
    )
    ts = col("timestamp")
    timestamp = (
        f"coalesce(TRY_CAST({ts} AS TIMESTAMPTZ),"
        f" CASE WHEN regexp_full_match({ts}, '[0-9]{{9,10}}') THEN to_timestamp({ts}::BIGINT)"
        f" WHEN regexp_full_match({ts}, '[0-9]{{12,13}}')"
        f" THEN to_timestamp({ts}::BIGINT / 1000.0) END)"
    )
    number_checks = {
        "revenue": f"TRY_CAST({col('revenue')} AS DOUBLE)",
        "quantity": f"TRY_CAST(TRY_CAST({col('quantity')} AS DOUBLE) AS INTEGER)",
    }
    reasons = [
        "CASE WHEN _person IS NULL THEN 'person_id: missing' END",
        f"CASE WHEN {ts} IS NULL THEN 'timestamp: missing'"
        f" WHEN _ts IS NULL THEN 'timestamp: cannot parse (' || left({ts}, 60) || ')'"
        # year 1 or 99999 parse, then break every date partition after them
        f" WHEN _ts < TIMESTAMPTZ '{EARLIEST}' OR _ts > now() + INTERVAL {FUTURE_DAYS} DAY"
        f" THEN 'timestamp: outside {EARLIEST} .. {FUTURE_DAYS} day(s) from now ('"
        f" || left({ts}, 60) || ')' END",
        *(
            f"CASE WHEN {col(name)} IS NOT NULL AND _{name} IS NULL"
            f" THEN '{name}: not a number (' || left({col(name)}, 60) || ')' END"
            for name in number_checks
        ),
    ]

    maps = {
        name: (f'"{name}"::MAP(VARCHAR, VARCHAR)' if name in present else "NULL")
        for name in _MAP_COLUMNS
    }
    strings = ",\n".join(f"{col(name)} AS {name}" for name in _STRING_COLUMNS)
    return f"""
    WITH checked AS (
        SELECT *,
            {col("person_id")} AS _person,
            {timestamp} AS _ts,
            {number_checks["revenue"]} AS _revenue,
            {number_checks["quantity"]} AS _quantity,
            {raw} AS _row_text,
            {col("_origin") if "_origin" in present else "NULL"} AS _where
        FROM candidate
    ), reasoned AS (
        -- a source-level error (e.g. not JSON) explains every other failure of its row
        SELECT *, coalesce({'"_error"' if "_error" in present else "NULL"},
                           nullif(concat_ws('; ', {", ".join(reasons)}), '')) AS _reason
        FROM checked
    )
    SELECT
        coalesce({col("event_id")}, 'md5-' || md5(_row_text)) AS event_id,
        _ts AS "timestamp",
        _person AS person_id,
        coalesce({col("person_namespace")}, $namespace) AS person_namespace,
        {maps["identities"]} AS identities,
        {strings},
        {_list_expr("product_skus", present.get("product_skus"))} AS product_skus,
        {_list_expr("product_categories", present.get("product_categories"))}
            AS product_categories,
        _revenue AS revenue,
        _quantity AS quantity,
        {maps["dimensions"]} AS dimensions,
        strftime(_ts, '%Y-%m-%d') AS date,
        _reason, _where, _row_text
    FROM reasoned
    """


def normalize(
    candidate: pa.Table | pa.RecordBatch,
    *,
    con: duckdb.DuckDBPyConnection,
    namespace: str = DEFAULT_NAMESPACE,
    list_separator: str = DEFAULT_LIST_SEPARATOR,
) -> Normalized:
    """Check one candidate batch; ``con`` is reused across batches (UTC session)."""
    if isinstance(candidate, pa.RecordBatch):
        candidate = pa.Table.from_batches([candidate])
    present = {f.name: f.type for f in candidate.schema}
    con.register("candidate", candidate)
    try:
        params = {"namespace": namespace}
        if any(
            pa.types.is_string(present.get(c, pa.null())) or pa.types.is_large_string(present[c])
            for c in _LIST_COLUMNS
            if c in present
        ):
            params["sep"] = list_separator
        checked = con.sql(_sql(present), params=params).to_arrow_table()
    finally:
        con.unregister("candidate")
    reason = checked.column("_reason")
    bad = checked.filter(pc.is_valid(reason))
    good = checked.filter(pc.is_null(reason))
    return Normalized(
        good=conform(good, extra=("date",)),
        bad=pa.table(
            {
                "reason": bad.column("_reason"),
                "origin": bad.column("_where").cast(pa.string()),
                "raw": bad.column("_row_text"),
            },
            schema=QUARANTINE_SCHEMA,
        ),
    )


def conform(table: pa.Table, *, extra: tuple[str, ...] = ()) -> pa.Table:
    """``table`` with exactly EVENT_SCHEMA's columns (missing ones null) plus ``extra``.

    Old partitions written before a column was added to the schema still load this way.
    """
    columns, fields = [], []
    for field in EVENT_SCHEMA:
        if field.name in table.column_names:
            columns.append(table.column(field.name).cast(field.type))
        else:
            columns.append(pa.nulls(table.num_rows, field.type))
        fields.append(field)
    for name in extra:
        columns.append(table.column(name))
        fields.append(pa.field(name, table.schema.field(name).type))
    return pa.Table.from_arrays(columns, schema=pa.schema(fields))
