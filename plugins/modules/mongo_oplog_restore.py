#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: mongo_oplog_restore
short_description: Restore MongoDB to a point in time from a full backup and oplog slices
version_added: 0.1.0
description:
  - Picks the newest C(mongo-full) backup whose consistent point is before O(target_time), restores it as
    M(caas.backup.mongo_restore) does (every namespace, O(drop) first), then replays the C(mongo-oplog) slices
    made by M(caas.backup.mongo_oplog_capture) in order, every entry with a timestamp before the target.
  - "The target is exclusive - the result is the data as it was just before O(target_time): an entry logged
    exactly at the target is not applied. An ISO 8601 time stands for C(Timestamp(<seconds>, 0)), so entries
    of that second are not applied; give a BSON timestamp C({t, i}) for an exact oplog position."
  - Before anything on the target is touched, the base backup (sha256 and every namespace's CRC) and every
    slice needed (sha256, BSON framing, entry count and last timestamp against its manifest) are downloaded
    and checked. A missing or corrupted slice fails the restore with nothing changed.
  - A target before the earliest restorable point (the oldest full backup's consistent point) or after the last
    captured entry fails, naming the available window.
  - Replays with C(applyOps) when the server has it; otherwise applies each entry itself - inserts, updates
    (classic and C($v 2) diff forms), deletes, the commands create, drop, createIndexes, dropIndexes,
    renameCollection and collMod, and transactions (an C(applyOps) entry, expanded; split and prepared ones
    joined first). Replay is idempotent, as the server's own oplog application.
  - After the replay, applies the erasure ledger (M(caas.backup.backup_erasure)) to every namespace, so erased
    documents that the base backup or the replayed entries held do not come back. A ledger that cannot be read
    fails the restore before anything is touched.
author: caas.backup developers (@caas-backup)
options:
  target_time:
    description:
      - "The point in time, exclusive - ISO 8601 UTC (V(2026-02-21T10:30:00Z)) or a BSON timestamp as a mapping
        (V({t: 1771669800, i: 3})), between 1970 and 2100."
    type: raw
    required: true
  skip_base:
    description:
      - Do not restore the base full backup; replay the slices from its consistent point onto what the server
        holds (which must be that backup's data, restored before).
    type: bool
    default: false
  drop:
    description:
      - Drop each collection of the base backup on the target before restoring it.
    type: bool
    default: true
  replay_method:
    description:
      - V(auto) uses C(applyOps) when the server has it, else applies entries one by one; V(manual) always
        applies them one by one.
    type: str
    choices: [auto, applyOps, manual]
    default: auto
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.target
  - caas.backup.mongo
attributes:
  check_mode:
    support: full
    description:
      - Downloads and checks the base backup and every slice, connects to the target to resolve the replay method,
        and returns the plan with C(changed=true) - the base backup (id, time, consistent point), the slices it
        would replay (ids, first and last timestamps, op counts), the resolved target, the method and the
        restorable window. Nothing on the target is changed, and no RV(restored_to) is returned.
notes:
  - Restore into an empty server, or one whose collections the base backup replaces; collections created after
    the base backup come from the replay.
  - Tested against SecantusDB, which has no C(applyOps) - the manual replay is what the tests exercise.
seealso:
  - module: caas.backup.mongo_oplog_capture
  - module: caas.backup.mongo_restore
"""

EXAMPLES = r"""
- name: Restore to just before a bad deploy
  caas.backup.mongo_oplog_restore:
    storage_url: s3://caas-backups/prod
    source_name: rs0
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    encryption_identity_file: /root/.config/caas/age-key.txt
    target_time: "2026-02-21T10:30:00Z"

- name: Show what a restore to an exact oplog position would do
  caas.backup.mongo_oplog_restore:
    storage_url: file:///backups
    target_time: {t: 1771669800, i: 3}
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
  description: The server restored into, credential-free (C([replica_set/]host:port[,...])).
  returned: always
  type: str
  sample: rs0/db1.example.com:27017
target_ts:
  description: The target as a BSON timestamp (C(t), C(i), C(iso)); entries before it are applied.
  returned: always
  type: dict
restored_to:
  description: The timestamp restored to (exclusive), as C(target_ts).
  returned: success and not check mode
  type: dict
last_applied_ts:
  description: The last oplog entry applied (null when none was needed).
  returned: success and not check mode
  type: dict
base_backup_id:
  description: The full backup restored (or replayed onto with O(skip_base)).
  returned: always
  type: str
base_backup_time:
  description: When the base full backup was taken (ISO 8601 UTC).
  returned: always
  type: str
base_consistent_ts:
  description: Its consistent point.
  returned: always
  type: dict
source:
  description: Source name of the restored sets.
  returned: always
  type: str
dropped:
  description: Target namespaces dropped (or that would be) before the base backup is restored.
  returned: unless O(skip_base)
  type: list
  elements: str
msg:
  description: In check mode, the plan in one line - base backup, slices, target and method.
  returned: check mode
  type: str
slices:
  description: The slices replayed, in order - C(backup_id), C(first_ts), C(last_ts), C(ops).
  returned: always
  type: list
  elements: dict
slice_ops:
  description: Entries in those slices.
  returned: always
  type: int
ops_applied:
  description: Entries applied (those before the target).
  returned: success and not check mode
  type: int
window:
  description: The restorable window, C(earliest) and C(latest).
  returned: always
  type: dict
erasure:
  description:
    - The erasure ledger applied after the replay - C(requests), C(removed) (documents; null in check mode) and
      C(details) (C(request_id), C(target) namespace, C(removed)).
  returned: always
  type: dict
replay_method:
  description: V(applyOps) or V(manual).
  returned: always
  type: str
duration:
  description: Seconds the restore took.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import MONGO_SPEC


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import check_stored
    from ansible_collections.caas.backup.plugins.module_utils.erasure import planned, read_ledger
    from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr
    from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect, describe

    p = module.params
    started = time.monotonic()
    target = pitr.parse_target(p["target_time"])

    def find(storage):
        plan = pitr.plan_restore(storage, p["source_name"], target, module.trusted_signers())
        for bset in (plan.chain.base, *plan.slices):
            check_stored(bset, storage.url)
        return plan

    storage, plan = module.locate(find)
    ledger = read_ledger(storage, module.identities(), module.trusted_signers())  # unreadable: fail before anything
    if module.plan_only:
        summary = plan.summary()
        return module.planned_restore(
            plan.chain.base, *plan.slices, target=describe(p), erasure=planned(ledger), **summary
        )
    result = pitr.restore_to(
        storage,
        lambda: connect(p),
        plan,
        module.identities(),
        skip_base=p["skip_base"],
        drop=p["drop"],
        method=p["replay_method"],
        check_mode=module.check_mode,
        ledger=ledger,
    )
    result.setdefault("erasure", planned(ledger))  # check mode: what a real run applies
    result.update(
        changed=True, target=describe(p), source=plan.chain.base.source, duration=round(time.monotonic() - started, 3)
    )
    if module.check_mode:
        result["msg"] = (
            f"would restore {result['source']} to just before {result['target_ts']['iso']} "
            f"({result['target_ts']['t']}, {result['target_ts']['i']}): "
            + ("the server's data as of " if p["skip_base"] else "restore ")
            + f"base backup {result['base_backup_id']} ({result['base_backup_time']}), then replay "
            f"{len(result['slices'])} slice(s) of {result['slice_ops']} entries with {result['replay_method']}"
        )
    return result


def main() -> None:
    module = BackupModule(
        dict(
            MONGO_SPEC,
            target_time=dict(type="raw", required=True),
            skip_base=dict(type="bool", default=False),
            drop=dict(type="bool", default=True),
            replay_method=dict(type="str", default="auto", choices=["auto", "applyOps", "manual"]),
        ),
        reads=True,
        audit_action="restore",
        audit_kind="mongo-oplog",
        targets=True,
        libraries=("pymongo", "anycrc"),
        supports_check_mode=True,
    )
    module.run(run, "restore MongoDB to a point in time")


if __name__ == "__main__":
    main()
