"""The lake's normalized schemas: every source maps into these, every audience reads them.

Events are hive-partitioned by UTC ``date`` (the partition column is not stored in the
files). Identity values are strings; namespaces use AEP identity namespace codes.
"""

from __future__ import annotations

import pyarrow as pa

TIMESTAMP = pa.timestamp("us", tz="UTC")

EVENT_SCHEMA = pa.schema(
    [
        pa.field("event_id", pa.string(), nullable=False),
        pa.field("timestamp", TIMESTAMP, nullable=False),
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("person_namespace", pa.string(), nullable=False),  # e.g. ECID, CRMID
        pa.field("identities", pa.map_(pa.string(), pa.string())),  # other namespace -> id
        pa.field("event_type", pa.string()),  # XDM eventType, e.g. commerce.purchases
        pa.field("page_name", pa.string()),
        pa.field("page_url", pa.string()),
        pa.field("marketing_channel", pa.string()),
        pa.field("campaign", pa.string()),  # tracking code
        pa.field("product_skus", pa.list_(pa.string())),
        pa.field("product_categories", pa.list_(pa.string())),
        pa.field("revenue", pa.float64()),
        pa.field("order_id", pa.string()),
        pa.field("quantity", pa.int32()),
        pa.field("country", pa.string()),  # ISO 3166-1 alpha-2
        pa.field("region", pa.string()),
        pa.field("device_type", pa.string()),  # Desktop, Mobile, Tablet
        pa.field("browser", pa.string()),
        pa.field("dimensions", pa.map_(pa.string(), pa.string())),  # further dimensions
        # written by the extract (lake.sessions): the session's first event time (with
        # person_id its key) and its number in the person's lake history (CJA Session Number)
        pa.field("session_start", TIMESTAMP),
        pa.field("session_number", pa.int32()),
    ]
)

# XDM event types the synthetic source and the filter library agree on.
EVENT_TYPES = (
    "web.webpagedetails.pageViews",
    "commerce.productViews",
    "commerce.productListAdds",
    "commerce.checkouts",
    "commerce.purchases",
)

PERSON_SCHEMA = pa.schema(
    [
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("person_namespace", pa.string(), nullable=False),
        pa.field("ecid", pa.string()),
        pa.field("email", pa.string()),
        pa.field("crm_id", pa.string()),
        pa.field("loyalty_tier", pa.string()),  # none, silver, gold, platinum
        pa.field("consent_email", pa.bool_()),
        pa.field("consent_personalization", pa.bool_()),
        pa.field("country", pa.string()),
        pa.field("first_seen", TIMESTAMP),
        pa.field("attributes", pa.map_(pa.string(), pa.string())),
    ]
)

# persons columns holding identity values, by AEP namespace code.
IDENTITY_COLUMNS = {"ECID": "ecid", "Email": "email", "CRMID": "crm_id"}

# One row per member: the person and the identity value published for them. Sorted by person_id.
MEMBER_SCHEMA = pa.schema(
    [
        pa.field("person_id", pa.string(), nullable=False),
        pa.field("namespace", pa.string(), nullable=False),
        pa.field("identity", pa.string(), nullable=False),
    ]
)
