# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kafka cluster metadata: export it as one JSON document, plan and apply its restore.

The export holds topics (partitions, replication factor, config *overrides*),
ACLs, consumer groups with their committed offsets, and every partition's
log-start and end offsets, with the timestamp of the record each group would
read next, so offsets can be mapped by time on another cluster.

The restore is planned first by pure functions (:func:`plan_topics`,
:func:`plan_acls`, :func:`target_offset`) from the document and a snapshot of
the target (:class:`TargetState`); nothing on the target changes until the
whole plan, including the checks that refuse it, is known.

Where a broker lacks a feature (Tansu, the test stand-in, lacks several: see
``tests/support/services.py``) the code says so in a warning or a clear error
instead of pretending: an incomplete DescribeConfigs answer is flagged, an
unsupported CreatePartitions fails before anything changes, a ListOffsets by
time whose answer the records contradict falls back to a search by Fetch.
"""

from __future__ import annotations

import datetime
import json
import re
from collections.abc import Callable
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    SourceError,
)
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    Cluster,
    acl_key,
    check_topic_name,
    selected,
)

try:
    from kafka.admin import OffsetSpec, OffsetTimestamp
    from kafka.protocol.admin import CreatePartitionsRequest
except ImportError:  # reported by the modules (kafka.client.kafka_module)
    pass

FORMAT = "caas.backup/kafka-meta"
FORMAT_VERSION = 1
OBJECT_STEM = "kafka-meta.json"
OFFSET_MODES = ("committed", "earliest", "latest", "timestamp")
# Every Apache Kafka broker describes these for any topic when asked for all configs:
# an answer without them is a broker that does not report topic configs (Tansu's memory engine).
_ALWAYS_DESCRIBED = frozenset({"cleanup.policy", "retention.ms", "segment.bytes"})
_OVERRIDE_SOURCE = "DYNAMIC_TOPIC_CONFIG"


# --- export -------------------------------------------------------------------------------------------------------


def topic_overrides(entries: dict) -> tuple[dict[str, str], bool, list[str]]:
    """The config overrides among a topic's described entries.

    Returns ``(overrides, complete, sensitive)``: only entries set on the
    topic itself (source ``DYNAMIC_TOPIC_CONFIG``) are overrides; broker
    defaults are left out. ``complete`` is false when the broker's answer
    lacks configs every Apache Kafka broker describes, so its overrides
    cannot be known (Tansu's memory engine). Sensitive values are never
    returned by brokers: their names are listed in ``sensitive``.
    """
    complete = set(entries) >= _ALWAYS_DESCRIBED
    overrides: dict[str, str] = {}
    sensitive: list[str] = []
    for name, entry in sorted(entries.items()):
        if entry.get("config_source") != _OVERRIDE_SOURCE:
            continue
        if entry.get("is_sensitive") or entry.get("value") is None:
            sensitive.append(name)
            continue
        overrides[name] = str(entry["value"])
    return overrides, complete, sensitive


def resume_time(cluster: Cluster, topic: str, part: int, offset: int, start: int, end: int) -> int | None:
    """The time a group resumes from: its next record's timestamp; for a caught-up group, just after the last one.

    ``offsets: timestamp`` restores the group to the first record at or after
    this time, so on a mirror that holds newer records a caught-up group
    resumes at the first of those rather than at the log end.
    """
    if not start <= offset <= end or start == end:
        return None
    if offset < end:
        record = cluster.read_record(topic, part, offset)
        return record[1] if record else None
    record = cluster.read_record(topic, part, end - 1)
    return record[1] + 1 if record else None


def export_cluster(
    cluster: Cluster,
    include_topics: list[re.Pattern],
    exclude_topics: list[re.Pattern],
    include_groups: list[re.Pattern],
    exclude_groups: list[re.Pattern],
    record_timestamps: bool = True,
    now: datetime.datetime | None = None,
) -> dict:
    """The export document of a cluster (see :func:`validate_document` for its shape)."""
    now = now or datetime.datetime.now(datetime.timezone.utc)
    notes: list[str] = []
    topics = {n: t for n, t in cluster.topics().items() if selected(n, include_topics, exclude_topics)}
    described = cluster.configs(sorted(topics))
    incomplete = []
    for name, topic in topics.items():
        overrides, complete, sensitive = topic_overrides(described.get(name, {}))
        topic["configs"] = overrides
        topic["configs_complete"] = complete
        if not complete:
            incomplete.append(name)
        if sensitive:
            notes.append(f"topic {name}: sensitive configs {', '.join(sensitive)} are not exported (brokers hide them)")
    if incomplete:
        notes.append(
            f"the broker's DescribeConfigs answer is incomplete for {len(incomplete)} topic(s) "
            f"({', '.join(sorted(incomplete)[:5])}): their config overrides cannot be told from defaults "
            "and are not exported"
        )
    partitions = [(n, p) for n, t in sorted(topics.items()) for p in range(t["partitions"])]
    starts = cluster.offsets(partitions, OffsetSpec.EARLIEST)
    ends = cluster.offsets(partitions, OffsetSpec.LATEST)
    for name, part in partitions:
        topics[name].setdefault("offsets", {})[str(part)] = {
            "start": starts[(name, part)][0],
            "end": ends[(name, part)][0],
        }
    groups: dict[str, dict] = {}
    for group_id in cluster.groups():
        if not selected(group_id, include_groups, exclude_groups):
            continue
        committed = {k: v for k, v in cluster.group_offsets(group_id).items() if k[0] in topics}
        if not committed:
            continue
        group: dict[str, dict] = {}
        for (name, part), (offset, metadata) in sorted(committed.items()):
            bounds = topics[name]["offsets"].get(str(part))
            if bounds is None:
                continue
            timestamp = None
            if offset > bounds["end"]:
                notes.append(
                    f"group {group_id} committed {offset} on {name}-{part}, beyond the log end {bounds['end']} the "
                    "broker reported: its ListOffsets is inaccurate (Tansu counts record batches)"
                )
            elif record_timestamps:
                timestamp = resume_time(cluster, name, part, offset, bounds["start"], bounds["end"])
            group.setdefault(name, {})[str(part)] = {"offset": offset, "metadata": metadata, "timestamp": timestamp}
        groups[group_id] = {"offsets": group}
    return {
        "format": FORMAT,
        "format_version": FORMAT_VERSION,
        "exported_at": now.astimezone(datetime.timezone.utc).replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        "cluster": {"cluster_id": cluster.cluster_id, "brokers": cluster.brokers},
        "topics": topics,
        "acls": cluster.acls(),
        "groups": groups,
        "warnings": notes,
    }


def document_facts(doc: dict) -> dict:
    """The manifest facts of an export: counts of topics, partitions, groups and ACLs."""
    return {
        "format_version": doc["format_version"],
        "cluster_id": doc["cluster"].get("cluster_id"),
        "topics": len(doc["topics"]),
        "partitions": sum(t["partitions"] for t in doc["topics"].values()),
        "groups": len(doc["groups"]),
        "acls": None if doc["acls"] is None else len(doc["acls"]),
    }


def read_document(reader, name: str) -> dict:
    """Parse and validate the export read from ``reader`` (``name`` for errors)."""
    try:
        doc = json.load(reader)
    except ValueError as exc:
        raise IntegrityError(f"{name} is not JSON: {exc}") from None
    return validate_document(doc)


def validate_document(doc) -> dict:
    """``doc`` if it is an export this collection can restore; IntegrityError naming what is wrong."""
    if not isinstance(doc, dict) or doc.get("format") != FORMAT:
        raise IntegrityError(f"not a {FORMAT} document")
    version = doc.get("format_version")
    if version != FORMAT_VERSION:
        raise IntegrityError(
            f"{FORMAT} format_version {version!r} is unknown: this collection reads version {FORMAT_VERSION}"
        )
    for key, kind in (("topics", dict), ("groups", dict), ("cluster", dict)):
        if not isinstance(doc.get(key), kind):
            raise IntegrityError(f"{FORMAT} document has no {key} object")
    if doc.get("acls") is not None and not isinstance(doc["acls"], list):
        raise IntegrityError(f"{FORMAT} document's acls is not a list")
    for name, topic in doc["topics"].items():
        try:
            check_topic_name(name)
        except ConfigurationError as exc:
            raise IntegrityError(f"{FORMAT} document: {exc}") from None
        if not isinstance(topic.get("partitions"), int) or topic["partitions"] < 1:
            raise IntegrityError(f"{FORMAT} document: topic {name} has no valid partition count")
    return doc


# --- restore planning (pure) --------------------------------------------------------------------------------------


def select_from_document(doc: dict, topics: list[str], groups: list[str]) -> tuple[dict, dict]:
    """The backed-up topics and groups (offsets on those topics only) the options ask for."""
    for name in topics:
        check_topic_name(name)
    unknown = [t for t in topics if t not in doc["topics"]]
    if unknown:
        raise ConfigurationError(f"topic(s) {', '.join(unknown)} are not in the backup")
    chosen = {n: t for n, t in doc["topics"].items() if not topics or n in topics}
    unknown = [g for g in groups if g not in doc["groups"]]
    if unknown:
        raise ConfigurationError(f"consumer group(s) {', '.join(unknown)} are not in the backup")
    kept = {}
    for group_id, group in doc["groups"].items():
        offsets = {t: parts for t, parts in group["offsets"].items() if t in chosen}
        if offsets and (not groups or group_id in groups):
            kept[group_id] = {"offsets": offsets}
    return chosen, kept


@dataclass
class TargetState:
    """What the restore target holds, read once before planning."""

    brokers: int
    topics: dict[str, dict]
    configs: dict[str, dict] = field(default_factory=dict)  # overrides; a topic absent here: unknown
    acls: list[dict] | None = None  # None: no authorizer
    can_add_partitions: bool = True


def diff_configs(backup: dict[str, str], target: dict[str, str]) -> dict[str, dict]:
    """Config keys whose target value differs from the backup: ``{key: {"from": target, "to": backup}}``.

    Overrides the target has and the backup lacks are left alone: the
    restore adds and corrects, it never resets a topic to broker defaults.
    """
    return {k: {"from": target.get(k), "to": v} for k, v in sorted(backup.items()) if target.get(k) != v}


def plan_topics(
    backup: dict[str, dict], target: TargetState, alter_existing: bool
) -> tuple[list[dict], list[str], list[str]]:
    """The topic actions of a restore: ``(actions, drifted topic names, warnings)``.

    Actions (each a dict with ``topic`` and ``action``): ``create`` (with
    partitions, replication factor capped to the target's brokers, configs),
    ``add_partitions`` (``from``/``to``), ``alter_configs`` (``changes`` as
    :func:`diff_configs`, only with ``alter_existing``). A target with more
    partitions or another replication factor is reported, never changed.
    """
    actions: list[dict] = []
    drifted: list[str] = []
    notes: list[str] = []
    for name, topic in sorted(backup.items()):
        configs = dict(topic.get("configs") or {})
        have = target.topics.get(name)
        if have is None:
            factor = int(topic.get("replication_factor") or 1)
            if factor > target.brokers:
                notes.append(
                    f"topic {name}: replication factor {factor} capped to {target.brokers}, "
                    f"the number of brokers of the target"
                )
                factor = target.brokers
            actions.append(
                {
                    "topic": name,
                    "action": "create",
                    "partitions": topic["partitions"],
                    "replication_factor": factor,
                    "configs": configs,
                }
            )
            continue
        if have["partitions"] < topic["partitions"]:
            actions.append(
                {"topic": name, "action": "add_partitions", "from": have["partitions"], "to": topic["partitions"]}
            )
        elif have["partitions"] > topic["partitions"]:
            notes.append(
                f"topic {name} has {have['partitions']} partitions, the backup {topic['partitions']}: "
                "Kafka cannot remove partitions, left as is"
            )
        if have.get("replication_factor") != topic.get("replication_factor"):
            notes.append(
                f"topic {name}: replication factor {have.get('replication_factor')} on the target, "
                f"{topic.get('replication_factor')} in the backup: not changed (it needs a reassignment)"
            )
        if not configs:
            continue
        current = target.configs.get(name)
        if current is None:
            notes.append(f"topic {name}: the target does not report its configs, so drift cannot be compared")
            if alter_existing:
                actions.append({"topic": name, "action": "alter_configs", "changes": diff_configs(configs, {})})
            continue
        changes = diff_configs(configs, current)
        if changes:
            drifted.append(name)
            if alter_existing:
                actions.append({"topic": name, "action": "alter_configs", "changes": changes})
            else:
                notes.append(
                    f"topic {name}: configs {', '.join(changes)} differ from the backup; "
                    "set alter_existing to correct them"
                )
    return actions, drifted, notes


def plan_acls(backup: list[dict] | None, target: list[dict] | None) -> tuple[list[dict], list[str]]:
    """The ACLs to create (those of the backup the target lacks) and warnings."""
    if not backup:
        return [], []
    if target is None:
        return [], [f"the backup has {len(backup)} ACL(s) but the target has no authorizer: not restored"]
    have = {acl_key(a) for a in target}
    return [a for a in sorted(backup, key=acl_key) if acl_key(a) not in have], []


def clamp(offset: int, start: int, end: int) -> int:
    """``offset`` moved into ``[start, end]``."""
    return min(max(offset, start), end)


def target_offset(mode: str, committed: int, start: int, end: int, by_time: int | None = None) -> tuple[int, str]:
    """The offset to commit on the target for one partition, and why it differs from the backup's.

    ``committed`` is the backup's committed offset; ``start``/``end`` the
    target partition's log range; ``by_time`` the target offset found for the
    backup's timestamp (``None``: no record at or after it, or no timestamp).
    """
    if mode == "earliest":
        return start, ""
    if mode == "latest":
        return end, ""
    if mode == "timestamp":
        if by_time is None:
            return end, "no record at or after the recorded time: log end"
        return clamp(by_time, start, end), ""
    if mode != "committed":
        raise ConfigurationError(f"unknown offsets mode {mode!r}: use one of {', '.join(OFFSET_MODES)}")
    if committed < start:
        return start, f"committed {committed} is below the target's log start {start}: clamped"
    if committed > end:
        return end, f"committed {committed} is beyond the target's log end {end}: clamped"
    return committed, ""


def offset_for_time(read: Callable[[int], tuple[int, int] | None], start: int, end: int, timestamp: int) -> int | None:
    """The first offset in ``[start, end)`` whose record's timestamp is at or after ``timestamp``.

    ``read(offset)`` gives ``(offset, timestamp)`` of the first record at or
    after an offset, or ``None``. A binary search (timestamps taken as
    non-decreasing, as Kafka's time index does): ``log2(end - start)`` reads.
    Used when a broker's ListOffsets by time is contradicted by its records.
    """
    low, high = start, end
    while low < high:
        middle = (low + high) // 2
        record = read(middle)
        if record is None or record[1] >= timestamp:
            high = middle
        else:
            low = record[0] + 1
    record = read(low) if low < end else None
    return record[0] if record and record[1] >= timestamp else None


def time_answer_holds(read: Callable[[int], tuple[int, int] | None], offset: int, start: int, timestamp: int) -> bool:
    """Whether a ListOffsets-by-time answer agrees with the records around it."""
    record = read(offset)
    if record is None or record[1] < timestamp:
        return False
    if offset <= start:
        return True
    before = read(offset - 1)
    return before is None or before[0] >= offset or before[1] < timestamp


def group_diff(
    group_id: str, current: dict[tuple[str, int], int], wanted: dict[tuple[str, int], int]
) -> dict[str, dict]:
    """The before/after of a group's offsets, as ``{"before": ..., "after": ...}`` keyed ``topic-partition``."""
    keys = sorted(wanted)
    return {
        "before_header": f"consumer group {group_id}",
        "after_header": f"consumer group {group_id}",
        "before": {f"{t}-{p}": current.get((t, p)) for t, p in keys},
        "after": {f"{t}-{p}": wanted[(t, p)] for t, p in keys},
    }


def topic_diff(action: dict, target: TargetState) -> dict:
    """The before/after of one planned topic action."""
    name = action["topic"]
    have = target.topics.get(name)
    before = {} if have is None else {**have, "configs": dict(target.configs.get(name) or {})}
    after = dict(before)
    if action["action"] == "create":
        after = {k: action[k] for k in ("partitions", "replication_factor", "configs")}
    elif action["action"] == "add_partitions":
        after["partitions"] = action["to"]
    elif action["action"] == "alter_configs":
        after["configs"] = {**after.get("configs", {}), **{k: c["to"] for k, c in action["changes"].items()}}
    return {"before_header": f"topic {name}", "after_header": f"topic {name}", "before": before, "after": after}


# --- restore (reads the target, plans, then applies) -------------------------------------------------------------


def read_target(cluster: Cluster, names: list[str]) -> TargetState:
    """The target's topics, configs (where complete), ACLs and capabilities."""
    topics = cluster.topics()
    existing = [n for n in names if n in topics]
    configs = {}
    for name, entries in cluster.configs(existing).items():
        overrides, complete, _sensitive = topic_overrides(entries)
        if complete:
            configs[name] = overrides
    return TargetState(
        brokers=cluster.brokers,
        topics=topics,
        configs=configs,
        acls=cluster.acls(),
        can_add_partitions=cluster.supports(CreatePartitionsRequest),
    )


def _by_time(cluster: Cluster, topic: str, part: int, start: int, end: int, timestamp: int, notes: list) -> int | None:
    """The target offset for a timestamp: ListOffsets, checked against the records, else a search by Fetch."""
    if start >= end:
        return None
    answer = cluster.offsets([(topic, part)], OffsetTimestamp(timestamp)).get((topic, part), (-1, -1))[0]

    def read(offset):
        return cluster.read_record(topic, part, offset)

    if 0 <= answer < end and time_answer_holds(read, answer, start, timestamp):
        return answer
    if answer < 0:
        return None
    notes.append(
        f"{topic}-{part}: the broker's ListOffsets by time answered {answer}, which its records contradict; "
        "found the offset by reading records instead"
    )
    return offset_for_time(read, start, end, timestamp)


def plan_groups(
    cluster: Cluster,
    doc: dict,
    group_ids: list[str],
    mode: str,
    timestamp: int | None,
    present: dict[str, int],
    after: dict[str, int],
) -> tuple[dict[str, dict], list[str]]:
    """``({group: {"current", "wanted", "notes"}}, warnings)`` for groups whose offsets would change.

    ``present`` maps each topic to its partition count on the target now,
    ``after`` once the topic actions are done: a partition that does not
    exist yet has an empty log (offsets 0), one missing from ``after`` too is
    skipped with a warning.
    """
    notes: list[str] = []
    stored_parts = {(t, int(p)) for g in group_ids for t, parts in doc["groups"][g]["offsets"].items() for p in parts}
    now_parts = sorted((t, p) for t, p in stored_parts if p < present.get(t, 0))
    starts = cluster.offsets(now_parts, OffsetSpec.EARLIEST)
    ends = cluster.offsets(now_parts, OffsetSpec.LATEST)
    plans: dict[str, dict] = {}
    for group_id in group_ids:
        current = {k: v[0] for k, v in cluster.group_offsets(group_id).items()}
        wanted: dict[tuple[str, int], int] = {}
        kept: dict[tuple[str, int], str] = {}
        why: dict[str, str] = {}
        for topic, parts in sorted(doc["groups"][group_id]["offsets"].items()):
            for part_text, stored in sorted(parts.items(), key=lambda item: int(item[0])):
                part = int(part_text)
                if part >= after.get(topic, 0):
                    notes.append(f"group {group_id}: {topic}-{part} does not exist on the target: offset not restored")
                    continue
                start, end = starts.get((topic, part), (0, 0))[0], ends.get((topic, part), (0, 0))[0]
                found = None
                if mode == "timestamp":
                    when = timestamp if timestamp is not None else stored.get("timestamp")
                    if when is not None:
                        found = _by_time(cluster, topic, part, start, end, when, notes)
                offset, note = target_offset(mode, stored["offset"], start, end, found)
                wanted[(topic, part)] = offset
                kept[(topic, part)] = stored.get("metadata") or ""
                if note:
                    why[f"{topic}-{part}"] = note
                    notes.append(f"group {group_id}: {topic}-{part}: {note}")
        changes = {k: v for k, v in wanted.items() if current.get(k) != v}
        if changes:
            metadata = {k: kept[k] for k in changes}
            plans[group_id] = {"current": current, "wanted": changes, "metadata": metadata, "notes": why}
    return plans, notes


def partitions_after(target: TargetState, actions: list[dict]) -> tuple[dict[str, int], dict[str, int]]:
    """Partition counts per topic on the target now and once ``actions`` are done."""
    present = {name: topic["partitions"] for name, topic in target.topics.items()}
    after = dict(present)
    for action in actions:
        if action["action"] == "create":
            after[action["topic"]] = action["partitions"]
        elif action["action"] == "add_partitions":
            after[action["topic"]] = action["to"]
    return present, after


def refuse_active(cluster: Cluster, group_ids: list[str]) -> None:
    """Raise unless every group is without members: moving a live consumer's offsets would be lost or fought."""
    busy = []
    for group_id in group_ids:
        state, members = cluster.active_members(group_id)
        if members:
            busy.append(f"{group_id} ({state}, {members} member(s))")
    if busy:
        raise SourceError(
            f"consumer group(s) {', '.join(busy)} have active members: stop their consumers before restoring offsets"
        )


def apply_plan(cluster: Cluster, actions: list[dict], acls: list[dict], groups: dict[str, dict]) -> None:
    """Carry out a restore plan: topics, partitions, configs, ACLs, then group offsets."""
    for action in actions:
        name = action["topic"]
        if action["action"] == "create":
            cluster.create_topic(name, action["partitions"], action["replication_factor"], action["configs"])
        elif action["action"] == "add_partitions":
            cluster.add_partitions(name, action["to"])
        elif action["action"] == "alter_configs":
            cluster.set_configs(name, {k: c["to"] for k, c in action["changes"].items()})
    cluster.create_acls(acls)
    for group_id, plan in sorted(groups.items()):
        cluster.commit_offsets(group_id, plan["wanted"], plan.get("metadata"))
