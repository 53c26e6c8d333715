# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The mongodump archive format ("0.1"): writer, reader and the namespace CRC.

Layout, as MongoDB Database Tools write and read it (``mongodump --archive``)::

    magic 0x8199e26d (int32 LE)
    header      {concurrent_collections: int32, version: "0.1", server_version, tool_version}
    prelude     one {db, collection, metadata (canonical Extended JSON), size, type} per namespace
    0xffffffff
    then, interleaved:
      segment   {db, collection, EOF: false, CRC: int64 0}  BSON documents...  0xffffffff
      eof       {db, collection, EOF: true,  CRC: int64 <crc>}                 0xffffffff

The CRC of a namespace is Go's ``hash/crc64`` with the ECMA table over the
bytes of all its documents, i.e. CRC-64/XZ, stored as a signed int64. The
oplog captured by ``--oplog`` is the namespace db ``""``, collection ``"oplog"``.
``--gzip`` with ``--archive`` gzips the whole stream.
"""

from __future__ import annotations

import collections
import struct
from collections.abc import Iterator
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.common import IntegrityError

try:
    import bson
    from bson import json_util
    from bson.int64 import Int64
except ImportError:  # checked by BackupModule
    bson = None

try:
    import anycrc

    _CRC64 = anycrc.Model("CRC64-XZ")
except ImportError:  # checked by BackupModule
    _CRC64 = None

MAGIC = 0x8199E26D
MAGIC_BYTES = struct.pack("<I", MAGIC)
TERMINATOR = 0xFFFFFFFF
TERMINATOR_BYTES = struct.pack("<I", TERMINATOR)
FORMAT_VERSION = "0.1"
OPLOG_NS = ("", "oplog")
MAX_BSON = 16 * 1024 * 1024 + 16 * 1024  # a document, plus the slack the server allows internal ones
_INT32 = struct.Struct("<i")


def crc64(data, crc: int = 0) -> int:
    """CRC-64/XZ of ``data`` continuing from ``crc`` (unsigned), as Go's crc64.ECMA hash computes it."""
    return _CRC64.calc(data, crc)


def signed64(value: int) -> int:
    """The unsigned 64-bit ``value`` as the signed int64 Go stores (``int64(hash.Sum64())``)."""
    return value - (1 << 64) if value >= 1 << 63 else value


def metadata_json(metadata: dict) -> str:
    """Canonical Extended JSON v2 without spaces, as mongodump's ``bson.MarshalExtJSON(meta, true, false)``."""
    return json_util.dumps(metadata, json_options=json_util.CANONICAL_JSON_OPTIONS, separators=(",", ":"))


def parse_metadata(text: str) -> dict:
    """A prelude's metadata string back as a document (``{}`` when empty, e.g. for the oplog)."""
    if not text:
        return {}
    try:
        return json_util.loads(text, json_options=json_util.CANONICAL_JSON_OPTIONS)
    except ValueError as exc:
        raise IntegrityError(f"archive metadata is not Extended JSON: {exc}") from None


@dataclass
class Namespace:
    """One namespace of an archive: its prelude entry and what its segments held."""

    db: str
    collection: str
    metadata: str = ""
    size: int = 0
    type: str = "collection"
    documents: int = 0
    bytes: int = 0
    crc: int = 0
    closed: bool = False
    stored_crc: int | None = None

    @property
    def name(self) -> str:
        return f"{self.db}.{self.collection}"

    @property
    def key(self) -> tuple[str, str]:
        return (self.db, self.collection)

    @property
    def is_oplog(self) -> bool:
        return self.key == OPLOG_NS

    def prelude_entry(self) -> dict:
        # Field order and types of mongo-tools' CollectionMetadata (Go int -> int32 when it fits).
        return {
            "db": self.db,
            "collection": self.collection,
            "metadata": self.metadata,
            "size": self.size,
            "type": self.type,
        }


def namespace_header(db: str, collection: str, eof: bool = False, crc: int = 0) -> bytes:
    """The BSON of a segment header (``eof`` false, CRC 0) or a namespace's EOF header."""
    return bson.encode({"db": db, "collection": collection, "EOF": eof, "CRC": Int64(crc)})


class ArchiveWriter:
    """Writes one archive to ``out``: :meth:`prelude` first, then documents and EOFs in any interleaving.

    Calls are not thread-safe: one thread (the multiplexer) writes, the
    collection readers hand it batches of document bytes.
    """

    def __init__(self, out) -> None:
        self.out = out
        self.namespaces: dict[tuple[str, str], Namespace] = {}
        self._current: tuple[str, str] | None = None

    def prelude(self, header: dict, namespaces: list[Namespace]) -> None:
        """Magic number, header and the metadata of every namespace that will follow."""
        self.out.write(MAGIC_BYTES)
        self.out.write(
            bson.encode(
                {
                    "concurrent_collections": int(header.get("concurrent_collections", 1)),
                    "version": FORMAT_VERSION,
                    "server_version": header.get("server_version", ""),
                    "tool_version": header.get("tool_version", ""),
                }
            )
        )
        for ns in namespaces:
            self.namespaces[ns.key] = ns
            self.out.write(bson.encode(ns.prelude_entry()))
        self.out.write(TERMINATOR_BYTES)

    def write(self, key: tuple[str, str], data: bytes, count: int) -> None:
        """Append ``count`` whole BSON documents (their bytes, concatenated) to namespace ``key``.

        Like mongo-tools' multiplexer, a segment header is written only when
        the namespace changes, and an empty ``data`` still opens a segment.
        """
        ns = self.namespaces[key]
        if ns.closed:
            raise IntegrityError(f"namespace {ns.name} was already closed in the archive")
        if key != self._current:
            if self._current is not None:
                self.out.write(TERMINATOR_BYTES)
            self.out.write(namespace_header(*key))
            self._current = key
        if data:
            self.out.write(data)
            ns.crc = crc64(data, ns.crc)
            ns.bytes += len(data)
            ns.documents += count

    def close_namespace(self, key: tuple[str, str]) -> Namespace:
        """The namespace's last (possibly empty) data, then its EOF header with the CRC."""
        self.write(key, b"", 0)
        ns = self.namespaces[key]
        self.out.write(TERMINATOR_BYTES)
        self._current = None
        self.out.write(namespace_header(ns.db, ns.collection, True, signed64(ns.crc)))
        self.out.write(TERMINATOR_BYTES)
        ns.closed = True
        return ns


class _Source:
    """Exact reads from a stream, with the offset for error messages."""

    def __init__(self, stream, name: str) -> None:
        self.stream = stream
        self.name = name
        self.offset = 0

    def read(self, n: int, what: str) -> bytes:
        data = self.stream.read(n)
        while data is not None and len(data) < n:
            more = self.stream.read(n - len(data))
            if not more:
                break
            data += more
        if data is None or len(data) < n:
            raise IntegrityError(f"{self.name} is truncated: it ends inside {what} at byte {self.offset}")
        self.offset += n
        return data

    def length_or_end(self) -> int | None:
        """The next int32 (a document length or the terminator), or None at a clean end of stream."""
        data = self.stream.read(4)
        while data and len(data) < 4:
            more = self.stream.read(4 - len(data))
            if not more:
                break
            data += more
        if not data:
            return None
        if len(data) < 4:
            raise IntegrityError(f"{self.name} is truncated at byte {self.offset}")
        self.offset += 4
        return struct.unpack("<I", data)[0]

    def document(self, length: int, what: str) -> bytes:
        if length < 5 or length > MAX_BSON:
            raise IntegrityError(f"{self.name} is corrupted: {what} at byte {self.offset - 4} has length {length}")
        body = self.read(length - 4, what)
        if body[-1] != 0:
            raise IntegrityError(f"{self.name} is corrupted: {what} at byte {self.offset - length} is not BSON")
        return _INT32.pack(length) + body


def _decode(doc: bytes, what: str, name: str) -> dict:
    try:
        return bson.decode(doc)
    except Exception as exc:  # noqa: BLE001  bson raises several types for bad bytes: all mean corruption
        raise IntegrityError(f"{name} is corrupted: {what} is not valid BSON ({exc})") from None


@dataclass
class Prelude:
    """The archive header and its namespaces, in prelude order."""

    header: dict
    namespaces: list[Namespace] = field(default_factory=list)

    def get(self, key: tuple[str, str]) -> Namespace | None:
        for ns in self.namespaces:
            if ns.key == key:
                return ns
        return None

    def data_of(self, ns: Namespace) -> Namespace | None:
        """The namespace holding ``ns``'s documents: a time series view's are in its buckets collection."""
        if ns.type == "timeseries":
            return self.get((ns.db, f"system.buckets.{ns.collection}"))
        return ns

    def collections(self) -> list[Namespace]:
        """The prelude's collections, views and time series (not the oplog, not buckets namespaces)."""
        return [ns for ns in self.namespaces if not ns.is_oplog and not ns.collection.startswith("system.buckets.")]


class ArchiveReader:
    """Reads an archive as mongo-tools' demultiplexer does, checking each namespace's CRC at its EOF.

    :meth:`read_prelude` first; then :meth:`documents` yields ``(namespace,
    document bytes)`` for every document and raises :class:`IntegrityError`
    on a CRC mismatch, a truncated stream, or a namespace never closed.
    """

    def __init__(self, stream, name: str = "archive") -> None:
        self.source = _Source(stream, name)
        self.name = name
        self.prelude: Prelude | None = None

    def read_prelude(self) -> Prelude:
        magic = self.source.length_or_end()
        if magic != MAGIC:
            raise IntegrityError(f"{self.name} is not a mongodump archive (no magic number 0x8199e26d)")
        length = self.source.length_or_end()
        if length is None or length == TERMINATOR:
            raise IntegrityError(f"{self.name} is truncated: no archive header")
        header = _decode(self.source.document(length, "the header"), "the header", self.name)
        if header.get("version") != FORMAT_VERSION:
            raise IntegrityError(f"{self.name} has archive format {header.get('version')!r}, not {FORMAT_VERSION}")
        prelude = Prelude(header)
        while True:
            length = self.source.length_or_end()
            if length is None:
                raise IntegrityError(f"{self.name} is truncated inside its prelude")
            if length == TERMINATOR:
                break
            entry = _decode(self.source.document(length, "a prelude entry"), "a prelude entry", self.name)
            prelude.namespaces.append(
                Namespace(
                    db=str(entry.get("db", "")),
                    collection=str(entry.get("collection", "")),
                    metadata=str(entry.get("metadata") or ""),
                    size=int(entry.get("size") or 0),
                    type=str(entry.get("type") or ""),
                )
            )
        self.prelude = prelude
        return prelude

    def _expected(self) -> dict[tuple[str, str], Namespace]:
        # Time series views carry no data of their own (their buckets collection does).
        return {ns.key: ns for ns in self.prelude.namespaces if ns.type != "timeseries"}

    def documents(self) -> Iterator[tuple[Namespace, bytes]]:
        """Every document with its namespace, CRCs checked; then the check that every namespace ended."""
        if self.prelude is None:
            self.read_prelude()
        expected = self._expected()
        source = self.source
        while True:
            length = source.length_or_end()
            if length is None:
                break
            if length == TERMINATOR:
                raise IntegrityError(f"{self.name} is corrupted: a terminator where a header should be")
            header = _decode(source.document(length, "a namespace header"), "a namespace header", self.name)
            key = (str(header.get("db", "")), str(header.get("collection", "")))
            if not key[1]:
                raise IntegrityError(f"{self.name} is corrupted: a namespace header without a collection")
            ns = expected.get(key)
            if ns is None:
                # mongorestore accepts namespaces missing from the prelude (e.g. the oplog of old tools).
                ns = expected[key] = Namespace(key[0], key[1], type="")
                self.prelude.namespaces.append(ns)
            if ns.closed:
                raise IntegrityError(f"{self.name} is corrupted: data for {ns.name} after its end")
            if header.get("EOF"):
                ns.stored_crc = int(header.get("CRC", 0))
                if signed64(ns.crc) != ns.stored_crc:
                    raise IntegrityError(
                        f"{self.name} is corrupted: namespace {ns.name} has CRC {signed64(ns.crc)} "
                        f"but the archive says {ns.stored_crc}"
                    )
                ns.closed = True
                if source.length_or_end() != TERMINATOR:
                    raise IntegrityError(f"{self.name} is corrupted: data after the end of {ns.name}")
                continue
            while True:
                length = source.length_or_end()
                if length is None:
                    raise IntegrityError(f"{self.name} is truncated inside the data of {ns.name}")
                if length == TERMINATOR:
                    break
                doc = source.document(length, f"a document of {ns.name}")
                ns.crc = crc64(doc, ns.crc)
                ns.documents += 1
                ns.bytes += length
                yield ns, doc
        unfinished = [ns.name for ns in expected.values() if not ns.closed]
        if unfinished:
            raise IntegrityError(
                f"{self.name} is truncated: namespace(s) {', '.join(unfinished[:5])} never reached their end"
            )

    def verify(self) -> Prelude:
        """Read everything, checking every CRC; returns the prelude with per-namespace counts."""
        collections.deque(self.documents(), maxlen=0)
        return self.prelude
