"""A loopback TCP proxy in front of a Kafka broker that lets kcat (librdkafka 2.0.2) talk to Tansu.

What it does: every byte is forwarded both ways unchanged, except the broker's answer to a connection's first
request when that request is ApiVersions v3 or later: that answer loses its top-level tagged fields (it ends with a
zero tag count) and its frame length is fixed. After that first answer both directions are moved by ``os.splice``
through a pipe (the bytes never enter Python), one thread per direction.

Why: Tansu 0.6 ends its ApiVersions answer with four tagged fields (SupportedFeatures, FinalizedFeaturesEpoch,
FinalizedFeatures, ZkMigrationReady), which is valid, but librdkafka 2.0.2 (Debian's kcat) skips a tagged field
of N bytes as N-1 bytes, loses its place and fails with "Protocol read buffer underflow for ApiVersion v3".
kcat uses none of those fields. ``api.version.request=false`` is no way round it: librdkafka 2.0.2 only honours it
with ``broker.version.fallback`` below 0.10, whose 0.9 protocol (ListOffsets v0, Fetch v1) Tansu does not fully
answer (its ListOffsets v0 answer is short), whereas through this proxy kcat fetches with Fetch v11, as
kafka_message_capture does.
"""

import contextlib
import fcntl
import os
import queue
import socket
import struct
import threading

PIPE_BYTES = 1024 * 1024
API_VERSIONS = 18


def _uvarint(data: bytes, pos: int) -> tuple[int, int]:
    """The unsigned varint at *pos* and the position after it."""
    value = shift = 0
    while True:
        byte = data[pos]
        pos += 1
        value |= (byte & 0x7F) << shift
        shift += 7
        if not byte & 0x80:
            return value, pos


def _skip_tags(data: bytes, pos: int) -> int:
    """The position after the tagged-field section at *pos*."""
    count, pos = _uvarint(data, pos)
    for _index in range(count):
        _tag, pos = _uvarint(data, pos)
        size, pos = _uvarint(data, pos)
        pos += size
    return pos


def strip_api_versions_tags(body: bytes) -> bytes:
    """An ApiVersions v3+ answer *body* (after the correlation id) without its top-level tagged fields.

    An answer with an error code (answered in the v0 layout) is returned unchanged.
    """
    if struct.unpack_from(">h", body)[0]:
        return body
    count, pos = _uvarint(body, 2)
    for _index in range(count - 1):  # compact array: length + 1
        pos = _skip_tags(body, pos + 6)  # api_key, min_version, max_version
    pos += 4  # throttle_time_ms
    return body[:pos] + b"\x00"


def _read_frame(sock: socket.socket) -> bytes:
    """One whole Kafka frame (size prefix included), or b"" at end of stream."""
    frame = b""
    size = 4
    while len(frame) < size:
        chunk = sock.recv(size - len(frame))
        if not chunk:
            return b""
        frame += chunk
        if len(frame) == 4 and size == 4:
            size += struct.unpack(">i", frame)[0]
    return frame


def _splice(src: socket.socket, dst: socket.socket) -> None:
    """Move bytes from *src* to *dst* in the kernel until *src* ends, then end *dst*'s writing side."""
    read_end, write_end = os.pipe()
    try:
        fcntl.fcntl(write_end, fcntl.F_SETPIPE_SZ, PIPE_BYTES)
        while moved := os.splice(src.fileno(), write_end, PIPE_BYTES):
            while moved:
                moved -= os.splice(read_end, dst.fileno(), moved)
    except OSError:
        pass  # either side closed: end this direction
    finally:
        os.close(read_end)
        os.close(write_end)
        _end_writing(dst)


def _end_writing(sock: socket.socket) -> None:
    """Send end of stream on *sock* (its peer may be gone already)."""
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_WR)


class ApiVersionsProxy:
    """Listen on ``127.0.0.1:port`` and forward every connection to *upstream* (see the module doc)."""

    def __init__(self, port: int, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self.listener = socket.create_server(("127.0.0.1", port))
        self.rewritten = 0  # ApiVersions answers rewritten, for the bench's output
        self._count_lock = threading.Lock()
        threading.Thread(target=self._accept, daemon=True).start()

    def close(self) -> None:
        """Stop accepting connections (open ones end with their clients)."""
        self.listener.close()

    def _accept(self) -> None:
        while True:
            try:
                client, _addr = self.listener.accept()
            except OSError:
                return  # closed
            try:
                broker = socket.create_connection(self.upstream)
            except OSError:
                client.close()  # broker not up yet: the client retries
                continue
            for sock in (client, broker):
                sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
            threading.Thread(target=self._connection, args=(client, broker), daemon=True).start()

    def _connection(self, client: socket.socket, broker: socket.socket) -> None:
        """Serve one connection: requests in a second thread, answers in this one; close both sockets at the end."""
        first: queue.Queue = queue.Queue(1)
        requests = threading.Thread(target=self._requests, args=(client, broker, first), daemon=True)
        requests.start()
        self._answers(broker, client, first.get())
        requests.join()
        client.close()
        broker.close()

    @staticmethod
    def _requests(client: socket.socket, broker: socket.socket, first: queue.Queue) -> None:
        """Client to broker: note the first request's API key and version, then splice."""
        frame = _read_frame(client)
        first.put(struct.unpack_from(">hh", frame, 4) if frame else None)
        if frame:
            broker.sendall(frame)
            _splice(client, broker)
        else:
            _end_writing(broker)

    def _answers(self, broker: socket.socket, client: socket.socket, request: tuple[int, int] | None) -> None:
        """Broker to client: rewrite the first answer when it answers ApiVersions v3+, then splice."""
        frame = _read_frame(broker) if request else b""
        if frame and request[0] == API_VERSIONS and request[1] >= 3:
            body = strip_api_versions_tags(frame[8:])
            frame = struct.pack(">i", 4 + len(body)) + frame[4:8] + body
            with self._count_lock:
                self.rewritten += 1
        if frame:
            client.sendall(frame)
            _splice(broker, client)
        else:
            _end_writing(client)
