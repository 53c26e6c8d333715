# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Verification of backup sets: re-read and check every object, or restore into scratch space and compare.

Each kind registers its checks in :data:`CHECKS`; a check gets a verified
local copy of the set's object and returns facts to compare with the manifest,
raising IntegrityError when the data is not what the manifest promises.
"""

from __future__ import annotations

import json
import os
import shutil
import tempfile
from collections.abc import Callable
from dataclasses import dataclass

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    VERIFICATION,
    BackupSet,
    LocalCopy,
    fetch_object,
    iso,
    utcnow,
    verify_object,
)
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError, ConfigurationError, IntegrityError
from ansible_collections.caas.backup.plugins.module_utils.files import extract, plan_restore
from ansible_collections.caas.backup.plugins.module_utils.kafka.messages import check_segment
from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import (
    OBJECT_STEM,
    document_facts,
    read_document,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect, scratch_server
from ansible_collections.caas.backup.plugins.module_utils.mongo.pitr import STEM as OPLOG_STEM
from ansible_collections.caas.backup.plugins.module_utils.mongo.pitr import check_slice
from ansible_collections.caas.backup.plugins.module_utils.mongo.restore import (
    Renamer,
    plan,
    restore_archive,
    select,
    verify_archive,
)
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import (
    copy_rdb,
    extract_aof,
    keys_match,
    scratch_key_count,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage

LEVELS = ("checksum", "restore")
SCRATCH_TIMEOUT = 600.0


@dataclass(frozen=True)
class KindChecks:
    """How to check one kind: the object to read (None: each object of the set), its format check, its test restore."""

    stem: str | None
    checksum: Callable[[LocalCopy, BackupSet, list[str], str, dict], dict]
    restore: Callable[[LocalCopy, BackupSet, list[str], str, dict], dict]


def _config_listing(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    empty = tempfile.mkdtemp(dir=scratch)
    with copy.reader(identities) as reader:
        names = plan_restore(reader, empty, [])["create"]
    expected = len(bset.facts.get("names", ()))
    if len(names) != expected:
        raise IntegrityError(f"the archive holds {len(names)} members but the manifest lists {expected}")
    return {"members": len(names)}


def _config_restore(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    dest = tempfile.mkdtemp(dir=scratch)
    with copy.reader(identities) as reader:
        names = plan_restore(reader, dest, [])["create"]
    with copy.reader(identities) as reader:
        extract(reader, dest, set(names))
    files = sizes = 0
    for directory, _dirs, entries in os.walk(dest):
        for entry in entries:
            path = os.path.join(directory, entry)
            if os.path.isfile(path) and not os.path.islink(path):
                files += 1
                sizes += os.path.getsize(path)
    facts = bset.facts
    if (files, sizes) != (facts.get("files"), facts.get("bytes")):
        raise IntegrityError(
            f"restored {files} files / {sizes} bytes but the manifest says {facts.get('files')} / {facts.get('bytes')}"
        )
    return {"files": files, "bytes": sizes}


def _redis_rdb_check(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    with copy.reader(identities) as reader:
        facts = copy_rdb(reader, None, copy.name)
    expected = bset.facts.get("rdb_version")
    if expected is not None and facts["rdb_version"] != expected:
        raise IntegrityError(f"the RDB is version {facts['rdb_version']} but the manifest says {expected}")
    return facts


def _redis_keys(bset: BackupSet, keys: int) -> dict:
    if not keys_match(bset.facts, keys):
        raise IntegrityError(
            f"a scratch Redis loaded {keys} keys but the manifest says {bset.facts.get('keys')} "
            f"({bset.facts.get('expires', 0)} with a TTL)"
        )
    return {"keys": keys}


def _redis_rdb_restore(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    with copy.reader(identities) as reader, open(os.path.join(scratch, "dump.rdb"), "wb") as out:
        copy_rdb(reader, out, copy.name)
    return _redis_keys(bset, scratch_key_count(scratch, SCRATCH_TIMEOUT))


def _redis_aof_files(
    copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict
) -> tuple[str, str]:
    """Extract the AOF into scratch; returns (its directory name, its appendfilename)."""
    directory = bset.facts.get("aof_dir") or "appendonlydir"
    with copy.reader(identities) as reader:
        names = extract_aof(reader, os.path.join(scratch, directory), _aof_manifest_name(bset))
    return directory, next(n for n in names if n.endswith(".manifest"))[: -len(".manifest")]


def _aof_manifest_name(bset: BackupSet) -> str:
    base = next((f for f in bset.facts.get("aof_files", ()) if ".base." in f), "appendonly.aof.1.base.rdb")
    return base.split(".base.")[0].rsplit(".", 1)[0] + ".manifest"


def _redis_aof_check(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    directory, _name = _redis_aof_files(copy, bset, identities, scratch, options)
    return {"files": len(os.listdir(os.path.join(scratch, directory)))}


def _redis_aof_restore(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    aof = _redis_aof_files(copy, bset, identities, scratch, options)
    return _redis_keys(bset, scratch_key_count(scratch, SCRATCH_TIMEOUT, aof))


def _kafka_document(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    """Parse and validate the export; its counts must be the manifest's (both levels: there is no data to load)."""
    with copy.reader(identities) as reader:
        facts = document_facts(read_document(reader, copy.name))
    for key in ("topics", "partitions", "groups"):
        if bset.facts.get(key) is not None and facts[key] != bset.facts[key]:
            raise IntegrityError(f"the Kafka export holds {facts[key]} {key} but the manifest says {bset.facts[key]}")
    return {key: facts[key] for key in ("topics", "partitions", "groups")}


def _mongo_verify(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict):
    with copy.reader(identities) as reader:
        return verify_archive(reader, copy.name, bset.facts)


def _mongo_check(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    prelude = _mongo_verify(copy, bset, identities, scratch, options)
    return {"namespaces": len(prelude.collections()), "documents": sum(ns.documents for ns in prelude.namespaces)}


def _mongo_restore(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    """Restore everything (oplog replayed) into a scratch server; restore_archive compares every count."""
    prelude = _mongo_verify(copy, bset, identities, scratch, options)
    with scratch_server(scratch, options.get("scratch_mongo_uri")) as uri:
        client = connect({"uri": uri})
        try:
            targets = select(prelude, [], [], Renamer([], []), False)
            restore_plan = plan(client, prelude, targets, True, True)
            with copy.reader(identities) as reader:
                done = restore_archive(client, reader, copy.name, restore_plan)
        finally:
            client.close()
    collections = [c for c in done.get("collections", ()) if c.get("type") != "view"]
    return {"collections": len(collections), "documents": sum(c.get("count") or 0 for c in collections)}


def _kafka_segment(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    """A record-batch segment: framing, every batch CRC, offsets and count against the manifest (both levels:
    producing the records needs a broker, which the kafka_message_restore integration tests run)."""
    stem = copy.record["stem"]
    for partition in (bset.facts.get("partitions") or {}).values():
        for segment in partition.get("segments") or ():
            if segment.get("object") == stem:
                with copy.reader(identities) as reader:
                    check_segment(reader, copy.name, segment)
                return {"segments": 1, "records": segment["records"]}
    raise IntegrityError(f"{copy.name} is in no partition of the manifest's facts")


def _oplog_slice(copy: LocalCopy, bset: BackupSet, identities: list[str], scratch: str, options: dict) -> dict:
    """BSON framing, entry count and last timestamp against the manifest (both levels: a slice alone loads nothing)."""
    with copy.reader(identities) as reader:
        return check_slice(reader, copy.name, bset.facts)


CHECKS: dict[str, KindChecks] = {
    "config": KindChecks("config.tar", _config_listing, _config_restore),
    "redis-rdb": KindChecks("dump.rdb", _redis_rdb_check, _redis_rdb_restore),
    "redis-aof": KindChecks("appendonlydir.tar", _redis_aof_check, _redis_aof_restore),
    "kafka-meta": KindChecks(OBJECT_STEM, _kafka_document, _kafka_document),
    "kafka-messages": KindChecks(None, _kafka_segment, _kafka_segment),
    "mongo-full": KindChecks("dump.archive", _mongo_check, _mongo_restore),
    "mongo-oplog": KindChecks(OPLOG_STEM, _oplog_slice, _oplog_slice),
}


def verify_set(
    storage: Storage,
    bset: BackupSet,
    identities: list[str],
    level: str,
    scratch_dir: str | None = None,
    options: dict | None = None,
) -> dict:
    """Check one set at ``level``; returns a report with ``ok`` and one entry per check (never raises for bad data).

    A broken set (its manifest damaged, unsigned or wrongly signed: ``bset.error``)
    fails with one ``manifest`` check carrying that error; nothing else of it is read.
    """
    if level not in LEVELS:
        raise ConfigurationError(f"unknown verification level {level!r}: use {', '.join(LEVELS)}")
    checks: list[dict] = []
    report = {
        "kind": bset.kind,
        "source": bset.source,
        "backup_id": bset.backup_id,
        "level": level,
        "verified_at": iso(utcnow()),
        "checks": checks,
        "signed_by": bset.signer.label if bset.signer else None,
    }
    if bset.manifest is None:
        checks.append({"check": "manifest", "ok": False, "error": bset.error or "the set has no manifest"})
        report["ok"] = False
        return report
    for record in bset.manifest.get("objects", ()):
        try:
            verify_object(storage, bset, record)
            checks.append({"check": f"sha256 {record['name']}", "ok": True})
        except BackupError as exc:
            checks.append({"check": f"sha256 {record['name']}", "ok": False, "error": str(exc)})
    kind = CHECKS.get(bset.kind)
    if kind is None:
        checks.append(
            {
                "check": f"{level} {bset.kind}",
                "ok": False,
                "error": f"no {level} check for {bset.kind} backups in this collection version",
            }
        )
    elif all(c["ok"] for c in checks):
        scratch = tempfile.mkdtemp(prefix="caas-verify-", dir=scratch_dir)
        label = f"{level} {kind.stem or 'every object'}"
        stems = [kind.stem] if kind.stem else [r["stem"] for r in bset.manifest.get("objects", ())]
        try:
            facts: dict = {}
            for stem in stems:
                with fetch_object(storage, bset, stem, scratch) as copy:
                    found = (kind.checksum if level == "checksum" else kind.restore)(
                        copy, bset, identities, scratch, options or {}
                    )
                facts = {k: facts.get(k, 0) + v for k, v in found.items()} if kind.stem is None else found
            checks.append({"check": label, "ok": True, **facts})
        except BackupError as exc:
            checks.append({"check": label, "ok": False, "error": str(exc)})
        finally:
            shutil.rmtree(scratch, ignore_errors=True)
    report["ok"] = all(c["ok"] for c in checks)
    return report


def record_verification(storage: Storage, bset: BackupSet, report: dict) -> None:
    """Store the report beside the set, for backup_info and audits."""
    storage.put_bytes(f"{bset.prefix}/{VERIFICATION}", json.dumps(report, indent=1, sort_keys=True).encode())


def last_verification(storage: Storage, bset: BackupSet) -> dict | None:
    """The report :func:`record_verification` stored for a set, if any."""
    if f"{bset.prefix}/{VERIFICATION}" not in bset.keys:
        return None
    try:
        return json.loads(storage.get_bytes(f"{bset.prefix}/{VERIFICATION}"))
    except ValueError:
        return {"ok": False, "error": "verification.json is not valid JSON"}
