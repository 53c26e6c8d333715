"""mongo_oplog_capture and mongo_oplog_restore against SecantusDB (the MongoDB stand-in of scripts/services).

SecantusDB gaps met here (tests/support/services.py): no ``applyOps``, so every restore replays the
slices with the manual path (``replay_method`` is checked to say so); a transaction is logged as plain
ops sharing one timestamp (no ``applyOps`` entry), and implicit collection creation logs no ``create``.
The ``applyOps``-entry and split-transaction forms are covered by the unit tests. The oplog cannot be
made to roll over on demand, so a broken chain is made by a chain position older than the oplog.
"""

import json
import random
import threading
import time
from pathlib import Path

import bson
import pymongo
import pytest
from bson import Timestamp
from harness import REPO, dr_report, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, list_sets
from ansible_collections.caas.backup.plugins.module_utils.chain import capture_lock
from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import connect
from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import ts_fact
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

SYSTEM = ("admin", "config", "local")


def snapshot(client):
    """Every user database's documents (by _id) and index specs, per collection."""
    state = {}
    for db_name in sorted(set(client.list_database_names()) - set(SYSTEM)):
        db = client[db_name]
        for name in sorted(db.list_collection_names()):
            docs = {json.dumps(d["_id"], default=str): bson.encode(d) for d in db[name].find()}
            indexes = sorted(
                json.dumps({k: v for k, v in i.items() if k in ("key", "name", "unique")}, sort_keys=True, default=str)
                for i in db[name].list_indexes()
            )
            state[f"{db_name}.{name}"] = (docs, indexes)
    return state


def next_ts(client):
    """A target just after everything written so far (the target is exclusive)."""
    last = client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]
    return {"t": last.time, "i": last.inc + 1}


def test_capture_and_restore_to_a_point_in_time(env, file_url, mongo_server):
    """Full backup, two captured slices; restores to three times give exactly the state recorded then."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.shop.orders.insert_many([{"_id": i, "n": i} for i in range(50)])
    base = dict(storage_url=file_url, uri=source.url, compression="none")
    assert run_module("mongo_dump", base, env)["rc"] == 0
    nothing = run_module("mongo_oplog_capture", base, env)
    assert nothing["rc"] == 0 and nothing["changed"] is False and nothing["ops"] == 0, nothing
    states = []
    client.shop.orders.update_many({"n": {"$lt": 10}}, {"$set": {"flag": True}})
    client.shop.orders.delete_one({"_id": 3})
    states.append((next_ts(client), snapshot(client)))
    client.shop.customers.insert_one({"_id": "c1", "tags": ["a"]})
    client.shop.customers.create_index("tags", name="by_tag")
    first = run_module("mongo_oplog_capture", base, env)
    assert first["rc"] == 0 and first["changed"] and first["ops"] >= 4, first
    assert first["source"] == "secantus" and first["chain_broken"] is False
    states.append((next_ts(client), snapshot(client)))
    client.shop.customers.update_one({"_id": "c1"}, {"$push": {"tags": "b"}})
    client.admin.command("renameCollection", "shop.customers", to="shop.clients")
    client.shop.orders.create_index("n")
    states.append((next_ts(client), snapshot(client)))
    second = run_module("mongo_oplog_capture", dict(base, compression="zstd"), env)
    assert second["rc"] == 0 and second["from_ts"] == first["last_ts"], second
    slices = list_sets(open_storage(file_url), "mongo-oplog")
    assert [s.facts["first_ts"] for s in slices][1] == slices[0].facts["last_ts"]
    assert slices[0].manifest["objects"][0]["name"] == "oplog.bson"

    restore = dict(storage_url=file_url, uri=source.url)
    plan = run_module("mongo_oplog_restore", dict(restore, target_time=states[1][0]), env, check_mode=True)
    assert plan["rc"] == 0, plan
    assert [s["backup_id"] for s in plan["slices"]] == [slices[0].backup_id]
    assert plan["replay_method"] == "manual" and plan["window"]["latest"] == second["last_ts"]
    for target, expected in states:
        server = mongo_server(f"t{target['t']}-{target['i']}")
        done = run_module("mongo_oplog_restore", dict(restore, uri=server.url, target_time=target), env)
        assert done["rc"] == 0, done["msg"]
        assert done["target"].endswith(f"127.0.0.1:{server.port}")
        assert done["restored_to"]["t"] == target["t"] and done["restored_to"]["i"] == target["i"]
        assert snapshot(pymongo.MongoClient(server.url)) == expected, target


def test_a_capture_after_a_full_backup_continues_from_the_last_slice(env, file_url, mongo_server):
    """Slice, writes, full backup, capture: the capture starts at the last slice, not at the full backup's
    consistent point, so a target between the two (writes no slice held before) restores exactly."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.shop.orders.insert_many([{"_id": i, "n": i} for i in range(20)])
    base = dict(storage_url=file_url, uri=source.url, compression="none")
    assert run_module("mongo_dump", base, env)["rc"] == 0
    client.shop.orders.update_many({"n": {"$lt": 5}}, {"$set": {"early": True}})
    sliced = run_module("mongo_oplog_capture", base, env)
    assert sliced["rc"] == 0 and sliced["changed"], sliced
    client.shop.orders.delete_one({"_id": 7})
    client.shop.orders.insert_one({"_id": "between", "n": -1})
    target, expected = next_ts(client), snapshot(client)
    client.shop.orders.update_many({}, {"$inc": {"n": 100}})  # after the target, still before the full backup
    full = run_module("mongo_dump", base, env)
    assert full["rc"] == 0, full
    assert (target["t"], target["i"]) < (full["last_ts"]["t"], full["last_ts"]["i"])
    client.shop.orders.insert_one({"_id": "after"})
    captured = run_module("mongo_oplog_capture", base, env)
    assert captured["rc"] == 0 and captured["from_ts"] == sliced["last_ts"], captured
    assert captured["base_backup_id"] != full["backup_id"]  # the slice starts before the new full backup's point
    server = mongo_server("target")
    restore = dict(storage_url=file_url, uri=server.url, target_time=target)
    done = run_module("mongo_oplog_restore", restore, env)
    assert done["rc"] == 0, done["msg"]
    assert snapshot(pymongo.MongoClient(server.url)) == expected
    info = run_module("backup_info", dict(storage_url=file_url), env)
    assert info["pitr"]["secantus"]["gaps"] == [], info["pitr"]


def test_window_errors_and_iso_targets(env, file_url, mongo_server):
    """Targets outside the window fail naming it; an ISO time works; nothing is touched on failure."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.app.items.insert_one({"_id": 1})
    base = dict(storage_url=file_url, uri=source.url)
    dumped = run_module("mongo_dump", base, env)
    # An ISO time has whole seconds: the captured op must fall in a later second than the dump's
    # consistent point, or its second's {t, i: 0} would lie before the restorable window.
    time.sleep(max(0.0, dumped["last_ts"]["t"] + 1.05 - time.time()))
    client.app.items.insert_one({"_id": 2})
    captured = run_module("mongo_oplog_capture", base, env)
    assert captured["rc"] == 0 and captured["ops"] == 1
    assert captured["last_ts"]["t"] > dumped["last_ts"]["t"]
    for when, words in (
        ("2001-01-01T00:00:00Z", "before the earliest restorable point"),
        ({"t": captured["last_ts"]["t"] + 5, "i": 0}, "after the last captured op"),
        (dumped["last_ts"], "before the earliest restorable point"),
    ):
        failed = run_module("mongo_oplog_restore", dict(base, target_time=when), env)
        assert failed["rc"] == 1 and words in failed["msg"], failed
        assert dumped["last_ts"]["iso"] in failed["msg"] and captured["last_ts"]["iso"] in failed["msg"]
        assert failed["window"]["latest"] == captured["last_ts"]
    iso = run_module("mongo_oplog_restore", dict(base, target_time=captured["last_ts"]["iso"]), env, check_mode=True)
    assert iso["rc"] == 0 and iso["target_ts"] == {**captured["last_ts"], "i": 0}, iso
    verified = run_module("backup_verify", dict(storage_url=file_url, kinds=["mongo-oplog"]), env)
    assert verified["rc"] == 0 and verified["reports"][0]["ok"], verified
    assert {"check": "checksum oplog.bson", "ok": True, "ops": 1, "last_ts": captured["last_ts"]} in verified[
        "reports"
    ][0]["checks"]
    info = run_module("backup_info", dict(storage_url=file_url), env)
    assert info["pitr"]["secantus"]["earliest"] == dumped["last_ts"]["iso"], info["pitr"]
    assert info["pitr"]["secantus"]["latest"] == captured["last_ts"]["iso"]


def test_broken_chain_is_detected_and_nothing_written(env, file_url, mongo_server):
    """A last captured position older than the oplog's oldest entry (a full backup and a slice from long ago,
    as if the oplog had rolled over since): fail, chain_broken, no slice; a new full backup restarts the chain."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.app.items.insert_one({"_id": 1})
    base = dict(storage_url=file_url, uri=source.url)
    storage = open_storage(file_url)
    for kind, stem, facts in (
        ("mongo-full", "dump.archive", {"last_ts": ts_fact(Timestamp(1000, 0))}),
        (
            "mongo-oplog",
            "oplog.bson",
            {"first_ts": ts_fact(Timestamp(1000, 0)), "last_ts": ts_fact(Timestamp(1000, 1))},
        ),
    ):
        old = SetWriter(storage, kind, "secantus", WriteOptions(compression="none"))
        with old.object(stem) as out:
            out.write(bson.encode({"ts": Timestamp(1000, 1), "op": "n", "ns": "", "o": {}}))
        old.commit(facts)
    client.app.items.insert_one({"_id": 2})
    broken = run_module("mongo_oplog_capture", base, env)
    assert broken["rc"] == 1 and broken["chain_broken"] is True, broken
    assert "PITR chain broken since 1970-01-01T00:16:40Z" in broken["msg"] and "take a full backup" in broken["msg"]
    assert len(list_sets(storage, "mongo-oplog")) == 1
    assert run_module("mongo_dump", base, env)["rc"] == 0
    client.app.items.insert_one({"_id": 3})
    again = run_module("mongo_oplog_capture", base, env)
    assert again["rc"] == 0 and again["ops"] == 1 and again["base_backup_id"] != "", again


def test_second_capture_is_refused_while_one_holds_the_lock(env, file_url, mongo_server, tmp_path):
    """The lock names its holder; a dead holder's lock is free again (flock dies with its process)."""
    source = mongo_server("source")
    pymongo.MongoClient(source.url).app.items.insert_one({"_id": 1})
    assert run_module("mongo_dump", dict(storage_url=file_url, uri=source.url), env)["rc"] == 0
    base = dict(storage_url=file_url, uri=source.url, lock_dir=str(tmp_path))
    with capture_lock("oplog", "secantus", str(tmp_path)):
        held = run_module("mongo_oplog_capture", base, env)
    assert held["rc"] == 1 and "another capture of secantus holds the lock since" in held["msg"], held
    assert "(pid " in held["msg"]
    assert run_module("mongo_oplog_capture", base, env)["rc"] == 0


@pytest.mark.parametrize("damage", ["missing", "corrupted"])
def test_missing_or_corrupted_slice_fails_before_anything_is_touched(env, file_url, mongo_server, damage):
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.app.items.insert_one({"_id": 1})
    base = dict(storage_url=file_url, uri=source.url, compression="none")
    run_module("mongo_dump", base, env)
    client.app.items.insert_one({"_id": 2})
    assert run_module("mongo_oplog_capture", base, env)["rc"] == 0
    client.app.items.insert_one({"_id": 3})
    assert run_module("mongo_oplog_capture", base, env)["rc"] == 0
    target = next_ts(client)
    root = Path(file_url[len("file://") :])
    first = sorted(root.glob("mongo-oplog/secantus/*/oplog.bson"))[0]
    if damage == "missing":
        first.unlink()
    else:
        data = bytearray(first.read_bytes())
        data[len(data) // 2] ^= 0xFF
        first.write_bytes(bytes(data))
    server = mongo_server("target")
    pymongo.MongoClient(server.url).app.items.insert_one({"_id": "precious"})
    restore = dict(storage_url=file_url, uri=server.url, target_time=target)
    failed = run_module("mongo_oplog_restore", restore, env)
    assert failed["rc"] == 1 and failed["msg"].startswith("Failed to restore MongoDB to a point in time:"), failed
    assert list(pymongo.MongoClient(server.url).app.items.find()) == [{"_id": "precious"}]


def test_follow_mode_cuts_slices(env, file_url, mongo_server):
    """follow: a slice per slice_seconds while writes go on; they chain without a hole."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.app.items.insert_one({"_id": 0})
    base = dict(storage_url=file_url, uri=source.url)
    run_module("mongo_dump", base, env)
    stop = threading.Event()

    def write():
        n = 0
        while not stop.wait(0.2):
            n += 1
            client.app.items.insert_one({"_id": f"w{n}"})

    writer = threading.Thread(target=write, daemon=True)
    writer.start()
    try:
        followed = run_module("mongo_oplog_capture", dict(base, follow=True, duration=6, slice_seconds=1), env)
    finally:
        stop.set()
        writer.join()
    assert followed["rc"] == 0 and len(followed["slices"]) >= 3, followed
    chain = [(s["first_ts"], s["last_ts"]) for s in followed["slices"]]
    facts = sorted(
        (s.facts for s in list_sets(open_storage(file_url), "mongo-oplog")),
        key=lambda f: (f["last_ts"]["t"], f["last_ts"]["i"]),
    )
    assert all(a["last_ts"] == b["first_ts"] for a, b in zip(facts, facts[1:], strict=False))
    assert len(chain) == len(facts)


# ---------------------------------------------------------------- the property test


class Workload:
    """A random workload over a few collections, with the state recorded at random moments."""

    def __init__(self, client, rng):
        self.client = client
        self.db = client.prop
        self.rng = rng
        self.next_id = 0

    def coll(self):
        return self.db[self.rng.choice(["a", "b", "c"])]

    def existing_id(self, coll):
        doc = next(iter(coll.aggregate([{"$sample": {"size": 1}}])), None)
        return doc["_id"] if doc else None

    def step(self):
        rng, coll = self.rng, self.coll()
        kind = rng.choice(
            ["insert"] * 4
            + ["set", "unset", "inc", "push", "pull", "positional", "replace", "delete", "txn", "index", "dropindex"]
            + ["create", "drop"]
        )
        if kind == "insert" or (
            kind not in ("txn", "index", "dropindex", "create", "drop") and not coll.estimated_document_count()
        ):
            self.next_id += 1
            coll.insert_one(
                {
                    "_id": self.next_id,
                    "n": rng.randint(0, 9),
                    "arr": [rng.randint(0, 3) for _slot in range(3)],
                    "sub": {"x": rng.random()},
                }
            )
            return
        doc_id = self.existing_id(coll)
        if kind == "set":
            coll.update_one({"_id": doc_id}, {"$set": {"sub.y": rng.randint(0, 99), "s": "v" * rng.randint(0, 3)}})
        elif kind == "unset":
            coll.update_one({"_id": doc_id}, {"$unset": {rng.choice(["n", "sub.x", "s"]): ""}})
        elif kind == "inc":
            coll.update_one({"_id": doc_id}, {"$inc": {"n": rng.randint(1, 5)}})
        elif kind == "push":
            coll.update_one({"_id": doc_id}, {"$push": {"arr": rng.randint(0, 3)}})
        elif kind == "pull":
            coll.update_one({"_id": doc_id}, {"$pull": {"arr": rng.randint(0, 3)}})
        elif kind == "positional":
            coll.update_one(
                {"_id": doc_id, "arr": {"$exists": True, "$ne": []}}, {"$set": {"arr.0": rng.randint(10, 20)}}
            )
        elif kind == "replace":
            coll.replace_one({"_id": doc_id}, {"r": rng.randint(0, 9), "arr": [1]})
        elif kind == "delete":
            coll.delete_one({"_id": doc_id})
        elif kind == "txn":
            with self.client.start_session() as session, session.start_transaction():
                self.next_id += 1
                self.db.a.insert_one({"_id": self.next_id, "txn": True, "arr": []}, session=session)
                self.db.b.update_many({}, {"$inc": {"t": 1}}, session=session)
        elif kind == "index":
            coll.create_index([(rng.choice(["n", "r", "s"]), rng.choice([1, -1]))])
        elif kind == "dropindex":
            names = [i["name"] for i in coll.list_indexes() if i["name"] != "_id_"]
            if names:
                coll.drop_index(rng.choice(names))
        elif kind == "create":
            name = f"extra{rng.randint(0, 2)}"
            if name not in self.db.list_collection_names():
                self.db.create_collection(name)
        elif kind == "drop":
            self.db[f"extra{rng.randint(0, 2)}"].drop()


@pytest.mark.parametrize("seed", [11, 23, 47])
def test_property_random_workload_restores_exactly_to_recorded_times(file_url, mongo_server, seed):
    """A seeded random workload (inserts; $set/$unset/$inc/$push/$pull/positional updates; replacements;
    deletes; collection and index create/drop; multi-document transactions) interleaved with captures;
    the exact state recorded at random moments; a restore to each moment into an empty server must give
    identical documents and indexes."""
    rng = random.Random(seed)
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    work = Workload(client, rng)
    for _step in range(30):
        work.step()
    storage = open_storage(file_url)
    params = {"uri": source.url}
    from ansible_collections.caas.backup.plugins.module_utils.catalog import write_set
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import plan_dump, write_archive

    facts: dict = {}
    write_set(
        storage,
        "mongo-full",
        "secantus",
        WriteOptions("none"),
        [],
        "dump.archive",
        lambda out: facts.update(write_archive(client, out, plan_dump(client, [], [], False, True), 2, True)),
        facts,
    )
    recorded = []
    capture_client = connect(params)
    for _capture in range(4):
        for _step in range(rng.randint(15, 40)):
            work.step()
            if rng.random() < 0.05:
                recorded.append((next_ts(client), snapshot(client)))
        pitr.capture_slice(capture_client, storage, "secantus", WriteOptions("none"), [])
    recorded.append((next_ts(client), snapshot(client)))
    capture_client.close()
    chosen = rng.sample(recorded, min(3, len(recorded))) + [recorded[-1]]
    for number, (target, expected) in enumerate(chosen):
        server = mongo_server(f"restore{number}")
        ts = Timestamp(target["t"], target["i"])
        done = pitr.restore_to(
            storage, lambda url=server.url: connect({"uri": url}), pitr.plan_restore(storage, None, ts), []
        )
        assert done["replay_method"] == "manual"
        got = snapshot(pymongo.MongoClient(server.url))
        assert got.keys() == expected.keys(), (seed, target)
        for ns in expected:
            assert got[ns][1] == expected[ns][1], (seed, target, ns, "indexes")
            assert got[ns][0] == expected[ns][0], (seed, target, ns, "documents")


def test_backup_pitr_and_dr_playbooks(env, s3_url, age_key, mongo_server, tmp_path):
    """backup.yml takes the full backup, then (caas_backup_only=mongodb-oplog, as the 5-minute timer runs it)
    oplog slices; pitr.yml restores to a time given as an extra var; dr.yml with dr_site_target_time too."""
    server = mongo_server("site")
    client = pymongo.MongoClient(server.url)
    client.shop.orders.insert_many([{"_id": i, "v": 0} for i in range(100)])
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": env["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "caas_backup_mongodb_uri": server.url,
    }
    site = {"groups": ["caas_mongodb"]}
    full = run_playbook(REPO / "playbooks" / "backup.yml", extra, env, **site)
    assert full.returncode == 0, full.stdout + full.stderr
    client.shop.orders.update_many({"_id": {"$lt": 10}}, {"$set": {"v": 1}})
    target = next_ts(client)
    expected = snapshot(client)
    client.shop.orders.delete_many({})  # the mistake to undo
    oplog = run_playbook(REPO / "playbooks" / "backup.yml", dict(extra, caas_backup_only="mongodb-oplog"), env, **site)
    assert oplog.returncode == 0, oplog.stdout + oplog.stderr
    storage = s3_storage(env, s3_url)
    assert len(list_sets(storage, "mongo-full")) == 1 and len(list_sets(storage, "mongo-oplog")) == 1
    pitr_vars = dict(extra, caas_backup_pitr_target=target, dr_site_report_dir=str(tmp_path / "pitr-report"))
    pitr_run = run_playbook(REPO / "playbooks" / "pitr.yml", pitr_vars, env, **site)
    assert pitr_run.returncode == 0, pitr_run.stdout + pitr_run.stderr
    assert dr_report(tmp_path / "pitr-report")["result"] == "PASS"
    assert snapshot(client) == expected
    fresh = mongo_server("dr")
    reports = tmp_path / "reports"
    dr_vars = dict(extra, caas_backup_mongodb_uri=fresh.url, dr_site_target_time=target)
    dr_vars["dr_site_report_dir"] = str(reports)
    dr = run_playbook(REPO / "playbooks" / "dr.yml", dr_vars, env, **site)
    assert dr.returncode == 0, dr.stdout + dr.stderr
    assert snapshot(pymongo.MongoClient(fresh.url)) == expected
    [mongodb] = dr_report(reports)["components"]
    assert mongodb["data_time"] == ts_fact(Timestamp(target["t"], 0))["iso"] and mongodb["status"] == "PASS"


def stored_objects(url):
    """Every object of a file:// storage with its size: what check mode must leave as it was."""
    root = Path(url[len("file://") :])
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def test_capture_check_mode_reports_the_position_and_pending_entries(env, file_url, mongo_server, tmp_path):
    """Check mode of a capture: the position it would continue from, the entries pending (as many as the real
    capture then writes), changed; nothing stored, and no lock taken (a running capture does not fail it)."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.app.items.insert_one({"_id": 0})
    dumped = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url), env)
    assert dumped["rc"] == 0, dumped
    base = dict(storage_url=file_url, uri=source.url, lock_dir=str(tmp_path))
    idle = run_module("mongo_oplog_capture", base, env, check_mode=True)
    assert idle["rc"] == 0 and idle["changed"] is False and idle["pending_ops"] == 0, idle
    assert "would write no slice now" in idle["msg"]
    client.app.items.insert_many([{"_id": i} for i in range(1, 8)])
    before = stored_objects(file_url)
    with capture_lock("oplog", "secantus", str(tmp_path)):
        planned = run_module("mongo_oplog_capture", base, env, check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["kind"] == "mongo-oplog"
    assert planned["from_ts"] == dumped["last_ts"] and planned["continues"] == f"full backup {dumped['backup_id']}"
    assert (
        planned["base_backup_id"] == dumped["backup_id"] and planned["location"] == f"{file_url}/mongo-oplog/secantus/"
    )
    assert planned["up_to_ts"]["t"] >= planned["from_ts"]["t"] and "ops" not in planned
    assert stored_objects(file_url) == before
    done = run_module("mongo_oplog_capture", base, env)
    assert done["rc"] == 0 and done["ops"] == planned["pending_ops"] == 7, (done, planned)


def test_point_in_time_restore_check_mode_returns_the_plan_and_touches_nothing(env, file_url, mongo_server):
    """Check mode of a PITR: the base set (id, time), the slices (ids, first/last ts), the resolved target and
    the method (manual: SecantusDB has no applyOps), changed; no restored_to, the target server untouched."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.shop.orders.insert_many([{"_id": i} for i in range(20)])
    base = dict(storage_url=file_url, uri=source.url)
    dumped = run_module("mongo_dump", base, env)
    client.shop.orders.delete_many({"_id": {"$lt": 5}})
    first = run_module("mongo_oplog_capture", base, env)
    client.shop.orders.insert_one({"_id": "late"})
    second = run_module("mongo_oplog_capture", base, env)
    assert dumped["rc"] == first["rc"] == second["rc"] == 0, (dumped, first, second)
    target_time = next_ts(client)
    target = mongo_server("target")
    pymongo.MongoClient(target.url).other.docs.insert_one({"_id": "before"})
    untouched = snapshot(pymongo.MongoClient(target.url))
    before = stored_objects(file_url)
    args = dict(storage_url=file_url, uri=target.url, target_time=target_time)
    plan = run_module("mongo_oplog_restore", args, env, check_mode=True)
    assert plan["rc"] == 0, plan
    assert plan["changed"] is True and "restored_to" not in plan and "ops_applied" not in plan
    assert plan["base_backup_id"] == dumped["backup_id"] and plan["base_consistent_ts"] == dumped["last_ts"]
    bset = list_sets(open_storage(file_url), "mongo-full")[0]
    assert plan["base_backup_time"] == bset.manifest["finished_at"]
    assert plan["slices"] == [
        {"backup_id": s["backup_id"], "first_ts": s["from_ts"], "last_ts": s["last_ts"], "ops": s["ops"]}
        for s in (first, second)
    ]
    assert plan["target_ts"]["t"] == target_time["t"] and plan["target_ts"]["i"] == target_time["i"]
    assert plan["replay_method"] == "manual" and plan["source"] == "secantus"
    assert plan["msg"].startswith(f"would restore secantus to just before {plan['target_ts']['iso']}")
    assert f"base backup {dumped['backup_id']}" in plan["msg"] and "2 slice(s)" in plan["msg"]
    assert stored_objects(file_url) == before
    assert snapshot(pymongo.MongoClient(target.url)) == untouched and "shop.orders" not in untouched
