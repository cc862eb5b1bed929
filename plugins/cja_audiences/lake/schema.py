"""The lake's normalized schemas: every source maps into these, every audience reads them.

Events are hive-partitioned by UTC ``date`` (the partition column is not stored in the
files). Identity values are strings; namespaces use AEP identity namespace codes.

The columns are declared here as plain names and type names, so spec loading and DAG parsing
(which only need the column names) never import PyArrow; the Arrow schemas
(``EVENT_SCHEMA``, ``PERSON_SCHEMA``, ``MEMBER_SCHEMA``, ``TIMESTAMP``) are built from the same
declarations on first use.
"""

from __future__ import annotations

from functools import cache
from typing import Any

# name -> type: string, timestamp (us, UTC), float64, int32, bool, list (of strings), map
# (string -> string). A "!" suffix marks a column that is never null.
EVENT_COLUMNS = {
    "event_id": "string!",
    "timestamp": "timestamp!",
    "person_id": "string!",
    "person_namespace": "string!",  # e.g. ECID, CRMID
    "identities": "map",  # other namespace -> id
    "event_type": "string",  # XDM eventType, e.g. commerce.purchases
    "page_name": "string",
    "page_url": "string",
    "marketing_channel": "string",
    "campaign": "string",  # tracking code
    "product_skus": "list",
    "product_categories": "list",
    "revenue": "float64",
    "order_id": "string",
    "quantity": "int32",
    "country": "string",  # ISO 3166-1 alpha-2
    "region": "string",
    "device_type": "string",  # Desktop, Mobile, Tablet
    "browser": "string",
    "dimensions": "map",  # further dimensions
    # written by the extract (lake.sessions): the session's first event time (with person_id
    # its key) and its number in the person's lake history (CJA Session Number)
    "session_start": "timestamp",
    "session_number": "int32",
}

PERSON_COLUMNS = {
    "person_id": "string!",
    "person_namespace": "string!",
    "ecid": "string",
    "email": "string",
    "crm_id": "string",
    "loyalty_tier": "string",  # none, silver, gold, platinum
    "consent_email": "bool",
    "consent_personalization": "bool",
    "country": "string",
    "first_seen": "timestamp",
    "attributes": "map",
}

# One row per member: the person and the identity value published for them. Sorted by person_id.
MEMBER_COLUMNS = {"person_id": "string!", "namespace": "string!", "identity": "string!"}

# members.parquet: the member key, then why (bit i: top-level filter branch i held, legend in
# run.json compute.why) and split (the arm of a split test or holdout; null without arms).
MEMBER_FILE_COLUMNS = {**MEMBER_COLUMNS, "why": "int64", "split": "string"}

# XDM event types the synthetic source and the filter library agree on.
EVENT_TYPES = (
    "web.webpagedetails.pageViews",
    "commerce.productViews",
    "commerce.productListAdds",
    "commerce.checkouts",
    "commerce.purchases",
)

# persons columns holding identity values, by AEP namespace code.
IDENTITY_COLUMNS = {"ECID": "ecid", "Email": "email", "CRMID": "crm_id"}

_SCHEMAS = {
    "EVENT_SCHEMA": EVENT_COLUMNS,
    "PERSON_SCHEMA": PERSON_COLUMNS,
    "MEMBER_SCHEMA": MEMBER_COLUMNS,
    "MEMBER_FILE_SCHEMA": MEMBER_FILE_COLUMNS,
}


def type_name(declared: str) -> str:
    """The type of a declared column without its not-null mark."""
    return declared.removesuffix("!")


@cache
def _arrow(name: str) -> Any:
    import pyarrow as pa

    types = {
        "string": pa.string(),
        "timestamp": pa.timestamp("us", tz="UTC"),
        "float64": pa.float64(),
        "int32": pa.int32(),
        "int64": pa.int64(),
        "bool": pa.bool_(),
        "list": pa.list_(pa.string()),
        "map": pa.map_(pa.string(), pa.string()),
    }
    if name == "TIMESTAMP":
        return types["timestamp"]
    return pa.schema(
        [
            pa.field(column, types[type_name(declared)], nullable=not declared.endswith("!"))
            for column, declared in _SCHEMAS[name].items()
        ]
    )


def __getattr__(name: str) -> Any:
    if name in _SCHEMAS or name == "TIMESTAMP":
        return _arrow(name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
