#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_rekey
short_description: Re-encrypt backup sets and the erasure ledger to new age recipients (key rotation)
version_added: 0.1.0
description:
  - Re-encrypts every selected backup set (O(kinds), O(source_name); all when neither is given) to the new
    O(encryption_recipients), opening it with the old identity (O(encryption_identity) or
    O(encryption_identity_file), or C(CAAS_AGE_IDENTITY)/C(CAAS_AGE_IDENTITY_FILE)). With O(ledger) the erasure
    ledger (M(caas.backup.backup_erasure)) is re-encrypted too. Afterwards the old identity opens nothing.
  - Streams each object - the old one is decrypted and encrypted again chunk by chunk, its compressed bytes
    never decompressed nor held whole in memory - and checks it on the way - the old object's size and sha256
    against the manifest; the new one read back (size, sha256) with one X25519 stanza per new recipient.
  - "No moment leaves a set unreadable: new objects are written under new names, then a new manifest listing
    them replaces the old one (the one atomic swap; a signed set's signature file holds both signatures around
    it, then the new one alone), then the old objects are deleted. A run killed at any point leaves each set
    readable with the old or with the new identity; running the module again finishes it and removes what the
    killed run left."
  - A set already encrypted to exactly the new recipients is left as it is (the module is idempotent); sets
    without encryption and incomplete or broken sets are skipped and listed. A signed set needs O(signing_key)
    to be signed again, and new recipients that include the old identity's public key are refused - both before
    anything is written.
  - The manifest keeps its times and facts (the set's place in retention and point-in-time chains does not
    change) and gains C(rekeyed_at).
author: caas.backup developers (@caas-backup)
options:
  ledger:
    description:
      - Re-encrypt the erasure ledger (C(erasure/)) too. Restores read it with the identity of the sets they
        restore, so leave this on when every set is re-keyed.
    type: bool
    default: true
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
  - caas.backup.common.read
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description:
      - Reads every manifest, checks the old identity opens each set to re-key, the signing key and the
        ledger, and reports the plan (RV(rekeyed), RV(already), RV(skipped), RV(ledger)); nothing is written.
notes:
  - The compression, tags and object lock options of the common write options do not apply - objects keep
    their compression.
  - On S3 with object lock, old objects still locked cannot be deleted - the module warns and lists them in
    RV(not_deleted); the old identity still opens those until their lock expires.
seealso:
  - module: caas.backup.backup_erasure
  - module: caas.backup.s3_backup_prune
"""

EXAMPLES = r"""
- name: Plan a key rotation
  caas.backup.backup_rekey:
    storage_url: s3://caas-backups/prod
    encryption_recipients: ["age1new..."]
    encryption_identity_file: /root/.config/caas/age-key-old.txt
    signing_key_file: /etc/caas/backup-signing-key
  check_mode: true

- name: Re-key the MongoDB backups of one replica set only
  caas.backup.backup_rekey:
    storage_url: s3://caas-backups/prod
    kinds: [mongo-full, mongo-oplog]
    source_name: rs0
    encryption_recipients: ["age1new..."]
    encryption_identity_file: /root/.config/caas/age-key-old.txt
    ledger: false
"""

RETURN = r"""
recipients:
  description: Fingerprints of the new recipients (as manifests record them).
  returned: always
  type: list
  elements: str
rekeyed:
  description: Sets re-encrypted (check mode - that would be) - C(kind), C(source), C(backup_id), C(objects), C(bytes).
  returned: always
  type: list
  elements: dict
already:
  description: Sets already encrypted to the new recipients, left as they are.
  returned: always
  type: list
  elements: dict
skipped:
  description: Sets not re-keyed, each with its C(reason) (not encrypted, incomplete, broken).
  returned: always
  type: list
  elements: dict
ledger:
  description:
    - The erasure ledger's requests C(rekeyed) (check mode - that would be) and C(already) re-keyed; null
      without O(ledger).
  returned: always
  type: dict
removed_leftovers:
  description: Objects a killed re-key had left (listed by no manifest) that were removed (check mode - that would be).
  returned: always
  type: list
  elements: str
not_deleted:
  description: Old objects that could not be deleted (object lock), with why.
  returned: success and not check mode
  type: dict
msg:
  description: In check mode, the plan in one line.
  returned: check mode
  type: str
"""

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule


class RekeyModule(BackupModule):
    """backup_rekey: what it does is a re-key (the audit log's action)."""

    audit_action = "rekey"


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils import rekey

    p = module.params
    identities = module.identities()
    rekey.check_keys(tuple(p["encryption_recipients"] or ()), identities)
    options = module.write_options()
    storage = module.open_storage()
    storage.check()
    trust = module.trusted_signers()
    plans = rekey.plan_sets(module.selected_sets(storage), options, identities)
    ledger = rekey.plan_ledger(storage, identities, options, trust) if p["ledger"] else None
    todo = [plan for plan in plans if plan.action == "rekey"]
    result = dict(
        recipients=rekey.fingerprints(options.recipients),
        rekeyed=[plan.summary() for plan in todo],
        already=[plan.summary() for plan in plans if plan.action == "tidy"],
        skipped=[plan.summary() for plan in plans if plan.action == "skip"],
        ledger=ledger,
        removed_leftovers=[key for plan in plans for key in plan.leftovers],
    )
    result["changed"] = bool(todo or result["removed_leftovers"] or (ledger and ledger["rekeyed"]))
    if module.check_mode:
        objects = sum(s["objects"] for s in result["rekeyed"])
        return dict(
            result,
            msg=f"would re-key {len(todo)} set(s) ({objects} object(s)) and "
            f"{ledger['rekeyed'] if ledger else 0} erasure request(s); {len(result['already'])} already re-keyed, "
            f"{len(result['skipped'])} skipped",
        )
    done = rekey.execute(storage, plans, identities, options, trust, p["ledger"])
    for key, reason in sorted(done["not_deleted"].items()):
        module.warn(f"{key} was not deleted ({reason}): the old identity still opens it")
    return dict(result, **done)


def main() -> None:
    module = RekeyModule(
        dict(ledger=dict(type="bool", default=True)),
        writes=True,
        reads=True,
        selects=True,
        supports_check_mode=True,
    )
    module.run(run, "re-key the backups")


if __name__ == "__main__":
    main()
