# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Streaming pipelines: compress -> encrypt -> hash on the way out, the reverse on the way in.

Everything here moves data in bounded chunks, so memory stays flat whatever
the size of a backup. The formats are the stock ones: zstd frames (with
checksums), gzip members, and the age v1 format encrypted to X25519
recipients, so ``age -d -i key.txt obj | zstd -d`` opens any object.
"""

from __future__ import annotations

import contextlib
import gzip
import hashlib
import io
import queue
import threading
import zlib
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, BinaryIO

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    EncryptionError,
    IntegrityError,
)

try:
    import zstandard
except ImportError:  # checked by BackupModule
    zstandard = None

try:
    import pyrage
    from pyrage import x25519
except ImportError:  # checked by BackupModule
    pyrage = None

if TYPE_CHECKING:
    from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey

CHUNK = 1024 * 1024
COMPRESSIONS = ("zstd", "gzip", "none")
SUFFIXES = {"zstd": ".zst", "gzip": ".gz", "none": ""}


@dataclass(frozen=True)
class WriteOptions:
    """How objects of a new backup set are written."""

    compression: str = "zstd"
    level: int | None = None
    recipients: tuple[str, ...] = field(default_factory=tuple)
    # Signs the set's manifest (manifest.json.sig); objects themselves are covered by the manifest's sha256s.
    signer: SigningKey | None = field(default=None, repr=False)

    def suffix(self) -> str:
        """File name suffix that tells stock tools how to open the object."""
        return SUFFIXES[self.compression] + (".age" if self.recipients else "")


def recipient_fingerprint(recipient: str) -> str:
    """A short, stable name for an age recipient, for manifests and logs."""
    return "sha256:" + hashlib.sha256(recipient.strip().encode()).hexdigest()[:16]


def parse_recipients(recipients: tuple[str, ...] | list[str]) -> list:
    """age X25519 recipients from their ``age1...`` strings."""
    parsed = []
    for text in recipients:
        try:
            parsed.append(x25519.Recipient.from_str(text.strip()))
        except pyrage.RecipientError as exc:
            raise EncryptionError(f"invalid age recipient {text.strip()!r}: {exc}") from None
    return parsed


def parse_identities(identities: list[str]) -> list:
    """age X25519 identities; the error never repeats the key itself."""
    parsed = []
    for number, text in enumerate(identities, start=1):
        try:
            parsed.append(x25519.Identity.from_str(text.strip()))
        except pyrage.IdentityError:  # its text may quote the key: never repeat it
            raise EncryptionError(
                f"encryption identity #{number} is not a valid age X25519 identity (AGE-SECRET-KEY-1...)"
            ) from None
    return parsed


class _Pipe(io.RawIOBase):
    """A bounded byte channel between two threads, readable on one side."""

    def __init__(self, depth: int = 8) -> None:
        super().__init__()
        self._queue: queue.Queue = queue.Queue(depth)
        self._pending = b""
        self._eof = False
        self.cancelled = threading.Event()

    def put(self, data: bytes | None) -> None:
        """Queue a chunk (``None`` marks the end); raises once the other side gave up."""
        while True:
            if self.cancelled.is_set():
                raise BrokenPipeError("the other end of the pipeline stopped")
            try:
                self._queue.put(data, timeout=0.1)
                return
            except queue.Full:
                continue

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        while not self._pending and not self._eof:
            if self.cancelled.is_set():
                raise BrokenPipeError("the other end of the pipeline stopped")
            try:
                chunk = self._queue.get(timeout=0.1)
            except queue.Empty:
                continue
            if chunk is None:
                self._eof = True
            else:
                self._pending = chunk
        n = min(len(buffer), len(self._pending))
        buffer[:n] = self._pending[:n]
        self._pending = self._pending[n:]
        return n

    def cancel(self) -> None:
        """Unblock both sides for good."""
        self.cancelled.set()
        while True:
            try:
                self._queue.get_nowait()
            except queue.Empty:
                return


class _PipeWriter:
    """The writable face of a :class:`_Pipe`, handed to pyrage as its output."""

    def __init__(self, pipe: _Pipe) -> None:
        self._pipe = pipe

    def write(self, data) -> int:
        self._pipe.put(bytes(data))
        return len(data)

    def flush(self) -> None:
        pass


class _Worker:
    """Runs one pyrage streaming call in a thread and keeps its exception."""

    def __init__(self, target, *args) -> None:
        self.error: BaseException | None = None
        self._thread = threading.Thread(target=self._run, args=(target, args), daemon=True)
        self._thread.start()

    def _run(self, target, args) -> None:
        try:
            target(*args)
        except BaseException as exc:  # noqa: BLE001  handed to the caller's thread, which raises it
            self.error = exc

    def join(self) -> None:
        self._thread.join()


class _Hasher:
    """Pass-through writer that counts and hashes what goes by."""

    def __init__(self, downstream) -> None:
        self.downstream = downstream
        self.sha256 = hashlib.sha256()
        self.size = 0

    def write(self, data) -> int:
        self.sha256.update(data)
        self.size += len(data)
        self.downstream.write(data)
        return len(data)

    def flush(self) -> None:
        pass


class _Recording:
    """Pass-through writer that remembers the exception its downstream raised."""

    def __init__(self, downstream) -> None:
        self.downstream = downstream
        self.error: BaseException | None = None

    def write(self, data) -> int:
        try:
            return self.downstream.write(data)
        except BaseException as exc:
            self.error = exc
            raise

    def flush(self) -> None:
        pass


class _AgeWriter:
    """Encrypts what is written to it into ``downstream`` (age v1, X25519)."""

    def __init__(self, downstream, recipients: list) -> None:
        self._pipe = _Pipe()
        self._worker = _Worker(self._encrypt, downstream, recipients)

    def _encrypt(self, downstream, recipients: list) -> None:
        sink = _Recording(downstream)
        try:
            pyrage.encrypt_io(self._pipe, sink, recipients)
        except BaseException as exc:  # noqa: BLE001  re-raised below
            self._pipe.cancel()  # unblock the writer, which then raises this error
            # pyrage wraps a failing sink's error in EncryptError: raise the sink's own.
            raise (sink.error or exc) from None

    def write(self, data) -> int:
        try:
            self._pipe.put(bytes(data))
        except BrokenPipeError:
            self._raise_worker_error()
            raise
        return len(data)

    def flush(self) -> None:
        pass

    def _raise_worker_error(self) -> None:
        self._worker.join()
        if self._worker.error is not None:
            raise self._worker.error

    def close(self) -> None:
        self._pipe.put(None)
        self._raise_worker_error()

    def abort(self) -> None:
        self._pipe.cancel()
        self._worker.join()


class _Passthrough:
    def __init__(self, downstream) -> None:
        self.write = downstream.write

    def close(self) -> None:
        pass


def _compressor(downstream, compression: str, level: int | None):
    if compression == "zstd":
        cctx = zstandard.ZstdCompressor(level=level or 3, write_checksum=True)
        return cctx.stream_writer(downstream, closefd=False, write_return_read=True)
    if compression == "gzip":
        return gzip.GzipFile(fileobj=downstream, mode="wb", compresslevel=level or 6, mtime=0)
    if compression == "none":
        return _Passthrough(downstream)
    raise ConfigurationError(f"unknown compression {compression!r}: use one of {', '.join(COMPRESSIONS)}")


class ObjectWriter:
    """The writable end of one object's pipeline: raw -> compress -> encrypt -> sha256 -> sink.

    Use as a context manager, or call :meth:`close` (which returns the
    object's record) and :meth:`abort` yourself. Closing never closes the sink.
    """

    def __init__(self, sink, options: WriteOptions) -> None:
        self.options = options
        self._stored = _Hasher(sink)
        self._encryptor = _AgeWriter(self._stored, parse_recipients(options.recipients)) if options.recipients else None
        self._compressor = _compressor(self._encryptor or self._stored, options.compression, options.level)
        self.raw_size = 0
        self.record: dict | None = None

    def write(self, data) -> int:
        self.raw_size += len(data)
        self._compressor.write(data)
        return len(data)

    def flush(self) -> None:
        pass

    def close(self) -> dict:
        """Finish every layer; returns size, sha256 and format facts of the stored bytes."""
        if self.record is None:
            self._compressor.close()
            if self._encryptor:
                self._encryptor.close()
            self.record = {
                "size": self._stored.size,
                "sha256": self._stored.sha256.hexdigest(),
                "raw_size": self.raw_size,
                "compression": self.options.compression,
                "encryption": (
                    {"format": "age", "recipients": [recipient_fingerprint(r) for r in self.options.recipients]}
                    if self.options.recipients
                    else None
                ),
            }
        return self.record

    def abort(self) -> None:
        """Stop the pipeline's threads after a failure."""
        if self._encryptor:
            self._encryptor.abort()

    def __enter__(self) -> ObjectWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        if exc_type is None:
            self.close()
        else:
            self.abort()


class _AgeReader(io.RawIOBase):
    """Decrypts ``upstream`` (age v1) as it is read.

    ``recipients`` are the fingerprints the manifest says the object was
    encrypted to: when one of ``identities`` is among them and still no
    stanza opens, the header was damaged, not the key wrong.
    """

    def __init__(self, upstream, identities: list, name: str, recipients: list[str]) -> None:
        super().__init__()
        self._name = name
        self._holds_recipient = bool(
            {recipient_fingerprint(str(i.to_public())) for i in identities} & set(recipients or ())
        )
        self._pipe = _Pipe()
        self._worker = _Worker(self._decrypt, upstream, identities)

    def _decrypt(self, upstream, identities) -> None:
        try:
            pyrage.decrypt_io(upstream, _PipeWriter(self._pipe), identities)
        finally:
            with contextlib.suppress(BrokenPipeError):
                self._pipe.put(None)

    def _error(self, error: BaseException) -> Exception:
        """The error to raise for pyrage's ``error``: a wrong key, a damaged header, or damaged data."""
        if type(error).__name__ != "DecryptError":  # past the header: a payload chunk failed its tag
            return IntegrityError(f"{self._name} is corrupted or truncated (age decryption failed: {error})")
        if "No matching keys" in str(error) and not self._holds_recipient:
            return EncryptionError(f"none of the given identities can decrypt {self._name}: {error}")
        # A bad MAC or syntax, or a stanza that the right identity cannot open: the header was altered.
        return IntegrityError(f"age header of {self._name} is corrupted ({error})")

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        n = self._pipe.readinto(buffer)
        if n == 0:
            self._worker.join()
            if self._worker.error is not None:
                raise self._error(self._worker.error)
        return n

    def close(self) -> None:
        if not self.closed:
            self._pipe.cancel()
            self._worker.join()
        super().close()


class ObjectReader(io.RawIOBase):
    """The readable end of one object's pipeline: decrypt -> decompress.

    Format errors surface as :class:`IntegrityError` naming the object.
    """

    def __init__(self, fileobj: BinaryIO, record: dict, identities: list[str], name: str) -> None:
        super().__init__()
        self._name = name
        self._layers: list = []  # what this reader opened; the caller's fileobj stays open
        source = fileobj
        if record.get("encryption"):
            if not identities:
                raise EncryptionError(f"{name} is encrypted: give encryption_identity or encryption_identity_file")
            recipients = record["encryption"].get("recipients") or []
            source = io.BufferedReader(_AgeReader(source, parse_identities(identities), name, recipients), CHUNK)
            self._layers.append(source)
        compression = record.get("compression", "none")
        if compression == "zstd":
            source = zstandard.ZstdDecompressor().stream_reader(source, read_across_frames=True, closefd=False)
            self._layers.append(source)
        elif compression == "gzip":
            source = gzip.GzipFile(fileobj=source, mode="rb")
            self._layers.append(source)
        elif compression != "none":
            raise IntegrityError(f"{name} uses an unknown compression {compression!r}")
        self._source = source

    def readable(self) -> bool:
        return True

    def readinto(self, buffer) -> int:
        try:
            data = self._source.read(len(buffer))
        except (zlib.error, EOFError, gzip.BadGzipFile) as exc:
            raise IntegrityError(f"{self._name} is corrupted or truncated (gzip: {exc})") from None
        except Exception as exc:
            if zstandard is not None and isinstance(exc, zstandard.ZstdError):
                raise IntegrityError(f"{self._name} is corrupted or truncated (zstd: {exc})") from None
            raise
        n = len(data)
        buffer[:n] = data
        return n

    def close(self) -> None:
        if not self.closed:
            for layer in reversed(self._layers):
                layer.close()
        super().close()


def read_up_to(reader, n: int) -> bytes:
    """``n`` bytes from ``reader``, fewer only at its end (a stream's ``read`` may return less than asked)."""
    out = b""
    while len(out) < n:
        chunk = reader.read(n - len(out))
        if not chunk:
            break
        out += chunk
    return out


def read_frames(
    reader, name: str, what: str, head_size: int, body_size: Callable[[bytes], int | str]
) -> Iterator[tuple[int, bytes]]:
    """The length-prefixed frames of a stream, one at a time: ``(byte offset, head + body)``.

    ``body_size(head)`` gives the bytes that follow a frame's head, or what is
    wrong with it (a phrase such as ``"an invalid length 3"``); that, and a
    stream cut inside a frame, raise IntegrityError naming ``what`` and where.
    """
    offset = 0
    while True:
        head = read_up_to(reader, head_size)
        if not head:
            return
        if len(head) < head_size:
            raise IntegrityError(f"{name} ends inside a {what} header at byte {offset}")
        size = body_size(head)
        if isinstance(size, str):
            raise IntegrityError(f"{name} has {size} at byte {offset}")
        body = read_up_to(reader, size)
        if len(body) != size:
            raise IntegrityError(f"{name} has a truncated or malformed {what} at byte {offset}")
        yield offset, head + body
        offset += head_size + size


def copy_hashed(
    src: BinaryIO, dst, expected_sha256: str | None = None, expected_size: int | None = None, name: str = "object"
) -> tuple[int, str]:
    """Copy ``src`` to ``dst`` in chunks; check size and sha256 when expected values are given."""
    sha = hashlib.sha256()
    size = 0
    while True:
        chunk = src.read(CHUNK)
        if not chunk:
            break
        sha.update(chunk)
        size += len(chunk)
        if dst is not None:
            dst.write(chunk)
    digest = sha.hexdigest()
    if expected_size is not None and size != expected_size:
        raise IntegrityError(f"{name} is {size} bytes but its manifest says {expected_size}: truncated or replaced")
    if expected_sha256 is not None and digest != expected_sha256:
        raise IntegrityError(f"{name} has sha256 {digest} but its manifest says {expected_sha256}: corrupted")
    return size, digest
