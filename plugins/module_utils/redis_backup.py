# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Redis: connection from module options, RDB validation, snapshots (BGSAVE, replication, AOF) and restore.

Snapshots are plain RDB files (``redis-check-rdb`` and any Redis open them) or
a tar of the Redis 7 multi-part AOF directory. Every RDB is checked while it
streams: the ``REDIS`` magic, its version, the EOF opcode and the CRC-64
trailer Redis writes (CRC-64/Jones, reflected, as in Redis's ``crc64.c``).

Restores run on the Redis host: the backup is checked before anything is
touched, the current data is kept aside, and on any failure it is put back and
Redis is started again.
"""

from __future__ import annotations

import contextlib
import io
import os
import shutil
import socket
import ssl
import struct
import subprocess
import tarfile
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from urllib.parse import unquote, urlparse

from ansible.module_utils.basic import env_fallback

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupError,
    ConfigurationError,
    IntegrityError,
    SourceError,
    default_source_name,
    redis_url,
)

try:
    import anycrc
except ImportError:  # checked by BackupModule
    anycrc = None

try:
    import redis
except ImportError:  # checked by BackupModule
    redis = None

CHUNK = 1024 * 1024
RDB_MAGIC = b"REDIS"
RDB_EOF = 0xFF
# The RDB version each Redis release writes (and the newest it loads).
RDB_VERSIONS = {
    (2, 6): 6,
    (2, 8): 6,
    (3, 0): 7,
    (3, 2): 8,
    (4, 0): 8,
    (5, 0): 9,
    (6, 0): 9,
    (6, 2): 9,
    (7, 0): 10,
    (7, 2): 11,
    (7, 4): 12,
    (8, 0): 12,
}
ROLLBACK_PREFIX = ".caas-rollback-"
STAGING_PREFIX = ".caas-restore-"
ERASE_BATCH = 500  # keys per SCAN page, UNLINKed together

# Connection options of redis_snapshot and redis_restore (documented in the caas.backup.redis fragment).
CONNECTION_SPEC: dict = dict(
    url=dict(type="str", no_log=False),  # credential-free; a password put there is masked (BackupModule)
    login_host=dict(type="str", default="127.0.0.1"),
    login_port=dict(type="int", default=6379),
    login_user=dict(type="str"),
    login_password=dict(type="str", no_log=True, fallback=(env_fallback, ["REDIS_PASSWORD", "CAAS_REDIS_PASSWORD"])),
    tls=dict(type="bool", default=False),
    tls_ca_cert=dict(type="path"),
    tls_cert=dict(type="path"),
    tls_key=dict(type="path"),
    tls_verify=dict(type="bool", default=True),
    connect_timeout=dict(type="float", default=10.0),
    timeout=dict(type="int", default=600),
)


def _crc_model():
    # CRC-64/Jones as Redis computes it: reflected, poly 0xad93d23594c935a9, init 0, xorout 0.
    return anycrc.CRC(width=64, poly=0xAD93D23594C935A9, init=0, refin=True, refout=True, xorout=0)


def crc64(data, value: int = 0) -> int:
    """Redis's CRC-64 of ``data``, continuing from ``value``."""
    return _crc_model().calc(data, value)


@dataclass
class Connection:
    """Where and how to reach one Redis server; the password never leaves this object."""

    host: str
    port: int
    username: str | None = None
    password: str | None = field(default=None, repr=False)
    tls: bool = False
    ca_cert: str | None = None
    cert: str | None = None
    key: str | None = None
    verify: bool = True
    connect_timeout: float = 10.0
    timeout: float = 600.0

    @property
    def address(self) -> str:
        return f"{'rediss' if self.tls else 'redis'}://{self.host}:{self.port}"

    def client(self, timeout: float | None = None, db: int = 0):
        """A redis-py client of database ``db`` (no connection is made until the first command)."""
        kwargs: dict = dict(
            host=self.host,
            port=self.port,
            db=db,
            username=self.username,
            password=self.password,
            socket_connect_timeout=self.connect_timeout,
            socket_timeout=timeout or self.timeout,
        )
        if self.tls:
            kwargs.update(
                ssl=True,
                ssl_ca_certs=self.ca_cert,
                ssl_certfile=self.cert,
                ssl_keyfile=self.key,
                ssl_cert_reqs="required" if self.verify else "none",
                ssl_check_hostname=self.verify,
            )
        return redis.Redis(**kwargs)

    def socket(self) -> socket.socket:
        """A raw (TLS when asked) socket to the server, for the replication handshake."""
        try:
            sock = socket.create_connection((self.host, self.port), timeout=self.connect_timeout)
        except OSError as exc:
            raise SourceError(f"Redis at {self.address} cannot be reached: {exc.strerror or exc}") from None
        if self.tls:
            context = ssl.create_default_context(cafile=self.ca_cert)
            if self.cert:
                context.load_cert_chain(self.cert, self.key)
            if not self.verify:
                context.check_hostname = False
                context.verify_mode = ssl.CERT_NONE
            try:
                sock = context.wrap_socket(sock, server_hostname=self.host)
            except (ssl.SSLError, OSError) as exc:
                sock.close()
                raise SourceError(f"TLS with Redis at {self.address} failed: {exc}") from None
        sock.settimeout(self.timeout)
        return sock

    def source_name(self) -> str:
        """Default source name: the configured host and port, as given (``127.0.0.1-6379``).

        Never the name of the machine the module runs on: a rebuilt site runs on new machines, and
        the server's own identity is where it was configured to be.
        """
        return default_source_name(self.host, str(self.port))


def connection_from_params(params: dict) -> Connection:
    """A :class:`Connection` from the module options (``url`` wins over ``login_host``/``login_port``)."""
    host, port, tls = params["login_host"], params["login_port"], params["tls"]
    user = params.get("login_user")
    if params.get("url"):
        redis_url("url", params["url"], params)
        parsed = urlparse(params["url"])
        host = parsed.hostname or host
        port = parsed.port or 6379
        tls = tls or parsed.scheme == "rediss"
        user = user or (unquote(parsed.username) if parsed.username else None)
    return Connection(
        host=host,
        port=port,
        username=user,
        password=params.get("login_password") or None,
        tls=tls,
        ca_cert=params.get("tls_ca_cert"),
        cert=params.get("tls_cert"),
        key=params.get("tls_key"),
        verify=params["tls_verify"],
        connect_timeout=params["connect_timeout"],
        timeout=params["timeout"],
    )


def _redis_call(conn: Connection, what: str, func, *args):
    """Run ``func(*args)`` and turn redis-py errors into a SourceError naming ``what``."""
    try:
        return func(*args)
    except redis.AuthenticationError as exc:
        raise SourceError(f"Redis at {conn.address} refused the credentials: {exc}") from None
    except redis.ResponseError as exc:
        text = str(exc)
        if "NOAUTH" in text or "WRONGPASS" in text or "invalid password" in text:
            raise SourceError(f"Redis at {conn.address} refused the credentials: {text}") from None
        raise SourceError(f"Redis at {conn.address} refused {what}: {text}") from None
    except (redis.ConnectionError, redis.TimeoutError) as exc:
        raise SourceError(f"Redis at {conn.address} is not running or cannot be reached ({what}): {exc}") from None


def server_facts(conn: Connection, client=None) -> dict:
    """Version, role, memory, keys per db and persistence settings of a running server."""
    client = client or conn.client(timeout=conn.connect_timeout)
    info = _redis_call(conn, "INFO", client.info, "all")
    keyspace = {
        name[2:]: {"keys": int(v.get("keys", 0)), "expires": int(v.get("expires", 0))}
        for name, v in info.items()
        if name.startswith("db") and name[2:].isdigit() and isinstance(v, dict)
    }
    return {
        "redis_version": str(info.get("redis_version", "")),
        "role": info.get("role"),
        "used_memory": int(info.get("used_memory", 0)),
        "keys_per_db": keyspace,
        "keys": sum(v["keys"] for v in keyspace.values()),
        "expires": sum(v["expires"] for v in keyspace.values()),
        "aof_enabled": bool(int(info.get("aof_enabled", 0))),
        "process_id": int(info.get("process_id", 0)),
        "config_file": info.get("config_file") or None,
        "loading": bool(int(info.get("loading", 0))),
    }


def supported_rdb_version(redis_version: str) -> int | None:
    """The newest RDB version ``redis_version`` loads; None for a release newer than this table."""
    try:
        major, minor = (int(x) for x in redis_version.split(".")[:2])
    except ValueError:
        return None
    known = [v for k, v in sorted(RDB_VERSIONS.items()) if k <= (major, minor)]
    if (major, minor) > max(RDB_VERSIONS):
        return None
    return known[-1] if known else 6


class RdbValidator:
    """Checks an RDB as it streams by: magic, version, EOF opcode and the CRC-64 trailer.

    Feed every byte with :meth:`feed`, then call :meth:`finish`, which raises
    IntegrityError naming ``name`` when the file is corrupted or truncated.
    """

    def __init__(self, name: str = "RDB") -> None:
        self.name = name
        self.size = 0
        self.version: int | None = None
        self.checksum: int | None = None
        self._crc_model = _crc_model()
        self._crc = 0
        self._head = b""
        self._tail = b""  # the last 8 bytes seen: the trailer, once the stream ends
        self._last = -1  # the byte before the tail

    def feed(self, data) -> None:
        """Account for the next bytes of the file."""
        if not data:
            return
        self.size += len(data)
        if len(self._head) < 9:
            self._head += bytes(data[: 9 - len(self._head)])
            if len(self._head) == 9:
                self._check_header()
        if len(data) >= 8:
            view = memoryview(data)
            if self._tail:
                self._crc = self._crc_model.calc(self._tail, self._crc)
                self._last = self._tail[-1]
            if len(view) > 8:
                self._crc = self._crc_model.calc(view[:-8], self._crc)
                self._last = view[-9]
            self._tail = bytes(view[-8:])
        else:
            joined = self._tail + bytes(data)
            if len(joined) > 8:
                self._crc = self._crc_model.calc(joined[:-8], self._crc)
                self._last = joined[-9]
            self._tail = joined[-8:]

    def _check_header(self) -> None:
        if self._head[:5] != RDB_MAGIC or not self._head[5:9].isdigit():
            raise IntegrityError(f"{self.name} is not an RDB file (it does not start with REDIS<version>)")
        self.version = int(self._head[5:9])
        if self.version < 5:
            raise IntegrityError(f"{self.name} is RDB version {self.version}, which has no checksum: refused")

    def finish(self) -> dict:
        """Check the end of the file; returns its facts (``rdb_version``, ``rdb_size``, ``crc64``)."""
        if len(self._head) < 9:
            raise IntegrityError(f"{self.name} is truncated: {self.size} bytes, not even an RDB header")
        if len(self._tail) < 8 or self._last != RDB_EOF:
            raise IntegrityError(f"{self.name} is truncated or corrupted: it does not end with the RDB EOF opcode")
        stored = struct.unpack("<Q", self._tail)[0]
        # rdbchecksum no writes a zero trailer, which Redis itself accepts.
        if stored and stored != self._crc:
            raise IntegrityError(
                f"{self.name} is corrupted: CRC-64 {self._crc:016x} does not match its trailer {stored:016x}"
            )
        self.checksum = stored or None
        return {"rdb_version": self.version, "rdb_size": self.size, "crc64": f"{stored:016x}" if stored else None}


def check_rdb_version(rdb_version: int | None, redis_version: str, name: str = "the backup") -> None:
    """Refuse an RDB newer than the target Redis can load."""
    supported = supported_rdb_version(redis_version)
    if rdb_version is not None and supported is not None and rdb_version > supported:
        raise IntegrityError(
            f"{name} is RDB version {rdb_version}, from a newer Redis than the target "
            f"(Redis {redis_version} loads RDB up to version {supported}): refused, nothing was touched"
        )


class _Tee:
    """A writable that validates an RDB on its way to ``downstream``."""

    def __init__(self, downstream, validator: RdbValidator) -> None:
        self.downstream = downstream
        self.validator = validator

    def write(self, data) -> int:
        self.validator.feed(data)
        self.downstream.write(data)
        return len(data)


def copy_rdb(src, out, name: str) -> dict:
    """Copy an RDB from the readable ``src`` to ``out``, validating it; returns its facts."""
    validator = RdbValidator(name)
    sink = _Tee(out, validator) if out is not None else None
    for chunk in iter(lambda: src.read(CHUNK), b""):
        if sink is not None:
            sink.write(chunk)
        else:
            validator.feed(chunk)
    return validator.finish()


def _persistence(conn: Connection, client) -> dict:
    return _redis_call(conn, "INFO persistence", client.info, "persistence")


def _config_get(conn: Connection, client, name: str) -> str:
    value = _redis_call(conn, f"CONFIG GET {name}", client.config_get, name)
    if name not in value:
        raise SourceError(f"Redis at {conn.address} has no config parameter {name} (CONFIG renamed or disabled?)")
    return str(value[name])


def _wait(conn: Connection, what: str, timeout: float, done) -> dict:
    """Poll INFO persistence until ``done(info)``; SourceError after ``timeout`` seconds."""
    client = conn.client(timeout=conn.connect_timeout)
    deadline = time.monotonic() + timeout
    while True:
        info = _persistence(conn, client)
        if done(info):
            return info
        if time.monotonic() > deadline:
            raise SourceError(f"Redis at {conn.address}: {what} did not finish within {timeout:.0f}s")
        time.sleep(0.1)


def bgsave(conn: Connection, max_age: int) -> tuple[str, bool]:
    """Make sure a fresh RDB exists on disk (BGSAVE, or reuse one newer than ``max_age`` seconds).

    Returns the RDB's path and whether an existing save was reused.
    """
    client = conn.client()
    info = _persistence(conn, client)
    path = os.path.join(_config_get(conn, client, "dir"), _config_get(conn, client, "dbfilename"))
    age = time.time() - int(info.get("rdb_last_save_time", 0))
    # rdb_saves > 0: at startup LASTSAVE is the start time, though the file on disk may be older than the data.
    fresh = (
        info.get("rdb_last_bgsave_status") == "ok"
        and not info.get("rdb_bgsave_in_progress")
        and int(info.get("rdb_saves", 0)) > 0
    )
    if max_age > 0 and fresh and age <= max_age and os.path.exists(path):
        return path, True
    # A save already running began before this request: wait for it, then start ours.
    _wait(conn, "the running BGSAVE", conn.timeout, lambda i: not i.get("rdb_bgsave_in_progress"))
    saves = int(_persistence(conn, client).get("rdb_saves", -1))
    _redis_call(conn, "BGSAVE", client.bgsave, True)  # SCHEDULE: waits for a running AOF rewrite
    info = _wait(
        conn,
        "BGSAVE",
        conn.timeout,
        lambda i: (
            not i.get("rdb_bgsave_in_progress")
            and not i.get("rdb_bgsave_scheduled", 0)
            and int(i.get("rdb_saves", saves + 1)) > saves
        ),
    )
    if info.get("rdb_last_bgsave_status") != "ok":
        status = info.get("rdb_last_bgsave_status")
        raise SourceError(f"Redis at {conn.address}: BGSAVE failed (rdb_last_bgsave_status {status})")
    return path, False


def open_saved_rdb(path: str):
    """The RDB a BGSAVE wrote, open for reading (a later save replaces the file, not this open copy)."""
    try:
        return open(path, "rb")
    except OSError as exc:
        raise SourceError(f"{path} cannot be read (method bgsave runs on the Redis host): {exc.strerror}") from None


class _LineReader:
    """Buffered reads from a socket: lines and byte counts, for the replication protocol."""

    def __init__(self, sock: socket.socket, conn: Connection) -> None:
        self.sock = sock
        self.conn = conn
        self.buffer = b""

    def _fill(self) -> None:
        try:
            data = self.sock.recv(CHUNK)
        except TimeoutError:
            raise SourceError(f"Redis at {self.conn.address} sent nothing for {self.conn.timeout:.0f}s") from None
        except OSError as exc:
            raise SourceError(f"connection to Redis at {self.conn.address} failed: {exc.strerror or exc}") from None
        if not data:
            raise SourceError(f"Redis at {self.conn.address} closed the connection during the transfer")
        self.buffer += data

    def line(self) -> bytes:
        while b"\n" not in self.buffer:
            self._fill()
        line, self.buffer = self.buffer.split(b"\n", 1)
        return line.rstrip(b"\r")

    def chunk(self, limit: int) -> bytes:
        if not self.buffer:
            self._fill()
        data, self.buffer = self.buffer[:limit], self.buffer[limit:]
        return data


def _command(*args: str) -> bytes:
    parts = [f"*{len(args)}\r\n".encode()]
    for arg in args:
        raw = arg.encode()
        parts.append(b"$%d\r\n%s\r\n" % (len(raw), raw))
    return b"".join(parts)


def _simple(reader: _LineReader, conn: Connection, what: str, auth: bool = False) -> bytes:
    reply = reader.line()
    if reply.startswith(b"-"):
        text = reply[1:].decode(errors="replace")
        if auth or "NOAUTH" in text or "WRONGPASS" in text:
            raise SourceError(f"Redis at {conn.address} refused the credentials: {text}")
        raise SourceError(f"Redis at {conn.address} refused {what}: {text}")
    return reply


def read_payload(reader: _LineReader, out, conn: Connection) -> dict:
    """Read the RDB payload of a SYNC reply into ``out``: ``$<len>`` or the diskless ``$EOF:<mark>`` form."""
    while True:
        header = reader.line()
        if header:  # empty lines are the master's keepalives while it prepares the RDB
            break
    if header.startswith(b"-"):
        raise SourceError(f"Redis at {conn.address} refused SYNC: {header[1:].decode(errors='replace')}")
    if header.startswith(b"+"):  # +FULLRESYNC <replid> <offset> of PSYNC: the payload follows
        return read_payload(reader, out, conn)
    if not header.startswith(b"$"):
        raise SourceError(f"Redis at {conn.address} answered SYNC with an unexpected {header[:40]!r}")
    sink = _Tee(out, RdbValidator(f"the RDB sent by {conn.address}"))
    if header.startswith(b"$EOF:"):
        mark = header[5:]
        if len(mark) != 40:
            raise SourceError(f"Redis at {conn.address} sent a malformed diskless EOF mark")
        held = b""
        while True:
            joined = held + reader.chunk(CHUNK)
            if joined.endswith(mark):
                sink.write(joined[:-40])
                break
            if len(joined) > 40:
                sink.write(joined[:-40])
                held = joined[-40:]
            else:
                held = joined
    else:
        remaining = int(header[1:])
        while remaining:
            data = reader.chunk(min(remaining, CHUNK))
            sink.write(data)
            remaining -= len(data)
    return sink.validator.finish()


def replication_fetch(conn: Connection, out, diskless: bool = False) -> dict:
    """Fetch an RDB the way ``redis-cli --rdb`` does (REPLCONF rdb-only, SYNC), streaming it into ``out``.

    The password is sent with AUTH on the socket, never on a command line.
    """
    sock = conn.socket()
    reader = _LineReader(sock, conn)
    try:
        if conn.password:
            args = ("AUTH", conn.username, conn.password) if conn.username else ("AUTH", conn.password)
            sock.sendall(_command(*args))
            _simple(reader, conn, "AUTH", auth=True)
        sock.sendall(_command("PING"))
        _simple(reader, conn, "PING")
        # rdb-only (Redis 7+): the master sends the RDB and no replication stream; older ones refuse it.
        sock.sendall(_command("REPLCONF", "rdb-only", "1"))
        with contextlib.suppress(SourceError):
            _simple(reader, conn, "REPLCONF rdb-only")
        if diskless:
            sock.sendall(_command("REPLCONF", "capa", "eof"))
            _simple(reader, conn, "REPLCONF capa eof")
        sock.sendall(_command("SYNC"))
        return read_payload(reader, out, conn)
    finally:
        sock.close()


def _aof_manifest(text: str, path: str) -> list[tuple[str, str]]:
    """The (file name, type) pairs of a Redis 7 AOF manifest's ``text``; type b is the base, i an increment."""
    entries = []
    for line in text.splitlines():
        words = line.split()
        fields = dict(zip(words[::2], words[1::2], strict=False))
        if "file" in fields and fields.get("type") in ("b", "i"):
            entries.append((fields["file"], fields["type"]))
    if not entries:
        raise SourceError(f"AOF manifest {path} lists no base or increment file")
    return entries


def _open_binary(directory: str, name: str):
    """One AOF file, opened for the caller's ExitStack to close."""
    return open(os.path.join(directory, name), "rb")


# A rewrite that finishes between reading the manifest and opening its files removes them: read it again.
AOF_ATTEMPTS = 5


def _open_aof(directory: str, manifest_name: str, stack: contextlib.ExitStack) -> tuple[bytes, list]:
    """The manifest's bytes and its files, opened: ``[(name, type, file)]``.

    An open file outlives the rewrite that deletes it, so the copy is the set the manifest named, whatever
    Redis does meanwhile - no server setting is changed, and a killed copy leaves nothing to undo.
    """
    manifest_path = os.path.join(directory, manifest_name)
    for _attempt in range(AOF_ATTEMPTS):
        with open(manifest_path, "rb") as fh:
            manifest = fh.read()
        entries = _aof_manifest(manifest.decode("utf-8", "replace"), manifest_path)
        with contextlib.ExitStack() as opened:
            try:
                files = [(name, kind, opened.enter_context(_open_binary(directory, name))) for name, kind in entries]
            except FileNotFoundError:
                continue
            stack.enter_context(opened.pop_all())
            return manifest, files
    raise SourceError(f"the AOF in {directory} was rewritten {AOF_ATTEMPTS} times while it was being opened")


class _ValidatingReader:
    """A readable that feeds an :class:`RdbValidator` as tarfile reads an RDB base file."""

    def __init__(self, fileobj, validator: RdbValidator) -> None:
        self.fileobj = fileobj
        self.validator = validator

    def read(self, size: int = -1) -> bytes:
        data = self.fileobj.read(size)
        self.validator.feed(data)
        return data


def aof_snapshot(conn: Connection, out) -> dict:
    """Tar the Redis 7 multi-part AOF (manifest, base, increments) into ``out``.

    The files the manifest names are opened together (:func:`_open_aof`) and copied up to their size then;
    the increment being appended to is cut there, and Redis loads such a tail (``aof-load-truncated``).
    """
    client = conn.client()
    if _config_get(conn, client, "appendonly") != "yes":
        raise ConfigurationError(f"Redis at {conn.address} has appendonly off: there is no AOF to copy")
    directory = os.path.join(_config_get(conn, client, "dir"), _config_get(conn, client, "appenddirname"))
    manifest_name = _config_get(conn, client, "appendfilename") + ".manifest"
    try:
        with contextlib.ExitStack() as stack:
            manifest, files = _open_aof(directory, manifest_name, stack)
            facts: dict = {"aof_files": [name for name, _kind, _f in files], "aof_dir": os.path.basename(directory)}
            with tarfile.open(fileobj=out, mode="w|", format=tarfile.PAX_FORMAT, bufsize=CHUNK) as tar:
                info = tarfile.TarInfo(manifest_name)
                info.size, info.mtime, info.mode = len(manifest), int(time.time()), 0o644
                tar.addfile(info, io.BytesIO(manifest))
                for name, kind, src in files:
                    info = tar.gettarinfo(arcname=name, fileobj=src)
                    if kind == "b" and name.endswith(".rdb"):
                        validator = RdbValidator(f"AOF base {name}")
                        tar.addfile(info, _ValidatingReader(src, validator))
                        facts.update(validator.finish())
                    else:
                        tar.addfile(info, src)
    except OSError as exc:
        raise SourceError(f"the AOF in {directory} cannot be read: {exc.strerror or exc}") from None
    return facts


def extract_aof(reader, dest: str, manifest_name: str) -> list[str]:
    """Extract an AOF tar (made by :func:`aof_snapshot`) into the new directory ``dest``; checks its RDB base."""
    os.makedirs(dest)
    names = []
    try:
        with tarfile.open(fileobj=reader, mode="r|", bufsize=CHUNK) as tar:
            for member in tar:
                if not member.isreg() or "/" in member.name or member.name.startswith("."):
                    raise IntegrityError(f"AOF archive member {member.name!r} is not a plain file name: refused")
                src = tar.extractfile(member)
                with open(os.path.join(dest, member.name), "wb") as fh:
                    if member.name.endswith(".base.rdb"):
                        copy_rdb(src, fh, f"AOF base {member.name}")
                    else:
                        shutil.copyfileobj(src, fh, CHUNK)
                names.append(member.name)
    except tarfile.TarError as exc:
        raise IntegrityError(f"the AOF archive is not a valid tar: {exc}") from None
    if manifest_name not in names:
        raise IntegrityError(
            f"the AOF archive has no {manifest_name} (the target's appendfilename differs from the backup's?)"
        )
    return names


def keys_match(expected: dict, got: int) -> bool:
    """Whether ``got`` keys fit a manifest's counts: keys with a TTL may have expired since the snapshot."""
    keys = int(expected.get("keys", 0))
    return keys - int(expected.get("expires", 0)) <= got <= keys


def find_binary(name: str) -> str | None:
    """``name`` on PATH or in the usual system directories."""
    path = os.pathsep.join([os.environ.get("PATH", ""), "/usr/local/bin", "/usr/bin", "/usr/sbin"])
    return shutil.which(name, path=path)


def deep_check_rdb(path: str, timeout: float) -> dict:
    """Run ``redis-check-rdb`` (when installed) on ``path``: Redis's own loader, nothing stored."""
    binary = find_binary("redis-check-rdb")
    if not binary:
        return {"redis_check_rdb": "not installed"}
    try:
        proc = subprocess.run([binary, path], capture_output=True, text=True, timeout=timeout, check=False)
    except subprocess.TimeoutExpired:
        raise SourceError(f"redis-check-rdb did not finish within {timeout:.0f}s") from None
    output = proc.stdout + proc.stderr
    if proc.returncode != 0 or "RDB looks OK" not in output:
        lines = [line for line in output.splitlines() if line.strip()]
        raise IntegrityError(f"redis-check-rdb refuses the backup: {' / '.join(lines[-3:])}")
    return {"redis_check_rdb": "ok"}


def scratch_key_count(directory: str, timeout: float, aof: tuple[str, str] | None = None) -> int:
    """Load ``directory``'s ``dump.rdb`` (or, with ``aof`` = (dir name, appendfilename), its AOF) into a
    throwaway ``redis-server`` on a unix socket, and return the keys of every database.

    The server listens on no TCP port, saves nothing, and is stopped before returning.
    """
    binary = find_binary("redis-server")
    if not binary:
        raise SourceError("redis-server is not installed: a test restore needs it")
    sock = os.path.join(directory, "redis.sock")
    argv = [
        binary,
        "--port",
        "0",
        "--unixsocket",
        sock,
        "--dir",
        directory,
        "--save",
        "",
        "--dbfilename",
        "dump.rdb",
        "--appendonly",
        "yes" if aof else "no",
    ]
    if aof:
        argv += ["--appenddirname", aof[0], "--appendfilename", aof[1]]
    log = os.path.join(directory, "redis.log")
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            argv + ["--logfile", log], stdout=out, stderr=subprocess.STDOUT, stdin=subprocess.DEVNULL
        )
    client = redis.Redis(unix_socket_path=sock, socket_timeout=timeout)
    deadline = time.monotonic() + timeout
    try:
        while True:
            if proc.poll() is not None:
                raise IntegrityError(f"a scratch redis-server refused the backup: {_tail(log)}")
            try:
                keyspace = client.info("keyspace")
                break
            except (redis.exceptions.ConnectionError, redis.exceptions.BusyLoadingError):
                if time.monotonic() > deadline:
                    raise SourceError(
                        f"the scratch redis-server did not load the backup within {timeout:.0f}s"
                    ) from None
                time.sleep(0.1)
        return sum(int(db.get("keys", 0)) for db in keyspace.values())
    finally:
        client.close()
        proc.terminate()
        proc.wait(timeout=30)


def _pid_running(pid: int) -> bool:
    if pid <= 0:
        return False
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    try:
        with open(f"/proc/{pid}/stat", encoding="utf-8") as fh:
            return fh.read().rsplit(")", 1)[1].split()[0] != "Z"
    except (OSError, IndexError):
        return True


def _port_open(conn: Connection) -> bool:
    try:
        socket.create_connection((conn.host, conn.port), timeout=1).close()
    except OSError:
        return False
    return True


def _tail(path: str, lines: int = 5) -> str:
    try:
        with open(path, encoding="utf-8", errors="replace") as fh:
            return " / ".join(line.strip() for line in fh.read().splitlines()[-lines:] if line.strip())
    except OSError:
        return "(no log)"


def erase_keys(conn: Connection, requests: list) -> dict:
    """Apply the erasure ledger's Redis items to the restored server (the engine's applier of erasure.py).

    Each pattern is matched (SCAN MATCH, never KEYS) in its ``db``, else in every database holding keys;
    matches are UNLINKed a SCAN page at a time.
    """
    from ansible_collections.caas.backup.plugins.module_utils.erasure import apply_ledger

    keys_per_db = server_facts(conn)["keys_per_db"] if requests else {}

    def applier(item: dict) -> list[tuple[str, int]]:
        dbs = [item["db"]] if "db" in item else sorted(int(db) for db in keys_per_db)
        found = []
        for db in dbs:
            client = conn.client(db=db)
            removed, cursor = 0, None
            while cursor != 0:
                cursor, keys = _redis_call(conn, "SCAN", client.scan, cursor or 0, item["pattern"], ERASE_BATCH)
                if keys:  # a key SCAN returns twice is UNLINKed (and counted) once
                    removed += int(_redis_call(conn, "UNLINK", client.unlink, *keys))
            found.append((f"db{db}", removed))
        return found

    return apply_ledger(requests, "redis", applier)


@dataclass
class Target:
    """The Redis server a restore replaces the data of, as found before anything is touched."""

    conn: Connection
    facts: dict
    data_dir: str
    dbfilename: str
    appenddirname: str
    appendfilename: str
    config_file: str | None
    service: str | None
    start_command: list[str] | None

    @property
    def rdb_path(self) -> str:
        return os.path.join(self.data_dir, self.dbfilename)

    @property
    def aof_dir(self) -> str:
        return os.path.join(self.data_dir, self.appenddirname)

    @property
    def start_log(self) -> str:
        return os.path.join(self.data_dir, "caas-redis-start.log")


def inspect_target(
    conn: Connection, service: str | None, start_command: list[str] | None, config_file: str | None
) -> Target:
    """Read the running server's data directory, file names and config file (it must be running)."""
    if not service and not start_command:
        raise ConfigurationError("give service (a systemd unit) or start_command to restart Redis with")
    client = conn.client(timeout=conn.connect_timeout)
    facts = server_facts(conn, client)
    if facts["role"] != "master":
        raise ConfigurationError(f"Redis at {conn.address} is a replica: restore its master, then resync")
    config_file = config_file or facts["config_file"]
    return Target(
        conn=conn,
        facts=facts,
        data_dir=_config_get(conn, client, "dir"),
        dbfilename=_config_get(conn, client, "dbfilename"),
        appenddirname=_config_get(conn, client, "appenddirname"),
        appendfilename=_config_get(conn, client, "appendfilename"),
        config_file=config_file,
        service=service,
        start_command=start_command,
    )


def _own_like(path: str, reference: str) -> None:
    """Give ``path`` (and what is below it) the owner of ``reference``, so a Redis running as its own user
    (the systemd case, while this module runs as root) can write beside and replace what was placed."""
    st = os.stat(reference)
    if os.geteuid() != 0 or st.st_uid == 0:
        return
    os.chown(path, st.st_uid, st.st_gid)
    for directory, dirs, files in os.walk(path):
        for name in dirs + files:
            os.chown(os.path.join(directory, name), st.st_uid, st.st_gid)


def _set_appendonly(text: str, value: str) -> str:
    """Config text with every ``appendonly`` directive replaced by one saying ``value``."""
    lines = [line for line in text.splitlines() if line.strip().split(" ", 1)[0].lower() != "appendonly"]
    return "\n".join([*lines, f"appendonly {value}"]) + "\n"


class Restore:
    """One restore of an RDB (``mode='rdb'``) or an AOF (``mode='aof'``) onto a :class:`Target`.

    :meth:`stage` validates the backup into the data directory (nothing live is
    touched); :meth:`apply` stops Redis, keeps the current data aside, places
    the backup, starts Redis and checks it, and on any failure puts the
    previous data back and starts Redis again.
    """

    def __init__(self, target: Target, mode: str, expected: dict, label: str, check_keys: bool = True) -> None:
        self.target = target
        self.mode = mode
        self.expected = expected
        self.check_keys = check_keys
        self.label = label
        stamp = f"{label}-{os.getpid()}"
        self.staged = os.path.join(target.data_dir, STAGING_PREFIX + stamp)
        self.aside = os.path.join(target.data_dir, ROLLBACK_PREFIX + stamp)
        self.steps: list[str] = []
        self.warnings: list[str] = []
        self.erasure: dict | None = None
        self._config_text: str | None = None
        self._process: subprocess.Popen | None = None

    def check_start(self) -> None:
        """Refuse, before anything is stopped, a restart that cannot work.

        The start command's program must be an executable file, the unit must be known to systemd, and a
        Redis that must start with ``appendonly no`` under systemd needs its config file: otherwise the
        restore would stop Redis and then fail to bring it back.
        """
        t = self.target
        if t.service:
            if not shutil.which("systemctl"):
                raise ConfigurationError(f"service {t.service}: there is no systemctl here (give start_command)")
            proc = subprocess.run(["systemctl", "cat", t.service], capture_output=True, text=True, check=False)
            if proc.returncode != 0:
                raise ConfigurationError(
                    f"service {t.service} is not a systemd unit here: {proc.stderr.strip() or 'systemctl cat failed'}"
                )
            if self.mode == "rdb" and t.facts["aof_enabled"] and not (t.config_file and os.path.exists(t.config_file)):
                raise ConfigurationError(
                    f"no config file to start {t.service} with appendonly no: give config_file, nothing was touched"
                )
            return
        program = (t.start_command or [""])[0]
        # Popen runs it from the data directory: a relative path with a slash is relative to that.
        candidate = os.path.join(t.data_dir, program) if os.sep in program else program
        if not program or not shutil.which(candidate):
            reason = (
                "is not executable"
                if os.path.isfile(candidate)
                else "does not exist"
                if os.sep in program
                else "is not on PATH"
            )
            raise ConfigurationError(f"start_command {program!r} {reason}: Redis was not stopped")

    def plan(self) -> list[str]:
        """What :meth:`apply` does, step by step."""
        t = self.target
        stop = f"systemctl stop {t.service}" if t.service else "SHUTDOWN NOSAVE"
        plan = [f"check the backup ({self.mode}) and stage it in {t.data_dir}"]
        if not t.facts["aof_enabled"]:
            plan.append("BGSAVE, so the data kept aside for rollback is current")
        plan += [stop, f"keep {t.dbfilename} and {t.appenddirname} aside in {self.aside}"]
        if self.mode == "rdb":
            plan.append(f"place the RDB as {t.rdb_path}")
            plan.append("start Redis with appendonly no" if t.facts["aof_enabled"] else "start Redis")
        else:
            plan += [f"place the AOF as {t.aof_dir}", "start Redis"]
        plan.append("wait for loading to finish, compare DBSIZE with the manifest")
        if self.mode == "rdb" and t.facts["aof_enabled"]:
            plan.append("CONFIG SET appendonly yes, wait for the AOF rewrite")
            if t.config_file:
                plan.append(f"CONFIG REWRITE ({t.config_file})")
        plan.append("on any failure: put the previous data back and start Redis again")
        return plan

    # --- staging (nothing live is touched) -------------------------------------------------------

    def stage(self, reader) -> dict:
        """Write the backup into the data directory beside the live files, checking it on the way."""
        if self.mode == "aof" and not self.target.facts["aof_enabled"]:
            raise ConfigurationError("mode aof needs a target with appendonly yes (or restore the RDB with mode rdb)")
        try:
            if self.mode == "rdb":
                with open(self.staged, "wb") as fh:
                    facts = copy_rdb(reader, fh, f"RDB of backup {self.label}")
                check_rdb_version(facts["rdb_version"], self.target.facts["redis_version"], f"backup {self.label}")
                facts.update(deep_check_rdb(self.staged, self.target.conn.timeout))
            else:
                extract_aof(reader, self.staged, self.target.appendfilename + ".manifest")
                facts = {}
            _own_like(self.staged, self.target.data_dir)
        except BaseException:
            self.discard_staged()
            raise
        return facts

    def discard_staged(self) -> None:
        """Remove the staged copy (after a failure before anything was touched)."""
        if os.path.isdir(self.staged):
            shutil.rmtree(self.staged, ignore_errors=True)
        elif os.path.lexists(self.staged):
            os.unlink(self.staged)

    # --- stop and start --------------------------------------------------------------------------

    def _systemctl(self, verb: str) -> None:
        proc = subprocess.run(["systemctl", verb, self.target.service], capture_output=True, text=True, check=False)
        if proc.returncode != 0:
            raise SourceError(f"systemctl {verb} {self.target.service} failed: {proc.stderr.strip()}")

    def _systemctl_ok(self, verb: str) -> bool:
        return subprocess.run(["systemctl", verb, "--quiet", self.target.service], check=False).returncode == 0

    def _stop(self) -> None:
        t = self.target
        pid = t.facts["process_id"] if t.conn.host in ("127.0.0.1", "localhost", "::1") else 0
        if t.service:
            self._systemctl("stop")
        elif _port_open(t.conn):
            client = t.conn.client(timeout=t.conn.connect_timeout)
            with contextlib.suppress(redis.ConnectionError):
                _redis_call(t.conn, "SHUTDOWN NOSAVE", client.shutdown, False, True)
        deadline = time.monotonic() + t.conn.timeout
        while _port_open(t.conn) or (pid and _pid_running(pid)) or self._child_running():
            if time.monotonic() > deadline:
                raise SourceError(f"Redis at {t.conn.address} did not stop within {t.conn.timeout:.0f}s")
            time.sleep(0.05)

    def _child_running(self) -> bool:
        return self._process is not None and self._process.poll() is None

    def _start(self, appendonly: str | None) -> None:
        """Start Redis, with ``appendonly`` overridden when given, and wait until it has loaded its data."""
        t = self.target
        argv = list(t.start_command or [])
        if appendonly is not None:
            if t.config_file and os.path.exists(t.config_file):
                with open(t.config_file, encoding="utf-8") as fh:
                    current = fh.read()
                if self._config_text is None:
                    self._config_text = current
                with open(t.config_file, "w", encoding="utf-8") as fh:  # in place: keeps owner and mode
                    fh.write(_set_appendonly(current, appendonly))
            elif t.service:
                raise ConfigurationError(f"no config file to start {t.service} with appendonly {appendonly}")
            else:
                argv += ["--appendonly", appendonly]
        if t.service:
            self._systemctl("start")
        else:
            with open(t.start_log, "ab") as log:
                try:
                    self._process = subprocess.Popen(
                        argv,
                        cwd=t.data_dir,
                        stdin=subprocess.DEVNULL,
                        stdout=log,
                        stderr=subprocess.STDOUT,
                        start_new_session=True,  # Redis outlives this module
                    )
                except OSError as exc:
                    raise SourceError(f"start_command {argv[0]} cannot run: {exc.strerror}") from None
        self._wait_loaded()

    def _wait_loaded(self) -> None:
        t = self.target
        deadline = time.monotonic() + t.conn.timeout
        client = t.conn.client(timeout=t.conn.connect_timeout)
        last = "no answer"
        while True:
            if t.service and self._systemctl_ok("is-failed"):
                raise SourceError(f"{t.service} failed while starting (see journalctl -u {t.service})")
            if self._process is not None and self._process.poll() is not None:
                raise SourceError(
                    f"Redis exited with code {self._process.returncode} while starting ({_tail(t.start_log)})"
                )
            try:
                if not int(client.info("persistence").get("loading", 1)):
                    return
            except redis.BusyLoadingError:
                last = "still loading"
            except (redis.ConnectionError, redis.TimeoutError) as exc:
                last = str(exc)
            except redis.ResponseError as exc:
                raise SourceError(f"Redis refused INFO after the start: {exc}") from None
            if time.monotonic() > deadline:
                raise SourceError(f"Redis did not finish starting within {t.conn.timeout:.0f}s ({last})")
            time.sleep(0.1)

    # --- the restore ------------------------------------------------------------------------------

    def _set_aside(self) -> None:
        t = self.target
        os.makedirs(self.aside)
        for path in (t.rdb_path, t.aof_dir):
            if os.path.lexists(path):
                os.rename(path, os.path.join(self.aside, os.path.basename(path)))
        self.steps.append(f"kept the current data aside in {self.aside}")

    def _check_loaded(self) -> dict:
        t = self.target
        client = t.conn.client()
        got = int(_redis_call(t.conn, "DBSIZE", client.dbsize))
        facts = server_facts(t.conn, client)
        if self.check_keys and not keys_match(self.expected, facts["keys"]):
            message = (
                f"Redis holds {facts['keys']} keys after loading the backup, but its manifest says "
                f"{self.expected.get('keys')} ({self.expected.get('expires', 0)} with a TTL)"
            )
            if self.expected.get("keys_exact", True):
                raise IntegrityError(message)
            self.warnings.append(message + " (counted while the source was written to)")
        self.steps.append(f"loaded {facts['keys']} keys (DBSIZE of db 0: {got})")
        return facts

    def _enable_aof(self) -> None:
        t = self.target
        client = t.conn.client()
        before = int(_persistence(t.conn, client).get("aof_rewrites", 0))
        _redis_call(t.conn, "CONFIG SET appendonly yes", client.config_set, "appendonly", "yes")
        info = _wait(
            t.conn,
            "the AOF rewrite",
            t.conn.timeout,
            lambda i: (
                int(i.get("aof_rewrites", 0)) > before
                and not i.get("aof_rewrite_in_progress")
                and not i.get("aof_rewrite_scheduled")
            ),
        )
        if info.get("aof_last_bgrewrite_status") != "ok":
            raise SourceError("the AOF rewrite after the restore failed")
        self.steps.append("appendonly yes: the AOF was rewritten from the restored data")
        if t.config_file:
            _redis_call(t.conn, "CONFIG REWRITE", client.config_rewrite)
            self._config_text = None  # the file now says appendonly yes again, as before
            self.steps.append(f"CONFIG REWRITE persisted appendonly yes in {t.config_file}")

    def apply(self, erase: Callable[[], dict] | None = None) -> dict:
        """Stop, set aside, place, start, check, erase; roll back on any failure. Returns the loaded server's facts.

        ``erase()`` applies the erasure ledger once the data is up and checked against the manifest, before the
        AOF is rewritten or an RDB saved, so no file Redis loads from holds what it removed; its report is
        ``self.erasure``, and the facts returned are counted after it.
        """
        t = self.target
        self.check_start()
        aof_wanted = t.facts["aof_enabled"]
        if not aof_wanted:
            bgsave(t.conn, 0)
            self.steps.append("BGSAVE: the data kept aside is current")
        self._stop()
        self.steps.append(f"stopped Redis ({'systemctl stop ' + t.service if t.service else 'SHUTDOWN NOSAVE'})")
        facts: dict = {}
        try:
            self._set_aside()
            os.rename(self.staged, t.aof_dir if self.mode == "aof" else t.rdb_path)
            self.steps.append(f"placed the backup as {t.aof_dir if self.mode == 'aof' else t.rdb_path}")
            if self.mode == "rdb" and aof_wanted:
                self._start("no")  # else Redis would load the (now absent) AOF, not the RDB
            else:
                self._start(None)
            self.steps.append("started Redis")
            facts = self._check_loaded()
            if erase is not None:
                self.erasure = erase()
                self.steps.append(f"erasure ledger: removed {self.erasure['removed']} key(s)")
                if self.erasure["removed"]:
                    facts = server_facts(t.conn)
                    if not aof_wanted:  # else the AOF records the removals (or is rewritten below)
                        bgsave(t.conn, 0)
                        self.steps.append("BGSAVE: the RDB on disk holds no erased key")
            if self.mode == "rdb" and aof_wanted:
                self._enable_aof()
        except (BackupError, OSError) as exc:
            cause = f"{exc}" if isinstance(exc, BackupError) else f"{exc.filename}: {exc.strerror}"
            self._rollback(cause)
        if os.path.isdir(self.aside):
            shutil.rmtree(self.aside, ignore_errors=True)
        return facts

    def _rollback(self, cause: str) -> None:
        """Put the previous data (and config file) back, start Redis, check it answers; always raises."""
        t = self.target
        try:
            self._stop()
            self.discard_staged()
            if os.path.isdir(self.aside):
                for path in (t.rdb_path, t.aof_dir):
                    kept = os.path.join(self.aside, os.path.basename(path))
                    if os.path.lexists(kept):
                        if os.path.isdir(path):
                            shutil.rmtree(path)
                        elif os.path.lexists(path):
                            os.unlink(path)
                        os.rename(kept, path)
                    elif os.path.isdir(path):
                        shutil.rmtree(path)
                    elif os.path.lexists(path):
                        os.unlink(path)
                os.rmdir(self.aside)
            if self._config_text is not None and t.config_file:
                with open(t.config_file, "w", encoding="utf-8") as fh:
                    fh.write(self._config_text)
            self._start(None)
            _redis_call(t.conn, "PING", t.conn.client(timeout=t.conn.connect_timeout).ping)
        except (BackupError, OSError) as exc:
            raise SourceError(f"{cause}; the rollback failed too ({exc}): {self._previous_data()}") from None
        raise SourceError(f"{cause}; the previous data was put back and Redis is running again")

    def _previous_data(self) -> str:
        """Where the data from before the restore is now, in words, naming only paths that exist."""
        t = self.target
        if os.path.isdir(self.aside):
            return f"the previous data is kept in {self.aside} (Redis is not running)"
        placed = [path for path in (t.rdb_path, t.aof_dir) if os.path.lexists(path)]
        where = " and ".join(placed) if placed else f"{t.data_dir} (it held no data files)"
        return f"the previous data is back in place as {where}, but Redis is not running: start it"
