"""AEP Catalog: which batches landed in a dataset since a watermark (drives event refreshes)."""

from __future__ import annotations

from typing import Any

import requests

from cja_audiences.adobe_auth import AdobeConfig, get_token


def new_batches(
    config: AdobeConfig,
    dataset_id: str,
    created_after: int,
    session: requests.Session | None = None,
) -> list[dict[str, Any]]:
    """Successful batches of ``dataset_id`` created after ``created_after`` (epoch ms), oldest first.

    Catalog answers a map of batch id to batch; the id is folded into each batch here.
    """
    http = session or requests.Session()
    response = http.get(
        f"{config.base_url}/data/foundation/catalog/batches",
        params={
            "dataSet": dataset_id,
            "status": "success",
            "createdAfter": created_after,
            "orderBy": "asc:created",
            "limit": 100,
        },
        headers=config.platform_headers(get_token(config, http)),
        timeout=config.timeout,
    )
    response.raise_for_status()
    batches = [{"id": batch_id, **batch} for batch_id, batch in response.json().items()]
    return sorted(
        (b for b in batches if int(b.get("created", 0)) > created_after),
        key=lambda b: int(b["created"]),
    )
