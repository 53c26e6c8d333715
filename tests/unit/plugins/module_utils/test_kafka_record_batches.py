"""Kafka message capture and restore logic on recorded record batches and fetch answers.

These cover what Tansu (the test broker) cannot show, so they have no integration test: a log start that moved
past the captured position (Tansu has no DeleteRecords and its memory engine no retention), aborted
transactions mixed with committed ones in one fetch answer at known offsets, corrupted batches, and a chain of
sets with a hole. Batches are built with kafka-python's own record-batch builder, as a broker stores them.
"""

import contextlib
import io
import struct
import warnings

import pytest

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.record._crc32c import crc as crc32c
    from kafka.record.default_records import DefaultRecordBatch, DefaultRecordBatchBuilder

from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError, SourceError
from ansible_collections.caas.backup.plugins.module_utils.kafka import messages
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Fetched
from ansible_collections.caas.backup.plugins.module_utils.monitoring import DEFAULT_MAX_AGE_HOURS, summarize
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions


def batch(base, count, producer_id=-1, transactional=False, control=None, ts=1000, codec=0, headers=()):
    """A stored record batch at ``base`` of ``count`` records (or one control record: 0 abort, 1 commit)."""
    epoch = 0 if producer_id >= 0 else -1
    builder = DefaultRecordBatchBuilder(2, codec, transactional, producer_id, epoch, 0, 1 << 20)
    if control is None:
        for i in range(count):
            value = None if i == 1 else f"v{base + i}".encode() * (40 if codec else 1)  # worth compressing
            builder.append(i, ts + i, None if i == 2 else f"k{base + i}".encode(), value, list(headers))
    else:
        builder.append(0, ts, struct.pack(">hh", 0, control), struct.pack(">hi", 0, 0), [])
    data = bytearray(builder.build())
    struct.pack_into(">q", data, 0, base)
    if control is not None:
        attributes = struct.unpack_from(">h", data, 21)[0] | 0x20
        struct.pack_into(">h", data, 21, attributes)
        struct.pack_into(">I", data, 17, crc32c(memoryview(data)[21:]))
    return bytes(data)


def test_split_batches_reads_headers_and_stops_at_a_cut_batch():
    data = batch(0, 3) + batch(3, 2)
    found = list(messages.split_batches(data))
    assert [(b.base_offset, b.last_offset, b.count) for b in found] == [(0, 2, 3), (3, 4, 2)]
    assert bytes(found[1].data) == batch(3, 2)
    assert len(list(messages.split_batches(data[:-5]))) == 1  # a fetch answer cut by max_bytes
    with pytest.raises(IntegrityError, match="truncated or malformed"):
        list(messages.split_batches(data[:-5], "seg", partial_ok=False))
    old = bytearray(batch(0, 1))
    old[16] = 1
    with pytest.raises(IntegrityError, match="magic v1 message set"):
        list(messages.split_batches(bytes(old)))


def test_read_committed_drops_control_batches_and_aborted_transactions():
    """Producer 7 aborts (offsets 2-3, marker 4), producer 8 commits (5-6, marker 7) in between plain batches."""
    data = (
        batch(0, 2)
        + batch(2, 2, producer_id=7, transactional=True)
        + batch(4, 1, producer_id=7, transactional=True, control=0)
        + batch(5, 2, producer_id=8, transactional=True)
        + batch(7, 1, producer_id=8, transactional=True, control=1)
        + batch(8, 1, producer_id=7, transactional=True)  # producer 7's next transaction, not aborted
    )
    kept = list(messages.committed(messages.split_batches(data), [(7, 2)]))
    assert [b.base_offset for b in kept] == [0, 5, 8]
    everything = list(messages.committed(messages.split_batches(data), []))
    assert [b.base_offset for b in everything] == [0, 2, 5, 8]  # only markers go without aborted transactions


class RecordedCluster:
    """A cluster answering Fetch from recorded logs: {(topic, partition): (log start, [batches])}."""

    cluster_id = "recorded"
    brokers = 1

    def __init__(self, logs, groups=None):
        self.logs = logs
        self.committed = groups or {}

    def topics(self):
        return {t: {"partitions": 1 + max(p for tt, p in self.logs if tt == t)} for t, _p in self.logs}

    def leaders(self, names):
        return {k: 1 for k in self.logs if k[0] in names}

    def groups(self):
        return sorted(self.committed)

    def group_offsets(self, group_id):
        return {k: (o, "") for k, o in self.committed[group_id].items()}

    def fetch(self, leader, wanted, max_bytes, max_wait_ms=10):
        out = {}
        for key, offset in wanted.items():
            start, batches = self.logs[key]
            end = max((b.last_offset + 1 for b in map(self._head, batches)), default=start)
            if offset < start or offset > end:
                out[key] = Fetched(1, end, end, start, [], b"")
                continue
            data = b"".join(b for b in batches if self._head(b).last_offset >= offset)
            out[key] = Fetched(0, end, end, start, [], data[: max(max_bytes, len(batches[0]) if batches else 0)])
        return out

    @staticmethod
    def _head(data):
        return next(messages.split_batches(data))


def test_a_capture_after_retention_deleted_records_reports_exactly_the_lost_offsets(tmp_path):
    storage = open_storage(f"file://{tmp_path}")
    options = WriteOptions("none")
    logs = {("orders", 0): (0, [batch(0, 5), batch(5, 5)]), ("orders", 1): (0, [batch(0, 4)])}
    cluster = RecordedCluster(logs, {"billing": {("orders", 0): 3}})
    first = messages.capture(cluster, storage, "kafka-x", options, [], messages.CaptureOptions())
    assert first["records"] == 14 and first["lost"] == {} and first["positions"] == {"orders-0": 10, "orders-1": 4}
    # Records 10-24 are written, then retention deletes everything before 20 before the next capture.
    logs[("orders", 0)] = (20, [batch(20, 5)])
    logs[("orders", 1)] = (0, [batch(0, 4), batch(4, 2)])
    planned = messages.capture(cluster, storage, "kafka-x", None, [], messages.CaptureOptions(), check_mode=True)
    assert planned["lost"] == {"orders-0": [[10, 20]]} and planned["pending"] == {"orders-0": 5, "orders-1": 2}
    second = messages.capture(cluster, storage, "kafka-x", options, [], messages.CaptureOptions())
    assert second["lost"] == {"orders-0": [[10, 20]]} and second["records"] == 7
    assert second["continues"] == f"set {first['backup_id']}"
    sets = [s for s in list_sets(storage, "kafka-messages") if s.complete]
    facts = sets[-1].facts["partitions"]["orders-0"]
    assert (facts["continued_from"], facts["from_offset"], facts["first_offset"], facts["next_offset"]) == (
        10,
        10,
        20,
        25,
    )
    assert sets[-1].facts["lost_records"] == 10
    # backup_info raises a critical alert naming the lost offsets.
    summary = summarize(sets, sets[-1].time, DEFAULT_MAX_AGE_HOURS, 0)
    [alert] = [a for a in summary["alerts"] if "lost records" in a["message"]]
    assert alert["severity"] == "critical" and "orders-0 10..19" in alert["message"]
    # The restore plan names the hole; its segments are the chain's, in order.
    plans = messages.plan_partitions(sets, [])
    assert plans[("orders", 0)].holes == [[10, 20]]
    assert [s["first_offset"] for _b, s in plans[("orders", 0)].segments] == [0, 20]
    assert plans[("orders", 1)].holes == [] and plans[("orders", 1)].reach == 6


def test_a_log_shorter_than_the_captured_position_is_refused(tmp_path):
    storage = open_storage(f"file://{tmp_path}")
    logs = {("orders", 0): (0, [batch(0, 5)])}
    messages.capture(RecordedCluster(logs), storage, "kafka-x", WriteOptions("none"), [], messages.CaptureOptions())
    logs[("orders", 0)] = (0, [batch(0, 2)])  # the topic was recreated
    with pytest.raises(SourceError, match="before the captured position 5: the topic was recreated"):
        messages.capture(RecordedCluster(logs), storage, "kafka-x", WriteOptions("none"), [], messages.CaptureOptions())


def test_check_segment_verifies_crcs_offsets_and_counts():
    data = batch(0, 3) + batch(3, 2)
    facts = {"records": 5, "first_offset": 0, "last_offset": 4}
    messages.check_segment(io.BytesIO(data), "seg", facts)
    damaged = bytearray(data)
    damaged[-3] ^= 0xFF
    with pytest.raises(IntegrityError, match="record batch at offset 3 fails its CRC"):
        messages.check_segment(io.BytesIO(bytes(damaged)), "seg", facts)
    with pytest.raises(IntegrityError, match="its manifest says 6"):
        messages.check_segment(io.BytesIO(data), "seg", dict(facts, records=6))
    with pytest.raises(IntegrityError, match="truncated"):
        messages.check_segment(io.BytesIO(data[:-4]), "seg", facts)
    assert DefaultRecordBatch(batch(3, 2)).validate_crc()


def test_origin_header_and_segment_names():
    class Record:
        headers = [(messages.ORIGIN_HEADER, b"7"), ("trace", b"x"), (messages.ORIGIN_HEADER, b"42")]

    assert messages.origin_of(Record()) == 42  # a restore of restored records: the last header is the restore's
    assert messages.segment_stem("orders", 2, 1500) == "orders-2-00000000000000001500.log"


def test_backup_verify_checks_every_segment_of_a_message_set(tmp_path):
    from ansible_collections.caas.backup.plugins.module_utils.verify import verify_set

    storage = open_storage(f"file://{tmp_path}")
    logs = {("orders", 0): (0, [batch(0, 5), batch(5, 5)]), ("orders", 1): (0, [batch(0, 4)])}
    messages.capture(RecordedCluster(logs), storage, "kafka-x", WriteOptions("none"), [], messages.CaptureOptions())
    [bset] = [s for s in list_sets(storage, "kafka-messages") if s.complete]
    report = verify_set(storage, bset, [], "checksum")
    assert report["ok"] and report["checks"][-1] == {
        "check": "checksum every object",
        "ok": True,
        "segments": 2,
        "records": 14,
    }
    segment = tmp_path / bset.prefix / "orders-1-00000000000000000000.log"
    data = bytearray(segment.read_bytes())
    data[-2] ^= 0xFF  # a flipped bit: its sha256 fails (the CRC check itself: test_check_segment_verifies_crcs...)
    segment.write_bytes(bytes(data))
    broken = verify_set(storage, bset, [], "checksum")
    assert not broken["ok"] and any("sha256" in c["check"] and not c["ok"] for c in broken["checks"])


class Copy:
    """A verified local copy, as fetch_object yields it, of a segment's bytes."""

    def __init__(self, data, name="seg"):
        self.data, self.name = data, name

    def reader(self, identities):
        return contextlib.nullcontext(io.BytesIO(self.data))


def test_records_to_restore_give_each_offset_once_and_stop_at_the_target_time():
    overlapping = [Copy(batch(0, 4, ts=100)), Copy(batch(0, 4, ts=100) + batch(4, 3, ts=104))]  # a capture started over
    offsets = [r[0] for r in messages.records_to_restore(overlapping, [], None, None)]
    assert offsets == list(range(7))
    assert [r[0] for r in messages.records_to_restore(overlapping, [], 2, None)] == [3, 4, 5, 6]
    assert [r[0] for r in messages.records_to_restore(overlapping, [], None, 104)] == [0, 1, 2, 3, 4]


def decoded(data):
    """(offset, timestamp, key, value, headers) of every record of a batch, as kafka-python's consumer reads them."""
    records = DefaultRecordBatch(data)
    return [(r.offset, r.timestamp, r.key, r.value, list(r.headers)) for r in records]


@pytest.mark.parametrize("codec", [0, 1, 2, 3, 4], ids=["none", "gzip", "snappy", "lz4", "zstd"])
def test_restored_batches_keep_every_record_and_add_its_origin_offset(codec):
    """Records of stored batches (any codec) re-framed into new batches: as kafka-python decodes them."""
    stored = [batch(10, 4, codec=codec, headers=[("trace", b"t1")]), batch(14, 3, codec=codec, ts=900)]
    heads = [next(messages.split_batches(b)) for b in stored]
    assert [h.attributes & 7 for h in heads] == [codec, codec]
    records = [r for h in heads for r in messages.batch_records(h)]
    [(data, count, first, last)] = list(messages.restored_batches(iter(records)))
    assert (count, first, last) == (7, 10, 16)
    assert DefaultRecordBatch(data).validate_crc() and messages.crc_ok(next(messages.split_batches(data)))
    head = next(messages.split_batches(data))
    assert (head.producer_id, head.attributes, head.first_timestamp, head.max_timestamp) == (-1, 0, 1000, 1003)
    want = []
    for original in stored:
        for offset, timestamp, key, value, headers in decoded(original):
            want.append((offset - 10, timestamp, key, value, [*headers, (messages.ORIGIN_HEADER, b"%d" % offset)]))
    assert decoded(data) == want  # the timestamps go back (900 after 1003): a negative delta
    assert want[1][3] is None and want[2][2] is None  # a tombstone and a null key kept


def test_restored_batches_split_at_the_size_and_a_log_append_time_batch_keeps_its_time():
    appended = bytearray(batch(0, 5))
    struct.pack_into(">h", appended, 21, 0x08)  # LogAppendTime: every record has the batch's max timestamp
    struct.pack_into(">q", appended, 35, 5000)
    struct.pack_into(">I", appended, 17, crc32c(memoryview(appended)[21:]))
    records = list(messages.batch_records(next(messages.split_batches(bytes(appended)))))
    assert [r[1] for r in records] == [5000] * 5
    parts = list(messages.restored_batches(iter(records), max_bytes=70))
    assert len(parts) > 1 and all(len(d) - 61 <= 70 for d, *_rest in parts)  # 61: the batch header
    assert parts[0][2] == 0 and parts[-1][3] == 4
    assert [first for _d, _c, first, _l in parts][1:] == [last + 1 for _d, _c, _f, last in parts][:-1]
    assert sum(count for _d, count, _f, _l in parts) == 5
    second = next(iter(DefaultRecordBatch(parts[1][0])))
    assert second.offset == 0 and messages.origin_of(second) == parts[1][2]


def test_a_record_larger_than_the_batch_size_goes_alone_and_batches_carry_the_producer_and_its_sequence():
    big = (3, 1000, b"\x02k" + b"\xd0\x0f" + b"x" * 1000, 0, b"")  # key "k", a 1000-byte value
    small = [(i, 1000, b"\x02k\x02v", 0, b"") for i in (0, 1, 2, 4, 5)]
    parts = list(messages.restored_batches(iter([*small[:3], big, *small[3:]]), max_bytes=100, producer=(7, 3)))
    assert [(count, first, last) for _d, count, first, last in parts] == [(3, 0, 2), (1, 3, 3), (2, 4, 5)]
    heads = [next(messages.split_batches(d)) for d, *_rest in parts]
    assert [h.producer_id for h in heads] == [7, 7, 7]
    assert [struct.unpack_from(">hi", d, 51) for d, *_rest in parts] == [(3, 0), (3, 3), (3, 4)]  # epoch, sequence
    assert next(iter(DefaultRecordBatch(parts[1][0]))).value == b"x" * 1000
    plain = next(messages.restored_batches(iter(small)))
    assert struct.unpack_from(">qhi", plain[0], 43) == (-1, -1, -1)  # no producer: no id, epoch or sequence


def test_a_batch_claiming_more_records_than_it_holds_fails_the_segment_check():
    data = bytearray(batch(0, 2))
    struct.pack_into(">i", data, 57, 3)  # says 3 records, holds 2
    struct.pack_into(">I", data, 17, crc32c(memoryview(data)[21:]))
    with pytest.raises(IntegrityError, match="seg: the record batch at offset 0 has a record that does not fit it"):
        messages.check_segment(io.BytesIO(bytes(data)), "seg", {"records": 3, "first_offset": 0, "last_offset": 1})


def test_a_batch_with_bytes_after_its_records_is_refused():
    data = bytearray(batch(0, 2))
    struct.pack_into(">i", data, 57, 1)  # says 1 record, holds 2
    struct.pack_into(">I", data, 17, crc32c(memoryview(data)[21:]))
    with pytest.raises(IntegrityError, match="bytes after its 1 records"):
        list(messages.batch_records(next(messages.split_batches(bytes(data)))))


def test_a_codec_this_host_cannot_read_fails_the_segment_check_by_name(monkeypatch):
    """The library is made to look missing (it is installed here: meta/ee-requirements.txt)."""
    from kafka import codec

    data = batch(0, 3, codec=2)
    assert next(messages.split_batches(data)).attributes & 7 == 2
    messages.check_segment(io.BytesIO(data), "seg", {"records": 3, "first_offset": 0, "last_offset": 2})
    monkeypatch.setattr(codec, "has_snappy", lambda: False)
    with pytest.raises(ConfigurationError, match="snappy-compressed: install the Python library python-snappy"):
        messages.check_segment(io.BytesIO(data), "seg", {"records": 3, "first_offset": 0, "last_offset": 2})
