#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_verify
short_description: Verify backup sets by re-reading them or by a test restore
version_added: 0.1.0
description:
  - O(level=checksum) re-reads every object of a set, checks its size and sha256 against the manifest, then opens it
    (decrypts, decompresses) and checks its format, e.g. that a configuration archive is a valid tar listing every
    file the manifest names.
  - O(level=restore) also restores the set into scratch space and compares what came back with the manifest, e.g.
    the number of files and bytes of a configuration archive.
  - By default the newest complete set of each kind and source is verified; the report is stored beside each set
    (C(verification.json)) for M(caas.backup.backup_info) and audits.
  - Every set whose manifest is broken (damaged, or with O(trusted_signers) unsigned or not signed by one of them) is
    a failure too, listed with its error, whatever O(all_sets) says.
  - The module fails when a verification fails, with the report of every set in its result.
author: caas.backup developers (@caas-backup)
options:
  backup_id:
    description:
      - Verify only this set.
    type: str
  all_sets:
    description:
      - Verify every complete set, not just the newest per kind and source.
    type: bool
    default: false
  level:
    description:
      - V(checksum) re-reads and checks formats; V(restore) also restores into scratch space and compares.
    type: str
    choices: [checksum, restore]
    default: checksum
  record:
    description:
      - Store each report beside its set.
    type: bool
    default: true
  scratch_mongo_uri:
    description:
      - MongoDB server for O(level=restore) of C(mongo-full) sets. Its collections of the same names are dropped and
        replaced, so give a scratch server only. When unset, a scratch C(mongod) (or C(secantusd-py)) is started on
        loopback in O(scratch_dir) and stopped afterwards.
    type: str
  scratch_dir:
    description:
      - Directory for the verified local copies and test restores (removed afterwards); the system temporary
        directory when unset.
    type: path
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description: Lists the sets that would be verified; reads nothing.
seealso:
  - module: caas.backup.backup_info
"""

EXAMPLES = r"""
- name: Monthly test restore of the newest backups
  caas.backup.backup_verify:
    storage_url: s3://caas-backups/prod
    level: restore
    encryption_identity_file: /secure/age-key.txt
"""

RETURN = r"""
reports:
  description:
    - One report per set, with C(ok) and its C(checks) (each with C(check), C(ok), facts or C(error)).
    - A broken set has one C(manifest) check with the error. C(signed_by) names the trusted key
      (C(SHA256:... (comment))) that signed the manifest, or is null when signatures were not checked.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: config, source: app01, backup_id: 20260221T020000.412Z-3f9a, level: checksum, ok: true,
       verified_at: "2026-03-01T04:00:00Z", signed_by: "SHA256:Xb3... (backup@caas)",
       checks: [{check: sha256 config.tar.zst.age, ok: true}, {check: checksum config.tar, ok: true, members: 12}]}
verified:
  description: Number of sets that passed.
  returned: always
  type: int
failed:
  description: Number of sets that failed.
  returned: always
  type: int
"""

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, IntegrityError, NotFoundError


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.verify import record_verification, verify_set

    p = module.params
    storage = module.open_storage()
    listed = module.selected_sets(storage)
    # A broken set (its manifest damaged, unsigned or wrongly signed) is always a failure, never skipped.
    broken = [s for s in listed if s.broken]
    sets = [s for s in listed if s.complete]
    if p["backup_id"]:
        sets = [s for s in sets + broken if s.backup_id == p["backup_id"]]
        if not sets:
            raise NotFoundError(f"no complete backup {p['backup_id']} in {storage.url}")
    else:
        if not p["all_sets"]:
            newest = {}
            for bset in sets:
                newest[(bset.kind, bset.source)] = bset  # sets come oldest first
            sets = list(newest.values())
        sets = sorted(sets + broken, key=lambda s: (s.kind, s.source, s.backup_id))
    if not sets:
        raise NotFoundError(f"no complete backup set to verify in {storage.url}")
    if module.check_mode:
        return dict(changed=False, reports=[s.summary() for s in sets], verified=0, failed=0)
    identities = module.identities()
    reports = []
    for bset in sets:
        report = verify_set(
            storage, bset, identities, p["level"], p["scratch_dir"], {"scratch_mongo_uri": p["scratch_mongo_uri"]}
        )
        if p["record"]:
            record_verification(storage, bset, report)
        reports.append(report)
    failed = [r for r in reports if not r["ok"]]
    result = dict(changed=False, reports=reports, verified=len(reports) - len(failed), failed=len(failed))
    if failed:
        first = next(c for c in failed[0]["checks"] if not c["ok"])
        raise IntegrityError(
            f"{len(failed)} of {len(reports)} set(s) failed, first "
            f"{failed[0]['kind']}/{failed[0]['source']}/{failed[0]['backup_id']}: {first['error']}",
            **result,
        )
    return result


def main() -> None:
    module = BackupModule(
        dict(
            backup_id=dict(type="str"),
            all_sets=dict(type="bool", default=False),
            level=dict(type="str", default="checksum", choices=["checksum", "restore"]),
            record=dict(type="bool", default=True),
            scratch_mongo_uri=dict(type="str", no_log=True),
            scratch_dir=dict(type="path"),
        ),
        reads=True,
        audit_action="verify",
        selects=True,
        supports_check_mode=True,
    )
    module.run(run, "verify backups")


if __name__ == "__main__":
    main()
