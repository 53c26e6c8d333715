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

import contextlib
import datetime
import json
import re
import socket
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupError,
    BackupModule,
    ConfigurationError,
    IntegrityError,
    SourceError,
)

try:
    with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
        warnings.simplefilter("ignore", DeprecationWarning)
        import kafka.errors as kafka_errors
        from kafka import KafkaAdminClient, KafkaConsumer, TopicPartition
        from kafka.admin import (
            ACL,
            ACLFilter,
            ACLOperation,
            ACLPermissionType,
            ACLResourcePatternType,
            ConfigResource,
            ConfigResourceType,
            OffsetSpec,
            OffsetTimestamp,
            ResourcePattern,
            ResourcePatternFilter,
            ResourceType,
        )
        from kafka.protocol.admin import CreatePartitionsRequest, DescribeGroupsRequest
        from kafka.structs import OffsetAndMetadata
    KAFKA_IMPORT_ERROR = None
except ImportError:  # reported by the modules with missing_required_lib
    KAFKA_IMPORT_ERROR = traceback.format_exc()

FORMAT = "caas.backup/kafka-meta"
FORMAT_VERSION = 1
OBJECT_STEM = "kafka-meta.json"
OFFSET_MODES = ("committed", "earliest", "latest", "timestamp")
_TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
# Every Apache Kafka broker describes these for any topic when asked for all configs:
# an answer without them is a broker that does not report topic configs (Tansu's memory engine).
_ALWAYS_DESCRIBED = frozenset({"cleanup.policy", "retention.ms", "segment.bytes"})
_OVERRIDE_SOURCE = "DYNAMIC_TOPIC_CONFIG"

# How every Kafka module connects; kafka-python's names (see doc_fragments/kafka.py).
CONNECTION_SPEC: dict = dict(
    bootstrap_servers=dict(
        type="list", elements="str", required=True, fallback=(env_fallback, ["CAAS_KAFKA_BOOTSTRAP_SERVERS"])
    ),
    security_protocol=dict(type="str", default="PLAINTEXT", choices=["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"]),
    sasl_mechanism=dict(type="str", choices=["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"]),
    sasl_plain_username=dict(type="str", fallback=(env_fallback, ["KAFKA_SASL_USERNAME"])),
    sasl_plain_password=dict(type="str", no_log=True, fallback=(env_fallback, ["KAFKA_SASL_PASSWORD"])),
    ssl_cafile=dict(type="path"),
    ssl_certfile=dict(type="path"),
    ssl_keyfile=dict(type="path"),
    ssl_password=dict(type="str", no_log=True, fallback=(env_fallback, ["KAFKA_SSL_PASSWORD"])),
    ssl_check_hostname=dict(type="bool", default=True),
    connect_timeout=dict(type="int", default=15),
    request_timeout=dict(type="int", default=30),
)


# --- connection -------------------------------------------------------------------------------------------------


def kafka_module(argument_spec: dict, **kwargs) -> BackupModule:
    """A BackupModule with the Kafka connection options; it fails saying what to install without kafka-python."""
    module = BackupModule(dict(CONNECTION_SPEC, **argument_spec), **kwargs)
    if KAFKA_IMPORT_ERROR:
        module.fail_json(msg=missing_required_lib("kafka-python"), exception=KAFKA_IMPORT_ERROR)
    return module


def check_topic_name(name: str) -> str:
    """``name`` if Kafka accepts it as a topic name (letters, digits, ``.``, ``_``, ``-``; 1-249 long)."""
    if not isinstance(name, str) or not _TOPIC_NAME_RE.match(name) or name in (".", ".."):
        raise ConfigurationError(
            f"invalid topic name {name!r}: use 1-249 letters, digits, '.', '_' or '-' (not '.' or '..')"
        )
    return name


def compile_patterns(patterns: list[str] | None, option: str) -> list[re.Pattern]:
    """Regular expressions from an option, with the option named when one does not compile."""
    compiled = []
    for pattern in patterns or ():
        try:
            compiled.append(re.compile(pattern))
        except re.error as exc:
            raise ConfigurationError(f"{option}: {pattern!r} is not a regular expression: {exc}") from None
    return compiled


def selected(name: str, include: list[re.Pattern], exclude: list[re.Pattern]) -> bool:
    """Whether ``name`` matches (fully) an include pattern, or there are none, and no exclude pattern."""
    if include and not any(p.fullmatch(name) for p in include):
        return False
    return not any(p.fullmatch(name) for p in exclude)


def client_config(params: dict) -> dict:
    """kafka-python client keyword arguments from the module's connection options.

    Validates the combinations kafka-python would only reject later with a
    less helpful message. The password goes into the client's config only,
    never into a result.
    """
    servers = [s.strip() for s in params.get("bootstrap_servers") or () if s and s.strip()]
    if not servers:
        raise ConfigurationError("bootstrap_servers is empty: give at least one host:port")
    for server in servers:
        host, sep, port = server.rpartition(":")
        if not sep or not host or not port.isdigit():
            raise ConfigurationError(f"bootstrap server {server!r} is not host:port")
    protocol = params.get("security_protocol") or "PLAINTEXT"
    timeout_ms = int(params.get("request_timeout") or 30) * 1000
    config = dict(
        bootstrap_servers=servers,
        security_protocol=protocol,
        client_id="caas-backup",
        request_timeout_ms=timeout_ms,
        bootstrap_timeout_ms=int(params.get("connect_timeout") or 15) * 1000,
        # A consumer needs connections_max_idle_ms > request_timeout_ms > fetch_max_wait_ms.
        connections_max_idle_ms=max(540000, timeout_ms + 1000),
    )
    mechanism = params.get("sasl_mechanism")
    if protocol.startswith("SASL_"):
        if not mechanism:
            raise ConfigurationError(f"security_protocol {protocol} needs sasl_mechanism")
        if not params.get("sasl_plain_username") or not params.get("sasl_plain_password"):
            raise ConfigurationError(f"sasl_mechanism {mechanism} needs sasl_plain_username and sasl_plain_password")
        config.update(
            sasl_mechanism=mechanism,
            sasl_plain_username=params["sasl_plain_username"],
            sasl_plain_password=params["sasl_plain_password"],
        )
    elif mechanism:
        raise ConfigurationError("sasl_mechanism needs security_protocol SASL_PLAINTEXT or SASL_SSL")
    if protocol in ("SSL", "SASL_SSL"):
        config["ssl_check_hostname"] = params.get("ssl_check_hostname", True)
        for key in ("ssl_cafile", "ssl_certfile", "ssl_keyfile", "ssl_password"):
            if params.get(key):
                config[key] = params[key]
    return config


def translate_error(exc: Exception, action: str) -> BackupError:
    """A typed error naming the cause of a kafka-python exception."""
    if isinstance(exc, BackupError):
        return exc
    name = type(exc).__name__
    if KAFKA_IMPORT_ERROR is None:
        if isinstance(exc, kafka_errors.SaslAuthenticationFailedError) or "Authentication" in name:
            return SourceError(f"cannot {action}: authentication failed ({name}: {exc})")
        if isinstance(exc, kafka_errors.AuthorizationError):
            return SourceError(f"cannot {action}: not authorized ({name}): grant the backup user the rights needed")
        if isinstance(exc, kafka_errors.KafkaTimeoutError | kafka_errors.KafkaConnectionError):
            return SourceError(f"cannot {action}: no broker answered in time ({name}: {exc})")
    return SourceError(f"cannot {action}: {name}: {exc}")


@contextlib.contextmanager
def kafka_errors_as(action: str) -> Iterator[None]:
    """Turn kafka-python's exceptions raised inside into :class:`SourceError` (via :func:`translate_error`)."""
    try:
        yield
    except BackupError:
        raise
    except OSError as exc:  # sockets, TLS files: a cause the operator can act on
        raise translate_error(exc, action) from None
    except Exception as exc:
        if KAFKA_IMPORT_ERROR is None and isinstance(exc, kafka_errors.KafkaError):
            raise translate_error(exc, action) from None
        raise


def probe(servers: list[str], timeout: float) -> None:
    """Fail fast, with the cause, unless one bootstrap server accepts a TCP connection.

    kafka-python would retry a refused connection until its bootstrap
    timeout and then report a bare timeout (3.0.12 also leaks a socket per
    refused attempt).
    """
    causes = []
    for server in servers:
        host, _sep, port = server.rpartition(":")
        try:
            socket.create_connection((host.strip("[]"), int(port)), timeout=timeout).close()
            return
        except OSError as exc:
            causes.append(f"{server}: {exc.strerror or exc}")
    raise SourceError(f"cannot reach any bootstrap server ({'; '.join(causes)})")


class Cluster:
    """An admin client (and, when needed, a record reader) on one Kafka cluster."""

    def __init__(self, params: dict) -> None:
        self.config = client_config(params)
        probe(self.config["bootstrap_servers"], min(self.config["bootstrap_timeout_ms"] / 1000, 10))
        self._consumer = None
        try:
            with kafka_errors_as("connect to Kafka"), warnings.catch_warnings():
                warnings.simplefilter("ignore", DeprecationWarning)
                self.admin = KafkaAdminClient(**self.config)
        except SourceError as exc:
            protocol = self.config["security_protocol"]
            if protocol == "PLAINTEXT":
                raise
            # kafka-python reports a failed TLS or SASL handshake as a bootstrap timeout: say what it means.
            raise SourceError(
                f"{exc}; the brokers accept TCP connections, so the {protocol} handshake failed: check "
                "security_protocol, the SASL mechanism and credentials, and the TLS certificates"
            ) from None
        with kafka_errors_as("describe the Kafka cluster"):
            described = self.admin.describe_cluster()
        self.cluster_id: str | None = described.get("cluster_id")
        self.brokers: int = len(described.get("brokers") or ()) or 1

    def close(self) -> None:
        """Close the clients (best effort: the module is exiting anyway)."""
        with contextlib.suppress(Exception):
            if self._consumer is not None:
                self._consumer.close()
        with contextlib.suppress(Exception):
            self.admin.close()

    def __enter__(self) -> Cluster:
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # -- reading -------------------------------------------------------------------------------------------------

    def topics(self) -> dict[str, dict]:
        """Every topic except internal ones: ``{name: {partitions, replication_factor}}``."""
        with kafka_errors_as("list Kafka topics"):
            described = self.admin.describe_topics()
        found = {}
        for topic in described:
            if topic.get("is_internal") or topic["name"].startswith("__"):
                continue
            partitions = topic.get("partitions") or []
            found[topic["name"]] = {
                "partitions": len(partitions),
                "replication_factor": max((len(p.get("replica_nodes") or ()) for p in partitions), default=1),
            }
        return found

    def configs(self, names: list[str]) -> dict[str, dict]:
        """Every config entry the broker describes for each topic (``config_filter=all``)."""
        if not names:
            return {}
        resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
        with kafka_errors_as("describe Kafka topic configs"):
            described = self.admin.describe_configs(resources, config_filter="all")
        return {name: dict((described.get("topic") or {}).get(name) or {}) for name in names}

    def acls(self) -> list[dict] | None:
        """Every ACL, or ``None`` when the cluster has no authorizer."""
        acl_filter = ACLFilter(
            principal=None,
            host=None,
            operation=ACLOperation.ANY,
            permission_type=ACLPermissionType.ANY,
            resource_pattern=ResourcePatternFilter(ResourceType.ANY, None, ACLResourcePatternType.ANY),
        )
        with kafka_errors_as("describe Kafka ACLs"):
            try:
                found, _error = self.admin.describe_acls(acl_filter)
            except kafka_errors.SecurityDisabledError:
                return None
        return sorted((acl_to_dict(a) for a in found), key=acl_key)

    def offsets(self, partitions: list[tuple[str, int]], spec) -> dict[tuple[str, int], tuple[int, int]]:
        """``{(topic, partition): (offset, timestamp)}`` from ListOffsets with one spec for all."""
        if not partitions:
            return {}
        with kafka_errors_as("list Kafka partition offsets"):
            found = self.admin.list_partition_offsets({TopicPartition(t, p): spec for t, p in partitions})
        return {(tp.topic, tp.partition): (ot.offset, ot.timestamp) for tp, ot in found.items()}

    def groups(self) -> list[str]:
        """Every consumer group id the brokers know."""
        with kafka_errors_as("list Kafka consumer groups"):
            return sorted({g["group_id"] for g in self.admin.list_groups()})

    def group_offsets(self, group_id: str) -> dict[tuple[str, int], tuple[int, str]]:
        """A group's committed offsets: ``{(topic, partition): (offset, metadata)}``."""
        with kafka_errors_as(f"read the offsets of consumer group {group_id}"):
            found = self.admin.list_group_offsets(group_id).get(group_id) or {}
        return {(tp.topic, tp.partition): (om.offset, om.metadata or "") for tp, om in found.items() if om.offset >= 0}

    def active_members(self, group_id: str) -> tuple[str, int]:
        """The group's state and number of members, from DescribeGroups.

        kafka-python's ``describe_groups`` asks for, and then fails to decode,
        the authorized operations (Tansu answers bit 15, which kafka-python's
        ACLOperation lacks). State and members are all this needs, so the
        request is sent without that flag and the raw answer read directly.
        """
        admin = self.admin

        async def describe():
            coordinator = await admin._find_coordinator_id(group_id)
            request = DescribeGroupsRequest(groups=[group_id], include_authorized_operations=False)
            return await admin._manager.send(request, node_id=coordinator)

        with kafka_errors_as(f"describe consumer group {group_id}"):
            response = admin._manager.run(describe)
        for group in response.groups:
            if group.group_id == group_id:
                if group.error_code:
                    raise SourceError(
                        f"cannot describe consumer group {group_id}: {kafka_errors.for_code(group.error_code).__name__}"
                    )
                return group.group_state, len(group.members)
        return "Dead", 0

    def read_record(self, topic: str, partition: int, offset: int, timeout_ms: int = 3000) -> tuple[int, int] | None:
        """``(offset, timestamp)`` of the first record at or after ``offset``, or ``None`` when there is none."""
        with kafka_errors_as(f"read {topic}-{partition} at offset {offset}"), warnings.catch_warnings():
            warnings.simplefilter("ignore", DeprecationWarning)
            if self._consumer is None:
                self._consumer = KafkaConsumer(
                    **self.config, enable_auto_commit=False, group_id=None, consumer_timeout_ms=timeout_ms
                )
            tp = TopicPartition(topic, partition)
            self._consumer.assign([tp])
            self._consumer.seek(tp, offset)
            records = self._consumer.poll(timeout_ms=timeout_ms, max_records=1).get(tp) or []
        return (records[0].offset, records[0].timestamp) if records else None

    def supports(self, request_class) -> bool:
        """Whether the brokers answer this request type at all."""
        try:
            return self.admin._manager.broker_version_data.api_version(request_class) >= 0
        except kafka_errors.UnsupportedVersionError:  # IncompatibleBrokerVersion: the API is missing
            return False

    # -- writing -------------------------------------------------------------------------------------------------

    def create_topic(self, name: str, partitions: int, replication_factor: int, configs: dict) -> None:
        """Create one topic and wait until the brokers list it."""
        spec = {"num_partitions": partitions, "replication_factor": replication_factor, "configs": configs}
        with kafka_errors_as(f"create topic {name}"):
            self.admin.create_topics({name: spec}, wait_for_metadata=True)

    def add_partitions(self, name: str, total: int) -> None:
        """Grow a topic to ``total`` partitions."""
        with kafka_errors_as(f"add partitions to topic {name}"):
            self.admin.create_partitions({name: total})

    def set_configs(self, name: str, configs: dict) -> None:
        """Set (incrementally) config overrides of one topic."""
        resource = ConfigResource(ConfigResourceType.TOPIC, name, configs=dict(configs))
        with kafka_errors_as(f"alter the configs of topic {name}"):
            answer = self.admin.alter_configs([resource], raise_on_unknown=False)
        result = (answer.get("topic") or {}).get(name, "OK")
        if result != "OK":
            raise SourceError(f"cannot alter the configs of topic {name}: {result}")

    def create_acls(self, acls: list[dict]) -> None:
        """Create ACLs (as exported by :func:`acl_to_dict`)."""
        if not acls:
            return
        with kafka_errors_as("create Kafka ACLs"):
            answer = self.admin.create_acls([acl_from_dict(a) for a in acls])
        if answer.get("failed"):
            raise SourceError(f"cannot create {len(answer['failed'])} ACL(s): {answer['failed'][0]}")

    def commit_offsets(
        self, group_id: str, offsets: dict[tuple[str, int], int], metadata: dict[tuple[str, int], str] | None = None
    ) -> None:
        """Set a group's committed offsets (with their commit metadata); a partition the broker refuses fails all."""
        metadata = metadata or {}
        wanted = {TopicPartition(*k): OffsetAndMetadata(o, metadata.get(k, ""), None) for k, o in offsets.items()}
        with kafka_errors_as(f"set the offsets of consumer group {group_id}"):
            answer = self.admin.alter_group_offsets(group_id, wanted)
        refused = {f"{tp.topic}-{tp.partition}": err.__name__ for tp, err in answer.items() if err.errno != 0}
        if refused:
            raise SourceError(f"the broker refused offsets of consumer group {group_id}: {refused}")


def acl_to_dict(acl) -> dict:
    """An ACL as plain strings (the names Kafka's own tools use)."""
    return {
        "principal": acl.principal,
        "host": acl.host,
        "operation": acl.operation.name,
        "permission_type": acl.permission_type.name,
        "resource_type": acl.resource_pattern.resource_type.name,
        "resource_name": acl.resource_pattern.resource_name,
        "pattern_type": acl.resource_pattern.pattern_type.name,
    }


def acl_from_dict(data: dict):
    """The kafka-python ACL of :func:`acl_to_dict`'s output."""
    return ACL(
        principal=data["principal"],
        host=data["host"],
        operation=ACLOperation[data["operation"]],
        permission_type=ACLPermissionType[data["permission_type"]],
        resource_pattern=ResourcePattern(
            ResourceType[data["resource_type"]], data["resource_name"], ACLResourcePatternType[data["pattern_type"]]
        ),
    )


def acl_key(acl: dict) -> tuple:
    """A sortable identity of an exported ACL."""
    fields = ("resource_type", "resource_name", "pattern_type", "principal", "host", "operation", "permission_type")
    return tuple(str(acl.get(k)) for k in fields)


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
