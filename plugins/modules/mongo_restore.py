#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: mongo_restore
short_description: Restore MongoDB from a mongodump archive backup set
version_added: 0.1.0
description:
  - Restores a C(mongo-full) backup set made by M(caas.backup.mongo_dump) (or imported from C(mongodump
    --archive)) into a MongoDB server.
  - Verifies integrity first - the stored object's size and sha256, then every namespace's CRC-64 over the
    whole archive - before dropping or writing anything. A corrupted or truncated backup changes nothing.
  - Creates collections with their options (capped, validators, collation, time series) and views, inserts
    the documents with parallel workers, builds the indexes after the data, then replays the archive's oplog
    up to the backup's consistent point (C(last_ts)).
  - Afterwards compares each collection's count with the backup's and returns them, then applies the erasure
    ledger (M(caas.backup.backup_erasure)) to what was restored, so erased documents do not come back.
author: caas.backup developers (@caas-backup)
options:
  ns_include:
    description:
      - Namespace patterns (V(db.collection), V(*) matches any characters) of the backup to restore;
        everything when empty.
    type: list
    elements: str
    default: []
  ns_exclude:
    description:
      - Namespace patterns of the backup not restored.
    type: list
    elements: str
    default: []
  ns_from:
    description:
      - Rename patterns, paired with O(ns_to) - V(app.*) to V(app_copy.*) restores every collection of C(app)
        into C(app_copy). The wildcards' matches are carried over in order.
    type: list
    elements: str
    default: []
  ns_to:
    description:
      - Target patterns for O(ns_from), as many and with as many V(*) wildcards.
    type: list
    elements: str
    default: []
  drop:
    description:
      - Drop each restored collection (or view) on the target before restoring it. Collections not in the
        restore are never dropped.
    type: bool
    default: false
  oplog_replay:
    description:
      - Replay the oplog stored in the backup, up to its consistent point.
    type: bool
    default: true
  restore_users_and_roles:
    description:
      - Restore C(admin.system.users) and C(admin.system.roles) when the backup has them.
    type: bool
    default: false
  insertion_workers:
    description:
      - Parallel insert workers (1-64), shared by all collections. One is fastest on servers that serialize writes
        (SecantusDB measured 1.7 times slower with 4); raise it for a replica set that takes parallel writes well.
    type: int
    default: 1
  write_concern:
    description:
      - "Write concern of the inserts, for example V({w: majority, j: true}) - keys C(w) (a node count or a
        tag), C(j) (a bool) and C(wtimeout) (milliseconds)."
    type: dict
    default: {w: majority}
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.restore
  - caas.backup.common.target
  - caas.backup.mongo
attributes:
  check_mode:
    support: full
    description:
      - Verifies the backup (sha256 and every namespace's CRC), connects to the target, and reports the set, what
        would be restored and what would be dropped, with C(changed=true) (a real run writes); nothing is written.
seealso:
  - module: caas.backup.mongo_dump
"""

EXAMPLES = r"""
- name: Restore the latest MongoDB backup into a new site, replacing what is there
  caas.backup.mongo_restore:
    storage_url: s3://caas-backups/prod
    source_name: rs0
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    encryption_identity_file: /root/.config/caas/age-key.txt
    drop: true

- name: Restore one database of yesterday's backup under another name
  caas.backup.mongo_restore:
    storage_url: file:///backups
    before: "2026-02-21T00:00:00Z"
    ns_include: ["shop.*"]
    ns_from: ["shop.*"]
    ns_to: ["shop_yesterday.*"]
"""

RETURN = r"""
storage_url:
  description: The storage location the set was read from - O(storage_url), or the first of O(storage_fallback_urls)
    that holds it when the ones before could not be reached or lack it.
  returned: success
  type: str
  sample: s3://caas-backups-dr/prod
target:
  description: The server restored into, credential-free (C([replica_set/]host:port[,...])).
  returned: always
  type: str
  sample: rs0/db1.example.com:27017
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
  description: When the restored set was taken (ISO 8601 UTC).
  returned: always
  type: str
msg:
  description: In check mode, the set that would be restored, how many namespaces and documents, and the drops.
  returned: check mode
  type: str
consistent_ts:
  description: The oplog position the restored data corresponds to (C(t), C(i), C(iso)); null without oplog.
  returned: always
  type: dict
namespaces:
  description: What is (or would be) restored - C(ns), C(target), C(type), C(documents) in the backup.
  returned: always
  type: list
  elements: dict
dropped:
  description: Target namespaces dropped (or that would be) before the restore.
  returned: always
  type: list
  elements: str
collections:
  description:
    - Per restored namespace - C(expected) (documents in the backup), C(count) (now on the target),
      C(inserted), C(duplicates), C(oplog_ops), C(indexes), and C(match) (null where oplog replay or a
      collection kept from before makes the counts incomparable).
    - C(count) is taken after the erasure ledger was applied; C(erased) (where a request named the collection)
      is how many documents the ledger removed, after C(match) was checked.
  returned: success and not check mode
  type: list
  elements: dict
erasure:
  description:
    - The erasure ledger (requests recorded by M(caas.backup.backup_erasure)) applied after the restore -
      C(requests) (how many), C(removed) (documents removed, null in check mode) and C(details) (C(request_id),
      C(target) namespace, C(removed)). Requests for namespaces this restore did not restore remove nothing.
    - A ledger that cannot be read (wrong identity, damaged, unsigned with O(trusted_signers)) fails the restore
      before anything is touched.
  returned: always
  type: dict
  sample:
    requests: 1
    removed: 1
    details: [{request_id: 20260301T101500Z-gdpr-42, target: caas_auth.users, removed: 1}]
oplog_applied:
  description: Oplog entries replayed.
  returned: success and not check mode
  type: int
duration:
  description: Seconds the restore took, including download and verification.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import MONGO_SPEC


def _write_concern(value: dict) -> dict:
    wc = dict(value or {})
    if isinstance(wc.get("w"), str) and wc["w"].isdigit():
        wc["w"] = int(wc["w"])
    if "wtimeout" in wc:
        wc["wtimeout"] = int(wc["wtimeout"])
    return wc


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object, iso
    from ansible_collections.caas.backup.plugins.module_utils.erasure import planned, read_ledger
    from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect, describe
    from ansible_collections.caas.backup.plugins.module_utils.mongo.restore import (
        Renamer,
        erase,
        plan,
        restore_archive,
        select,
        verify_archive,
    )

    p = module.params
    started = time.monotonic()
    renamer = Renamer(p["ns_from"], p["ns_to"])
    storage, bset = module.restore_source("mongo-full")
    identities = module.identities()
    ledger = read_ledger(storage, identities, module.trusted_signers())  # unreadable: fail before anything
    if module.plan_only:
        return module.planned_restore(bset, target=describe(p), erasure=planned(ledger))
    result: dict = dict(
        target=describe(p),
        backup_id=bset.backup_id,
        source=bset.source,
        backup_time=iso(bset.time),
        consistent_ts=bset.facts.get("last_ts") if p["oplog_replay"] else None,
    )
    with fetch_object(storage, bset, "dump.archive") as copy:
        with copy.reader(identities) as reader:
            prelude = verify_archive(reader, copy.name, bset.facts)
        targets = select(prelude, p["ns_include"], p["ns_exclude"], renamer, p["restore_users_and_roles"])
        client = connect(p, maxPoolSize=max(10, p["insertion_workers"] + 2))
        try:
            restore_plan = plan(client, prelude, targets, p["drop"], p["oplog_replay"])
            result.update(namespaces=restore_plan.summary(), dropped=restore_plan.drop)
            if not restore_plan.oplog_entries:
                result["consistent_ts"] = None if prelude.get(("", "oplog")) is None else result["consistent_ts"]
            if module.check_mode:
                documents = sum(n.get("documents") or 0 for n in result["namespaces"])
                return dict(
                    result,
                    changed=True,
                    erasure=planned(ledger),
                    msg=f"would restore mongo-full backup {bset.backup_id} of {bset.source} ({result['backup_time']}): "
                    f"{len(result['namespaces'])} namespace(s), {documents} document(s), "
                    f"{len(restore_plan.drop)} dropped first",
                    duration=round(time.monotonic() - started, 3),
                )
            with copy.reader(identities) as reader:
                done = restore_archive(
                    client,
                    reader,
                    copy.name,
                    restore_plan,
                    workers=p["insertion_workers"],
                    write_concern=_write_concern(p["write_concern"]),
                )
            done["erasure"] = erase(client, ledger, restore_plan.ns_map(), done["collections"])
        finally:
            client.close()
    result.update(done, changed=True, duration=round(time.monotonic() - started, 3))
    return result


def main() -> None:
    module = BackupModule(
        dict(
            MONGO_SPEC,
            ns_include=dict(type="list", elements="str", default=[]),
            ns_exclude=dict(type="list", elements="str", default=[]),
            ns_from=dict(type="list", elements="str", default=[]),
            ns_to=dict(type="list", elements="str", default=[]),
            drop=dict(type="bool", default=False),
            oplog_replay=dict(type="bool", default=True),
            restore_users_and_roles=dict(type="bool", default=False),
            insertion_workers=dict(type="int", default=1),
            write_concern=dict(type="dict", default={"w": "majority"}),
        ),
        restores=True,
        audit_action="restore",
        audit_kind="mongo-full",
        targets=True,
        libraries=("pymongo", "anycrc"),
        supports_check_mode=True,
    )
    module.run(run, "restore MongoDB")


if __name__ == "__main__":
    main()
