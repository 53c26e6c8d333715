"""Fault injection for the tests: modules killed with SIGKILL at chosen points, damaged stored objects.

Kill points are chosen by bytes, not by time, wherever the bytes can be watched, so that a seed picks the
same point on a fast or a loaded machine:

* :class:`HoldingProxy` stands between a module and the S3 server and stops forwarding once a given number
  of request bytes has gone through: the module is killed while the server holds exactly that prefix of
  what it sent (a part of an upload, a manifest PUT cut in the middle, ...).
* :func:`partial_size_trigger` watches the ``.partial-*`` files a ``file://`` storage writes to.
"""

from __future__ import annotations

import contextlib
import json
import os
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Callable
from pathlib import Path


def start_module(name: str, args: dict, env: dict) -> subprocess.Popen:
    """Start a module of the collection as :func:`harness.run_module` runs it, without waiting for it.

    It leads its own process group, so :func:`kill` takes any child it started too. Its output goes to a
    temporary file (``proc.output``) that a full pipe cannot block.
    """
    output = tempfile.TemporaryFile()  # noqa: SIM115  read by result_of() after the module ended
    with tempfile.TemporaryFile() as stdin:
        stdin.write(json.dumps({"ANSIBLE_MODULE_ARGS": args}).encode())
        stdin.seek(0)
        proc = subprocess.Popen(
            [sys.executable, "-m", f"ansible_collections.caas.backup.plugins.modules.{name}"],
            stdin=stdin,
            stdout=output,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )
    proc.output = output
    return proc


def kill(proc: subprocess.Popen) -> None:
    """SIGKILL the module's whole process group and reap it."""
    with contextlib.suppress(ProcessLookupError):
        os.killpg(proc.pid, signal.SIGKILL)
    proc.wait(timeout=30)


def result_of(proc: subprocess.Popen) -> dict:
    """The JSON result of a module that ended by itself (``rc`` added), or ``{"rc": .., "output": ..}``."""
    proc.output.seek(0)
    text = proc.output.read().decode(errors="replace")
    try:
        result = json.loads(text)
    except ValueError:
        result = {"output": text}
    result["rc"] = proc.returncode
    return result


def run_and_kill(proc: subprocess.Popen, trigger: Callable[[], bool], timeout: float = 120.0) -> bool:
    """Poll ``trigger`` until it fires (then SIGKILL the module) or the module ends by itself.

    Returns True when the module was killed, False when it finished first. ``timeout`` is a failsafe
    against a hung module (it is then killed and the test fails), not a timing assertion.
    """
    deadline = time.monotonic() + timeout
    while proc.poll() is None:
        if trigger():
            kill(proc)
            return True
        if time.monotonic() > deadline:
            kill(proc)
            raise AssertionError(f"the module ran for more than {timeout:.0f}s without reaching its kill point")
        time.sleep(0.001)
    return False


def partial_size_trigger(root: Path, at_least: int) -> Callable[[], bool]:
    """A trigger that fires once a ``.partial-*`` file below ``root`` holds ``at_least`` bytes."""

    def fired() -> bool:
        for path in root.rglob(".partial-*"):
            with contextlib.suppress(OSError):
                if path.stat().st_size >= at_least:
                    return True
        return False

    return fired


class HoldingProxy:
    """A TCP proxy to ``upstream`` that counts the bytes clients send and can hold them at a limit.

    :meth:`arm` sets a limit: once that many request bytes (all connections together, counted from the
    call) have been forwarded, nothing more goes through and :attr:`tripped` is set. Replies are never
    held. :meth:`disarm` lets everything through again and closes what the held connections left.
    """

    def __init__(self, upstream: tuple[str, int]) -> None:
        self.upstream = upstream
        self._server = socket.create_server(("127.0.0.1", 0))
        self.url = f"http://127.0.0.1:{self._server.getsockname()[1]}"
        self._lock = threading.Lock()
        self._sent = 0
        self._limit: int | None = None
        self.tripped = threading.Event()
        self._generation = 0  # a held request goes on waiting until this changes (disarm)
        self._conns: list[socket.socket] = []
        self._closed = False
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def sent(self) -> int:
        """Request bytes forwarded since the last :meth:`arm` or :meth:`disarm`."""
        return self._sent

    def arm(self, limit: int) -> None:
        with self._lock:
            self._sent, self._limit = 0, limit
            self.tripped.clear()

    def disarm(self) -> None:
        with self._lock:
            self._sent, self._limit = 0, None
            self._generation += 1
            self.tripped.clear()
            conns, self._conns = self._conns, []
        for conn in conns:
            with contextlib.suppress(OSError):
                conn.close()

    def close(self) -> None:
        self._closed = True
        self.disarm()
        self._server.close()

    def _accept(self) -> None:
        while not self._closed:
            try:
                client, _addr = self._server.accept()
            except OSError:
                return
            try:
                server = socket.create_connection(self.upstream)
            except OSError:
                client.close()
                continue
            with self._lock:
                self._conns += [client, server]
            threading.Thread(target=self._pump, args=(client, server, True), daemon=True).start()
            threading.Thread(target=self._pump, args=(server, client, False), daemon=True).start()

    def _allowance(self, wanted: int) -> int:
        """How many of ``wanted`` request bytes may go through now (0 once the limit is reached)."""
        with self._lock:
            if self._limit is None:
                self._sent += wanted
                return wanted
            allowed = max(0, min(wanted, self._limit - self._sent))
            self._sent += allowed
            if self._sent >= self._limit:
                self.tripped.set()
            return allowed

    def _pump(self, src: socket.socket, dst: socket.socket, request: bool) -> None:
        try:
            while True:
                data = src.recv(65536)
                if not data:
                    break
                if request:
                    generation = self._generation
                    allowed = self._allowance(len(data))
                    if allowed < len(data):
                        dst.sendall(data[:allowed])
                        while self._generation == generation and not self._closed:
                            time.sleep(0.01)  # held until the test has killed the module and disarms
                        return
                dst.sendall(data)
        except OSError:
            pass
        finally:
            with contextlib.suppress(OSError):
                dst.shutdown(socket.SHUT_WR)


def flip_bits(data: bytes, rng, flips: int = 1) -> tuple[bytes, str]:
    """``data`` with ``flips`` bits flipped at seeded positions; and a description for assertion messages."""
    damaged = bytearray(data)
    where = []
    for _flip in range(flips):
        offset = rng.randrange(len(damaged))
        bit = rng.randrange(8)
        damaged[offset] ^= 1 << bit
        where.append(f"{offset}.{bit}")
    return bytes(damaged), f"bit(s) {', '.join(where)} of {len(data)} flipped"


def truncate(data: bytes, rng) -> tuple[bytes, str]:
    """``data`` cut at a seeded length (possibly 0, never the whole); and a description."""
    length = rng.randrange(len(data))
    return data[:length], f"truncated to {length} of {len(data)} bytes"
