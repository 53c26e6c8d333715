# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""MongoDB point-in-time recovery: oplog slices captured after a full backup, replayed up to a target.

A slice (kind ``mongo-oplog``, object ``oplog.bson``: concatenated BSON oplog
entries, as ``bsondump`` reads them) holds every majority-committed entry with
``from_ts < ts <= last_ts``. Its facts chain it: ``first_ts`` (= ``from_ts``) is
the position it continues from (the previous slice's ``last_ts``; a full
backup's consistent point only for the first slice, or after the oplog rolled
past the last one), ``base_backup_id`` the full backup it chains to.

A restore to ``target`` restores the newest full backup whose consistent point
is before the target, then replays the slices' entries with ``ts < target``
(the target is exclusive).
"""

from __future__ import annotations

import contextlib
import json
import struct
import time
from collections.abc import Iterable, Iterator
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    SetWriter,
    fetch_object,
    iso,
    list_sets,
    parse_time,
    set_order,
    sources_note,
)
from ansible_collections.caas.backup.plugins.module_utils.chain import link, lost_range
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.client import translate
from ansible_collections.caas.backup.plugins.module_utils.mongo.dump import (
    batch_first_ts,
    batch_last_ts,
    count_documents,
    ts_fact,
    ts_from_fact,
)
from ansible_collections.caas.backup.plugins.module_utils.mongo.oplog import apply_entries
from ansible_collections.caas.backup.plugins.module_utils.stream import read_frames

try:
    import bson
    from bson.timestamp import Timestamp
    from pymongo import errors as pymongo_errors
    from pymongo.read_concern import ReadConcern
except ImportError:  # checked by BackupModule
    bson = None

STEM = "oplog.bson"
BATCH_DOCS = 1000
MAX_DOC = 16 * 1024 * 1024 + 16 * 1024  # the server's BSON limit plus its oplog entry overhead
COMMAND_NOT_FOUND = 59
_LEN = struct.Struct("<i")


class ChainBroken(SourceError):
    """The oplog no longer holds the entries after the last captured position."""


def ts_text(ts) -> str:
    """``2026-02-21T10:30:00Z (t, i)`` for messages."""
    fact = ts_fact(ts)
    return f"{fact['iso']} ({fact['t']}, {fact['i']})"


def ts_next(ts):
    """The smallest timestamp after ``ts``."""
    return Timestamp(ts.time, ts.inc + 1)


def parse_target(value) -> Timestamp:
    """A restore target: ISO 8601 UTC (second resolution: ``T`` is ``Timestamp(T, 0)``) or ``{t, i}``."""
    if isinstance(value, dict):
        try:
            return Timestamp(int(value["t"]), int(value.get("i", 0)))
        except (KeyError, TypeError, ValueError):
            raise ConfigurationError(f"target_time {value!r} must be ISO 8601 UTC or a mapping {{t, i}}") from None
    if isinstance(value, str) and value.strip().startswith("{"):
        try:
            return parse_target(json.loads(value))
        except ValueError:
            raise ConfigurationError(f"target_time {value!r} is not valid JSON {{t, i}}") from None
    if not isinstance(value, str) or not value.strip():
        raise ConfigurationError("target_time must be ISO 8601 UTC or a mapping {t, i}")
    return Timestamp(int(parse_time(value).timestamp()), 0)


# ---------------------------------------------------------------- capture


@dataclass
class Position:
    """Where the next slice starts: after ``ts``, chaining to full backup ``base_backup_id``."""

    ts: Timestamp
    base_backup_id: str
    after: str  # "slice <id>" or "full backup <id>"


def _fulls(storage, source: str, trust: list | None = None) -> list:
    return sorted(
        (s for s in list_sets(storage, "mongo-full", source, trust) if s.complete and s.facts.get("last_ts")),
        key=lambda s: (ts_from_fact(s.facts["last_ts"]), *set_order(s)),
    )


def _slices(storage, source: str, trust: list | None = None) -> list:
    return sorted(
        (s for s in list_sets(storage, "mongo-oplog", source, trust) if s.complete and s.facts.get("last_ts")),
        key=lambda s: (ts_from_fact(s.facts["last_ts"]), *set_order(s)),
    )


def capture_position(storage, source: str, oldest=None) -> Position:
    """The last captured position: the newest slice's ``last_ts``; only when there is no slice, a full backup's point.

    A full backup taken since the last slice never moves the position forward:
    the entries between the slice and the backup's consistent point would be in
    no slice, and targets among them could not be restored. The slice chains to
    the newest full backup whose consistent point is at or before its start.
    Only when the oplog has rolled past the newest slice (``oldest`` entry
    newer) but a full backup taken since lies inside the oplog does the chain
    restart from that backup: the entries in between are gone either way.
    """
    fulls = _fulls(storage, source)
    slices = _slices(storage, source)
    if not fulls:
        raise NotFoundError(
            f"no mongo-full backup of {source} with a consistent point (oplog) in {storage.url}: "
            "take a full backup (mongo_dump with oplog) before capturing the oplog"
        )
    full = fulls[-1]
    full_pos = Position(ts_from_fact(full.facts["last_ts"]), full.backup_id, f"full backup {full.backup_id}")
    if not slices:
        return full_pos
    last = slices[-1]
    last_ts = ts_from_fact(last.facts["last_ts"])
    if oldest is not None and oldest > last_ts and full_pos.ts >= oldest:
        return full_pos
    bases = [f for f in fulls if ts_from_fact(f.facts["last_ts"]) <= last_ts]
    base = bases[-1].backup_id if bases else last.facts.get("base_backup_id") or full.backup_id
    return Position(last_ts, base, f"slice {last.backup_id}")


def _majority_point(client):
    """The majority commit point: nothing at or before it can be rolled back, and no entry before it is missing."""
    hello = client.admin.command("hello")
    ts = ((hello.get("lastWrite") or {}).get("majorityOpTime") or {}).get("ts")
    if ts is None:
        optimes = client.admin.command("replSetGetStatus").get("optimes") or {}
        ts = (optimes.get("readConcernMajorityOpTime") or optimes.get("lastCommittedOpTime") or {}).get("ts")
    if ts is None:
        raise SourceError("the server reports no majority commit point: is it a replica set member?")
    return ts, hello.get("setName")


def _oplog(client):
    return client.local.get_collection("oplog.rs", read_concern=ReadConcern("majority"))


def oldest_entry(client):
    """The ``ts`` of the oldest entry still in the oplog (None when empty)."""
    entry = _oplog(client).find_one({}, {"ts": 1}, sort=[("$natural", 1)])
    return entry["ts"] if entry else None


def check_chain(position: Position, oldest, source: str) -> None:
    """Raise :class:`ChainBroken` when the oplog no longer holds the entries after ``position``."""
    if lost_range(position.ts, oldest) is not None:
        raise ChainBroken(
            f"PITR chain broken since {ts_text(position.ts)}: the oldest oplog entry of {source} is "
            f"{ts_text(oldest) if oldest else 'missing (empty oplog)'}, the entries after the last captured "
            f"position ({position.after}) are gone: take a full backup",
            chain_broken=True,
        )


def capture_slice(client, storage, source: str, options, tags, position: Position | None = None) -> dict:
    """Write one slice of the entries after the last captured position, up to the majority commit point.

    Returns the result fields (``changed`` false and no slice when nothing new
    was committed); raises :class:`ChainBroken` when the oplog has rolled past
    the position, before anything is written.
    """
    try:
        majority, replica_set = _majority_point(client)
        oldest = oldest_entry(client)
        position = position or capture_position(storage, source, oldest)
        check_chain(position, oldest, source)
        cursor = _oplog(client).find_raw_batches(
            {"ts": {"$gt": position.ts, "$lte": majority}}, sort=[("$natural", 1)], batch_size=BATCH_DOCS
        )
        batches = iter(cursor)
        first_batch = next(batches, None)
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    base = dict(source=source, from_ts=ts_fact(position.ts), base_backup_id=position.base_backup_id, chain_broken=False)
    if first_batch is None:
        return dict(base, changed=False, backup_id="", ops=0, last_ts=ts_fact(position.ts), position=position)
    storage.check()
    ops = 0
    first_op = batch_first_ts(first_batch)
    last = position.ts
    try:
        with SetWriter(storage, "mongo-oplog", source, options, tags) as backup:
            with backup.object(STEM) as out:
                batch = first_batch
                while batch is not None:
                    out.write(batch)
                    ops += count_documents(batch)
                    last = batch_last_ts(batch)
                    batch = next(batches, None)
            facts = {
                "first_ts": ts_fact(position.ts),
                "from_ts": ts_fact(position.ts),
                "first_op_ts": ts_fact(first_op),
                "last_ts": ts_fact(last),
                "ops": ops,
                "base_backup_id": position.base_backup_id,
                "continues": position.after,
                "majority_ts": ts_fact(majority),
                "replica_set": replica_set,
            }
            backup.commit(facts)
    except pymongo_errors.PyMongoError as exc:  # the slice was discarded on the way out
        raise translate(exc, "the source") from None
    return dict(
        base,
        **backup.result(),
        changed=True,
        first_ts=ts_fact(first_op),
        last_ts=ts_fact(last),
        ops=ops,
        bytes=backup.objects[0]["raw_size"],
        position=Position(last, position.base_backup_id, f"slice {backup.backup_id}"),
    )


def follow(client, storage, source: str, options, tags, duration: float, slice_seconds: float, sleep=time.sleep):
    """Capture for ``duration`` seconds, cutting a slice every ``slice_seconds`` (the RPO); returns the slices."""
    if slice_seconds <= 0 or duration < 0:
        raise ConfigurationError("slice_seconds must be > 0 and duration >= 0")
    deadline = time.monotonic() + duration
    results = []
    position = None
    while True:
        cut_at = time.monotonic() + slice_seconds
        done = capture_slice(client, storage, source, options, tags, position)
        position = done.pop("position")
        results.append(done)
        if time.monotonic() >= deadline:
            return results
        sleep(max(0.0, min(cut_at, deadline) - time.monotonic()))


def plan_capture(client, storage, source: str) -> dict:
    """What :func:`capture_slice` would do now, reading only: the position, the chain check, the entries pending.

    Returns the check-mode result fields: ``from_ts`` and ``continues`` (the slice or full backup the
    capture would continue), ``base_backup_id``, ``up_to_ts`` (the majority commit point a slice would
    end at) and ``pending_ops`` (the entries between them, counted now; writes go on, so a real run a
    moment later captures at least as many). ``changed`` is whether a slice would be written. Raises
    :class:`ChainBroken` as the capture would.
    """
    try:
        majority = _majority_point(client)[0]
        oldest = oldest_entry(client)
        position = capture_position(storage, source, oldest)
        check_chain(position, oldest, source)
        pending = _oplog(client).count_documents({"ts": {"$gt": position.ts, "$lte": majority}})
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the source") from None
    return dict(
        changed=pending > 0,
        backup_id="",
        source=source,
        chain_broken=False,
        from_ts=ts_fact(position.ts),
        continues=position.after,
        base_backup_id=position.base_backup_id,
        up_to_ts=ts_fact(majority),
        pending_ops=pending,
    )


# ---------------------------------------------------------------- restore planning


@dataclass
class Chain:
    """A full backup and the slices that continue it, as far as they reach without a hole."""

    base: object
    start: Timestamp
    slices: list = field(default_factory=list)
    reach: Timestamp | None = None


def chains(fulls: list, slices: list) -> list[Chain]:
    """For each full backup (oldest first), the contiguous slices from its consistent point."""
    ordered = sorted(slices, key=lambda s: (ts_from_fact(s.facts["first_ts"] or s.facts["last_ts"]), s.backup_id))
    spans = [
        (ts_from_fact(s.facts.get("first_ts") or s.facts["last_ts"]), ts_from_fact(s.facts["last_ts"]), s)
        for s in ordered
    ]
    out = []
    for full in fulls:
        start = ts_from_fact(full.facts["last_ts"])
        linked, reach, _hole = link(spans, start)
        out.append(Chain(full, start, linked, reach))
    return out


def window(all_chains: list[Chain]) -> dict:
    """The restorable window: after the oldest consistent point, up to just after the last captured op."""
    earliest = min(c.start for c in all_chains)
    latest = max(c.reach for c in all_chains)
    return {"earliest": ts_fact(earliest), "latest": ts_fact(latest)}


def window_text(win: dict) -> str:
    e, lt = win["earliest"], win["latest"]
    return f"[{e['iso']} ({e['t']}, {e['i']}), {lt['iso']} ({lt['t']}, {lt['i']})]"


@dataclass
class PitrPlan:
    """What a point-in-time restore does."""

    target: Timestamp
    chain: Chain
    slices: list
    window: dict

    def summary(self) -> dict:
        base = self.chain.base
        return {
            "target_ts": ts_fact(self.target),
            "base_backup_id": base.backup_id,
            "base_backup_time": iso(base.time),
            "base_consistent_ts": ts_fact(self.chain.start),
            "slices": [
                {
                    "backup_id": s.backup_id,
                    "first_ts": s.facts.get("first_ts"),
                    "last_ts": s.facts.get("last_ts"),
                    "ops": s.facts.get("ops"),
                }
                for s in self.slices
            ],
            "slice_ops": sum(int(s.facts.get("ops") or 0) for s in self.slices),
            "window": self.window,
        }


def _only_source(storage, trust: list | None = None) -> str:
    sources = sorted({s.source for s in list_sets(storage, "mongo-oplog", trust=trust) if s.complete})
    if len(sources) != 1:
        found = ", ".join(sources) or "none"
        raise ConfigurationError(f"set source_name: the sources with oplog slices in {storage.url} are {found}")
    return sources[0]


def plan_restore(storage, source: str | None, target: Timestamp, trust: list | None = None) -> PitrPlan:
    """Pick the base full backup and the slices reaching ``target`` (exclusive), or say why not.

    With ``trust`` (trusted signer keys), only sets whose manifests they signed count.
    """
    source = source or _only_source(storage, trust)
    fulls = _fulls(storage, source, trust)
    if not fulls:
        raise NotFoundError(
            f"no mongo-full backup of {source} with a consistent point in {storage.url}"
            f"{sources_note(storage, 'mongo-full')}"
        )
    all_chains = chains(fulls, _slices(storage, source, trust))
    win = window(all_chains)
    earliest, latest = ts_from_fact(win["earliest"]), ts_from_fact(win["latest"])
    if target <= earliest or target > ts_next(latest):
        where = "before the earliest restorable point" if target <= earliest else "after the last captured op"
        raise ConfigurationError(
            f"target {ts_text(target)} is {where}: the restorable window of {source} is {window_text(win)} "
            "(a target must be after the oldest full backup's consistent point and at most just after the last "
            "captured oplog entry)",
            window=win,
        )
    usable = [c for c in all_chains if c.start < target <= ts_next(c.reach)]
    if not usable:
        gaps = [
            f"{ts_text(a.reach)} .. {ts_text(b.start)}"
            for a, b in zip(all_chains, all_chains[1:], strict=False)
            if a.reach < b.start
        ]
        raise ConfigurationError(
            f"target {ts_text(target)} falls in a gap of the oplog chain of {source} ({'; '.join(gaps)}): "
            f"no full backup and slices reach it; window {window_text(win)}",
            window=win,
        )
    chain = max(usable, key=lambda c: c.start)
    # A slice whose first entry is at or after the target has nothing to apply.
    needed = [
        s
        for s in chain.slices
        if ts_from_fact(s.facts.get("first_op_ts") or s.facts.get("first_ts") or s.facts["last_ts"]) < target
    ]
    return PitrPlan(target, chain, needed, win)


# ---------------------------------------------------------------- slices: read, verify, replay


def _bson_body(head: bytes) -> int | str:
    size = _LEN.unpack(head)[0]
    return size - 4 if 5 <= size <= MAX_DOC else f"an invalid BSON document length {size}"


def iter_bson(reader, name: str) -> Iterator[bytes]:
    """The BSON documents of a stream of concatenated documents; bad framing raises IntegrityError."""
    for offset, raw in read_frames(reader, name, "BSON document", 4, _bson_body):
        if raw[-1:] != b"\x00":
            raise IntegrityError(f"{name} has a truncated or malformed BSON document at byte {offset}")
        yield raw


def check_slice(reader, name: str, facts: dict) -> dict:
    """Read a whole slice: framing, entry count and last ``ts`` must be what its manifest says."""
    ops = 0
    last = None
    for raw in iter_bson(reader, name):
        ops += 1
        last = raw
    last_ts = bson.decode(last)["ts"] if last is not None else None
    if facts.get("ops") is not None and ops != facts["ops"]:
        raise IntegrityError(f"{name} holds {ops} oplog entries but its manifest says {facts['ops']}")
    if facts.get("last_ts") and last_ts != ts_from_fact(facts["last_ts"]):
        raise IntegrityError(f"{name} ends at {last_ts} but its manifest says {facts['last_ts']}")
    return {"ops": ops, "last_ts": ts_fact(last_ts)}


@contextlib.contextmanager
def fetched_slices(storage, slices: list, identities: list[str], spool_dir: str | None = None):
    """Download and check every slice (sha256, framing, counts) before anything is touched; yields the copies."""
    with contextlib.ExitStack() as stack:
        copies = []
        for bset in slices:
            copy = stack.enter_context(fetch_object(storage, bset, STEM, spool_dir))
            with copy.reader(identities) as reader:
                check_slice(reader, copy.name, bset.facts)
            copies.append(copy)
        yield copies


def server_has_apply_ops(client) -> bool:
    """Whether the target has ``applyOps`` (SecantusDB has not: CommandNotFound)."""
    try:
        client.admin.command({"applyOps": []})
    except pymongo_errors.OperationFailure as exc:
        if exc.code == COMMAND_NOT_FOUND or "no such command" in str(exc):
            return False
        raise translate(exc, "the target") from None
    return True


def _strip_ui(entry: dict) -> dict:
    """An entry for ``applyOps`` on another server: collection UUIDs differ there (mongorestore drops them too)."""
    entry = {k: v for k, v in entry.items() if k not in ("ui", "lsid", "txnNumber", "stmtId", "prevOpTime")}
    if entry.get("op") == "c" and "applyOps" in entry.get("o", {}):
        entry["o"] = dict(entry["o"], applyOps=[_strip_ui(e) for e in entry["o"]["applyOps"]])
    return entry


def expand_transactions(entries: Iterable[dict]) -> Iterator[dict]:
    """Entries with large and prepared transactions made whole.

    A transaction the server split (``applyOps`` entries with ``partialTxn``) is
    held until its last ``applyOps`` entry, or its ``commitTransaction`` when it
    was prepared, and yielded as one ``applyOps`` entry then; an aborted one is
    dropped. Ordinary entries pass through.
    """
    pending: dict = {}
    for entry in entries:
        o = entry.get("o") or {}
        key = (str((entry.get("lsid") or {}).get("id")), entry.get("txnNumber"))
        if entry.get("op") == "c" and "applyOps" in o and (o.get("partialTxn") or o.get("prepare")):
            pending.setdefault(key, []).extend(o["applyOps"])
            continue
        if entry.get("op") == "c" and "applyOps" in o and key in pending:
            yield dict(entry, o={"applyOps": pending.pop(key) + list(o["applyOps"])})
            continue
        if entry.get("op") == "c" and "commitTransaction" in o:
            if key in pending:
                yield dict(entry, o={"applyOps": pending.pop(key)})
            continue
        if entry.get("op") == "c" and "abortTransaction" in o:
            pending.pop(key, None)
            continue
        yield entry


def replay(client, copies, identities: list[str], start, target, use_apply_ops: bool) -> dict:
    """Apply the slices' entries with ``start < ts < target``, in order, each once; returns counts."""
    position = start
    applied = 0
    last = None
    batch: list[dict] = []

    def flush() -> None:
        nonlocal applied
        if not batch:
            return
        entries = list(expand_transactions(batch))
        if use_apply_ops:
            client.admin.command({"applyOps": [_strip_ui(e) for e in entries]})
        else:
            apply_entries(client, entries)
        applied += len(batch)
        batch.clear()

    try:
        for copy in copies:
            with copy.reader(identities) as reader:
                slice_last = position
                for raw in iter_bson(reader, copy.name):
                    entry = bson.decode(raw)
                    ts = entry["ts"]
                    if ts <= position:
                        continue  # overlapping slices, or the base's own entries
                    if ts >= target:
                        break
                    batch.append(entry)
                    last = slice_last = ts
                    if len(batch) >= BATCH_DOCS:
                        flush()
                position = max(position, slice_last)
        flush()
    except pymongo_errors.PyMongoError as exc:
        raise translate(exc, "the target") from None
    return {"ops_applied": applied, "last_applied_ts": ts_fact(last)}


def restore_to(
    storage,
    client_factory,
    pitr_plan: PitrPlan,
    identities: list[str],
    *,
    skip_base: bool = False,
    drop: bool = True,
    method: str = "auto",
    check_mode: bool = False,
    spool_dir: str | None = None,
    ledger: list | tuple = (),
) -> dict:
    """Verify the base backup and every slice, then restore the base and replay the slices up to the target.

    ``client_factory()`` connects to the target; it is called only after every
    object has been downloaded and checked, so a missing or corrupted object
    fails before anything is touched. After the replay, the erasure ``ledger``
    (erasure.read_ledger) is applied to every namespace.
    """
    from ansible_collections.caas.backup.plugins.module_utils.mongo.restore import (
        Renamer,
        erase,
        plan,
        restore_archive,
        select,
        verify_archive,
    )

    result: dict = pitr_plan.summary()
    with contextlib.ExitStack() as stack:
        base_copy = prelude = None
        if not skip_base:
            base_copy = stack.enter_context(fetch_object(storage, pitr_plan.chain.base, "dump.archive", spool_dir))
            with base_copy.reader(identities) as reader:
                prelude = verify_archive(reader, base_copy.name, pitr_plan.chain.base.facts)
        copies = stack.enter_context(fetched_slices(storage, pitr_plan.slices, identities, spool_dir))
        client = client_factory()
        stack.callback(client.close)
        use_apply_ops = method == "applyOps" or (method == "auto" and server_has_apply_ops(client))
        result["replay_method"] = "applyOps" if use_apply_ops else "manual"
        if prelude is not None:
            targets = select(prelude, [], [], Renamer([], []), False)
            restore_plan = plan(client, prelude, targets, drop, True)
            result["dropped"] = restore_plan.drop
        if check_mode:
            return result
        if prelude is not None:
            with base_copy.reader(identities) as reader:
                done = restore_archive(client, reader, base_copy.name, restore_plan)
            result["base_collections"] = done["collections"]
        result.update(replay(client, copies, identities, pitr_plan.chain.start, pitr_plan.target, use_apply_ops))
        result["erasure"] = erase(client, list(ledger))
    result["restored_to"] = ts_fact(pitr_plan.target)
    return result
