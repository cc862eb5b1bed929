"""Deterministic chunks and the run's ledger of acknowledged chunks (crash-safe resume).

A chunk is a fixed number of consecutive rows of one sorted input file, so the same file
always yields the same chunks. When AEP has acknowledged every record of a chunk (or a record
was dead-lettered), the chunk's entry is written to ``run_dir/ledger/<chunk>.json`` by an
atomic rename, and only then does it count as sent. After a crash at any moment a rerun reads
the ledger and skips exactly the acknowledged chunks; anything in flight is sent again, which
is harmless because membership upserts are idempotent for the same lastQualificationTime.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any

import pyarrow as pa
import pyarrow.compute as pc

from cja_audiences.lake.layout import read_json, write_json
from cja_audiences.lake.runs import LEDGER_DIR
from cja_audiences.lake.storage import LakePath, parquet_file, parquet_rows

MANIFEST = "manifest.json"
LEDGER_VERSION = 1
COLUMNS = ("person_id", "namespace", "identity")
OPTIONAL_COLUMNS = ("split",)


@dataclass(frozen=True)
class Chunk:
    """Rows ``[index * size, index * size + len)`` of one input, all sent with one status."""

    kind: str
    index: int
    status: str
    table: pa.Table

    @property
    def id(self) -> str:
        return chunk_id(self.kind, self.index)

    def __len__(self) -> int:
        return self.table.num_rows


def chunk_id(kind: str, index: int) -> str:
    return f"{kind}-{index:06d}"


def iter_chunks(path: LakePath, kind: str, status: str, chunk_size: int) -> Iterator[Chunk]:
    """Stream ``path`` (MEMBER_SCHEMA, sorted by person_id) as fixed-size chunks.

    Reads record batches, so memory stays at about one chunk however large the file is.
    Raises ``ValueError`` naming the file when rows are not sorted by person_id, because
    unsorted input would make chunk boundaries depend on how the file was written.
    """
    parquet = parquet_file(path)
    pending: list[pa.RecordBatch] = []
    pending_rows = 0
    index = 0
    last_id: str | None = None
    # the split column (issue 19) says which AEP audience a row goes to, or that it is held out
    columns = [*COLUMNS, *(c for c in OPTIONAL_COLUMNS if c in parquet.schema_arrow.names)]
    for batch in parquet.iter_batches(batch_size=chunk_size, columns=columns):
        last_id = _check_sorted(batch.column(0), last_id, path)
        pending.append(batch)
        pending_rows += batch.num_rows
        while pending_rows >= chunk_size:
            table = pa.Table.from_batches(pending)
            yield Chunk(kind, index, status, table.slice(0, chunk_size))
            index += 1
            rest = table.slice(chunk_size)
            pending, pending_rows = rest.to_batches(), rest.num_rows
    if pending_rows:
        yield Chunk(kind, index, status, pa.Table.from_batches(pending))


def _check_sorted(ids: pa.Array, previous: str | None, path: LakePath) -> str | None:
    if len(ids) == 0:
        return previous
    ordered = (
        len(ids) < 2 or pc.all(pc.less_equal(ids.slice(0, len(ids) - 1), ids.slice(1))).as_py()
    )
    if not ordered or (previous is not None and ids[0].as_py() < previous):
        raise ValueError(
            f"{path}: rows are not sorted by person_id; chunks must be deterministic for "
            "resume, so rewrite the file sorted (the diff stage writes it sorted)"
        )
    return ids[-1].as_py()


def count_chunks(path: LakePath, chunk_size: int) -> tuple[int, int]:
    """(rows, chunks) of an input file, from its footer only."""
    rows = parquet_rows(path)
    return rows, -(-rows // chunk_size)


def fingerprint(path: LakePath) -> dict[str, Any]:
    """Identifies an input's exact content, so a ledger is never applied to another file."""
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while block := handle.read(1 << 20):
            digest.update(block)
    return {"rows": parquet_rows(path), "sha256": digest.hexdigest()}


class LedgerMismatch(RuntimeError):
    """The ledger was written for other inputs or another chunk size."""


class Ledger:
    """``run_dir/ledger/``: a manifest of inputs plus one file per acknowledged chunk."""

    def __init__(self, run_dir: LakePath) -> None:
        self.dir = run_dir / LEDGER_DIR
        self._acknowledged: set[str] = set()

    def open(self, chunk_size: int, inputs: dict[str, dict[str, Any]]) -> dict[str, Any]:
        """Check or start the manifest; returns it (with each input's qualification time).

        ``inputs`` maps kind -> {rows, sha256, qualification_time}. A kind seen before keeps
        its original qualification time so resent records are identical to the first send.
        """
        path = self.dir / MANIFEST
        manifest = read_json(path) or {
            "version": LEDGER_VERSION,
            "chunk_size": chunk_size,
            "inputs": {},
        }
        if manifest.get("chunk_size") != chunk_size:
            raise LedgerMismatch(
                f"{path}: written with chunk_size {manifest.get('chunk_size')}, now {chunk_size}; "
                "resume with the same chunk size or publish into a new run folder"
            )
        for kind, new in inputs.items():
            old = manifest["inputs"].get(kind)
            if old is None:
                manifest["inputs"][kind] = new
            elif (old["rows"], old["sha256"]) != (new["rows"], new["sha256"]):
                raise LedgerMismatch(
                    f"{path}: the {kind} input changed since chunks were acknowledged "
                    f"({old['rows']} rows then, {new['rows']} now); a run's files must not be "
                    "rewritten after publishing started: compute a new run instead"
                )
        write_json(manifest, path)
        self._acknowledged = {p.stem for p in self.dir.glob("*.json") if p.name != MANIFEST}
        return manifest

    def is_acknowledged(self, chunk: str) -> bool:
        return chunk in self._acknowledged

    def acknowledge(self, entry: dict[str, Any]) -> None:
        """Record a finished chunk, atomically; it counts as sent only after this returns."""
        write_json(entry, self.dir / f"{entry['chunk']}.json")
        self._acknowledged.add(entry["chunk"])

    def entries(self, kinds: set[str] | None = None) -> Iterator[dict[str, Any]]:
        for path in sorted(self.dir.glob("*.json")):
            if path.name == MANIFEST:
                continue
            entry = read_json(path)
            if kinds is None or entry["kind"] in kinds:
                yield entry
