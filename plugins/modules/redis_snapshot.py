#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: redis_snapshot
short_description: Back up Redis as an RDB snapshot or a copy of its AOF
version_added: 0.1.0
description:
  - Writes a C(redis-rdb) backup set holding one plain RDB file (any Redis and C(redis-check-rdb) open it once
    decompressed and decrypted), or with O(aof=true) a C(redis-aof) set holding a tar of the Redis 7 multi-part
    AOF directory (manifest, base and increments).
  - O(method=bgsave) runs on the Redis host. It starts a C(BGSAVE) (or reuses a save newer than O(max_age)),
    waits for it through C(INFO persistence), and copies the file named by C(CONFIG GET dir) and C(dbfilename).
  - O(method=replication) works from any host. It does the replica handshake that C(redis-cli --rdb) does
    (C(REPLCONF rdb-only), C(SYNC)) and streams the RDB payload straight into storage; no file access is
    needed. The user needs the C(sync) permission.
  - Every RDB is checked before the set is committed - the C(REDIS) magic, its version, the EOF opcode and the
    CRC-64 trailer - and a bad one leaves no backup set behind.
  - The manifest records the Redis version, the RDB version, the keys (and keys with a TTL) per database and
    the used memory. The key counts come from C(INFO keyspace) around the snapshot; when they changed while
    the snapshot was taken, the manifest says C(keys_exact=false).
author: caas.backup developers (@caas-backup)
options:
  method:
    description:
      - How the RDB is obtained; see the description. Ignored with O(aof=true).
    type: str
    choices: [bgsave, replication]
    default: bgsave
  max_age:
    description:
      - With O(method=bgsave), reuse the last successful save when it is at most this many seconds old (up to a year).
        V(0) always saves anew.
    type: int
    default: 0
  diskless:
    description:
      - With O(method=replication), offer the diskless transfer (C(REPLCONF capa eof)). A master with
        C(repl-diskless-sync yes) then streams the RDB without writing it to its disk, after its
        C(repl-diskless-sync-delay). Otherwise the master writes the RDB to its disk first, as for a replica.
    type: bool
    default: false
  aof:
    description:
      - Copy the append-only file (Redis 7 C(appenddirname) with its manifest) instead of an RDB. Runs on the
        Redis host; automatic AOF rewrites are held off while the files are copied.
    type: bool
    default: false
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
      - Defaults to the host and port the module was told to connect to, as given (O(login_host) and O(login_port),
        or those of O(url)) - V(127.0.0.1-6379), V(redis01.internal-6379) - never the name of the machine the module
        runs on. The roles pass C(caas_backup_source_name), else the inventory hostname, so a rebuilt site finds its
        backups.
    type: str
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
  - caas.backup.redis
attributes:
  check_mode:
    support: full
    description:
      - Connects (C(INFO) only), reports the method, the server's facts with the key count that would be copied,
        and where the set would go, with C(changed=true) (a real run writes a new set). No C(BGSAVE), no
        replication handshake, no file is copied; the storage is only read, to check it can be reached.
notes:
  - With O(aof=true) only automatic rewrites are held off; a C(BGREWRITEAOF) someone else issues during the copy
    is not prevented (the copy then fails or holds files of the old generation, which Redis still loads).
seealso:
  - module: caas.backup.redis_restore
"""

EXAMPLES = r"""
- name: Snapshot the local Redis to S3, encrypted
  caas.backup.redis_snapshot:
    storage_url: s3://caas-backups/prod
    login_port: 6379
    login_password: "{{ vault_redis_password }}"
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]

- name: Fetch an RDB over the network, as a replica would
  caas.backup.redis_snapshot:
    storage_url: file:///backups
    url: rediss://backup@redis01.internal:6380
    tls_ca_cert: /etc/ssl/caas-ca.pem
    method: replication

- name: Copy the append-only file
  caas.backup.redis_snapshot:
    storage_url: file:///backups
    aof: true
"""

RETURN = r"""
backup_id:
  description: Id of the new backup set; empty in check mode.
  returned: always
  type: str
  sample: 20260221T020000.412Z-3f9a
kind:
  description: V(redis-rdb) or V(redis-aof).
  returned: always
  type: str
source:
  description: Source name the set is stored under.
  returned: always
  type: str
location:
  description: Storage path of the set; in check mode the path the new set's id would be added to.
  returned: success
  type: str
msg:
  description: In check mode, what a real run would write (C(would write a redis-rdb backup (bgsave) of N keys ...)).
  returned: check mode
  type: str
method:
  description: V(bgsave), V(replication) or V(aof).
  returned: always
  type: str
reused_save:
  description: Whether an existing save newer than O(max_age) was copied instead of a new C(BGSAVE).
  returned: success and not check mode
  type: bool
facts:
  description:
    - What the manifest records - C(redis_version), C(rdb_version), C(rdb_size), C(crc64), C(keys_per_db),
      C(keys), C(expires), C(keys_exact), C(used_memory) (and C(aof_files) for an AOF).
    - In check mode the server's C(redis_version), C(used_memory), C(keys_per_db), C(keys) (all databases, as
      C(DBSIZE) of each summed) and C(expires), read with C(INFO).
  returned: always
  type: dict
stored_bytes:
  description: Bytes written to storage (after compression and encryption).
  returned: success and not check mode
  type: int
duration:
  description: Seconds the backup took.
  returned: success and not check mode
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import CONNECTION_SPEC


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter
    from ansible_collections.caas.backup.plugins.module_utils.redis_backup import (
        aof_snapshot,
        bgsave,
        connection_from_params,
        copy_rdb,
        open_saved_rdb,
        replication_fetch,
        server_facts,
    )

    p = module.params
    started = time.monotonic()
    conn = connection_from_params(p)
    method = "aof" if p["aof"] else p["method"]
    kind = "redis-aof" if p["aof"] else "redis-rdb"
    before = server_facts(conn)
    source = p["source_name"] or conn.source_name()
    result = dict(changed=True, backup_id="", kind=kind, source=source, method=method)
    facts = {k: before[k] for k in ("redis_version", "used_memory", "keys_per_db", "keys", "expires")}
    if module.check_mode:
        result.update(module.planned_set(kind, source), facts=facts)
        result["msg"] = (
            f"would write a {kind} backup ({method}) of {facts['keys']} key(s) in {len(facts['keys_per_db'])} "
            f"database(s), Redis {facts['redis_version']} at {conn.address}, to {result['location']}"
        )
        return result

    storage = module.open_storage()
    storage.check()
    reused = False
    with SetWriter(storage, kind, source, module.write_options(), p["tags"]) as backup:
        if method == "aof":
            with backup.object("appendonlydir.tar") as out:
                facts.update(aof_snapshot(conn, out))
        elif method == "replication":
            with backup.object("dump.rdb") as out:
                facts.update(replication_fetch(conn, out, p["diskless"]))
        else:
            path, reused = bgsave(conn, p["max_age"])
            with open_saved_rdb(path) as src, backup.object("dump.rdb") as out:
                facts.update(copy_rdb(src, out, path))
        after = server_facts(conn)
        # A reused save is older than the counts; changing counts mean writes during the snapshot.
        facts["keys_exact"] = not reused and after["keys_per_db"] == before["keys_per_db"]
        facts["method"] = method
        backup.commit(facts)
    result.update(
        backup.result(),
        facts=facts,
        reused_save=reused,
        duration=round(time.monotonic() - started, 3),
    )
    return result


def main() -> None:
    module = BackupModule(
        dict(
            CONNECTION_SPEC,
            method=dict(type="str", default="bgsave", choices=["bgsave", "replication"]),
            max_age=dict(type="int", default=0),
            diskless=dict(type="bool", default=False),
            aof=dict(type="bool", default=False),
        ),
        writes=True,
        audit_action="write",
        audit_kind=lambda p: "redis-aof" if p["aof"] else "redis-rdb",
        libraries=("redis", "anycrc"),
        supports_check_mode=True,
    )
    module.run(run, "snapshot Redis")


if __name__ == "__main__":
    main()
