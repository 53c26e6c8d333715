"""The mongodump archive format, the namespace CRC, filters, renames and oplog diff translation.

MongoDB Database Tools (mongodump/mongorestore) cannot be installed here (no Debian bookworm or PyPI
package), so interoperability is pinned down by golden bytes built by hand from the format's
specification (mongo-tools ``common/archive/spec.md``, ``archive.go``, ``multiplexer.go``) with a
separate minimal BSON encoder, and by a reader that follows mongo-tools' demultiplexer.
"""

import io
import struct

import bson
import pytest
from bson import Timestamp

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError, SourceError
from ansible_collections.caas.backup.plugins.module_utils.mongo.archive import (
    OPLOG_NS,
    ArchiveReader,
    ArchiveWriter,
    Namespace,
    crc64,
    metadata_json,
    parse_metadata,
    signed64,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import ns_selected
from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import count_documents
from ansible_collections.caas.backup.plugins.module_utils.mongo.oplog import _diff_to_updates, apply_entries
from ansible_collections.caas.backup.plugins.module_utils.mongo.restore import Renamer

TERM = b"\xff\xff\xff\xff"


def cstring(text):
    return text.encode() + b"\x00"


def bson_doc(*fields):
    """A tiny BSON encoder independent of pymongo: (name, kind, value) with kind str/int32/int64/bool."""
    body = b""
    for name, kind, value in fields:
        if kind == "str":
            raw = value.encode()
            body += b"\x02" + cstring(name) + struct.pack("<i", len(raw) + 1) + raw + b"\x00"
        elif kind == "int32":
            body += b"\x10" + cstring(name) + struct.pack("<i", value)
        elif kind == "int64":
            body += b"\x12" + cstring(name) + struct.pack("<q", value)
        elif kind == "bool":
            body += b"\x08" + cstring(name) + (b"\x01" if value else b"\x00")
    return struct.pack("<i", len(body) + 5) + body + b"\x00"


def ns_header(db, coll, eof=False, crc=0):
    return bson_doc(("db", "str", db), ("collection", "str", coll), ("EOF", "bool", eof), ("CRC", "int64", crc))


def go_crc64_ecma(data):
    """Go's hash/crc64 with the ECMA table, bit by bit (reflected 0xC96C5795D7870F42, init and xorout ~0)."""
    crc = 0xFFFFFFFFFFFFFFFF
    for byte in data:
        crc ^= byte
        for _bit in range(8):
            crc = (crc >> 1) ^ (0xC96C5795D7870F42 if crc & 1 else 0)
    return crc ^ 0xFFFFFFFFFFFFFFFF


def test_crc_is_crc64_xz_as_go_computes_it():
    assert crc64(b"123456789") == 0x995DC9BBDF1939FA
    data = bytes(range(256)) * 3
    assert crc64(data) == go_crc64_ecma(data)


def test_crc_continues_across_documents():
    docs = [bson.encode({"_id": i, "v": "x" * i}) for i in range(50)]
    crc = 0
    for doc in docs:
        crc = crc64(doc, crc)
    assert crc == crc64(b"".join(docs)) == go_crc64_ecma(b"".join(docs))


def test_crc_is_stored_as_signed_int64():
    assert signed64(0x995DC9BBDF1939FA) == 0x995DC9BBDF1939FA - (1 << 64)
    assert signed64(5) == 5


def small_archive():
    """Two documents in app.users, a view, an empty oplog, written by the ArchiveWriter."""
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    users = Namespace("app", "users", metadata='{"indexes":[],"collectionName":"users","type":"collection"}')
    view = Namespace("app", "v", metadata='{"options":{},"collectionName":"v","type":"view"}', type="view")
    oplog = Namespace(*OPLOG_NS, type="")
    writer.prelude({"concurrent_collections": 4, "server_version": "8.2.11", "tool_version": "t"}, [users, view, oplog])
    docs = [bson.encode({"_id": 1}), bson.encode({"_id": 2, "n": "é"})]
    writer.write(users.key, b"".join(docs), 2)
    writer.close_namespace(users.key)
    writer.close_namespace(view.key)
    writer.close_namespace(oplog.key)
    return out.getvalue(), docs


def test_golden_bytes_follow_the_mongo_tools_layout():
    data, docs = small_archive()
    crc = go_crc64_ecma(b"".join(docs))
    expected = struct.pack("<I", 0x8199E26D)
    expected += bson_doc(
        ("concurrent_collections", "int32", 4),
        ("version", "str", "0.1"),
        ("server_version", "str", "8.2.11"),
        ("tool_version", "str", "t"),
    )
    for db, coll, meta, kind in (
        ("app", "users", '{"indexes":[],"collectionName":"users","type":"collection"}', "collection"),
        ("app", "v", '{"options":{},"collectionName":"v","type":"view"}', "view"),
        ("", "oplog", "", ""),
    ):
        expected += bson_doc(
            ("db", "str", db),
            ("collection", "str", coll),
            ("metadata", "str", meta),
            ("size", "int32", 0),
            ("type", "str", kind),
        )
    expected += TERM
    # Documents of a namespace, its segment closed, then its EOF with the CRC (multiplexer.go formatEOF).
    expected += ns_header("app", "users") + b"".join(docs) + TERM
    expected += ns_header("app", "users", True, crc - (1 << 64) if crc >= 1 << 63 else crc) + TERM
    # A namespace without documents (a view) still gets an empty segment before its EOF, as MuxIn.Close does.
    expected += ns_header("app", "v") + TERM + ns_header("app", "v", True, 0) + TERM
    expected += ns_header("", "oplog") + TERM + ns_header("", "oplog", True, 0) + TERM
    assert data == expected


def test_reader_round_trip_with_interleaved_segments():
    out = io.BytesIO()
    writer = ArchiveWriter(out)
    a, b = Namespace("d", "a"), Namespace("d", "b")
    writer.prelude({"concurrent_collections": 2}, [a, b])
    a_docs = [bson.encode({"_id": i}) for i in range(5)]
    b_docs = [bson.encode({"_id": i, "b": True}) for i in range(3)]
    writer.write(a.key, b"".join(a_docs[:2]), 2)
    writer.write(b.key, b"".join(b_docs), 3)
    writer.write(a.key, b"".join(a_docs[2:]), 3)
    writer.close_namespace(b.key)
    writer.close_namespace(a.key)
    reader = ArchiveReader(io.BytesIO(out.getvalue()))
    seen = [(ns.name, doc) for ns, doc in reader.documents()]
    assert [d for n, d in seen if n == "d.a"] == a_docs
    assert [d for n, d in seen if n == "d.b"] == b_docs
    prelude = reader.prelude
    assert [(ns.name, ns.documents, ns.closed) for ns in prelude.namespaces] == [("d.a", 5, True), ("d.b", 3, True)]
    assert prelude.header["version"] == "0.1"


def test_a_changed_document_byte_fails_its_namespace_crc():
    data, docs = small_archive()
    at = data.index(docs[1]) + len(docs[1]) - 3  # inside the string value
    corrupted = data[:at] + bytes([data[at] ^ 0x01]) + data[at + 1 :]
    with pytest.raises(IntegrityError, match="namespace app.users has CRC"):
        ArchiveReader(io.BytesIO(corrupted), "x").verify()


def test_every_truncation_is_detected():
    data = small_archive()[0]
    for cut in range(len(data)):
        with pytest.raises(IntegrityError):
            ArchiveReader(io.BytesIO(data[:cut]), "x").verify()
    assert ArchiveReader(io.BytesIO(data)).verify().get(("app", "users")).documents == 2


def test_not_an_archive():
    with pytest.raises(IntegrityError, match="not a mongodump archive"):
        ArchiveReader(io.BytesIO(bson.encode({"a": 1}))).read_prelude()


def test_metadata_is_canonical_extended_json():
    meta = {"options": {"capped": True, "size": 4096}, "indexes": [{"v": 2, "key": {"_id": 1}, "name": "_id_"}]}
    text = metadata_json(meta)
    assert text == (
        '{"options":{"capped":true,"size":{"$numberInt":"4096"}},'
        '"indexes":[{"v":{"$numberInt":"2"},"key":{"_id":{"$numberInt":"1"}},"name":"_id_"}]}'
    )
    assert parse_metadata(text) == meta
    assert parse_metadata("") == {}


def test_count_documents_in_a_raw_batch():
    assert count_documents(b"".join(bson.encode({"i": i}) for i in range(7))) == 7
    assert count_documents(b"") == 0


@pytest.mark.parametrize(
    ("name", "include", "exclude", "expected"),
    [
        ("app.users", [], [], True),
        ("app.users", ["app.*"], [], True),
        ("app.users", ["other.*"], [], False),
        ("app.users", [], ["app.us*"], False),
        ("app.users", ["app.*"], ["*.users"], False),
    ],
)
def test_namespace_filters(name, include, exclude, expected):
    assert ns_selected(name, include, exclude) is expected


def test_renames_carry_wildcards_over():
    rename = Renamer(["shop.*", "a.b*c"], ["shop_copy.*", "x.y*z"])
    assert rename("shop.orders") == "shop_copy.orders"
    assert rename("a.b_mid_c") == "x.y_mid_z"
    assert rename("other.c") == "other.c"


@pytest.mark.parametrize(
    ("ns_from", "ns_to"),
    [(["a.*"], []), (["a.*"], ["b.c"]), (["a"], ["b"])],
)
def test_bad_renames(ns_from, ns_to):
    with pytest.raises(ConfigurationError):
        Renamer(ns_from, ns_to)


def test_server_form_of_update_diffs():
    diff = {"u": {"x": 2}, "i": {"new": 1}, "d": {"old": False}, "ssub": {"u": {"a": 1}}, "sarr": {"a": True, "u1": 9}}
    sets, unsets, truncs = _diff_to_updates(diff)
    assert sets == {"x": 2, "new": 1, "sub.a": 1, "arr.1": 9}
    assert unsets == {"old": ""}
    assert truncs == {}
    assert _diff_to_updates({"sarr": {"a": True, "l": 2}})[2] == {"arr": 2}


def test_secantus_form_of_update_diffs():
    diff = {"updatedFields": {"x": 2, "sub.b": 2}, "removedFields": ["arr"], "truncatedArrays": []}
    assert _diff_to_updates(diff) == ({"x": 2, "sub.b": 2}, {"arr": ""}, {})


class FakeDatabase:
    def __init__(self, client, name):
        self.client, self.name = client, name

    def list_collection_names(self):
        return sorted(self.client.collections.get(self.name, ()))

    def command(self, command):
        self.client.log.append((self.name, dict(command)))

    def drop_collection(self, name):
        self.client.log.append((self.name, {"drop": name}))


class FakeClient:
    """Records the commands an oplog replay sends."""

    def __init__(self, collections):
        self.collections = collections
        self.log = []

    def __getitem__(self, name):
        return FakeDatabase(self, name)


def test_replayed_commands_follow_the_restore_mapping():
    client = FakeClient({"app": {"users", "logs"}, "other": {"keep"}})
    keep_app = {"app.users": "copy.users"}.get
    entries = [
        # A server's createIndexes entry: one index, fields at the top level.
        {"op": "c", "ns": "app.$cmd", "o": {"createIndexes": "users", "v": 2, "key": {"email": 1}, "name": "email_1"}},
        {"op": "c", "ns": "app.$cmd", "o": {"startIndexBuild": "users", "indexes": []}},
        {"op": "c", "ns": "app.$cmd", "o": {"dropDatabase": 1}},
        {"op": "c", "ns": "other.$cmd", "o": {"drop": "keep"}},
    ]
    applied = apply_entries(client, entries, keep_app)
    assert client.log == [
        ("copy", {"createIndexes": "users", "indexes": [{"v": 2, "key": {"email": 1}, "name": "email_1"}]}),
        ("copy", {"drop": "users"}),
    ]
    assert applied == {"app.$cmd": 2}


def test_unsupported_oplog_commands_are_named():
    with pytest.raises(SourceError, match="convertToCapped"):
        apply_entries(FakeClient({}), [{"op": "c", "ns": "a.$cmd", "o": {"convertToCapped": "b", "size": 10}}])


def test_time_series_data_lives_in_its_buckets_namespace():
    """As mongodump archives it: the prelude names the time series, the segments its system.buckets collection."""
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import data_namespace, import_archive

    out = io.BytesIO()
    writer = ArchiveWriter(out)
    weather = Namespace("iot", "weather", metadata='{"type":"timeseries"}', type="timeseries")
    writer.prelude({"concurrent_collections": 1}, [weather])
    buckets = data_namespace(writer, weather)
    assert buckets.key == ("iot", "system.buckets.weather")
    writer.write(buckets.key, bson.encode({"_id": 1}) + bson.encode({"_id": 2}), 2)
    writer.close_namespace(buckets.key)
    data = out.getvalue()
    assert ns_header("iot", "system.buckets.weather") in data and ns_header("iot", "weather") not in data
    prelude = ArchiveReader(io.BytesIO(data)).verify()
    assert [ns.name for ns in prelude.collections()] == ["iot.weather"]
    assert prelude.data_of(prelude.get(("iot", "weather"))).documents == 2
    facts = import_archive(io.BytesIO(data), io.BytesIO(), "x")
    assert facts["collections"] == [{"ns": "iot.weather", "type": "timeseries", "documents": 2, "bytes": 2 * 14}]
    assert facts["consistent"] is False and facts["last_ts"] is None


class FakeOplog:
    def __init__(self, entries):
        self.entries = entries

    def find_raw_batches(self, query, batch_size):
        low = query["ts"]["$gte"]
        chosen = [bson.encode(e) for e in self.entries if e["ts"] >= low]
        for start in range(0, len(chosen), 2):
            yield b"".join(chosen[start : start + 2])


class FakeLocal:
    def __init__(self, entries):
        self.oplog = FakeOplog(entries)

    def get_collection(self, name):
        assert name == "oplog.rs"
        return self.oplog


class FakeSource:
    def __init__(self, entries):
        self.local = FakeLocal(entries)


def oplog_archive():
    writer = ArchiveWriter(io.BytesIO())
    writer.prelude({}, [Namespace(*OPLOG_NS, type="")])
    return writer


def test_oplog_window_ends_at_the_last_entry_read():
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import _write_oplog

    entries = [{"ts": Timestamp(100, i), "op": "n", "ns": "", "o": {}} for i in range(1, 6)]
    facts = _write_oplog(FakeSource(entries), oplog_archive(), Timestamp(100, 2))
    assert facts["first_ts"]["i"] == 2 and facts["last_ts"]["i"] == 5
    assert facts["oplog_entries"] == 4 and facts["consistent"] is True


def test_oplog_rolled_over_past_the_start_fails_the_dump():
    from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import _write_oplog

    entries = [{"ts": Timestamp(100, i), "op": "n", "ns": "", "o": {}} for i in range(4, 6)]
    with pytest.raises(SourceError, match="rolled over"):
        _write_oplog(FakeSource(entries), oplog_archive(), Timestamp(100, 2))
    with pytest.raises(SourceError, match="rolled over"):
        _write_oplog(FakeSource([]), oplog_archive(), Timestamp(100, 2))
