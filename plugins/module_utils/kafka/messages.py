# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kafka records: continuous capture as record-batch segments, restore with consumer offsets translated.

A capture writes **one set** (kind ``kafka-messages``) holding, per partition, the
read-committed record batches (magic v2) from where the previous set stopped up
to the last stable offset read at its start: the batches are the bytes the
broker sent, original offsets and CRCs included, so a decompressed segment is a
Kafka log segment (``kafka-dump-log.sh --files 00000000000000000000.log`` reads
it once renamed to its base offset). Control batches and batches of aborted
transactions are left out. The positions and the chain (continuation, lost
ranges, the lock) are :mod:`..chain`'s.

A restore verifies every segment (sha256, batch framing and CRCs, counts)
before producing anything, then produces the records of each partition in
order with key, value, headers and original timestamp, each with the header
:data:`ORIGIN_HEADER` (its source offset): a rerun reads the target partition's
last record and goes on after it, so an interrupted restore neither duplicates
nor skips. A group's committed source offset becomes the target offset of the
first restored record at or after it, found by a search over those headers.
"""

from __future__ import annotations

import collections
import contextlib
import struct
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    SetWriter,
    fetch_object,
    list_sets,
    set_order,
)
from ansible_collections.caas.backup.plugins.module_utils.chain import link, lost_range
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    Cluster,
    Fetched,
    RetriableError,
    broker_error,
    selected,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.metadata import offset_for_time, refuse_active
from ansible_collections.caas.backup.plugins.module_utils.stream import read_frames

try:
    from kafka import codec as codecs
    from kafka.record.default_records import DefaultRecordBatch

    # compression type: (name, the library to install, decompressor)
    _CODECS = {
        1: ("gzip", "", codecs.gzip_decode),
        2: ("snappy", "python-snappy", codecs.snappy_decode),
        3: ("lz4", "lz4", codecs.lz4_decode),
        4: ("zstd", "zstandard", codecs.zstd_decode),
    }
except ImportError:  # reported by the modules (kafka.client.kafka_module)
    pass

try:
    import anycrc

    _CRC32C = anycrc.Model("CRC32-ISCSI")  # Kafka's batch CRC (Castagnoli), in C
except ImportError:  # checked by BackupModule (libraries)
    _CRC32C = None

KIND = "kafka-messages"
STREAM = "kafka-messages"  # the capture lock's name
ORIGIN_HEADER = "caas.origin.offset"
FETCH_BYTES = 4 * 1024 * 1024  # per partition and request; the broker sends at least one whole batch
CAPTURE_WORKERS = 2  # partitions captured at once, each over its own connection with a Fetch in flight
FETCH_RETRY_SECONDS = 5.0  # how long a partition's read is asked again while the broker answers it with no batch
OFFSET_OUT_OF_RANGE = 1
# baseOffset, batchLength, partitionLeaderEpoch, magic, crc, attributes, lastOffsetDelta,
# firstTimestamp, maxTimestamp, producerId, producerEpoch, baseSequence, recordCount
_HEADER = struct.Struct(">qiibIhiqqqhii")
_CODEC, _LOG_APPEND_TIME, _TRANSACTIONAL, _CONTROL = 0x07, 0x08, 0x10, 0x20
_ABORT = 0
_CRC_FROM = 21  # a batch's CRC covers its bytes from the attributes on
# A restored batch's header after the CRC: attributes, lastOffsetDelta, firstTimestamp, maxTimestamp,
# producerId, producerEpoch, baseSequence (the idempotent producer's, see build_batch), recordCount.
_RESTORED = struct.Struct(">hiqqqhii")
PRODUCE_BYTES = 512 * 1024  # a restored batch's records by default (below Kafka's default max.message.bytes of 1 MiB)
PRODUCE_RETRY_SECONDS = 60.0  # how long a batch is sent again after retriable errors (a leader election takes seconds)


# ---------------------------------------------------------------- record batches (pure)


@dataclass(frozen=True)
class Batch:
    """One record batch's header facts and its bytes (a view into what was read)."""

    base_offset: int
    last_offset: int
    first_timestamp: int
    max_timestamp: int
    producer_id: int
    attributes: int
    count: int
    data: memoryview

    @property
    def control(self) -> bool:
        return bool(self.attributes & _CONTROL)

    @property
    def transactional(self) -> bool:
        return bool(self.attributes & _TRANSACTIONAL)


def split_batches(data: bytes | memoryview, name: str = "fetched data", partial_ok: bool = True) -> Iterator[Batch]:
    """The record batches in ``data``; a cut last batch ends the list (``partial_ok``) or raises IntegrityError.

    Only magic v2 batches are read (Kafka 0.11+ writes nothing else); an
    older message set is refused by name.
    """
    view = memoryview(data)
    pos = 0
    while pos < len(view):
        if len(view) - pos < _HEADER.size:
            if partial_ok:
                return
            raise IntegrityError(f"{name} ends inside a record batch header at byte {pos}")
        base, length, _epoch, magic, _crc, attrs, delta, first_ts, max_ts, pid, _pe, _seq, count = _HEADER.unpack_from(
            view, pos
        )
        if magic != 2:
            raise IntegrityError(f"{name} holds a magic v{magic} message set at byte {pos}: only v2 batches are read")
        size = 12 + length
        if length < _HEADER.size - 12 or pos + size > len(view):
            if partial_ok and length >= _HEADER.size - 12:
                return
            raise IntegrityError(f"{name} has a truncated or malformed record batch at byte {pos}")
        yield Batch(base, base + delta, first_ts, max_ts, pid, attrs, count, view[pos : pos + size])
        pos += size


def control_type(batch: Batch) -> int:
    """The type of a control batch's marker: 0 abort, 1 commit (its record key: version, type)."""
    for record in DefaultRecordBatch(bytes(batch.data)):
        key = record.key or b""
        return struct.unpack(">hh", key[:4])[1] if len(key) >= 4 else -1
    return -1


def committed(batches: Iterator[Batch], aborted: list[tuple[int, int]]) -> Iterator[Batch]:
    """The batches a read-committed consumer delivers: no control batches, none of an aborted transaction.

    ``aborted`` is the Fetch answer's ``(producer id, first offset)`` list; a
    producer's batches from its first offset on are dropped until its abort
    marker, as Kafka's own consumer does.
    """
    pending = sorted(aborted, key=lambda a: a[1])
    active: set[int] = set()
    for batch in batches:
        while pending and pending[0][1] <= batch.last_offset:
            active.add(pending.pop(0)[0])
        if batch.control:
            if batch.producer_id in active and control_type(batch) == _ABORT:
                active.discard(batch.producer_id)
            continue
        if batch.transactional and batch.producer_id in active:
            continue
        yield batch


def segment_stem(topic: str, partition: int, first_offset: int) -> str:
    """A segment's object stem: ``<topic>-<partition>-<base offset, 20 digits>.log`` (Kafka's own file name)."""
    return f"{topic}-{partition}-{first_offset:020d}.log"


def crc_ok(batch: Batch) -> bool:
    """Whether a batch's CRC-32C (over its bytes from the attributes on) matches the one it carries."""
    return _CRC32C.calc(batch.data[_CRC_FROM:]) == struct.unpack_from(">I", batch.data, 17)[0]


def _varint(buf: bytes, pos: int) -> tuple[int, int]:
    """The zigzag varint at ``pos`` and the position after it."""
    value = shift = 0
    while True:
        byte = buf[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        if byte < 0x80:
            return (value >> 1) ^ -(value & 1), pos
        shift += 7


def _zigzag(value: int) -> bytes:
    """``value`` as a zigzag varint (Kafka's record fields)."""
    value = (value << 1) ^ (value >> 63)
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def decoder(batch: Batch) -> Callable[[bytes], bytes]:
    """The decompressor of a batch's records; ConfigurationError when its library is missing."""
    codec = batch.attributes & _CODEC
    if codec not in _CODECS:
        raise IntegrityError(f"the record batch at offset {batch.base_offset} has an unknown compression type {codec}")
    name, library, decompress = _CODECS[codec]
    if library and not getattr(codecs, f"has_{name}")():
        raise ConfigurationError(
            f"the record batch at offset {batch.base_offset} is {name}-compressed: install the Python library {library}"
        )
    return decompress


def batch_records(batch: Batch) -> Iterator[tuple[int, int, bytes, int, bytes]]:
    """A batch's records as ``(offset, timestamp, key and value bytes, header count, header bytes)``.

    The key, value and headers stay the stored bytes (varint lengths
    included): a restore re-frames records without decoding them. Records
    that do not fit their batch raise IntegrityError.
    """
    records = bytes(batch.data[_HEADER.size :])
    try:
        buf = decoder(batch)(records) if batch.attributes & _CODEC else records
    except (ConfigurationError, IntegrityError):
        raise
    except Exception as exc:  # noqa: BLE001 - each codec library raises its own error types
        raise IntegrityError(f"the record batch at offset {batch.base_offset} does not decompress: {exc}") from None
    append_time = batch.max_timestamp if batch.attributes & _LOG_APPEND_TIME else None
    pos = 0
    try:
        for _index in range(batch.count):
            length, pos = _varint(buf, pos)
            end = pos + length
            timestamp_delta, cursor = _varint(buf, pos + 1)  # after the (unused) record attributes
            offset_delta, start = _varint(buf, cursor)
            key_length, cursor = _varint(buf, start)
            value_length, cursor = _varint(buf, cursor + max(key_length, 0))
            cursor += max(value_length, 0)
            headers, after = _varint(buf, cursor)
            if length < 0 or after > end or end > len(buf):
                raise IndexError(pos)
            timestamp = append_time if append_time is not None else batch.first_timestamp + timestamp_delta
            yield batch.base_offset + offset_delta, timestamp, buf[start:cursor], headers, buf[after:end]
            pos = end
    except IndexError:
        raise IntegrityError(
            f"the record batch at offset {batch.base_offset} has a record that does not fit it (at byte {pos})"
        ) from None
    if pos != len(buf):
        raise IntegrityError(
            f"the record batch at offset {batch.base_offset} holds bytes after its {batch.count} records"
        )


def build_batch(
    records: list[bytes], first_timestamp: int, max_timestamp: int, producer: tuple = (-1, -1, -1)
) -> bytes:
    """A record batch (magic v2, uncompressed, CreateTime) of framed ``records``.

    ``producer`` is the idempotent producer's ``(id, epoch, base sequence)``
    (-1s: none).
    """
    tail = _RESTORED.pack(0, len(records) - 1, first_timestamp, max_timestamp, *producer, len(records))
    tail += b"".join(records)
    return struct.pack(">qiibI", 0, len(tail) + 9, -1, 2, _CRC32C.calc(tail)) + tail


_ORIGIN_KEY = _zigzag(len(ORIGIN_HEADER)) + ORIGIN_HEADER.encode()


def _framed(
    offset: int, timestamp: int, key_value: bytes, headers: int, header_bytes: bytes, first_ts: int, index: int
):
    """One record framed for a restored batch whose first timestamp is ``first_ts``, at ``index`` in it."""
    origin = str(offset).encode()
    body = b"".join(
        (
            b"\x00" + _zigzag(timestamp - first_ts) + _zigzag(index),
            key_value,
            _zigzag(headers + 1),
            header_bytes,
            _ORIGIN_KEY,
            _zigzag(len(origin)),
            origin,
        )
    )
    return _zigzag(len(body)) + body


def restored_batches(
    records: Iterator[tuple], max_bytes: int = PRODUCE_BYTES, producer: tuple[int, int] = (-1, -1)
) -> Iterator[tuple[bytes, int, int, int]]:
    """``(batch, records, first origin, last origin)``: the records re-framed into batches of at most ``max_bytes``.

    Each record keeps its key, value, headers and timestamp, and gains the
    header :data:`ORIGIN_HEADER` (its source offset, in decimal); a record
    larger than ``max_bytes`` goes alone. With an idempotent ``producer``
    (id, epoch), the batches carry it and their sequence numbers from 0.
    """
    framed: list[bytes] = []
    size = first_ts = max_ts = first = last = sequence = 0

    def batch() -> bytes:
        ident = (*producer, sequence) if producer[0] >= 0 else (-1, -1, -1)
        return build_batch(framed, first_ts, max_ts, ident)

    for record in records:
        offset, timestamp = record[0], record[1]
        one = _framed(*record, first_ts if framed else timestamp, len(framed))
        if framed and size + len(one) > max_bytes:
            yield batch(), len(framed), first, last
            sequence = (sequence + len(framed)) & 0x7FFFFFFF
            framed, size = [], 0
            one = _framed(*record, timestamp, 0)
        if not framed:
            first_ts = max_ts = timestamp
            first = offset
        framed.append(one)
        size += len(one)
        max_ts = max(max_ts, timestamp)
        last = offset
    if framed:
        yield batch(), len(framed), first, last


# ---------------------------------------------------------------- capture


@dataclass
class Stream:
    """One partition's capture: from where, up to where, and what was written."""

    topic: str
    partition: int
    continued_from: int | None  # the previous set's position (None: the first capture of this partition)
    position: int
    start: int = 0  # where this capture began reading (after a lost range)
    end: int = 0
    lost: list[list[int]] = field(default_factory=list)
    segments: list[dict] = field(default_factory=list)

    @property
    def key(self) -> str:
        return f"{self.topic}-{self.partition}"

    def facts(self) -> dict:
        records = sum(s["records"] for s in self.segments)
        return {
            "topic": self.topic,
            "partition": self.partition,
            "continued_from": self.continued_from,
            "from_offset": self.continued_from if self.continued_from is not None else self.start,
            "next_offset": self.position,
            "first_offset": self.segments[0]["first_offset"] if self.segments else None,
            "last_offset": self.segments[-1]["last_offset"] if self.segments else None,
            "records": records,
            "first_timestamp": min((s["first_timestamp"] for s in self.segments), default=None),
            "last_timestamp": max((s["last_timestamp"] for s in self.segments), default=None),
            "lost": self.lost,
            "segments": self.segments,
        }


def previous_positions(storage, source: str) -> tuple[dict[str, int], str]:
    """The positions the newest complete set of ``source`` stopped at, and ``"set <id>"`` (or ``"start"``)."""
    sets = [s for s in list_sets(storage, KIND, source) if s.complete]
    if not sets:
        return {}, "start"
    newest = max(sets, key=set_order)
    return dict(newest.facts.get("positions") or {}), f"set {newest.backup_id}"


def selected_partitions(cluster: Cluster, include: list, exclude: list) -> dict[tuple[str, int], int]:
    """``{(topic, partition): leader}`` of the selected topics (internal ones never)."""
    names = sorted(n for n in cluster.topics() if selected(n, include, exclude))
    return cluster.leaders(names) if names else {}


def group_positions(cluster: Cluster, topics: set[str], include: list, exclude: list) -> dict[str, dict]:
    """Every selected group's committed offsets on ``topics``: ``{group: {"topic-partition": offset}}``."""
    found = {}
    for group_id in cluster.groups():
        if not selected(group_id, include, exclude):
            continue
        offsets = {f"{t}-{p}": o for (t, p), (o, _meta) in cluster.group_offsets(group_id).items() if t in topics}
        if offsets:
            found[group_id] = dict(sorted(offsets.items()))
    return found


def open_streams(cluster: Cluster, leaders: dict, positions: dict[str, int]) -> dict[tuple[str, int], Stream]:
    """Each partition's stream: position checked against the log (lost ranges) and the end read now."""
    streams = {}
    for topic, part in sorted(leaders):
        before = positions.get(f"{topic}-{part}")
        streams[(topic, part)] = Stream(topic, part, before, before if before is not None else 0)
    for leader in sorted(set(leaders.values())):
        mine = {k: s for k, s in streams.items() if leaders[k] == leader}
        answers = cluster.fetch(leader, {k: s.position for k, s in mine.items()}, 1)
        for key, stream in mine.items():
            answer = answers.get(key)
            if answer is None or answer.error not in (0, OFFSET_OUT_OF_RANGE):
                code = "no answer" if answer is None else f"error code {answer.error}"
                raise SourceError(f"cannot fetch {stream.key}: {code}")
            start = max(answer.log_start_offset, 0)
            if stream.position > answer.high_watermark:
                raise SourceError(
                    f"{stream.key} ends at offset {answer.high_watermark}, before the captured position "
                    f"{stream.position}: the topic was recreated or truncated; capture it under another source_name"
                )
            lost = lost_range(stream.position, start) if stream.continued_from is not None else None
            if lost is not None:
                stream.lost.append([lost[0], lost[1]])
            stream.position = stream.start = max(stream.position, start)
            stream.end = answer.end
    return streams


def fetched(
    cluster: Cluster, leaders: dict, streams: list[Stream]
) -> Iterator[tuple[Stream, int, Fetched, list[Batch]]]:
    """Every partition's answers up to its end, partition after partition: (stream, offset asked, answer, batches).

    The next Fetch, of the same partition or of the next one, travels while
    the caller writes the answer just yielded; the stream's position has
    already moved past that answer.
    """
    todo = iter(streams)  # drain passes only partitions with offsets left
    with ThreadPoolExecutor(1) as prefetch:

        def ask(stream: Stream):
            key = (stream.topic, stream.partition)
            return prefetch.submit(cluster.fetch, leaders[key], {key: stream.position}, FETCH_BYTES)

        stream = next(todo, None)
        pending = ask(stream) if stream else None
        empty_since = None
        while stream is not None:
            answer: Fetched = pending.result()[(stream.topic, stream.partition)]
            if answer.error:
                raise SourceError(f"cannot fetch {stream.key} at offset {stream.position}: error code {answer.error}")
            seen = list(split_batches(answer.records, stream.key))
            if not seen:  # before the end: a broker can answer so now and then (Tansu does); ask again, for a while
                empty_since = empty_since or time.monotonic()
                if time.monotonic() - empty_since > FETCH_RETRY_SECONDS:
                    raise SourceError(
                        f"{stream.key}: the broker answered no record batch at offset {stream.position}, before the "
                        f"end at {stream.end}, for {FETCH_RETRY_SECONDS:g} s"
                    )
                time.sleep(0.05)
                pending = ask(stream)
                continue
            empty_since = None
            current, start = stream, stream.position
            stream.position = min(max(stream.position, seen[-1].last_offset + 1), stream.end)
            if stream.position >= stream.end:
                stream = next(todo, None)
            if stream is not None:
                pending = ask(stream)
            yield current, start, answer, seen


def drain(cluster: Cluster, leaders: dict, streams: dict, backup: SetWriter) -> int:
    """Write each partition's committed batches from its position up to its end as one segment; records written.

    CAPTURE_WORKERS partitions are read at once, each over its own connection.
    """
    todo = [s for s in streams.values() if s.position < s.end]
    groups = [todo[n::CAPTURE_WORKERS] for n in range(min(CAPTURE_WORKERS, len(todo)))]
    if len(groups) < 2:
        return drain_in_turn(cluster, leaders, todo, backup)
    with ThreadPoolExecutor(len(groups)) as pool:
        return sum(pool.map(lambda group: drain_in_turn(cluster, leaders, group, backup), groups))


def drain_in_turn(cluster: Cluster, leaders: dict, streams: list[Stream], backup: SetWriter) -> int:
    """:func:`drain` of some partitions, one after the other."""
    records = 0
    with contextlib.ExitStack() as stack:
        writing, out, facts = None, None, {}
        for stream, start, answer, seen in fetched(cluster, leaders, streams):
            if stream is not writing:
                stack.close()  # the previous partition's segment is complete
                writing, out = stream, None
            for batch in committed(iter(seen), answer.aborted):
                if batch.last_offset < start or batch.base_offset >= stream.end:
                    continue
                if out is None:
                    stem = segment_stem(stream.topic, stream.partition, batch.base_offset)
                    out = stack.enter_context(backup.object(stem))
                    facts = {"object": stem, "first_offset": batch.base_offset, "records": 0, "batches": 0}
                    facts.update(first_timestamp=batch.first_timestamp, last_timestamp=batch.max_timestamp)
                    stream.segments.append(facts)
                out.write(batch.data)
                records += batch.count
                facts["records"] += batch.count
                facts["batches"] += 1
                facts["last_offset"] = batch.last_offset
                facts["first_timestamp"] = min(facts["first_timestamp"], batch.first_timestamp)
                facts["last_timestamp"] = max(facts["last_timestamp"], batch.max_timestamp)
    return records


@dataclass
class CaptureOptions:
    """What one capture selects and how long it follows."""

    include_topics: list = field(default_factory=list)
    exclude_topics: list = field(default_factory=list)
    include_groups: list = field(default_factory=list)
    exclude_groups: list = field(default_factory=list)
    duration: float = 0.0
    poll_seconds: float = 1.0


def capture(
    cluster: Cluster, storage, source: str, write_options, tags, options: CaptureOptions, check_mode: bool = False
) -> dict:
    """Capture one set of every selected partition's new records (see the module doc); returns the result fields.

    No set is written when no partition has a new record or a lost range
    (``changed`` false). In check mode nothing is fetched past each partition's
    offsets: ``pending`` counts offsets, not records (aborted ones are dropped
    by the real capture).
    """
    positions, continues = previous_positions(storage, source)
    leaders = selected_partitions(cluster, options.include_topics, options.exclude_topics)
    groups = group_positions(cluster, {t for t, _p in leaders}, options.include_groups, options.exclude_groups)
    streams = open_streams(cluster, leaders, positions)
    lost = {s.key: s.lost for s in streams.values() if s.lost}
    base = dict(source=source, continues=continues, lost=lost, partitions=len(streams))
    if check_mode:
        pending = {s.key: max(0, s.end - s.position) for s in streams.values()}
        return dict(base, changed=any(pending.values()) or bool(lost), pending=pending, records=0)
    storage.check()
    backup = SetWriter(storage, KIND, source, write_options, tags)
    with backup:
        records = drain(cluster, leaders, streams, backup)
        deadline = time.monotonic() + options.duration
        while time.monotonic() < deadline:
            time.sleep(min(options.poll_seconds, max(0.0, deadline - time.monotonic())))
            ends = {}
            for leader in sorted(set(leaders.values())):
                mine = {k: s.position for k, s in streams.items() if leaders[k] == leader}
                ends.update({k: a.end for k, a in cluster.fetch(leader, mine, 1).items()})
            for key, stream in streams.items():
                stream.end = max(stream.end, ends.get(key, stream.end))
            records += drain(cluster, leaders, streams, backup)
        if not records and not lost:
            backup.discard()
            return dict(base, changed=False, backup_id="", records=0, positions=positions)
        facts = {
            "cluster_id": cluster.cluster_id,
            "continues": continues,
            "records": records,
            "lost_records": sum(b - a for ranges in lost.values() for a, b in ranges),
            "partitions": {s.key: s.facts() for s in streams.values()},
            # Partitions left out of this capture (another include_topics) keep their place in the chain.
            "positions": {**positions, **{s.key: s.position for s in streams.values()}},
            "groups": groups,
        }
        backup.commit(facts)
    return dict(base, **backup.result(), changed=True, records=records, positions=facts["positions"], groups=groups)


# ---------------------------------------------------------------- restore planning


@dataclass
class PartitionPlan:
    """What a restore reads for one source partition: its segments in chain order, and the holes between."""

    topic: str
    partition: int
    segments: list[tuple[object, dict]] = field(default_factory=list)  # (set, segment facts)
    holes: list[list[int]] = field(default_factory=list)
    reach: int | None = None


def message_sets(storage, source: str | None, trust: list | None = None, required: bool = True) -> list:
    """The complete ``kafka-messages`` sets of one source, oldest first (the only source when None).

    With ``required`` false, a location where that source (any source, when
    None) has no set at all, complete or not, gives an empty list: nothing
    was captured. Sets that exist but are broken are still an error.
    """
    listed = list_sets(storage, KIND, trust=trust)
    if not required and not any(source is None or s.source == source for s in listed):
        return []
    sets = [s for s in listed if s.complete]
    sources = sorted({s.source for s in sets})
    if source is None:
        if len(sources) != 1:
            raise ConfigurationError(
                f"set source_name: the sources with kafka-messages sets in {storage.url} are "
                f"{', '.join(sources) or 'none'}"
            )
        source = sources[0]
    chosen = sorted((s for s in sets if s.source == source), key=set_order)
    if not chosen:
        raise NotFoundError(f"no kafka-messages set of {source} in {storage.url} (sources: {', '.join(sources)})")
    return chosen


def plan_partitions(sets: list, topics: list[str]) -> dict[tuple[str, int], PartitionPlan]:
    """Each source partition's segments, linked into a chain (:func:`..chain.link`), holes and lost ranges named."""
    spans: dict[tuple[str, int], list] = {}
    for bset in sets:
        for facts in (bset.facts.get("partitions") or {}).values():
            if topics and facts["topic"] not in topics:
                continue
            key = (facts["topic"], int(facts["partition"]))
            spans.setdefault(key, []).append((int(facts["from_offset"]), int(facts["next_offset"]), (bset, facts)))
    plans = {}
    for key, found in sorted(spans.items()):
        plan = PartitionPlan(*key)
        start = min(first for first, _last, _item in found)
        reach = start
        remaining = found
        while remaining:
            linked, reach, hole = link(remaining, reach)
            for bset, facts in linked:
                plan.holes.extend(facts.get("lost") or ())
                plan.segments.extend((bset, segment) for segment in facts.get("segments") or ())
            if hole is None:
                break
            plan.holes.append([reach, hole])
            remaining = [span for span in remaining if span[0] >= hole]
            reach = hole
        plan.reach = reach
        plans[key] = plan
    return plans


def groups_at(sets: list, target_ms: int | None) -> dict[str, dict]:
    """The groups' committed offsets of the newest set captured at or before the target (else the oldest set)."""
    chosen = sets[0]
    for bset in sets:
        if target_ms is None or bset.time.timestamp() * 1000 <= target_ms:
            chosen = bset
    return dict(chosen.facts.get("groups") or {})


# ---------------------------------------------------------------- restore: verify, produce, translate


def _batch_body(head: bytes) -> int | str:
    length = struct.unpack_from(">i", head, 8)[0]
    return length if length >= _HEADER.size - 12 else f"a record batch with an invalid length {length}"


def read_batches(reader, name: str) -> Iterator[Batch]:
    """The record batches of a stored segment, read one at a time (memory: one batch)."""
    for _offset, frame in read_frames(reader, name, "record batch", 12, _batch_body):
        yield from split_batches(frame, name, partial_ok=False)


def check_segment(reader, name: str, facts: dict) -> None:
    """Read a whole segment: framing, every batch's CRC and records, offsets and counts must match its manifest.

    Every record is walked (:func:`batch_records`, which also needs the
    batch's codec), so a restore fails here, before anything is produced.
    """
    records = 0
    first = last = None
    for batch in read_batches(reader, name):
        if not crc_ok(batch):
            raise IntegrityError(f"{name}: the record batch at offset {batch.base_offset} fails its CRC")
        try:
            collections.deque(batch_records(batch), maxlen=0)
        except IntegrityError as exc:
            raise IntegrityError(f"{name}: {exc}") from None
        first = batch.base_offset if first is None else first
        last = batch.last_offset
        records += batch.count
    if (records, first, last) != (facts.get("records"), facts.get("first_offset"), facts.get("last_offset")):
        raise IntegrityError(
            f"{name} holds {records} records at offsets {first}..{last}, its manifest says "
            f"{facts.get('records')} at {facts.get('first_offset')}..{facts.get('last_offset')}"
        )


def origin_of(record) -> int | None:
    """The source offset a restored record carries in its last :data:`ORIGIN_HEADER` (a restore appends it)."""
    found = [value for key, value in record.headers or () if key == ORIGIN_HEADER]
    return int(found[-1]) if found else None


class Target:
    """The restore target's partitions, read by Fetch: log bounds and the origin offsets of restored records."""

    def __init__(self, cluster: Cluster) -> None:
        self.cluster = cluster
        self.leaders: dict[tuple[str, int], int] = {}

    def refresh(self, topics: list[str]) -> None:
        """Read (again) the leaders of the partitions of ``topics``."""
        if topics:
            self.leaders.update(self.cluster.leaders(sorted(topics)))

    def bounds(self, topic: str, part: int) -> tuple[int, int]:
        """``(log start, high watermark)``; a broker error (say, not the leader any more) raises."""
        answer = self.cluster.fetch(self.leaders[(topic, part)], {(topic, part): 0}, 1).get((topic, part))
        if answer is None:
            raise RetriableError(f"cannot read the bounds of {topic}-{part}: the broker's answer does not name it")
        if answer.error not in (0, OFFSET_OUT_OF_RANGE):
            raise broker_error(answer.error, f"read the bounds of {topic}-{part}")
        return max(answer.log_start_offset, 0), answer.high_watermark

    def record_at(self, topic: str, part: int, offset: int):
        """The first record at or after ``offset`` (None past the end)."""
        key = (topic, part)
        answer = self.cluster.fetch(self.leaders[key], {key: offset}, 1024 * 1024)[key]
        for batch in split_batches(answer.records, f"{topic}-{part}"):
            for record in DefaultRecordBatch(bytes(batch.data)):
                if record.offset >= offset:
                    return record
        return None

    def origin_at(self, topic: str, part: int, offset: int) -> tuple[int, int] | None:
        """``(target offset, origin offset)`` of the first record at or after ``offset``; None past the end."""
        record = self.record_at(topic, part, offset)
        if record is None:
            return None
        origin = origin_of(record)
        if origin is None:
            raise SourceError(
                f"{topic}-{part} holds, at offset {record.offset}, a record kafka_message_restore did not write "
                f"(no {ORIGIN_HEADER} header): restore into an empty topic or another name (rename)"
            )
        return record.offset, origin

    def resume_after(self, topic: str, part: int) -> tuple[int | None, int, int]:
        """``(origin offset of the last restored record or None, log start, high watermark)``."""
        start, end = self.bounds(topic, part)
        if end <= start:
            return None, start, end
        found = self.origin_at(topic, part, end - 1)
        return (found[1] if found else None), start, end

    def first_at_or_after(self, topic: str, part: int, origin: int) -> int:
        """The target offset of the first restored record whose origin is at or after ``origin``; else the end."""
        start, end = self.bounds(topic, part)
        found = offset_for_time(lambda o: self.origin_at(topic, part, o), start, end, origin)
        return end if found is None else found


def records_to_restore(copies: list, identities: list[str], after: int | None, until_ms: int | None) -> Iterator:
    """A partition's records (:func:`batch_records`), in order, after origin ``after``, up to ``until_ms``.

    The records stop at the first one stamped after ``until_ms``. Segments of
    overlapping sets (a capture that started over) give each offset once.
    """
    for copy in copies:
        with copy.reader(identities) as reader:
            for batch in read_batches(reader, copy.name):
                if after is not None and batch.last_offset <= after:
                    continue
                for record in batch_records(batch):
                    if after is not None and record[0] <= after:
                        continue
                    if until_ms is not None and record[1] > until_ms:
                        return
                    after = record[0]
                    yield record


def send_batch(target: Target, where: tuple[str, int], data: bytes, count: int) -> int:
    """Send one batch until the broker acknowledges it; the target offset of its first record.

    A retriable error (a leader that moved, a timeout, a lost connection)
    sends the same bytes again, to the partition's leader read anew: the
    batch carries the idempotent producer's id and sequence, so a broker that
    already appended it drops the copy. After :data:`PRODUCE_RETRY_SECONDS`
    of failures the error stops the restore.
    """
    failing_since = None
    delay = 0.25
    while True:
        try:
            base = target.cluster.produce(target.leaders[where], *where, data)
            if base is None:  # the broker had it (an answer lost): it is the partition's last batch
                base = target.bounds(*where)[1] - count
            return base
        except RetriableError as exc:
            now = time.monotonic()
            failing_since = now if failing_since is None else failing_since
            if now - failing_since >= PRODUCE_RETRY_SECONDS:
                raise SourceError(
                    f"{exc} (retried for {PRODUCE_RETRY_SECONDS:g} s; run the restore again: it resumes after the "
                    "last record the target holds)"
                ) from None
            time.sleep(delay)
            delay = min(delay * 2, 5.0)
            with contextlib.suppress(SourceError):  # the leader as the cluster knows it now
                target.refresh([where[0]])


def produce(
    target: Target,
    copies: list,
    identities: list[str],
    where: tuple[str, int],
    after,
    until_ms,
    batch_bytes: int,
    producer: tuple[int, int] = (-1, -1),
) -> dict:
    """Produce one partition's records after origin ``after`` (and at or before ``until_ms``), in order.

    The records go as batches of at most ``batch_bytes`` (:func:`restored_batches`)
    of the idempotent ``producer``, one at a time, each acknowledged by every
    in-sync replica before the next is sent (:func:`send_batch`): a failure
    leaves the target holding a prefix of the records, never a gap, and a
    batch sent again is not appended twice. Returns ``{produced, source_first,
    source_last, target_first, target_last}``.
    """
    done = {"produced": 0, "source_first": None, "source_last": None, "target_first": None, "target_last": None}
    records = records_to_restore(copies, identities, after, until_ms)
    for data, count, first, last in restored_batches(records, batch_bytes, producer):
        base = send_batch(target, where, data, count)
        done["produced"] += count
        done["source_first"] = first if done["source_first"] is None else done["source_first"]
        done["target_first"] = base if done["target_first"] is None else done["target_first"]
        done["source_last"], done["target_last"] = last, base + count - 1
    return done


def translate_groups(
    target: Target, groups: dict[str, dict], rename: Callable[[str], str], plans: dict
) -> dict[str, dict[tuple[str, int], tuple[int, int]]]:
    """``{group: {(target topic, partition): (source offset, target offset)}}`` for the restored partitions."""
    out: dict[str, dict] = {}
    for group_id, offsets in sorted(groups.items()):
        for key, committed_offset in sorted(offsets.items()):
            topic, _sep, part_text = key.rpartition("-")
            if (topic, int(part_text)) not in plans:
                continue
            where = (rename(topic), int(part_text))
            out.setdefault(group_id, {})[where] = (committed_offset, target.first_at_or_after(*where, committed_offset))
    return out


@contextlib.contextmanager
def verified_segments(storage, plans: dict, identities: list[str], spool_dir: str | None = None):
    """Download and check every planned segment before anything is produced; yields ``{key: [copies]}``."""
    with contextlib.ExitStack() as stack:
        copies: dict[tuple[str, int], list] = {}
        for key, plan in plans.items():
            for bset, facts in plan.segments:
                copy = stack.enter_context(fetch_object(storage, bset, facts["object"], spool_dir))
                with copy.reader(identities) as reader:
                    check_segment(reader, copy.name, facts)
                copies.setdefault(key, []).append(copy)
        yield copies


@dataclass
class RestoreSpec:
    """What one restore does: the planned partitions, the groups' source offsets, renames, the target time."""

    plans: dict[tuple[str, int], PartitionPlan]
    groups: dict[str, dict]
    rename: dict[str, str]
    until_ms: int | None
    identities: list[str]
    create_topics: bool
    check_mode: bool
    meta_topics: Callable[[], dict]  # the newest kafka-meta set's topics (read only when a topic is created)
    batch_bytes: int = PRODUCE_BYTES

    def name(self, topic: str) -> str:
        return self.rename.get(topic, topic)


def create_missing(cluster: Cluster, spec: RestoreSpec, warn: Callable[[str], None]) -> list[str]:
    """Create the target topics that do not exist (from the kafka-meta set when it has them); their names."""
    have = cluster.topics()
    needed: dict[str, int] = {}
    for topic, part in spec.plans:
        needed[spec.name(topic)] = max(needed.get(spec.name(topic), 0), part + 1)
    create = sorted(t for t in needed if t not in have)
    if create and not spec.create_topics:
        raise SourceError(f"topic(s) {', '.join(create)} do not exist on the target (create_topics is off)")
    short = sorted(t for t in needed if t in have and have[t]["partitions"] < needed[t])
    if short:
        raise SourceError(f"topic(s) {', '.join(short)} have fewer partitions on the target than were captured")
    if create and not spec.check_mode:
        meta = spec.meta_topics()
        originals = {spec.name(t): t for t, _p in spec.plans}
        for name in create:
            topic = meta.get(originals[name]) or {}
            if not topic:
                warn(
                    f"topic {name}: no kafka-meta set describes it: created with {needed[name]} partition(s), "
                    "replication factor 1 and the broker's default configs"
                )
            partitions = max(int(topic.get("partitions") or 0), needed[name])
            factor = min(int(topic.get("replication_factor") or 1), cluster.brokers)
            cluster.create_topic(name, partitions, factor, dict(topic.get("configs") or {}))
    return create


def restore(cluster: Cluster, copies: dict, spec: RestoreSpec, warn: Callable[[str], None]) -> dict:
    """Create missing topics, produce each partition's records after where the target stopped, commit the groups.

    ``copies`` are the verified segments (:func:`verified_segments`). Groups
    with active members are refused before anything changes.
    """
    refuse_active(cluster, sorted(spec.groups))
    created = create_missing(cluster, spec, warn)
    target = Target(cluster)
    target.refresh(sorted({spec.name(t) for t, _p in spec.plans} - (set(created) if spec.check_mode else set())))
    producer = (-1, -1) if spec.check_mode else cluster.init_producer()
    partitions: dict[str, dict] = {}
    records = 0
    for (topic, part), plan in sorted(spec.plans.items()):
        name = spec.name(topic)
        after = target.resume_after(name, part)[0] if (name, part) in target.leaders else None
        entry: dict = {"source": f"{topic}-{part}", "resumed_after": after, "holes": plan.holes}
        if spec.check_mode:
            pending = records_to_restore(copies.get((topic, part), []), spec.identities, after, spec.until_ms)
            entry["produced"] = sum(1 for _record in pending)
        else:
            segments = copies.get((topic, part), [])
            where = (name, part)
            entry.update(
                produce(target, segments, spec.identities, where, after, spec.until_ms, spec.batch_bytes, producer)
            )
        records += entry["produced"]
        for hole in plan.holes:
            warn(f"{topic}-{part}: source offsets {hole[0]}..{hole[1] - 1} are in no set (lost before capture)")
        partitions[f"{name}-{part}"] = entry
    groups: dict[str, dict] = {}
    committed_any = False
    if spec.groups and not spec.check_mode:
        for group_id, moves in translate_groups(target, spec.groups, spec.name, spec.plans).items():
            current = {k: v[0] for k, v in cluster.group_offsets(group_id).items()}
            wanted = {k: t for k, (_s, t) in moves.items() if current.get(k) != t}
            if wanted:
                cluster.commit_offsets(group_id, wanted)
                committed_any = True
            groups[group_id] = {f"{t}-{n}": {"source": s, "target": o} for (t, n), (s, o) in sorted(moves.items())}
    return dict(
        changed=bool(records or created or committed_any),
        created_topics=created,
        partitions=partitions,
        groups=groups,
        records=records,
    )
