"""CJA full-table export deliveries in the landing folder (CSV or JSON lines, gzip).

Adobe names the files ``cja-export-{reportInstanceId}-{idx}.csv.gz`` / ``.json.gz`` and can
add a manifest, itself a ``.json.gz`` with the same naming, that lists every delivered file
with its MD5 (Adobe does not document its exact layout; we read a JSON object with a
``files`` list whose entries carry a name and an MD5, under the usual key spellings).

A *delivery* is the set of files of one report instance. It is complete when its manifest is
there and every file it lists is present with a matching MD5; partial deliveries are refused
(the files may still be uploading). Complete deliveries get a stable id (report instance +
manifest digest), so a landing-zone trigger can remember which ones it has seen.

A file that cannot be read (a gzip stream that ends early, bytes that are not UTF-8, a line
over ``lines.MAX_LINE_BYTES`` = 8 MiB) raises :class:`DeliveryUnreadable` naming the file and
line; the extract task then sets the delivery aside in ``landing/rejected/``.

Columns map to the normalized schema through a configurable mapping (schema field -> export
column label, matched case-insensitively; a column named like the schema field also matches).
Columns the mapping does not name land in the ``dimensions`` map, so a new column in the
export never changes the lake's file schema.
"""

from __future__ import annotations

import csv
import gzip
import hashlib
import json
import logging
import re
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import duckdb
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from cja_audiences.extract.lines import (
    BLOCK_SIZE,
    JSON_OBJECT,
    MAX_LINE_BYTES,
    diagnose,
    first_long_line,
    numbered,
    read_lines,
)
from cja_audiences.lake.storage import LakePath, lake_path, local_copy

log = logging.getLogger(__name__)
EXPORT_FILE = re.compile(r"^cja-export-(?P<instance>.+)-(?P<idx>\d+)\.(?P<fmt>csv|json)\.gz$")
UPLOAD_SETTLE_S = 900  # a file whose MD5 is still wrong after this long is corrupt, not uploading
MANIFEST_FILE_KEYS = ("files", "deliveredFiles", "fileList")
MANIFEST_NAME_KEYS = ("name", "fileName", "file", "path")
MANIFEST_MD5_KEYS = ("md5", "md5Checksum", "checksum", "MD5")

# what reading a broken file raises (then :func:`lines.diagnose` says where and why)
READ_ERRORS = (OSError, EOFError, ValueError, csv.Error)  # ValueError: Arrow, Unicode

# Schema field -> the column label a CJA data view typically exports it under.
DEFAULT_COLUMN_MAPPING: dict[str, str] = {
    "event_id": "Event ID",
    "timestamp": "Timestamp",
    "person_id": "Person ID",
    "person_namespace": "Person ID Namespace",
    "event_type": "Event Type",
    "page_name": "Page Name",
    "page_url": "Page URL",
    "marketing_channel": "Marketing Channel",
    "campaign": "Tracking Code",
    "product_skus": "Products",
    "product_categories": "Product Categories",
    "revenue": "Revenue",
    "order_id": "Purchase ID",
    "quantity": "Units",
    "country": "Countries",
    "region": "Regions",
    "device_type": "Device Type",
    "browser": "Browser",
}
# AEP identity namespace -> column label; present columns fill the ``identities`` map.
DEFAULT_IDENTITY_COLUMNS: dict[str, str] = {"CRMID": "CRM ID", "Email": "Email"}


class DeliveryError(RuntimeError):
    """A delivery is partial or corrupt; the message names the file and what is wrong."""


class DeliveryRejected(DeliveryError):
    """A delivery that waiting cannot complete (its manifest names paths): surfaced, not
    waited for."""


class DeliveryUnreadable(DeliveryRejected):
    """A file of the delivery cannot be read (truncated or corrupt gzip, not UTF-8, a line
    over the maximum length): re-delivering is the only fix."""

    def __init__(self, file: str, line: int, problem: str) -> None:
        self.file, self.line, self.problem = file, line, problem
        super().__init__(f"{file}, line {line:,}: {problem}; the delivery cannot be landed")

    def at(self, file: str) -> DeliveryUnreadable:
        """The same failure named by the delivery's own path (not a local copy's)."""
        return DeliveryUnreadable(file, self.line, self.problem)


@dataclass(frozen=True)
class Delivery:
    """One complete (or, without a manifest, assumed complete) export delivery."""

    id: str
    report_instance_id: str
    files: tuple[LakePath, ...]
    manifest: LakePath | None = None

    def as_dict(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "report_instance_id": self.report_instance_id,
            "files": [str(f) for f in self.files],
            "manifest": str(self.manifest) if self.manifest else None,
        }


# -- finding deliveries ---------------------------------------------------------------------

_md5_cache: dict[tuple[str, int, float], str] = {}


def file_md5(path: LakePath) -> str:
    """MD5 hex digest, cached per (path, size, mtime): pollers re-check the same files."""
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _md5_cache:
        digest = hashlib.md5(usedforsecurity=False)
        with path.open("rb") as handle:
            while chunk := handle.read(1 << 20):
                digest.update(chunk)
        _md5_cache[key] = digest.hexdigest()
    return _md5_cache[key]


_manifest_cache: dict[tuple[str, int, float], list[tuple[str, str]] | None] = {}


def read_manifest(path: LakePath) -> list[tuple[str, str]] | None:
    """(file name, md5) pairs if ``path`` is a manifest, else None (it is a data file).

    Cached per (path, size, mtime): a landing watcher asks about the same files every poll.
    """
    stat = path.stat()
    key = (str(path), stat.st_size, stat.st_mtime)
    if key not in _manifest_cache:
        _manifest_cache[key] = _parse_manifest(path)
    return _manifest_cache[key]


def _parse_manifest(path: LakePath) -> list[tuple[str, str]] | None:
    try:
        with path.open("rb") as raw, gzip.open(raw, "rt", encoding="utf-8") as handle:
            head = handle.read(1 << 20)
        document = json.loads(head)
    except (OSError, EOFError, ValueError):
        return None
    if not isinstance(document, dict):
        return None
    entries = next((document[k] for k in MANIFEST_FILE_KEYS if k in document), None)
    if not isinstance(entries, list):
        return None
    listed = []
    for entry in entries:
        name = _first(entry, MANIFEST_NAME_KEYS) if isinstance(entry, dict) else entry
        md5 = _first(entry, MANIFEST_MD5_KEYS) if isinstance(entry, dict) else None
        if not isinstance(name, str):
            raise DeliveryError(f"{path.name}: manifest entry without a file name: {entry!r}")
        if not EXPORT_FILE.match(Path(name).name) or "/" in name or "\\" in name:
            raise DeliveryRejected(
                f"{path}: the manifest lists {name!r}, which is not a file of this landing "
                "folder (a path, or not a cja-export-*.csv.gz/.json.gz name); the delivery is "
                "refused: ask for it to be re-delivered"
            )
        listed.append((name, (md5 or "").lower()))
    return listed


def _first(entry: dict[str, Any], keys: tuple[str, ...]) -> Any:
    return next((entry[k] for k in keys if k in entry), None)


def _group(landing_dir: LakePath) -> dict[str, list[LakePath]]:
    groups: dict[str, list[LakePath]] = {}
    if not landing_dir.is_dir():
        return groups
    for path in sorted(landing_dir.iterdir()):
        match = EXPORT_FILE.match(path.name)
        if match and path.is_file():
            groups.setdefault(match["instance"], []).append(path)
    return groups


def _idx(path: LakePath) -> int:
    match = EXPORT_FILE.match(path.name)
    return int(match["idx"]) if match else -1


def check_delivery(
    instance: str, paths: list[LakePath], *, require_manifest: bool = True
) -> Delivery:
    """The delivery of ``instance`` if complete; else :class:`DeliveryError` saying why."""
    manifests = [
        (p, listed)
        for p in paths
        if p.name.endswith(".json.gz")
        if (listed := read_manifest(p)) is not None
    ]
    if len(manifests) > 1:
        names = ", ".join(p.name for p, _ in manifests)
        raise DeliveryError(f"report instance {instance}: several manifests ({names})")
    if not manifests:
        if require_manifest:
            raise DeliveryError(
                f"report instance {instance}: no manifest yet; waiting for the delivery to "
                "finish (or run with require_manifest=False to take the files as they are)"
            )
        digest = hashlib.md5(usedforsecurity=False)
        for p in paths:
            digest.update(f"{p.name}:{p.stat().st_size}".encode())
        return Delivery(
            f"{instance}-{digest.hexdigest()[:8]}", instance, tuple(sorted(paths, key=_idx))
        )
    manifest, listed = manifests[0]
    present = {p.name: p for p in paths}
    files = []
    for name, md5 in listed:
        if name not in present:
            raise DeliveryError(
                f"report instance {instance}: {name} is in the manifest but not in the landing "
                "folder (partial delivery); waiting for it"
            )
        actual = file_md5(present[name])
        if md5 and actual != md5:
            settled = time.time() - present[name].stat().st_mtime > UPLOAD_SETTLE_S
            raise (DeliveryRejected if settled else DeliveryError)(
                f"report instance {instance}: {present[name]} has MD5 {actual}, the manifest "
                f"says {md5} ("
                + (
                    "unchanged for 15 minutes, so corrupt"
                    if settled
                    else "still uploading, or corrupt"
                )
                + ": re-deliver the file)"
            )
        files.append(present[name])
    delivery_id = f"{instance}-{file_md5(manifest)[:8]}"
    return Delivery(delivery_id, instance, tuple(sorted(files, key=_idx)), manifest)


def complete_deliveries(
    landing_dir: LakePath | str, *, require_manifest: bool = True
) -> list[Delivery]:
    """Every complete delivery in ``landing_dir``, oldest report instance first.

    Partial deliveries are skipped silently here (they are normal while files upload);
    :func:`check_delivery` says why a given one is not complete.
    """
    deliveries = []
    for instance, paths in _group(lake_path(landing_dir)).items():
        try:
            deliveries.append(check_delivery(instance, paths, require_manifest=require_manifest))
        except DeliveryRejected as exc:
            log.warning("%s", exc)  # in the watcher's log every poll, until someone acts
        except DeliveryError:
            continue
    return sorted(
        deliveries, key=lambda d: min(f.stat().st_mtime for f in d.files or (d.manifest,))
    )


def find_delivery(landing_dir: LakePath | str, delivery_id: str) -> Delivery:
    """The complete delivery with ``delivery_id`` (from a trigger event), or DeliveryError."""
    for delivery in complete_deliveries(landing_dir, require_manifest=False):
        if delivery.id == delivery_id or delivery.report_instance_id == delivery_id:
            return delivery
    raise DeliveryError(f"no complete delivery {delivery_id!r} in {landing_dir}")


# -- reading a delivery ---------------------------------------------------------------------


@dataclass
class ExportSource:
    """Candidate batches from one delivery's data files (see module docstring)."""

    delivery: Delivery
    column_mapping: Mapping[str, str] = field(default_factory=lambda: DEFAULT_COLUMN_MAPPING)
    identity_columns: Mapping[str, str] = field(default_factory=lambda: DEFAULT_IDENTITY_COLUMNS)
    name: str = "cja_export"
    _rows: dict[str, int] = field(default_factory=dict)

    def __post_init__(self) -> None:
        unknown = set(self.column_mapping) - set(DEFAULT_COLUMN_MAPPING)
        if unknown:
            raise ValueError(
                f"column mapping names unknown schema fields {sorted(unknown)}; "
                f"valid: {sorted(DEFAULT_COLUMN_MAPPING)}"
            )

    def batches(self) -> Iterator[pa.Table]:
        con = duckdb.connect()
        try:
            for path in self.delivery.files:
                reader = _csv_batches if path.name.endswith(".csv.gz") else _json_batches
                rows = 0
                with local_copy(path) as local:  # object storage: read a local copy
                    try:
                        for batch in reader(local, self, con):
                            rows += batch.num_rows
                            yield batch
                    except DeliveryUnreadable as exc:
                        raise exc.at(str(path)) from None
                    except READ_ERRORS as exc:
                        if (found := diagnose(local)) is None:
                            raise  # the file is fine (a full disk, ...): the task may retry
                        raise DeliveryUnreadable(str(path), *found) from exc
                self._rows[path.name] = rows
        finally:
            con.close()

    def describe(self) -> dict[str, Any]:
        return {"delivery": self.delivery.as_dict(), "rows_per_file": dict(self._rows)}

    def resolve(self, labels: list[str]) -> tuple[dict[str, str], dict[str, str], list[str]]:
        """(schema field -> label, namespace -> label, other labels) for a file's columns."""
        by_lower = {label.lower(): label for label in labels}
        fields = {}
        for name in DEFAULT_COLUMN_MAPPING:
            label = self.column_mapping.get(name, DEFAULT_COLUMN_MAPPING[name])
            found = by_lower.get(label.lower()) or by_lower.get(name)
            if found:
                fields[name] = found
        identities = {
            ns: by_lower[label.lower()]
            for ns, label in self.identity_columns.items()
            if label.lower() in by_lower
        }
        used = set(fields.values()) | set(identities.values())
        return fields, identities, [label for label in labels if label not in used]


def _quote(label: str) -> str:
    return '"' + label.replace('"', '""') + '"'


def _literal(text: str) -> str:
    return "'" + text.replace("'", "''") + "'"


def _string_map(entries: dict[str, str]) -> str:
    """SQL for a MAP of the non-empty values of ``entries`` (key -> value SQL)."""
    if not entries:
        return "NULL"
    structs = ", ".join(f"{{'k': {_literal(k)}, 'v': {v}}}" for k, v in entries.items())
    return (
        f"map_from_entries(list_transform(list_filter([{structs}], "
        "lambda e: e.v IS NOT NULL AND e.v <> ''), lambda e: (e.k, e.v)))"
    )


def _csv_batches(
    path: Path, source: ExportSource, con: duckdb.DuckDBPyConnection
) -> Iterator[pa.Table]:
    """CSV with a header row; rows with the wrong number of fields are quarantined."""
    with gzip.open(path, "rt", encoding="utf-8-sig", newline="") as handle:  # BOM or not
        header = next(csv.reader(handle), None)
    if not header:
        return
    invalid: list[tuple[str, str]] = []

    def on_invalid(row: pcsv.InvalidRow) -> str:
        reason = (
            f"malformed CSV row (expected {row.expected_columns} fields, got {row.actual_columns})"
        )
        invalid.append((row.text, reason))
        return "skip"

    reader = pcsv.open_csv(
        pa.input_stream(str(path), compression="gzip"),
        read_options=pcsv.ReadOptions(block_size=BLOCK_SIZE),
        parse_options=pcsv.ParseOptions(invalid_row_handler=on_invalid),
        convert_options=pcsv.ConvertOptions(
            column_types=dict.fromkeys(header, pa.string()), strings_can_be_null=True
        ),
    )
    fields, identities, others = source.resolve(header)

    def value(label: str) -> str:
        return f"b.{_quote(label)}"

    select = ", ".join(
        [
            *(f"{value(label)} AS {name}" for name, label in fields.items()),
            f"{_string_map({ns: value(label) for ns, label in identities.items()})} AS identities",
            f"{_string_map({label: value(label) for label in others})} AS dimensions",
            "to_json(b) AS _raw",
        ]
    )
    line = 2  # line 1 is the header
    for batch in reader:
        _refuse_long_lines(path, [pc.binary_length(c) for c in batch.columns], line)
        yield numbered(con, batch, select, file=path.name, first=line)
        line += batch.num_rows
        if invalid:
            texts, reasons = zip(*invalid, strict=True)
            origin = f"{path.name}:before line {line}"
            yield pa.table({"_raw": texts, "_error": reasons, "_origin": [origin] * len(texts)})
            invalid.clear()


def _refuse_long_lines(path: Path, lengths: list[pa.Array], first: int) -> None:
    """Lines over ``MAX_LINE_BYTES`` are refused even when Arrow could read them, so the
    limit does not depend on where a line falls in a block."""
    if long := first_long_line(lengths, first):
        line, size = long
        raise DeliveryUnreadable(
            path.name, line, f"over the maximum line length of {MAX_LINE_BYTES:,} bytes ({size:,})"
        )


def _json_path(key: str) -> str:
    return '$."' + key.replace("\\", "\\\\").replace('"', '\\"') + '"'


def _json_batches(
    path: Path, source: ExportSource, con: duckdb.DuckDBPyConnection
) -> Iterator[pa.Table]:
    """JSON lines, one object per line keyed by column label; other lines are quarantined.

    The keys are found per batch and resolved like CSV headers; then each line is parsed
    once, every key coming out of one multi-path extraction.
    """
    parsed = f"SELECT *, {JSON_OBJECT} AS j FROM batch"
    line = 1
    for batch in read_lines(path):
        _refuse_long_lines(path, [pc.binary_length(batch.column("line"))], line)
        con.register("batch", batch)
        try:
            found = con.sql(f"SELECT DISTINCT unnest(json_keys(j)) FROM ({parsed})").fetchall()
        finally:
            con.unregister("batch")
        fields, identities, others = source.resolve(sorted(k for (k,) in found))
        keys = [*fields.values(), *identities.values(), *others]

        def value(key: str, keys: list[str] = keys) -> str:
            return f"v[{keys.index(key) + 1}]"

        dimensions = (
            "map_from_entries(list_filter(list_zip($others, "
            f"v[{len(keys) - len(others) + 1}:{len(keys)}]), lambda e: e[2] IS NOT NULL))"
            if others
            else "NULL"
        )
        select = ", ".join(
            [
                *(f"{value(label)} AS {name}" for name, label in fields.items()),
                f"{_string_map({ns: value(label) for ns, label in identities.items()})}"
                " AS identities",
                f"{dimensions} AS dimensions",
                "line AS _raw",
                "CASE WHEN j IS NULL THEN 'malformed JSON (not one object per line)' END AS _error",
            ]
        )
        paths = "[" + ", ".join(_literal(_json_path(k)) for k in keys) + "]::VARCHAR[]"
        yield numbered(
            con,
            batch,
            select,
            file=path.name,
            first=line,
            inner=f"SELECT *, json_extract_string(j, {paths}) AS v FROM ({parsed})",
            params={"others": others} if others else None,
        )
        line += batch.num_rows


# -- writing a delivery (demo data, tests, benchmarks) ---------------------------------------


def write_delivery(
    events: str | list[str],
    landing_dir: Path,
    *,
    report_instance_id: str,
    fmt: str = "csv",
    files: int = 1,
    manifest: bool = True,
) -> list[Path]:
    """Write lake events (a Parquet glob or file list) as a CJA full-table export delivery.

    Columns get the default labels, lists are comma-joined, identities and dimensions become
    one column each; the manifest (written last, as Adobe does) lists every file's MD5.
    """
    if fmt not in ("csv", "json"):
        raise ValueError(f"fmt {fmt!r}: use csv or json")
    landing_dir.mkdir(parents=True, exist_ok=True)
    con = duckdb.connect()
    con.execute("SET TimeZone = 'UTC'")
    try:
        con.read_parquet(events, hive_partitioning=False).create_view("events")
        keys = [
            k
            for (k,) in con.sql(
                "SELECT DISTINCT unnest(map_keys(dimensions)) AS k FROM events ORDER BY k"
            ).fetchall()
        ]
        columns = ", ".join(
            [
                *(
                    f"array_to_string({name}, ',') AS {_quote(label)}"
                    if name in ("product_skus", "product_categories")
                    else f"strftime({name}, '%Y-%m-%dT%H:%M:%S.%gZ') AS {_quote(label)}"
                    if name == "timestamp"
                    else f"{name} AS {_quote(label)}"
                    for name, label in DEFAULT_COLUMN_MAPPING.items()
                ),
                *(
                    f"identities[{_literal(ns)}] AS {_quote(label)}"
                    for ns, label in DEFAULT_IDENTITY_COLUMNS.items()
                ),
                *(f"dimensions[{_literal(k)}] AS {_quote(k)}" for k in keys),
            ]
        )
        options = "FORMAT csv, HEADER true" if fmt == "csv" else "FORMAT json"
        written = []
        for idx in range(files):
            path = landing_dir / f"cja-export-{report_instance_id}-{idx}.{fmt}.gz"
            con.execute(
                f"COPY (SELECT {columns} FROM events WHERE hash(event_id) % $n = $i)"
                f" TO $path ({options}, COMPRESSION gzip)",
                {"n": files, "i": idx, "path": str(path)},
            )
            written.append(path)
    finally:
        con.close()
    if manifest:
        document = {
            "reportInstanceId": report_instance_id,
            "files": [{"name": p.name, "md5": file_md5(p)} for p in written],
        }
        path = landing_dir / f"cja-export-{report_instance_id}-{files}.json.gz"
        path.write_bytes(gzip.compress(json.dumps(document).encode()))
        written.append(path)
    return written
