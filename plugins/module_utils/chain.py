# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Continuous capture, once: positions, continuation, gap and loss detection, the per-source lock.

MongoDB oplog slices (``mongo/pitr.py``, one stream per replica set, positions
are oplog timestamps) and Kafka message sets (``kafka/messages.py``, one
stream per partition, positions are offsets) are both chains of sets, each
continuing from where the previous one stopped. What they share lives here:

* a *span* is ``(first, last, item)``: the item continues from position
  ``first`` and reaches position ``last``; a span whose ``first`` is at or
  before the reach so far extends the chain, one after it leaves a hole
  (:func:`link`);
* a capture whose source no longer holds the data after its position has
  lost ``[position, oldest)`` (:func:`lost_range`), and says so;
* two captures of one source never interleave (:func:`capture_lock`).

Positions only need ordering (``<``), so timestamps and offsets both serve.
"""

from __future__ import annotations

import contextlib
import fcntl
import json
import os
import tempfile
from collections.abc import Iterable, Iterator
from typing import Any

from ansible_collections.caas.backup.plugins.module_utils.catalog import iso, utcnow
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, SourceError


def default_lock_dir() -> str:
    """``/run/lock`` when writable (cleared at boot), else the temporary directory."""
    return "/run/lock" if os.access("/run/lock", os.W_OK) else tempfile.gettempdir()


@contextlib.contextmanager
def capture_lock(stream: str, source: str, lock_dir: str | None = None) -> Iterator[str]:
    """Hold ``<lock_dir>/caas-<stream>-<source>.lock`` (flock) for one capture of ``source``.

    ``stream`` names what is captured (``oplog``, ``kafka-messages``). The
    kernel releases a flock when its holder dies, so a crashed capture leaves
    no stale lock; the file records the holder's pid and start time for the
    message a second capture fails with.
    """
    path = os.path.join(lock_dir or default_lock_dir(), f"caas-{stream}-{source}.lock")
    try:
        fd = os.open(path, os.O_RDWR | os.O_CREAT, 0o644)
    except OSError as exc:
        raise ConfigurationError(f"the capture lock {path} cannot be opened: {exc.strerror}") from None
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            try:
                holder = json.loads(os.pread(fd, 4096, 0) or b"{}")
            except ValueError:
                holder = {}
            raise SourceError(
                f"another capture of {source} holds the lock since {holder.get('since', '?')} "
                f"(pid {holder.get('pid', '?')}, {path})",
                locked=True,
            ) from None
        os.ftruncate(fd, 0)
        os.pwrite(fd, json.dumps({"pid": os.getpid(), "since": iso(utcnow())}).encode(), 0)
        yield path
    finally:
        os.close(fd)  # releases the flock


def lost_range(position: Any, oldest: Any) -> tuple[Any, Any] | None:
    """``(position, oldest)`` when the source's oldest retained position is past ``position``, else ``None``.

    Everything from ``position`` up to (not including) ``oldest`` was removed
    by the source's retention before it was captured. ``oldest`` ``None``
    (nothing retained at all) loses everything after the position: the
    caller decides what that means for its stream.
    """
    if oldest is None:
        return (position, None)
    return (position, oldest) if oldest > position else None


def link(spans: Iterable[tuple[Any, Any, Any]], start: Any) -> tuple[list, Any, Any]:
    """Follow a chain of spans from ``start``: ``(items, reach, hole)``.

    Spans are taken ordered by ``(first, last)``; one with ``last`` at or
    before the reach adds nothing and is passed over; the first whose
    ``first`` is after the reach ends the chain, and its ``first`` is the
    ``hole``'s end (``None``: no hole, the chain reaches its last span).
    """
    items = []
    reach = start
    for first, last, item in sorted(spans, key=lambda span: (span[0], span[1])):
        if first > reach:
            return items, reach, first
        if last > reach:
            items.append(item)
            reach = last
    return items, reach, None
