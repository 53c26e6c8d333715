"""kafka_topic_export / kafka_topic_restore against real Tansu brokers, one or two per test.

Tansu's gaps (tests/support/services.py) and how each test meets them:

* DescribeConfigs reports no topic overrides: the export warns and keeps none, asserted below; config round trips
  and drift are unit tests (tests/unit/plugins/module_utils/test_kafka_metadata.py).
* ListOffsets LATEST counts record batches: records are produced one per batch where offsets matter, and
  ``test_export_warns_when_a_commit_lies_beyond_the_reported_log_end`` shows the export's warning on a
  multi-record batch.
* ListOffsets by time answers 0: the restore's check against the records catches it, warns, and searches by Fetch
  (``test_timestamp_offsets_map_onto_a_mirror_with_other_offsets``).
* No CreatePartitions: the restore fails before changing anything (``test_bad_input_gives_a_clear_error``).
* kafka-python cannot decode DescribeGroups' authorized operations: the module asks without them, so the active
  member check runs for real (``test_a_group_with_active_members_is_refused_and_nothing_changes``).
* A group's first JoinGroup answers after ~session_timeout_ms / 2: consumers here use 6000 ms.
"""

import contextlib
import json
import time
import warnings

import services
from harness import REPO, dr_report, module_env, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    DIGEST_FIELD,
    SetWriter,
    fetch_object,
    list_sets,
    manifest_digest,
)
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer

BASE_TS = 1_700_000_000_000


@contextlib.contextmanager
def admin(url):
    client = KafkaAdminClient(bootstrap_servers=url, request_timeout_ms=10000)
    try:
        yield client
    finally:
        client.close()


def create(url, **topics):
    with admin(url) as client:
        client.create_topics(
            {name: {"num_partitions": n, "replication_factor": 1} for name, n in topics.items()},
            wait_for_metadata=True,
        )


def layout(url):
    """{topic: (partitions, replication factor)} of a broker's non-internal topics."""
    with admin(url) as client:
        return {
            t["name"]: (len(t["partitions"]), len(t["partitions"][0]["replica_nodes"]))
            for t in client.describe_topics()
            if not t["name"].startswith("__")
        }


def produce(url, topic, values, timestamps=None, one_per_batch=True):
    """Records to partition 0; one per batch unless asked (Tansu's ListOffsets counts batches)."""
    producer = KafkaProducer(bootstrap_servers=url, linger_ms=0 if one_per_batch else 500)
    sent = []
    for i, value in enumerate(values):
        future = producer.send(topic, value=value.encode(), partition=0, timestamp_ms=(timestamps or {}).get(i))
        if one_per_batch:
            future.get(timeout=30)
        sent.append(future)
    producer.flush()
    producer.close()


def consumer(url, group):
    return KafkaConsumer(
        bootstrap_servers=url,
        group_id=group,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        session_timeout_ms=6000,
        heartbeat_interval_ms=1000,
    )


def consume(url, group, topic, count):
    """Read ``count`` records as a member of ``group``, commit, leave: [(offset, value)]."""
    reader = consumer(url, group)
    reader.subscribe([topic])
    got = []
    deadline = time.monotonic() + 120  # a failsafe against a hang, not a timing assertion
    while len(got) < count and time.monotonic() < deadline:
        for batch in reader.poll(timeout_ms=1000, max_records=1).values():
            got += [(r.offset, r.value.decode()) for r in batch]
    reader.commit()
    reader.close()
    return got


def committed(url, group):
    with admin(url) as client:
        offsets = client.list_group_offsets(group).get(group) or {}
    return {f"{tp.topic}-{tp.partition}": om.offset for tp, om in offsets.items()}


def warned(result, text):
    """Whether a module warning holds ``text`` (ansible-core 2.19 wraps each in a WarningSummary event)."""
    messages = [w.get("event", w).get("msg", "") if isinstance(w, dict) else w for w in result.get("warnings", [])]
    return any(text in m for m in messages)


def export(svc, s3_url, url, **more):
    result = run_module(
        "kafka_topic_export", {"storage_url": s3_url, "bootstrap_servers": [url], **more}, module_env(svc)
    )
    assert result["rc"] == 0, result
    return result


def stored_document(svc, s3_url, identities=()):
    storage = s3_storage(svc, s3_url)
    [bset] = [s for s in list_sets(storage, "kafka-meta") if s.complete][-1:]
    with fetch_object(storage, bset, "kafka-meta.json") as copy, copy.reader(list(identities)) as reader:
        return bset, json.loads(reader.read())


def test_topic_round_trip_to_a_fresh_broker(svc, s3_url, age_key, broker):
    """Export (encrypted), fresh broker, check-mode plan, restore, compare, and a second restore changes nothing.

    Tansu has one broker (replication factor 1) and reports no config overrides, which the export says.
    """
    source, target = broker(), broker()
    with admin(source.url) as client:
        client.create_topics(
            {
                "orders": {"num_partitions": 3, "replication_factor": 1, "configs": {"retention.ms": "86400000"}},
                "audit": {"num_partitions": 1, "replication_factor": 1},
                "tmp-scratch": {"num_partitions": 2, "replication_factor": 1},
            },
            wait_for_metadata=True,
        )
    produce(source.url, "orders", ["a", "b", "c"])
    made = export(svc, s3_url, source.url, exclude_topics=["tmp-.*"], encryption_recipients=[age_key["recipient"]])
    assert made["topics"] == ["audit", "orders"] and made["partitions"] == 4
    assert made["source"] == "kafka-caas" and made["cluster_id"] == "caas"
    assert warned(made, "DescribeConfigs answer is incomplete")
    bset, doc = stored_document(svc, s3_url, [age_key["identity"]])
    assert bset.facts["topics"] == 2 and bset.facts["partitions"] == 4 and bset.facts["groups"] == 0
    assert bset.manifest["objects"][0]["name"] == "kafka-meta.json.zst.age"
    assert doc["topics"]["orders"]["offsets"]["0"] == {"start": 0, "end": 3}

    args = {
        "storage_url": s3_url,
        "bootstrap_servers": [target.url],
        "encryption_identity_file": age_key["file"],
        "_ansible_diff": True,
    }
    plan = run_module("kafka_topic_restore", args, module_env(svc), check_mode=True)
    assert plan["rc"] == 0 and plan["changed"], plan
    assert plan["created_topics"] == ["audit", "orders"]
    assert [d["before_header"] for d in plan["diff"]] == ["topic audit", "topic orders"]
    assert plan["diff"][1]["after"]["partitions"] == 3
    assert layout(target.url) == {}

    done = run_module("kafka_topic_restore", args, module_env(svc))
    assert done["rc"] == 0 and done["changed"] and done["backup_id"] == made["backup_id"], done
    assert done["target"] == target.url
    expected = {k: v for k, v in layout(source.url).items() if not k.startswith("tmp-")}
    assert layout(target.url) == expected == {"orders": (3, 1), "audit": (1, 1)}

    again = run_module("kafka_topic_restore", args, module_env(svc))
    assert again["rc"] == 0 and not again["changed"] and again["plan"] == [], again


def test_group_resumes_exactly_where_it_stood(svc, s3_url, broker):
    """The group stood at 4 of 10 when exported and then read on; after the restore a real consumer resumes at 4."""
    kafka = broker()
    create(kafka.url, events=1)
    produce(kafka.url, "events", [f"e{i}" for i in range(10)])
    assert consume(kafka.url, "billing", "events", 4) == [(i, f"e{i}") for i in range(4)]
    made = export(svc, s3_url, kafka.url)
    assert made["groups"] == ["billing"]
    _bset, doc = stored_document(svc, s3_url)
    stored = doc["groups"]["billing"]["offsets"]["events"]["0"]
    assert stored["offset"] == 4 and isinstance(stored["timestamp"], int)

    assert consume(kafka.url, "billing", "events", 6)[-1] == (9, "e9")
    assert committed(kafka.url, "billing") == {"events-0": 10}

    args = {"storage_url": s3_url, "bootstrap_servers": [kafka.url], "_ansible_diff": True}
    plan = run_module("kafka_topic_restore", args, module_env(svc), check_mode=True)
    assert plan["rc"] == 0 and plan["groups"] == {"billing": {"events-0": 4}}, plan
    assert plan["diff"] == [
        {
            "before_header": "consumer group billing",
            "after_header": "consumer group billing",
            "before": {"events-0": 10},
            "after": {"events-0": 4},
        }
    ]
    assert committed(kafka.url, "billing") == {"events-0": 10}

    done = run_module("kafka_topic_restore", args, module_env(svc))
    assert done["rc"] == 0 and done["changed"], done
    assert not run_module("kafka_topic_restore", args, module_env(svc))["changed"]
    assert consume(kafka.url, "billing", "events", 1) == [(4, "e4")]


def test_a_group_with_active_members_is_refused_and_nothing_changes(svc, s3_url, broker):
    """A live member's offsets are not moved under it; once it has left, the same restore goes through."""
    kafka = broker()
    create(kafka.url, events=1)
    produce(kafka.url, "events", [f"e{i}" for i in range(5)])
    consume(kafka.url, "live", "events", 2)
    export(svc, s3_url, kafka.url)
    consume(kafka.url, "live", "events", 3)
    member = consumer(kafka.url, "live")
    member.subscribe(["events"])
    deadline = time.monotonic() + 60  # a failsafe, not a timing assertion
    while not member.assignment() and time.monotonic() < deadline:
        member.poll(timeout_ms=500)
    assert member.assignment(), "the consumer must have joined the group"
    args = {"storage_url": s3_url, "bootstrap_servers": [kafka.url]}
    try:
        refused = run_module("kafka_topic_restore", args, module_env(svc))
    finally:
        member.close()
    assert refused["rc"] == 1
    assert refused["msg"].startswith("Failed to restore Kafka metadata: consumer group(s) live (Stable, 1 member(s))")
    assert "have active members" in refused["msg"]
    assert committed(kafka.url, "live") == {"events-0": 5}
    done = run_module("kafka_topic_restore", args, module_env(svc))
    assert done["rc"] == 0 and done["groups"] == {"live": {"events-0": 2}}, done


def test_timestamp_offsets_map_onto_a_mirror_with_other_offsets(svc, s3_url, broker):
    """The mirror holds two older records before the same ones, so offset 4 there is e2: by time the group lands at 6.

    Tansu's ListOffsets by time answers 0 whatever the time; the module finds the records contradict that, warns,
    and searches by reading records: the warning is asserted because the gap is real.
    """
    source, mirror = broker(), broker()
    stamps = {i: BASE_TS + 1000 * i for i in range(10)}
    create(source.url, events=1)
    produce(source.url, "events", [f"e{i}" for i in range(10)], stamps)
    consume(source.url, "replay", "events", 4)
    consume(source.url, "caught-up", "events", 10)
    export(svc, s3_url, source.url)
    create(mirror.url, events=1)
    older = {0: BASE_TS - 10000, 1: BASE_TS - 9000} | {i + 2: t for i, t in stamps.items()} | {12: BASE_TS + 20000}
    produce(mirror.url, "events", ["old0", "old1"] + [f"e{i}" for i in range(10)] + ["newer"], older)

    args = {"storage_url": s3_url, "bootstrap_servers": [mirror.url], "offsets": "timestamp", "groups": ["replay"]}
    done = run_module("kafka_topic_restore", args, module_env(svc))
    assert done["rc"] == 0 and done["groups"] == {"replay": {"events-0": 6}}, done
    assert warned(done, "which its records contradict")
    assert consume(mirror.url, "replay", "events", 1) == [(6, "e4")]
    # A group that had read everything resumes at the first record the source never had, not at the log end.
    caught_up = run_module("kafka_topic_restore", dict(args, groups=["caught-up"]), module_env(svc))
    assert caught_up["groups"] == {"caught-up": {"events-0": 12}}, caught_up

    later = dict(args, offsets_timestamp="2023-11-14T22:13:28Z")  # BASE_TS + 8 s: e8
    assert run_module("kafka_topic_restore", later, module_env(svc))["groups"] == {"replay": {"events-0": 10}}
    assert run_module("kafka_topic_restore", dict(later, offsets_timestamp="2030-01-01T00:00:00Z"), module_env(svc))[
        "groups"
    ] == {"replay": {"events-0": 13}}
    assert run_module("kafka_topic_restore", dict(args, offsets="earliest"), module_env(svc))["groups"] == {
        "replay": {"events-0": 0}
    }


def test_export_warns_when_a_commit_lies_beyond_the_reported_log_end(svc, s3_url, broker):
    """Tansu's ListOffsets LATEST counts batches: five records in one batch end at 1, yet the group committed 5.

    The export keeps what the broker said, and warns that it is contradicted.
    """
    kafka = broker()
    create(kafka.url, events=1)
    produce(kafka.url, "events", [f"e{i}" for i in range(5)], one_per_batch=False)
    consume(kafka.url, "batchy", "events", 5)
    made = export(svc, s3_url, kafka.url)
    assert warned(made, "group batchy committed 5 on events-0, beyond the log end 1")


def test_bad_input_gives_a_clear_error(svc, s3_url, broker):
    env = module_env(svc)
    nowhere = f"127.0.0.1:{services.free_port()}"
    unreachable = run_module("kafka_topic_export", {"storage_url": s3_url, "bootstrap_servers": [nowhere]}, env)
    assert unreachable["rc"] == 1
    assert unreachable["msg"].startswith(
        f"Failed to export Kafka metadata: cannot reach any bootstrap server ({nowhere}"
    )
    assert "Traceback" not in unreachable.get("exception", "")

    source, target = broker(), broker()
    bad_regex = run_module(
        "kafka_topic_export", {"storage_url": s3_url, "bootstrap_servers": [source.url], "include_topics": ["("]}, env
    )
    assert bad_regex["rc"] == 1 and "include_topics: '(' is not a regular expression" in bad_regex["msg"]

    create(source.url, orders=3, audit=1)
    export(svc, s3_url, source.url)
    args = {"storage_url": s3_url, "bootstrap_servers": [target.url]}
    bad_name = run_module("kafka_topic_restore", dict(args, topics=["orders", "no such/topic"]), env)
    assert bad_name["rc"] == 1 and "invalid topic name 'no such/topic'" in bad_name["msg"]
    absent = run_module("kafka_topic_restore", dict(args, topics=["billing"]), env)
    assert absent["rc"] == 1 and "topic(s) billing are not in the backup" in absent["msg"]

    # Tansu has no CreatePartitions: growing orders from 1 to 3 partitions fails before audit is created.
    create(target.url, orders=1)
    grow = run_module("kafka_topic_restore", args, env)
    assert grow["rc"] == 1 and "need more partitions but the target has no CreatePartitions API" in grow["msg"], grow
    assert layout(target.url) == {"orders": (1, 1)}

    future = SetWriter(s3_storage(svc, s3_url), "kafka-meta", "kafka-caas", WriteOptions("zstd"))
    with future.object("kafka-meta.json") as out:
        out.write(json.dumps({"format": "caas.backup/kafka-meta", "format_version": 99}).encode())
    future.commit({"format_version": 99})
    unknown = run_module("kafka_topic_restore", dict(args, backup_id=future.backup_id), env)
    assert unknown["rc"] == 1
    assert "caas.backup/kafka-meta format_version 99 is unknown: this collection reads version 1" in unknown["msg"]


def test_backup_and_dr_playbooks_carry_kafka_and_count_it_in_rpo(svc, s3_url, age_key, broker, tmp_path):
    """backup.yml exports the cluster when its bootstrap servers are set; dr.yml restores it onto a fresh broker.

    No record was captured (no kafka-messages set): dr.yml, looking for them first, restores the groups' offsets
    with the topics (on the empty logs, clamped to their end)."""
    source, target = broker(), broker()
    create(source.url, orders=2, audit=1)
    produce(source.url, "orders", ["a", "b", "c"])
    assert [v for _o, v in consume(source.url, "billing", "orders", 2)] == ["a", "b"]
    reports = tmp_path / "reports"
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "caas_backup_kafka_bootstrap_servers": [source.url],
        "kafka_backup_restore_bootstrap_servers": [target.url],
        "dr_site_report_dir": str(reports),
    }
    backup = run_playbook(REPO / "playbooks" / "backup.yml", extra, module_env(svc), groups=["caas_kafka"])
    assert backup.returncode == 0, backup.stdout + backup.stderr
    dr = run_playbook(REPO / "playbooks" / "dr.yml", extra, module_env(svc), groups=["caas_kafka"])
    assert dr.returncode == 0, dr.stdout + dr.stderr
    assert layout(target.url) == layout(source.url) == {"orders": (2, 1), "audit": (1, 1)}
    assert committed(target.url, "billing") == {"orders-0": 0, "orders-1": 0}
    measured = dr_report(reports)
    [kafka] = measured["components"]
    assert (kafka["component"], kafka["source"], kafka["status"]) == ("kafka", "kafka-caas", "PASS")
    assert kafka["data_time"] == kafka["backup_time"] and all(c["ok"] for c in kafka["checks"])
    assert float(measured["rpo_seconds"]) >= 0


def test_a_failed_sasl_handshake_is_explained_and_the_password_never_shown(svc, s3_url, broker):
    """Tansu has no SASL, so a real authentication failure cannot be shown: the SCRAM handshake fails instead.

    The module names the failed handshake and what to check; the password (from KAFKA_SASL_PASSWORD) is in no
    part of the result.
    """
    kafka = broker()
    env = module_env(svc, KAFKA_SASL_PASSWORD="pw-do-not-leak-91")
    args = {
        "storage_url": s3_url,
        "bootstrap_servers": [kafka.url],
        "security_protocol": "SASL_PLAINTEXT",
        "sasl_mechanism": "SCRAM-SHA-256",
        "sasl_plain_username": "backup",
        "connect_timeout": 3,
    }
    failed = run_module("kafka_topic_export", args, env)
    assert failed["rc"] == 1
    assert failed["msg"].startswith("Failed to export Kafka metadata: cannot connect to Kafka")
    assert "the SASL_PLAINTEXT handshake failed" in failed["msg"]
    assert "pw-do-not-leak-91" not in json.dumps(failed)
    assert list_sets(s3_storage(svc, s3_url), "kafka-meta") == []


def test_backup_verify_parses_the_export_and_checks_its_counts(svc, s3_url, age_key, broker):
    """Both levels parse and validate the export (there is no data to load) and compare counts with the manifest."""
    url = broker().url
    create(url, orders=3, payments=2)
    export(svc, s3_url, url, encryption_recipients=[age_key["recipient"]])
    args = {"storage_url": s3_url, "encryption_identity_file": age_key["file"]}
    for level in ("checksum", "restore"):
        result = run_module("backup_verify", dict(args, level=level), module_env(svc))
        assert result["rc"] == 0, result
        check = result["reports"][0]["checks"][-1]
        assert (check["topics"], check["partitions"]) == (2, 5)
    bset = stored_document(svc, s3_url, [age_key["identity"]])[0]
    manifest = dict(bset.manifest, facts=dict(bset.facts, partitions=9))
    manifest[DIGEST_FIELD] = manifest_digest(manifest)  # a consistent manifest that lies about the export
    s3_storage(svc, s3_url).put_bytes(f"{bset.prefix}/manifest.json", json.dumps(manifest).encode())
    result = run_module("backup_verify", args, module_env(svc))
    assert result["rc"] == 1 and "the Kafka export holds 5 partitions but the manifest says 9" in result["msg"]


def stored_objects(svc, s3_url):
    """Every object under the test's S3 prefix with its size, listed with boto3: what check mode must leave."""
    bucket, prefix = s3_url[len("s3://") :].split("/", 1)
    pages = (
        services.s3_client(svc["CAAS_S3_ENDPOINT"])
        .get_paginator("list_objects_v2")
        .paginate(Bucket=bucket, Prefix=f"{prefix}/")
    )
    return sorted((o["Key"], o["Size"]) for page in pages for o in page.get("Contents", ()))


def test_export_and_restore_check_mode_report_the_plan_and_write_nothing(svc, s3_url, broker):
    """kafka_topic_export in check mode: changed, the topics, partitions and groups (and their counts) a real
    export then stores, where it would go; nothing stored. kafka_topic_restore in check mode: the set and its
    plan, changed as the real run reports it; the target cluster unchanged."""
    kafka, target = broker(), broker()
    create(kafka.url, orders=2, audit=1)
    produce(kafka.url, "orders", ["a", "b"])
    consume(kafka.url, "billing", "orders", 1)
    args = {"storage_url": s3_url, "bootstrap_servers": [kafka.url]}
    planned = run_module("kafka_topic_export", args, module_env(svc), check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["kind"] == "kafka-meta"
    assert planned["topics"] == ["audit", "orders"] and planned["groups"] == ["billing"]
    assert planned["facts"]["topics"] == 2 and planned["facts"]["partitions"] == 3 and planned["facts"]["groups"] == 1
    assert planned["source"] == "kafka-caas" and planned["location"] == f"{s3_url}/kafka-meta/kafka-caas/"
    assert planned["msg"].startswith("would write a kafka-meta backup of 2 topic(s) (3 partitions), 1 consumer group")
    assert stored_objects(svc, s3_url) == []

    made = export(svc, s3_url, kafka.url)
    bset, _doc = stored_document(svc, s3_url)
    assert {k: bset.facts[k] for k in ("topics", "partitions", "groups", "acls")} == {
        k: planned["facts"][k] for k in ("topics", "partitions", "groups", "acls")
    }
    before = stored_objects(svc, s3_url)
    restore_args = {"storage_url": s3_url, "bootstrap_servers": [target.url]}
    plan = run_module("kafka_topic_restore", restore_args, module_env(svc), check_mode=True)
    assert plan["rc"] == 0, plan
    assert plan["changed"] is True and plan["backup_id"] == made["backup_id"] and plan["source"] == "kafka-caas"
    assert plan["created_topics"] == ["audit", "orders"]
    assert plan["msg"].startswith(f"would restore kafka-meta backup {made['backup_id']} of kafka-caas")
    assert "2 topic(s) created" in plan["msg"]
    assert stored_objects(svc, s3_url) == before and layout(target.url) == {}
