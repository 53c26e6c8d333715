"""The site playbooks over a multi-host inventory, as an operator runs them.

Six hosts (localhost aliases with a local connection): configuration on app01 and app02, MongoDB on db1,
Redis on cache01, Kafka on broker1, and ops01 in both caas_mongodb and caas_kafka (a second host of the same
replica set and cluster: it must not restore them a second time). Storage, recipients and the identity come
only from the environment (CAAS_BACKUP_STORAGE_URL, CAAS_AGE_RECIPIENTS, CAAS_AGE_IDENTITY_FILE).
"""

import contextlib
import json
import shutil
from pathlib import Path

import pymongo
import redis
import services
from harness import REPO, dr_report, module_env, run_playbook, s3_storage, site_inventory
from kafka import KafkaAdminClient, KafkaConsumer, KafkaProducer
from kafka.admin import NewTopic
from test_pitr import next_ts, snapshot

from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, list_sets

PLAYBOOKS = REPO / "playbooks"


@contextlib.contextmanager
def servers(tmp_path):
    """Start Redis and Kafka servers for one test (``start(kind, name)``); all stopped at its end."""
    handles = []

    def start(kind, name, port=None):
        handle = (services.start_redis if kind == "redis" else services.start_kafka)(tmp_path / name, port)
        handles.append(handle)
        return handle

    try:
        yield start
    finally:
        for handle in handles:
            with contextlib.suppress(Exception):
                pid = int(redis.Redis(port=handle.port, socket_timeout=2).info("server")["process_id"])
                if pid != handle.pid:
                    services.stop_pid(pid)  # the restore restarted it with the start command
            handle.stop()


def make_config(root: Path, name: str) -> dict:
    (root / "keys").mkdir(parents=True)
    (root / "services").mkdir()
    (root / "services" / "api.yml").write_text(f"name: {name}\n")
    (root / ".env").write_text(f"SECRET={name}-do-not-leak\n")
    (root / ".env").chmod(0o600)
    (root / "docker-compose.yml").write_text(f"services: {{{name}: {{}}}}\n")
    (root / "keys" / "tls.key").write_bytes(name.encode() * 64)
    return files(root)


def files(root: Path) -> dict:
    return {str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode) for p in root.rglob("*") if p.is_file()}


def fill_kafka(url: str) -> None:
    admin = KafkaAdminClient(bootstrap_servers=url)
    admin.create_topics([NewTopic("orders", 3, 1), NewTopic("audit", 1, 1)])
    admin.close()
    producer = KafkaProducer(bootstrap_servers=url, linger_ms=0)
    for n in range(6):
        producer.send("orders", f"order {n}".encode(), partition=n % 3).get(timeout=30)
    producer.close()
    consumer = KafkaConsumer(
        "orders",
        bootstrap_servers=url,
        group_id="billing",
        session_timeout_ms=6000,
        auto_offset_reset="earliest",
        enable_auto_commit=False,
        consumer_timeout_ms=15000,
    )
    list(zip(range(6), consumer, strict=False))
    consumer.commit()
    consumer.close()


def kafka_layout(url: str) -> dict:
    admin = KafkaAdminClient(bootstrap_servers=url)
    try:
        return {t["name"]: len(t["partitions"]) for t in admin.describe_topics() if not t["name"].startswith("__")}
    finally:
        admin.close()


def site_env(svc, url, age_key):
    env = module_env(
        svc,
        CAAS_BACKUP_STORAGE_URL=url,
        CAAS_AGE_RECIPIENTS=age_key["recipient"],
        CAAS_AGE_IDENTITY_FILE=age_key["file"],
    )
    for key in ("CAAS_MONGO_URI", "MONGO_URI"):
        env.pop(key, None)
    return env


def test_six_hosts_backup_encrypted_and_dr_to_a_point_in_time_restores_each_part_once(
    svc, s3_url, age_key, mongo_server, tmp_path
):
    env = site_env(svc, s3_url, age_key)
    with servers(tmp_path) as start:
        mongo, cache, kafka = mongo_server("db1"), start("redis", "cache01"), start("kafka", "broker1")
        site = {h: tmp_path / h for h in ("app01", "app02")}
        before = {h: make_config(root, h) for h, root in site.items()}
        client = pymongo.MongoClient(mongo.url)
        client.shop.orders.insert_many([{"_id": i, "v": 0} for i in range(100)])
        redis.Redis(port=cache.port).mset({f"session:{n}": n for n in range(25)})
        fill_kafka(kafka.url)
        groups = {
            "caas_config": ["app01", "app02"],
            "caas_mongodb": ["db1", "ops01"],
            "caas_redis": ["cache01"],
            "caas_kafka": ["broker1", "ops01"],
        }
        backup_vars = {
            "app01": {"config_backup_root": str(site["app01"])},
            "app02": {"config_backup_root": str(site["app02"])},
            "db1": {"caas_backup_mongodb_uri": mongo.url},
            "ops01": {"caas_backup_mongodb_uri": mongo.url, "caas_backup_kafka_bootstrap_servers": [kafka.url]},
            "cache01": {"redis_backup_login_port": cache.port},
            "broker1": {"caas_backup_kafka_bootstrap_servers": [kafka.url]},
        }
        inventory = site_inventory(tmp_path / "site.json", groups, backup_vars)
        extra = {"caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"]}

        backup = run_playbook(PLAYBOOKS / "backup.yml", extra, env, inventory=inventory)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        assert "Backup PASS: 5 of 5 job(s)" in backup.stdout
        client.shop.orders.update_many({"_id": {"$lt": 10}}, {"$set": {"v": 1}})
        client.shop.orders.insert_many([{"_id": i, "v": 2} for i in range(100, 105)])
        target = next_ts(client)
        expected = snapshot(client)
        client.shop.orders.delete_many({})  # after the target: what the point-in-time restore undoes
        oplog = run_playbook(
            PLAYBOOKS / "backup.yml", dict(extra, caas_backup_only="mongodb-oplog"), env, inventory=inventory
        )
        assert oplog.returncode == 0, oplog.stdout + oplog.stderr

        storage = s3_storage(svc, s3_url)
        sets = list_sets(storage)
        assert sorted((s.kind, s.source) for s in sets) == [
            ("config", "app01"),
            ("config", "app02"),
            ("kafka-meta", "kafka-caas"),
            ("mongo-full", "secantus"),
            ("mongo-oplog", "secantus"),
            ("redis-rdb", "cache01"),
        ]
        for bset in sets:
            data = [k for k in bset.keys if not k.endswith(("/" + MANIFEST, ".sig", "verification.json"))]
            assert data and all(k.endswith(".age") for k in data), data
            assert all(o["encryption"]["recipients"] for o in bset.manifest["objects"]), bset.prefix
        redis_before = {k: redis.Redis(port=cache.port).get(k) for k in redis.Redis(port=cache.port).keys("*")}
        layout = kafka_layout(kafka.url)

        # The disaster: every server gone with its data, the configuration files deleted.
        mongo.stop()
        cache.stop()
        kafka.stop()
        for root in site.values():
            shutil.rmtree(root)

        # New hosts, whose servers do not exist yet when the recovery is planned: the new app hosts restore the
        # old hosts' sources by name.
        ports = {name: services.free_port() for name in ("mongo", "redis", "kafka")}
        mongo_url = f"mongodb://127.0.0.1:{ports['mongo']}/?replicaSet=secantus"
        kafka_url = f"127.0.0.1:{ports['kafka']}"
        dr_cache = tmp_path / "dr-cache01"
        dr_vars = {
            "dr-app01": {"caas_backup_source_name": "app01", "config_backup_root": str(site["app01"])},
            "dr-app02": {"caas_backup_source_name": "app02", "config_backup_root": str(site["app02"])},
            "dr-db1": {"caas_backup_mongodb_uri": mongo_url},
            "ops01": {"caas_backup_mongodb_uri": mongo_url, "caas_backup_kafka_bootstrap_servers": [kafka_url]},
            "dr-cache01": {
                "caas_backup_source_name": "cache01",
                "redis_backup_login_port": ports["redis"],
                "redis_backup_start_command": [services.binary("redis-server"), str(dr_cache / "redis.conf")],
            },
            "dr-broker1": {"caas_backup_kafka_bootstrap_servers": [kafka_url]},
        }
        dr_groups = {
            "caas_config": ["dr-app01", "dr-app02"],
            "caas_mongodb": ["dr-db1", "ops01"],
            "caas_redis": ["dr-cache01"],
            "caas_kafka": ["dr-broker1", "ops01"],
        }
        dr_inventory = site_inventory(tmp_path / "dr.json", dr_groups, dr_vars)
        reports = tmp_path / "reports"
        dr_extra = dict(extra, dr_site_target_time=target, dr_site_report_dir=str(reports))

        # The plan needs no server: the sets, their age, signatures and that the identity opens them.
        plan = run_playbook(PLAYBOOKS / "dr.yml", dr_extra, env, "--check", inventory=dr_inventory)
        assert plan.returncode == 0, plan.stdout + plan.stderr
        assert "Recovery PLANNED" in plan.stdout and plan.stdout.count("PLANNED") >= 6, plan.stdout
        assert "FAILED" not in plan.stdout.split("Recovery PLANNED")[1].split("PLAY RECAP")[0]
        assert not reports.exists()  # --check writes nothing, not even the report

        new_mongo = mongo_server("dr-db1", port=ports["mongo"])
        new_cache = start("redis", "dr-cache01", ports["redis"])
        new_kafka = start("kafka", "k2", ports["kafka"])

        dr = run_playbook(PLAYBOOKS / "dr.yml", dr_extra, env, inventory=dr_inventory)
        assert dr.returncode == 0, dr.stdout + dr.stderr
        report = dr_report(reports)
        assert report["result"] == "PASS", report["table"]
        ran = sorted((c["component"], c["host"], c["source"], c["status"]) for c in report["components"])
        assert ran == [
            ("config", "dr-app01", "app01", "PASS"),
            ("config", "dr-app02", "app02", "PASS"),
            ("kafka", "dr-broker1", "kafka-caas", "PASS"),
            ("mongodb", "dr-db1", "secantus", "PASS"),
            ("redis", "dr-cache01", "cache01", "PASS"),
        ]
        assert all(c["checks"] and all(k["ok"] for k in c["checks"]) for c in report["components"])
        assert set(report["phases"]) >= {"assess", "quiesce", "provision", "restore", "start", "verify"}
        assert report["rto_met"] and report["rpo_met"] and report["rpo_seconds"] > 0
        assert (reports / Path(next(reports.glob("*.json"))).name.replace(".json", ".md")).exists()
        assert "Recovery PASS" in dr.stdout

        restored = pymongo.MongoClient(new_mongo.url)
        assert snapshot(restored) == expected
        # Restored once: the new server's oplog holds each document's insert once (base 100 + 5 replayed).
        inserts = restored.local["oplog.rs"].count_documents({"op": "i", "ns": "shop.orders"})
        assert inserts == 105, inserts
        assert {k: redis.Redis(port=new_cache.port).get(k) for k in redis.Redis(port=new_cache.port).keys("*")} == (
            redis_before
        )
        assert kafka_layout(new_kafka.url) == layout
        assert {h: files(root) for h, root in site.items()} == before


def test_a_redis_that_does_not_come_up_fails_the_recovery_and_says_which(
    svc, s3_url, age_key, mongo_server, tmp_path, webhook
):
    """Redis's start command fails: dr.yml exits non-zero, the report marks Redis FAILED and the others PASS,
    and the stakeholders' webhook hears of the start and of the failure."""
    env = site_env(svc, s3_url, age_key)
    with servers(tmp_path) as start:
        mongo, cache = mongo_server("db1"), start("redis", "cache01")
        root = tmp_path / "app01"
        make_config(root, "app01")
        pymongo.MongoClient(mongo.url).shop.orders.insert_many([{"_id": i} for i in range(30)])
        redis.Redis(port=cache.port).set("k", "v")
        groups = {"caas_config": ["app01"], "caas_mongodb": ["db1"], "caas_redis": ["cache01"]}
        host_vars = {
            "app01": {"config_backup_root": str(root)},
            "db1": {"caas_backup_mongodb_uri": mongo.url},
            "cache01": {
                "redis_backup_login_port": cache.port,
                # Runs, but the server it should start never comes up.
                "redis_backup_start_command": ["/bin/sh", "-c", "exit 3"],
            },
        }
        inventory = site_inventory(tmp_path / "site.json", groups, host_vars)
        extra = {"caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"], "dr_site_report_dir": str(tmp_path / "r")}
        backup = run_playbook(PLAYBOOKS / "backup.yml", extra, env, inventory=inventory)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        shutil.rmtree(root)
        pymongo.MongoClient(mongo.url).drop_database("shop")

        hook, received, _status = webhook
        dr = run_playbook(
            PLAYBOOKS / "dr.yml", dict(extra, dr_site_notify={"webhook_url": hook}), env, inventory=inventory
        )
        assert dr.returncode != 0, dr.stdout
        report = dr_report(tmp_path / "r")
        status = {c["component"]: c["status"] for c in report["components"]}
        assert status == {"config": "PASS", "mongodb": "PASS", "redis": "FAILED"}, report["table"]
        assert report["result"] == "FAIL" and report["failed"] == ["redis@cache01"]
        [failed] = [c for c in report["components"] if c["component"] == "redis"]
        assert failed["error"].startswith("restore: ")
        assert "Recovery PASS" not in dr.stdout and "Recovery FAIL" in dr.stdout
        assert pymongo.MongoClient(mongo.url).shop.orders.count_documents({}) == 30
        assert (root / ".env").read_text() == "SECRET=app01-do-not-leak\n"
        started, ended = (post["body"]["alerts"] for post in received)
        assert started[0]["severity"] == "warning" and "disaster recovery started" in started[0]["message"]
        assert ended[0]["severity"] == "critical" and ended[0]["message"].endswith("failed: redis@cache01")


def test_roles_leave_module_defaults_and_environment_fallbacks_in_force(svc, s3_url, age_key, mongo_server, tmp_path):
    """A playbook of the user's own: storage and recipients only in module_defaults, the endpoint only in the
    environment. The roles pass nothing they were not given, so every set is written encrypted; a compression
    set in module_defaults is the one used (no role default shadows it)."""
    env = site_env(svc, "", age_key)
    env.pop("CAAS_BACKUP_STORAGE_URL")
    env.pop("CAAS_AGE_RECIPIENTS")
    mongo = mongo_server("db1")
    pymongo.MongoClient(mongo.url).shop.orders.insert_many([{"_id": i} for i in range(10)])
    root = tmp_path / "app01"
    make_config(root, "app01")
    playbook = tmp_path / "site.yml"
    playbook.write_text(
        json.dumps(
            [
                {
                    "name": "Back up with the roles",
                    "hosts": "all",
                    "gather_facts": False,
                    "module_defaults": {
                        "group/caas.backup.backup": {
                            "storage_url": s3_url,
                            "encryption_recipients": [age_key["recipient"]],
                            "compression": "gzip",
                        }
                    },
                    "tasks": [
                        {
                            "ansible.builtin.include_role": {"name": "caas.backup.config_backup"},
                            "vars": {"config_backup_root": str(root)},
                        },
                        {
                            "ansible.builtin.include_role": {"name": "caas.backup.mongodb_backup"},
                            "vars": {"mongodb_backup_uri": mongo.url},
                        },
                    ],
                }
            ]
        )
    )
    ran = run_playbook(playbook, {}, env, groups=["caas_config"])
    assert ran.returncode == 0, ran.stdout + ran.stderr
    sets = list_sets(s3_storage(svc, s3_url))
    assert sorted(s.kind for s in sets) == ["config", "mongo-full"]
    for bset in sets:
        [data] = bset.manifest["objects"]
        assert data["name"].endswith(".gz.age") and data["encryption"]["recipients"], data
