"""AEP Catalog: which batches landed in a dataset since a watermark (drives event refreshes)."""

from __future__ import annotations

from typing import Any

from cja_audiences.adobe.auth import AdobeConfig
from cja_audiences.adobe.http import PlatformClient, TokenProvider


def new_batches(config: AdobeConfig, dataset_id: str, created_after: int) -> list[dict[str, Any]]:
    """Successful batches of ``dataset_id`` created after ``created_after`` (epoch ms), oldest first.

    Catalog answers a map of batch id to batch; the id is folded into each batch here.
    """
    with PlatformClient(config, TokenProvider(config)) as client:
        body = client.request(
            "GET",
            "/data/foundation/catalog/batches",
            params={
                "dataSet": dataset_id,
                "status": "success",
                "createdAfter": created_after,
                "orderBy": "asc:created",
                "limit": 100,
            },
        )
    batches = [{**batch, "id": batch_id} for batch_id, batch in body.items()]
    return sorted(
        (b for b in batches if int(b.get("created", 0)) > created_after),
        key=lambda b: int(b["created"]),
    )
