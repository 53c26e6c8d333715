"""The record reader's own broker connection (kafka.client.Link): its Fetch codec and its SASL exchange.

The Fetch v11 request and answer are written and read by hand (client.fetch_request, fetch_answer): checked here
byte for byte against kafka-python's own FetchRequest and FetchResponse classes, and with cut or wrong answers.
Tansu, the test broker, has no SASL, so the exchange is checked here against a scripted broker on a loopback
socket that answers with kafka-python's own response classes. The Fetch path itself (and TLS) runs against real
Tansu brokers in tests/integration/test_kafka_messages.py.
"""

import socket
import struct
import threading
import warnings

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import SourceError
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import (
    Fetched,
    Link,
    RetriableError,
    client_config,
    fetch_answer,
    fetch_request,
)

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
    from kafka.protocol.consumer import FetchRequest, FetchResponse
    from kafka.protocol.sasl import (
        SaslAuthenticateRequest,
        SaslAuthenticateResponse,
        SaslHandshakeRequest,
        SaslHandshakeResponse,
    )

VERSIONS = {SaslHandshakeRequest: 1, SaslAuthenticateRequest: 1}
PASSWORD = "pw-do-not-leak-37"


def _read(conn, size):
    data = b""
    while len(data) < size:
        chunk = conn.recv(size - len(data))
        if not chunk:
            raise ConnectionError("closed")
        data += chunk
    return data


class ScriptedBroker:
    """Accepts one connection and answers each request with the next scripted response; keeps what it received."""

    def __init__(self, answers):
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        self.received = []  # (api key, api version, request bytes)
        self.thread = threading.Thread(target=self._serve, args=(answers,), daemon=True)
        self.thread.start()

    def _serve(self, answers):
        conn, _addr = self.server.accept()
        with conn:
            for answer in answers:
                (size,) = struct.unpack(">i", _read(conn, 4))
                data = _read(conn, size)
                api_key, version, correlation = struct.unpack(">hhi", data[:8])
                self.received.append((api_key, version, data))
                if answer is None:  # hang up instead of answering
                    return
                answer.API_VERSION = version
                answer.with_header(correlation_id=correlation)
                conn.sendall(answer.encode(header=True, framed=True))

    def close(self):
        self.server.close()
        self.thread.join(5)


def config(mechanism="PLAIN"):
    return client_config(
        dict(
            bootstrap_servers=["127.0.0.1:1"],
            security_protocol="SASL_PLAINTEXT",
            sasl_mechanism=mechanism,
            sasl_plain_username="backup",
            sasl_plain_password=PASSWORD,
        )
    )


def handshake(mechanisms, error=0):
    return SaslHandshakeResponse(error_code=error, mechanisms=mechanisms)


def authenticated(error=0, message=None):
    return SaslAuthenticateResponse(error_code=error, error_message=message, auth_bytes=b"", session_lifetime_ms=0)


def link_to(broker, mechanism="PLAIN"):
    return Link(config(mechanism), "127.0.0.1", broker.port, lambda request: VERSIONS[type(request)])


def test_plain_authentication_sends_the_handshake_then_the_credentials_once():
    broker = ScriptedBroker([handshake(["PLAIN", "SCRAM-SHA-512"]), authenticated()])
    try:
        link = link_to(broker)
        link.close()
    finally:
        broker.close()
    (hs_key, hs_version, hs_data), (auth_key, auth_version, auth_data) = broker.received
    assert (hs_key, hs_version, auth_key, auth_version) == (17, 1, 36, 1)
    assert b"PLAIN" in hs_data
    assert b"\x00backup\x00" + PASSWORD.encode() in auth_data  # the PLAIN token: authzid, user, password


def test_a_mechanism_the_broker_does_not_offer_fails_naming_what_it_offers():
    broker = ScriptedBroker([handshake(["SCRAM-SHA-512"], error=33)])  # UNSUPPORTED_SASL_MECHANISM
    try:
        with pytest.raises(SourceError, match=r"does not offer SASL PLAIN \(it offers SCRAM-SHA-512\)"):
            link_to(broker)
    finally:
        broker.close()


def test_refused_credentials_fail_with_the_brokers_reason_and_never_the_password():
    reason = "Authentication failed: Invalid username or password"
    broker = ScriptedBroker([handshake(["PLAIN"]), authenticated(error=58, message=reason)])
    try:
        with pytest.raises(SourceError, match=r"authentication failed \(SASL PLAIN: Authentication failed") as failed:
            link_to(broker)
    finally:
        broker.close()
    assert PASSWORD not in str(failed.value)


def test_a_broker_that_hangs_up_mid_answer_is_a_lost_connection():
    broker = ScriptedBroker([handshake(["PLAIN"]), None])
    try:
        with pytest.raises(ConnectionError, match="closed the connection"):
            link_to(broker)
    finally:
        broker.close()


def test_the_fetch_request_is_the_one_kafka_pythons_fetch_request_v11_encodes():
    far = 1234567890123
    wanted = {("orders", 2): far, ("orders", 0): 0, ("audit.log", 5): 17}
    ours = fetch_request(41, wanted, 4 << 20, 10)
    partition = FetchRequest.FetchTopic.FetchPartition
    theirs = FetchRequest(
        replica_id=-1,
        max_wait_ms=10,
        min_bytes=1,
        max_bytes=3 * (4 << 20),
        isolation_level=1,  # read committed
        topics=[
            FetchRequest.FetchTopic(
                topic="audit.log",
                partitions=[partition(partition=5, fetch_offset=17, partition_max_bytes=4 << 20, log_start_offset=-1)],
            ),
            FetchRequest.FetchTopic(
                topic="orders",
                partitions=[
                    partition(partition=0, fetch_offset=0, partition_max_bytes=4 << 20, log_start_offset=-1),
                    partition(
                        partition=2, fetch_offset=1234567890123, partition_max_bytes=4 << 20, log_start_offset=-1
                    ),
                ],
            ),
        ],
    )
    theirs.API_VERSION = 11
    theirs.with_header(correlation_id=41, client_id="caas-backup")
    assert ours == theirs.encode(framed=True, header=True)


def answer_body(*partitions, error=0):
    """A Fetch v11 answer's body as kafka-python's FetchResponse encodes it: topic "orders", these partitions."""
    data = FetchResponse.FetchableTopicResponse.PartitionData
    response = FetchResponse(
        throttle_time_ms=0,
        error_code=error,
        session_id=0,
        responses=[
            FetchResponse.FetchableTopicResponse(
                topic="orders",
                partitions=[
                    data(
                        partition_index=index,
                        error_code=code,
                        high_watermark=high,
                        last_stable_offset=stable,
                        log_start_offset=start,
                        aborted_transactions=aborted
                        and [data.AbortedTransaction(producer_id=p, first_offset=o) for p, o in aborted],
                        preferred_read_replica=-1,
                        records=records,
                    )
                    for index, code, high, stable, start, aborted, records in partitions
                ],
            )
        ],
    )
    response.API_VERSION = 11
    return response.encode()


def test_the_fetch_answer_reads_what_kafka_pythons_fetch_response_v11_encodes_records_not_copied():
    body = bytearray(
        answer_body(
            (0, 0, 900, 880, 3, [(7001, 850), (7002, 870)], b"batches-of-partition-0"),
            (1, 1, 40, -1, 40, None, None),  # OFFSET_OUT_OF_RANGE: no aborted list, no records
            (2, 0, 5, 5, 0, [], b""),
        )
    )
    view = memoryview(body)
    found = fetch_answer(view)
    assert found == {
        ("orders", 0): Fetched(0, 900, 880, 3, [(7001, 850), (7002, 870)], b"batches-of-partition-0"),
        ("orders", 1): Fetched(1, 40, -1, 40, [], b""),
        ("orders", 2): Fetched(0, 5, 5, 0, [], b""),
    }
    records = found[("orders", 0)].records
    assert isinstance(records, memoryview) and records.obj is body  # a slice of the answer read, not a copy
    assert found[("orders", 1)].end == 40 and found[("orders", 0)].end == 880


def test_a_cut_or_failed_fetch_answer_is_an_error_naming_it():
    body = answer_body((0, 0, 900, 900, 0, [], b"x" * 200))
    for cut in (3, 20, len(body) - 1):
        with pytest.raises(SourceError, match="the broker's Fetch answer is cut or malformed"):
            fetch_answer(memoryview(body[:cut]))
    with pytest.raises(RetriableError, match="cannot fetch Kafka records: the broker answered FetchSessionIdNotFound"):
        fetch_answer(memoryview(answer_body(error=70)))  # FETCH_SESSION_ID_NOT_FOUND, retriable
