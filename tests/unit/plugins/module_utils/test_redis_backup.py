"""RDB validation, CRC-64, the replication payload parser and option handling, on crafted bytes."""

import io
import struct

import pytest

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, IntegrityError, SourceError
from ansible_collections.caas.backup.plugins.module_utils.redis_backup import (
    Connection,
    RdbValidator,
    _LineReader,
    _set_appendonly,
    check_rdb_version,
    connection_from_params,
    copy_rdb,
    crc64,
    keys_match,
    read_payload,
    supported_rdb_version,
)

# A real dump.rdb written by redis-server 7.0.15 holding one key (a -> b).
REAL = bytes.fromhex(
    "524544495330303130fa0972656469732d76657206372e302e3135fa0a72656469732d62697473c040fa056374696d65"
    "c29c01056bfa08757365642d6d656dc298540e00fa08616f662d62617365c000fe00fb01000001610162ff2509bf216d"
    "d280fe"
)


def rdb(body=b"\xfe\x00\xfb\x01\x00\x00\x01a\x01b", version=b"0010", checksum=True):
    data = b"REDIS" + version + body + b"\xff"
    return data + struct.pack("<Q", crc64(data) if checksum else 0)


def with_crc(data):
    return data + struct.pack("<Q", crc64(data))


def validate(data, chunk=7):
    validator = RdbValidator("test.rdb")
    for start in range(0, len(data), chunk):
        validator.feed(data[start : start + chunk])
    return validator.finish()


def test_crc64_is_redis_crc64_jones():
    """The check value of Redis's crc64.c test (crc64(0, "123456789"))."""
    assert crc64(b"123456789") == 0xE9C6D914C4B8D9CA
    assert crc64(b"56789", crc64(b"1234")) == 0xE9C6D914C4B8D9CA


def test_real_redis_dump_validates():
    facts = validate(REAL, chunk=1000)
    assert facts["rdb_version"] == 10
    assert facts["crc64"] == "fe80d26d21bf0925"


@pytest.mark.parametrize("chunk", [1, 3, 8, 9, 64, 4096])
def test_any_chunking_gives_the_same_result(chunk):
    assert validate(rdb(), chunk) == validate(rdb(), 4096)


def test_zero_trailer_means_checksums_off():
    assert validate(rdb(checksum=False))["crc64"] is None


@pytest.mark.parametrize(
    "data, message",
    [
        (b"", "truncated"),
        (b"REDIS00", "truncated"),
        (b"NOTREDIS0" + b"x" * 20, "is not an RDB file"),
        (b"REDISabcd" + b"x" * 20, "is not an RDB file"),
        (rdb(version=b"0004"), "has no checksum"),
        (rdb()[:-3], "truncated or corrupted"),
        (rdb()[:-1] + b"\x00", "CRC-64"),
        (rdb()[:12] + b"X" + rdb()[13:], "CRC-64"),
        (with_crc(b"REDIS0010\xfe\x00\x00"), "EOF opcode"),
    ],
)
def test_bad_rdb_is_refused(data, message):
    with pytest.raises(IntegrityError, match=message):
        validate(data)


def test_copy_rdb_copies_and_validates():
    out = io.BytesIO()
    copy_rdb(io.BytesIO(rdb()), out, "x")
    assert out.getvalue() == rdb()


@pytest.mark.parametrize(
    "redis_version, supported", [("7.0.15", 10), ("7.2.4", 11), ("7.4.1", 12), ("6.2.6", 9), ("99.0.0", None)]
)
def test_supported_rdb_version(redis_version, supported):
    assert supported_rdb_version(redis_version) == supported


def test_newer_rdb_is_refused():
    check_rdb_version(10, "7.0.15")
    with pytest.raises(IntegrityError, match="from a newer Redis than the target"):
        check_rdb_version(11, "7.0.15")


class FakeSocket:
    """Hands out a byte string in small pieces, like a slow network."""

    def __init__(self, data, piece=5):
        self.data = data
        self.piece = piece

    def recv(self, size):
        chunk, self.data = self.data[: min(size, self.piece)], self.data[min(size, self.piece) :]
        return chunk


CONN = Connection("127.0.0.1", 6379)


@pytest.mark.parametrize("piece", [1, 5, 1000])
def test_payload_with_length_and_keepalives(piece):
    out = io.BytesIO()
    payload = rdb()
    stream = b"\n\n" + b"$%d\r\n" % len(payload) + payload
    facts = read_payload(_LineReader(FakeSocket(stream, piece), CONN), out, CONN)
    assert out.getvalue() == payload and facts["rdb_version"] == 10


@pytest.mark.parametrize("piece", [1, 7, 1000])
def test_diskless_payload_with_eof_mark(piece):
    out = io.BytesIO()
    mark = b"0123456789abcdef0123456789abcdef01234567"
    stream = b"+FULLRESYNC abc 0\r\n$EOF:" + mark + b"\r\n" + rdb() + mark
    read_payload(_LineReader(FakeSocket(stream, piece), CONN), out, CONN)
    assert out.getvalue() == rdb()


def test_payload_errors():
    with pytest.raises(SourceError, match="refused SYNC: NOPERM"):
        read_payload(_LineReader(FakeSocket(b"-NOPERM no sync\r\n"), CONN), io.BytesIO(), CONN)
    with pytest.raises(SourceError, match="closed the connection"):
        read_payload(_LineReader(FakeSocket(b"$100\r\nREDIS"), CONN), io.BytesIO(), CONN)
    with pytest.raises(IntegrityError, match="CRC-64"):
        bad = rdb()[:-1] + b"\x01"
        read_payload(_LineReader(FakeSocket(b"$%d\r\n" % len(bad) + bad), CONN), io.BytesIO(), CONN)


def params(**more):
    base = dict(
        url=None,
        login_host="127.0.0.1",
        login_port=6379,
        login_user=None,
        login_password=None,
        tls=False,
        tls_ca_cert=None,
        tls_cert=None,
        tls_key=None,
        tls_verify=True,
        connect_timeout=10.0,
        timeout=600,
    )
    return dict(base, **more)


def test_connection_from_url():
    conn = connection_from_params(params(url="rediss://backup@redis01:6380", login_password="pw"))
    assert (conn.host, conn.port, conn.tls, conn.username, conn.password) == ("redis01", 6380, True, "backup", "pw")
    assert "pw" not in repr(conn)
    with pytest.raises(ConfigurationError, match="must not hold a password"):
        connection_from_params(params(url="redis://:pw@redis01"))
    with pytest.raises(ConfigurationError, match="redis:// or rediss://"):
        connection_from_params(params(url="http://redis01"))


def test_keys_match_allows_expired_ttl_keys():
    assert keys_match({"keys": 10, "expires": 3}, 10)
    assert keys_match({"keys": 10, "expires": 3}, 7)
    assert not keys_match({"keys": 10, "expires": 3}, 6)
    assert not keys_match({"keys": 10, "expires": 3}, 11)


def test_set_appendonly_replaces_every_directive():
    text = "port 1\nappendonly yes\n  # appendonly comment\nAPPENDONLY yes\n"
    assert _set_appendonly(text, "no") == "port 1\n  # appendonly comment\nappendonly no\n"


@pytest.mark.parametrize(
    "given,name",
    [
        (dict(), "127.0.0.1-6379"),
        (dict(login_host="localhost", login_port=6380), "localhost-6380"),
        (dict(url="rediss://backup@redis01.internal:6390"), "redis01.internal-6390"),
    ],
)
def test_default_source_is_the_configured_host_and_port_never_this_machine(given, name):
    """A loopback address used to become this machine's name: a rebuilt site (new machines) lost its backups."""
    assert connection_from_params(params(**given)).source_name() == name
