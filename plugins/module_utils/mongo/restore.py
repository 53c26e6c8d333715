# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Restore of a mongodump archive: select, plan, then write.

The archive is read twice. The first pass (:func:`verify_archive`) checks
every namespace's CRC and counts documents; only then does
:func:`restore_archive` drop anything, create collections with their options,
insert the documents with parallel workers, build indexes, and replay the
archive's oplog up to its consistent point.
"""

from __future__ import annotations

import io
import json
import re
import threading
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.archive import (
    ArchiveReader,
    Namespace,
    Prelude,
    parse_metadata,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import (
    AUTH_COLLECTIONS,
    AUTH_STAGING,
    ns_selected,
    translate,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.oplog import apply_entries

try:
    import bson
    import bson.json_util
    from bson.raw_bson import RawBSONDocument
    from pymongo import errors as pymongo_errors
    from pymongo.write_concern import WriteConcern
except ImportError:  # checked by BackupModule
    bson = None

CHUNK = 1024 * 1024
BATCH_DOCS = 1000
BATCH_BYTES = 8 * 1024 * 1024
DUPLICATE_KEY = 11000
INDEX_FIELDS_DROPPED = ("ns", "entryFormat")


def buffered(reader) -> io.BufferedReader:
    """A buffered view of an object reader, so small archive reads stay cheap."""
    return io.BufferedReader(reader, CHUNK)


def verify_archive(reader, name: str, facts: dict | None = None) -> Prelude:
    """First pass: read the whole archive, checking its format, every namespace's CRC, and the counts.

    ``facts`` are the manifest's: each collection must hold as many documents as the manifest says.
    """
    prelude = ArchiveReader(buffered(reader), name).verify()
    for fact in (facts or {}).get("collections") or ():
        ns = prelude.get(tuple(str(fact.get("ns", "")).split(".", 1)))
        data = prelude.data_of(ns) if ns else None
        found = data.documents if data else 0 if ns else None
        if found != fact.get("documents"):
            raise IntegrityError(
                f"{name} holds {found} documents of {fact.get('ns')} but its manifest says {fact.get('documents')}"
            )
    return prelude


class Renamer:
    """``ns_from``/``ns_to`` pairs with ``*`` wildcards, as mongorestore's ``--nsFrom``/``--nsTo``."""

    def __init__(self, ns_from: list[str], ns_to: list[str]) -> None:
        if len(ns_from) != len(ns_to):
            raise ConfigurationError("ns_from and ns_to must have the same number of patterns")
        self.rules = []
        for source, target in zip(ns_from, ns_to, strict=True):
            if source.count("*") != target.count("*"):
                raise ConfigurationError(f"ns_from {source!r} and ns_to {target!r} must have as many '*' wildcards")
            if "." not in source or "." not in target:
                raise ConfigurationError(f"ns_from {source!r} and ns_to {target!r} must be db.collection patterns")
            regex = re.compile("^" + "(.*)".join(re.escape(p) for p in source.split("*")) + "$", re.DOTALL)
            self.rules.append((regex, target.split("*")))

    def __call__(self, name: str) -> str:
        for regex, parts in self.rules:
            match = regex.match(name)
            if match:
                out = parts[0]
                for group, part in zip(match.groups(), parts[1:], strict=True):
                    out += group + part
                return out
        return name


@dataclass
class Target:
    """One namespace of the archive and where it goes."""

    source: Namespace
    target: str
    metadata: dict = field(default_factory=dict)
    existed: bool = False
    restored: int = 0
    duplicates: int = 0
    oplog_ops: int = 0
    indexes: int = 0
    auth: bool = False

    @property
    def kind(self) -> str:
        return self.source.type or self.metadata.get("type") or "collection"

    @property
    def db(self) -> str:
        return self.target.split(".", 1)[0]

    @property
    def collection(self) -> str:
        return self.target.split(".", 1)[1]

    @property
    def data_collection(self) -> str:
        """Where the documents go: a time series collection's are its buckets (as mongorestore does)."""
        return f"system.buckets.{self.collection}" if self.kind == "timeseries" else self.collection

    def data_key(self) -> tuple[str, str]:
        """The archive namespace holding this collection's documents (time series: its buckets)."""
        if self.kind == "timeseries":
            return (self.source.db, f"system.buckets.{self.source.collection}")
        return self.source.key


@dataclass
class RestorePlan:
    """What a restore does: the namespaces, what it drops, whether it replays an oplog."""

    targets: list[Target]
    drop: list[str]
    oplog_entries: int
    drop_users: bool = False

    def by_data_key(self) -> dict[tuple[str, str], Target]:
        return {t.data_key(): t for t in self.targets}

    def ns_map(self):
        """Source ``db.collection`` to target, None when not restored (for the oplog replay)."""
        names = {t.source.name: t.target for t in self.targets}
        names.update(
            {
                f"{t.data_key()[0]}.{t.data_key()[1]}": f"{t.db}.system.buckets.{t.collection}"
                for t in self.targets
                if t.kind == "timeseries"
            }
        )
        return names.get

    def summary(self) -> list[dict]:
        return [
            {"ns": t.source.name, "target": t.target, "type": t.kind, "documents": t.source.documents}
            for t in self.targets
        ]


def select(
    prelude: Prelude, include: list[str], exclude: list[str], renamer: Renamer, users_and_roles: bool
) -> list[Target]:
    """The archive's namespaces that the filters keep, each with its target name."""
    targets = []
    for ns in prelude.namespaces:
        if ns.is_oplog or ns.collection.startswith("system.buckets."):
            continue
        auth = ns.db == "admin" and ns.collection in AUTH_COLLECTIONS
        if auth and not users_and_roles:
            continue
        if not auth and not ns_selected(ns.name, include, exclude):
            continue
        name = f"admin.{AUTH_STAGING[ns.collection]}" if auth else renamer(ns.name)
        targets.append(Target(ns, name, parse_metadata(ns.metadata), auth=auth))
    if not [t for t in targets if not t.source.name.startswith("admin.system.")]:
        names = ", ".join(ns.name for ns in prelude.namespaces if not ns.is_oplog)[:300]
        raise ConfigurationError(
            f"ns_include {include or ['*']} and ns_exclude {exclude} select no collection of "
            f"the backup (it holds: {names or 'nothing'}): nothing to restore"
        )
    return targets


def plan(client, prelude: Prelude, targets: list[Target], drop: bool, oplog_replay: bool) -> RestorePlan:
    """Look at the target server: which restored collections exist (and would be dropped)."""
    try:
        existing: dict[str, set[str]] = {}
        for target in targets:
            if target.db not in existing:
                existing[target.db] = set(client[target.db].list_collection_names())
            target.existed = target.collection in existing[target.db]
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the target") from None
    if any(t.auth for t in targets):
        _check_auth_merge(client)
    oplog = prelude.get(("", "oplog"))
    return RestorePlan(
        targets=targets,
        drop=[t.target for t in targets if drop and t.existed and not t.auth],
        oplog_entries=oplog.documents if (oplog and oplog_replay) else 0,
        drop_users=drop,
    )


def _check_auth_merge(client) -> None:
    """Users and roles are merged as mongorestore does: refuse early when the server cannot."""
    try:
        commands = client.admin.command("listCommands").get("commands", {})
    except pymongo_errors.OperationFailure:
        commands = {}
    if "_mergeAuthzCollections" not in commands:
        raise SourceError(
            "the target cannot restore users and roles (it has no _mergeAuthzCollections command, which "
            "mongorestore uses too): set restore_users_and_roles=false, or create the users by hand"
        )


def _merge_users_and_roles(client, restore_plan: RestorePlan) -> None:
    staged = {t.source.collection: t.target for t in restore_plan.targets if t.auth}
    if not staged:
        return
    client.admin.command(
        {
            "_mergeAuthzCollections": 1,
            "tempUsersCollection": staged.get("system.users", "admin.tempusers"),
            "tempRolesCollection": staged.get("system.roles", "admin.temproles"),
            "drop": restore_plan.drop_users,
            "db": "",
            "writeConcern": {"w": "majority"},
        }
    )
    for target in staged.values():
        client.admin.drop_collection(target.split(".", 1)[1])


class _Inserter:
    """Parallel ``insert_many`` workers with a bounded number of batches in flight."""

    def __init__(self, client, workers: int, write_concern: dict) -> None:
        self.client = client
        self.pool = ThreadPoolExecutor(max_workers=max(1, workers), thread_name_prefix="mongo-restore")
        self.limit = max(1, workers) * 2
        self.pending: list = []
        self.write_concern = WriteConcern(**write_concern) if write_concern else None
        self.lock = threading.Lock()

    def submit(self, target: Target, docs: list) -> None:
        if len(self.pending) >= self.limit:
            self.pending.pop(0).result()
        self.pending.append(self.pool.submit(self._insert, target, docs))

    def _insert(self, target: Target, docs: list) -> None:
        coll = self.client[target.db].get_collection(target.data_collection, write_concern=self.write_concern)
        try:
            coll.insert_many(docs, ordered=False, bypass_document_validation=True)
            with self.lock:
                target.restored += len(docs)
        except pymongo_errors.BulkWriteError as exc:
            errors = exc.details.get("writeErrors", [])
            if any(e.get("code") != DUPLICATE_KEY for e in errors) or exc.details.get("writeConcernErrors"):
                first = (errors or exc.details.get("writeConcernErrors") or [{}])[0]
                raise SourceError(f"inserting into {target.target} failed: {first.get('errmsg', exc)}") from None
            with self.lock:
                target.duplicates += len(errors)
                target.restored += exc.details.get("nInserted", 0)

    def flush(self) -> None:
        while self.pending:
            self.pending.pop(0).result()

    def close(self) -> None:
        self.pool.shutdown(wait=True, cancel_futures=True)


def _build_indexes(client, target: Target) -> int:
    specs = []
    for spec in target.metadata.get("indexes") or ():
        if spec.get("name") == "_id_":
            continue
        specs.append({k: v for k, v in spec.items() if k not in INDEX_FIELDS_DROPPED})
    if specs and target.kind == "collection":
        client[target.db].command({"createIndexes": target.collection, "indexes": specs})
    return len(specs)


def restore_archive(
    client, reader, name: str, restore_plan: RestorePlan, *, workers: int = 1, write_concern: dict | None = None
) -> dict:
    """Second pass: drop, create, insert, build indexes, replay the oplog. Returns what was done."""
    try:
        return _restore(client, reader, name, restore_plan, workers, write_concern or {})
    except (IntegrityError, ConfigurationError, SourceError):
        raise
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the target") from None


def _restore(client, reader, name, restore_plan: RestorePlan, workers: int, write_concern: dict) -> dict:
    for target_name in restore_plan.drop:
        tdb, tcoll = target_name.split(".", 1)
        client[tdb].drop_collection(tcoll)
    for target in restore_plan.targets:
        if target.auth:  # a staging collection of its own, whatever a failed run left
            client.admin.drop_collection(target.collection)
            target.existed = False
    dropped = set(restore_plan.drop)
    for target in restore_plan.targets:
        fresh = not target.existed or target.target in dropped
        if target.kind in ("collection", "timeseries") and fresh:
            client[target.db].command({"create": target.collection, **(target.metadata.get("options") or {})})
    for target in restore_plan.targets:  # views last: they may be defined on restored collections
        if target.kind == "view" and (not target.existed or target.target in dropped):
            client[target.db].command({"create": target.collection, **(target.metadata.get("options") or {})})
    by_key = restore_plan.by_data_key()
    inserter = _Inserter(client, workers, write_concern)
    batches: dict[tuple[str, str], list] = {}
    sizes: dict[tuple[str, str], int] = {}
    indexes_built = False
    oplog_batch: list = []
    applied: dict[str, int] = {}
    ns_map = restore_plan.ns_map()

    def finish_data() -> None:
        for key, docs in batches.items():
            if docs:
                inserter.submit(by_key[key], docs)
        batches.clear()
        inserter.flush()
        for target in restore_plan.targets:
            target.indexes = _build_indexes(client, target)
        _merge_users_and_roles(client, restore_plan)

    try:
        for ns, doc in ArchiveReader(buffered(reader), name).documents():
            if ns.is_oplog:
                if not restore_plan.oplog_entries:
                    continue
                if not indexes_built:
                    finish_data()
                    indexes_built = True
                oplog_batch.append(bson.decode(doc))
                if len(oplog_batch) >= BATCH_DOCS:
                    _merge(applied, apply_entries(client, oplog_batch, ns_map))
                    oplog_batch = []
                continue
            target = by_key.get(ns.key)
            if target is None:
                continue
            docs = batches.setdefault(ns.key, [])
            docs.append(RawBSONDocument(doc))
            sizes[ns.key] = sizes.get(ns.key, 0) + len(doc)
            if len(docs) >= BATCH_DOCS or sizes[ns.key] >= BATCH_BYTES:
                inserter.submit(target, docs)
                batches[ns.key] = []
                sizes[ns.key] = 0
        if not indexes_built:
            finish_data()
        if oplog_batch:
            _merge(applied, apply_entries(client, oplog_batch, ns_map))
    finally:
        inserter.close()
    return _report(client, restore_plan, applied)


def _merge(total: dict[str, int], more: dict[str, int]) -> None:
    for key, value in more.items():
        total[key] = total.get(key, 0) + value


def _report(client, restore_plan: RestorePlan, applied: dict[str, int]) -> dict:
    """Compare each collection's count with the archive's; a mismatch where none can be explained fails."""
    collections = []
    mismatches = []
    for target in restore_plan.targets:
        if target.auth:
            collections.append(
                {
                    "ns": target.source.name,
                    "target": "admin",
                    "type": "users and roles",
                    "expected": target.source.documents,
                    "inserted": target.restored,
                }
            )
            continue
        if target.kind == "view":
            collections.append({"ns": target.source.name, "target": target.target, "type": "view"})
            continue
        # The collection's own count (metadata on a real server, exact for a collection written from
        # empty): count_documents would scan every restored document once more.
        count = client[target.db][target.collection].estimated_document_count() if target.kind == "collection" else None
        ops = applied.get(target.target, 0)
        fresh = not target.existed or target.target in restore_plan.drop
        match = None if (ops or not fresh or count is None) else count == target.source.documents
        if match is False:
            mismatches.append(f"{target.target} has {count} documents, the backup {target.source.documents}")
        collections.append(
            {
                "ns": target.source.name,
                "target": target.target,
                "type": target.kind,
                "expected": target.source.documents,
                "count": count,
                "inserted": target.restored,
                "duplicates": target.duplicates,
                "oplog_ops": ops,
                "indexes": target.indexes,
                "match": match,
            }
        )
    if mismatches:
        raise IntegrityError("restored counts differ from the backup: " + "; ".join(mismatches))
    return {"collections": collections, "oplog_applied": sum(applied.values())}


def erase(client, requests: list, ns_map=None, collections: list[dict] | tuple = ()) -> dict:
    """Apply the erasure ledger's MongoDB items to the restored data (the engine's applier of erasure.py).

    ``ns_map`` maps a backed-up namespace to where this restore put it (None: not restored, nothing to
    erase there); without it every namespace is its own target (a point-in-time restore). ``collections``
    (:func:`restore_archive`'s report) get each collection's count after the erasure and its ``erased``.
    """
    from ansible_collections.caas.backup.plugins.module_utils.erasure import apply_ledger

    def applier(item: dict) -> list[tuple[str, int]]:
        target = ns_map(item["namespace"]) if ns_map else item["namespace"]
        if target is None:
            return []
        db, collection = target.split(".", 1)
        query = bson.json_util.loads(json.dumps(item["filter"]))  # extended JSON: {"$oid": ...}, {"$date": ...}
        try:
            return [(target, client[db][collection].delete_many(query).deleted_count)]
        except pymongo_errors.PyMongoError as exc:
            raise translate(exc, "the target") from None

    report = apply_ledger(requests, "mongodb", applier)
    erased: dict[str, int] = {}
    for detail in report["details"]:
        erased[detail["target"]] = erased.get(detail["target"], 0) + detail["removed"]
    for collection in collections:
        if collection.get("target") in erased:
            collection["erased"] = erased[collection["target"]]
            if collection.get("count") is not None:
                collection["count"] -= collection["erased"]
    return report
