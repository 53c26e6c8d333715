#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: config_restore
short_description: Restore configuration files from a backup set
version_added: 0.1.0
description:
  - Restores a C(config) backup set made by M(caas.backup.config_backup) into O(dest).
  - The stored object's size and sha256 are checked against the manifest, and every archive member is
    checked, before anything in O(dest) is written. A member that would land or link outside O(dest) is
    refused, and then nothing is written.
  - Only files that differ from what O(dest) holds are written, so a second run changes nothing.
author: caas.backup developers (@caas-backup)
options:
  dest:
    description:
      - Directory to restore into; member names are relative to it. V(/) restores in place when the backup's
        root was V(/).
    type: path
    required: true
  only:
    description:
      - Glob patterns (matched like C(exclude) of M(caas.backup.config_backup)) of members to restore;
        everything when empty.
    type: list
    elements: str
    default: []
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.restore
attributes:
  check_mode:
    support: full
    description:
      - Verifies the backup and lists what would be created or updated, writing nothing. C(changed) is what a real
        run would report - true when any member would be created or updated.
seealso:
  - module: caas.backup.config_backup
"""

EXAMPLES = r"""
- name: Restore the latest configuration into a new site
  caas.backup.config_restore:
    storage_url: s3://caas-backups/prod
    source_name: app01
    dest: /srv/caas
    encryption_identity_file: /root/.config/caas/age-key.txt

- name: Show what restoring only the keys would change
  caas.backup.config_restore:
    storage_url: file:///backups
    dest: /srv/caas
    only: [keys]
    encryption_identity: "{{ vault_age_identity }}"
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
  description: The directory restored into (O(dest)).
  returned: always
  type: str
  sample: /srv/caas
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
msg:
  description: In check mode, the set that would be restored and what would change.
  returned: check mode
  type: str
created:
  description: Names that did not exist in O(dest) (and were, or would be, written).
  returned: always
  type: list
  elements: str
updated:
  description: Names whose content, mode or link target differed (and were, or would be, rewritten).
  returned: always
  type: list
  elements: str
unchanged:
  description: Number of members already identical in O(dest).
  returned: always
  type: int
duration:
  description: Seconds the restore took, including download and verification.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object, iso
    from ansible_collections.caas.backup.plugins.module_utils.files import extract, plan_restore

    p = module.params
    started = time.monotonic()
    storage, bset = module.restore_source("config")
    identities = module.identities()
    with fetch_object(storage, bset, "config.tar") as copy:
        with copy.reader(identities) as reader:
            plan = plan_restore(reader, p["dest"], p["only"])
        changes = plan["create"] + plan["update"]
        if changes and not module.check_mode:
            with copy.reader(identities) as reader:
                extract(reader, p["dest"], set(changes))
    result = dict(
        changed=bool(changes),
        target=p["dest"],
        backup_id=bset.backup_id,
        source=bset.source,
        backup_time=iso(bset.time),
        created=plan["create"],
        updated=plan["update"],
        unchanged=len(plan["same"]),
        duration=round(time.monotonic() - started, 3),
    )
    if module.check_mode:
        result["msg"] = (
            f"would restore config backup {bset.backup_id} of {bset.source} ({result['backup_time']}) into "
            f"{p['dest']}: {len(plan['create'])} created, {len(plan['update'])} updated, {len(plan['same'])} unchanged"
        )
    return result


def main() -> None:
    module = BackupModule(
        dict(
            dest=dict(type="path", required=True),
            only=dict(type="list", elements="str", default=[]),
        ),
        restores=True,
        audit_action="restore",
        audit_kind="config",
        supports_check_mode=True,
    )
    module.run(run, "restore configuration")


if __name__ == "__main__":
    main()
