#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: s3_backup_prune
short_description: Apply the retention policy to backup sets
version_added: 0.1.0
description:
  - Plans, for every backup set in O(storage_url), keep or delete with the reasons, then deletes what the plan says.
    Works on S3 (V(s3://)) and local (V(file://)) storage alike.
  - "Defaults: C(mongo-full) daily 30, weekly 12, monthly 12, yearly 7; C(mongo-oplog) 7 days, but never a slice a
    kept full backup's point-in-time window still needs; C(redis-rdb) and C(redis-aof) 7 days; C(kafka-meta) 90 days;
    C(kafka-messages) 7 days, and every set after the oldest kept one (they chain, as oplog slices do);
    C(config) 365 days; sets tagged V(keep) forever."
  - Daily, weekly (ISO weeks), monthly and yearly rules keep the newest restorable set of each of the last N calendar
    periods in UTC (one that failed verification only when the period has no other); V(days) keeps every complete
    set younger than N days. Two sets of the same second are ordered by backup id, as everywhere in the catalog.
  - A set's manifest is deleted before its data, so an interrupted prune never leaves a set that looks complete but
    is not. Object-locked sets are skipped and reported. Deletes go in batches of at most 1000 keys.
  - When any set has an unreadable manifest, nothing is deleted and the module fails saying which.
  - A set whose stored verification (C(verification.json), written by M(caas.backup.backup_verify)) failed is not
    restorable - it never counts towards O(minimum_redundancy). The newest restorable set (verified good, or
    complete and not verified) of each kind and source is never deleted.
  - "Point-in-time windows are kept whole: the kept oplog window of a source runs from the oldest slice the
    C(mongo-oplog) rules keep; every full backup a target inside it needs (the newest one whose consistent point is
    at or before the window's start, and one restarting the chain after a hole) and every slice from there on stay,
    whatever the C(mongo-full) rules say. Where those rules would have deleted such a full backup, or part of the
    window cannot be reached at all, the module warns and says so in RV(pitr_warnings)."
  - Leftovers of killed writes (unfinished S3 multipart uploads, local C(.partial-*) files, empty set directories)
    older than O(incomplete_grace_hours) are removed, only below the O(kinds) and O(source_name) selected.
author: caas.backup developers (@caas-backup)
options:
  policy:
    description:
      - "Rules per kind, replacing the defaults of the kinds it names, e.g. C({config: {days: 30}})."
      - Rules are V(days), V(daily), V(weekly), V(monthly) and V(yearly), each a whole number >= 0.
    type: dict
    default: {}
  minimum_redundancy:
    description:
      - Never keep fewer than this many restorable sets (complete, and not failed verification) per kind and source,
        whatever the rules say. At least V(1).
    type: int
    default: 1
  keep_tags:
    description:
      - Tags that keep a set forever.
    type: list
    elements: str
    default: [keep]
  incomplete_grace_hours:
    description:
      - Incomplete sets (no manifest) and unfinished uploads younger than this may still be being written and stay.
      - From V(0) to V(87600) (10 years).
    type: int
    default: 24
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description:
      - The dry-run plan, with a reason per set; nothing is deleted. What a real run would delete is in
        RV(would_delete) and RV(would_delete_partial_uploads) (RV(deleted) and RV(partial_uploads) stay empty), and
        C(changed) is what the real run would report.
seealso:
  - module: caas.backup.backup_info
"""

EXAMPLES = r"""
- name: Show what the default retention would delete
  caas.backup.s3_backup_prune:
    storage_url: s3://caas-backups/prod
  check_mode: true
  register: plan

- name: Prune, keeping configuration backups for 30 days only
  caas.backup.s3_backup_prune:
    storage_url: s3://caas-backups/prod
    policy:
      config: {days: 30}
    minimum_redundancy: 2
"""

RETURN = r"""
plan:
  description:
    - Every set considered, with C(action) (V(keep) or V(delete)) and C(reasons); C(verified) is the result of its
      stored verification (V(null) when never verified).
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: config, source: app01, backup_id: 20250101T020000.412Z-3f9a, time: "2025-01-01T02:00:09Z", complete: true,
       verified: null, action: delete, reasons: [outside every retention rule]}
deleted:
  description: Sets deleted, as C(<kind>/<source>/<backup_id>); always empty in check mode (see RV(would_delete)).
  returned: always
  type: list
  elements: str
would_delete:
  description: In check mode, the sets a real run would delete, as C(<kind>/<source>/<backup_id>).
  returned: check mode
  type: list
  elements: str
would_delete_partial_uploads:
  description: In check mode, the leftovers of failed writes a real run would remove.
  returned: check mode
  type: list
  elements: str
msg:
  description: What was deleted (C(deleted N set(s) ...)), or in check mode what would be (C(would delete N ...)).
  returned: success
  type: str
kept:
  description: Number of sets kept.
  returned: always
  type: int
locked:
  description: Sets the plan would delete but S3 Object Lock protects, with the lock's end.
  returned: always
  type: list
  elements: dict
failed:
  description: Keys that could not be deleted, with the reason. The module fails when this is not empty.
  returned: always
  type: dict
partial_uploads:
  description:
    - Leftovers of failed or killed writes removed - unfinished multipart uploads, partial files, and empty
      directories (ending in C(/)); always empty in check mode (see RV(would_delete_partial_uploads)).
  returned: always
  type: list
  elements: str
abandoned:
  description:
    - Per kind, the killed or abandoned attempts cleaned (in check mode, that would be) - C(incomplete_sets) (no
      manifest, older than O(incomplete_grace_hours)), C(unfinished_uploads) and C(empty_directories).
  returned: always
  type: dict
  sample: {config: {incomplete_sets: 1, unfinished_uploads: 2, empty_directories: 0}}
pitr_warnings:
  description:
    - Full backups kept against the C(mongo-full) rules because a point-in-time window needs them, and parts of a
      window that no full backup and unbroken chain of slices reach. Each is also a module warning.
  returned: always
  type: list
  elements: str
"""

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, StorageError

PITR_KINDS = {"mongo-full", "mongo-oplog"}


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, list_sets, utcnow
    from ansible_collections.caas.backup.plugins.module_utils.retention import (
        abandoned,
        grace_period,
        merge_policy,
        pitr_warnings,
        plan,
        selection_prefixes,
    )
    from ansible_collections.caas.backup.plugins.module_utils.verify import last_verification

    p = module.params
    policy = merge_policy(p["policy"])
    grace = grace_period(p["incomplete_grace_hours"])
    prefixes = selection_prefixes(p["kinds"], p["source_name"])
    storage = module.open_storage()
    now = utcnow()
    sets = module.selected_sets(storage)
    chosen = {s.prefix for s in sets}
    if PITR_KINDS & set(p["kinds"]) and not set(p["kinds"]) >= PITR_KINDS:
        # A point-in-time window is full backups and slices together: plan with both, delete only what was chosen.
        sets = [
            s
            for s in list_sets(storage)
            if s.prefix in chosen or (s.kind in PITR_KINDS and p["source_name"] in (None, s.source))
        ]
    verifications = {s.prefix: last_verification(storage, s) for s in sets if s.complete}
    decisions = plan(
        sets,
        now,
        policy,
        minimum_redundancy=p["minimum_redundancy"],
        keep_tags=tuple(p["keep_tags"]),
        incomplete_grace=grace,
        verifications={k: v for k, v in verifications.items() if v is not None},
    )
    warnings = pitr_warnings(decisions)
    for warning in warnings:
        module.warn(warning)
    doomed = [d.bset for d in decisions if not d.keep and d.bset.prefix in chosen]
    locked = []
    for bset in [b for b in doomed if b.complete]:
        until = storage.locked_until(f"{bset.prefix}/{MANIFEST}")
        if until:
            locked.append({"set": bset.prefix, "locked_until": until.isoformat()})
    locked_sets = {entry["set"] for entry in locked}
    doomed = [b for b in doomed if b.prefix not in locked_sets]
    failed: dict[str, str] = {}
    if not module.check_mode and doomed:
        # Manifests first: a set whose manifest is gone is incomplete, never half-deleted yet "complete".
        failed = storage.delete([f"{b.prefix}/{MANIFEST}" for b in doomed if b.complete])
        emptied = [b for b in doomed if f"{b.prefix}/{MANIFEST}" not in failed]
        failed.update(storage.delete([k for b in emptied for k in b.keys if not k.endswith(f"/{MANIFEST}")]))
    # After the sets: a directory their delete emptied is gone already, not counted as a leftover.
    partial = storage.clean_partial(now - grace, dry_run=module.check_mode, prefixes=prefixes)
    result = dict(
        changed=bool(doomed or partial),
        plan=[d.as_dict() for d in decisions],
        deleted=[] if module.check_mode else [b.prefix for b in doomed],
        kept=sum(d.keep for d in decisions),
        locked=locked,
        failed=failed,
        partial_uploads=[] if module.check_mode else partial,
        abandoned=abandoned(sets, partial, now, grace),
        pitr_warnings=warnings,
    )
    if module.check_mode:
        result.update(would_delete=[b.prefix for b in doomed], would_delete_partial_uploads=partial)
    if failed:
        raise StorageError(
            f"{len(failed)} object(s) could not be deleted, e.g. {next(iter(failed))}: {next(iter(failed.values()))}",
            **result,
        )
    counts = f"{len(doomed)} set(s) and {len(partial)} partial upload(s), keeping {result['kept']} set(s)"
    skipped = f"; {len(locked)} locked set(s) skipped" if locked else ""
    result["msg"] = f"{'would delete' if module.check_mode else 'deleted'} {counts}{skipped}"
    return result


def main() -> None:
    module = BackupModule(
        dict(
            policy=dict(type="dict", default={}),
            minimum_redundancy=dict(type="int", default=1),
            keep_tags=dict(type="list", elements="str", default=["keep"]),
            incomplete_grace_hours=dict(type="int", default=24),
        ),
        selects=True,
        audit_action="delete",
        supports_check_mode=True,
    )
    module.run(run, "prune backups")


if __name__ == "__main__":
    main()
