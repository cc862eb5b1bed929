"""Keep ``lake/persons/persons.parquet`` in step with the events every extract lands.

Why: audiences publish an identity namespace (ECID, Email, CRMID) that may differ from the
namespace events are keyed by, so the persons table must know every person's identities. The
synthetic source writes a full persons table; the other sources only see identities on
events. After each landing, the persons seen in the touched partitions are merged in:
identities and country fill gaps, ``first_seen`` only moves earlier, and attributes already
there (loyalty tier, consent, ...) are never overwritten.
"""

from __future__ import annotations

import duckdb
import pyarrow as pa

from cja_audiences.lake.layout import Lake, write_parquet
from cja_audiences.lake.partitions import partition_files
from cja_audiences.lake.schema import IDENTITY_COLUMNS, PERSON_SCHEMA

PERSONS_FILE = "persons.parquet"


def _identity(namespace: str) -> str:
    """The person's id in ``namespace``: the event key when keyed by it, else identities."""
    return (
        f"coalesce(max(person_id) FILTER (WHERE person_namespace = '{namespace}'),"
        f" max(identities['{namespace}']))"
    )


SEEN_SQL = f"""
SELECT person_id,
    arg_min(person_namespace, "timestamp") AS person_namespace,
    {", ".join(f"{_identity(ns)} AS {column}" for ns, column in IDENTITY_COLUMNS.items())},
    arg_max(country, "timestamp") AS country,
    min("timestamp") AS first_seen
FROM read_parquet($files, union_by_name = true, hive_partitioning = false)
GROUP BY person_id
"""

MERGE_SQL = f"""
SELECT person_id,
    coalesce(o.person_namespace, n.person_namespace) AS person_namespace,
    {", ".join(f"coalesce(o.{c}, n.{c}) AS {c}" for c in IDENTITY_COLUMNS.values())},
    o.loyalty_tier, o.consent_email, o.consent_personalization,
    coalesce(o.country, n.country) AS country,
    least(o.first_seen, n.first_seen) AS first_seen,
    o.attributes
FROM read_parquet($persons) o FULL OUTER JOIN seen n USING (person_id)
ORDER BY person_id
"""


def update_persons(lake: Lake, dates: list[str], con: duckdb.DuckDBPyConnection) -> int:
    """Merge the persons of the given event partitions into the persons table; its size."""
    files = [str(f) for d in dates for f in partition_files(lake.event_partition(d))]
    if not files:
        return 0
    path = lake.persons / PERSONS_FILE
    con.execute(f"CREATE OR REPLACE TEMP TABLE seen AS {SEEN_SQL}", {"files": files})
    if path.exists():
        table = con.sql(MERGE_SQL, params={"persons": str(path)}).to_arrow_table()
    else:
        table = con.sql("SELECT * FROM seen ORDER BY person_id").to_arrow_table()
    con.execute("DROP TABLE seen")
    write_parquet(_conform(table), path)
    return table.num_rows


def _conform(table: pa.Table) -> pa.Table:
    columns = [
        table.column(f.name).cast(f.type)
        if f.name in table.column_names
        else pa.nulls(table.num_rows, f.type)
        for f in PERSON_SCHEMA
    ]
    return pa.Table.from_arrays(columns, schema=PERSON_SCHEMA)
