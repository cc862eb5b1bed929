"""AEP dataset exports of XDM ExperienceEvents (JSON lines, optionally gzip) as a source.

AEP dataset export (destinations / Data Access) writes one XDM ExperienceEvent per line:
``_id``, ``timestamp``, ``eventType``, ``identityMap`` ({namespace: [{id, primary}]}),
``web.webPageDetails`` (name, URL), ``commerce.order`` (purchaseID, priceTotal),
``productListItems`` ([{SKU, quantity, productCategories: [{categoryID}]}]),
``placeContext.geo`` (countryCode, stateProvince), ``marketing.trackingCode``,
``channel.typeAtSource`` (marketing channel), ``device.type``,
``environment.browserDetails.name``.

The person is the identity flagged ``primary``; without one, the first namespace of
``person_namespaces`` present. The other namespaces fill ``identities``. Every line is
parsed once, set-wise in DuckDB; a line that is not a JSON object is quarantined.
"""

from __future__ import annotations

import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa

from cja_audiences.extract.lines import JSON_OBJECT, numbered, read_lines
from cja_audiences.lake.storage import LakePath, local_copy

DEFAULT_PERSON_NAMESPACES = ("ECID", "CRMID", "Email")
# further dimension name -> JSON path inside the event
DEFAULT_DIMENSION_PATHS: dict[str, str] = {
    "referrer_url": "$.web.webReferrer.URL",
    "environment_type": "$.environment.type",
}
IDENTITY_MAP_TYPE = '"MAP(VARCHAR, STRUCT(id VARCHAR, \\"primary\\" BOOLEAN)[])"'

# schema field -> JSON path of a scalar, all read by one multi-path extraction per line
SCALAR_PATHS: dict[str, str] = {
    "event_id": "$._id",
    "timestamp": "$.timestamp",
    "event_type": "$.eventType",
    "page_name": "$.web.webPageDetails.name",
    "page_url": "$.web.webPageDetails.URL",
    "marketing_channel": "$.channel.typeAtSource",
    "campaign": "$.marketing.trackingCode",
    "revenue": "$.commerce.order.priceTotal",
    "order_id": "$.commerce.order.purchaseID",
    "country": "$.placeContext.geo.countryCode",
    "region": "$.placeContext.geo.stateProvince",
    "device_type": "$.device.type",
    "browser": "$.environment.browserDetails.name",
}

SELECT_SQL = """
    person.id AS person_id,
    person.ns AS person_namespace,
    map_from_entries(list_transform(
        list_filter(map_entries(ids), lambda e: e.key <> person.ns AND len(e.value) > 0),
        lambda e: (e.key, e.value[1].id))) AS identities,
    nullif(json_extract_string(j, '$.productListItems[*].SKU'), []::VARCHAR[]) AS product_skus,
    nullif(json_extract_string(j, '$.productListItems[*].productCategories[0].categoryID'),
           []::VARCHAR[]) AS product_categories,
    nullif(list_sum(TRY_CAST(json_extract(j, '$.productListItems[*].quantity') AS DOUBLE[])), 0)
        ::VARCHAR AS quantity,
    {dimensions} AS dimensions,
    line AS _raw,
    CASE WHEN j IS NULL THEN 'malformed JSON (not one XDM object per line)'
         WHEN ids IS NULL THEN 'identityMap: missing or not {namespace: [{id}]}' END AS _error
"""

# the person: primary identity first, then the namespaces in order of preference
INNER_SQL = f"""
SELECT *, json_extract_string(j, {{paths}}) AS v,
    list_sort(flatten(list_transform(map_entries(ids), lambda e: list_transform(e.value,
        lambda v: {{'rank': CASE WHEN v."primary" THEN 0
                                   ELSE coalesce(list_position($namespaces, e.key), 999) END,
                     'ns': e.key, 'id': v.id}}))))[1] AS person
FROM (
    SELECT *,
        try(json_transform(json_extract(j, '$.identityMap'), '{IDENTITY_MAP_TYPE}')) AS ids
    FROM (SELECT *, {JSON_OBJECT} AS j FROM batch))
"""


@dataclass
class AEPExportSource:
    """Candidate batches from XDM ExperienceEvent JSON-lines files (``.json`` / ``.json.gz``)."""

    files: Sequence[LakePath]
    person_namespaces: Sequence[str] = DEFAULT_PERSON_NAMESPACES
    dimension_paths: Mapping[str, str] = field(default_factory=lambda: DEFAULT_DIMENSION_PATHS)
    tenant_field: str | None = None  # e.g. "_acme": its scalar fields become dimensions
    name: str = "aep_export"
    _rows: dict[str, int] = field(default_factory=dict)

    def _select(self) -> str:
        entries = ", ".join(
            f"{{'k': '{name}', 'v': json_extract_string(j, '{path}')}}"
            for name, path in self.dimension_paths.items()
        )
        fixed = (
            f"list_filter([{entries}], lambda e: e.v IS NOT NULL)"
            if entries
            else "[]::STRUCT(k VARCHAR, v VARCHAR)[]"
        )
        tenant = (
            "coalesce(list_filter(map_entries(try(json_transform(json_extract(j, $tenant),"
            " '\"MAP(VARCHAR, VARCHAR)\"'))), lambda e: e.value IS NOT NULL"
            " AND NOT starts_with(e.value, '{') AND NOT starts_with(e.value, '[')), [])"
            if self.tenant_field
            else "[]"
        )
        dimensions = (
            f"map_from_entries(list_concat(list_transform({fixed}, lambda e: (e.k, e.v)),"
            f" list_transform({tenant}, lambda e: (e.key, e.value))))"
        )
        scalars = ", ".join(
            f"v[{i}] AS {name}"
            if name != "device_type"
            # XDM says mobile/desktop/tablet; the lake says Mobile/Desktop/Tablet
            else f"upper(left(v[{i}], 1)) || lower(substr(v[{i}], 2)) AS device_type"
            for i, name in enumerate(SCALAR_PATHS, start=1)
        )
        return scalars + "," + SELECT_SQL.replace("{dimensions}", dimensions)

    def batches(self) -> Iterator[pa.Table]:
        con = duckdb.connect()
        select = self._select()
        paths = "[" + ", ".join(f"'{p}'" for p in SCALAR_PATHS.values()) + "]"
        inner = INNER_SQL.replace("{paths}", paths)
        params: dict[str, Any] = {"namespaces": list(self.person_namespaces)}
        if self.tenant_field:
            params["tenant"] = f"$.{self.tenant_field}"
        try:
            for path in self.files:
                line, rows = 1, 0
                with local_copy(path) as local:  # object storage: read a local copy
                    for batch in read_lines(local):
                        yield numbered(
                            con,
                            batch,
                            select,
                            file=path.name,
                            first=line,
                            inner=inner,
                            params=params,
                        )
                        line += batch.num_rows
                        rows += batch.num_rows
                self._rows[path.name] = rows
        finally:
            con.close()

    def describe(self) -> dict[str, Any]:
        return {"files": [str(f) for f in self.files], "rows_per_file": dict(self._rows)}


def dataset_files(folder: LakePath) -> list[LakePath]:
    """The JSON-lines files of an AEP dataset export folder, in name order."""
    return sorted(
        p for p in folder.rglob("*") if p.is_file() and p.name.endswith((".json", ".json.gz"))
    )


# -- writing an export (demo data and tests) --------------------------------------------------

XDM_SQL = """
SELECT
    event_id AS _id,
    strftime("timestamp", '%Y-%m-%dT%H:%M:%S.%gZ') AS "timestamp",
    event_type AS eventType,
    map_concat(MAP {person_namespace: [{'id': person_id, 'primary': true}]},
               map_from_entries(list_transform(map_entries(coalesce(identities, MAP {})),
                   lambda e: (e.key, [{'id': e.value, 'primary': false}]))))
        AS identityMap,
    {'webPageDetails': {'name': page_name, 'URL': page_url}} AS web,
    CASE WHEN order_id IS NOT NULL OR revenue IS NOT NULL
         THEN {'order': {'purchaseID': order_id, 'priceTotal': revenue}} END AS commerce,
    list_transform(range(len(product_skus)), lambda i: {
        'SKU': product_skus[i + 1],
        'quantity': CASE WHEN quantity IS NOT NULL THEN 1 END,
        'productCategories': [{'categoryID': product_categories[i + 1]}]}) AS productListItems,
    {'geo': {'countryCode': country, 'stateProvince': region}} AS placeContext,
    {'trackingCode': campaign} AS marketing,
    {'typeAtSource': marketing_channel} AS channel,
    {'type': lower(device_type)} AS device,
    {'browserDetails': {'name': browser}} AS environment,
    dimensions AS {tenant}
FROM events
"""


def write_xdm_export(events: str | list[str], path: Path, *, tenant_field: str = "_demo") -> Path:
    """Write lake events (a Parquet glob or list) as one XDM ExperienceEvent JSON-lines file."""
    if not re.fullmatch(r"_[A-Za-z0-9_]+", tenant_field):
        raise ValueError(f"tenant_field {tenant_field!r}: XDM tenant fields look like _acme")
    path.parent.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.read_parquet(events, hive_partitioning=False).create_view("events")
        gzip = "gzip" if path.name.endswith(".gz") else "none"
        con.execute(
            f"COPY ({XDM_SQL.replace('{tenant}', tenant_field)}) TO $path"
            f" (FORMAT json, COMPRESSION {gzip})",
            {"path": str(path)},
        )
    finally:
        con.close()
    return path
