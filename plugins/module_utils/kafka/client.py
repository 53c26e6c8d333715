# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Kafka connections: the connection options, kafka-python clients built from them, errors translated.

:class:`Cluster` is the one admin client (and, when needed, record reader) every
Kafka module uses; :func:`kafka_module` the one module constructor with the
connection options of ``doc_fragments/kafka.py``. Where a broker lacks a
feature (Tansu, the test stand-in, lacks several: see
``tests/support/services.py``) the code says so instead of pretending.
"""

from __future__ import annotations

import contextlib
import io
import re
import socket
import struct
import threading
import traceback
import warnings
from collections.abc import Callable, Iterator
from dataclasses import dataclass

from ansible.module_utils.basic import env_fallback, missing_required_lib

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupError,
    BackupModule,
    ConfigurationError,
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
            ResourcePattern,
            ResourcePatternFilter,
            ResourceType,
        )
        from kafka.net.sasl import get_sasl_mechanism
        from kafka.net.transport import KafkaSSLTransport
        from kafka.protocol.admin import DescribeGroupsRequest
        from kafka.protocol.consumer import FetchRequest
        from kafka.protocol.producer import InitProducerIdRequest, ProduceRequest
        from kafka.protocol.sasl import SaslAuthenticateRequest, SaslHandshakeRequest
        from kafka.structs import OffsetAndMetadata
    KAFKA_IMPORT_ERROR = None
except ImportError:  # reported by the modules with missing_required_lib
    KAFKA_IMPORT_ERROR = traceback.format_exc()

_TOPIC_NAME_RE = re.compile(r"^[A-Za-z0-9._-]{1,249}$")
READ_COMMITTED = 1
FETCH_VERSION = 11  # written and read here (fetch_request, fetch_answer): Kafka 2.3+; Tansu answers up to 11
PRODUCE_VERSION = 9  # as kafka-python's own producer
DUPLICATE_SEQUENCE_NUMBER = 46  # an idempotent producer's batch the broker already has
TOO_LARGE = (10, 18)  # MESSAGE_TOO_LARGE, RECORD_LIST_TOO_LARGE


class RetriableError(SourceError):
    """A Kafka error a later attempt may get past: a leader that moved, a timeout, a lost connection."""


@dataclass
class Fetched:
    """One partition's answer to a Fetch: its offsets then, and the record-batch bytes as the broker sent them."""

    error: int
    high_watermark: int
    last_stable_offset: int
    log_start_offset: int
    aborted: list[tuple[int, int]]  # (producer id, first offset) of aborted transactions in the answer
    records: bytes | memoryview  # a slice of the whole answer, as read from the socket

    @property
    def end(self) -> int:
        """Where read-committed data ends: the last stable offset (the high watermark if the broker has none)."""
        return self.last_stable_offset if self.last_stable_offset >= 0 else self.high_watermark


# Which topics and groups a module that reads a cluster selects (doc_fragments/kafka.py, SELECTION).
SELECTION_SPEC: dict = {
    name: dict(type="list", elements="str", default=[])
    for name in ("include_topics", "exclude_topics", "include_groups", "exclude_groups")
}

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


def selection(params: dict) -> list[list[re.Pattern]]:
    """The compiled patterns of :data:`SELECTION_SPEC`'s options, in its order (include/exclude topics, groups)."""
    return [compile_patterns(params[name], name) for name in SELECTION_SPEC]


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
        client_id=CLIENT_ID,
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


def request_error(exc: BaseException, action: str) -> BaseException:
    """What a failed request to a broker raises: :class:`RetriableError` for a lost connection or a retriable
    kafka-python error, :class:`SourceError` for another kafka-python error, any other exception as it is."""
    if isinstance(exc, OSError):
        return RetriableError(str(translate_error(exc, action)))
    if KAFKA_IMPORT_ERROR is None and isinstance(exc, kafka_errors.KafkaError):
        return (RetriableError if exc.retriable else SourceError)(str(translate_error(exc, action)))
    return exc


def broker_error(code: int, action: str, detail: str | None = None) -> SourceError:
    """The error a broker's error code means: :class:`RetriableError` when a later attempt may succeed."""
    error = kafka_errors.for_code(code)
    message = f"cannot {action}: the broker answered {error.__name__}" + (f" ({detail})" if detail else "")
    if code in TOO_LARGE:
        message += ": lower batch_bytes below the target topic's max.message.bytes"
    return (RetriableError if error.retriable else SourceError)(message)


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


CLIENT_ID = "caas-backup"
_I16, _I32 = struct.Struct(">h"), struct.Struct(">i")
_FETCH_HEADER = struct.Struct(">ihhih")  # size, api key (1), version, correlation id, client id length
_FETCH_BODY = struct.Struct(">iiiibii")  # replica, max wait, min bytes, max bytes, isolation, session id, epoch
_FETCH_PARTITION = struct.Struct(">iiqqi")  # partition, leader epoch, offset, log start offset, max bytes
_FETCHED_HEAD = struct.Struct(">ihii")  # throttle time, error code, session id, topics
_FETCHED_PARTITION = struct.Struct(">ihqqqi")  # partition, error, high watermark, last stable, log start, aborted
_ABORTED = struct.Struct(">qq")  # producer id, first offset


def fetch_request(correlation: int, wanted: dict[tuple[str, int], int], max_bytes: int, max_wait_ms: int) -> bytes:
    """A framed read-committed Fetch v11 request, no fetch session, of ``{(topic, partition): offset}``.

    Written here rather than by kafka-python, whose encoders are generated on
    first use (milliseconds in every capture); the bytes are the ones its
    FetchRequest v11 encodes (tests/unit/plugins/module_utils/test_kafka_link.py).
    """
    by_topic: dict[str, list[tuple[int, int]]] = {}
    for (topic, part), offset in sorted(wanted.items()):
        by_topic.setdefault(topic, []).append((part, offset))
    client = CLIENT_ID.encode()
    body = [
        client,
        _FETCH_BODY.pack(-1, max_wait_ms, 1, max_bytes * max(1, len(wanted)), READ_COMMITTED, 0, -1),
        _I32.pack(len(by_topic)),
    ]
    for topic, parts in by_topic.items():
        name = topic.encode()
        body += [_I16.pack(len(name)), name, _I32.pack(len(parts))]
        body += [_FETCH_PARTITION.pack(part, -1, offset, -1, max_bytes) for part, offset in parts]
    body.append(b"\0\0\0\0\0\0")  # no forgotten topics, an empty rack id
    rest = b"".join(body)
    return _FETCH_HEADER.pack(_FETCH_HEADER.size - 4 + len(rest), 1, FETCH_VERSION, correlation, len(client)) + rest


def fetch_answer(view: memoryview) -> dict[tuple[str, int], Fetched]:
    """A Fetch v11 answer's body, per ``(topic, partition)``; each one's records a slice of ``view``, not a copy.

    A cut or malformed answer raises :class:`SourceError`, a top-level error
    the broker's error (:func:`broker_error`).
    """
    found = {}
    try:
        _throttle, error, _session, topics = _FETCHED_HEAD.unpack_from(view)
        if error:
            raise broker_error(error, "fetch Kafka records")
        pos = _FETCHED_HEAD.size
        for _topic in range(topics):
            (size,) = _I16.unpack_from(view, pos)
            topic = bytes(view[pos + 2 : pos + 2 + size]).decode()
            (parts,) = _I32.unpack_from(view, pos + 2 + size)
            pos += 6 + size
            for _part in range(parts):
                part, error, high, stable, start, aborted = _FETCHED_PARTITION.unpack_from(view, pos)
                pos += _FETCHED_PARTITION.size
                aborts = [_ABORTED.unpack_from(view, pos + 16 * n) for n in range(max(aborted, 0))]
                pos += 16 * max(aborted, 0) + 4  # and the preferred read replica
                (size,) = _I32.unpack_from(view, pos)
                records = view[pos + 4 : pos + 4 + max(size, 0)]
                pos += 4 + max(size, 0)
                if pos > len(view):
                    raise struct.error("cut")
                found[(topic, part)] = Fetched(error, high, stable, start, aborts, records)
    except (struct.error, UnicodeDecodeError):
        raise SourceError("the broker's Fetch answer is cut or malformed") from None
    return found


class Link:
    """A blocking connection to one broker that reads each answer whole: the record reads (Fetch) go through it.

    kafka-python's client receives an answer 4 KiB at a time on its I/O
    thread and stitches it together in Python, which made the capture
    CPU-bound; this reads the framed answer into one buffer, and a Fetch
    answer's records stay slices of it (:meth:`fetch`). TLS (the SSL
    context kafka-python builds from the same options) and SASL (its PLAIN
    and SCRAM mechanisms, SaslHandshake v1) are kafka-python's own.
    """

    def __init__(self, config: dict, host: str, port: int, version_of) -> None:
        self._version_of = version_of  # request class -> the version the brokers and kafka-python share
        self._correlation = 0
        protocol = config["security_protocol"]
        sock = socket.create_connection((host, port), timeout=config["bootstrap_timeout_ms"] / 1000)
        try:
            if protocol in ("SSL", "SASL_SSL"):
                ssl_config = dict(KafkaSSLTransport.DEFAULT_CONFIG)
                ssl_config.update({k: v for k, v in config.items() if k in ssl_config})
                context = KafkaSSLTransport._build_ssl_context(ssl_config)  # kafka-python's, from the same options
                sock = context.wrap_socket(sock, server_hostname=host)
            sock.settimeout(config["request_timeout_ms"] / 1000)
            self._sock = sock
            if protocol.startswith("SASL_"):
                self._authenticate(config, host)
        except BaseException:
            sock.close()
            raise

    def close(self) -> None:
        with contextlib.suppress(OSError):
            self._sock.close()

    def request(self, request):
        """Send one request and read its answer (raises OSError on a lost connection, SourceError on a bad frame)."""
        version = self._version_of(request)
        self._correlation += 1
        request.API_VERSION = version
        request.with_header(correlation_id=self._correlation, client_id=CLIENT_ID)
        self._sock.sendall(request.encode(framed=True, header=True))
        answer = io.BytesIO(self._answer())
        kind = request.header.get_response_class()
        kind.parse_header(answer)  # its correlation id checked by _answer
        return kind.decode(answer)

    def fetch(self, wanted: dict[tuple[str, int], int], max_bytes: int, max_wait_ms: int) -> dict:
        """A Fetch of ``{(topic, partition): offset}`` (:func:`fetch_request`) and its answer (:func:`fetch_answer`)."""
        self._correlation += 1
        self._sock.sendall(fetch_request(self._correlation, wanted, max_bytes, max_wait_ms))
        return fetch_answer(memoryview(self._answer())[4:])  # after the response header v0: the correlation id

    def _answer(self) -> bytearray:
        """The answer to the request just sent, after its size: the response header, then the body.

        Every response header starts with the correlation id, checked here.
        """
        (size,) = _I32.unpack(self._read(4))
        answer = self._read(size)
        if size < 4 or _I32.unpack_from(answer)[0] != self._correlation:
            raise SourceError("the broker answered another request than the one sent (correlation id)")
        return answer

    def _read(self, size: int) -> bytearray:
        buf = bytearray(size)
        view, got = memoryview(buf), 0
        while got < size:
            n = self._sock.recv_into(view[got:])
            if not n:
                raise ConnectionError("the broker closed the connection")
            got += n
        return buf

    def _authenticate(self, config: dict, host: str) -> None:
        """SASL as kafka-python does it (SaslHandshake v1 then SaslAuthenticate), with its mechanism classes."""
        name = config["sasl_mechanism"]
        answer = self.request(SaslHandshakeRequest(mechanism=name, min_version=1))
        if answer.error_code:
            raise SourceError(f"the broker does not offer SASL {name} (it offers {', '.join(answer.mechanisms)})")
        mechanism = get_sasl_mechanism(name)(host=host, **config)
        while not mechanism.is_done():
            answer = self.request(SaslAuthenticateRequest(auth_bytes=mechanism.auth_bytes()))
            if answer.error_code:
                raise SourceError(f"authentication failed (SASL {name}: {answer.error_message})")
            mechanism.receive(answer.auth_bytes)
        if not mechanism.is_authenticated():
            raise SourceError(f"authentication failed (SASL {name})")


class Cluster:
    """An admin client (and, when needed, a record reader) on one Kafka cluster."""

    def __init__(self, params: dict) -> None:
        self.config = client_config(params)
        probe(self.config["bootstrap_servers"], min(self.config["bootstrap_timeout_ms"] / 1000, 10))
        self._consumer = None
        self._links: dict[int, list[Link]] = {}  # per broker, the links no thread is using now
        self._links_lock = threading.Lock()
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
        for link in (link for free in self._links.values() for link in free):
            link.close()
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

    def leaders(self, names: list[str]) -> dict[tuple[str, int], int]:
        """``{(topic, partition): leader broker id}`` of the named topics."""
        with kafka_errors_as("describe Kafka topics"):
            described = self.admin.describe_topics(names)
        return {(t["name"], p["partition_index"]): p["leader_id"] for t in described for p in t.get("partitions") or ()}

    def fetch(
        self, leader: int, wanted: dict[tuple[str, int], int], max_bytes: int, max_wait_ms: int = 10
    ) -> dict[tuple[str, int], Fetched]:
        """One read-committed Fetch from ``leader`` of ``{(topic, partition): offset}``, answers kept raw.

        The records stay the bytes the broker sent (record batches with their
        CRCs); a partition whose answer holds more than ``max_bytes`` is cut
        by the broker after at least one whole batch. ``max_wait_ms`` is at
        least 1: Tansu answers a Fetch with no wait with no partitions at all.
        """
        wait = max(1, max_wait_ms)
        return self._over_link(leader, "fetch Kafka records", lambda link: link.fetch(wanted, max_bytes, wait))

    def _over_link(self, node_id: int, action: str, read: Callable[[Link], dict]) -> dict:
        """One read over a :class:`Link` to this broker: a free one, or a new one (a link per thread at once).

        A link that fails is closed. A kept link the broker closed while it
        was idle (``connections.max.idle.ms``) is replaced once, the request
        sent again (a read changes nothing); a lost new connection raises
        :class:`RetriableError`.
        """
        with self._links_lock:
            free = self._links.setdefault(node_id, [])
            link = free.pop() if free else None
        while True:
            kept = link is not None
            try:
                if link is None:
                    link = self._open_link(node_id, action)
                answer = read(link)
                break
            except BaseException as exc:
                if link is not None:
                    link.close()
                    link = None
                if isinstance(exc, OSError) and kept:
                    continue
                error = request_error(exc, action)
                if error is exc:
                    raise
                raise error from None
        with self._links_lock:
            free.append(link)
        return answer

    def _open_link(self, node_id: int, action: str) -> Link:
        broker = self.admin._manager.cluster.broker_metadata(node_id)
        if broker is None:
            raise RetriableError(f"cannot {action}: broker {node_id} is not in the cluster metadata")
        try:  # the Fetch version written and read here
            self.admin._manager.broker_version_data.api_version(FetchRequest, FETCH_VERSION, FETCH_VERSION)
        except kafka_errors.IncompatibleBrokerVersion as exc:
            raise SourceError(f"cannot {action}: it needs Fetch v{FETCH_VERSION} (Kafka 2.3 or newer): {exc}") from None
        return Link(self.config, broker.host, broker.port, self.admin._manager.broker_version_data.api_version)

    def _send(self, request, node_id: int | None, action: str):
        """One request to a broker (any broker when ``node_id`` is None) and its answer.

        A lost connection or a retriable kafka-python error raises :class:`RetriableError`, another one
        :class:`SourceError`.
        """
        admin = self.admin

        async def send():
            return await admin._manager.send(request, node_id=node_id)

        try:
            return admin._manager.run(send)
        except Exception as exc:
            error = request_error(exc, action)
            if error is exc:
                raise
            raise error from None

    def init_producer(self) -> tuple[int, int]:
        """A new idempotent producer's ``(producer id, epoch)``: the brokers drop a batch of it they already have."""
        request = InitProducerIdRequest(
            transactional_id=None, transaction_timeout_ms=60000, producer_id=-1, producer_epoch=-1, max_version=4
        )
        answer = self._send(request, None, "start an idempotent producer")
        if answer.error_code:
            raise broker_error(answer.error_code, "start an idempotent producer")
        return answer.producer_id, answer.producer_epoch

    def produce(self, leader: int, topic: str, partition: int, batch: bytes, timeout_ms: int = 25000) -> int | None:
        """Append one record batch to a partition, acknowledged by every in-sync replica; its base offset.

        None when the broker answers that it already has the batch (an
        idempotent producer's batch sent again). ``timeout_ms`` (the broker's)
        stays below the client's request timeout, so the broker's answer
        comes first. Raises :class:`RetriableError` when the broker (or the
        connection) says a later attempt may succeed, :class:`SourceError`
        otherwise.
        """
        part = ProduceRequest.TopicProduceData.PartitionProduceData(index=partition, records=batch)
        request = ProduceRequest(
            transactional_id=None,
            acks=-1,
            timeout_ms=timeout_ms,
            topic_data=[ProduceRequest.TopicProduceData(name=topic, partition_data=[part])],
            max_version=PRODUCE_VERSION,
        )
        action = f"produce to {topic}-{partition}"
        response = self._send(request, leader, action)
        answers = [p for t in response.responses for p in t.partition_responses if p.index == partition]
        if not answers:
            raise RetriableError(f"cannot {action}: the broker's answer names no such partition")
        answer = answers[0]
        if answer.error_code == DUPLICATE_SEQUENCE_NUMBER:
            return None
        if answer.error_code:
            raise broker_error(answer.error_code, action, getattr(answer, "error_message", None))
        return answer.base_offset

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
