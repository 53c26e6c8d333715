"""kafka_message_capture / kafka_message_restore against real Tansu brokers.

What Tansu (tests/support/services.py) cannot do, and where it is tested instead:

* DeleteRecords panics and the memory engine applies no retention, so a log start never moves: the lost-range
  report (and backup_info's critical alert on it) is a unit test on recorded fetch answers
  (tests/unit/plugins/module_utils/test_kafka_record_batches.py).
* Transactions work, but aborted-batch filtering is checked on recorded batches too, where the exact layout is known.
* ListOffsets LATEST counts batches: capture and restore read every end by Fetch, which Tansu answers right.
"""

import dataclasses
import datetime
import json
import socket
import ssl
import subprocess
import sys
import threading
import time
import warnings

import pytest
import services
from harness import REPO, dr_report, module_env, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer, TopicPartition
    from kafka.structs import OffsetAndMetadata

ORIGIN = "caas.origin.offset"
BASE_TS = 1_700_000_000_000
PARTITIONS = 3


def produce(url, topic, start, count, **client):
    """``count`` records spread over the partitions: keys, two headers, every 11th value null, rising timestamps.

    Returns the records sent per partition: [(key, value, headers, timestamp)]. ``client``: more producer settings.
    """
    producer = KafkaProducer(bootstrap_servers=url, linger_ms=20, batch_size=16384, **client)
    sent = {p: [] for p in range(PARTITIONS)}
    for i in range(start, start + count):
        part = i % PARTITIONS
        key = f"key-{i % 97}".encode()
        value = None if i % 11 == 0 else f"value-{i}".encode() * (1 + i % 5)
        headers = [("trace", f"t{i}".encode()), ("source", b"orders-service")]
        ts = BASE_TS + i * 10
        producer.send(topic, key=key, value=value, headers=headers, partition=part, timestamp_ms=ts)
        sent[part].append((key, value, headers, ts))
    producer.flush()
    producer.close()
    return sent


def read_all(url, topic, partitions=PARTITIONS):
    """Every record of every partition, in order: {partition: [(offset, key, value, headers, timestamp)]}."""
    reader = KafkaConsumer(bootstrap_servers=url, enable_auto_commit=False, consumer_timeout_ms=3000)
    parts = [TopicPartition(topic, p) for p in range(partitions)]
    reader.assign(parts)
    reader.seek_to_beginning()
    out = {p: [] for p in range(partitions)}
    for record in reader:
        out[record.partition].append((record.offset, record.key, record.value, list(record.headers), record.timestamp))
    reader.close()
    return out


def commit(url, group, offsets):
    admin = KafkaAdminClient(bootstrap_servers=url)
    try:
        admin.alter_group_offsets(
            group, {TopicPartition(t, p): OffsetAndMetadata(o, "", None) for (t, p), o in offsets.items()}
        )
        found = admin.list_group_offsets(group).get(group) or {}
    finally:
        admin.close()
    return {(tp.topic, tp.partition): om.offset for tp, om in found.items()}


def origin(record_headers):
    return int(dict(record_headers)[ORIGIN])


def test_capture_twice_destroy_the_broker_and_restore_everything_with_the_group_in_place(svc, s3_url, broker):
    """The issue's scenario: 10,000 records with keys, headers and some null values over 3 partitions."""
    env = module_env(svc)
    source = broker()
    url = source.url
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({"orders": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    sent = produce(url, "orders", 0, 6000)
    # The group processed part of each partition: it resumes at these source offsets.
    group = {("orders", 0): 200, ("orders", 1): 1999, ("orders", 2): 0}
    assert commit(url, "billing", group) == group
    args = dict(storage_url=s3_url, bootstrap_servers=[url], source_name="kafka-prod")

    planned = run_module("kafka_message_capture", args, env, check_mode=True)
    assert planned["rc"] == 0 and planned["changed"] is True and planned["backup_id"] == "", planned
    assert sum(planned["pending"].values()) == 6000 and planned["continues"] == "start"
    first = run_module("kafka_message_capture", args, env)
    assert first["rc"] == 0 and first["records"] == 6000 and first["continues"] == "start", first
    assert first["groups"] == {"billing": {"orders-0": 200, "orders-1": 1999, "orders-2": 0}}
    idle = run_module("kafka_message_capture", args, env)
    assert idle["rc"] == 0 and idle["changed"] is False and idle["backup_id"] == "", idle
    more = produce(url, "orders", 6000, 4000)
    second = run_module("kafka_message_capture", args, env)
    assert second["rc"] == 0 and second["records"] == 4000, second
    assert second["continues"] == f"set {first['backup_id']}"
    counts = {p: len(sent[p]) + len(more[p]) for p in range(PARTITIONS)}
    assert list(counts.values()) == [3334, 3333, 3333]
    assert second["positions"] == {f"orders-{p}": counts[p] for p in range(PARTITIONS)}
    for part in range(PARTITIONS):
        sent[part] += more[part]
    source.stop()

    target = broker().url
    restore = dict(storage_url=s3_url, bootstrap_servers=[target], source_name="kafka-prod")
    done = run_module("kafka_message_restore", restore, env)
    assert done["rc"] == 0 and done["records"] == 10000 and done["created_topics"] == ["orders"], done
    assert done["sets"] == [first["backup_id"], second["backup_id"]]
    got = read_all(target, "orders")
    for part in range(PARTITIONS):
        restored = [(k, v, [h for h in hs if h[0] != ORIGIN], ts) for _o, k, v, hs, ts in got[part]]
        assert restored == sent[part], f"partition {part} differs"
        assert [origin(hs) for _o, _k, _v, hs, _ts in got[part]] == list(range(counts[part]))
    translated = {k: v["target"] for k, v in done["groups"]["billing"].items()}
    assert translated == {"orders-0": 200, "orders-1": 1999, "orders-2": 0}  # a fresh log: the same offsets

    # The group's consumer resumes exactly at the first record it had not processed, nothing twice.
    reader = KafkaConsumer(
        bootstrap_servers=target,
        group_id="billing",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
        auto_offset_reset="latest",
    )
    reader.subscribe(["orders"])
    firsts = {}
    deadline = time.monotonic() + 120  # a failsafe against a hang, not a timing assertion
    while len(firsts) < PARTITIONS and time.monotonic() < deadline:
        for tp, records in reader.poll(timeout_ms=1000).items():
            firsts.setdefault(tp.partition, origin(records[0].headers))
    reader.close()
    assert firsts == {0: 200, 1: 1999, 2: 0}

    again = run_module("kafka_message_restore", restore, env)
    assert again["rc"] == 0 and again["records"] == 0 and again["changed"] is False, again
    assert {k: p["resumed_after"] for k, p in again["partitions"].items()} == {
        f"orders-{p}": counts[p] - 1 for p in range(PARTITIONS)
    }
    assert read_all(target, "orders") == got


def test_point_in_time_restore_stops_at_the_target_and_a_killed_restore_resumes_without_duplicates(
    env, file_url, broker
):
    """A restore to ``target_time`` stops every partition at its last record at or before it; one killed midway
    and run again (without a target) goes on after the target's last record: every record once, in order."""
    url = broker().url
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({"events": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    sent = produce(url, "events", 0, 3000)
    args = dict(storage_url=file_url, bootstrap_servers=[url], include_topics=["ev.*"])
    assert run_module("kafka_message_capture", args, env)["records"] == 3000

    target = broker().url
    restore = dict(storage_url=file_url, bootstrap_servers=[target], rename={"events": "events-dr"})
    cut = datetime.datetime.fromtimestamp((BASE_TS + 6000) / 1000, datetime.timezone.utc)
    planned = run_module("kafka_message_restore", dict(restore, target_time=cut.isoformat()), env, check_mode=True)
    assert planned["rc"] == 0 and planned["created_topics"] == ["events-dr"] and planned["records"] == 601, planned
    pitr = run_module("kafka_message_restore", dict(restore, target_time=cut.isoformat()), env)
    assert pitr["rc"] == 0 and pitr["records"] == 601, pitr  # records 0..600 have timestamps at or before the cut
    got = read_all(target, "events-dr")
    assert max(ts for part in got.values() for *_rest, ts in part) == BASE_TS + 6000
    for part in range(PARTITIONS):
        assert [r[1:3] for r in got[part]] == [(k, v) for k, v, _h, ts in sent[part] if ts <= BASE_TS + 6000]

    # One record per batch (batch_bytes 1): the kill lands between two of the restore's 2399 requests.
    module_args = json.dumps({"ANSIBLE_MODULE_ARGS": dict(restore, batch_bytes=1)})
    watch = KafkaConsumer(bootstrap_servers=target, enable_auto_commit=False)
    watch.assign([TopicPartition("events-dr", p) for p in range(PARTITIONS)])
    watch.seek_to_beginning()
    seen = sum(len(batch) for batch in watch.poll(timeout_ms=3000, max_records=5000).values())
    assert seen == 601
    proc = subprocess.Popen(
        [sys.executable, "-m", "ansible_collections.caas.backup.plugins.modules.kafka_message_restore"],
        stdin=subprocess.PIPE,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
        env=env,
        text=True,
    )
    proc.stdin.write(module_args)
    proc.stdin.close()
    deadline = time.monotonic() + 120  # a failsafe, not a timing assertion
    while seen <= 1200 and proc.poll() is None and time.monotonic() < deadline:
        seen += sum(len(batch) for batch in watch.poll(timeout_ms=20).values())
    proc.kill()
    proc.wait()
    watch.close()
    killed_at = sum(len(p) for p in read_all(target, "events-dr").values())
    assert 1200 < killed_at < 3000, f"the restore was not killed midway ({killed_at} of 3000 records restored)"
    again = run_module("kafka_message_restore", restore, env)
    assert again["rc"] == 0, again
    got = read_all(target, "events-dr")
    for part in range(PARTITIONS):
        assert [origin(hs) for _o, _k, _v, hs, _ts in got[part]] == list(range(1000)), f"partition {part}"
        assert [(k, v, ts) for _o, k, v, _hs, ts in got[part]] == [(k, v, ts) for k, v, _h, ts in sent[part]]
    assert all(p["resumed_after"] is not None for p in again["partitions"].values())


def test_backup_and_dr_playbooks_capture_records_and_restore_topics_then_records_then_offsets(
    svc, s3_url, age_key, broker, tmp_path
):
    """backup.yml exports the metadata and captures the records (caas_backup_kafka_messages); dr.yml on a fresh broker,
    not told about the records (the operator's plain run), finds the captured sets, creates the topics from
    kafka-meta, produces the records, commits the group translated, and checks no record is left to restore. The
    5-minute job is backup.yml with caas_backup_only=kafka-messages."""
    source, target = broker(), broker()
    admin = KafkaAdminClient(bootstrap_servers=source.url)
    admin.create_topics({"orders": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    sent = produce(source.url, "orders", 0, 300)
    commit(source.url, "billing", {("orders", 0): 40, ("orders", 1): 100, ("orders", 2): 7})
    reports = tmp_path / "reports"
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "caas_backup_kafka_bootstrap_servers": [source.url],
        "caas_backup_kafka_messages": True,
        "kafka_backup_restore_bootstrap_servers": [target.url],
        "dr_site_report_dir": str(reports),
    }
    backup = run_playbook(REPO / "playbooks" / "backup.yml", extra, module_env(svc), groups=["caas_kafka"])
    assert backup.returncode == 0, backup.stdout + backup.stderr
    more = produce(source.url, "orders", 300, 60)
    job = run_playbook(
        REPO / "playbooks" / "backup.yml",
        dict(extra, caas_backup_only="kafka-messages"),
        module_env(svc),
        groups=["caas_kafka"],
    )
    assert job.returncode == 0, job.stdout + job.stderr
    storage = s3_storage(svc, s3_url)
    assert len([s for s in list_sets(storage, "kafka-messages") if s.complete]) == 2
    assert len([s for s in list_sets(storage, "kafka-meta") if s.complete]) == 1
    source.stop()
    plain = {k: v for k, v in extra.items() if k != "caas_backup_kafka_messages"}
    dr = run_playbook(REPO / "playbooks" / "dr.yml", plain, module_env(svc), groups=["caas_kafka"])
    assert dr.returncode == 0, dr.stdout + dr.stderr
    got = read_all(target.url, "orders")
    for part in range(PARTITIONS):
        assert [(k, v, ts) for _o, k, v, _h, ts in got[part]] == [
            (k, v, ts) for k, v, _h, ts in sent[part] + more[part]
        ]
    assert commit(target.url, "billing", {}) == {("orders", 0): 40, ("orders", 1): 100, ("orders", 2): 7}
    [kafka] = dr_report(reports)["components"]
    assert kafka["status"] == "PASS", kafka
    assert {"check": "every captured record on the target", "ok": True, "expected": 0, "found": 0} in kafka["checks"]


def test_aborted_transactions_are_left_out_and_group_offsets_move_onto_the_restored_records(env, file_url, broker):
    """Tansu runs transactions: an aborted one (and every transaction marker) takes source offsets no restored
    record has, so a group committed after it lands on a smaller target offset - the first record it had not read."""
    url = broker().url
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({"ledger": {"num_partitions": 1, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    plain = KafkaProducer(bootstrap_servers=url)
    for i in range(5):
        plain.send("ledger", value=f"before-{i}".encode(), partition=0).get(timeout=30)
    tx = KafkaProducer(bootstrap_servers=url, transactional_id="ledger-writer")
    tx.init_transactions()
    tx.begin_transaction()
    for i in range(4):
        tx.send("ledger", value=f"aborted-{i}".encode(), partition=0)
    tx.abort_transaction()
    tx.begin_transaction()
    tx.send("ledger", value=b"committed-0", partition=0)
    tx.commit_transaction()
    tx.close()
    after = [plain.send("ledger", value=f"after-{i}".encode(), partition=0).get(timeout=30).offset for i in range(3)]
    plain.close()
    commit(url, "auditor", {("ledger", 0): after[1]})  # read up to after-0
    captured = run_module("kafka_message_capture", dict(storage_url=file_url, bootstrap_servers=[url]), env)
    assert captured["rc"] == 0 and captured["records"] == 9, captured  # 5 + 1 committed + 3, no aborted, no markers

    target = broker().url
    done = run_module("kafka_message_restore", dict(storage_url=file_url, bootstrap_servers=[target]), env)
    assert done["rc"] == 0 and done["records"] == 9, done
    values = [v for _o, _k, v, _h, _ts in read_all(target, "ledger", 1)[0]]
    assert values == [f"before-{i}".encode() for i in range(5)] + [b"committed-0"] + [
        b"after-0",
        b"after-1",
        b"after-2",
    ]
    moved = done["groups"]["auditor"]["ledger-0"]
    assert moved == {"source": after[1], "target": 7} and after[1] > 7  # after-1 is the 8th restored record
    assert commit(target, "auditor", {}) == {("ledger", 0): 7}


def test_a_lost_produce_answer_is_sent_again_and_dropped_by_the_broker_and_a_lasting_error_leaves_a_prefix(
    file_url, broker, monkeypatch
):
    """Fault injection on a real broker: it appends a batch and its answer is lost (a retriable error raised after
    the append). The restore sends the same batch again; its idempotent producer id and sequence make the broker
    drop the copy: every record once, in order. An error that stays fails naming it; the target then holds a
    prefix of the records, never a gap."""
    from ansible_collections.caas.backup.plugins.module_utils.common import SourceError
    from ansible_collections.caas.backup.plugins.module_utils.kafka import messages
    from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Cluster, RetriableError
    from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
    from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

    url = broker().url
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({"events": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    sent = produce(url, "events", 0, 600)
    storage = open_storage(file_url)
    with Cluster({"bootstrap_servers": [url]}) as cluster:
        messages.capture(cluster, storage, "events", WriteOptions("zstd"), [], messages.CaptureOptions())
    plans = messages.plan_partitions(messages.message_sets(storage, "events"), [])
    spec = messages.RestoreSpec(plans, {}, {}, None, [], True, False, dict, batch_bytes=1000)

    class LosesAnswers(Cluster):
        """The real cluster; the answers of the produce calls numbered in ``lose`` are lost after the append."""

        def __init__(self, params, lose):
            super().__init__(params)
            self.calls, self.lose = 0, lose

        def produce(self, *args, **kwargs):
            base = super().produce(*args, **kwargs)
            self.calls += 1
            if self.calls in self.lose:
                raise RetriableError(f"cannot produce: answer {self.calls} lost (injected)")
            return base

    target = broker().url
    monkeypatch.setattr(messages, "PRODUCE_RETRY_SECONDS", 1.0)
    with (
        messages.verified_segments(storage, plans, []) as copies,
        LosesAnswers({"bootstrap_servers": [target]}, {2, 7, 8}) as cluster,
    ):
        done = messages.restore(cluster, copies, spec, lambda _msg: None)
    assert cluster.calls > 8 and done["records"] == 600
    first = done["partitions"]["events-0"]
    span = (first["source_first"], first["source_last"], first["target_first"], first["target_last"])
    assert span == (0, 199, 0, 199)
    got = read_all(target, "events")
    for part in range(PARTITIONS):
        assert [origin(hs) for _o, _k, _v, hs, _ts in got[part]] == list(range(200)), f"partition {part}"
        assert [(k, v, ts) for _o, k, v, _hs, ts in got[part]] == [(k, v, ts) for k, v, _h, ts in sent[part]]

    lasting = broker().url
    with (
        messages.verified_segments(storage, plans, []) as copies,
        LosesAnswers({"bootstrap_servers": [lasting]}, set(range(3, 100))) as cluster,
        pytest.raises(SourceError, match=r"answer \d+ lost \(injected\) \(retried for 1 s; run the restore again"),
    ):
        messages.restore(cluster, copies, spec, lambda _msg: None)
    got = read_all(lasting, "events")
    assert [origin(hs) for _o, _k, _v, hs, _ts in got[0]] == list(range(len(got[0]))) and len(got[0]) > 0


class TlsFront:
    """A TLS endpoint in front of a plaintext broker (Tansu 0.6's own TLS does not start): decrypts and forwards."""

    def __init__(self, cert, key, port, backend):
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(cert, key)
        self.backend = backend
        self.server = socket.create_server((services.HOST, port))
        threading.Thread(target=self._accept, daemon=True).start()

    def _accept(self):
        while True:
            try:
                raw, _addr = self.server.accept()
            except OSError:
                return  # closed
            threading.Thread(target=self._serve, args=(raw,), daemon=True).start()

    def _serve(self, raw):
        try:
            client = self.context.wrap_socket(raw, server_side=True)
        except (OSError, ssl.SSLError):
            raw.close()  # a client that refused the certificate
            return
        backend = socket.create_connection(self.backend)

        def pump(src, dst):
            try:
                while data := src.recv(1 << 16):
                    dst.sendall(data)
            except OSError:
                pass
            for end in (src, dst):
                end.close()

        threading.Thread(target=pump, args=(backend, client), daemon=True).start()
        pump(client, backend)

    def close(self):
        self.server.close()


def test_capture_and_restore_over_tls_read_every_record_through_the_verified_connection(
    env, file_url, broker, tmp_path
):
    """security_protocol SSL end to end: kafka-python's admin client and the capture's own record connection
    (kafka.client.Link) both verify the broker's certificate against ssl_cafile and its IP address; a CA that did
    not sign it fails the capture with the TLS cause. The TLS front is a test helper: Tansu 0.6 takes a --cert
    option but its listener stays plaintext."""
    cert, key = tmp_path / "cert.pem", tmp_path / "key.pem"
    subj = ["-subj", f"/CN={services.HOST}", "-addext", f"subjectAltName=IP:{services.HOST}"]
    cmd = ["openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "2", *subj]
    subprocess.run([*cmd, "-keyout", str(key), "-out", str(cert)], check=True, capture_output=True)
    front_port, kafka_port = services.free_port(), services.free_port()
    front = TlsFront(cert, key, front_port, (services.HOST, kafka_port))
    try:
        source = services.start_kafka(tmp_path / "kafka-tls", kafka_port, advertised_port=front_port)
        try:
            front_url = f"{services.HOST}:{front_port}"
            client = dict(security_protocol="SSL", ssl_cafile=str(cert))
            admin = KafkaAdminClient(bootstrap_servers=front_url, **client)
            admin.create_topics({"orders": {"num_partitions": PARTITIONS, "replication_factor": 1}})
            admin.close()
            sent = produce(front_url, "orders", 0, 1200, **client)
            tls = dict(bootstrap_servers=[front_url], security_protocol="SSL")
            other = tmp_path / "other.pem"
            subprocess.run(
                [*cmd, "-keyout", str(tmp_path / "other.key"), "-out", str(other)], check=True, capture_output=True
            )
            refused = run_module(
                "kafka_message_capture", dict(tls, storage_url=file_url, ssl_cafile=str(other), connect_timeout=3), env
            )
            assert refused["rc"] != 0 and "SSL handshake failed" in refused["msg"], refused
            captured = run_module("kafka_message_capture", dict(tls, storage_url=file_url, ssl_cafile=str(cert)), env)
            assert captured["rc"] == 0 and captured["records"] == 1200, captured
        finally:
            source.stop()
    finally:
        front.close()
    target = broker().url
    done = run_module("kafka_message_restore", dict(storage_url=file_url, bootstrap_servers=[target]), env)
    assert done["rc"] == 0 and done["records"] == 1200, done
    got = read_all(target, "orders")
    for part in range(PARTITIONS):
        assert [(k, v, ts) for _o, k, v, _h, ts in got[part]] == [(k, v, ts) for k, v, _h, ts in sent[part]]


def test_a_record_connection_the_broker_closed_is_replaced_and_a_broker_gone_is_a_retriable_error(broker):
    """The capture's own connections (kafka.client.Link) stay open between reads: one the broker closed while it
    was idle is replaced and the read sent again; with the broker gone, the read fails as retriable, naming it.
    A broker without Fetch v11 (the version the links write and read) is refused by name."""
    from ansible_collections.caas.backup.plugins.module_utils.common import SourceError
    from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Cluster, RetriableError

    handle = broker()
    admin = KafkaAdminClient(bootstrap_servers=handle.url)
    admin.create_topics({"events": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    produce(handle.url, "events", 0, 30)
    where = ("events", 0)
    with Cluster({"bootstrap_servers": [handle.url], "connect_timeout": 2}) as cluster:
        leader = cluster.leaders(["events"])[where]
        first = cluster.fetch(leader, {where: 0}, 1 << 20)[where]
        assert first.error == 0 and first.high_watermark == 10 and first.records
        (link,) = cluster._links[leader]
        link._sock.shutdown(socket.SHUT_RDWR)  # as the broker closing an idle connection
        again = cluster.fetch(leader, {where: 0}, 1 << 20)[where]
        assert again.records == first.records
        assert len(cluster._links[leader]) == 1 and cluster._links[leader][0] is not link
        handle.stop()
        with pytest.raises(RetriableError, match="cannot fetch Kafka records: ConnectionRefusedError"):
            cluster.fetch(leader, {where: 0}, 1 << 20)

    older = broker()  # Tansu answers Fetch up to v11: the ApiVersions answer of a broker before Kafka 2.3 written in
    with Cluster({"bootstrap_servers": [older.url]}) as cluster:
        cluster.create_topic("events", 1, 1, {})
        leader = cluster.leaders(["events"])[where]
        cluster.admin._manager.broker_version_data.api_versions[1] = (0, 10)  # Fetch: api key 1
        with pytest.raises(SourceError, match=r"cannot fetch Kafka records: it needs Fetch v11 \(Kafka 2.3 or newer\)"):
            cluster.fetch(leader, {where: 0}, 1 << 20)


def test_a_read_answered_with_no_batch_before_the_end_is_asked_again_and_one_that_stays_empty_fails(
    file_url, tmp_path, broker, monkeypatch
):
    """Fault injection on a real broker: Tansu once answered a read before the end with no record batch (seen in
    the bench, not reproducible on demand), so answers are emptied on the way. The capture asks again and still
    gets every record once; answers that stay empty fail naming the partition, offset and end, writing no set."""
    from ansible_collections.caas.backup.plugins.module_utils.common import SourceError
    from ansible_collections.caas.backup.plugins.module_utils.kafka import messages
    from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Cluster
    from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
    from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

    url = broker().url
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics({"events": {"num_partitions": PARTITIONS, "replication_factor": 1}}, wait_for_metadata=True)
    admin.close()
    for start in range(0, 600, 60):  # ten batches or more per partition
        produce(url, "events", start, 60)

    class EmptiesAnswers(Cluster):
        """The real cluster; the record reads numbered in ``empty`` come back with no records."""

        def __init__(self, params, empty):
            super().__init__(params)
            self.reads, self.empty = 0, empty

        def fetch(self, leader, wanted, max_bytes, max_wait_ms=10):
            found = super().fetch(leader, wanted, max_bytes, max_wait_ms)
            if max_bytes == messages.FETCH_BYTES:  # a record read, not the capture's probe of where logs end
                self.reads += 1
                if self.reads in self.empty:
                    found = {key: dataclasses.replace(answer, records=b"") for key, answer in found.items()}
            return found

    monkeypatch.setattr(messages, "FETCH_BYTES", 100)  # less than a batch: a batch or so per read
    monkeypatch.setattr(messages, "FETCH_RETRY_SECONDS", 0.3)
    storage = open_storage(file_url)
    with EmptiesAnswers({"bootstrap_servers": [url]}, {1, 4, 5, 9}) as cluster:
        done = messages.capture(cluster, storage, "events", WriteOptions("zstd"), [], messages.CaptureOptions())
    assert cluster.reads >= 14 and done["records"] == 600
    (captured,) = messages.message_sets(storage, "events")
    assert {k: (p["first_offset"], p["last_offset"]) for k, p in captured.facts["partitions"].items()} == {
        f"events-{p}": (0, 199) for p in range(PARTITIONS)
    }

    (tmp_path / "again").mkdir()
    again = open_storage(f"file://{tmp_path}/again")
    stays = EmptiesAnswers({"bootstrap_servers": [url]}, set(range(3, 1000)))
    message = r"events-\d: the broker answered no record batch at offset \d+, before the end at 200, for 0.3 s"
    with stays as cluster, pytest.raises(SourceError, match=message):
        messages.capture(cluster, again, "events", WriteOptions(), [], messages.CaptureOptions())
    assert stays.reads > 5 and not [s for s in list_sets(again, "kafka-messages", "events") if s.complete]
