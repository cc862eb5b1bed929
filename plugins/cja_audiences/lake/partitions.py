"""The files of one events partition, on a local disk or on object storage.

Locally a partition is a folder of Parquet files, replaced whole by a directory swap
(``extract.publish``). Object storage has no rename, so there a partition is a set of
immutable generations plus a pointer written last:

    date=2026-11-20/_partition.json        {"generation": "<id>", "files": [...]}
    date=2026-11-20/gen=<id>/part-*.parquet

A new generation is uploaded in full first; then one PUT of the pointer switches readers
from the old file set to the new one (a single PUT is atomic: a reader sees either). The
previous generation is kept one more cycle for readers that listed it just before the
switch; older ones are deleted. A crash before the pointer moves leaves an unreferenced
generation that the next publish of the date deletes, and readers never see it.
"""

from __future__ import annotations

import json
import uuid
from datetime import UTC, datetime
from pathlib import Path

from cja_audiences.lake.storage import LakePath, atomic_path, remove_tree, upload_tree

POINTER = "_partition.json"
GENERATION_PREFIX = "gen="


def partition_files(partition: LakePath) -> list[LakePath]:
    """The live Parquet files of one partition, sorted; [] when it holds none."""
    pointer = partition / POINTER
    try:
        document = json.loads(pointer.read_text())
    except FileNotFoundError:
        return sorted(partition.glob("*.parquet")) if partition.is_dir() else []
    generation = partition / f"{GENERATION_PREFIX}{document['generation']}"
    return [generation / name for name in document["files"]]


def publish_generation(staged: Path, partition: LakePath) -> str:
    """Upload ``staged`` (a local partition folder) as a new generation, move the pointer to
    it, and drop generations older than the one it replaced; the new generation's id."""
    previous = _current_generation(partition)
    generation = f"{datetime.now(UTC):%Y%m%dT%H%M%S%f}-{uuid.uuid4().hex[:8]}"
    files = upload_tree(staged, partition / f"{GENERATION_PREFIX}{generation}")
    with atomic_path(partition / POINTER) as tmp:
        tmp.write_text(json.dumps({"generation": generation, "files": files}) + "\n")
    keep = {generation, previous}
    for folder in partition.iterdir() if partition.is_dir() else []:
        name = folder.name
        if name.startswith(GENERATION_PREFIX) and name.removeprefix(GENERATION_PREFIX) not in keep:
            remove_tree(folder)
    return generation


def _current_generation(partition: LakePath) -> str | None:
    try:
        return json.loads((partition / POINTER).read_text())["generation"]
    except FileNotFoundError:
        return None
