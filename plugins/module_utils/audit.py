# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Attempt and audit records: every backup, delete, verify and restore run leaves its trace in the storage.

:meth:`BackupModule.run <ansible_collections.caas.backup.plugins.module_utils.common.BackupModule.run>`
calls :func:`record_start` before a module's work and :func:`record_result` after it, for a module that
declares an ``audit_action``. Each record is one small JSON object (S3 has no append):

    audit/<YYYY>/<MM>/<DD>/<YYYYmmddTHHMMSS.ffffffZ>-<action>-<kind>-<random>.json

with the attempt's id, action, kind, source, the sets it touched, its result (``ok`` or ``failed`` and the
error's class, never its message or an option's value: no secret can reach a record), and who ran it (the
controller's user and host from ``CAAS_AUDIT_USER``/``CAAS_AUDIT_HOST``, and the user and host the module ran
as). A killed run leaves a start record without a result: :func:`attempts` reports it as failed once it is
older than a grace period. Records go through the storage like every object, so the storage's object lock
options (``s3_object_lock_mode``/``_days``, or the bucket's default retention) protect them too.
"""

from __future__ import annotations

import datetime
import getpass
import json
import os
import re
import secrets
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass

from ansible_collections.caas.backup.plugins.module_utils.common import BackupError
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage

PREFIX = "audit"
ACTIONS = ("write", "delete", "copy", "rekey", "verify", "restore", "erase")
FORMAT_VERSION = 1
READERS = 8
# What the kind part of a key says when a run has no single kind (prune or verify over several kinds).
ANY_KIND = "any"
_KEY_RE = re.compile(
    r"^audit/\d{4}/\d{2}/\d{2}/(\d{8}T\d{6}\.\d{6}Z)-(" + "|".join(ACTIONS) + r")-([a-z0-9-]+)-([0-9a-f]{8})\.json$"
)


def now() -> datetime.datetime:
    """Now, in UTC, to the microsecond (attempt durations are often below a second)."""
    return datetime.datetime.now(datetime.timezone.utc)


def stamp(moment: datetime.datetime) -> str:
    """ISO 8601 UTC to the microsecond, with a ``Z``."""
    return moment.astimezone(datetime.timezone.utc).strftime("%Y-%m-%dT%H:%M:%S.%fZ")


def record_key(moment: datetime.datetime, action: str, kind: str) -> str:
    """The storage key of a new record: sorted by time, unique by its random part."""
    moment = moment.astimezone(datetime.timezone.utc)
    name = f"{moment:%Y%m%dT%H%M%S.%f}Z-{action}-{kind or ANY_KIND}-{secrets.token_hex(4)}.json"
    return f"{PREFIX}/{moment:%Y/%m/%d}/{name}"


def key_time(key: str) -> datetime.datetime | None:
    """The time in a record's key, or None for a key that is not an audit record."""
    match = _KEY_RE.match(key)
    if not match:
        return None
    return datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S.%fZ").replace(tzinfo=datetime.timezone.utc)


def who() -> dict:
    """Who runs the attempt: the controller's user and host (``CAAS_AUDIT_USER``/``CAAS_AUDIT_HOST``, which the
    playbooks set from the controller), and the user and host the module runs as."""
    try:
        run_user = getpass.getuser()
    except (KeyError, OSError):  # a uid without a passwd entry (containers)
        run_user = str(os.getuid())
    run_host = os.uname().nodename
    return {
        "user": os.environ.get("CAAS_AUDIT_USER") or run_user,
        "host": os.environ.get("CAAS_AUDIT_HOST") or run_host,
        "run_user": run_user,
        "run_host": run_host,
    }


@dataclass
class Attempt:
    """One run being recorded: what :func:`record_start` wrote, for :func:`record_result`."""

    attempt_id: str
    action: str
    module: str
    kind: str
    source: str
    started: datetime.datetime
    actor: dict

    def record(self, record: str, moment: datetime.datetime, **fields) -> dict:
        return {
            "format_version": FORMAT_VERSION,
            "record": record,
            "attempt_id": self.attempt_id,
            "action": self.action,
            "module": self.module,
            "kind": self.kind,
            "source": self.source,
            "started_at": stamp(self.started),
            "time": stamp(moment),
            **self.actor,
            **fields,
        }


def _put(storage: Storage, moment: datetime.datetime, attempt: Attempt, record: dict) -> str:
    key = record_key(moment, attempt.action, attempt.kind)
    storage.put_bytes(key, json.dumps(record, sort_keys=True).encode())
    return key


def record_start(storage: Storage, action: str, module: str, kind: str | None, source: str | None) -> Attempt:
    """Write the start record of an attempt and return it (StorageError when the storage refuses it)."""
    if action not in ACTIONS:
        raise BackupError(f"unknown audit action {action!r}: use one of {', '.join(ACTIONS)}")
    started = now()
    attempt = Attempt(secrets.token_hex(8), action, module, kind or "", source or "", started, who())
    _put(storage, started, attempt, attempt.record("start", started))
    return attempt


def set_ids(result: dict, kind: str, source: str) -> list[str]:
    """The sets a module's result (or a failure's details) names: written, restored, deleted or verified."""
    found = []
    if isinstance(result.get("backup_id"), str) and result["backup_id"]:
        found.append(f"{result.get('kind') or kind}/{result.get('source') or source}/{result['backup_id']}")
    found.extend(p for p in result.get("deleted") or () if isinstance(p, str))
    for report in result.get("reports") or ():
        if isinstance(report, dict) and report.get("backup_id"):
            found.append(f"{report.get('kind')}/{report.get('source')}/{report['backup_id']}")
    return found


def record_result(storage: Storage, attempt: Attempt, result: dict, error: str | None) -> dict:
    """Write the result record of ``attempt``: ``ok`` with ``result``, or ``failed`` with ``error`` (the class name
    of the failure, never its message: a message may quote a value).

    The kind and source a module found out while working (a derived source name) replace the start's;
    ``result`` is the module's result, or the failure's details (what was done before it failed).
    """
    finished = now()
    kind = result.get("kind") if isinstance(result.get("kind"), str) and result.get("kind") else attempt.kind
    source = result.get("source") if isinstance(result.get("source"), str) and result.get("source") else attempt.source
    attempt.kind, attempt.source = kind, source
    record = attempt.record(
        "result",
        finished,
        finished_at=stamp(finished),
        duration_seconds=round((finished - attempt.started).total_seconds(), 6),
        result="failed" if error is not None else "ok",
        error=error,
        sets=set_ids(result, kind, source),
    )
    _put(storage, finished, attempt, record)
    return record


def _months(since: datetime.datetime, until: datetime.datetime) -> list[str]:
    """The ``audit/YYYY/MM/`` prefixes covering [since, until]."""
    prefixes, year, month = [], since.year, since.month
    while (year, month) <= (until.year, until.month):
        prefixes.append(f"{PREFIX}/{year:04d}/{month:02d}/")
        year, month = (year + 1, 1) if month == 12 else (year, month + 1)
    return prefixes


def read_records(storage: Storage, since: datetime.datetime, until: datetime.datetime) -> list[dict]:
    """Every audit record made in [since, until], oldest first, each with its ``key``.

    Only the months of the range are listed; a record that is not valid JSON is returned as
    ``{"key", "error"}`` (an audit log is not silently shortened).
    """
    keys = []
    for prefix in _months(since, until):
        for info in storage.list(prefix):
            moment = key_time(info.key)
            if moment is not None and since <= moment <= until:
                keys.append((moment, info.key))
    keys.sort()

    def read(key: str) -> dict:
        try:
            record = json.loads(storage.get_bytes(key))
        except ValueError as exc:
            return {"key": key, "error": f"not valid JSON: {exc}"}
        if not isinstance(record, dict):
            return {"key": key, "error": "not a JSON object"}
        return {**record, "key": key}

    with ThreadPoolExecutor(READERS) as pool:
        return list(pool.map(read, [key for _moment, key in keys]))


def attempts(records: list[dict], at: datetime.datetime, grace: datetime.timedelta) -> list[dict]:
    """The attempts ``records`` tell of, oldest first: start and result joined by attempt id.

    Each is ``{action, kind, source, started_at, finished_at, duration_seconds, result, error, sets}``;
    a start without a result older than ``grace`` (a killed run) is ``failed`` with error ``killed``,
    a younger one ``running``. A result without its start (outside the range read) stands alone.
    """
    from ansible_collections.caas.backup.plugins.module_utils.catalog import parse_time

    joined: dict[str, dict] = {}
    for record in records:
        ident = record.get("attempt_id")
        if not isinstance(ident, str) or record.get("record") not in ("start", "result"):
            continue
        entry = joined.setdefault(ident, {"attempt_id": ident})
        if record["record"] == "start":
            entry.setdefault("started_at", record.get("time"))
            for field in ("action", "kind", "source", "module", "user", "host"):
                entry.setdefault(field, record.get(field))
        else:
            entry.update(
                {k: record.get(k) for k in ("action", "kind", "source", "module", "user", "host", "started_at")},
                **{k: record.get(k) for k in ("finished_at", "duration_seconds", "result", "error", "sets")},
            )
    found = []
    for entry in joined.values():
        try:
            started = parse_time(entry.get("started_at") or entry.get("finished_at") or "")
        except BackupError:
            continue
        if "result" not in entry:
            killed = at - started > grace
            entry.update(
                finished_at=None,
                duration_seconds=None,
                result="failed" if killed else "running",
                error="killed" if killed else None,
                sets=[],
            )
        entry["time"] = started
        found.append(entry)
    found.sort(key=lambda e: (e["time"], e["attempt_id"]))
    for entry in found:
        del entry["time"]
    return found
