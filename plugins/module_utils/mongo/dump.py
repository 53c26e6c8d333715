# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""A consistent dump of a MongoDB replica set into one mongodump archive stream.

Like ``mongodump --archive --oplog``: the oplog position is noted before any
collection is read, collections are read in parallel (their segments
interleaved by one writer thread), and the oplog entries written meanwhile
are stored in the archive's oplog namespace. Restoring the data and then
replaying that oplog gives the state at ``last_ts``, the consistent point.
"""

from __future__ import annotations

import gzip
import queue
import struct
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.common import (
    COLLECTION_VERSION,
    ConfigurationError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.archive import (
    OPLOG_NS,
    ArchiveReader,
    ArchiveWriter,
    Namespace,
    metadata_json,
    parse_metadata,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import (
    AUTH_COLLECTIONS,
    SYSTEM_DATABASES,
    ns_selected,
    translate,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.oplog import NAMESPACE_NOT_FOUND

try:
    import bson
    from bson.timestamp import Timestamp
    from pymongo import errors as pymongo_errors
except ImportError:  # checked by BackupModule
    bson = None

TOOL_VERSION = f"caas.backup {COLLECTION_VERSION}"
BATCH_DOCS = 1000  # per find batch: bounds memory per reader thread (with the server's 16 MiB cap)
_LEN = struct.Struct("<i")


def ts_fact(ts) -> dict | None:
    """A BSON timestamp for the manifest: ``{t, i, iso}``."""
    if ts is None:
        return None
    return {"t": ts.time, "i": ts.inc, "iso": ts.as_datetime().strftime("%Y-%m-%dT%H:%M:%SZ")}


def ts_from_fact(fact: dict | None):
    """The BSON timestamp a manifest's ``{t, i}`` stands for."""
    if not fact:
        return None
    return Timestamp(int(fact["t"]), int(fact["i"]))


def count_documents(data: bytes) -> int:
    """How many BSON documents a buffer of concatenated documents holds."""
    count = offset = 0
    end = len(data)
    unpack = _LEN.unpack_from
    while offset < end:
        offset += unpack(data, offset)[0]
        count += 1
    return count


@dataclass
class DumpPlan:
    """What a dump will read: the namespaces in prelude order, and the server's facts."""

    namespaces: list[Namespace] = field(default_factory=list)
    server_version: str = ""
    replica_set: str | None = None

    def summary(self) -> list[dict]:
        return [{"ns": ns.name, "type": ns.type} for ns in self.namespaces if not ns.is_oplog]


def _collection_metadata(client, db_name: str, info: dict) -> dict:
    """The metadata document mongodump writes for a collection (options, indexes, uuid, name, type)."""
    kind = info.get("type", "collection")
    meta: dict = {}
    options = dict(info.get("options") or {})
    if options:
        meta["options"] = options
    indexes = []
    if kind == "collection":
        for spec in client[db_name][info["name"]].list_indexes():
            spec = dict(spec)
            spec.pop("ns", None)
            indexes.append(spec)
    meta["indexes"] = indexes
    uuid = (info.get("info") or {}).get("uuid")
    if uuid is not None and kind != "view":
        meta["uuid"] = uuid.hex() if isinstance(uuid, bytes) else str(uuid).replace("-", "")
    meta["collectionName"] = info["name"]
    meta["type"] = kind
    return meta


def plan_dump(client, include: list[str], exclude: list[str], users_and_roles: bool, oplog: bool) -> DumpPlan:
    """List what to dump: every database but ``local`` and ``config`` (admin's auth data on request)."""
    try:
        hello = client.admin.command("hello")
        plan = DumpPlan(server_version=client.server_info().get("version", ""), replica_set=hello.get("setName"))
        if oplog and not plan.replica_set:
            raise ConfigurationError(
                "a consistent dump needs the oplog of a replica set, and this server is not one: "
                "set oplog=false for a dump without a consistent point"
            )
        for db_name in sorted(client.list_database_names()):
            if db_name in SYSTEM_DATABASES:
                continue
            for info in sorted(client[db_name].list_collections(), key=lambda i: i["name"]):
                name = info["name"]
                # system.buckets.* go with their time series collection; users and roles are added below.
                if name.startswith("system.") or not ns_selected(f"{db_name}.{name}", include, exclude):
                    continue
                meta = _collection_metadata(client, db_name, info)
                plan.namespaces.append(Namespace(db_name, name, metadata=metadata_json(meta), type=meta["type"]))
    except ConfigurationError:
        raise
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    if not [ns for ns in plan.namespaces if not ns.name.startswith("admin.system.")]:
        raise ConfigurationError(
            f"ns_include {include or ['*']} and ns_exclude {exclude} select no collection on the server: nothing "
            "to dump"
        )
    if users_and_roles:
        # Read with find (SecantusDB lists neither; a real server keeps credentials in them), as mongodump does.
        for name in AUTH_COLLECTIONS:
            meta = {"indexes": [], "collectionName": name, "type": "collection"}
            plan.namespaces.append(Namespace("admin", name, metadata=metadata_json(meta), type="collection"))
    if oplog:
        plan.namespaces.append(Namespace(*OPLOG_NS, type=""))
    return plan


def estimate_dump(client, plan: DumpPlan) -> list[dict]:
    """What a dump of ``plan`` would read, per collection, from the server's statistics (no document is read).

    ``documents`` and ``bytes`` (BSON data size) are those ``collStats`` reports, the counts the server
    keeps: on a server nobody writes to meanwhile they are what the dump reads. A server that refuses
    ``collStats`` (a user without the privilege; MongoDB versions that removed it) gets
    ``estimatedDocumentCount`` and ``bytes`` null instead; ``stats`` says which answered. A view has no
    documents of its own; a time series collection's are in its buckets, as the dump reads them.
    """
    out = []
    try:
        for ns in plan.namespaces:
            if ns.is_oplog:
                continue
            entry = {"ns": ns.name, "type": ns.type, "documents": 0, "bytes": 0, "stats": "view"}
            if ns.type != "view":
                entry.update(_collection_stats(client, ns))
            out.append(entry)
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    return out


def _collection_stats(client, ns: Namespace) -> dict:
    collection = f"system.buckets.{ns.collection}" if ns.type == "timeseries" else ns.collection
    try:
        stats = client[ns.db].command("collStats", collection)
    except pymongo_errors.OperationFailure as exc:
        if exc.code == NAMESPACE_NOT_FOUND:  # listed but gone, or never created (auth collections): nothing to read
            return {"documents": 0, "bytes": 0, "stats": "collStats"}
        count = client[ns.db][collection].estimated_document_count()
        return {"documents": int(count), "bytes": None, "stats": "estimatedDocumentCount"}
    return {"documents": int(stats.get("count") or 0), "bytes": int(stats.get("size") or 0), "stats": "collStats"}


def oplog_position(client):
    """The timestamp of the newest visible oplog entry (None for an empty oplog), as mongodump reads it."""
    entry = client.local["oplog.rs"].find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    return entry["ts"] if entry else None


def batch_first_ts(batch: bytes):
    """The ``ts`` of the first document of a raw batch."""
    return bson.decode(batch[: _LEN.unpack_from(batch)[0]])["ts"]


def batch_last_ts(batch: bytes):
    """The ``ts`` of the last document of a raw batch."""
    offset = last = 0
    while offset < len(batch):
        last = offset
        offset += _LEN.unpack_from(batch, offset)[0]
    return bson.decode(batch[last:offset])["ts"]


class _Mux:
    """Reader threads hand (namespace, bytes, count) batches to the one thread that writes the archive."""

    def __init__(self, depth: int) -> None:
        self.queue: queue.Queue = queue.Queue(depth)
        self.stop = threading.Event()

    def put(self, item) -> None:
        while not self.stop.is_set():
            try:
                self.queue.put(item, timeout=0.2)
                return
            except queue.Full:
                continue
        raise InterruptedError("the dump was stopped")

    def read_collection(self, client, ns: Namespace, data: Namespace) -> None:
        """Hand ``ns``'s documents to the writer, as namespace ``data`` (its buckets for a time series)."""
        try:
            if ns.type != "view":
                for batch in client[data.db][data.collection].find_raw_batches({}, batch_size=BATCH_DOCS):
                    self.put((data.key, batch, count_documents(batch)))
            self.put((data.key, None, 0))
        except InterruptedError:
            return
        except Exception as exc:  # noqa: BLE001  handed to the writer thread, which raises it
            self.put((data.key, exc, 0))


def data_namespace(writer: ArchiveWriter, ns: Namespace) -> Namespace:
    """Where a collection's documents go: a time series view's are in its buckets collection, which
    mongodump archives as a namespace of its own (not in the prelude)."""
    if ns.type != "timeseries":
        return ns
    buckets = Namespace(ns.db, f"system.buckets.{ns.collection}", type="collection")
    writer.namespaces[buckets.key] = buckets
    return buckets


def write_archive(client, out, plan: DumpPlan, parallel: int, oplog: bool) -> dict:
    """Write the whole archive to ``out``; returns the facts for the manifest."""
    writer = ArchiveWriter(out)
    header = {"concurrent_collections": parallel, "server_version": plan.server_version, "tool_version": TOOL_VERSION}
    try:
        start = oplog_position(client) if oplog else None
        if oplog and start is None:
            start = Timestamp(0, 0)
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    writer.prelude(header, plan.namespaces)
    collections = [ns for ns in plan.namespaces if not ns.is_oplog]
    jobs = [(ns, data_namespace(writer, ns)) for ns in collections]
    _write_collections(client, writer, jobs, parallel)
    facts: dict = {"first_ts": None, "last_ts": None, "oplog_entries": 0, "consistent": False}
    if oplog:
        facts.update(_write_oplog(client, writer, start))
    facts["collections"] = [
        {"ns": ns.name, "type": ns.type, "documents": data.documents, "bytes": data.bytes} for ns, data in jobs
    ]
    return facts


def _write_oplog(client, writer: ArchiveWriter, start) -> dict:
    """The oplog entries from ``start`` on, into the oplog namespace; the consistent window.

    As ``mongodump --oplog``, the read starts at the entry ``start`` itself (replaying it is
    idempotent): finding it first proves the oplog did not roll over while the dump ran. The
    consistent point is the last entry read: the oplog is read in order, and a server shows no
    entry with a hole before it.
    """
    end = start
    try:
        oplog = client.local.get_collection("oplog.rs")
        for batch in oplog.find_raw_batches({"ts": {"$gte": start}}, batch_size=BATCH_DOCS):
            if end is start and start.time:
                first = batch_first_ts(batch)
                if first != start:
                    raise SourceError(
                        f"the oplog rolled over during the dump (its entries now start at {first}, the dump "
                        f"started at {start}): the dump cannot be made consistent; enlarge the oplog"
                    )
            writer.write(OPLOG_NS, batch, count_documents(batch))
            end = batch_last_ts(batch)
        if start.time and end is start:
            raise SourceError(f"the oplog no longer holds the entry {start} the dump started at: it rolled over")
        ns = writer.close_namespace(OPLOG_NS)
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    return {"first_ts": ts_fact(start), "last_ts": ts_fact(end), "oplog_entries": ns.documents, "consistent": True}


def _write_collections(client, writer: ArchiveWriter, jobs: list[tuple[Namespace, Namespace]], parallel: int) -> None:
    mux = _Mux(max(2, parallel))
    pool = ThreadPoolExecutor(max_workers=max(1, parallel), thread_name_prefix="mongo-dump")
    try:
        for ns, data in jobs:
            pool.submit(mux.read_collection, client, ns, data)
        remaining = len(jobs)
        while remaining:
            key, data, count = mux.queue.get()
            if isinstance(data, Exception):
                raise translate(data, "the source")
            if data is None:
                writer.close_namespace(key)
                remaining -= 1
            else:
                writer.write(key, data, count)
    finally:
        mux.stop.set()
        pool.shutdown(wait=True)


class _Tee:
    """Reads from ``source`` and copies what was read to ``out``."""

    def __init__(self, source, out) -> None:
        self.source = source
        self.out = out

    def read(self, n: int = -1) -> bytes:
        data = self.source.read(n)
        if data:
            self.out.write(data)
        return data


def open_archive_file(path: str):
    """An archive file made by ``mongodump --archive``, gzip-compressed (``--gzip``) or not."""
    try:
        raw = open(path, "rb")  # noqa: SIM115  closed by the caller
    except OSError as exc:
        raise ConfigurationError(f"archive {path} cannot be read: {exc.strerror}") from None
    if raw.read(2) == b"\x1f\x8b":
        raw.seek(0)
        return gzip.GzipFile(fileobj=raw, mode="rb"), True
    raw.seek(0)
    return raw, False


def import_archive(source, out, name: str) -> dict:
    """Copy an existing archive to ``out`` while checking it completely; returns its manifest facts.

    Every namespace's CRC is checked and documents counted; the consistent
    window is the first and last entry of the archive's oplog, when it has one.
    """
    reader = ArchiveReader(_Tee(source, out), name)
    prelude = reader.read_prelude()
    first = last = None
    for ns, doc in reader.documents():
        if ns.is_oplog:
            ts = bson.decode(doc).get("ts")
            first = first or ts
            last = ts
    oplog_ns = prelude.get(OPLOG_NS)
    return {
        "first_ts": ts_fact(first),
        "last_ts": ts_fact(last),
        "oplog_entries": oplog_ns.documents if oplog_ns else 0,
        "consistent": oplog_ns is not None,
        "collections": [_imported(prelude, ns) for ns in prelude.collections()],
        "server_version": prelude.header.get("server_version", ""),
        "tool_version": prelude.header.get("tool_version", ""),
    }


def _imported(prelude, ns: Namespace) -> dict:
    data = prelude.data_of(ns)
    return {
        "ns": ns.name,
        "type": ns.type or parse_metadata(ns.metadata).get("type", "collection"),
        "documents": data.documents if data else 0,
        "bytes": data.bytes if data else 0,
    }
