"""bench/kafka.py's capture baseline: kcat against a real Tansu broker, through bench/kafka_proxy.py.

Tansu 0.6 ends its ApiVersions v3 answer with tagged fields that librdkafka 2.0.2 (Debian's kcat) misreads, so kcat
cannot talk to it directly (the first test shows it); the bench's proxy drops them. These tests need the kcat
binary (Debian package kcat): without it they are skipped, with that reason.
"""

import importlib.util
import shutil
import socket
import struct
import subprocess

import pytest
import services
from harness import REPO

pytestmark = pytest.mark.skipif(not shutil.which("kcat"), reason="kcat (Debian package kcat) is not installed")
RECORDS = 3000


def _load(name):
    spec = importlib.util.spec_from_file_location(f"bench_{name}", REPO / "bench" / f"{name}.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


@pytest.fixture(scope="module")
def bench():
    """bench/kafka.py, loaded by path (its name would shadow the kafka package)."""
    return _load("kafka")


@pytest.fixture()
def proxied(bench, tmp_path):
    """A Tansu broker behind the bench's proxy, filled by the bench: (proxy, url through the proxy, broker)."""
    broker, proxy, url = bench.start_proxied(tmp_path / "kafka")
    try:
        bench.fill(url, RECORDS, 50)
        yield proxy, url, broker
    finally:
        broker.stop()
        proxy.close()


def api_versions(url):
    """The raw ApiVersions v3 answer of *url* (after the correlation id): (api keys, top-level tag count)."""
    host, port = url.rsplit(":", 1)
    header = struct.pack(">hhih", 18, 3, 7, 4) + b"test\x00"  # request header v2, no tags
    body = b"\x05test\x041.0\x00"  # client software name and version (compact strings), no tags
    with socket.create_connection((host, int(port))) as sock:
        sock.sendall(struct.pack(">i", len(header + body)) + header + body)
        with sock.makefile("rb") as answer:
            size = struct.unpack(">i", answer.read(4))[0]
            frame = answer.read(size)
    assert struct.unpack_from(">ih", frame) == (7, 0)  # correlation id, no error
    count, keys, pos = frame[6] - 1, [], 7  # fewer than 127 keys: a one-byte varint
    for _index in range(count):
        keys.append(struct.unpack_from(">hhh", frame, pos))
        assert frame[pos + 6] == 0  # no tags on an entry
        pos += 7
    tags = frame[pos + 4]  # after throttle_time_ms
    return keys, tags, len(frame) - pos


def test_kcat_cannot_read_tansu_directly(tmp_path):
    """Why the proxy exists: librdkafka 2.0.2 fails on Tansu's ApiVersions answer (if this passes no more, drop it)."""
    broker = services.start_kafka(tmp_path / "kafka")
    try:
        probe = subprocess.run(["kcat", "-L", "-b", broker.url, "-m", "3"], capture_output=True, text=True, check=False)
    finally:
        broker.stop()
    assert probe.returncode != 0
    assert "Read underflow" in probe.stderr


def test_proxy_drops_only_the_top_level_tags(proxied, tmp_path):
    """Through the proxy the ApiVersions answer keeps every API range and loses the tagged fields, nothing else."""
    proxy, url, broker = proxied
    keys, tags, tail = api_versions(broker.url)
    assert tags > 0  # what librdkafka 2.0.2 misreads
    assert api_versions(url) == (keys, 0, 5)  # throttle_time_ms and a zero tag count end the answer
    assert (18, 0, 4) in keys and tail > 5


def test_kcat_reads_every_record_through_the_proxy(bench, proxied):
    """The bench's kcat baseline reads every partition to its end through the proxy, and checks the count."""
    proxy, url, _broker = proxied
    seconds, rss = bench.kcat(url, RECORDS)
    assert seconds > 0 and rss > 1
    assert proxy.rewritten > 0
    with pytest.raises(SystemExit, match=f"not {RECORDS + 1} records"):
        bench.kcat(url, RECORDS + 1)  # a kcat that read less than the topic holds fails the bench


def test_capture_and_consumer_read_every_record_through_the_proxy(bench, proxied, tmp_path):
    """kafka_message_capture's code and the raw consumer (kafka-python) work through the proxy too, completely."""
    _proxy, url, _broker = proxied
    bench.capture(url, f"file://{tmp_path}", RECORDS)
    bench.raw_consume(url, RECORDS)
    with pytest.raises(SystemExit, match=f"got 0 records, not {RECORDS}"):
        bench.capture(url, f"file://{tmp_path}", RECORDS)  # the set above holds them all: nothing new
