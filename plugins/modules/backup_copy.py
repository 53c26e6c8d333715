#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_copy
short_description: Copy complete backup sets to a second storage location
version_added: 0.1.0
description:
  - Copies the complete backup sets of O(storage_url) to O(dest_storage_url) - a second bucket or region, or between
    a local directory and S3 - so that a restore can still be made when the primary location is gone (restores and
    C(dr.yml) take the copies as O(caas.backup.mongo_restore#module:storage_fallback_urls)).
  - Each set is copied byte for byte - encrypted objects stay encrypted (no key is needed), a signed manifest stays
    valid - one object at a time in chunks (bounded memory), each checked against its manifest's size and sha256 as
    it streams. The data objects are written first, then the signature, then the manifest, so a copy that fails or
    is killed midway never leaves a set that looks complete at the destination.
  - Only complete sets are copied (a set without a manifest may still be being written, and is left out); a set
    whose manifest is damaged is refused with a warning. A set already complete at the destination (the same
    manifest, every object present at its size) is skipped; one with the same id but another manifest is refused,
    never overwritten.
  - An object that fails its size or sha256 fails its set - what was written of it is removed again and its
    manifest is never written - while the other sets are still copied; the module then fails naming each bad set
    and object.
  - Each location keeps its own retention - run M(caas.backup.s3_backup_prune) on each (C(playbooks/prune.yml)
    prunes every location). Verification records (C(verification.json)) are not copied - verify each location.
author: caas.backup developers (@caas-backup)
options:
  dest_storage_url:
    description:
      - Where to copy the sets to - V(file:///path) or V(s3://bucket/prefix). A local directory that does not
        exist yet is created (not in check mode).
    type: str
    required: true
  dest_s3_endpoint_url:
    description:
      - S3-compatible server of the destination. O(s3_endpoint_url) when unset.
    type: str
  dest_aws_access_key_id:
    description:
      - S3 access key of the destination. O(aws_access_key_id) when unset.
    type: str
  dest_aws_secret_access_key:
    description:
      - S3 secret key of the destination. O(aws_secret_access_key) when unset. Never logged.
    type: str
  dest_aws_session_token:
    description:
      - S3 session token of the destination. O(aws_session_token) when unset.
    type: str
  dest_aws_region:
    description:
      - S3 region of the destination. O(aws_region) when unset.
    type: str
  dest_s3_sse:
    description:
      - S3 server-side encryption of the copied objects.
    type: str
    choices: [AES256, aws:kms]
  dest_s3_sse_kms_key_id:
    description:
      - KMS key id for O(dest_s3_sse=aws:kms).
    type: str
  dest_s3_object_lock_mode:
    description:
      - Object Lock retention mode of the copied objects; the destination bucket must have Object Lock enabled.
    type: str
    choices: [GOVERNANCE, COMPLIANCE]
  dest_s3_object_lock_days:
    description:
      - Days the copied objects stay locked (1-36500); goes with O(dest_s3_object_lock_mode).
    type: int
  since:
    description:
      - Copy only sets taken at or after this ISO 8601 time (1970 to 2100).
    type: str
  newest:
    description:
      - Copy only the newest N complete sets of each kind and source (after O(since)); all when unset.
    type: int
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description:
      - Lists the sets a real run would copy (RV(would_copy)) and those already at the destination; nothing is written.
seealso:
  - module: caas.backup.s3_backup_prune
  - module: caas.backup.mongo_restore
"""

EXAMPLES = r"""
- name: Copy every complete set to the second region's bucket
  caas.backup.backup_copy:
    storage_url: s3://caas-backups/prod
    dest_storage_url: s3://caas-backups-dr/prod
    dest_aws_region: eu-central-1

- name: Keep the last 7 MongoDB full backups in a local directory too
  caas.backup.backup_copy:
    storage_url: s3://caas-backups/prod
    dest_storage_url: file:///srv/backup-copy
    kinds: [mongo-full]
    newest: 7
"""

RETURN = r"""
copied:
  description: Sets copied, each with its C(set) (C(<kind>/<source>/<backup_id>)), C(objects) written and data C(bytes).
  returned: always
  type: list
  elements: dict
  sample: [{set: config/app01/20260221T020000.412Z-3f9a, objects: 2, bytes: 10240}]
present:
  description: Sets skipped because they are complete at the destination already.
  returned: always
  type: list
  elements: str
refused:
  description: Sets never copied, with the C(error) - a damaged manifest at the source, another set of the same id
    at the destination. Each is also a warning.
  returned: always
  type: list
  elements: dict
failed:
  description: Sets whose copy failed (an object's size or sha256, the storage), with the C(error) naming the
    object; the module fails when this is not empty, after copying the others.
  returned: always
  type: list
  elements: dict
ledger_copied:
  description:
    - The erasure ledger's objects (M(caas.backup.backup_erasure)) copied before the sets, because every restore
      applies the ledger of the location it restores from; in check mode, those a real run would copy.
  returned: always
  type: list
  elements: str
would_copy:
  description: In check mode, the sets a real run would copy.
  returned: check mode
  type: list
  elements: str
bytes_copied:
  description: Data bytes copied.
  returned: always
  type: int
dest_storage_url:
  description: The destination, as given.
  returned: always
  type: str
msg:
  description: What was copied (in check mode, what would be).
  returned: success
  type: str
"""

import os

from ansible_collections.caas.backup.plugins.module_utils.common import WRITE_SPEC, BackupModule


class CopyModule(BackupModule):
    """backup_copy: its runs are audited as copies."""

    audit_action = "copy"


def run(module: CopyModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets, parse_time
    from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError
    from ansible_collections.caas.backup.plugins.module_utils.copy import (
        copy_ledger,
        copy_sets,
        ledger_missing,
        plan_copy,
        select,
    )
    from ansible_collections.caas.backup.plugins.module_utils.erasure import PREFIX as ERASURE_PREFIX
    from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage

    p = module.params
    source = module.open_storage()
    dest = module.open_storage(prefix="dest_")
    if (dest.url, getattr(dest, "endpoint_url", None)) == (source.url, getattr(source, "endpoint_url", None)):
        raise ConfigurationError(f"dest_storage_url {dest.url} is the source itself")
    since = parse_time(p["since"]) if p["since"] else None
    chosen = select(module.selected_sets(source), since, p["newest"])
    if module.check_mode and isinstance(dest, LocalStorage) and not os.path.isdir(dest.root):
        module.warn(f"storage directory {dest.root} does not exist: a real run creates it")
        there = []
        ledger = [info.key for info in source.list(ERASURE_PREFIX)]
    else:
        there = list_sets(dest)
        ledger = ledger_missing(source, dest)
    plan = plan_copy(source, dest, chosen, there)
    for refused in plan.refused:
        module.warn(f"not copied: {refused['set']}: {refused['error']}")
    result = dict(
        dest_storage_url=p["dest_storage_url"],
        present=[s.prefix for s in plan.present],
        refused=plan.refused,
        copied=[],
        failed=[],
        bytes_copied=0,
        ledger_copied=ledger,
    )
    if module.check_mode:
        return dict(
            result,
            changed=bool(plan.to_copy or ledger),
            would_copy=[s.prefix for s in plan.to_copy],
            msg=f"would copy {len(plan.to_copy)} set(s) to {dest.url}; {len(plan.present)} already there",
        )
    copy_ledger(source, dest, ledger)  # first: a set restored from the copy must find the erasures after it
    copied, failed = copy_sets(source, dest, plan)
    result.update(
        changed=bool(copied or ledger), copied=copied, failed=failed, bytes_copied=sum(c["bytes"] for c in copied)
    )
    if failed:
        reasons = "; ".join(f"{f['set']}: {f['error']}" for f in failed)
        raise IntegrityError(
            f"{len(failed)} set(s) not copied to {dest.url} ({len(copied)} copied): {reasons}", **result
        )
    result["msg"] = f"copied {len(copied)} set(s) to {dest.url}; {len(plan.present)} already there"
    return result


def main() -> None:
    # The destination's own S3 options: no environment fallback (the environment is the source's).
    dest = {f"dest_{name}": dict(type="str") for name in ("s3_endpoint_url", "aws_region")}
    for name in ("aws_access_key_id", "aws_secret_access_key", "aws_session_token"):
        dest[f"dest_{name}"] = dict(type="str", no_log=True)
    for name in ("s3_sse", "s3_sse_kms_key_id", "s3_object_lock_mode", "s3_object_lock_days"):
        dest[f"dest_{name}"] = dict(WRITE_SPEC[name])
    module = CopyModule(
        dict(
            dest,
            dest_storage_url=dict(type="str", required=True),
            since=dict(type="str"),
            newest=dict(type="int"),
        ),
        selects=True,
        supports_check_mode=True,
        required_together=[("dest_s3_object_lock_mode", "dest_s3_object_lock_days")],
    )
    module.run(run, "copy backups")


if __name__ == "__main__":
    main()
