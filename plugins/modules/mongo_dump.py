#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: mongo_dump
short_description: Back up MongoDB as one consistent mongodump archive
version_added: 0.1.0
description:
  - Dumps every database except C(local) and C(config) (or what O(ns_include) and O(ns_exclude) select) into
    a new C(mongo-full) backup set, as one mongodump archive stream (format 0.1) that C(mongorestore --archive)
    of MongoDB Database Tools 100.x reads. With O(compression=gzip) and no encryption the stored object is
    format-compatible with what C(mongodump --archive --gzip) writes (C(mongorestore --archive --gzip) reads it);
    it is not byte-identical (tool version, prelude order and view uuids differ).
  - Consistent like C(mongodump --oplog) - the oplog position is noted before any collection is read, the
    oplog entries written while the dump runs are stored in the archive's oplog namespace, and the consistent
    point (C(first_ts), C(last_ts)) is recorded in the manifest. M(caas.backup.mongo_restore) replays them.
  - Collections are read in parallel (O(parallel_collections)), their segments interleaved as mongodump does;
    each namespace ends with the CRC-64 of its documents.
  - With O(import_path), registers an archive made by C(mongodump --archive) (gzip or not) as a backup set
    instead, after checking every namespace's CRC, so existing mongodump jobs gain the catalog, retention
    and restore.
author: caas.backup developers (@caas-backup)
options:
  ns_include:
    description:
      - Namespace patterns (V(db.collection), V(*) matches any characters) to dump; everything when empty.
    type: list
    elements: str
    default: []
  ns_exclude:
    description:
      - Namespace patterns left out.
    type: list
    elements: str
    default: []
  include_users_and_roles:
    description:
      - Also dump C(admin.system.users), C(admin.system.roles) and C(admin.system.version).
    type: bool
    default: false
  parallel_collections:
    description:
      - Collections read at the same time (1-64).
    type: int
    default: 4
  oplog:
    description:
      - Capture the oplog written during the dump, for a consistent point. Needs a replica set.
    type: bool
    default: true
  import_path:
    description:
      - Path of an existing C(mongodump --archive) file (gzip-compressed or not) to register as a backup set
        instead of dumping a server. No connection option is used then.
    type: path
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
      - Defaults to the replica set name the server reports, else to the configured C(host_port) (O(login_host) and
        O(login_port), or the hosts of O(uri)) - never the name of the machine the module runs on. Required with
        O(import_path).
    type: str
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
  - caas.backup.mongo
attributes:
  check_mode:
    support: full
    description:
      - Connects and reports, with C(changed=true) (a real run writes a new set), every namespace that would be
        dumped with its documents and bytes from the server's collection statistics (C(collStats); no document is
        read), and where the set would go. Nothing is written; the storage is only read, to check it can be
        reached. With O(import_path) the archive is read and checked as for a real import.
notes:
  - Views are dumped as their definition, time series collections as their buckets, as mongodump does.
seealso:
  - module: caas.backup.mongo_restore
"""

EXAMPLES = r"""
- name: Dump the whole replica set to S3, encrypted
  caas.backup.mongo_dump:
    storage_url: s3://caas-backups/prod
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    login_user: backup
    login_password: "{{ vault_mongo_backup_password }}"
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]

- name: Register last night's mongodump archive as a backup set
  caas.backup.mongo_dump:
    storage_url: file:///backups
    import_path: /var/backups/mongo/nightly.archive.gz
    source_name: rs0
"""

RETURN = r"""
backup_id:
  description: Id of the new backup set; empty in check mode.
  returned: always
  type: str
  sample: 20260221T020000.412Z-3f9a
source:
  description: Source name the set is stored under.
  returned: always
  type: str
  sample: rs0
kind:
  description: V(mongo-full).
  returned: always
  type: str
location:
  description: Storage path of the set; in check mode the path the new set's id would be added to.
  returned: success
  type: str
collections:
  description:
    - Per namespace - C(ns), C(type), C(documents) and C(bytes) (BSON bytes) dumped.
    - In check mode what would be dumped, from the server's statistics, with C(stats) saying which answered -
      V(collStats) (the server's counts and BSON data size), V(estimatedDocumentCount) (a server that refuses
      C(collStats); C(bytes) is then null) or V(view) (a view has no documents of its own).
  returned: always
  type: list
  elements: dict
documents:
  description: Documents dumped (in check mode, that would be), all collections together (oplog entries not included).
  returned: success
  type: int
oplog:
  description: In check mode, whether the oplog written during the dump would be captured (O(oplog)).
  returned: check mode
  type: bool
msg:
  description: In check mode, what a real run would write (C(would write a mongo-full backup of N collections ...)).
  returned: check mode
  type: str
bytes:
  description: BSON bytes of the archive stream, before compression.
  returned: success and not check mode
  type: int
stored_bytes:
  description: Bytes written to storage (after compression and encryption).
  returned: success and not check mode
  type: int
first_ts:
  description: Oplog position before the dump read anything (C(t), C(i), C(iso)); null without oplog.
  returned: success and not check mode; with O(import_path) also in check mode
  type: dict
last_ts:
  description: The consistent point - a restore with oplog replay gives the data as of this oplog position.
  returned: success and not check mode; with O(import_path) also in check mode
  type: dict
oplog_entries:
  description: Oplog entries captured during the dump.
  returned: success and not check mode
  type: int
gzipped:
  description: Whether the imported O(import_path) file was gzip-compressed (check mode too).
  returned: when O(import_path) is given
  type: bool
duration:
  description: Seconds the backup took.
  returned: success and not check mode
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import MONGO_SPEC

STEM = "dump.archive"


def _commit(module: BackupModule, source: str, write, facts: dict) -> dict:
    """Write one archive object through ``write(out)`` and the manifest; nothing stays on failure."""
    from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter

    storage = module.open_storage()
    storage.check()
    with SetWriter(storage, "mongo-full", source, module.write_options(), module.params["tags"]) as backup:
        with backup.object(STEM) as out:
            facts.update(write(out))
        backup.commit(facts)
    return dict(backup.result(), kind="mongo-full", bytes=backup.objects[0]["raw_size"])


def _summary(facts: dict) -> dict:
    return dict(
        collections=facts["collections"],
        documents=sum(c["documents"] for c in facts["collections"]),
        first_ts=facts["first_ts"],
        last_ts=facts["last_ts"],
        oplog_entries=facts["oplog_entries"],
    )


def run_import(module: BackupModule, started: float) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import import_archive, open_archive_file

    p = module.params
    if not p["source_name"]:
        raise ConfigurationError("import_path needs source_name: the archive does not say which system it is from")
    path = p["import_path"]
    facts: dict = {"imported_from": path, "ns_include": [], "ns_exclude": []}
    if module.check_mode:
        source, gzipped = open_archive_file(path)
        with source:
            facts.update(import_archive(source, _Null(), path))
        result = dict(module.planned_set("mongo-full", p["source_name"]), source=p["source_name"], gzipped=gzipped)
        result.update(_summary(facts))
        result["msg"] = (
            f"would register {path} ({len(result['collections'])} collection(s), {result['documents']} document(s)) "
            f"as a mongo-full backup at {result['location']}"
        )
        return result

    def write(out) -> dict:
        source, gzipped = open_archive_file(path)
        with source:
            found = import_archive(source, out, path)
        found["import_gzipped"] = gzipped
        return found

    result = _commit(module, p["source_name"], write, facts)
    result.update(
        changed=True,
        source=p["source_name"],
        gzipped=facts["import_gzipped"],
        duration=round(time.monotonic() - started, 3),
        **_summary(facts),
    )
    return result


class _Null:
    def write(self, data) -> int:
        return len(data)


def run(module: BackupModule) -> dict:
    started = time.monotonic()
    p = module.params
    if p["import_path"]:
        return run_import(module, started)

    from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect, source_name
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import estimate_dump, plan_dump, write_archive

    client = connect(p, maxPoolSize=max(10, p["parallel_collections"] + 2))
    try:
        plan = plan_dump(client, p["ns_include"], p["ns_exclude"], p["include_users_and_roles"], p["oplog"])
        source = source_name(p, client.admin.command("hello"))
        if module.check_mode:
            collections = estimate_dump(client, plan)
            result = dict(
                module.planned_set("mongo-full", source),
                source=source,
                collections=collections,
                documents=sum(c["documents"] for c in collections),
                oplog=p["oplog"],
            )
            known = [c["bytes"] for c in collections if c["bytes"] is not None]
            result["msg"] = (
                f"would write a mongo-full backup of {len(collections)} collection(s), {result['documents']} "
                f"document(s), {sum(known)} BSON bytes{'' if len(known) == len(collections) else ' (some unknown)'}"
                f"{' with the oplog of the dump' if p['oplog'] else ''} to {result['location']}"
            )
            return result
        facts: dict = {
            "server_version": plan.server_version,
            "replica_set": plan.replica_set,
            "ns_include": p["ns_include"],
            "ns_exclude": p["ns_exclude"],
            "include_users_and_roles": p["include_users_and_roles"],
            "archive_format": "0.1",
        }
        result = _commit(
            module, source, lambda out: write_archive(client, out, plan, p["parallel_collections"], p["oplog"]), facts
        )
    finally:
        client.close()
    result.update(changed=True, source=source, duration=round(time.monotonic() - started, 3), **_summary(facts))
    return result


def main() -> None:
    module = BackupModule(
        dict(
            MONGO_SPEC,
            ns_include=dict(type="list", elements="str", default=[]),
            ns_exclude=dict(type="list", elements="str", default=[]),
            include_users_and_roles=dict(type="bool", default=False),
            parallel_collections=dict(type="int", default=4),
            oplog=dict(type="bool", default=True),
            import_path=dict(type="path"),
        ),
        writes=True,
        audit_action="write",
        audit_kind="mongo-full",
        libraries=("pymongo", "anycrc"),
        supports_check_mode=True,
    )
    module.run(run, "back up MongoDB")


if __name__ == "__main__":
    main()
