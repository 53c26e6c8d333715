"""MongoDB dump and restore throughput and memory, as ratios measured in one run (not a test: it asserts nothing).

Fills SIZE MiB of ~1 KiB documents (four collections) into the MongoDB of scripts/services, reads them
back with a raw pymongo ``RawBSONDocument`` cursor (the dump baseline), then dumps them with the
collection's ``mongo_dump`` code (zstd, parallel collections, with and without the oplog) to a local
directory. The restore baseline is a raw ``insert_many`` of the same documents into the target database,
made just before ``mongo_restore``'s code restores the archive there (sha256 and CRC verification pass
included), so both write into a server in the same state. Each measurement runs in its own forked
process, which reports its peak RSS.

A consistent dump (``oplog``) also pays for the two oplog queries ``mongodump --oplog`` makes (the newest
entry before reading, the entries since after): a real server answers them from the oplog's order, but
SecantusDB decodes its whole oplog (up to 100,000 entries) for each. The row "raw read + mongodump's
oplog queries" measures that floor with raw pymongo calls, and the consistent dump is compared with it.

    make bench                      # starts the services, runs this (and bench/storage.py), stops them
    python bench/mongo.py --size 64 # with CAAS_MONGO_URI exported (eval "$(scripts/services up)")

Goals (issue 3): dump >= 0.9x the raw read, restore >= 0.85x the raw insert_many, dump peak RSS <= 256 MiB
for 1 GiB.
"""

import argparse
import datetime
import os
import struct
import sys
import tempfile
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "collections"))
sys.path.insert(0, str(REPO / "bench"))

import bson  # noqa: E402
import pymongo  # noqa: E402
from bson.codec_options import CodecOptions  # noqa: E402
from bson.raw_bson import RawBSONDocument  # noqa: E402
from storage import measured  # noqa: E402  bench/storage.py: forked, timed, peak RSS

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, fetch_object, latest  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import plan_dump, write_archive  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.mongo.restore import (  # noqa: E402
    Renamer,
    plan,
    restore_archive,
    select,
    verify_archive,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402

SOURCE_DB = "bench_mongo_src"
TARGET_DB = "bench_mongo_dst"
COLLECTIONS = 4
BATCH = 1000
TEMPLATE = bson.encode(
    {
        "_id": bson.Int64(0),
        "customer": "caas-customer-name",
        "note": "lorem ipsum dolor sit amet " * 33,
        "amount": 1234.5,
        "tags": ["red", "green", "blue"],
        "when": datetime.datetime(2026, 2, 21),
    }
)
ID_AT = 4 + 1 + len(b"_id\x00")  # first field: int64 _id right after the length and type byte


def batches(docs: int):
    """Raw documents in batches, made by patching the _id of one encoded template (so making them costs ~nothing)."""
    head, tail = TEMPLATE[:ID_AT], TEMPLATE[ID_AT + 8 :]
    for start in range(0, docs, BATCH):
        yield [RawBSONDocument(head + struct.pack("<q", n) + tail) for n in range(start, min(docs, start + BATCH))]


def raw_insert(uri: str, db_name: str, docs: int) -> None:
    """The restore baseline: raw insert_many of the documents, one collection after another."""
    client = pymongo.MongoClient(uri)
    client.drop_database(db_name)
    per = docs // COLLECTIONS
    for index in range(COLLECTIONS):
        coll = client[db_name][f"c{index}"]
        for batch in batches(per):
            coll.insert_many(batch, ordered=False)


def raw_read(uri: str, parallel: int = 1) -> None:
    """The dump baseline: a raw RawBSONDocument cursor over every collection, ``parallel`` at a time."""
    client = pymongo.MongoClient(uri, maxPoolSize=10)
    db = client.get_database(SOURCE_DB, codec_options=CodecOptions(document_class=RawBSONDocument))

    def read(index: int) -> int:
        return sum(len(doc.raw) for doc in db[f"c{index}"].find())

    with ThreadPoolExecutor(max_workers=parallel) as pool:
        sum(pool.map(read, range(COLLECTIONS)))


def raw_oplog_queries(uri: str) -> None:
    """What ``mongodump --oplog`` asks of the oplog: its newest entry, then every entry from it on."""
    oplog = pymongo.MongoClient(uri).local["oplog.rs"]
    newest = oplog.find_one({}, {"ts": 1}, sort=[("$natural", -1)])
    for _batch in oplog.find_raw_batches({"ts": {"$gte": newest["ts"]}}):
        pass


def dump(uri: str, url: str, oplog: bool = True, parallel: int = 4) -> None:
    client = pymongo.MongoClient(uri, maxPoolSize=10)
    dump_plan = plan_dump(client, [f"{SOURCE_DB}.*"], [], False, oplog)
    writer = SetWriter(open_storage(url), "mongo-full", "bench" if oplog else "bench-no-oplog", WriteOptions("zstd"))
    with writer.object("dump.archive") as out:
        facts = write_archive(client, out, dump_plan, parallel, oplog)
    writer.commit(facts)


def restore(uri: str, url: str) -> None:
    storage = open_storage(url)
    bset = latest(storage, "mongo-full", "bench")
    client = pymongo.MongoClient(uri, maxPoolSize=10)
    with fetch_object(storage, bset, "dump.archive") as copy:
        with copy.reader([]) as reader:
            prelude = verify_archive(reader, copy.name)
        targets = select(prelude, [], [], Renamer([f"{SOURCE_DB}.*"], [f"{TARGET_DB}.*"]), False)
        restore_plan = plan(client, prelude, targets, True, True)
        with copy.reader([]) as reader:
            restore_archive(client, reader, copy.name, restore_plan, workers=1, write_concern={"w": 1})


def best_of(repeat: int, measurements: dict) -> dict[str, tuple[float, float]]:
    """Each labelled ``(work, *args)`` measured ``repeat`` times, alternating: the best time, the peak RSS.

    The server's cache and other load on the machine otherwise decide more than the code does.
    """
    best: dict[str, tuple[float, float]] = {}
    for _round in range(repeat):
        for label, work_args in measurements.items():
            seconds, rss = measured(*work_args)
            old = best.get(label)
            best[label] = (min(seconds, old[0]), max(rss, old[1])) if old else (seconds, rss)
    return best


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--size", type=int, default=1024, help="MiB of documents (default 1024)")
    parser.add_argument("--repeat", type=int, default=2, help="rounds of each measurement (best kept)")
    args = parser.parse_args()
    size, repeat = args.size, max(1, args.repeat)
    uri = os.environ.get("CAAS_MONGO_URI")
    if not uri:
        raise SystemExit('CAAS_MONGO_URI is not set: run `make bench`, or eval "$(scripts/services up)" first')
    docs = size * 1024 * 1024 // len(TEMPLATE) // COLLECTIONS * COLLECTIONS
    client = pymongo.MongoClient(uri)
    rows = []
    try:
        print(f"filling {size} MiB ({docs} documents of {len(TEMPLATE)} bytes) ...", file=sys.stderr)
        measured(raw_insert, uri, SOURCE_DB, docs)
        with tempfile.TemporaryDirectory(prefix="caas-bench-mongo-") as work:
            url = f"file://{work}"
            read_label, oplog_label = "raw RawBSONDocument read (dump baseline)", "mongodump's two oplog queries, raw"
            reads = best_of(
                repeat,
                {
                    read_label: (raw_read, uri),
                    "raw read, 4 collections in parallel": (raw_read, uri, 4),
                    oplog_label: (raw_oplog_queries, uri),
                    "mongo_dump (zstd, no oplog, 4 parallel)": (dump, uri, url, False),
                    "mongo_dump (zstd, no oplog, 1 at a time)": (dump, uri, url, False, 1),
                    "mongo_dump (zstd, oplog, 4 parallel)": (dump, uri, url),
                    "mongo_dump (zstd, oplog, 1 at a time)": (dump, uri, url, True, 1),
                },
            )
            read_s = reads[read_label][0]
            floor_s = read_s + reads.pop(oplog_label)[0]
            for label, (seconds, rss) in reads.items():
                consistent = "(zstd, oplog" in label
                rows.append((label, seconds, rss, read_s / seconds, floor_s / seconds if consistent else None))
            rows.append(("raw read + mongodump's oplog queries", floor_s, 0, read_s / floor_s, 1.0))

            def restore_round() -> tuple[float, float, float, float]:
                client.drop_database(TARGET_DB)
                insert = measured(raw_insert, uri, TARGET_DB, docs)
                client.drop_database(TARGET_DB)
                return insert + measured(restore, uri, url)

            rounds = [restore_round() for _round in range(repeat)]
            insert_s, restore_s = min(r[0] for r in rounds), min(r[2] for r in rounds)
            rows.append(("raw insert_many (restore baseline)", insert_s, max(r[1] for r in rounds), 1.0, None))
            rows.append(
                (
                    "mongo_restore (verify + insert + count)",
                    restore_s,
                    max(r[3] for r in rounds),
                    insert_s / restore_s,
                    None,
                )
            )
            stored = sum(p.stat().st_size for p in Path(work).rglob("*") if p.is_file())
    finally:
        for name in (SOURCE_DB, TARGET_DB):
            client.drop_database(name)
    print(f"\n{size} MiB in {docs} documents; ratio = baseline time / this time (goal: dump >= 0.90, restore >= 0.85)")
    print("vs floor = (raw read + mongodump's oplog queries) / this time, for the consistent dumps")
    print(f"stored archives (zstd): {stored / 1024 / 1024:.1f} MiB\n")
    print(f"{'operation':44} {'seconds':>8} {'MiB/s':>8} {'ratio':>6} {'vs floor':>8} {'peak RSS MiB':>13}")
    for label, seconds, rss, ratio, floor in rows:
        shown = f"{floor:8.2f}" if floor is not None else " " * 8
        memory = f"{rss:13.0f}" if rss else ""
        print(f"{label:44} {seconds:8.2f} {size / seconds:8.1f} {ratio:6.2f} {shown} {memory}")


if __name__ == "__main__":
    main()
