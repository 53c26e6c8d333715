# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Where backup objects live: a local directory or S3-compatible object storage.

Both implementations write atomically (an object appears only when its
writer closes without error), stream in bounded chunks, and raise
:class:`StorageError` with a cause an operator can act on.
"""

from __future__ import annotations

import contextlib
import datetime
import functools
import os
import tempfile
from collections.abc import Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from typing import BinaryIO
from urllib.parse import urlparse

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    NotFoundError,
    StorageError,
)

try:
    import boto3
    import botocore.config
    import botocore.exceptions
except ImportError:  # checked by BackupModule
    boto3 = None

PART_SIZE = 8 * 1024 * 1024
PARTS_IN_FLIGHT = 3


@dataclass(frozen=True)
class ObjectInfo:
    """One stored object: its key below the storage root, size and last change."""

    key: str
    size: int
    modified: datetime.datetime
    locked_until: datetime.datetime | None = None


@dataclass(frozen=True)
class Leftover:
    """What a failed or killed write left: an unfinished multipart upload, a partial file, an empty directory.

    ``key`` is relative to the storage root (a directory's ends with ``/``);
    ``handle`` is what removing it takes (an upload id, a path).
    """

    key: str
    since: datetime.datetime
    handle: str


class Storage:
    """The interface both storages implement; keys are ``/``-separated relative paths."""

    url: str

    def writer(self, key: str) -> contextlib.AbstractContextManager:
        """Context manager yielding a writable; the object exists only after a clean exit."""
        raise NotImplementedError

    def open(self, key: str) -> BinaryIO:
        """A readable stream of the object's bytes."""
        raise NotImplementedError

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        """Every object whose key starts with ``prefix``."""
        raise NotImplementedError

    def delete(self, keys: list[str]) -> dict[str, str]:
        """Delete objects; returns ``{key: reason}`` for those that could not be deleted."""
        raise NotImplementedError

    def locked_until(self, key: str) -> datetime.datetime | None:
        """Until when an object is protected from deletion (S3 Object Lock), if it is."""
        return None

    def leftovers(self, before: datetime.datetime, prefixes: tuple[str, ...] = ("",)) -> list[Leftover]:
        """What failed or killed writes below ``prefixes`` left behind, untouched since before ``before``."""
        raise NotImplementedError

    def remove_leftover(self, leftover: Leftover) -> None:
        """Remove one leftover (abort the unfinished upload, delete the partial file or empty directory)."""
        raise NotImplementedError

    def clean_partial(self, before: datetime.datetime, dry_run: bool, prefixes: tuple[str, ...] = ("",)) -> list[str]:
        """Remove the :meth:`leftovers` below ``prefixes``; returns their keys, removed (or, dry run, not)."""
        found = self.leftovers(before, prefixes)
        if not dry_run:
            for leftover in found:
                self.remove_leftover(leftover)
        return sorted(leftover.key for leftover in found)

    def put_bytes(self, key: str, data: bytes) -> None:
        """Write a small object in one go."""
        with self.writer(key) as out:
            out.write(data)

    def get_bytes(self, key: str) -> bytes:
        """Read a small object in one go."""
        with self.open(key) as src:
            return src.read()

    def check(self) -> None:
        """Raise StorageError unless the storage can be reached."""
        raise NotImplementedError


def _validate_key(key: str) -> str:
    parts = key.split("/")
    if not key or key.startswith("/") or any(p in ("", ".", "..") for p in parts):
        raise ConfigurationError(f"invalid object key {key!r}")
    return key


class LocalStorage(Storage):
    """Objects as files below a directory (``file:///path``)."""

    def __init__(self, root: str, create: bool = False) -> None:
        """``create``: make the directory (and its parents) when it does not exist yet; ``created`` says so."""
        self.root = os.path.abspath(root)
        self.url = f"file://{self.root}"
        self.created = False
        if create and not os.path.isdir(self.root):
            try:
                os.makedirs(self.root)
            except OSError as exc:
                raise StorageError(f"storage directory {self.root} cannot be created: {exc.strerror}") from None
            self.created = True

    def _path(self, key: str) -> str:
        return os.path.join(self.root, *_validate_key(key).split("/"))

    @contextlib.contextmanager
    def writer(self, key: str):
        path = self._path(key)
        directory = os.path.dirname(path)
        try:
            os.makedirs(directory, exist_ok=True)
            fd, tmp = tempfile.mkstemp(prefix=".partial-", dir=directory)
        except OSError as exc:
            raise StorageError(f"cannot write below {self.root}: {exc.strerror}") from None
        try:
            with os.fdopen(fd, "wb") as out:
                yield out
                out.flush()
                os.fsync(out.fileno())
            os.replace(tmp, path)
        except BaseException:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise

    def open(self, key: str) -> BinaryIO:
        try:
            return open(self._path(key), "rb")
        except FileNotFoundError:
            raise NotFoundError(f"object {key} does not exist in {self.url}") from None
        except OSError as exc:
            raise StorageError(f"cannot read {key} in {self.url}: {exc.strerror}") from None

    def check(self) -> None:
        if not os.path.isdir(self.root):
            raise StorageError(f"storage directory {self.root} does not exist")

    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        self.check()
        start = os.path.join(self.root, *prefix.split("/")[:-1])
        for directory, dirs, files in os.walk(start):
            dirs.sort()
            for name in sorted(files):
                if name.startswith(".partial-"):
                    continue
                path = os.path.join(directory, name)
                key = os.path.relpath(path, self.root).replace(os.sep, "/")
                if key.startswith(prefix):
                    st = os.stat(path)
                    yield ObjectInfo(
                        key, st.st_size, datetime.datetime.fromtimestamp(st.st_mtime, datetime.timezone.utc)
                    )

    def leftovers(self, before: datetime.datetime, prefixes: tuple[str, ...] = ("",)) -> list[Leftover]:
        found = []
        for prefix in prefixes:
            start = os.path.join(self.root, *[p for p in prefix.split("/") if p])
            # Bottom-up, so a directory holding only empty directories is itself empty.
            empty: set[str] = set()
            for directory, dirs, files in os.walk(start, topdown=False):
                for name in files:
                    path = os.path.join(directory, name)
                    if name.startswith(".partial-"):
                        found.extend(self._leftover(path, before))
                if directory != self.root and not files and all(os.path.join(directory, d) in empty for d in dirs):
                    # A young empty directory may be a write just starting: it keeps its parents too.
                    leftover = self._leftover(directory, before)
                    if leftover:
                        empty.add(directory)
                        found.extend(leftover)
        return found

    def _leftover(self, path: str, before: datetime.datetime) -> list[Leftover]:
        try:
            since = datetime.datetime.fromtimestamp(os.stat(path).st_mtime, datetime.timezone.utc)
        except FileNotFoundError:  # finished or removed meanwhile
            return []
        if since >= before:
            return []
        key = os.path.relpath(path, self.root).replace(os.sep, "/") + ("/" if os.path.isdir(path) else "")
        return [Leftover(key, since, path)]

    def remove_leftover(self, leftover: Leftover) -> None:
        try:
            if leftover.key.endswith("/"):
                os.rmdir(leftover.handle)
            else:
                os.unlink(leftover.handle)
        except FileNotFoundError:
            return
        except OSError as exc:
            if leftover.key.endswith("/"):
                return  # no longer empty: a writer came back
            raise StorageError(f"cannot remove {leftover.key} in {self.url}: {exc.strerror}") from None
        self._remove_empty_parents(leftover.handle)

    def _remove_empty_parents(self, path: str) -> None:
        """Remove the directories a removal emptied, up to the root."""
        directory = os.path.dirname(path)
        while directory != self.root:
            try:
                os.rmdir(directory)
            except OSError:
                break
            directory = os.path.dirname(directory)

    def delete(self, keys: list[str]) -> dict[str, str]:
        failed = {}
        for key in keys:
            path = self._path(key)
            try:
                os.unlink(path)
            except FileNotFoundError:
                continue
            except OSError as exc:
                failed[key] = exc.strerror or str(exc)
                continue
            self._remove_empty_parents(path)
        return failed


_S3_CAUSES = {
    "NoSuchBucket": "bucket {bucket!r} does not exist",
    "InvalidAccessKeyId": "the S3 access key was rejected (InvalidAccessKeyId)",
    "SignatureDoesNotMatch": "the S3 secret key was rejected (SignatureDoesNotMatch)",
    "AccessDenied": "access denied by the S3 server (AccessDenied)",
    "InvalidBucketName": "{bucket!r} is not a valid bucket name",
}


def _s3_errors(action: str):
    """Translate boto errors of an S3Storage method into StorageError/NotFoundError."""

    def decorate(method):
        @functools.wraps(method)
        def wrapper(self, *args, **kwargs):
            try:
                return method(self, *args, **kwargs)
            except botocore.exceptions.ClientError as exc:
                storage = getattr(self, "storage", self)
                key = args[0] if args and isinstance(args[0], str) else ""
                raise storage.translate(exc, action, key) from None
            except (botocore.exceptions.EndpointConnectionError, botocore.exceptions.ConnectTimeoutError) as exc:
                raise StorageError(f"cannot {action}: S3 endpoint unreachable ({exc})") from None
            except botocore.exceptions.NoCredentialsError:
                raise StorageError(
                    f"cannot {action}: no S3 credentials (set aws_access_key_id and "
                    "aws_secret_access_key, or the AWS_* environment)"
                ) from None
            except botocore.exceptions.BotoCoreError as exc:
                raise StorageError(f"cannot {action}: {exc}") from None

        return wrapper

    return decorate


class S3Storage(Storage):
    """Objects in an S3 bucket below a prefix (``s3://bucket/prefix``)."""

    def __init__(
        self,
        bucket: str,
        prefix: str,
        *,
        endpoint_url: str | None = None,
        access_key: str | None = None,
        secret_key: str | None = None,
        session_token: str | None = None,
        region: str | None = None,
        ca_bundle: str | None = None,
        validate_certs: bool = True,
        sse: str | None = None,
        sse_kms_key_id: str | None = None,
        object_lock_mode: str | None = None,
        object_lock_days: int | None = None,
        part_size: int = PART_SIZE,
    ) -> None:
        if boto3 is None:
            raise StorageError("boto3 is required for s3:// storage")
        if bool(object_lock_mode) != bool(object_lock_days):
            raise ConfigurationError("s3_object_lock_mode and s3_object_lock_days go together")
        if part_size < 5 * 1024 * 1024:
            raise ConfigurationError("S3 multipart parts must be at least 5 MiB")
        self.bucket = bucket
        self.prefix = prefix.strip("/")
        self.url = f"s3://{bucket}/{self.prefix}".rstrip("/")
        self.endpoint_url = endpoint_url
        self.part_size = part_size
        self._put_args: dict = {}
        if sse:
            self._put_args["ServerSideEncryption"] = sse
            if sse_kms_key_id:
                self._put_args["SSEKMSKeyId"] = sse_kms_key_id
        self._lock_mode = object_lock_mode
        self._lock_days = object_lock_days
        session = boto3.session.Session(
            aws_access_key_id=access_key,
            aws_secret_access_key=secret_key,
            aws_session_token=session_token,
            region_name=region or "us-east-1",
        )
        config = botocore.config.Config(
            retries={"mode": "standard", "max_attempts": 4},
            connect_timeout=10,
            read_timeout=120,
            max_pool_connections=10,
        )
        verify = ca_bundle if ca_bundle else validate_certs
        self.client = session.client("s3", endpoint_url=endpoint_url, config=config, verify=verify)

    def translate(self, exc, action: str, key: str = ""):
        """A StorageError (or NotFoundError) that names the cause of a ClientError."""
        code = exc.response.get("Error", {}).get("Code", "")
        where = f" at {self.endpoint_url}" if self.endpoint_url else ""
        if code in ("NoSuchKey", "404", "NotFound") and key:
            return NotFoundError(f"object {key} does not exist in {self.url}")
        cause = _S3_CAUSES.get(code, "{code}: {message}").format(
            bucket=self.bucket, code=code, message=exc.response.get("Error", {}).get("Message", str(exc))
        )
        return StorageError(f"cannot {action} {self.url}{where}: {cause}")

    def _key(self, key: str) -> str:
        _validate_key(key)
        return f"{self.prefix}/{key}" if self.prefix else key

    def _lock_args(self) -> dict:
        if not self._lock_mode:
            return {}
        until = datetime.datetime.now(datetime.timezone.utc) + datetime.timedelta(days=self._lock_days)
        return {"ObjectLockMode": self._lock_mode, "ObjectLockRetainUntilDate": until}

    @contextlib.contextmanager
    def writer(self, key: str):
        out = _MultipartWriter(self, self._key(key))
        try:
            yield out
            out.finish()
        except BaseException:
            out.abort()
            raise

    @_s3_errors("read")
    def open(self, key: str) -> BinaryIO:
        body = self.client.get_object(Bucket=self.bucket, Key=self._key(key))["Body"]
        return _S3Reader(body, self, key)

    @_s3_errors("list")
    def list(self, prefix: str = "") -> Iterator[ObjectInfo]:
        cut = len(self.prefix) + 1 if self.prefix else 0
        full = (f"{self.prefix}/" if self.prefix else "") + prefix
        paginator = self.client.get_paginator("list_objects_v2")
        items = []
        for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
            for item in page.get("Contents", ()):
                items.append(ObjectInfo(item["Key"][cut:], item["Size"], item["LastModified"]))
        return iter(items)

    def check(self) -> None:
        self._check()

    @_s3_errors("reach")
    def _check(self) -> None:
        # A listing, not HeadBucket: a HEAD reply has no body to name the cause (missing bucket, bad key).
        self.client.list_objects_v2(Bucket=self.bucket, Prefix=f"{self.prefix}/" if self.prefix else "", MaxKeys=1)

    @_s3_errors("read the lock of")
    def locked_until(self, key: str) -> datetime.datetime | None:
        head = self.client.head_object(Bucket=self.bucket, Key=self._key(key))
        until = head.get("ObjectLockRetainUntilDate")
        return until if until and until > datetime.datetime.now(datetime.timezone.utc) else None

    @_s3_errors("list unfinished uploads in")
    def leftovers(self, before: datetime.datetime, prefixes: tuple[str, ...] = ("",)) -> list[Leftover]:
        found = []
        cut = len(self.prefix) + 1 if self.prefix else 0
        paginator = self.client.get_paginator("list_multipart_uploads")
        for prefix in prefixes:
            full = (f"{self.prefix}/" if self.prefix else "") + prefix
            for page in paginator.paginate(Bucket=self.bucket, Prefix=full):
                for upload in page.get("Uploads", ()):
                    if upload["Initiated"] < before:
                        since = self._last_activity(upload)
                        if since < before:
                            found.append(Leftover(upload["Key"][cut:], since, upload["UploadId"]))
        return found

    def _last_activity(self, upload: dict) -> datetime.datetime:
        """When an unfinished upload last moved: its newest part, else its start.

        A long upload started before the grace period but still sending parts
        is alive, and must not be aborted.
        """
        newest = upload["Initiated"]
        paginator = self.client.get_paginator("list_parts")
        for page in paginator.paginate(Bucket=self.bucket, Key=upload["Key"], UploadId=upload["UploadId"]):
            for part in page.get("Parts", ()):
                newest = max(newest, part["LastModified"])
        return newest

    @_s3_errors("abort an unfinished upload in")
    def remove_leftover(self, leftover: Leftover) -> None:
        self.client.abort_multipart_upload(Bucket=self.bucket, Key=self._key(leftover.key), UploadId=leftover.handle)

    @_s3_errors("delete from")
    def delete(self, keys: list[str]) -> dict[str, str]:
        failed: dict[str, str] = {}
        for start in range(0, len(keys), 1000):
            batch = keys[start : start + 1000]
            reply = self.client.delete_objects(
                Bucket=self.bucket, Delete={"Objects": [{"Key": self._key(k)} for k in batch], "Quiet": True}
            )
            cut = len(self.prefix) + 1 if self.prefix else 0
            for error in reply.get("Errors", ()):
                failed[error["Key"][cut:]] = f"{error.get('Code')}: {error.get('Message')}"
        return failed


class _S3Reader:
    """A StreamingBody with boto errors translated while reading."""

    def __init__(self, body, storage: S3Storage, key: str) -> None:
        self._body = body
        self._storage = storage
        self._key = key

    def read(self, size: int = -1) -> bytes:
        try:
            return self._body.read(None if size < 0 else size)
        except (botocore.exceptions.BotoCoreError, OSError) as exc:
            raise StorageError(f"reading {self._key} from {self._storage.url} failed: {exc}") from None

    def close(self) -> None:
        self._body.close()

    def __enter__(self):
        return self

    def __exit__(self, *exc) -> None:
        self.close()


class _MultipartWriter:
    """Buffers one part at a time and uploads parts in the background.

    Memory is bounded by ``part_size * (PARTS_IN_FLIGHT + 1)``. An object
    smaller than one part is sent with a single PutObject.
    """

    def __init__(self, storage: S3Storage, key: str) -> None:
        self.storage = storage
        self._key = key
        self._buffer = bytearray()
        self._upload_id: str | None = None
        self._parts: list = []
        self._pool: ThreadPoolExecutor | None = None

    def write(self, data) -> int:
        self._buffer += data
        while len(self._buffer) >= self.storage.part_size:
            part = bytes(self._buffer[: self.storage.part_size])
            del self._buffer[: self.storage.part_size]
            self._send_part(part)
        return len(data)

    def flush(self) -> None:
        pass

    @_s3_errors("write to")
    def _start(self) -> None:
        reply = self.storage.client.create_multipart_upload(
            Bucket=self.storage.bucket, Key=self._key, **self.storage._put_args, **self.storage._lock_args()
        )
        self._upload_id = reply["UploadId"]
        self._pool = ThreadPoolExecutor(PARTS_IN_FLIGHT)

    def _send_part(self, data: bytes) -> None:
        if self._upload_id is None:
            self._start()
        # Wait for the oldest part when the window is full: bounded memory.
        pending = [f for f in self._parts if not f.done()]
        if len(pending) >= PARTS_IN_FLIGHT:
            self._result(pending[0])
        number = len(self._parts) + 1
        self._parts.append(
            self._pool.submit(
                self.storage.client.upload_part,
                Bucket=self.storage.bucket,
                Key=self._key,
                UploadId=self._upload_id,
                PartNumber=number,
                Body=data,
            )
        )

    @_s3_errors("write to")
    def _result(self, future):
        return future.result()

    @_s3_errors("write to")
    def finish(self) -> None:
        if self._upload_id is None:
            self.storage.client.put_object(
                Bucket=self.storage.bucket,
                Key=self._key,
                Body=bytes(self._buffer),
                **self.storage._put_args,
                **self.storage._lock_args(),
            )
            return
        if self._buffer:
            self._send_part(bytes(self._buffer))
            self._buffer.clear()
        parts = [{"PartNumber": n, "ETag": self._result(f)["ETag"]} for n, f in enumerate(self._parts, start=1)]
        self.storage.client.complete_multipart_upload(
            Bucket=self.storage.bucket, Key=self._key, UploadId=self._upload_id, MultipartUpload={"Parts": parts}
        )
        self._pool.shutdown()

    def abort(self) -> None:
        """Drop the upload; a failed upload leaves no object behind."""
        if self._pool is not None:
            self._pool.shutdown(cancel_futures=True)
        if self._upload_id is not None:
            with contextlib.suppress(botocore.exceptions.BotoCoreError, botocore.exceptions.ClientError):
                self.storage.client.abort_multipart_upload(
                    Bucket=self.storage.bucket, Key=self._key, UploadId=self._upload_id
                )


def open_storage(url: str, create: bool = False, **options) -> Storage:
    """The Storage for ``file:///path``, a plain path, or ``s3://bucket/prefix``.

    ``create``: a local directory that does not exist yet is made (for backups; restores want it to exist).
    """
    parsed = urlparse(url)
    if parsed.scheme in ("", "file"):
        if parsed.netloc not in ("", "localhost"):
            raise ConfigurationError(f"storage_url {url!r}: file URLs take an absolute path (file:///path)")
        path = parsed.path if parsed.scheme else url
        if not path.startswith("/"):
            raise ConfigurationError(f"storage_url {url!r}: the directory must be an absolute path")
        return LocalStorage(path, create=create)
    if parsed.scheme == "s3":
        if not parsed.netloc:
            raise ConfigurationError(f"storage_url {url!r} names no bucket (s3://bucket/prefix)")
        return S3Storage(parsed.netloc, parsed.path, **{k: v for k, v in options.items() if v is not None})
    raise ConfigurationError(f"storage_url {url!r}: use file:///path or s3://bucket/prefix")
