#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: kafka_topic_restore
short_description: Restore Kafka topics, configs, ACLs and consumer-group offsets from a backup set
version_added: 0.1.0
description:
  - Restores a C(kafka-meta) backup set made by M(caas.backup.kafka_topic_export) onto a Kafka cluster.
  - Creates missing topics with their partitions, replication factor (capped, with a warning, to the number of
    brokers of the target) and config overrides; adds partitions where the target has fewer; corrects drifted
    configs only with O(alter_existing=true); recreates missing ACLs. Nothing is ever deleted; extra partitions,
    extra configs and extra ACLs of the target stay.
  - Sets consumer-group offsets as O(offsets) says. A group with active members is refused, and then nothing at all
    is changed.
  - The whole plan is built, and checked, before the target is touched; only what differs is changed, so a second
    run changes nothing. In check mode the plan is returned (with diff output topic by topic and group by group)
    and nothing is changed.
  - The stored object's size and sha256 are checked against the manifest, and the document's format version is
    checked, before anything else.
author: caas.backup developers (@caas-backup)
options:
  topics:
    description:
      - Names of the backed-up topics to restore; all when empty. A name that is not a valid topic name, or not in
        the backup, is an error.
    type: list
    elements: str
    default: []
  groups:
    description:
      - Ids of the backed-up consumer groups whose offsets to restore; all when empty.
    type: list
    elements: str
    default: []
  alter_existing:
    description:
      - Set the backed-up config overrides on topics that exist on the target with other values.
      - Without it, drifted topics are reported (RV(drifted)) and left alone.
    type: bool
    default: false
  restore_acls:
    description:
      - Create the backed-up ACLs the target lacks.
    type: bool
    default: true
  restore_groups:
    description:
      - Restore consumer-group offsets.
    type: bool
    default: true
  offsets:
    description:
      - Where to set each group's offset on every partition.
      - V(committed) - the backed-up committed offset, clamped into the target partition's log range (a warning says
        where it was clamped).
      - V(earliest) or V(latest) - the target partition's log start or end.
      - V(timestamp) - the first record at or after the time of the record the group would have read next when the
        backup was taken (for a group that had read everything, just after its last record), or at or after
        O(offsets_timestamp); the log end when there is none. For clusters whose offsets differ from the backed-up
        one (a mirror, a replay).
    type: str
    default: committed
    choices: [committed, earliest, latest, timestamp]
  offsets_timestamp:
    description:
      - With O(offsets=timestamp), one ISO 8601 time (1970 to 2100) for every partition instead of the backed-up
        record times.
    type: str
extends_documentation_fragment:
  - caas.backup.kafka
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.restore
  - caas.backup.common.target
attributes:
  check_mode:
    support: full
    description:
      - Verifies the backup and returns the set and the plan (RV(plan)) without changing the cluster. C(changed) is
        what a real run would report - true when the plan has any change.
  diff_mode:
    support: full
    description: Shows each topic's and group's before and after.
notes:
  - Adding partitions needs the CreatePartitions API; a broker without it (Tansu) fails the restore before anything
    changes.
  - When the target's ListOffsets by time disagrees with its records, the offset is found by reading records (a
    binary search), with a warning.
seealso:
  - module: caas.backup.kafka_topic_export
"""

EXAMPLES = r"""
- name: Show what restoring the latest Kafka metadata would change
  caas.backup.kafka_topic_restore:
    storage_url: s3://caas-backups/prod
    bootstrap_servers: [kafka-1:9092]
    encryption_identity_file: /root/.config/caas/age-key.txt
  check_mode: true
  diff: true

- name: Rebuild topics and put the consumers back where they stood
  caas.backup.kafka_topic_restore:
    storage_url: s3://caas-backups/prod
    source_name: kafka-prod
    bootstrap_servers: [kafka-1:9092]
    alter_existing: true
    offsets: committed
    encryption_identity_file: /root/.config/caas/age-key.txt
"""

RETURN = r"""
storage_url:
  description: The storage location the set was read from - O(storage_url), or the first of O(storage_fallback_urls)
    that holds it when the ones before could not be reached or lack it.
  returned: success
  type: str
  sample: s3://caas-backups-dr/prod
target:
  description: The cluster restored into - its bootstrap servers, comma-separated.
  returned: always
  type: str
  sample: kafka1:9092,kafka2:9092
backup_id:
  description: Id of the restored backup set.
  returned: always
  type: str
source:
  description: Source name of the restored set.
  returned: always
  type: str
backup_time:
  description: When the restored set was taken (ISO 8601 UTC).
  returned: always
  type: str
plan:
  description:
    - Every change, in the order it is (or would be) made. Each item has C(action) (V(create), V(add_partitions),
      V(alter_configs), V(create_acl), V(set_offsets)) and what it acts on.
  returned: always
  type: list
  elements: dict
created_topics:
  description: Topics created (or that would be).
  returned: always
  type: list
  elements: str
added_partitions:
  description: Topics that got (or would get) more partitions.
  returned: always
  type: list
  elements: str
altered_topics:
  description: Topics whose configs were (or would be) corrected.
  returned: always
  type: list
  elements: str
drifted:
  description: Existing topics whose configs differ from the backup.
  returned: always
  type: list
  elements: str
acls_created:
  description: Number of ACLs created (or that would be).
  returned: always
  type: int
groups:
  description: Offsets set (or that would be) per group, keyed by group id, then C(topic-partition).
  returned: always
  type: dict
msg:
  description: In check mode, the set that would be restored and how many changes it would make.
  returned: check mode
  type: str
duration:
  description: Seconds the restore took.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupModule,
    ConfigurationError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    Cluster,
    kafka_module,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import (
    OBJECT_STEM,
    OFFSET_MODES,
    apply_plan,
    group_diff,
    partitions_after,
    plan_acls,
    plan_groups,
    plan_topics,
    read_document,
    read_target,
    refuse_active,
    select_from_document,
    topic_diff,
)


def load(module: BackupModule):
    """The backup set asked for and its verified, validated document."""
    from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object

    storage, bset = module.restore_source("kafka-meta")
    with fetch_object(storage, bset, OBJECT_STEM) as copy, copy.reader(module.identities()) as reader:
        return bset, read_document(reader, f"{bset.prefix}/{OBJECT_STEM}")


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import iso, parse_time

    p = module.params
    started = time.monotonic()
    if p["offsets_timestamp"] and p["offsets"] != "timestamp":
        raise ConfigurationError("offsets_timestamp goes with offsets: timestamp")
    when = int(parse_time(p["offsets_timestamp"]).timestamp() * 1000) if p["offsets_timestamp"] else None
    bset, doc = load(module)
    if module.plan_only:
        return module.planned_restore(bset, target=",".join(p["bootstrap_servers"]))
    topics, groups = select_from_document(doc, p["topics"], p["groups"])
    notes: list[str] = []
    with Cluster(p) as cluster:
        target = read_target(cluster, sorted(topics))
        actions, drifted, more = plan_topics(topics, target, p["alter_existing"])
        notes += more
        growing = [a["topic"] for a in actions if a["action"] == "add_partitions"]
        if growing and not target.can_add_partitions:
            raise SourceError(
                f"topic(s) {', '.join(growing)} need more partitions but the target has no CreatePartitions API: "
                "nothing was changed"
            )
        acls, more = plan_acls(doc["acls"], target.acls) if p["restore_acls"] else ([], [])
        notes += more
        moves: dict = {}
        if p["restore_groups"] and groups:
            present, after = partitions_after(target, actions)
            moves, more = plan_groups(cluster, {"groups": groups}, sorted(groups), p["offsets"], when, present, after)
            notes += more
            refuse_active(cluster, sorted(moves))
        if not module.check_mode:
            apply_plan(cluster, actions, acls, moves)
    for note in notes:
        module.warn(note)
    plan = list(actions) + [{"action": "create_acl", **a} for a in acls]
    offsets = {g: {f"{t}-{n}": o for (t, n), o in sorted(m["wanted"].items())} for g, m in sorted(moves.items())}
    plan += [{"action": "set_offsets", "group": g, "offsets": offsets[g], "notes": moves[g]["notes"]} for g in offsets]
    result = dict(
        changed=bool(plan),
        target=",".join(p["bootstrap_servers"]),
        backup_id=bset.backup_id,
        source=bset.source,
        backup_time=iso(bset.time),
        plan=plan,
        created_topics=[a["topic"] for a in actions if a["action"] == "create"],
        added_partitions=growing,
        altered_topics=[a["topic"] for a in actions if a["action"] == "alter_configs"],
        drifted=drifted,
        acls_created=len(acls),
        groups=offsets,
        duration=round(time.monotonic() - started, 3),
    )
    if module.check_mode:
        result["msg"] = (
            f"would restore kafka-meta backup {bset.backup_id} of {bset.source} ({result['backup_time']}): "
            f"{len(plan)} change(s) - {len(result['created_topics'])} topic(s) created, {len(growing)} grown, "
            f"{len(result['altered_topics'])} altered, {len(acls)} ACL(s), {len(offsets)} group(s) of offsets"
        )
    if module._diff:
        result["diff"] = [topic_diff(a, target) for a in actions] + [
            group_diff(g, moves[g]["current"], moves[g]["wanted"]) for g in sorted(moves)
        ]
    return result


def main() -> None:
    module = kafka_module(
        dict(
            topics=dict(type="list", elements="str", default=[]),
            groups=dict(type="list", elements="str", default=[]),
            alter_existing=dict(type="bool", default=False),
            restore_acls=dict(type="bool", default=True),
            restore_groups=dict(type="bool", default=True),
            offsets=dict(type="str", default="committed", choices=list(OFFSET_MODES)),
            offsets_timestamp=dict(type="str"),
        ),
        restores=True,
        audit_action="restore",
        audit_kind="kafka-meta",
        targets=True,
        supports_check_mode=True,
    )
    module.run(run, "restore Kafka metadata")


if __name__ == "__main__":
    main()
