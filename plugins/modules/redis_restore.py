#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: redis_restore
short_description: Restore Redis from an RDB or AOF backup, with rollback
version_added: 0.1.0
description:
  - Runs on the Redis host and replaces the data of the running server with a backup set made by
    M(caas.backup.redis_snapshot).
  - The backup is checked before anything is touched - the object's size and sha256 against the manifest, the
    RDB's magic, EOF opcode and CRC-64 trailer, its RDB version against what the target Redis loads (an RDB from
    a newer Redis is refused), and C(redis-check-rdb) when it is installed.
  - Then Redis is stopped (O(service) with systemd, else C(SHUTDOWN NOSAVE)), its RDB and AOF directory are
    kept aside, and the RDB is placed. AOF precedence is neutralised - Redis starts with C(appendonly no) so it
    loads the RDB, and once the key count matches the manifest C(appendonly) is turned back on and the AOF is
    rewritten from the restored data, persisted with C(CONFIG REWRITE) when there is a config file.
  - With O(mode=aof) the AOF directory of a C(redis-aof) set is placed instead, and Redis loads it.
  - Before anything is stopped, the restart is checked - the program of O(start_command) must be an executable
    file, O(service) a unit systemd knows - so a restart that cannot work fails with Redis untouched.
  - On any failure after the stop, the previous data (and config file) are put back and Redis is started again,
    and the module fails saying so; when even that start fails, the message names where the previous data is.
  - Once the data is loaded and its key count checked, the erasure ledger (M(caas.backup.backup_erasure)) is
    applied - every recorded key pattern is removed (C(SCAN) and C(UNLINK)) - before the AOF is rewritten or,
    without AOF, a C(BGSAVE) persists it; a failure there rolls the restore back. A ledger that cannot be read
    fails the restore before anything is touched.
author: caas.backup developers (@caas-backup)
options:
  mode:
    description:
      - V(rdb) restores a C(redis-rdb) set; V(aof) restores a C(redis-aof) set (the target needs C(appendonly yes)).
    type: str
    choices: [rdb, aof]
    default: rdb
  service:
    description:
      - systemd unit of the Redis server (for example V(redis-server)), stopped and started with C(systemctl).
    type: str
  start_command:
    description:
      - Where there is no systemd - the command (an argument list, run without a shell) that starts Redis in the
        foreground, for example V([redis-server, /etc/redis/redis.conf]). It is started in its own session and
        outlives the module; its output goes to C(caas-redis-start.log) in the data directory.
      - Never put a password in it; the password belongs in the config file.
    type: list
    elements: str
  config_file:
    description:
      - Redis's config file, edited to start with C(appendonly no) and rewritten with C(CONFIG REWRITE).
        Defaults to the one the running server reports (C(INFO server) C(config_file)).
    type: path
  check_keys:
    description:
      - Compare the restored key count with the manifest's (keys with a TTL may have expired since) and roll
        back on a mismatch.
    type: bool
    default: true
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.restore
  - caas.backup.common.target
  - caas.backup.redis
attributes:
  check_mode:
    support: full
    description:
      - Downloads and checks the backup, and returns the set and the plan with C(changed=true) (a real run replaces
        the data); Redis and its files are not touched.
notes:
  - The data kept aside lives in C(.caas-rollback-*) in the data directory until the restore succeeds, so the
    data directory needs room for a second copy.
  - Restore a master; replicas resync from it.
  - A key count that differs from a manifest whose counts were not exact (the source was written to during
    the snapshot) is reported as a warning instead of failing.
seealso:
  - module: caas.backup.redis_snapshot
"""

EXAMPLES = r"""
- name: Restore the latest RDB into the systemd-managed Redis
  caas.backup.redis_restore:
    storage_url: s3://caas-backups/prod
    source_name: redis01-6379
    service: redis-server
    login_password: "{{ vault_redis_password }}"
    encryption_identity_file: /root/.config/caas/age-key.txt

- name: Show the plan for restoring a given AOF backup
  caas.backup.redis_restore:
    storage_url: file:///backups
    mode: aof
    backup_id: 20260221T020000.412Z-3f9a
    start_command: [redis-server, /srv/redis/redis.conf]
  check_mode: true
"""

RETURN = r"""
storage_url:
  description: The storage location the set was read from - O(storage_url), or the first of O(storage_fallback_urls)
    that holds it when the ones before could not be reached or lack it.
  returned: success
  type: str
  sample: s3://caas-backups-dr/prod
target:
  description: The Redis server restored into, credential-free (C(redis://host:port) or C(rediss://host:port)).
  returned: always
  type: str
  sample: redis://127.0.0.1:6379
backup_id:
  description: Id of the restored backup set.
  returned: always
  type: str
  sample: 20260221T020000.412Z-3f9a
source:
  description: Source name of the restored set.
  returned: always
  type: str
backup_time:
  description: When the restored set was taken (ISO 8601 UTC); what was written after it is not restored.
  returned: always
  type: str
  sample: "2026-02-21T02:00:07Z"
plan:
  description: The steps of the restore (what check mode would do).
  returned: always
  type: list
  elements: str
steps:
  description: What was done, in order.
  returned: success and not check mode
  type: list
  elements: str
msg:
  description: In check mode, the set that would be restored and its key count.
  returned: check mode
  type: str
backup_facts:
  description: The backup's manifest facts plus what the check found (C(rdb_version), C(crc64), C(redis_check_rdb)).
  returned: always
  type: dict
erasure:
  description:
    - The erasure ledger applied after the load - C(requests), C(removed) (keys; null in check mode) and
      C(details) (C(request_id), C(target) database such as V(db0), C(removed)).
  returned: always
  type: dict
keys:
  description: Keys Redis holds after the restore (and the erasure).
  returned: success and not check mode
  type: int
duration:
  description: Seconds the restore took, including download and checks.
  returned: always
  type: float
"""

import tempfile
import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import CONNECTION_SPEC


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object, iso
    from ansible_collections.caas.backup.plugins.module_utils.erasure import planned, read_ledger
    from ansible_collections.caas.backup.plugins.module_utils.redis_backup import (
        Restore,
        check_rdb_version,
        connection_from_params,
        copy_rdb,
        erase_keys,
        extract_aof,
        inspect_target,
    )

    p = module.params
    started = time.monotonic()
    conn = connection_from_params(p)
    kind = "redis-aof" if p["mode"] == "aof" else "redis-rdb"
    stem = "appendonlydir.tar" if p["mode"] == "aof" else "dump.rdb"
    target = None if module.plan_only else inspect_target(conn, p["service"], p["start_command"], p["config_file"])
    storage, bset = module.restore_source(kind)
    identities = module.identities()
    ledger = read_ledger(storage, identities, module.trusted_signers())  # unreadable: fail before anything
    if module.plan_only:
        return module.planned_restore(bset, target=conn.address, erasure=planned(ledger))
    restore = Restore(target, p["mode"], bset.facts, bset.backup_id, p["check_keys"])
    restore.check_start()  # apply() checks again; here it also fails check mode and spares the download
    result = dict(
        changed=True,
        target=conn.address,
        backup_id=bset.backup_id,
        source=bset.source,
        backup_time=iso(bset.time),
        plan=restore.plan(),
        backup_facts=bset.facts,
        erasure=planned(ledger),
    )
    with fetch_object(storage, bset, stem) as copy, copy.reader(identities) as reader:
        if module.check_mode:
            if p["mode"] == "rdb":
                checked = copy_rdb(reader, None, f"RDB of backup {bset.backup_id}")
                check_rdb_version(checked["rdb_version"], target.facts["redis_version"], f"backup {bset.backup_id}")
                result["backup_facts"] = dict(bset.facts, **checked)
            else:
                with tempfile.TemporaryDirectory() as scratch:
                    extract_aof(reader, f"{scratch}/aof", target.appendfilename + ".manifest")
            keys = bset.facts.get("keys")
            return dict(
                result,
                msg=f"would restore {kind} backup {bset.backup_id} of {bset.source} ({result['backup_time']}, "
                f"{keys if keys is not None else 'unknown'} keys) into Redis at {conn.address}",
                duration=round(time.monotonic() - started, 3),
            )
        result["backup_facts"] = dict(bset.facts, **restore.stage(reader))
    loaded = restore.apply(lambda: erase_keys(conn, ledger))
    for warning in restore.warnings:
        module.warn(warning)
    return dict(
        result,
        erasure=restore.erasure,
        steps=restore.steps,
        keys=loaded["keys"],
        duration=round(time.monotonic() - started, 3),
    )


def main() -> None:
    module = BackupModule(
        dict(
            CONNECTION_SPEC,
            mode=dict(type="str", default="rdb", choices=["rdb", "aof"]),
            service=dict(type="str"),
            start_command=dict(type="list", elements="str"),
            config_file=dict(type="path"),
            check_keys=dict(type="bool", default=True),
        ),
        restores=True,
        audit_action="restore",
        audit_kind=lambda p: "redis-aof" if p["mode"] == "aof" else "redis-rdb",
        targets=True,
        libraries=("redis", "anycrc"),
        supports_check_mode=True,
        mutually_exclusive=[("service", "start_command")],
    )
    module.run(run, "restore Redis")


if __name__ == "__main__":
    main()
