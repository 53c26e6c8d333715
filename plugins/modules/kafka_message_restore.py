#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: kafka_message_restore
short_description: Restore captured Kafka records, resumably, with consumer-group offsets translated
version_added: 0.2.0
description:
  - Produces the records of the C(kafka-messages) sets of one source (made by M(caas.backup.kafka_message_capture))
    to the same or another cluster, per partition in their original order, with key, value, headers and original
    timestamp (CreateTime), up to O(target_time) or everything captured.
  - Every record gets the header C(caas.origin.offset) (its offset on the source). A rerun reads the target
    partition's last record and goes on after its origin offset, so a restore interrupted at any point and run
    again produces no duplicates and no gaps.
  - Records go as batches of at most O(batch_bytes) of an idempotent producer, one at a time, each acknowledged
    by every in-sync replica before the next is sent, so a failure leaves the target holding a prefix of the
    records, never a gap. After a retriable error (a leader that moved, a timeout, a lost connection) the same
    batch is sent again, for up to 60 seconds; a broker that had already appended it drops the copy (by producer
    id and sequence).
  - A rerun after a killed run uses a new producer id, so only what the target acknowledged counts - with a
    replication factor above 1, a batch the killed run left on the leader, not yet replicated, could be appended
    twice.
  - B(Everything is verified before the first record is produced) - each segment's size and sha256, the record
    batches' framing and CRCs, every record's framing, their offsets and counts against the manifest.
  - Missing topics are created first, from the newest C(kafka-meta) set of the same source (partitions, replication
    factor capped to the brokers, config overrides), else with the partitions the capture saw.
  - Each consumer group's committed source offset (from the newest set captured at or before O(target_time)) is
    translated to the target offset of the first restored record at or after it, and committed on the target;
    groups with active members are refused, before anything is produced.
author: caas.backup developers (@caas-backup)
options:
  topics:
    description:
      - Source topics to restore; all captured topics when empty.
    type: list
    elements: str
    default: []
  rename:
    description:
      - Map of source topic name to the target topic name; topics not named keep their name.
    type: dict
    default: {}
  target_time:
    description:
      - Restore only the records with a timestamp at or before this ISO 8601 UTC time; a partition stops at its first
        record after it. Everything captured when not given.
    type: str
  restore_groups:
    description:
      - Commit the translated consumer-group offsets.
    type: bool
    default: true
  groups:
    description:
      - Ids of the captured groups whose offsets to restore; all when empty.
    type: list
    elements: str
    default: []
  create_topics:
    description:
      - Create target topics that do not exist (see the description); without it a missing topic is an error.
    type: bool
    default: true
  spool_dir:
    description:
      - Directory for the verified local copies of the segments (the temporary directory by default).
    type: path
  required:
    description:
      - With V(false), a source that has no C(kafka-messages) set at all (nothing was ever captured) is not an
        error - the run restores nothing and says so (C(sets) empty, C(changed=false)). Sets that exist but are
        incomplete, unsigned or damaged still fail the run.
    type: bool
    default: true
  batch_bytes:
    description:
      - Most bytes of records in one restored batch (a record larger than it goes alone). Keep it below the target
        topics' C(max.message.bytes) (1 MiB by default in Kafka); at most 100 MiB, Kafka's default
        C(socket.request.max.bytes).
    type: int
    default: 524288
requirements:
  - anycrc (the batches' CRC-32C)
  - lz4, python-snappy (only for batches their producers compressed with lz4 or snappy; zstd uses zstandard)
extends_documentation_fragment:
  - caas.backup.kafka
  - caas.backup.common
  - caas.backup.common.read
  - caas.backup.common.locations
  - caas.backup.common.target
attributes:
  check_mode:
    support: full
    description:
      - Verifies every segment as a real run does and reports, per partition, where the restore would resume and
        how many records it would produce; nothing is created, produced or committed.
      - With O(check_target=false), only the backup side - the sets, their signatures, that the identity opens them -
        is checked; the target is not contacted.
notes:
  - The records are produced by an idempotent producer (InitProducerId). With an authorizer, the restore's user
    needs WRITE on the target topics (CREATE too when topics are created) and, on brokers older than Kafka 3.0
    (KIP-679), IDEMPOTENT_WRITE on the cluster.
  - The target's ends and the origin headers already restored are read with Fetch v11, so the target must be
    Kafka 2.3 or newer.
  - Tansu (the broker the tests run) has no DeleteRecords and no log retention, so a lost range in a set is tested
    on recorded data; its ListOffsets is wrong for multi-record batches, so the target's ends are read by Fetch.
seealso:
  - module: caas.backup.kafka_message_capture
  - module: caas.backup.kafka_topic_restore
"""

EXAMPLES = r"""
- name: Restore every captured record to the rebuilt cluster, up to the incident
  caas.backup.kafka_message_restore:
    storage_url: s3://caas-backups/prod
    bootstrap_servers: [kafka-1:9092]
    source_name: kafka-prod
    target_time: "2026-02-21T10:29:00Z"
    encryption_identity_file: /etc/caas/age.key
"""

RETURN = r"""
storage_url:
  description: The storage location the sets were read from - O(storage_url), or the first of O(storage_fallback_urls)
    that holds them when the ones before could not be reached or lack them.
  returned: success
  type: str
  sample: s3://caas-backups-dr/prod
source:
  description: Source name of the restored sets.
  returned: always
  type: str
sets:
  description: Ids of the sets read, oldest first.
  returned: always
  type: list
  elements: str
created_topics:
  description: Target topics created (or, in check mode, that would be).
  returned: when the target was contacted (not with O(check_target=false) in check mode)
  type: list
  elements: str
partitions:
  description:
    - Per target C(topic-partition) - C(source) (source topic-partition), C(resumed_after) (origin offset of the last
      record already on the target, or null), C(produced), C(source_first)/C(source_last) and
      C(target_first)/C(target_last) (the offset mapping of the records produced), C(holes) (source offset ranges
      no set holds).
  returned: when the target was contacted
  type: dict
groups:
  description: Per group and target C(topic-partition), C(source) (committed source offset) and C(target) (offset
    committed on the target).
  returned: when the target was contacted
  type: dict
records:
  description: Records produced (in check mode, that would be; with O(check_target=false), every captured record).
  returned: always
  type: int
backup_id:
  description: With O(check_target=false) in check mode, the newest set of the chain.
  returned: check mode with O(check_target=false)
  type: str
msg:
  description: In check mode, what a real run would do; with O(required=false) and no set, that nothing was restored.
  returned: check mode, or when nothing was captured
  type: str
duration:
  description: Seconds the run took.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, ConfigurationError
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Cluster, check_topic_name, kafka_module


def meta_topics(module: BackupModule, storage, source: str) -> dict:
    """The topics of the newest kafka-meta set of ``source`` (empty when there is none)."""
    from ansible_collections.caas.backup.plugins.module_utils.catalog import fetch_object, list_sets, set_order
    from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import OBJECT_STEM, read_document

    sets = [s for s in list_sets(storage, "kafka-meta", source, module.trusted_signers()) if s.complete]
    if not sets:
        return {}
    bset = max(sets, key=set_order)
    with fetch_object(storage, bset, OBJECT_STEM) as copy, copy.reader(module.identities()) as reader:
        return read_document(reader, copy.name)["topics"]


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import check_stored, parse_time
    from ansible_collections.caas.backup.plugins.module_utils.kafka import messages

    p = module.params
    started = time.monotonic()
    for name in [*p["topics"], *p["rename"], *p["rename"].values()]:
        check_topic_name(name)
    if isinstance(p["target_time"], dict) or str(p["target_time"] or "").strip().startswith("{"):
        raise ConfigurationError("target_time must be an ISO 8601 UTC time for Kafka records")
    until_ms = int(parse_time(p["target_time"]).timestamp() * 1000) if p["target_time"] else None

    def find(storage):
        found = messages.message_sets(storage, p["source_name"], module.trusted_signers(), p["required"])
        for bset in found:
            check_stored(bset, storage.url)
        return found

    storage, sets = module.locate(find)
    if not sets:
        who = p["source_name"] or "any source"
        return dict(
            changed=False,
            source=p["source_name"] or "",
            sets=[],
            records=0,
            msg=f"nothing to restore: no kafka-messages set of {who} in {storage.url} (required is off)",
            duration=round(time.monotonic() - started, 3),
        )
    source = sets[0].source
    plans = messages.plan_partitions(sets, p["topics"])
    missing = sorted(set(p["topics"]) - {t for t, _p in plans})
    if missing:
        raise ConfigurationError(f"topic(s) {', '.join(missing)} were never captured for {source}")
    groups = messages.groups_at(sets, until_ms)
    unknown = sorted(set(p["groups"]) - set(groups))
    if unknown:
        raise ConfigurationError(f"consumer group(s) {', '.join(unknown)} are not in the captured sets")
    groups = {g: o for g, o in groups.items() if not p["groups"] or g in p["groups"]} if p["restore_groups"] else {}
    if module.plan_only:
        planned = sum(s["records"] for plan in plans.values() for _b, s in plan.segments)
        result = module.planned_restore(*reversed(sets), records=planned, sets=[s.backup_id for s in sets])
        return dict(result, duration=round(time.monotonic() - started, 3))
    spec = messages.RestoreSpec(
        plans,
        groups,
        dict(p["rename"]),
        until_ms,
        module.identities(),
        p["create_topics"],
        module.check_mode,
        lambda: meta_topics(module, storage, source),
        p["batch_bytes"],
    )
    with (
        messages.verified_segments(storage, plans, module.identities(), p["spool_dir"]) as copies,
        Cluster(p) as cluster,
    ):
        result = messages.restore(cluster, copies, spec, module.warn)
    result.update(source=source, sets=[s.backup_id for s in sets])
    if module.check_mode:
        result["msg"] = (
            f"would produce {result['records']} record(s) to {len(result['partitions'])} partition(s) from "
            f"{len(sets)} set(s) of {source}, creating {len(result['created_topics'])} topic(s)"
        )
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def main() -> None:
    module = kafka_module(
        dict(
            topics=dict(type="list", elements="str", default=[]),
            rename=dict(type="dict", default={}),
            target_time=dict(type="str"),
            restore_groups=dict(type="bool", default=True),
            groups=dict(type="list", elements="str", default=[]),
            create_topics=dict(type="bool", default=True),
            spool_dir=dict(type="path"),
            batch_bytes=dict(type="int", default=524288),
            required=dict(type="bool", default=True),
        ),
        libraries=("anycrc",),
        reads=True,
        targets=True,
        supports_check_mode=True,
        audit_action="restore",
    )
    module.run(run, "restore Kafka messages")


if __name__ == "__main__":
    main()
