"""The one interface every source implements, and the loop that lands a source in the lake.

A source knows how to read its input and map it to candidate columns (see ``normalize``);
it never writes. ``run_extract`` owns checking, quarantine, the bad-row limit and the atomic
landing, so all sources behave the same.
"""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any, Protocol

import pyarrow as pa

from cja_audiences.extract.normalize import DEFAULT_LIST_SEPARATOR, DEFAULT_NAMESPACE
from cja_audiences.extract.writer import Mode, PartitionWriter
from cja_audiences.lake import Lake


class Source(Protocol):
    """Streams candidate batches; never holds a whole dataset in memory."""

    name: str  # quarantine folder: quarantine/<name>/<run>/

    def batches(self) -> Iterator[pa.Table]:
        """Candidate batches (EVENT_SCHEMA names, loosely typed, plus ``_origin``...)."""
        ...

    def describe(self) -> dict[str, Any]:
        """What was read (files, pages, ...), merged into the extract summary."""
        ...


def run_extract(
    source: Source,
    lake: Lake,
    *,
    run_id: str,
    mode: Mode = "merge",
    buckets: int | None = None,
    max_bad_row_share: float = 0.01,
    namespace: str = DEFAULT_NAMESPACE,
    list_separator: str = DEFAULT_LIST_SEPARATOR,
) -> dict[str, Any]:
    """Land everything ``source`` yields, or nothing (raises ``ExtractRejected``)."""
    with PartitionWriter(
        lake,
        source=source.name,
        run_id=run_id,
        mode=mode,
        buckets=buckets,
        max_bad_row_share=max_bad_row_share,
        namespace=namespace,
        list_separator=list_separator,
    ) as writer:
        for batch in source.batches():
            writer.write(batch)
        summary = writer.commit()
    summary.update(source.describe())
    return summary
