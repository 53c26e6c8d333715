#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: kafka_message_capture
short_description: Capture a Kafka cluster's records continuously, as record batches with their original offsets
version_added: 0.2.0
description:
  - Each run writes B(one) C(kafka-messages) backup set holding, per selected partition, the records from where the
    previous set of this source stopped up to the last stable offset read at the start of the run (or, with
    O(duration), keeps following for that many seconds).
  - Records are stored as Kafka record batches (magic v2) exactly as the broker sent them - original offsets,
    timestamps, keys, values, headers and CRCs - one object per partition and round,
    C(<topic>-<partition>-<base offset, 20 digits>.log), through the usual pipeline (compression, age encryption,
    sha256). Decompressed and renamed to C(<base offset>.log), a segment is read by C(kafka-dump-log.sh --files).
  - Only committed data is kept (read_committed) - transaction markers and aborted records are left out; tombstones
    (null values) and compacted topics are kept as they are. Internal topics (C(__*)) are never captured.
  - The manifest records, per partition, the first and last offset, the record count, the first and last timestamp,
    the position it continued from (C(continued_from), the chain) and its next position; and every selected consumer
    group's committed offsets, read at the start of the run.
  - B(Loss is never silent) - when a partition's log start has moved past the captured position (retention deleted
    records before they were captured), the set records the lost offsets in C(lost) and
    M(caas.backup.backup_info) raises a critical alert.
  - A run with nothing new (no record, no lost range) writes no set and reports C(changed=false).
author: caas.backup developers (@caas-backup)
options:
  duration:
    description:
      - Seconds to keep following the partitions after the first pass (0 to 604800); V(0) captures up to the offsets
        read at the start and stops. Everything followed goes into the same one set.
    type: int
    default: 0
  lock_dir:
    description:
      - Directory of the lock file C(caas-kafka-messages-<source>.lock) that keeps two captures of one source from
        interleaving; it must exist. Default C(/run/lock) when writable, else the temporary directory.
    type: path
  source_name:
    description:
      - Stable, credential-free name of what is captured; the storage path segment after the kind.
      - Defaults, as for M(caas.backup.kafka_topic_export), to C(kafka-<cluster id>).
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
      - Reads the positions of the previous set and each partition's offsets, and reports what would be captured
        (RV(pending) offsets per partition, RV(lost) ranges); takes no lock, fetches no record and writes nothing.
notes:
  - Records are read over connections of their own (besides the admin client's), to the same broker addresses and
    with the same security options; two partitions are read at once, so up to three connections per broker are
    open during a run. They read with Fetch v11, so the brokers must be Kafka 2.3 or newer; an older one is refused
    by name.
  - Tansu (the broker the tests run) cannot delete records (DeleteRecords), so the lost-range report is tested on
    recorded fetch answers only.
seealso:
  - module: caas.backup.kafka_message_restore
  - module: caas.backup.kafka_topic_export
"""

EXAMPLES = r"""
- name: Capture every topic's new records (every 5 minutes from a timer)
  caas.backup.kafka_message_capture:
    storage_url: s3://caas-backups/prod
    bootstrap_servers: [kafka-1:9092]
    exclude_topics: ["tmp-.*"]
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
"""

RETURN = r"""
backup_id:
  description: Id of the new set; empty when none was written (nothing new, or check mode).
  returned: always
  type: str
source:
  description: Source name the set is stored under.
  returned: always
  type: str
kind:
  description: V(kafka-messages).
  returned: always
  type: str
location:
  description: Storage path of the set (in check mode the path the new set's id would be added to).
  returned: when a set is written, and in check mode
  type: str
continues:
  description: The set this capture continues (C(set <id>)), or V(start) for the first capture.
  returned: always
  type: str
partitions:
  description: Number of partitions captured.
  returned: always
  type: int
records:
  description: Records written (0 in check mode).
  returned: always
  type: int
positions:
  description: Next position per partition (C(topic-partition) to offset) after this capture.
  returned: when not check mode
  type: dict
groups:
  description: The committed offsets recorded, per group and C(topic-partition).
  returned: when a set is written
  type: dict
lost:
  description: Offsets lost per partition, as C([first, end)) ranges - deleted by the broker before capture.
  returned: always
  type: dict
pending:
  description: In check mode, offsets waiting to be captured per partition.
  returned: check mode
  type: dict
stored_bytes:
  description: Bytes written to storage.
  returned: when a set is written
  type: int
msg:
  description: In check mode, what a real run would capture.
  returned: check mode
  type: str
duration:
  description: Seconds the run took.
  returned: always
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, default_source_name
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    SELECTION_SPEC,
    Cluster,
    kafka_module,
    selection,
)


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.chain import capture_lock
    from ansible_collections.caas.backup.plugins.module_utils.kafka import messages

    p = module.params
    started = time.monotonic()
    options = messages.CaptureOptions(
        *selection(p),
        duration=p["duration"],
    )
    storage = module.open_storage()
    with Cluster(p) as cluster:
        source = p["source_name"] or default_source_name("kafka", cluster.cluster_id or "cluster")
        if module.check_mode:
            result = messages.capture(cluster, storage, source, None, [], options, check_mode=True)
            result.update(module.planned_set(messages.KIND, source), changed=result["changed"])
            result["msg"] = (
                f"would capture {sum(result['pending'].values())} offset(s) of {result['partitions']} partition(s), "
                f"continuing {result['continues']}"
                + (f"; {len(result['lost'])} partition(s) lost records" if result["lost"] else "")
            )
        else:
            with capture_lock(messages.STREAM, source, p["lock_dir"]):
                result = messages.capture(cluster, storage, source, module.write_options(), p["tags"], options)
            if result["lost"]:
                module.warn(f"records were deleted by the broker before they were captured: {result['lost']}")
    result.update(kind=messages.KIND, duration=round(time.monotonic() - started, 3))
    return result


def main() -> None:
    module = kafka_module(
        dict(
            **SELECTION_SPEC,
            duration=dict(type="int", default=0),
            lock_dir=dict(type="path"),
        ),
        writes=True,
        supports_check_mode=True,
        audit_action="write",
    )
    module.run(run, "capture Kafka messages")


if __name__ == "__main__":
    main()
