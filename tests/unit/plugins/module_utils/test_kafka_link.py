"""The record reader's own broker connection (kafka.client.Link): framing and its SASL exchange.

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
from ansible_collections.caas.backup.plugins.module_utils.kafka.client import Link, client_config

with warnings.catch_warnings():  # kafka-python 3.0.12 uses an API deprecated in Python 3.11
    warnings.simplefilter("ignore", DeprecationWarning)
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
