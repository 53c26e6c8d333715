"""MongoDB point-in-time recovery speed, as numbers measured in one run (not a test: it asserts nothing).

Replay throughput: a workload of OPS operations (inserts, ``$set``/``$inc`` updates, deletes) runs on the
MongoDB of scripts/services and is captured as one oplog slice; the same operations are then written with
raw pymongo ``bulk_write`` (ordered) into an empty database (the baseline), and the slice is replayed with
the collection's replay (download, sha256 and framing checks included) into another. The ratio is the
baseline time over the replay time. On SecantusDB the replay is the manual one (no ``applyOps``).

Capture lag: ``follow`` mode with SLICE seconds per slice while a writer inserts a document every 20 ms;
lag = when the slice holding the write was committed to storage minus when the write was acknowledged.

    make bench                          # starts the services, runs the benches, stops them
    python bench/pitr.py --ops 5000     # with CAAS_MONGO_URI exported (eval "$(scripts/services up)")
"""

import argparse
import os
import random
import statistics
import sys
import tempfile
import threading
import time
from pathlib import Path

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO / ".build" / "collections"))

import pymongo  # noqa: E402
from bson import Timestamp  # noqa: E402
from pymongo import DeleteOne, InsertOne, UpdateOne  # noqa: E402

from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage  # noqa: E402
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions  # noqa: E402

SOURCE_DB = "bench_pitr_src"
RAW_DB = "bench_pitr_raw"
OPTIONS = WriteOptions("zstd")


def workload(count: int, seed: int = 7) -> list:
    """The operations, as pymongo bulk requests: 60% inserts, 30% updates, 10% deletes of live documents."""
    rng = random.Random(seed)
    ops, live, next_id = [], [], 0
    for _step in range(count):
        roll = rng.random()
        if roll < 0.6 or len(live) < 10:
            next_id += 1
            live.append(next_id)
            ops.append(InsertOne({"_id": next_id, "n": 0, "name": f"item-{next_id}", "pad": "x" * 200}))
        elif roll < 0.9:
            ops.append(UpdateOne({"_id": rng.choice(live)}, {"$inc": {"n": 1}, "$set": {"seen": rng.random()}}))
        else:
            ops.append(DeleteOne({"_id": live.pop(rng.randrange(len(live)))}))
    return ops


def last_ts(client):
    return client.local["oplog.rs"].find_one({}, sort=[("$natural", -1)])["ts"]


def replay_bench(uri: str, count: int, work: str) -> None:
    client = pymongo.MongoClient(uri)
    for name in (SOURCE_DB, RAW_DB):
        client.drop_database(name)
    ops = workload(count)
    storage = open_storage(f"file://{work}/replay")
    start = last_ts(client)
    for op in ops:  # one write per operation, as an application makes them: one oplog entry each
        client[SOURCE_DB].items.bulk_write([op])
    done = pitr.capture_slice(client, storage, "bench", OPTIONS, [], pitr.Position(start, "none", "bench start"))
    print(f"captured {done['ops']} oplog entries, {done['stored_bytes'] / 1024 / 1024:.1f} MiB stored")
    expected = list(client[SOURCE_DB].items.find().sort("_id"))
    client.drop_database(SOURCE_DB)

    began = time.perf_counter()
    for low in range(0, len(ops), 1000):
        client[RAW_DB].items.bulk_write(ops[low : low + 1000], ordered=True)
    raw_s = time.perf_counter() - began

    began = time.perf_counter()
    (bset,) = list_sets(storage, "mongo-oplog", "bench")
    with pitr.fetched_slices(storage, [bset], []) as copies:
        counts = pitr.replay(client, copies, [], start, Timestamp(2**31 - 1, 0), False)
    replay_s = time.perf_counter() - began
    same = list(client[SOURCE_DB].items.find().sort("_id")) == expected
    print(f"raw bulk_write: {raw_s:.2f} s ({len(ops) / raw_s:.0f} ops/s)")
    print(f"replay (manual): {replay_s:.2f} s ({counts['ops_applied'] / replay_s:.0f} ops/s), result identical: {same}")
    print(f"replay throughput ratio (raw time / replay time): {raw_s / replay_s:.2f}")
    for name in (SOURCE_DB, RAW_DB):
        client.drop_database(name)


class TimedStorage:
    """A storage that notes when each manifest was written (the moment a slice becomes restorable)."""

    def __init__(self, inner):
        self.inner = inner
        self.committed: dict[str, float] = {}

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def put_bytes(self, key, data, *args, **kwargs):
        result = self.inner.put_bytes(key, data, *args, **kwargs)
        if key.endswith("/manifest.json"):
            self.committed[key.split("/")[2]] = time.time()
        return result


def lag_bench(uri: str, seconds: int, slice_seconds: int, work: str) -> None:
    client = pymongo.MongoClient(uri)
    storage = TimedStorage(open_storage(f"file://{work}/follow"))
    writes: list = []
    stop = threading.Event()

    def writer():
        with client.start_session() as session:
            n = 0
            while not stop.wait(0.02):
                n += 1
                client[SOURCE_DB].lag.insert_one({"_id": n}, session=session)
                writes.append((session.operation_time, time.time()))

    thread = threading.Thread(target=writer, daemon=True)
    position = pitr.Position(last_ts(client), "none", "bench start")
    thread.start()
    try:
        slices = []
        deadline = time.monotonic() + seconds
        while time.monotonic() < deadline:  # follow() without its listing: the position is known
            cut = time.monotonic() + slice_seconds
            done = pitr.capture_slice(client, storage, "bench-follow", OPTIONS, [], position)
            position = done.pop("position")
            if done["changed"]:
                slices.append(done)
            time.sleep(max(0.0, cut - time.monotonic()))
    finally:
        stop.set()
        thread.join()
    lags = []
    for ts, acked in writes:
        for bset in slices:
            if pitr.ts_from_fact(bset["from_ts"]) < ts <= pitr.ts_from_fact(bset["last_ts"]):
                lags.append(storage.committed[bset["backup_id"]] - acked)
    client.drop_database(SOURCE_DB)
    print(
        f"follow, slice_seconds={slice_seconds}: {len(slices)} slices, {len(lags)} of {len(writes)} writes captured; "
        f"capture lag mean {statistics.mean(lags):.2f} s, p95 {sorted(lags)[int(len(lags) * 0.95)]:.2f} s, "
        f"max {max(lags):.2f} s"
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--ops", type=int, default=5000)
    parser.add_argument("--follow-seconds", type=int, default=12)
    parser.add_argument("--slice-seconds", type=int, default=2)
    args = parser.parse_args()
    uri = os.environ.get("CAAS_MONGO_URI")
    if not uri:
        raise SystemExit("CAAS_MONGO_URI is not set: run through scripts/with-services (make bench)")
    with tempfile.TemporaryDirectory(prefix="caas-bench-pitr-") as work:
        for sub in ("replay", "follow"):
            os.mkdir(os.path.join(work, sub))
        replay_bench(uri, args.ops, work)
        lag_bench(uri, args.follow_seconds, args.slice_seconds, work)


if __name__ == "__main__":
    main()
