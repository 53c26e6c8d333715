"""The erasure ledger applied by every restore, and key rotation with backup_rekey, on real servers.

SecantusDB (MongoDB) and redis-server as started by scripts/services; modules run as Ansible runs them.
SecantusDB has no ``applyOps``, so the point-in-time restore replays manually (what test_pitr checks too).
"""

import os
from pathlib import Path

import pymongo
import pytest
import services
from faults import kill, partial_size_trigger, result_of, run_and_kill, start_module
from harness import run_module
from pyrage import x25519
from test_pitr import next_ts
from test_redis import Instance

from ansible_collections.caas.backup.plugins.module_utils import erasure
from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, fetch_object, list_sets
from ansible_collections.caas.backup.plugins.module_utils.common import EncryptionError
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

USERS = [{"_id": n, "email": f"user{n}@example.com"} for n in (1, 7, 42, 99)]


def redis_contents(client):
    """Every key of databases 0 and 3."""
    seen = {}
    for db in (0, 3):
        client.select(db)
        seen.update({(db, key): client.get(key) for key in client.keys("*")})
    client.select(0)
    return seen


def test_an_erasure_recorded_after_a_backup_is_applied_by_every_restore(env, file_url, mongo_server, age_key, tmp_path):
    """Backups of MongoDB (full, then an oplog slice that touches user 42 again) and Redis; then user 42's
    erasure is recorded. The full restore, the point-in-time restore and the Redis restore bring back all
    but user 42's data, and count what they removed. A ledger the restore cannot read (a request encrypted
    to another key) fails the restore before anything is touched."""
    keys = dict(storage_url=file_url, encryption_recipients=[age_key["recipient"]])
    identity = dict(storage_url=file_url, encryption_identity_file=age_key["file"])
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.caas_auth.users.insert_many(USERS)
    client.shop.orders.insert_many([{"_id": n, "customer_id": 42 if n % 2 else 7} for n in range(10)])
    assert run_module("mongo_dump", dict(keys, uri=source.url), env)["rc"] == 0
    client.caas_auth.users.update_one({"_id": 42}, {"$set": {"email": "changed@example.com"}})
    client.shop.orders.insert_one({"_id": 100, "customer_id": 42})
    assert run_module("mongo_oplog_capture", dict(keys, uri=source.url), env)["rc"] == 0
    target_time = next_ts(client)

    redis_inst = Instance(tmp_path, "redis")
    try:
        cache = redis_inst.client()
        cache.mset({"user:42:profile": "p", "user:42:cart": "c", "user:7:profile": "q", "other": "o"})
        cache.select(3)
        cache.set("user:42:db3", "x")
        cache.select(0)
        expected = {k: v for k, v in redis_contents(cache).items() if not k[1].startswith("user:42:")}
        assert run_module("redis_snapshot", dict(keys, **redis_inst.args()), env)["rc"] == 0

        ask = dict(
            keys,
            request_id="GDPR-42",
            requested_by="dpo@example.com",
            reason="Art. 17 request, ticket GDPR-42",
            mongodb=[
                {"namespace": "caas_auth.users", "filter": {"_id": 42}},
                {"namespace": "shop.orders", "filter": {"customer_id": 42}},
            ],
            redis=["user:42:*"],
        )
        planned = run_module("backup_erasure", ask, env, check_mode=True)
        assert planned["rc"] == 0 and planned["changed"], planned
        assert not erasure.entries(open_storage(file_url))
        recorded = run_module("backup_erasure", ask, env)
        assert recorded["rc"] == 0 and recorded["changed"] and recorded["key"].endswith(".json.age"), recorded
        assert run_module("backup_erasure", ask, env)["changed"] is False  # same request_id: recorded once
        listed = run_module("backup_erasure", dict(identity, list_requests=True), env)
        [entry] = listed["requests"]
        assert entry["requested_by"] == "dpo@example.com"
        assert entry["mongodb_namespaces"] == ["caas_auth.users", "shop.orders"]
        assert "customer_id" not in str(listed) and "user:42" not in str(listed)  # filters identify the person

        full_target = mongo_server("full")
        done = run_module("mongo_restore", dict(identity, uri=full_target.url), env)
        assert done["rc"] == 0, done
        restored = pymongo.MongoClient(full_target.url)
        assert sorted(d["_id"] for d in restored.caas_auth.users.find()) == [1, 7, 99]
        assert restored.shop.orders.count_documents({"customer_id": 42}) == 0
        assert restored.shop.orders.count_documents({}) == 5
        assert done["erasure"]["requests"] == 1 and done["erasure"]["removed"] == 6, done["erasure"]
        counts = {c["target"]: (c["count"], c.get("erased")) for c in done["collections"]}
        assert counts == {"caas_auth.users": (3, 1), "shop.orders": (5, 5)}

        pitr_target = mongo_server("pitr")
        done = run_module("mongo_oplog_restore", dict(identity, uri=pitr_target.url, target_time=target_time), env)
        assert done["rc"] == 0, done
        restored = pymongo.MongoClient(pitr_target.url)
        assert sorted(d["_id"] for d in restored.caas_auth.users.find()) == [1, 7, 99]
        assert restored.shop.orders.count_documents({"customer_id": 42}) == 0
        assert restored.shop.orders.count_documents({}) == 5
        assert done["erasure"]["removed"] == 7, done["erasure"]  # the slice's order 100 too

        cache.flushall()
        cache.set("after-backup", "goes away")
        start = services.redis_start_command(redis_inst.handle)
        restore = dict(identity, **redis_inst.args(), start_command=start)
        done = run_module("redis_restore", restore, env)
        assert done["rc"] == 0, done
        cache = redis_inst.client()
        assert redis_contents(cache) == expected
        assert done["erasure"]["removed"] == 3 and done["keys"] == len(expected), done
        assert sorted((d["target"], d["removed"]) for d in done["erasure"]["details"]) == [("db0", 2), ("db3", 1)]

        # A request the restore side cannot read: encrypted to another key.
        stranger = x25519.Identity.generate()
        other = dict(ask, request_id="GDPR-43", encryption_recipients=[str(stranger.to_public())])
        assert run_module("backup_erasure", other, env)["rc"] == 0
        cache.set("marker", "untouched")
        before = redis_contents(cache)
        failed = run_module("redis_restore", restore, env)
        assert failed["rc"] == 1 and "erasure ledger cannot be read" in failed["msg"], failed
        assert failed["msg"].startswith("Failed to restore Redis: ")
        assert redis_contents(redis_inst.client()) == before
        planned = run_module("mongo_restore", dict(identity, uri=full_target.url, check_target=False), env, True)
        assert planned["rc"] == 1 and "erasure ledger cannot be read" in planned["msg"], planned
    finally:
        redis_inst.stop()


def opens_with(storage, bset, identity) -> bool:
    """Whether ``identity`` opens every object of the set to its end."""
    try:
        for record in bset.manifest["objects"]:
            with fetch_object(storage, bset, record["stem"]) as copy, copy.reader([str(identity)]) as reader:
                while reader.read(1 << 20):
                    pass
    except EncryptionError:
        return False
    return True


def ledger_opens_with(storage, identity) -> bool:
    """Whether ``identity`` reads the whole erasure ledger."""
    try:
        return len(erasure.read_ledger(storage, [str(identity)])) == 1
    except EncryptionError:
        return False


def test_a_rekey_killed_midway_leaves_sets_readable_and_a_rerun_rotates_every_key(env, file_url, age_key, tmp_path):
    """Sets (one made by config_backup, two large ones) and an erasure request, all to the old key. The plan
    writes nothing; a re-key SIGKILLed while it writes a new object leaves every set readable with the old or
    the new identity; run again it finishes; then the old identity opens nothing (config_restore refuses),
    the new one restores. The in-process unit tests kill it at every step; this is the real process."""
    new = x25519.Identity.generate()
    new_file = tmp_path / "new.txt"
    new_file.write_text(f"{new}\n")
    root = tmp_path / "conf"
    root.mkdir()
    (root / "app.env").write_text("A=1\n")
    old = dict(storage_url=file_url, encryption_recipients=[age_key["recipient"]])
    assert run_module("config_backup", dict(old, root=str(root), paths=["app.env"]), env)["rc"] == 0
    storage = open_storage(file_url)
    for _copy in range(2):
        writer = SetWriter(storage, "redis-rdb", "big", WriteOptions("none", recipients=(age_key["recipient"],)))
        with writer.object("dump.rdb") as out:
            for _mib in range(12):
                out.write(os.urandom(1 << 20))
        writer.commit({})
    asked = dict(old, requested_by="dpo", reason="ticket 7", redis=["user:7:*"])
    assert run_module("backup_erasure", asked, env)["rc"] == 0
    before = sorted(i.key for i in storage.list())

    args = dict(
        storage_url=file_url, encryption_recipients=[str(new.to_public())], encryption_identity_file=age_key["file"]
    )
    plan = run_module("backup_rekey", args, env, check_mode=True)
    assert plan["rc"] == 0 and plan["changed"], plan
    assert sorted(s["kind"] for s in plan["rekeyed"]) == ["config", "redis-rdb", "redis-rdb"]
    assert plan["ledger"] == {"rekeyed": 1, "already": 0} and plan["skipped"] == []
    assert sorted(i.key for i in storage.list()) == before

    proc = start_module("backup_rekey", args, env)
    try:
        killed = run_and_kill(proc, partial_size_trigger(Path(storage.root), 4 << 20))
    finally:
        kill(proc)
    assert killed, result_of(proc)
    for bset in list_sets(storage):
        assert bset.complete, bset.prefix
        assert opens_with(storage, bset, age_key["identity"]) or opens_with(storage, bset, new), bset.prefix
    assert ledger_opens_with(storage, age_key["identity"]) or ledger_opens_with(storage, new)

    done = run_module("backup_rekey", args, env)
    assert done["rc"] == 0, done
    assert done["ledger"]["rekeyed"] + done["ledger"]["already"] == 1
    for bset in list_sets(storage):
        assert opens_with(storage, bset, new) and not opens_with(storage, bset, age_key["identity"]), bset.prefix
        listed = {f"{bset.prefix}/{r['name']}" for r in bset.manifest["objects"]} | {f"{bset.prefix}/manifest.json"}
        assert set(bset.keys) == listed, "what the killed run wrote is removed, the old objects are gone"
    assert ledger_opens_with(storage, new) and not ledger_opens_with(storage, age_key["identity"])
    refused = run_module(
        "config_restore",
        dict(storage_url=file_url, encryption_identity_file=age_key["file"], dest=str(tmp_path / "old")),
        env,
    )
    assert refused["rc"] == 1 and "none of the given identities" in refused["msg"], refused
    restored = run_module(
        "config_restore",
        dict(storage_url=file_url, encryption_identity_file=str(new_file), dest=str(tmp_path / "new")),
        env,
    )
    assert restored["rc"] == 0 and (tmp_path / "new" / "app.env").read_text() == "A=1\n", restored
    assert run_module("backup_rekey", args, env)["changed"] is False


@pytest.mark.parametrize("appendonly", ["yes", "no"])
def test_keys_erased_by_a_redis_restore_stay_gone_after_a_restart(env, file_url, tmp_path, appendonly):
    """The erasure reaches the files Redis loads from: with AOF the rewrite after the restore, without it a
    BGSAVE. Redis stopped without saving and started again still lacks the erased keys."""
    inst = Instance(tmp_path, "redis", appendonly=appendonly)
    try:
        cache = inst.client()
        cache.mset({"user:9:a": "1", "user:9:b": "2", "keep": "3"})
        plain = dict(storage_url=file_url)
        assert run_module("redis_snapshot", dict(plain, **inst.args()), env)["rc"] == 0
        asked = dict(plain, requested_by="dpo", reason="GDPR-9", redis=[{"pattern": "user:9:*", "db": 0}])
        assert run_module("backup_erasure", asked, env)["rc"] == 0
        cache.flushall()
        start = services.redis_start_command(inst.handle)
        done = run_module("redis_restore", dict(plain, **inst.args(), start_command=start), env)
        assert done["rc"] == 0, done
        assert done["erasure"]["removed"] == 2 and done["keys"] == 1, done
        if appendonly == "no":
            assert "BGSAVE: the RDB on disk holds no erased key" in done["steps"]
        inst.client().shutdown(nosave=True)
        inst.handle = services._spawn(
            "redis", start, inst.handle.dir, inst.port, f"redis://127.0.0.1:{inst.port}/0", 30
        )
        assert sorted(inst.client().keys("*")) == ["keep"]
    finally:
        inst.stop()
