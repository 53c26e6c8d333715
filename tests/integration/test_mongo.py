"""mongo_dump and mongo_restore against SecantusDB (the MongoDB stand-in of scripts/services).

SecantusDB gaps met here (tests/support/services.py): no ``applyOps``, so the restore replays the
oplog with plain CRUD commands, which is what these tests exercise; its ``$v: 2`` update entries use
``updatedFields``/``removedFields`` rather than the server's ``u``/``i``/``d`` diff keys (both are
handled; the server's form is covered by the unit tests). Real mongorestore cannot be installed here,
so archive compatibility is checked by the unit tests' golden bytes and by reading the stored object
with the archive reader after a plain ``gunzip``.
"""

import datetime
import gzip
import hashlib
import io
import json
import os
import random
import threading
import time
import uuid
from pathlib import Path

import bson
import pymongo
import pytest
import services
import zstandard
from bson import Binary, Code, Decimal128, Int64, MaxKey, MinKey, ObjectId, Regex, Timestamp
from bson.codec_options import CodecOptions
from bson.raw_bson import RawBSONDocument
from harness import REPO, dr_report, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, list_sets
from ansible_collections.caas.backup.plugins.module_utils.mongo.archive import (
    OPLOG_NS,
    ArchiveReader,
    ArchiveWriter,
    Namespace,
    metadata_json,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

RAW = CodecOptions(document_class=RawBSONDocument)


def raw_docs(coll):
    """Every document of a collection as its exact BSON bytes, by _id."""
    return sorted(
        (d.raw for d in coll.with_options(codec_options=RAW).find()), key=lambda raw: str(bson.decode(raw)["_id"])
    )


def index_facts(coll):
    keep = ("key", "name", "unique", "expireAfterSeconds", "partialFilterExpression")
    return sorted(
        (json.dumps({k: v for k, v in i.items() if k in keep}, default=str, sort_keys=True))
        for i in coll.list_indexes()
    )


def typed_documents():
    moment = datetime.datetime(2026, 2, 21, 10, 30, 15, 123000)
    return [
        {
            "_id": ObjectId(),
            "decimal": Decimal128("1234567890.123456789012345678901234"),
            "bin_generic": Binary(b"\x00\x01\x02\xff", 0),
            "bin_uuid": Binary(uuid.UUID("6f1e8e7c-2c5c-4e0e-9d3c-1b2a3c4d5e6f").bytes, 4),
            "bin_md5": Binary(hashlib.md5(b"caas").digest(), 5),
            "bin_user": Binary(b"user-defined", 128),
            "date": moment,
            "before_epoch": datetime.datetime(1931, 5, 1),
            "regex": Regex("^caas.*backup$", "im"),
            "int64": Int64(2**53 + 7),
            "int32": -42,
            "double": 3.14159,
            "nested": {"level1": {"level2": [1, [2, [3, {"deep": [None, True, "x"]}]]]}},
            "array_of_docs": [{"a": 1}, {"a": [{"b": 2}]}],
            "ключ": "значение",
            "clé_é": "ü✓",
            "emoji_🙂": "🙂",
            "timestamp": Timestamp(1700000000, 3),
            "min": MinKey(),
            "max": MaxKey(),
            "code": Code("function () { return 1; }"),
            "null": None,
            "bool": False,
            "empty_doc": {},
            "empty_array": [],
        },
        {"_id": 2, "int_id": True, "text": "a" * 5000},
        {"_id": "string-id", "list": list(range(100))},
    ]


def seed(client, prefix):
    """Several databases with many BSON types, four kinds of index, a view and a capped collection."""
    a, b = client[f"{prefix}_a"], client[f"{prefix}_b"]
    a.types.insert_many(typed_documents())
    a.people.insert_many(
        [
            {
                "_id": i,
                "email": f"p{i}@caas.test",
                "city": f"c{i % 7}",
                "age": i % 90,
                "created": datetime.datetime(2026, 1, 1),
            }
            for i in range(3000)
        ]
    )
    a.people.create_index("email", unique=True)
    a.people.create_index([("city", 1), ("age", -1)])
    a.people.create_index("created", expireAfterSeconds=3600 * 24 * 365 * 100)
    a.people.create_index("age", name="adults", partialFilterExpression={"age": {"$gte": 18}})
    a.command("create", "adults_view", viewOn="people", pipeline=[{"$match": {"age": {"$gte": 18}}}])
    b.create_collection("events", capped=True, size=1024 * 1024, max=500)
    b.events.insert_many([{"_id": i, "kind": "tick"} for i in range(50)])
    b.create_collection("weather", timeseries={"timeField": "at", "metaField": "station", "granularity": "hours"})
    b.weather.insert_many([{"at": datetime.datetime(2026, 2, 21, h), "station": "s1", "t": h / 2} for h in range(5)])
    b.empty.insert_one({"_id": 0})
    b.empty.delete_one({"_id": 0})


def test_round_trip_of_types_databases_indexes_views_and_capped_options(svc, env, s3_url, age_key, mongo_server):
    """Dump from the session's server to S3 (zstd, age), restore into an empty server: identical bytes and shape."""
    source = pymongo.MongoClient(svc["CAAS_MONGO_URI"])
    seed(source, "rt")
    dumped = run_module(
        "mongo_dump",
        dict(
            storage_url=s3_url,
            uri=svc["CAAS_MONGO_URI"],
            ns_include=["rt_*.*"],
            source_name="rt",
            encryption_recipients=[age_key["recipient"]],
            parallel_collections=3,
        ),
        env,
    )
    assert dumped["rc"] == 0, dumped
    counts = {c["ns"]: c["documents"] for c in dumped["collections"]}
    assert counts == {
        "rt_a.adults_view": 0,
        "rt_a.people": 3000,
        "rt_a.types": 3,
        "rt_b.empty": 0,
        "rt_b.events": 50,
        "rt_b.weather": 5,
    }
    assert dumped["last_ts"]["t"] >= dumped["first_ts"]["t"]
    manifest = list_sets(s3_storage(svc, s3_url), "mongo-full")[0].manifest
    assert manifest["facts"]["first_ts"] == dumped["first_ts"] and manifest["facts"]["last_ts"] == dumped["last_ts"]
    assert manifest["objects"][0]["name"] == "dump.archive.zst.age"

    target = mongo_server()
    restored = run_module(
        "mongo_restore",
        dict(storage_url=s3_url, uri=target.url, encryption_identity_file=age_key["file"], drop=True),
        env,
    )
    assert restored["rc"] == 0, restored
    assert all(c.get("match") in (True, None) for c in restored["collections"])
    out = pymongo.MongoClient(target.url)
    for db, coll in (("rt_a", "types"), ("rt_a", "people"), ("rt_b", "events"), ("rt_b", "empty")):
        assert raw_docs(out[db][coll]) == raw_docs(source[db][coll]), f"{db}.{coll}"
    assert index_facts(out.rt_a.people) == index_facts(source.rt_a.people)
    assert len(index_facts(out.rt_a.people)) == 5
    infos = {i["name"]: i for i in out.rt_b.list_collections()}
    assert infos["events"]["options"] == {"capped": True, "size": 1024 * 1024, "max": 500}
    # SecantusDB keeps a time series collection as a plain one with the option (no system.buckets).
    assert infos["weather"]["options"] == {
        "timeseries": {"timeField": "at", "metaField": "station", "granularity": "hours"}
    }
    assert out.rt_b.weather.count_documents({}) == 5
    view = {i["name"]: i for i in out.rt_a.list_collections()}["adults_view"]
    assert view["type"] == "view"
    assert view["options"] == {"viewOn": "people", "pipeline": [{"$match": {"age": {"$gte": 18}}}]}
    assert out.rt_a.adults_view.count_documents({}) == source.rt_a.adults_view.count_documents({})
    assert set(out.list_database_names()) - {"admin", "config", "local"} == {"rt_a", "rt_b"}


class Writer(threading.Thread):
    """Inserts, updates and deletes numbered documents, logging each write's oplog time (operationTime)."""

    def __init__(self, url):
        super().__init__(daemon=True)
        self.client = pymongo.MongoClient(url)
        self.log = []
        self.stop = threading.Event()
        self.error = None

    def run(self):
        coll = self.client.cons.items
        n = 1000
        try:
            with self.client.start_session() as session:
                while not self.stop.is_set():
                    n += 1
                    coll.insert_one({"_id": n, "v": 0, "pad": "x" * 200}, session=session)
                    self.log.append((session.operation_time, "i", n))
                    if n % 3 == 0:
                        coll.update_one({"_id": n - 2}, {"$inc": {"v": 1}, "$set": {"tag": n}}, session=session)
                        self.log.append((session.operation_time, "u", n - 2))
                    if n % 5 == 0:
                        coll.delete_one({"_id": n - 4}, session=session)
                        self.log.append((session.operation_time, "d", n - 4))
        except Exception as exc:  # noqa: BLE001  reported by the test
            self.error = exc


def expected_state(initial, log, last_ts):
    """The collection as of last_ts: the initial documents plus the logged writes up to it."""
    state = {d["_id"]: {"v": d["v"], "tag": d.get("tag")} for d in initial}
    for ts, op, key in sorted(log, key=lambda e: e[0]):
        if ts > last_ts:
            break
        if op == "i":
            state[key] = {"v": 0, "tag": None}
        elif op == "u" and key in state:
            state[key] = {"v": state[key]["v"] + 1, "tag": None}
        elif op == "d":
            state.pop(key, None)
    return state


def test_dump_during_writes_restores_to_its_consistent_point(env, file_url, mongo_server):
    """A dump taken while a thread writes restores to exactly the writes with an oplog time <= last_ts."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    initial = [{"_id": i, "v": 0, "pad": "y" * 500} for i in range(1, 1001)]
    client.cons.items.insert_many(initial)
    client.cons.other.insert_many([{"_id": i} for i in range(20000)])  # so the dump takes a while
    writer = Writer(source.url)
    writer.start()

    def wait_for_writes(count: int) -> None:
        deadline = time.monotonic() + 120
        while len(writer.log) < count:
            assert writer.error is None and time.monotonic() < deadline, f"the writer stopped: {writer.error}"
            threading.Event().wait(0.01)

    try:
        wait_for_writes(50)
        dumped = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, parallel_collections=2), env)
        wait_for_writes(len(writer.log) + 30)
    finally:
        writer.stop.set()
        writer.join()
    assert writer.error is None
    assert dumped["rc"] == 0, dumped
    last_ts = Timestamp(dumped["last_ts"]["t"], dumped["last_ts"]["i"])
    first_ts = Timestamp(dumped["first_ts"]["t"], dumped["first_ts"]["i"])
    assert [e for e in writer.log if e[0] > last_ts], "the writer should go on after the consistent point"
    assert [e for e in writer.log if first_ts < e[0] <= last_ts], "writes should happen during the dump"
    assert dumped["oplog_entries"] > 0

    target = mongo_server("target")
    restored = run_module("mongo_restore", dict(storage_url=file_url, uri=target.url), env)
    assert restored["rc"] == 0, restored
    assert restored["oplog_applied"] > 0
    got = {d["_id"]: {"v": d["v"], "tag": None} for d in pymongo.MongoClient(target.url).cons.items.find()}
    want = expected_state(initial, writer.log, last_ts)
    assert sorted(got) == sorted(want)
    assert got == want
    assert pymongo.MongoClient(target.url).cons.other.count_documents({}) == 20000


def gunzipped_archive(file_url, prefix_glob="mongo-full/*/*/dump.archive.gz"):
    root = Path(file_url[len("file://") :])
    (path,) = root.glob(prefix_glob)
    return gzip.decompress(path.read_bytes())


def test_gzip_object_is_a_mongodump_archive_and_imports_back(env, file_url, tmp_path, mongo_server):
    """With gzip and no encryption the stored object gunzips to a 0.1 archive with an oplog namespace;
    as a file (gzip or not) it imports as a new backup set and restores."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.imp.docs.insert_many([{"_id": i, "n": i} for i in range(500)])
    dumped = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, compression="gzip"), env)
    assert dumped["rc"] == 0, dumped
    archive = gunzipped_archive(file_url)
    reader = ArchiveReader(io.BytesIO(archive))
    prelude = reader.verify()
    assert prelude.header["version"] == "0.1"
    assert prelude.header["concurrent_collections"] == 4
    assert [ns.key for ns in prelude.namespaces] == [("imp", "docs"), OPLOG_NS]
    assert prelude.get(("imp", "docs")).documents == 500

    for name, data in (("plain.archive", archive), ("mongodump.archive.gz", gzip.compress(archive))):
        (tmp_path / name).write_bytes(data)
        store = tmp_path / f"store-{name}"
        store.mkdir()
        import_args = dict(storage_url=f"file://{store}", import_path=str(tmp_path / name), source_name="legacy")
        planned = run_module("mongo_dump", import_args, env, check_mode=True)
        imported = run_module("mongo_dump", import_args, env)
        assert imported["rc"] == 0, imported
        assert planned["gzipped"] is imported["gzipped"] is name.endswith(".gz")
        assert [(c["ns"], c["type"], c["documents"]) for c in imported["collections"]] == [
            ("imp.docs", "collection", 500)
        ]
        assert imported["oplog_entries"] == dumped["oplog_entries"]
        target = mongo_server(f"target-{name}")
        restored = run_module("mongo_restore", dict(storage_url=f"file://{store}", uri=target.url), env)
        assert restored["rc"] == 0, restored
        assert pymongo.MongoClient(target.url).imp.docs.count_documents({}) == 500


def test_filters_renames_and_check_mode(env, file_url, mongo_server):
    """ns_include/ns_from/ns_to pick and rename; check mode reports what would be dropped and changes nothing."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    client.shop.orders.insert_many([{"_id": i} for i in range(10)])
    client.shop.carts.insert_many([{"_id": i} for i in range(3)])
    client.crm.leads.insert_one({"_id": 1})
    assert run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, ns_exclude=["crm.*"]), env)["rc"] == 0
    target = mongo_server("target")
    out = pymongo.MongoClient(target.url)
    out.shop_copy.orders.insert_many([{"_id": i, "old": True} for i in range(100, 105)])
    out.keep.me.insert_one({"_id": 1})
    args = dict(
        storage_url=file_url,
        uri=target.url,
        ns_include=["shop.orders"],
        ns_from=["shop.*"],
        ns_to=["shop_copy.*"],
        drop=True,
    )
    planned = run_module("mongo_restore", args, env, check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["namespaces"] == [
        {"ns": "shop.orders", "target": "shop_copy.orders", "type": "collection", "documents": 10}
    ]
    assert planned["dropped"] == ["shop_copy.orders"]
    assert out.shop_copy.orders.count_documents({"old": True}) == 5
    restored = run_module("mongo_restore", args, env)
    assert restored["rc"] == 0, restored
    assert sorted(d["_id"] for d in out.shop_copy.orders.find()) == list(range(10))
    assert "shop" not in out.list_database_names() and out.keep.me.count_documents({}) == 1
    nothing = run_module("mongo_restore", dict(args, ns_include=["nope.*"]), env)
    assert nothing["rc"] == 1 and "select no collection" in nothing["msg"]
    nothing = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, ns_include=["nope.*"]), env)
    assert nothing["rc"] == 1 and "select no collection" in nothing["msg"]


def write_set(file_url, archive, source="broken"):
    """A backup set whose manifest matches ``archive`` byte for byte (so only the archive's CRCs can object)."""
    storage = open_storage(file_url)
    backup = SetWriter(storage, "mongo-full", source, WriteOptions(compression="none"))
    with backup.object("dump.archive") as out:
        out.write(archive)
    backup.commit({"collections": [], "first_ts": None, "last_ts": None})
    return backup


@pytest.mark.parametrize("damage", ["crc", "truncated", "sha256"])
def test_damaged_backup_fails_before_anything_is_dropped(env, file_url, mongo_server, damage):
    """A flipped byte (CRC), a cut archive, or a changed stored object (sha256): a clear error, target intact."""
    source = mongo_server("source")
    pymongo.MongoClient(source.url).app.data.insert_many([{"_id": i, "s": f"value-{i}"} for i in range(300)])
    assert (
        run_module(
            "mongo_dump", dict(storage_url=file_url, uri=source.url, compression="none", source_name="good"), env
        )["rc"]
        == 0
    )
    root = Path(file_url[len("file://") :])
    (stored,) = root.glob("mongo-full/good/*/dump.archive")
    archive = stored.read_bytes()
    if damage == "crc":
        at = archive.index(b"value-150")
        write_set(file_url, archive[:at] + b"VALUE" + archive[at + 5 :])
        source_name, expect = "broken", "CRC"
    elif damage == "truncated":
        write_set(file_url, archive[: len(archive) * 2 // 3])
        source_name, expect = "broken", "truncated"
    else:
        stored.write_bytes(archive[:-10] + bytes(10))
        source_name, expect = "good", "sha256"
    target = mongo_server("target")
    out = pymongo.MongoClient(target.url)
    out.app.data.insert_many([{"_id": i, "precious": True} for i in range(7)])
    result = run_module(
        "mongo_restore", dict(storage_url=file_url, uri=target.url, source_name=source_name, drop=True), env
    )
    assert result["rc"] == 1
    assert expect in result["msg"] and result["msg"].startswith("Failed to restore MongoDB:")
    assert out.app.data.count_documents({"precious": True}) == 7


def test_bad_input_errors(env, file_url, mongo_server, tmp_path):
    """Unreachable host, failed authentication, TLS without the CA, unknown backup id, corrupted import."""
    port = services.free_port()
    down = run_module(
        "mongo_dump", dict(storage_url=file_url, login_host="127.0.0.1", login_port=port, connect_timeout=1), env
    )
    assert down["rc"] == 1 and f"MongoDB at 127.0.0.1:{port} cannot be reached" in down["msg"], down

    secured = mongo_server("auth", auth=True)
    password = (Path(secured.dir) / "admin.password").read_text().strip()
    plain = f"mongodb://127.0.0.1:{secured.port}/?replicaSet=secantus"
    wrong = run_module(
        "mongo_dump", dict(storage_url=file_url, uri=plain, login_user="admin", login_password="not-the-password"), env
    )
    assert wrong["rc"] == 1 and "authentication to MongoDB" in wrong["msg"], wrong
    assert "not-the-password" not in json.dumps(wrong)
    pymongo.MongoClient(secured.url).app.x.insert_one({"_id": 1})
    good = run_module(
        "mongo_dump", dict(storage_url=file_url, uri=plain, login_user="admin"), dict(env, CAAS_MONGO_PASSWORD=password)
    )
    assert good["rc"] == 0, good
    assert password not in json.dumps(good)

    tls = mongo_server("tls", tls=True)
    no_ca = run_module(
        "mongo_dump",
        dict(storage_url=file_url, login_host="127.0.0.1", login_port=tls.port, tls=True, connect_timeout=2),
        env,
    )
    assert no_ca["rc"] == 1 and "TLS connection to MongoDB" in no_ca["msg"], no_ca
    with_ca = run_module(
        "mongo_dump",
        dict(
            storage_url=file_url,
            login_host="127.0.0.1",
            login_port=tls.port,
            tls_ca_file=str(Path(tls.dir) / "tls-cert.pem"),
            oplog=False,
            ns_include=["nothing.*"],
        ),
        env,
    )
    assert with_ca["rc"] == 1 and "select no collection" in with_ca["msg"], with_ca

    unknown = run_module("mongo_restore", dict(storage_url=file_url, uri=plain, backup_id="20200101T000000Z-abcd"), env)
    assert unknown["rc"] == 1 and "no mongo-full backup 20200101T000000Z-abcd" in unknown["msg"], unknown

    too_early = run_module("mongo_restore", dict(storage_url=file_url, uri=plain, before="2000-01-01T00:00:00Z"), env)
    assert too_early["rc"] == 1 and "at or before 2000-01-01T00:00:00Z" in too_early["msg"], too_early

    junk = tmp_path / "junk.archive"
    junk.write_bytes(os.urandom(4096))
    bad = run_module("mongo_dump", dict(storage_url=file_url, import_path=str(junk), source_name="junk"), env)
    assert bad["rc"] == 1 and "not a mongodump archive" in bad["msg"], bad
    left = [p for p in Path(file_url[len("file://") :]).rglob("*") if p.is_file()]
    assert [p.name for p in left if "junk" in str(p)] == [], "nothing is left of a failed import"
    assert not list_sets(open_storage(file_url), "mongo-full", "junk")


def test_restore_fails_when_the_restored_count_differs_from_the_backup(env, tmp_path, mongo_server):
    """An imported archive whose documents repeat an _id (valid CRCs): the target ends with fewer documents
    than the backup holds, and the restore says so instead of reporting success."""
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    docs = Namespace(
        "dup", "docs", metadata=metadata_json({"indexes": [], "collectionName": "docs"}), type="collection"
    )
    writer.prelude({"concurrent_collections": 1}, [docs])
    writer.write(docs.key, b"".join(bson.encode({"_id": i % 3, "n": i}) for i in range(4)), 4)
    writer.close_namespace(docs.key)
    (tmp_path / "dup.archive").write_bytes(out.getvalue())
    (tmp_path / "store").mkdir()
    store = f"file://{tmp_path / 'store'}"
    imported = run_module(
        "mongo_dump", dict(storage_url=store, import_path=str(tmp_path / "dup.archive"), source_name="legacy"), env
    )
    assert imported["rc"] == 0 and imported["collections"][0]["documents"] == 4, imported
    target = mongo_server("target")
    failed = run_module("mongo_restore", dict(storage_url=store, uri=target.url), env)
    assert failed["rc"] == 1, failed
    assert "restored counts differ from the backup: dup.docs has 3 documents, the backup 4" in failed["msg"]


def test_parallel_dump_of_many_collections_interleaves_and_counts(env, file_url, mongo_server):
    """Twelve collections read by four threads: every count right, the archive valid."""
    source = mongo_server("source")
    client = pymongo.MongoClient(source.url)
    rng = random.Random(3)
    sizes = {f"c{i}": rng.randrange(0, 4000) for i in range(12)}
    for name, size in sizes.items():
        client.many.create_collection(name)
        if size:
            client.many[name].insert_many([{"_id": j, "blob": "z" * rng.randrange(1, 400)} for j in range(size)])
    dumped = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, compression="gzip"), env)
    assert dumped["rc"] == 0, dumped
    assert {c["ns"]: c["documents"] for c in dumped["collections"]} == {f"many.{k}": v for k, v in sizes.items()}
    prelude = ArchiveReader(io.BytesIO(gunzipped_archive(file_url))).verify()
    assert {ns.name: ns.documents for ns in prelude.namespaces if not ns.is_oplog} == {
        f"many.{k}": v for k, v in sizes.items()
    }


def test_users_and_roles_are_dumped_and_their_restore_refused_where_unsupported(env, file_url, mongo_server):
    """include_users_and_roles dumps admin.system.users/roles (read with find, as mongodump does).

    Gap: SecantusDB's admin.system.users is a synthetic read-only view without credentials, and it has no
    _mergeAuthzCollections (what mongorestore and mongo_restore use to merge users and roles). So the test
    asserts the dump holds the users, and that restore_users_and_roles fails clearly before anything is dropped.
    """
    source = mongo_server("source", auth=True)
    client = pymongo.MongoClient(source.url)
    client.admin.command("createUser", "appuser", pwd="app-pass-1", roles=[{"role": "readWrite", "db": "app"}])
    client.app.x.insert_one({"_id": 1})
    dumped = run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, include_users_and_roles=True), env)
    assert dumped["rc"] == 0, dumped
    counts = {c["ns"]: c["documents"] for c in dumped["collections"]}
    assert counts["admin.system.users"] == 2 and "admin.system.roles" in counts
    target = mongo_server("target")
    out = pymongo.MongoClient(target.url)
    out.app.x.insert_one({"_id": 1, "precious": True})
    refused = run_module(
        "mongo_restore",
        dict(storage_url=file_url, uri=target.url, restore_users_and_roles=True, drop=True),
        env,
    )
    assert refused["rc"] == 1 and "cannot restore users and roles" in refused["msg"], refused
    assert out.app.x.find_one({"_id": 1}) == {"_id": 1, "precious": True}
    data_only = run_module("mongo_restore", dict(storage_url=file_url, uri=target.url, drop=True), env)
    assert data_only["rc"] == 0, data_only
    assert out.app.x.find_one({"_id": 1}) == {"_id": 1}
    assert [n["ns"] for n in data_only["namespaces"]] == ["app.x"]


def test_backup_and_dr_playbooks_bring_mongodb_back(env, s3_url, age_key, mongo_server, tmp_path):
    """backup.yml with caas_backup_mongodb_uri, then the disaster, then dr.yml with the mongodb component.

    The password reaches the modules only through CAAS_MONGO_PASSWORD: never argv, output or the manifest.
    """
    from test_playbooks import ArgvWatch

    server = mongo_server("site", auth=True)
    password = (Path(server.dir) / "admin.password").read_text().strip()
    client = pymongo.MongoClient(server.url)
    client.shop.orders.insert_many([{"_id": i, "sku": f"s{i}"} for i in range(700)])
    client.shop.orders.create_index("sku", unique=True)
    reports = tmp_path / "reports"
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": env["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "caas_backup_mongodb_uri": f"mongodb://127.0.0.1:{server.port}/?replicaSet=secantus",
        "caas_backup_mongodb_user": "admin",
        "dr_site_report_dir": str(reports),
    }
    run_env = dict(env, CAAS_MONGO_PASSWORD=password)
    with ArgvWatch([password]) as watch:
        backup = run_playbook(REPO / "playbooks" / "backup.yml", extra, run_env, "-v", groups=["caas_mongodb"])
        assert backup.returncode == 0, backup.stdout + backup.stderr
        client.drop_database("shop")
        dr = run_playbook(REPO / "playbooks" / "dr.yml", extra, run_env, "-v", groups=["caas_mongodb"])
        assert dr.returncode == 0, dr.stdout + dr.stderr
    assert watch.found == []
    for output in (backup.stdout, backup.stderr, dr.stdout, dr.stderr):
        assert password not in output
    assert client.shop.orders.count_documents({}) == 700
    assert "sku_1" in client.shop.orders.index_information()
    measured = dr_report(reports)
    [mongodb] = measured["components"]
    assert (mongodb["component"], mongodb["source"], mongodb["status"]) == ("mongodb", "secantus", "PASS")
    assert [c["found"] for c in mongodb["checks"]] == [700]
    assert float(measured["rpo_seconds"]) >= 0
    [bset] = list_sets(s3_storage(env, s3_url), "mongo-full")
    assert password not in json.dumps(bset.manifest)


@pytest.mark.parametrize("given_server", [False, True])
def test_backup_verify_checks_crcs_and_test_restores_into_a_scratch_server(env, file_url, mongo_server, given_server):
    """checksum: sha256 and every namespace CRC; restore: everything into a scratch server (started by the module,
    here secantusd-py since no mongod exists, or given as scratch_mongo_uri), every count compared."""
    source = mongo_server("source")
    seed(pymongo.MongoClient(source.url), "verify")
    made = run_module("mongo_dump", {"uri": source.url, "storage_url": file_url}, env)
    assert made["rc"] == 0, made
    checked = run_module("backup_verify", {"storage_url": file_url}, env)
    assert checked["rc"] == 0, checked
    assert checked["reports"][0]["checks"][-1]["namespaces"] == 6  # seed(): 4 collections, a view, a time series
    args = {"storage_url": file_url, "level": "restore"}
    if given_server:
        args["scratch_mongo_uri"] = mongo_server("scratch").url
    restored = run_module("backup_verify", args, env)
    assert restored["rc"] == 0, restored
    check = restored["reports"][0]["checks"][-1]
    assert check["ok"] and check["documents"] >= 3000 + 50 + 3


def test_backup_verify_fails_on_a_damaged_archive(env, file_url, mongo_server):
    source = mongo_server("source")
    pymongo.MongoClient(source.url).shop.orders.insert_many([{"_id": i} for i in range(100)])
    assert run_module("mongo_dump", {"uri": source.url, "storage_url": file_url}, env)["rc"] == 0
    bset = list_sets(open_storage(file_url), "mongo-full")[0]
    path = Path(file_url[len("file://") :]) / bset.prefix / "dump.archive.zst"
    archive = zstandard.ZstdDecompressor().stream_reader(path.open("rb")).read()
    damaged = archive.replace(b"\x10_id\x00\x05\x00\x00\x00", b"\x10_id\x00\x06\x00\x00\x00", 1)  # _id 5 -> 6
    assert damaged != archive
    write_set(file_url, damaged, source=bset.source + "-damaged")
    result = run_module("backup_verify", {"storage_url": file_url, "source_name": bset.source + "-damaged"}, env)
    assert result["rc"] == 1 and "CRC" in result["msg"], result["msg"]


def stored_objects(url):
    """Every object of a file:// storage with its size: what check mode must leave as it was."""
    root = Path(url[len("file://") :])
    return sorted((str(p.relative_to(root)), p.stat().st_size) for p in root.rglob("*") if p.is_file())


def test_dump_and_restore_check_mode_report_the_plan_and_write_nothing(env, file_url, mongo_server):
    """mongo_dump in check mode says changed and, per collection, the documents and BSON bytes the real dump then
    writes (from collStats, which SecantusDB answers with count and size, so the estimatedDocumentCount fallback
    for servers that refuse collStats does not run here); mongo_restore in check mode names the set and what it
    would drop. Neither writes to the storage, and the restore target is untouched."""
    source = mongo_server("source")
    seed(pymongo.MongoClient(source.url), "cm")
    args = dict(storage_url=file_url, uri=source.url)
    planned = run_module("mongo_dump", args, env, check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["kind"] == "mongo-full"
    assert planned["source"] == "secantus" and planned["location"] == f"{file_url}/mongo-full/secantus/"
    assert planned["oplog"] is True and "would write a mongo-full backup of 6 collection(s)" in planned["msg"]
    assert stored_objects(file_url) == []
    stats = {c["ns"]: c["stats"] for c in planned["collections"]}
    assert stats["cm_a.adults_view"] == "view" and stats["cm_a.people"] == "collStats"

    dumped = run_module("mongo_dump", args, env)
    assert dumped["rc"] == 0, dumped
    want = {c["ns"]: (c["documents"], c["bytes"]) for c in dumped["collections"]}
    assert {c["ns"]: (c["documents"], c["bytes"]) for c in planned["collections"]} == want
    assert planned["documents"] == dumped["documents"] == 3000 + 3 + 50 + 5

    target = mongo_server("target")
    out = pymongo.MongoClient(target.url)
    out.cm_a.people.insert_one({"_id": "kept"})
    before = stored_objects(file_url)
    plan = run_module("mongo_restore", dict(storage_url=file_url, uri=target.url, drop=True), env, check_mode=True)
    assert plan["rc"] == 0, plan
    assert plan["changed"] is True and plan["backup_id"] == dumped["backup_id"] and plan["source"] == "secantus"
    assert plan["dropped"] == ["cm_a.people"]
    assert sum(n["documents"] for n in plan["namespaces"]) == dumped["documents"]
    assert plan["msg"].startswith(f"would restore mongo-full backup {dumped['backup_id']} of secantus")
    assert "collections" not in plan and "oplog_applied" not in plan
    assert stored_objects(file_url) == before
    assert list(out.cm_a.people.find()) == [{"_id": "kept"}]


def test_import_check_mode_reads_the_archive_and_stores_nothing(env, file_url, tmp_path, mongo_server):
    """import_path in check mode: the archive is read and checked as for a real import, changed is reported,
    and the storage stays empty."""
    source = mongo_server("source")
    pymongo.MongoClient(source.url).imp.docs.insert_many([{"_id": i} for i in range(40)])
    assert run_module("mongo_dump", dict(storage_url=file_url, uri=source.url, compression="gzip"), env)["rc"] == 0
    (tmp_path / "nightly.archive").write_bytes(gunzipped_archive(file_url))
    store = tmp_path / "import-store"
    store.mkdir()
    args = dict(storage_url=f"file://{store}", import_path=str(tmp_path / "nightly.archive"), source_name="legacy")
    planned = run_module("mongo_dump", args, env, check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["gzipped"] is False
    assert [(c["ns"], c["documents"]) for c in planned["collections"]] == [("imp.docs", 40)]
    assert planned["location"] == f"file://{store}/mongo-full/legacy/" and "would register" in planned["msg"]
    assert stored_objects(f"file://{store}") == []


def test_explicit_target_beats_the_environment(env, file_url, mongo_server):
    """A restore with drop and an explicit login_host/login_port writes there, while CAAS_MONGO_URI and
    MONGO_URI point at another server holding the same namespace: that server is never touched. MONGO_URI,
    a name applications use, is never read; CAAS_MONGO_URI only when no target option is given; an explicit
    uri beats login_host/login_port. Every result names the server it wrote to (or would) in ``target``."""
    source = mongo_server("source")
    pymongo.MongoClient(source.url).app.docs.insert_many([{"_id": i} for i in range(20)])
    assert run_module("mongo_dump", dict(storage_url=file_url, uri=source.url), env)["rc"] == 0
    decoy = mongo_server("decoy")
    pymongo.MongoClient(decoy.url).app.docs.insert_many([{"_id": i, "decoy": True} for i in range(100, 103)])
    target = mongo_server("target")
    both = dict(env, CAAS_MONGO_URI=decoy.url, MONGO_URI=decoy.url)

    restored = run_module(
        "mongo_restore",
        dict(storage_url=file_url, login_host="127.0.0.1", login_port=target.port, drop=True),
        both,
    )
    assert restored["rc"] == 0, restored
    assert restored["target"] == f"127.0.0.1:{target.port}"
    assert pymongo.MongoClient(target.url).app.docs.count_documents({}) == 20
    assert pymongo.MongoClient(decoy.url).app.docs.count_documents({"decoy": True}) == 3

    generic = run_module(
        "mongo_restore", dict(storage_url=file_url, drop=True, connect_timeout=1), dict(env, MONGO_URI=decoy.url)
    )
    assert generic["rc"] == 1 and "MongoDB at localhost:27017 cannot be reached" in generic["msg"], generic
    assert pymongo.MongoClient(decoy.url).app.docs.count_documents({"decoy": True}) == 3

    from_env = run_module("mongo_restore", dict(storage_url=file_url, drop=True), both, check_mode=True)
    assert from_env["rc"] == 0 and from_env["dropped"] == ["app.docs"], from_env
    assert from_env["target"].endswith(f"127.0.0.1:{decoy.port}")
    assert decoy.url not in json.dumps(from_env)

    uri_wins = run_module(
        "mongo_restore",
        dict(storage_url=file_url, uri=target.url, login_host="127.0.0.1", login_port=decoy.port, drop=True),
        both,
        check_mode=True,
    )
    assert uri_wins["rc"] == 0 and uri_wins["target"].endswith(f"127.0.0.1:{target.port}"), uri_wins
