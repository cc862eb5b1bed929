"""The one interface every source implements, and the loop that lands a source in the lake.

A source knows how to read its input and map it to candidate columns (see ``normalize``);
it never writes. ``run_extract`` owns checking, quarantine, the bad-row limit and the atomic
landing, so all sources behave the same.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Iterator
from typing import Any, Protocol

import pyarrow as pa

from cja_audiences.extract.normalize import DEFAULT_LIST_SEPARATOR, DEFAULT_NAMESPACE
from cja_audiences.extract.writer import Mode, PartitionWriter
from cja_audiences.lake.layout import Lake
from cja_audiences.lake.sessions import SessionRules
from cja_audiences.lake.storage import naming_full_disk


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
    sessions: SessionRules | None = None,
) -> dict[str, Any]:
    """Land everything ``source`` yields, or nothing (raises ``ExtractRejected``; a full
    disk raises ``DiskFull`` naming the file, or else the events folder)."""
    with (
        naming_full_disk(lake.events),
        PartitionWriter(
            lake,
            source=source.name,
            run_id=run_id,
            mode=mode,
            buckets=buckets,
            max_bad_row_share=max_bad_row_share,
            namespace=namespace,
            list_separator=list_separator,
            sessions=sessions,
        ) as writer,
    ):
        for batch in prefetched(source.batches()):
            writer.write(batch)
        summary = writer.commit()
    summary.update(source.describe())
    return summary


class _Failed:
    def __init__(self, error: BaseException) -> None:
        self.error = error


_DONE = object()


def prefetched(batches: Iterator[pa.Table], depth: int = 2) -> Iterator[pa.Table]:
    """Read the next batches in a background thread while the caller checks and stages this
    one: reading/mapping and checking/staging are each about half the work, and DuckDB and
    Arrow release the GIL, so the two cores both work. The reader stops when the caller
    does (an exception, a closed generator)."""
    buffer: queue.Queue[Any] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: Any) -> bool:
        while not stop.is_set():
            try:
                buffer.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for batch in batches:
                if not put(batch):
                    return
        except BaseException as error:  # handed to the consumer, raised there
            put(_Failed(error))
        finally:
            put(_DONE)

    reader = threading.Thread(target=produce, name="extract-reader", daemon=True)
    reader.start()
    try:
        while (item := buffer.get()) is not _DONE:
            if isinstance(item, _Failed):
                raise item.error
            yield item
    finally:
        stop.set()
        reader.join()
