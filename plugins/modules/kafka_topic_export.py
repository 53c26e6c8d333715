#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: kafka_topic_export
short_description: Back up a Kafka cluster's topics, configs, ACLs and consumer-group offsets
version_added: 0.1.0
description:
  - Exports a Kafka cluster's metadata as one JSON document into a new C(kafka-meta) backup set, compressed and
    optionally encrypted. Messages themselves are not backed up.
  - The document holds every selected topic (internal topics such as C(__consumer_offsets), and any name starting
    with C(__), are left out) with its partition count, replication factor and config B(overrides) (broker defaults
    are not exported); the ACLs when the cluster has an authorizer; every consumer group's committed offset per
    partition; and each partition's log-start and end offsets.
  - For each committed offset inside the log, the timestamp of the record the group would read next is kept (for a
    group that had read everything, the time just after the last record), so M(caas.backup.kafka_topic_restore) can
    map offsets by time on another cluster.
  - The manifest, written last, counts topics, partitions, groups and ACLs.
author: caas.backup developers (@caas-backup)
options:
  record_timestamps:
    description:
      - Read the record at each committed offset to keep its timestamp (one fetch per group partition), for
        O(caas.backup.kafka_topic_restore#module:offsets=timestamp).
    type: bool
    default: true
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
      - Defaults to C(kafka-<cluster id>), the cluster's own identity (never the name of the machine the module runs
        on); V(kafka-cluster) for a broker that reports no cluster id. A rebuilt cluster has a new id, so restores
        on a new site give the old name (the roles pass C(caas_backup_kafka_source_name)).
    type: str
extends_documentation_fragment:
  - caas.backup.kafka
  - caas.backup.kafka.selection
  - caas.backup.common
  - caas.backup.common.write
attributes:
  check_mode:
    support: full
    description:
      - Reads the cluster (the same reads as a real run) and reports what would be exported - topics, partitions,
        groups and ACLs, with their counts in RV(facts) - and where, with C(changed=true) (a real run writes a new
        set); the storage is only read, to check it can be reached, and nothing is written.
notes:
  - Brokers that do not report topic configs (DescribeConfigs answers without the configs every Apache Kafka broker
    describes) get a warning, and their topics' configs are not exported.
seealso:
  - module: caas.backup.kafka_topic_restore
"""

EXAMPLES = r"""
- name: Back up the Kafka cluster's metadata, encrypted, to S3
  caas.backup.kafka_topic_export:
    storage_url: s3://caas-backups/prod
    bootstrap_servers: [kafka-1:9092, kafka-2:9092]
    security_protocol: SASL_SSL
    sasl_mechanism: SCRAM-SHA-512
    sasl_plain_username: backup
    sasl_plain_password: "{{ vault_kafka_backup_password }}"
    ssl_cafile: /etc/kafka/ca.pem
    exclude_topics: ["_.*", "tmp-.*"]
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
"""

RETURN = r"""
backup_id:
  description: Id of the new backup set; empty in check mode.
  returned: always
  type: str
  sample: 20260221T020000.412Z-3f9a
source:
  description: Source name the set is stored under.
  returned: always
  type: str
  sample: kafka-caas
kind:
  description: V(kafka-meta).
  returned: always
  type: str
location:
  description: Storage path of the set; in check mode the path the new set's id would be added to.
  returned: success
  type: str
facts:
  description: The counts the manifest records (or would) - C(topics), C(partitions), C(groups), C(acls), C(cluster_id).
  returned: success
  type: dict
msg:
  description: In check mode, what a real run would write (C(would write a kafka-meta backup of N topics ...)).
  returned: check mode
  type: str
cluster_id:
  description: Id of the exported cluster.
  returned: always
  type: str
topics:
  description: Names of the exported topics.
  returned: always
  type: list
  elements: str
partitions:
  description: Number of exported partitions.
  returned: always
  type: int
groups:
  description: Ids of the exported consumer groups.
  returned: always
  type: list
  elements: str
acls:
  description: Number of exported ACLs; null when the cluster has no authorizer.
  returned: always
  type: int
stored_bytes:
  description: Bytes written to storage.
  returned: success and not check mode
  type: int
duration:
  description: Seconds the export took.
  returned: always
  type: float
"""

import json
import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, default_source_name
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    SELECTION_SPEC,
    Cluster,
    kafka_module,
    selection,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import (
    OBJECT_STEM,
    document_facts,
    export_cluster,
)


def run(module: BackupModule) -> dict:
    p = module.params
    started = time.monotonic()
    patterns = selection(p)
    with Cluster(p) as cluster:
        doc = export_cluster(cluster, *patterns, record_timestamps=p["record_timestamps"])
    for note in doc["warnings"]:
        module.warn(note)
    facts = document_facts(doc)
    source = p["source_name"] or default_source_name("kafka", doc["cluster"]["cluster_id"] or "cluster")
    result = dict(
        changed=True,
        backup_id="",
        kind="kafka-meta",
        source=source,
        cluster_id=doc["cluster"]["cluster_id"],
        topics=sorted(doc["topics"]),
        partitions=facts["partitions"],
        groups=sorted(doc["groups"]),
        acls=facts["acls"],
        facts=facts,
    )
    if module.check_mode:
        result.update(module.planned_set("kafka-meta", source))
        result["msg"] = (
            f"would write a kafka-meta backup of {facts['topics']} topic(s) ({facts['partitions']} partitions), "
            f"{facts['groups']} consumer group(s) and {'no' if facts['acls'] is None else facts['acls']} ACL(s) "
            f"to {result['location']}"
        )
    else:
        from ansible_collections.caas.backup.plugins.module_utils.catalog import write_set

        data = json.dumps(doc, indent=1, sort_keys=True).encode()
        storage = module.open_storage()
        options = module.write_options()
        result.update(
            write_set(
                storage, "kafka-meta", source, options, p["tags"], OBJECT_STEM, lambda out: out.write(data), facts
            )
        )
    result["duration"] = round(time.monotonic() - started, 3)
    return result


def main() -> None:
    module = kafka_module(
        dict(
            **SELECTION_SPEC,
            record_timestamps=dict(type="bool", default=True),
        ),
        writes=True,
        audit_action="write",
        audit_kind="kafka-meta",
        supports_check_mode=True,
    )
    module.run(run, "export Kafka metadata")


if __name__ == "__main__":
    main()
