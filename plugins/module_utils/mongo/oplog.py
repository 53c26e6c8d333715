# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Oplog replay with plain CRUD commands, for servers without ``applyOps`` (and for renames).

Entries are applied idempotently, as the server's own oplog application does:
an insert replaces or creates the document, an update of a missing document
does nothing, a delete of a missing one too. So replaying entries whose
effect the dumped data already shows is harmless.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable

from ansible_collections.caas.backup.plugins.module_utils.common import SourceError

try:
    from pymongo import DeleteOne, ReplaceOne, UpdateOne
    from pymongo import errors as pymongo_errors
except ImportError:  # checked by BackupModule
    pymongo_errors = None

NsMap = Callable[[str], "str | None"]
# Errors that mean a command's effect is already there (replay is idempotent).
BULK_OPS = 1000
NAMESPACE_NOT_FOUND = 26
INDEX_NOT_FOUND = 27
# Index fields a server records but createIndexes refuses (SecantusDB logs multikey).
INDEX_FIELDS_NOT_SPEC = ("ns", "entryFormat", "multikey")


def _diff_to_updates(diff: dict, prefix: str = "") -> tuple[dict, dict, dict]:
    """A ``$v: 2`` update diff as ($set, $unset, truncations {path: new length}).

    Two forms: the server's (``u`` updates, ``i`` inserts, ``d`` deletes,
    ``s<field>`` sub-diffs, arrays marked ``a: true`` with ``u<index>``,
    ``s<index>`` and ``l`` new length) and SecantusDB's (``updatedFields``,
    ``removedFields``, ``truncatedArrays`` with dotted paths).
    """
    sets: dict = {}
    unsets: dict = {}
    truncs: dict = {}
    if any(k in diff for k in ("updatedFields", "removedFields", "truncatedArrays")):
        sets.update({prefix + k: v for k, v in (diff.get("updatedFields") or {}).items()})
        unsets.update({prefix + k: "" for k in diff.get("removedFields") or ()})
        for trunc in diff.get("truncatedArrays") or ():
            truncs[prefix + trunc["field"]] = int(trunc["newSize"])
        return sets, unsets, truncs
    is_array = diff.get("a") is True
    for key, value in diff.items():
        if key == "a":
            continue
        if is_array and key == "l":
            truncs[prefix.rstrip(".")] = int(value)
        elif key in ("u", "i") and isinstance(value, dict):
            sets.update({prefix + k: v for k, v in value.items()})
        elif key == "d" and isinstance(value, dict):
            unsets.update({prefix + k: "" for k in value})
        elif is_array and key[:1] == "u" and key[1:].isdigit():
            sets[f"{prefix}{key[1:]}"] = value
        elif key[:1] == "s" and isinstance(value, dict):
            more = _diff_to_updates(value, f"{prefix}{key[1:]}.")
            sets.update(more[0])
            unsets.update(more[1])
            truncs.update(more[2])
        else:
            raise SourceError(f"unsupported update diff field {key!r} in an oplog entry")
    return sets, unsets, truncs


def _update_requests(selector: dict, update: dict) -> list:
    """The bulk write requests one update entry stands for (a truncation is a request of its own)."""
    if update.get("$v") == 2 and "diff" in update:
        sets, unsets, truncs = _diff_to_updates(update["diff"])
        requests = []
        if truncs:
            requests.append(UpdateOne(selector, {"$push": {p: {"$each": [], "$slice": n} for p, n in truncs.items()}}))
        change = {}
        if sets:
            change["$set"] = sets
        if unsets:
            change["$unset"] = unsets
        if change:
            requests.append(UpdateOne(selector, change))
        return requests
    operators = {k: v for k, v in update.items() if k != "$v"}
    if operators and all(k.startswith("$") for k in operators):
        return [UpdateOne(selector, operators)]
    if not any(k.startswith("$") for k in operators):
        return [ReplaceOne(selector, operators)]
    raise SourceError(f"unsupported oplog update form with fields {sorted(operators)}")


def _apply_command(client, db_name: str, command: dict, ns_map: NsMap) -> bool:
    name = next(iter(command))
    if name == "applyOps":
        apply_entries(client, command["applyOps"], ns_map)
        return True
    if name in ("startIndexBuild", "abortIndexBuild"):
        return False  # two-phase index builds: commitIndexBuild carries the indexes
    if name == "dropDatabase":
        # Only the collections this restore maps (a filtered restore never drops anything else).
        for coll in client[db_name].list_collection_names():
            target = ns_map(f"{db_name}.{coll}")
            if target is not None:
                tdb, tcoll = target.split(".", 1)
                client[tdb].drop_collection(tcoll)
        return True
    if name == "renameCollection":
        return _rename(client, command, ns_map)
    if name not in ("create", "drop", "createIndexes", "commitIndexBuild", "dropIndexes", "collMod"):
        raise SourceError(
            f"oplog replay does not support the command {name!r} (in {db_name}): restore from a later "
            "full backup or replay it by hand"
        )
    target = ns_map(f"{db_name}.{command[name]}")
    if target is None:
        return False
    tdb, tcoll = target.split(".", 1)
    body = {k: v for k, v in command.items() if k not in (name, "idIndex")}
    existing = client[tdb].list_collection_names()
    if name == "create":
        if tcoll in existing:
            return False
        if "viewOn" in body:
            body["pipeline"] = body.pop("viewPipeline", body.get("pipeline", []))
    elif name == "drop" and tcoll not in existing:
        return False
    elif name in ("createIndexes", "commitIndexBuild"):
        # A server logs one index per createIndexes entry, fields at the top; SecantusDB a list.
        specs = body.get("indexes") or [{k: v for k, v in body.items() if k not in ("indexBuildUUID",)}]
        body = {"indexes": [{k: v for k, v in i.items() if k not in INDEX_FIELDS_NOT_SPEC} for i in specs]}
        name = "createIndexes"
    elif name == "dropIndexes":
        # The server logs the index name (and SecantusDB its key too): drop by name.
        body = {"index": body["index"]} if "index" in body else {"index": body.get("indexes") or "*"}
    try:
        client[tdb].command({name: tcoll, **body})
    except pymongo_errors.OperationFailure as exc:
        # Replaying onto data that already shows the effect: the collection or index is gone already.
        if name in ("dropIndexes", "collMod") and exc.code in (NAMESPACE_NOT_FOUND, INDEX_NOT_FOUND):
            return False
        raise
    return True


def _rename(client, command: dict, ns_map: NsMap) -> bool:
    """``renameCollection`` (full names, ``dropTarget``); a source already gone means it was applied."""
    source, target = ns_map(command["renameCollection"]), ns_map(command["to"])
    if source is None or target is None:
        if source is not None or target is not None:
            raise SourceError(
                f"the oplog renames {command['renameCollection']} to {command['to']}, across what this restore "
                "selects: widen the namespace filters"
            )
        return False
    sdb, scoll = source.split(".", 1)
    if scoll not in client[sdb].list_collection_names():
        return False
    client.admin.command({"renameCollection": source, "to": target, "dropTarget": bool(command.get("dropTarget"))})
    return True


def apply_entries(client, entries: Iterable[dict], ns_map: NsMap | None = None) -> dict[str, int]:
    """Apply decoded oplog entries in order; returns how many were applied per namespace.

    ``ns_map`` maps a source ``db.collection`` to its target name, or None to
    skip entries of that namespace (filters and renames of the restore).
    Supported: ``i``/``u``/``d`` (classic ``$set``-style and ``$v: 2`` diff
    updates), ``n`` (no-op), and the commands create, drop, createIndexes,
    dropIndexes, collMod, renameCollection, dropDatabase and applyOps (a
    transaction: its inner entries are applied in order). Document
    validation is bypassed: the entries passed it when they were written. Anything else raises
    :class:`SourceError` naming it, rather than being skipped silently.
    """
    ns_map = ns_map or (lambda ns: ns)
    applied: dict[str, int] = {}
    # Consecutive writes to one collection go as one ordered bulk write: the same order, far fewer round trips.
    pending: list = []
    pending_target: str | None = None

    def flush() -> None:
        if pending:
            tdb, tcoll = pending_target.split(".", 1)
            client[tdb][tcoll].bulk_write(list(pending), ordered=True, bypass_document_validation=True)
            pending.clear()

    for entry in entries:
        op = entry.get("op")
        ns = entry.get("ns", "")
        if op == "n" or not ns:
            continue
        db_name = ns.split(".", 1)[0]
        if op == "c":
            flush()
            if _apply_command(client, db_name, entry["o"], ns_map):
                applied[ns] = applied.get(ns, 0) + 1
            continue
        target = ns_map(ns)
        if target is None:
            continue
        if target != pending_target:
            flush()
            pending_target = target
        if op == "i":
            doc = entry["o"]
            pending.append(ReplaceOne({"_id": doc["_id"]}, doc, upsert=True))
        elif op == "u":
            pending.extend(_update_requests(entry.get("o2") or {"_id": entry["o"].get("_id")}, entry["o"]))
        elif op == "d":
            pending.append(DeleteOne(entry["o"]))
        else:
            raise SourceError(f"oplog replay does not support the operation {op!r} on {ns}")
        applied[target] = applied.get(target, 0) + 1
        if len(pending) >= BULK_OPS:
            flush()
    flush()
    return applied
