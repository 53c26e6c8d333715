"""Fault injection (issue 11): backups killed with SIGKILL, and stored objects damaged before a restore.

Everything is seeded (``random.Random``) and bounded: a few kills per backup kind, three damages per stored
object variant. No assertion is about time.

Kill -9: every backup kind is run as Ansible runs a module (tests/support/faults.py ``start_module``), once
to completion (the good set), then, after its source has changed, again and again, each run killed at a
seeded point. On S3 the point is a number of request bytes: a proxy between the module and moto forwards
exactly that many and holds the rest until the module is dead (a part of an upload, a manifest PUT cut in
the middle). On ``file://`` it is a number of bytes written to the data object's ``.partial-`` file. Kinds
on ``file://``: config, mongo-full, redis-rdb (BGSAVE), redis-aof; on S3: config, mongo-oplog, redis-rdb
(replication fetch), kafka-meta. After each kill no set is listed complete unless every object of it
checks against its manifest (a run killed after its manifest landed is a complete backup), and ``latest``
is the newest complete set; at the end backup_info reports that set, and a restore of the latest set gives
back exactly its data.

Damage: every object type (configuration tar, mongodump archive, oplog slice, RDB, AOF tar, Kafka export),
in two variants each (plain/zstd/gzip, with and without age, on ``file://`` and S3), gets seeded bit flips
and truncations of its stored object. The matching restore must fail naming the object and the sha256 or
size mismatch, with the target (files, documents, keys, topics and groups) exactly as before; backup_verify
must report the set failed (checked on one bit flip and one truncation per object type). Manifests are
damaged by tests/integration/test_manifest_faults.py.
"""

import json
import random
import time

import pymongo
import pytest
import services
from bson import Binary
from faults import HoldingProxy, flip_bits, partial_size_trigger, result_of, run_and_kill, start_module, truncate
from harness import module_env, run_module, s3_storage
from test_kafka import admin, committed, consume, create, layout, produce
from test_mongo import raw_docs
from test_pitr import snapshot as mongo_state
from test_playbooks import snapshot as file_state
from test_redis import Instance, contents

from ansible_collections.caas.backup.plugins.module_utils.catalog import latest, list_sets, verify_object
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

SEED = 11
KILLS = 3  # per backup kind and storage
DAMAGES = 3  # per stored object variant (two variants per object type)


# ---------------------------------------------------------------- kill -9


class Store:
    """The storage a kill series writes to, and how its kill points are chosen.

    ``file``: kill once the data object's ``.partial-`` file holds a seeded number of bytes (of the good set's
    size). ``s3``: the module talks to moto through a :class:`HoldingProxy`; kill once a seeded number of
    request bytes (of what the good run sent) went through.
    """

    def __init__(self, how, svc, tmp_path, s3_url):
        self.how = how
        if how == "s3":
            endpoint = svc["CAAS_S3_ENDPOINT"].rsplit(":", 1)
            self.proxy = HoldingProxy((endpoint[0].split("//")[1], int(endpoint[1])))
            self.url = s3_url
            self.storage = s3_storage(svc, s3_url)  # the test's own view goes straight to moto
            self.env = module_env(svc, CAAS_S3_ENDPOINT=self.proxy.url)  # the killed module's, via the proxy
            self.direct_env = module_env(svc)  # for the runs that check the outcome
        else:
            self.proxy = None
            self.root = tmp_path / "store"
            self.root.mkdir()
            self.url = f"file://{self.root}"
            self.storage = open_storage(self.url)
            self.env = self.direct_env = module_env(svc)
        self.scale = 0

    def close(self):
        if self.proxy:
            self.proxy.close()

    def good_run(self, module, args, kind, source):
        """Run the backup to completion; its size (request bytes sent, or bytes stored) scales the kill points."""
        if self.proxy:
            self.proxy.disarm()
        result = run_module(module, args, self.env)
        assert result["rc"] == 0, result
        if self.proxy:
            self.scale = self.proxy.sent
        else:
            self.scale = next(s for s in list_sets(self.storage, kind, source) if s.complete).size
        return result

    def attempt(self, rng, module, args, tail=False):
        """Start the backup and SIGKILL it at a seeded point: True if killed, False if it finished first.

        With ``tail`` the point lies near the end: on S3 within the last 2 KiB a run sends (its manifest PUT),
        on ``file://`` in the last tenth of the data object.
        """
        if self.proxy:
            limit = self.scale - rng.randrange(1, 2048) if tail else rng.randrange(1, self.scale)
            self.proxy.arm(max(1, limit))
            trigger = self.proxy.tripped.is_set
        else:
            low = self.scale * 9 // 10 if tail else 0
            trigger = partial_size_trigger(self.root, rng.randrange(low, self.scale))
        proc = start_module(module, args, self.env)
        try:
            killed = run_and_kill(proc, trigger)
        finally:
            if self.proxy:
                self.proxy.disarm()
        if not killed:
            finished = result_of(proc)
            assert finished["rc"] == 0, finished
        return killed


@pytest.fixture(params=["file", "s3"])
def store(request, svc, tmp_path, s3_url):
    """The storage of one kill series (file:// watched by bytes written, or S3 behind a holding proxy)."""
    where = Store(request.param, svc, tmp_path, s3_url)
    yield where
    where.close()


def settle(store, kind, source, good):
    """After a kill: a set listed complete is whole (every object matches its manifest), latest is the newest.

    ``good`` (ids of the complete sets, oldest first) gains a set the killed run managed to commit.
    """
    sets = list_sets(store.storage, kind, source)
    for bset in sets:
        if bset.complete and bset.backup_id not in good:
            assert bset.manifest["objects"], f"{bset.prefix} is listed complete but has no object"
            for record in bset.manifest["objects"]:
                verify_object(store.storage, bset, record)  # raises if a committed set is partial
            good.append(bset.backup_id)
    assert [s.backup_id for s in sets if s.complete] == good
    assert all(s.error is None for s in sets if not s.complete), [s.summary() for s in sets]
    assert latest(store.storage, kind, source).backup_id == good[-1]


def kill_series(store, rng, module, args, kind, source, good):
    """KILLS runs of the backup, each killed at a seeded point (the last near its end), the catalog checked after
    each; returns the outcomes (True: killed)."""
    outcomes = []
    for i in range(KILLS):
        outcomes.append(store.attempt(rng, module, args, tail=i == KILLS - 1))
        settle(store, kind, source, good)
    assert any(outcomes), "at least one run must have been killed before it finished"
    return outcomes


def expected(states, good):
    """What a restore of the latest set must give: the first state, or the changed one if a killed run
    committed its set (then its set is the latest: see :func:`settle`)."""
    return states[0] if len(good) == 1 else states[1]


def assert_info_reports(store, kind, source, backup_id):
    """backup_info names ``backup_id`` as the newest set of the kind and source, and counts the killed runs'
    leftovers as incomplete sets, exactly as the catalog lists them."""
    info = run_module("backup_info", {"storage_url": store.url}, store.direct_env)
    assert info["rc"] == 0, info
    [entry] = [e for e in info["latest"] if (e["kind"], e["source"]) == (kind, source)]
    assert entry["backup_id"] == backup_id, info["latest"]
    assert entry["incomplete"] == sum(not s.complete for s in list_sets(store.storage, kind, source)), entry


def write_files(root, rng, count=120, size=32 * 1024):
    root.mkdir(parents=True, exist_ok=True)
    for i in range(count):
        (root / f"f{i:03d}.bin").write_bytes(rng.randbytes(size))


def test_kill_config_backup(store, age_key, tmp_path):
    """config_backup killed KILLS times (~4 MiB of files on file://; on S3 ~10 MiB, so that the object is a
    multipart upload of two parts that the kill leaves unfinished); a restore of the latest set gives the
    first tree."""
    rng = random.Random(SEED)
    site = tmp_path / "site"
    count = 320 if store.how == "s3" else 120
    write_files(site / "data", rng, count)
    trees = [file_state(site)]
    args = dict(storage_url=store.url, root=str(site), paths=["data"], source_name="killed")
    if store.how == "s3":
        args.update(compression="gzip", encryption_recipients=[age_key["recipient"]])
    good = [store.good_run("config_backup", args, "config", "killed")["backup_id"]]
    write_files(site / "data", rng, count)  # what the killed runs would have stored
    trees.append(file_state(site))
    kill_series(store, rng, "config_backup", args, "config", "killed", good)
    assert_info_reports(store, "config", "killed", good[-1])
    dest = tmp_path / "restored"
    restored = run_module(
        "config_restore",
        dict(storage_url=store.url, dest=str(dest), source_name="killed", encryption_identity_file=age_key["file"]),
        store.direct_env,
    )
    assert restored["rc"] == 0 and restored["backup_id"] == good[-1], restored
    assert file_state(dest) == expected(trees, good)


@pytest.fixture(scope="module")
def mongo_pair(tmp_path_factory):
    """A source and a target SecantusDB shared by this file's mongo_dump tests (each uses databases of its own)."""
    root = tmp_path_factory.mktemp("faults-mongo")
    pair = [services.start_mongo(root / "source")]
    pair.append(services.start_mongo(root / "target"))
    yield pair
    services.stop_pids([(h.pid, h.started) for h in pair])


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_kill_mongo_dump(store, mongo_pair):
    """mongo_dump (file://) of ~2 MiB of documents killed KILLS times; a restore of the latest set gives the
    first data."""
    rng = random.Random(SEED)
    source, target = mongo_pair
    db = f"kill_{store.how}"
    docs = pymongo.MongoClient(source.url)[db].docs
    docs.insert_many([{"_id": i, "blob": Binary(rng.randbytes(1024))} for i in range(2000)])
    states = [raw_docs(docs)]
    args = dict(storage_url=store.url, uri=source.url, source_name="killed", ns_include=[f"{db}.*"])
    good = [store.good_run("mongo_dump", args, "mongo-full", "killed")["backup_id"]]
    docs.update_many({}, {"$set": {"changed": True}})
    states.append(raw_docs(docs))
    kill_series(store, rng, "mongo_dump", args, "mongo-full", "killed", good)
    assert_info_reports(store, "mongo-full", "killed", good[-1])
    restored = run_module(
        "mongo_restore",
        dict(storage_url=store.url, uri=target.url, source_name="killed", drop=True),
        store.direct_env,
    )
    assert restored["rc"] == 0 and restored["backup_id"] == good[-1], restored
    assert raw_docs(pymongo.MongoClient(target.url)[db].docs) == expected(states, good)


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_kill_mongo_oplog_capture(store, mongo_server, tmp_path):
    """mongo_oplog_capture (S3) of ~2 MiB of oplog killed KILLS times: the catalog keeps the good slice, a restore to
    its end gives the data as it was then, and the next capture continues from the good slice (no gap)."""
    rng = random.Random(SEED)
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.kill.docs.insert_many([{"_id": i, "n": i} for i in range(100)])
    base = dict(storage_url=store.url, uri=source.url, source_name="killed")
    dumped = run_module("mongo_dump", base, store.direct_env)
    capture = dict(base, lock_dir=str(tmp_path))
    assert dumped["rc"] == 0, dumped
    client.kill.docs.update_many({"n": {"$lt": 50}}, {"$set": {"half": True}})
    client.kill.a.insert_many([{"_id": i, "blob": Binary(rng.randbytes(1024))} for i in range(2000)])
    states = [mongo_state(client)]
    first = store.good_run("mongo_oplog_capture", capture, "mongo-oplog", "killed")
    good = [first["backup_id"]]
    client.kill.b.insert_many([{"_id": i, "blob": Binary(rng.randbytes(1024))} for i in range(2000)])
    states.append(mongo_state(client))
    kill_series(store, rng, "mongo_oplog_capture", capture, "mongo-oplog", "killed", good)
    assert_info_reports(store, "mongo-oplog", "killed", good[-1])
    end = latest(store.storage, "mongo-oplog", "killed").facts["last_ts"]
    assert len(good) > 1 or end == first["last_ts"]
    target = mongo_server("target")
    restored = run_module(
        "mongo_oplog_restore",
        dict(base, uri=target.url, target_time={"t": end["t"], "i": end["i"] + 1}),
        store.direct_env,
    )
    assert restored["rc"] == 0, restored
    assert mongo_state(pymongo.MongoClient(target.url)) == expected(states, good)
    after = run_module("mongo_oplog_capture", capture, store.direct_env)
    assert after["rc"] == 0 and after["from_ts"] == end and not after["chain_broken"], after


@pytest.fixture()
def redis_instances(tmp_path):
    """redis-server instances of one test (test_redis.Instance: the restore may replace the process)."""
    started = []

    def start(name, **conf):
        started.append(Instance(tmp_path, name, **conf))
        return started[-1]

    yield start
    for inst in started:
        inst.stop()


def fill_redis(client, rng, keys=1000, size=2048):
    """~2 MiB of string keys (hex, so that decode_responses reads them) in databases 0 and 3."""
    pipe = client.pipeline(transaction=False)
    for i in range(keys):
        pipe.set(f"k{i}", rng.randbytes(size // 2).hex())
    pipe.execute()
    client.select(3)
    client.set("in-db3", rng.randbytes(8).hex())
    client.select(0)


def redis_restore(store, inst, **args):
    start = services.redis_start_command(inst.handle)
    return run_module(
        "redis_restore",
        dict(inst.args(), start_command=start, storage_url=store.url, **args),
        store.direct_env,
    )


def test_kill_redis_snapshot(store, redis_instances):
    """redis_snapshot (BGSAVE on file://, replication fetch on S3) killed KILLS times; Redis keeps serving its
    data, and a restore of the latest set gives back the first data."""
    rng = random.Random(SEED)
    inst = redis_instances("source")
    client = inst.client()
    fill_redis(client, rng)
    states = [contents(client)]
    method = "bgsave" if store.how == "file" else "replication"
    args = inst.args(storage_url=store.url, source_name="killed", method=method)
    good = [store.good_run("redis_snapshot", args, "redis-rdb", "killed")["backup_id"]]
    client.flushall()
    fill_redis(client, rng)
    states.append(contents(client))
    kill_series(store, rng, "redis_snapshot", args, "redis-rdb", "killed", good)
    assert contents(inst.client()) == states[1], "a killed snapshot must leave Redis and its data alone"
    assert_info_reports(store, "redis-rdb", "killed", good[-1])
    restored = redis_restore(store, inst, source_name="killed")
    assert restored["rc"] == 0 and restored["backup_id"] == good[-1], restored
    assert contents(inst.client()) == expected(states, good)


@pytest.mark.parametrize("store", ["file"], indirect=True)
def test_kill_redis_aof_snapshot(store, redis_instances):
    """redis_snapshot aof: true (file://) killed KILLS times while it copies, with AOF rewrites running meanwhile:
    the catalog keeps the good set, a restore of it gives the first data, and the server's settings are what
    they were (the copy changes none: a killed run cannot leave, say, automatic rewrites switched off)."""
    rng = random.Random(SEED)
    inst = redis_instances("source")
    client = inst.client()
    fill_redis(client, rng)
    client.bgrewriteaof()
    wait_for(lambda: not int(client.info("persistence")["aof_rewrite_in_progress"]))
    client.set("in-increment", "after the rewrite")
    states = [contents(client)]
    args = inst.args(storage_url=store.url, source_name="killed", aof=True)
    settings = client.config_get("*aof*")
    good = [store.good_run("redis_snapshot", args, "redis-aof", "killed")["backup_id"]]
    for i in range(200):
        client.set(f"k{i}", "changed")
    states.append(contents(client))
    outcomes = []
    for i in range(KILLS):
        if i % 2:
            client.bgrewriteaof()  # a rewrite replaces the files the copy is reading
        outcomes.append(store.attempt(rng, "redis_snapshot", args))
        settle(store, "redis-aof", "killed", good)
        assert client.config_get("*aof*") == settings
    assert any(outcomes)
    assert_info_reports(store, "redis-aof", "killed", good[-1])
    restored = redis_restore(store, inst, source_name="killed", mode="aof")
    assert restored["rc"] == 0 and restored["backup_id"] == good[-1], restored
    assert contents(inst.client()) == expected(states, good)


def wait_for(condition, timeout=60.0):
    """Poll ``condition`` (a failsafe deadline, not a timing assertion)."""
    deadline = time.monotonic() + timeout
    while not condition():
        assert time.monotonic() < deadline, "condition not reached"
        time.sleep(0.05)


@pytest.mark.parametrize("store", ["s3"], indirect=True)
def test_kill_kafka_topic_export(store, broker):
    """kafka_topic_export (S3) of 30 topics killed KILLS times; a restore of the latest set onto a fresh broker
    gives the first topics."""
    rng = random.Random(SEED)
    source = broker()
    create(source.url, **{f"t{i:02d}": 1 + i % 3 for i in range(30)})
    layouts = [layout(source.url)]
    args = dict(storage_url=store.url, bootstrap_servers=[source.url], source_name="killed")
    good = [store.good_run("kafka_topic_export", args, "kafka-meta", "killed")["backup_id"]]
    create(source.url, **{f"new{i}": 1 for i in range(5)})
    layouts.append(layout(source.url))
    kill_series(store, rng, "kafka_topic_export", args, "kafka-meta", "killed", good)
    assert_info_reports(store, "kafka-meta", "killed", good[-1])
    target = broker()
    restored = run_module(
        "kafka_topic_restore",
        dict(storage_url=store.url, bootstrap_servers=[target.url], source_name="killed"),
        store.direct_env,
    )
    assert restored["rc"] == 0 and restored["backup_id"] == good[-1], restored
    assert layout(target.url) == expected(layouts, good)


# ---------------------------------------------------------------- damaged objects


def refuse_every_damage(rng, env, bset, stem, restore, state, variant, identity=None):
    """Damage ``stem`` of ``bset`` DAMAGES times (bit flips and truncations, seeded), putting it back after each.

    Each time the restore (``(module, args)``) must fail naming the object and the mismatch, and ``state()``
    of the target must not change. backup_verify of the set runs on the first damage of each variant (a bit
    flip for variant 0, a truncation for variant 1: both of its failure paths for every object type, at half
    the module runs) and must report the set failed.
    """
    url = restore[1]["storage_url"]
    storage = s3_storage(env, url) if url.startswith("s3://") else open_storage(url)
    key = f"{bset.prefix}/{bset.record(stem)['name']}"
    original = storage.get_bytes(key)
    before = state()
    verify = dict(storage_url=url, kinds=[bset.kind], source_name=bset.source, backup_id=bset.backup_id)
    restore_args = dict(restore[1])
    if identity:
        verify["encryption_identity_file"] = restore_args["encryption_identity_file"] = identity
    for i in range(DAMAGES):
        if (i + variant) % 2:
            bad, how = truncate(original, rng)
            cause, words = "but its manifest says", "truncated or replaced"
        else:
            bad, how = flip_bits(original, rng, rng.randint(1, 3))
            cause, words = "has sha256", "corrupted"
        storage.put_bytes(key, bad)
        try:
            failed = run_module(restore[0], restore_args, env)
            assert failed["rc"] == 1, f"{key} {how}: the restore did not fail: {failed}"
            message = failed["msg"]
            assert message.startswith("Failed to ") and key in message, f"{how}: {message}"
            assert cause in message and words in message, f"{how}: {message}"
            assert state() == before, f"{key} {how}: the target changed before the damage was found"
            if i:
                continue
            checked = run_module("backup_verify", verify, env)
            assert checked["rc"] == 1 and checked["failed"] == 1, f"{how}: {checked}"
            [report] = checked["reports"]
            assert not report["ok"] and report["backup_id"] == bset.backup_id
            assert key in checked["msg"] and cause in checked["msg"], f"{how}: {checked['msg']}"
        finally:
            storage.put_bytes(key, original)


def variants(svc, file_url, s3_url, settings):
    """(variant number, storage URL, its Storage, settings) for file:// and S3, each with its own settings."""
    return [
        (0, file_url, open_storage(file_url), settings[0]),
        (1, s3_url, s3_storage(svc, s3_url), settings[1]),
    ]


def only_set(storage, kind, source):
    [bset] = [s for s in list_sets(storage, kind, source) if s.complete]
    return bset


def test_damaged_config_archive_is_refused(svc, file_url, s3_url, age_key, tmp_path):
    """config tar: zstd on file://, gzip + age on S3. config_restore into a directory holding other versions of
    the same files must fail and leave every file (bytes, mode, mtime) as it was."""
    rng = random.Random(SEED)
    env = module_env(svc)
    site = tmp_path / "site"
    write_files(site / "data", rng, count=20, size=4096)
    dest = tmp_path / "dest"
    write_files(dest / "data", rng, count=25, size=4096)
    settings = [dict(compression="zstd"), dict(compression="gzip", encryption_recipients=[age_key["recipient"]])]
    for variant, url, storage, more in variants(svc, file_url, s3_url, settings):
        made = run_module(
            "config_backup", dict(storage_url=url, root=str(site), paths=["data"], source_name="damaged", **more), env
        )
        assert made["rc"] == 0, made
        refuse_every_damage(
            rng,
            env,
            only_set(storage, "config", "damaged"),
            "config.tar",
            ("config_restore", dict(storage_url=url, dest=str(dest), source_name="damaged")),
            lambda: file_state(dest),
            variant,
            age_key["file"] if variant else None,
        )


def user_data(url):
    """Every document (exact BSON) of every user collection of a server."""
    client = pymongo.MongoClient(url)
    state = {}
    for db in sorted(set(client.list_database_names()) - {"admin", "config", "local"}):
        for name in sorted(client[db].list_collection_names()):
            state[f"{db}.{name}"] = raw_docs(client[db][name])
    return state


def mongo_target(url):
    """Other documents in the backed-up namespace (a restore with drop would replace them), and more."""
    client = pymongo.MongoClient(url)
    client.damaged.docs.insert_many([{"_id": i, "precious": True} for i in range(50)])
    client.keep.me.insert_one({"_id": 1})


def test_damaged_mongodump_archive_is_refused(svc, file_url, s3_url, age_key, mongo_pair):
    """mongodump archive: uncompressed on file://, zstd + age on S3. mongo_restore with drop must fail and leave
    every document of the target as it was."""
    rng = random.Random(SEED)
    env = module_env(svc)
    source, target = mongo_pair
    pymongo.MongoClient(source.url).damaged.docs.insert_many([{"_id": i, "v": f"value-{i}"} for i in range(500)])
    mongo_target(target.url)
    settings = [dict(compression="none"), dict(compression="zstd", encryption_recipients=[age_key["recipient"]])]
    for variant, url, storage, more in variants(svc, file_url, s3_url, settings):
        args = dict(storage_url=url, uri=source.url, source_name="damaged", ns_include=["damaged.*"], **more)
        made = run_module("mongo_dump", args, env)
        assert made["rc"] == 0, made
        refuse_every_damage(
            rng,
            env,
            only_set(storage, "mongo-full", "damaged"),
            "dump.archive",
            ("mongo_restore", dict(storage_url=url, uri=target.url, source_name="damaged", drop=True)),
            lambda: user_data(target.url),
            variant,
            age_key["file"] if variant else None,
        )


def test_damaged_oplog_slice_is_refused(svc, file_url, s3_url, age_key, mongo_server, tmp_path):
    """oplog slice: gzip on file://, zstd + age on S3 (the base dump intact). mongo_oplog_restore to the slice's
    end must fail and leave every document of the target as it was."""
    rng = random.Random(SEED)
    env = module_env(svc)
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.damaged.docs.insert_many([{"_id": i} for i in range(100)])
    target = mongo_server("target")
    mongo_target(target.url)
    settings = [dict(compression="gzip"), dict(compression="zstd", encryption_recipients=[age_key["recipient"]])]
    for variant, url, storage, more in variants(svc, file_url, s3_url, settings):
        base = dict(storage_url=url, uri=source.url, source_name="damaged", **more)
        assert run_module("mongo_dump", base, env)["rc"] == 0
        client.damaged.docs.update_many({}, {"$inc": {"v": 1}})
        client.damaged.more.insert_many([{"_id": i + 1000 * variant} for i in range(200)])
        captured = run_module("mongo_oplog_capture", dict(base, lock_dir=str(tmp_path)), env)
        assert captured["rc"] == 0 and captured["ops"] > 200, captured
        end = captured["last_ts"]
        args = dict(
            storage_url=url, uri=target.url, source_name="damaged", target_time={"t": end["t"], "i": end["i"] + 1}
        )
        refuse_every_damage(
            rng,
            env,
            only_set(storage, "mongo-oplog", "damaged"),
            "oplog.bson",
            ("mongo_oplog_restore", args),
            lambda: user_data(target.url),
            variant,
            age_key["file"] if variant else None,
        )


@pytest.mark.parametrize("aof", [False, True], ids=["rdb", "aof"])
def test_damaged_redis_snapshot_is_refused(svc, file_url, s3_url, age_key, redis_instances, aof):
    """RDB (zstd + age on file://, plain on S3) and AOF tar (gzip on file://, zstd + age on S3). redis_restore
    must fail with the same Redis process serving the same keys."""
    rng = random.Random(SEED)
    env = module_env(svc)
    source = redis_instances("source")
    fill_redis(source.client(), rng, keys=300, size=256)
    if aof:
        source.client().bgrewriteaof()
        wait_for(lambda: not int(source.client().info("persistence")["aof_rewrite_in_progress"]))
    target = redis_instances("target")
    target.client().set("precious", "must stay")
    target.client().set("k1", "other")
    encrypt = dict(encryption_recipients=[age_key["recipient"]])
    if aof:
        settings = [dict(compression="gzip"), dict(compression="zstd", **encrypt)]
        kind, stem = "redis-aof", "appendonlydir.tar"
    else:
        settings = [dict(compression="zstd", **encrypt), dict(compression="none")]
        kind, stem = "redis-rdb", "dump.rdb"
    for variant, url, storage, more in variants(svc, file_url, s3_url, settings):
        made = run_module("redis_snapshot", source.args(storage_url=url, source_name="damaged", aof=aof, **more), env)
        assert made["rc"] == 0, made
        args = target.args(
            storage_url=url,
            source_name="damaged",
            mode="aof" if aof else "rdb",
            start_command=services.redis_start_command(target.handle),
        )
        refuse_every_damage(
            rng,
            env,
            only_set(storage, kind, "damaged"),
            stem,
            ("redis_restore", args),
            lambda: (target.pid(), contents(target.client())),
            variant,
            age_key["file"] if "encryption_recipients" in more else None,
        )


def test_damaged_kafka_export_is_refused(svc, file_url, s3_url, age_key, broker):
    """Kafka export JSON: gzip + age on file://, zstd on S3, holding topics and a group at offset 2.
    kafka_topic_restore must fail with the target's topics, groups and offsets as they were."""
    rng = random.Random(SEED)
    env = module_env(svc)
    source, target = broker(), broker()
    create(source.url, orders=3, events=1)
    produce(source.url, "events", [f"e{i}" for i in range(5)])
    consume(source.url, "billing", "events", 2)
    create(target.url, keep=2)

    def state():
        with admin(target.url) as client:
            groups = sorted(json.dumps(g, sort_keys=True, default=str) for g in client.list_groups())
        return layout(target.url), groups, committed(target.url, "billing")

    settings = [dict(compression="gzip", encryption_recipients=[age_key["recipient"]]), dict(compression="zstd")]
    for variant, url, storage, more in variants(svc, file_url, s3_url, settings):
        args = dict(storage_url=url, bootstrap_servers=[source.url], source_name="damaged", **more)
        made = run_module("kafka_topic_export", args, env)
        assert made["rc"] == 0 and made["groups"] == ["billing"], made
        refuse_every_damage(
            rng,
            env,
            only_set(storage, "kafka-meta", "damaged"),
            "kafka-meta.json",
            ("kafka_topic_restore", dict(storage_url=url, bootstrap_servers=[target.url], source_name="damaged")),
            state,
            variant,
            None if variant else age_key["file"],
        )


def test_seeded_damage_is_reproducible():
    """The same seed damages the same bits: a failure here can be replayed."""
    data = bytes(range(256)) * 4
    assert flip_bits(data, random.Random(SEED), 3) == flip_bits(data, random.Random(SEED), 3)
    assert truncate(data, random.Random(SEED)) == truncate(data, random.Random(SEED))
    assert flip_bits(data, random.Random(SEED), 3)[0] != data
    assert len(truncate(data, random.Random(SEED))[0]) < len(data)
