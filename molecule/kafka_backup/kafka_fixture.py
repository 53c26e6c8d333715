"""Seed, damage and describe the scenario's Kafka data (kafka-python), for molecule/kafka_backup.

    python kafka_fixture.py seed|disaster|state BOOTSTRAP

seed: topics molecule-orders (3 partitions, 6 records on partition 0, one per batch) and molecule-audit,
and consumer group molecule-billing at offset 2. disaster: molecule-audit deleted and the group read on to 6.
state: the molecule-* topics and the group's offsets, as JSON.
"""

import json
import sys
import time
import warnings

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

TOPICS = {"molecule-orders": 3, "molecule-audit": 1}
GROUP = "molecule-billing"


def read(bootstrap, count):
    """Read ``count`` records of molecule-orders as the group, commit, leave."""
    consumer = KafkaConsumer(
        bootstrap_servers=bootstrap,
        group_id=GROUP,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,  # Tansu answers a first JoinGroup after about half of it
        heartbeat_interval_ms=1000,
    )
    consumer.subscribe(["molecule-orders"])
    got = 0
    deadline = time.monotonic() + 120
    while got < count and time.monotonic() < deadline:
        got += sum(len(batch) for batch in consumer.poll(timeout_ms=1000, max_records=1).values())
    consumer.commit()
    consumer.close()
    if got != count:
        raise SystemExit(f"read {got} records of {count}")


def main(command, bootstrap):
    admin = KafkaAdminClient(bootstrap_servers=bootstrap)
    try:
        present = [t for t in admin.list_topics() if t in TOPICS]
        if command == "seed":
            if present:
                admin.delete_topics(present)
            specs = {name: {"num_partitions": n, "replication_factor": 1} for name, n in TOPICS.items()}
            admin.create_topics(specs, wait_for_metadata=True)
            producer = KafkaProducer(bootstrap_servers=bootstrap, linger_ms=0)
            for i in range(6):
                producer.send("molecule-orders", value=f"order-{i}".encode(), partition=0).get(timeout=30)
            producer.close()
            read(bootstrap, 2)
        elif command == "disaster":
            admin.delete_topics(["molecule-audit"])
            read(bootstrap, 4)
        described = admin.describe_topics([t for t in admin.list_topics() if t in TOPICS])
        offsets = admin.list_group_offsets(GROUP).get(GROUP) or {}
        print(
            json.dumps(
                {
                    "topics": {t["name"]: len(t["partitions"]) for t in described},
                    "offsets": {f"{tp.topic}-{tp.partition}": om.offset for tp, om in offsets.items()},
                },
                sort_keys=True,
            )
        )
    finally:
        admin.close()


if __name__ == "__main__":
    main(sys.argv[1], sys.argv[2])
