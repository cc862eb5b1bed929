"""Conditional writes on object storage: one backend per store, each doing the four
primitives leases, locks and pointers are built on (:mod:`cja_audiences.lake.storage` calls
these; stages never do).

Each store has its own compare-and-set, checked by the server so two writers on two machines
cannot both win:

* **S3**: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace.
* **GCS**: generation preconditions, ``ifGenerationMatch=0`` to create and
  ``ifGenerationMatch=<generation>`` to replace or delete; the token is the generation.
* **Azure Blob**: ``If-None-Match: *`` to create, ``If-Match: <ETag>`` to replace or delete.

A refused precondition is ``False`` (someone else wrote first: read again and decide), never
an exception; anything else (permissions, network) raises as usual.
"""

from __future__ import annotations

import json
from typing import Any, Protocol

from fsspec.asyn import sync
from upath import UPath

from cja_audiences.lake.storage import StorageError, Versioned, _key


class Conditional(Protocol):
    def create(self, path: UPath, data: bytes) -> bool: ...
    def read(self, path: UPath) -> Versioned | None: ...
    def replace(self, path: UPath, data: bytes, token: str) -> bool: ...
    def delete(self, path: UPath, token: str) -> bool: ...


def for_path(path: UPath) -> Conditional:
    backend = _BACKENDS.get(path.protocol)
    if backend is None:
        raise StorageError(
            f"{path}: conditional writes (leases, locks) are implemented for local folders, "
            f"s3://, gs:// and abfs:// (az://); {path.protocol}:// is not supported: move "
            f"CJA_AUDIENCES_HOME to one of those"
        )
    return backend


def _bucket_key(path: UPath) -> tuple[str, str]:
    bucket, _, key = _key(path).partition("/")
    return bucket, key


class _S3:
    def create(self, path: UPath, data: bytes) -> bool:
        try:
            path.fs.pipe_file(_key(path), data, mode="create")  # If-None-Match: *
        except FileExistsError:
            return False
        except OSError as exc:
            if _s3_refused(exc):
                return False
            raise
        return True

    def read(self, path: UPath) -> Versioned | None:
        fs = path.fs
        bucket, key = _bucket_key(path)

        async def get() -> Versioned:
            response = await fs._call_s3("get_object", Bucket=bucket, Key=key)
            async with response["Body"] as stream:
                return Versioned(await stream.read(), response["ETag"])

        try:
            return sync(fs.loop, get)
        except FileNotFoundError:
            return None

    def replace(self, path: UPath, data: bytes, token: str) -> bool:
        bucket, key = _bucket_key(path)
        try:
            path.fs.call_s3("put_object", Bucket=bucket, Key=key, Body=data, IfMatch=token)
        except OSError as exc:
            if _s3_refused(exc):
                return False
            raise
        return True

    def delete(self, path: UPath, token: str) -> bool:
        # S3-compatible servers differ on conditional DELETE: check the ETag, then delete.
        current = self.read(path)
        if current is None or current.token != token:
            return False
        path.fs.rm_file(_key(path))
        return True


def _s3_refused(exc: BaseException) -> bool:
    """S3 refused a conditional write: 412 (the version moved) or 409 (a concurrent one)."""
    response = getattr(exc.__cause__, "response", None) or getattr(exc, "response", None) or {}
    code = response.get("Error", {}).get("Code")
    return isinstance(exc, FileNotFoundError) or code in (
        "PreconditionFailed",
        "ConditionalRequestConflict",
    )


class _GCS:
    """gcsfs's JSON-API calls with generation preconditions (gcsfs maps 412 to
    ``FileExistsError`` and 404 to ``FileNotFoundError``)."""

    def create(self, path: UPath, data: bytes) -> bool:
        return self._upload(path, data, "0")

    def read(self, path: UPath) -> Versioned | None:
        bucket, key = _bucket_key(path)
        try:  # one GET: the bytes and the generation they belong to (as google-cloud-storage
            # reads it too, from x-goog-generation)
            headers, data = path.fs.call("GET", "b/{}/o/{}", bucket, key, alt="media")
        except FileNotFoundError:
            return None
        if "X-Goog-Generation" not in headers:
            raise StorageError(
                f"{path}: the GCS endpoint sent no x-goog-generation header, so its version "
                f"cannot be compared; point endpoint_url at the JSON API itself, not a proxy"
            )
        return Versioned(data, headers["X-Goog-Generation"])

    def replace(self, path: UPath, data: bytes, token: str) -> bool:
        return self._upload(path, data, token)

    def delete(self, path: UPath, token: str) -> bool:
        bucket, key = _bucket_key(path)
        current = self.read(path)  # servers that ignore the precondition still see a moved one
        if current is None or current.token != token:
            return False
        try:
            path.fs.call("DELETE", "b/{}/o/{}", bucket, key, ifGenerationMatch=token)
        except (FileExistsError, FileNotFoundError):
            return False
        return True

    @staticmethod
    def _upload(path: UPath, data: bytes, generation: str) -> bool:
        """A multipart upload (metadata and bytes in one request) with ``ifGenerationMatch``."""
        fs = path.fs
        bucket, key = _bucket_key(path)
        boundary = "cja-audiences-part"
        body = b"".join(
            [
                f"--{boundary}\r\nContent-Type: application/json; charset=UTF-8\r\n\r\n".encode(),
                json.dumps({"name": key}).encode(),
                f"\r\n--{boundary}\r\nContent-Type: application/octet-stream\r\n\r\n".encode(),
                data,
                f"\r\n--{boundary}--".encode(),
            ]
        )
        try:
            fs.call(
                "POST",
                f"{fs._location}/upload/storage/v1/b/{{}}/o",
                bucket,
                uploadType="multipart",
                ifGenerationMatch=generation,
                headers={"Content-Type": f'multipart/related; boundary="{boundary}"'},
                data=body,
            )
        except FileExistsError:  # 412: the generation moved (or, for 0, the object exists)
            return False
        except FileNotFoundError:  # replacing an object deleted meanwhile
            return False
        return True


class _Azure:
    """The blob client adlfs already holds, with ETag conditions."""

    def create(self, path: UPath, data: bytes) -> bool:
        from azure.core.exceptions import ResourceExistsError

        try:  # overwrite=False sends If-None-Match: *
            _azure(path, lambda blob: blob.upload_blob(data, overwrite=False))
        except ResourceExistsError:
            return False
        return True

    def read(self, path: UPath) -> Versioned | None:
        from azure.core.exceptions import ResourceNotFoundError

        async def download(blob: Any) -> Versioned:
            stream = await blob.download_blob()  # one GET: the bytes match this ETag
            return Versioned(await stream.readall(), stream.properties.etag)

        try:
            return _azure(path, download)
        except ResourceNotFoundError:
            return None

    def replace(self, path: UPath, data: bytes, token: str) -> bool:
        return self._if_match(
            path, token, lambda blob, **if_match: blob.upload_blob(data, overwrite=True, **if_match)
        )

    def delete(self, path: UPath, token: str) -> bool:
        return self._if_match(path, token, lambda blob, **if_match: blob.delete_blob(**if_match))

    @staticmethod
    def _if_match(path: UPath, token: str, call: Any) -> bool:
        from azure.core import MatchConditions
        from azure.core.exceptions import ResourceModifiedError, ResourceNotFoundError

        condition = {"etag": token, "match_condition": MatchConditions.IfNotModified}
        try:
            _azure(path, lambda blob: call(blob, **condition))
        except (ResourceModifiedError, ResourceNotFoundError):
            return False
        return True


def _azure(path: UPath, call: Any) -> Any:
    fs = path.fs
    container, blob_name = _bucket_key(path)

    async def run() -> Any:
        async with fs.service_client.get_blob_client(container, blob_name) as blob:
            return await call(blob)

    return sync(fs.loop, run)


_BACKENDS: dict[str, Conditional] = {
    "s3": _S3(),
    "s3a": _S3(),
    "gs": _GCS(),
    "gcs": _GCS(),
    "abfs": _Azure(),
    "abfss": _Azure(),
    "az": _Azure(),
}
