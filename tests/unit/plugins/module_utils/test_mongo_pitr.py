"""Point-in-time recovery logic without a server: targets, chains and windows, slice framing, transactions."""

import io

import bson
import pytest
from bson import Timestamp
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError
from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr
from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import ts_fact
from ansible_collections.caas.backup.plugins.module_utils.mongo.oplog import apply_entries
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions


@pytest.mark.parametrize(
    ("value", "expected"),
    [
        ("2026-02-21T10:30:00Z", Timestamp(1771669800, 0)),
        ({"t": 1771669800, "i": 3}, Timestamp(1771669800, 3)),
        ('{"t": 5, "i": 1}', Timestamp(5, 1)),
    ],
)
def test_targets(value, expected):
    assert pitr.parse_target(value) == expected


@pytest.mark.parametrize("value", ["yesterday", {"i": 1}, "", None])
def test_bad_targets(value):
    with pytest.raises(ConfigurationError):
        pitr.parse_target(value)


def entry(t, i=1, **more):
    return {"ts": Timestamp(t, i), "op": "n", "ns": "", "o": {}, **more}


def add(storage, kind, facts, docs=(), signer=None):
    writer = SetWriter(storage, kind, "rs0", WriteOptions("none", signer=signer))
    with writer.object("dump.archive" if kind == "mongo-full" else pitr.STEM) as out:
        for doc in docs:
            out.write(bson.encode(doc))
    writer.commit(facts)
    return writer.backup_id


def slice_facts(first, last, ops=1):
    return {"first_ts": ts_fact(first), "last_ts": ts_fact(last), "ops": ops}


@pytest.fixture()
def storage(tmp_path):
    return open_storage(f"file://{tmp_path}")


def test_plan_picks_the_newest_base_before_the_target_and_the_slices_up_to_it(storage):
    old = add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(100, 1))})
    new = add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(200, 1))})
    s1 = add(storage, "mongo-oplog", slice_facts(Timestamp(100, 1), Timestamp(150, 1)))
    s2 = add(storage, "mongo-oplog", slice_facts(Timestamp(150, 1), Timestamp(250, 1)))
    s3 = add(storage, "mongo-oplog", slice_facts(Timestamp(250, 1), Timestamp(300, 1)))
    plan = pitr.plan_restore(storage, None, Timestamp(120, 0))
    assert plan.chain.base.backup_id == old and [s.backup_id for s in plan.slices] == [s1]
    plan = pitr.plan_restore(storage, "rs0", Timestamp(260, 0))
    assert plan.chain.base.backup_id == new and [s.backup_id for s in plan.slices] == [s2, s3]
    assert plan.summary()["window"] == {"earliest": ts_fact(Timestamp(100, 1)), "latest": ts_fact(Timestamp(300, 1))}
    assert pitr.plan_restore(storage, "rs0", Timestamp(300, 2)).target == Timestamp(300, 2)
    for outside in (Timestamp(100, 1), Timestamp(50, 0), Timestamp(300, 3)):
        with pytest.raises(ConfigurationError, match=r"restorable window of rs0 is \[1970-01-01T00:01:40Z"):
            pitr.plan_restore(storage, "rs0", outside)


def test_with_trusted_signers_only_signed_sets_are_planned(storage):
    """A forged slice (unsigned) extending the window is not used once trusted signers are given."""
    key = SigningKey(Ed25519PrivateKey.generate())
    trust = parse_trusted([key.public_line()], "trusted_signers")
    base = add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(100, 1))}, signer=key)
    signed = add(storage, "mongo-oplog", slice_facts(Timestamp(100, 1), Timestamp(150, 1)), signer=key)
    forged = add(storage, "mongo-oplog", slice_facts(Timestamp(150, 1), Timestamp(250, 1)))
    assert [s.backup_id for s in pitr.plan_restore(storage, None, Timestamp(200, 0)).slices] == [signed, forged]
    plan = pitr.plan_restore(storage, None, Timestamp(120, 0), trust)
    assert plan.chain.base.backup_id == base and [s.backup_id for s in plan.slices] == [signed]
    with pytest.raises(ConfigurationError, match="restorable window of rs0"):
        pitr.plan_restore(storage, "rs0", Timestamp(200, 0), trust)


def test_a_gap_in_the_chain_is_named(storage):
    add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(100, 1))})
    add(storage, "mongo-oplog", slice_facts(Timestamp(100, 1), Timestamp(150, 1)))
    add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(200, 1))})
    add(storage, "mongo-oplog", slice_facts(Timestamp(200, 1), Timestamp(250, 1)))
    with pytest.raises(ConfigurationError, match="falls in a gap"):
        pitr.plan_restore(storage, "rs0", Timestamp(170, 0))


def test_capture_position_continues_the_newest_slice_and_restarts_only_when_the_oplog_rolled(storage):
    """A full backup taken after the last slice never moves the position: the entries between would be lost."""
    with pytest.raises(pitr.NotFoundError, match="take a full backup"):
        pitr.capture_position(storage, "rs0")
    full = add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(100, 1))})
    assert pitr.capture_position(storage, "rs0").ts == Timestamp(100, 1)
    add(storage, "mongo-oplog", {**slice_facts(Timestamp(100, 1), Timestamp(150, 1)), "base_backup_id": full})
    position = pitr.capture_position(storage, "rs0", oldest=Timestamp(90, 1))
    assert position.ts == Timestamp(150, 1) and position.base_backup_id == full
    newer = add(storage, "mongo-full", {"last_ts": ts_fact(Timestamp(400, 1))})
    position = pitr.capture_position(storage, "rs0", oldest=Timestamp(90, 1))
    assert position.ts == Timestamp(150, 1) and position.base_backup_id == full
    assert position.after.startswith("slice ")
    # The oplog rolled past the slice (oldest entry 300), but the newer full backup lies inside it.
    restarted = pitr.capture_position(storage, "rs0", oldest=Timestamp(300, 1))
    assert restarted.ts == Timestamp(400, 1) and restarted.base_backup_id == newer
    add(storage, "mongo-oplog", {**slice_facts(Timestamp(150, 1), Timestamp(450, 1)), "base_backup_id": full})
    assert pitr.capture_position(storage, "rs0").base_backup_id == newer  # the newest full before the slice's end
    with pytest.raises(pitr.ChainBroken, match="PITR chain broken since 1970-01-01T00:02:30Z") as info:
        pitr.check_chain(pitr.Position(Timestamp(150, 1), full, "slice x"), Timestamp(160, 1), "rs0")
    assert info.value.details == {"chain_broken": True}


def test_slice_framing_and_counts_are_checked():
    data = b"".join(bson.encode(entry(t)) for t in (1, 2, 3))
    assert pitr.check_slice(io.BytesIO(data), "s", {"ops": 3, "last_ts": ts_fact(Timestamp(3, 1))})["ops"] == 3
    with pytest.raises(IntegrityError, match="manifest says 4"):
        pitr.check_slice(io.BytesIO(data), "s", {"ops": 4})
    with pytest.raises(IntegrityError, match="truncated"):
        pitr.check_slice(io.BytesIO(data[:-5]), "s", {})
    with pytest.raises(IntegrityError, match="invalid BSON document length"):
        pitr.check_slice(io.BytesIO(b"\xff\xff\xff\x7f" + data), "s", {})


def test_split_and_prepared_transactions_are_joined_and_aborted_ones_dropped():
    lsid = {"lsid": {"id": "a"}, "txnNumber": 1}
    ins = {"op": "i", "ns": "d.c", "o": {"_id": 1}}
    upd = {"op": "u", "ns": "d.c", "o": {"$set": {"x": 1}}, "o2": {"_id": 1}}
    entries = [
        entry(1, op="c", ns="admin.$cmd", o={"applyOps": [ins], "partialTxn": True}, **lsid),
        entry(2, op="c", ns="admin.$cmd", o={"applyOps": [upd], "count": 2}, **lsid),
        entry(3, op="c", ns="admin.$cmd", o={"applyOps": [ins], "prepare": True}, lsid={"id": "b"}, txnNumber=1),
        entry(4, op="c", ns="admin.$cmd", o={"commitTransaction": 1}, lsid={"id": "b"}, txnNumber=1),
        entry(5, op="c", ns="admin.$cmd", o={"applyOps": [upd], "prepare": True}, lsid={"id": "c"}, txnNumber=1),
        entry(6, op="c", ns="admin.$cmd", o={"abortTransaction": 1}, lsid={"id": "c"}, txnNumber=1),
        entry(7),
    ]
    out = list(pitr.expand_transactions(entries))
    assert [e["ts"].time for e in out] == [2, 4, 7]
    assert out[0]["o"] == {"applyOps": [ins, upd]} and out[1]["o"] == {"applyOps": [ins]}


class Coll:
    def __init__(self, log, name):
        self.log, self.name = log, name

    def __getattr__(self, method):
        return lambda *args, **kwargs: self.log.append((self.name, method, args))


class Db:
    def __init__(self, client, name):
        self.client, self.name = client, name

    def __getitem__(self, coll):
        return Coll(self.client.log, f"{self.name}.{coll}")

    def list_collection_names(self):
        return sorted(self.client.collections.get(self.name, ()))

    def command(self, command):
        self.client.log.append((self.name, "command", dict(command)))


class Client:
    def __init__(self, collections):
        self.collections, self.log = collections, []

    def __getitem__(self, name):
        return Db(self, name)

    @property
    def admin(self):
        return Db(self, "admin")


def test_transactions_renames_and_index_drops_replay():
    client = Client({"d": {"old"}})
    entries = [
        {"op": "c", "ns": "admin.$cmd", "o": {"applyOps": [{"op": "i", "ns": "d.c", "o": {"_id": 1}}]}},
        {"op": "c", "ns": "d.$cmd", "o": {"renameCollection": "d.old", "to": "d.new", "dropTarget": True}},
        {"op": "c", "ns": "d.$cmd", "o": {"renameCollection": "d.gone", "to": "d.new2"}},
        {"op": "c", "ns": "d.$cmd", "o": {"dropIndexes": "c", "index": "x_1", "key": {"x": 1}}},
        {"op": "c", "ns": "d.$cmd", "o": {"collMod": "c", "validator": {"x": {"$exists": True}}}},
    ]
    apply_entries(client, entries)
    assert client.log[0][:2] == ("d.c", "bulk_write")
    assert client.log[1:] == [
        ("admin", "command", {"renameCollection": "d.old", "to": "d.new", "dropTarget": True}),
        ("d", "command", {"dropIndexes": "c", "index": "x_1"}),
        ("d", "command", {"collMod": "c", "validator": {"x": {"$exists": True}}}),
    ]
