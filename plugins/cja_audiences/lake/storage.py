"""One storage layer for every stage: the lake root is a local folder or object storage.

``CJA_AUDIENCES_HOME`` is a folder (``/data/cja``) or a URL (``s3://bucket/prefix``,
``gs://…``, ``abfs://container/prefix``). A local root stays a ``pathlib.Path``; a URL becomes a
``upath.UPath`` over fsspec (s3fs, gcsfs, adlfs), which offers the same
path API (``/``, ``name``, ``glob``, ``iterdir``, ``exists``, ``read_text``, ``open``). So
stages keep their path code, and only what a path API cannot say the same way on both lives
here:

* **Atomic writes** (:func:`atomic_path`): locally a temporary name renamed into place;
  on object storage the file is written locally and uploaded in one PUT (multipart uploads
  too become visible only when complete), so a reader sees the old object or the new one.
* **Conditional writes** for leases, locks and pointers: :func:`create_exclusive`,
  :func:`read_versioned`, :func:`replace_if`, :func:`delete_if` (compare-and-set on a version
  token) and :func:`exclusive` built on them. Locally a hard link (fails if the name exists)
  and the content digest checked under an ``flock``; on S3, GCS and Azure Blob the server's
  own preconditions (:mod:`cja_audiences.lake.conditional`).
* **DuckDB without httpfs**: DuckDB downloads its httpfs extension at run time, which
  offline machines cannot do. :func:`connect` turns extension autoloading off and registers
  the lake's fsspec filesystem on the connection, so ``read_parquet('s3://…')`` and
  ``COPY … TO 's3://…'`` go through s3fs. Parquet footers are read with PyArrow over the
  same filesystem (:func:`parquet_file`).
"""

from __future__ import annotations

import errno
import fcntl
import functools
import hashlib
import json
import os
import shutil
import tempfile
import time
import uuid
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any, TypeAlias

from upath import UPath  # light (fsspec's core); the filesystems load on first use

if TYPE_CHECKING:
    import duckdb
    import pyarrow.parquet as pq

LakePath: TypeAlias = Path | UPath

LOCK_TTL_S = 300.0  # a lock older than this was left by a crashed writer and may be taken


class StorageError(RuntimeError):
    """A storage operation that cannot be done as asked; the message says why and the fix."""


def is_url(location: str | os.PathLike[str] | UPath) -> bool:
    text = str(location)
    return "://" in text and not text.startswith("file://")


def lake_path(location: str | os.PathLike[str] | UPath) -> LakePath:
    """A local ``Path`` or, for a URL, a ``UPath`` with the configured storage options."""
    if isinstance(location, Path):
        return location
    if isinstance(location, UPath):
        return location if is_remote(location) else Path(location.path)
    text = str(location)
    if text.startswith("file://"):
        return Path(text.removeprefix("file://"))
    if not is_url(text):
        return Path(text).expanduser()
    if text.split("://", 1)[0] in ("gs", "gcs"):
        _plain_gcsfs()
    return UPath(text, **storage_options())


@functools.cache  # registered once per process, not on every gs:// path
def _plain_gcsfs() -> None:
    """gs:// through gcsfs's JSON-API filesystem, not its default experimental subclass: that
    one asks a gRPC storage-control API for each bucket's layout (zonal, hierarchical) first,
    which private endpoints and emulators do not serve (each probe waits 30 s, then falls back
    to the JSON API anyway). The lake needs neither zonal appends nor folder renames."""
    import fsspec

    for protocol in ("gs", "gcs"):
        fsspec.register_implementation(protocol, "gcsfs.core.GCSFileSystem", clobber=True)


def storage_options() -> dict[str, Any]:
    """fsspec options for object storage: ``CJA_AUDIENCES_STORAGE_OPTIONS`` (JSON, e.g.
    ``{"endpoint_url": "http://127.0.0.1:9000"}``); credentials come from the provider's usual
    chain (``AWS_*``, ``GOOGLE_APPLICATION_CREDENTIALS``, ``AZURE_STORAGE_*``, instance
    roles), never from here. Listing caches are off:
    other workers write the same prefixes."""
    from cja_audiences.settings import get_settings

    return {"use_listings_cache": False, **get_settings().storage_options}


def is_remote(path: LakePath) -> bool:
    return not isinstance(path, Path)


def same_path(a: LakePath, b: LakePath) -> bool:
    """Both name the same location (local paths resolved, URLs compared as written)."""
    if is_remote(a) or is_remote(b):
        return str(a).rstrip("/") == str(b).rstrip("/")
    return Path(a).resolve() == Path(b).resolve()


def _key(path: UPath) -> str:
    return path.path


# -- writing ----------------------------------------------------------------------------------


@contextmanager
def atomic_path(path: LakePath) -> Iterator[Path]:
    """Yield a local temporary path; on success it becomes ``path`` in one step.

    A full disk (from Python, PyArrow or DuckDB alike) becomes :class:`DiskFull` naming
    ``path``; the temporary file is removed, so nothing half-written stays behind.
    """
    with naming_full_disk(path), _atomic_path(path) as tmp:
        yield tmp


@contextmanager
def naming_full_disk(path: LakePath) -> Iterator[None]:
    """A full disk while writing ``path`` (from Python, PyArrow or DuckDB) raises
    :class:`DiskFull` naming ``path`` and the free space; other errors pass unchanged."""
    try:
        yield
    except Exception as exc:
        full = _disk_full(exc, path)
        if full is None:
            raise
        raise full from exc


@contextmanager
def _atomic_path(path: LakePath) -> Iterator[Path]:
    if is_remote(path):
        with tempfile.TemporaryDirectory(prefix="cja-upload-") as scratch:
            tmp = Path(scratch) / path.name
            yield tmp
            path.fs.put_file(str(tmp), _key(path))
        return
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    os.close(fd)
    tmp = Path(name)
    try:
        yield tmp
        os.replace(tmp, path)
    finally:
        tmp.unlink(missing_ok=True)


class DiskFull(OSError):
    """No space left while writing a lake file; the message names the file and the fix."""


def _disk_full(exc: BaseException, path: LakePath) -> DiskFull | None:
    if isinstance(exc, DiskFull):
        return exc
    if getattr(exc, "errno", None) != errno.ENOSPC and "No space left" not in str(exc):
        return None
    where = tempfile.gettempdir() if is_remote(path) else path.parent  # remote: the upload copy
    try:
        free = f"{shutil.disk_usage(where).free:,} bytes free in {where}"
    except OSError:
        free = f"{where} is not readable"
    return DiskFull(
        errno.ENOSPC,
        f"no space left on device writing {path} ({free}); nothing was half-written: free "
        f"space on that file system (or move CJA_AUDIENCES_HOME) and retry the task",
    )


def copy_file(source: LakePath, target: LakePath) -> None:
    """Copy one file atomically (server-side on object storage when both are remote)."""
    if is_remote(source) and is_remote(target) and source.fs is target.fs:
        source.fs.copy(_key(source), _key(target))
        return
    with atomic_path(target) as tmp, source.open("rb") as src, tmp.open("wb") as dst:
        shutil.copyfileobj(src, dst, 1 << 20)


def upload_tree(local_dir: Path, target: LakePath) -> list[str]:
    """Copy every file under ``local_dir`` to ``target`` (each one atomically); their names."""
    names = sorted(p.relative_to(local_dir).as_posix() for p in local_dir.rglob("*") if p.is_file())
    for name in names:
        with atomic_path(target / name) as tmp:
            shutil.copyfile(local_dir / name, tmp)
    return names


def move(source: LakePath, target: LakePath) -> None:
    """Move one file (copy then delete on object storage, where there is no rename)."""
    if is_remote(source) or is_remote(target):
        copy_file(source, target)
        source.unlink()
        return
    target.parent.mkdir(parents=True, exist_ok=True)
    shutil.move(source, target)


def remove_tree(path: LakePath) -> None:
    if is_remote(path):
        if path.exists():
            path.fs.rm(_key(path), recursive=True)
        return
    shutil.rmtree(path, ignore_errors=True)


def makedirs(path: LakePath) -> None:
    """Folders exist only locally; on object storage a prefix exists once it holds a file."""
    if not is_remote(path):
        path.mkdir(parents=True, exist_ok=True)


# -- reading ----------------------------------------------------------------------------------


@contextmanager
def local_copy(path: LakePath) -> Iterator[Path]:
    """A local file with ``path``'s bytes, for readers that need one (gzip CSV, JSON lines)."""
    if not is_remote(path):
        yield path
        return
    with tempfile.TemporaryDirectory(prefix="cja-download-") as scratch:
        local = Path(scratch) / path.name
        path.fs.get_file(_key(path), str(local))
        yield local


def modified_times(folder: LakePath) -> dict[str, float]:
    """Name -> modification time (epoch seconds) of the files directly in ``folder``, in one
    listing; on object storage that is the object's ``LastModified``, which the server sets at
    upload (nothing can set it afterwards). An absent folder has none."""
    if not is_remote(folder):
        if not folder.is_dir():
            return {}
        return {e.name: e.stat().st_mtime for e in os.scandir(folder) if e.is_file()}
    try:
        entries = folder.fs.ls(_key(folder), detail=True)
    except FileNotFoundError:
        return {}
    times = {}
    for entry in entries:
        if entry.get("type") == "file":
            when = entry.get("LastModified") or folder.fs.modified(entry["name"])
            times[entry["name"].rsplit("/", 1)[-1]] = when.timestamp()
    return times


def parquet_file(path: LakePath) -> pq.ParquetFile:
    import pyarrow.parquet as pq  # here: paths alone (DAG parsing, the CLI) need no PyArrow

    if is_remote(path):
        return pq.ParquetFile(path.fs.open(_key(path), "rb"))
    return pq.ParquetFile(path)


def parquet_rows(path: LakePath) -> int:
    """Rows from the Parquet footer: no data is read."""
    return parquet_file(path).metadata.num_rows


def connect(*paths: LakePath, config: dict[str, Any] | None = None) -> duckdb.DuckDBPyConnection:
    """An in-memory DuckDB that can read and write ``paths``' storage, offline.

    Extension autoloading is off (httpfs would be downloaded); object storage goes through
    the fsspec filesystem registered here instead.
    """
    import duckdb

    con = duckdb.connect(
        config={
            "autoinstall_known_extensions": False,
            "autoload_known_extensions": False,
            **(config or {}),
        }
    )
    registered: set[int] = set()
    for path in paths:
        if is_remote(path) and id(path.fs) not in registered:
            con.register_filesystem(path.fs)
            registered.add(id(path.fs))
    return con


# -- conditional writes: what leases, locks and pointers need ---------------------------------


@dataclass(frozen=True)
class Versioned:
    """An object's bytes and the token :func:`replace_if` compares against."""

    data: bytes
    token: str


def _digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def create_exclusive(path: LakePath, data: bytes) -> bool:
    """Create ``path`` holding ``data`` unless it exists; True when this call created it."""
    if is_remote(path):
        return _conditional(path).create(path, data)
    path.parent.mkdir(parents=True, exist_ok=True)
    fd, name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
    try:
        with os.fdopen(fd, "wb") as handle:
            handle.write(data)
        os.link(name, path)  # fails if path exists; readers never see it half written
        return True
    except FileExistsError:
        return False
    finally:
        os.unlink(name)


def read_versioned(path: LakePath) -> Versioned | None:
    """The object and its version token, or None when it does not exist."""
    if is_remote(path):
        return _conditional(path).read(path)
    try:
        data = path.read_bytes()
    except FileNotFoundError:
        return None
    return Versioned(data, _digest(data))


def _conditional(path: UPath) -> Any:
    from cja_audiences.lake import conditional  # here: it imports this module

    return conditional.for_path(path)


def replace_if(path: LakePath, data: bytes, token: str | None) -> bool:
    """Write ``data`` only if ``path`` still has version ``token`` (None: must not exist).

    False means another writer changed it first: read it again and decide.
    """
    if token is None:
        return create_exclusive(path, data)
    if is_remote(path):
        return _conditional(path).replace(path, data, token)
    with _flocked(path.with_name(f".{path.name}.cas")):
        current = read_versioned(path)
        if current is None or current.token != token:
            return False
        with atomic_path(path) as tmp:
            tmp.write_bytes(data)
    return True


def delete_if(path: LakePath, token: str) -> bool:
    """Delete ``path`` only if it still has version ``token``."""
    if is_remote(path):
        return _conditional(path).delete(path, token)
    with _flocked(path.with_name(f".{path.name}.cas")):
        current = read_versioned(path)
        if current is None or current.token != token:
            return False
        path.unlink()
    return True


@contextmanager
def _flocked(lock_file: Path) -> Iterator[None]:
    lock_file.parent.mkdir(parents=True, exist_ok=True)
    with lock_file.open("a") as handle:
        fcntl.flock(handle, fcntl.LOCK_EX)
        try:
            yield
        finally:
            fcntl.flock(handle, fcntl.LOCK_UN)


@contextmanager
def exclusive(
    path: LakePath, *, timeout_s: float = 60.0, ttl_s: float = LOCK_TTL_S
) -> Iterator[None]:
    """Hold ``path`` as a lock: one holder at a time across processes and machines.

    Local: ``flock`` on the file (released by the OS if the holder dies). Object storage: a
    lock object created with a conditional write, holding its owner and expiry; an expired
    one (its holder crashed) is taken over with compare-and-set; released by deleting it.
    """
    if not is_remote(path):
        with _flocked(path):
            yield
        return
    owner = uuid.uuid4().hex
    deadline = time.monotonic() + timeout_s
    body = json.dumps({"owner": owner, "expires": time.time() + ttl_s}).encode()
    delay = 0.05
    while not create_exclusive(path, body):
        held = read_versioned(path)
        if held is not None:
            expires = json.loads(held.data).get("expires", 0)
            if expires < time.time() and replace_if(path, body, held.token):
                break
        if time.monotonic() > deadline:
            raise StorageError(
                f"{path} is locked by another writer (until {held.data.decode() if held else '?'}); "
                f"retry, or delete it if no writer is running"
            )
        time.sleep(delay)
        delay = min(delay * 2, 1.0)
    try:
        yield
    finally:
        mine = read_versioned(path)
        if mine is not None and json.loads(mine.data).get("owner") == owner:
            delete_if(path, mine.token)
