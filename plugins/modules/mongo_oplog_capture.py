#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: mongo_oplog_capture
short_description: Capture MongoDB oplog slices for point-in-time recovery
version_added: 0.1.0
description:
  - Reads C(local.oplog.rs) from the last captured position (the newest C(mongo-oplog) slice's C(last_ts); only
    when there is no slice yet, the newest C(mongo-full) backup's consistent point - a full backup taken since the
    last slice never moves it forward, so no entry falls between two slices) up to the majority commit point,
    with read concern C(majority), and writes the entries as one slice - a C(mongo-oplog) backup set whose object
    C(oplog.bson) is concatenated BSON (C(bsondump) reads it) through the usual compression and encryption.
  - The manifest records C(first_ts) (the position the slice continues from), C(last_ts) (its last entry),
    C(ops), the object's sha256 and C(base_backup_id), the newest full backup whose consistent point is at or
    before the slice's start.
  - One slice per call (for a timer), or with O(follow=true) a slice every O(slice_seconds) for O(duration)
    seconds; O(slice_seconds) is then the recovery point objective.
  - "Broken chain detection - when the oldest entry still in the oplog is newer than the last captured position,
    the entries in between are gone: the module fails with C(PITR chain broken since <ts>: take a full backup),
    returns C(chain_broken=true), and writes nothing. Once a full backup has been taken, the next capture starts
    a new chain from its consistent point."
  - Two captures of the same source never run at once - a lock file (C(flock)) in O(lock_dir); the kernel frees
    it when its holder dies, so a crashed capture leaves no stale lock.
author: caas.backup developers (@caas-backup)
options:
  follow:
    description:
      - Keep capturing for O(duration) seconds, a slice every O(slice_seconds).
    type: bool
    default: false
  duration:
    description:
      - With O(follow=true), seconds to keep capturing (0 to 604800, a week).
    type: int
    default: 300
  slice_seconds:
    description:
      - With O(follow=true), seconds between two slices (1-86400).
    type: int
    default: 60
  lock_dir:
    description:
      - Directory of the lock file C(caas-oplog-<source>.lock); it must exist. Default C(/run/lock) when writable,
        else the temporary directory.
    type: path
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
      - Defaults, as for M(caas.backup.mongo_dump), to the replica set name the server reports, else to the
        configured C(host_port) - never the name of the machine the module runs on.
    type: str
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
  - caas.backup.mongo
attributes:
  check_mode:
    support: full
    description:
      - Finds the position the capture would continue from, checks the chain (failing as a real run would), and
        counts the entries pending up to the majority commit point; C(changed) is whether a slice would be written.
        Nothing is written and no lock is taken; the source and the storage are only read.
notes:
  - Slices pair with the full backups of the same source name (retention keeps the slices a kept full backup
    needs), so the capture and the dump must use the same one.
  - A call that finds no new majority-committed entry writes no slice and reports C(changed=false).
seealso:
  - module: caas.backup.mongo_oplog_restore
  - module: caas.backup.mongo_dump
"""

EXAMPLES = r"""
- name: Capture the oplog since the last slice (every 5 minutes from a timer)
  caas.backup.mongo_oplog_capture:
    storage_url: s3://caas-backups/prod
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    login_user: backup
    login_password: "{{ vault_mongo_backup_password }}"
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]

- name: Follow the oplog for an hour, a slice a minute
  caas.backup.mongo_oplog_capture:
    storage_url: s3://caas-backups/prod
    uri: mongodb://db1.example.com:27017/?replicaSet=rs0
    follow: true
    duration: 3600
    slice_seconds: 60
"""

RETURN = r"""
backup_id:
  description: Id of the slice written; empty when there was nothing new, in check mode, or with O(follow=true).
  returned: always
  type: str
source:
  description: Source name the slices are stored under.
  returned: always
  type: str
kind:
  description: V(mongo-oplog).
  returned: check mode
  type: str
location:
  description: Storage path of the slice written; in check mode the path a new slice's id would be added to.
  returned: check mode, or when a slice was written
  type: str
continues:
  description: In check mode, what the capture would continue - V(slice <id>) or V(full backup <id>).
  returned: check mode
  type: str
up_to_ts:
  description: In check mode, the majority commit point a slice written now would end at.
  returned: check mode
  type: dict
pending_ops:
  description:
    - In check mode, the oplog entries after RV(from_ts) up to RV(up_to_ts), counted now - what a slice written now
      would hold (a real run a moment later holds at least as many while the server is written to).
  returned: check mode
  type: int
msg:
  description: In check mode, what a real run would write.
  returned: check mode
  type: str
chain_broken:
  description: Whether the oplog has rolled past the last captured position (the module then fails).
  returned: always
  type: bool
from_ts:
  description: The position (C(t), C(i), C(iso)) the capture continued from.
  returned: success
  type: dict
first_ts:
  description: The first entry of the slice.
  returned: when a slice was written
  type: dict
last_ts:
  description: The last entry captured (the position the next capture starts after).
  returned: success and not check mode
  type: dict
ops:
  description: Oplog entries captured (all slices together with O(follow=true)).
  returned: success and not check mode
  type: int
base_backup_id:
  description: The newest full backup whose consistent point is at or before the captured position.
  returned: success
  type: str
slices:
  description: With O(follow=true), one entry per capture (C(backup_id), C(first_ts), C(last_ts), C(ops)).
  returned: when follow
  type: list
  elements: dict
stored_bytes:
  description: Bytes written to storage.
  returned: when a slice was written
  type: int
duration:
  description: Seconds the capture took.
  returned: success
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import MONGO_SPEC


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.chain import capture_lock
    from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr
    from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect, source_name

    p = module.params
    started = time.monotonic()
    storage = module.open_storage()
    client = connect(p)
    try:
        source = source_name(p, client.admin.command("hello"))
        if module.check_mode:
            # No lock: a check only reads, and must not fail because a capture (from a timer) is running.
            result = pitr.plan_capture(client, storage, source)
            result.update(
                module.planned_set("mongo-oplog", source),
                changed=result["changed"] or p["follow"],
                msg=(
                    f"would write a mongo-oplog slice of about {result['pending_ops']} entries"
                    if result["pending_ops"]
                    else "would write no slice now (no new majority-committed entry)"
                )
                + f", continuing {result['continues']} from {result['from_ts']['iso']} (majority point "
                f"{result['up_to_ts']['iso']})"
                + (f", then a slice every {p['slice_seconds']}s for {p['duration']}s" if p["follow"] else ""),
            )
            return dict(result, duration=round(time.monotonic() - started, 3))
        with capture_lock("oplog", source, p["lock_dir"]):
            options, tags = module.write_options(), p["tags"]
            if p["follow"]:
                slices = pitr.follow(client, storage, source, options, tags, p["duration"], p["slice_seconds"])
                written = [s for s in slices if s["changed"]]
                result = dict(
                    changed=bool(written),
                    backup_id="",
                    source=source,
                    chain_broken=False,
                    from_ts=slices[0]["from_ts"],
                    last_ts=slices[-1]["last_ts"],
                    ops=sum(s["ops"] for s in slices),
                    base_backup_id=slices[-1]["base_backup_id"],
                    slices=[{k: s.get(k) for k in ("backup_id", "first_ts", "last_ts", "ops")} for s in written],
                )
            else:
                result = pitr.capture_slice(client, storage, source, options, tags)
                result.pop("position")
    finally:
        client.close()
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def main() -> None:
    module = BackupModule(
        dict(
            MONGO_SPEC,
            follow=dict(type="bool", default=False),
            duration=dict(type="int", default=300),
            slice_seconds=dict(type="int", default=60),
            lock_dir=dict(type="path"),
        ),
        writes=True,
        audit_action="write",
        audit_kind="mongo-oplog",
        libraries=("pymongo",),
        supports_check_mode=True,
    )
    module.run(run, "capture the MongoDB oplog")


if __name__ == "__main__":
    main()
