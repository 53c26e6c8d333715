# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The GDPR erasure ledger: requests recorded in the storage, applied after every restore.

Old archives are never rewritten. Each erasure request (MongoDB namespaces with a filter, Redis key patterns,
who asked, why, when) is one object ``erasure/<request_id>.<tag>.json.age`` beside the backup sets, encrypted
to the backups' age recipients (``<tag>`` names them, see :func:`recipients_tag`), with its SSHSIG signature
``<key>.sig`` when a signing key is given. Every restore reads the whole ledger *before* it touches the target
(:func:`read_ledger`: a ledger it cannot read fails the restore with nothing touched) and applies it after the
data is back (:func:`apply_ledger`, with the engine's own applier: ``mongo.restore.erase`` and
``redis_backup.erase_keys``).

A request may exist as several objects for a moment (a key rotation writes the new one before it deletes
the old): one readable object per request is enough.
"""

from __future__ import annotations

import datetime
import hashlib
import io
import json
import re
import secrets
from collections.abc import Callable
from dataclasses import dataclass

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupError,
    ConfigurationError,
    IntegrityError,
)
from ansible_collections.caas.backup.plugins.module_utils.signing import NAMESPACE, SignatureError, verify_any
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage
from ansible_collections.caas.backup.plugins.module_utils.stream import (
    ObjectReader,
    ObjectWriter,
    WriteOptions,
    recipient_fingerprint,
)

PREFIX = "erasure/"
FORMAT_VERSION = 1
SIGNATURE_SUFFIX = ".sig"
ENGINES = ("mongodb", "redis")
_TICKET_RE = re.compile(r"^[A-Za-z0-9_-]{1,64}$")
_REQUEST_RE = re.compile(r"^\d{8}T\d{6}Z-[A-Za-z0-9_-]{1,64}$")
_KEY_RE = re.compile(r"^erasure/(?P<request>[^./]+)\.(?P<tag>[a-z0-9]+)\.json(?P<age>\.age)?$")
_NAMESPACE_RE = re.compile(r"^[^.$/\\ \x00]+\.[^$\x00]+$")


@dataclass(frozen=True)
class Request:
    """One erasure request: what to remove after every restore, who asked, why and when."""

    request_id: str
    requested_at: str
    requested_by: str
    reason: str
    mongodb: tuple[dict, ...] = ()
    redis: tuple[dict, ...] = ()

    def document(self) -> dict:
        """The JSON the ledger stores."""
        return {
            "format_version": FORMAT_VERSION,
            "request_id": self.request_id,
            "requested_at": self.requested_at,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "mongodb": [dict(item) for item in self.mongodb],
            "redis": [dict(item) for item in self.redis],
        }

    def summary(self) -> dict:
        """What module results show: who, when, why and where, never the filters or patterns themselves
        (they identify the person)."""
        return {
            "request_id": self.request_id,
            "requested_at": self.requested_at,
            "requested_by": self.requested_by,
            "reason": self.reason,
            "mongodb_namespaces": sorted({item["namespace"] for item in self.mongodb}),
            "redis_patterns": len(self.redis),
        }


def check_mongodb(items: list) -> tuple[dict, ...]:
    """``[{namespace, filter}]`` checked: a ``db.collection`` and a non-empty filter (extended JSON allowed).

    An empty filter would remove a whole collection from every restore: it is refused.
    """
    checked = []
    for number, item in enumerate(items or (), start=1):
        where = f"mongodb[{number - 1}]"
        if not isinstance(item, dict) or set(item) - {"namespace", "filter"}:
            raise ConfigurationError(f"{where} must be a mapping of namespace and filter")
        namespace, query = item.get("namespace"), item.get("filter")
        if isinstance(query, str):
            try:
                query = json.loads(query)
            except ValueError:
                raise ConfigurationError(f"{where}.filter is not valid JSON") from None
        if not isinstance(namespace, str) or not _NAMESPACE_RE.match(namespace) or ".system." in f".{namespace}":
            raise ConfigurationError(f"{where}.namespace must be db.collection (not a system collection)")
        if not isinstance(query, dict) or not query:
            raise ConfigurationError(
                f"{where}.filter must be a non-empty mapping (an empty one would erase all of {namespace})"
            )
        checked.append({"namespace": namespace, "filter": query})
    return tuple(checked)


def check_redis(items: list) -> tuple[dict, ...]:
    """``[{pattern, db}]`` (or plain pattern strings) checked: a glob with at least one literal character."""
    checked = []
    for number, item in enumerate(items or (), start=1):
        where = f"redis[{number - 1}]"
        if isinstance(item, str):
            item = {"pattern": item}
        if not isinstance(item, dict) or set(item) - {"pattern", "db"}:
            raise ConfigurationError(f"{where} must be a key pattern or a mapping of pattern and db")
        pattern, db = item.get("pattern"), item.get("db")
        if not isinstance(pattern, str) or not re.sub(r"[*?\[\]\\^-]", "", pattern):
            raise ConfigurationError(f"{where}.pattern must name keys (a pattern of wildcards only would erase all)")
        if db is not None and (isinstance(db, bool) or not isinstance(db, int) or not 0 <= db <= 1000):
            raise ConfigurationError(f"{where}.db must be a database number")
        checked.append({"pattern": pattern, **({"db": db} if db is not None else {})})
    return tuple(checked)


def new_request(
    requested_by: str,
    reason: str,
    mongodb: list,
    redis: list,
    ticket: str | None = None,
    now: datetime.datetime | None = None,
) -> Request:
    """A checked request; its id is the UTC time and ``ticket`` (else a random suffix)."""
    if not requested_by or not requested_by.strip():
        raise ConfigurationError("requested_by must say who asked for the erasure")
    if not reason or not reason.strip():
        raise ConfigurationError("reason must say why (e.g. the ticket of the data subject's request)")
    if ticket is not None and not _TICKET_RE.match(ticket):
        raise ConfigurationError("request_id may hold only letters, digits, '_' and '-' (at most 64)")
    checked_mongodb, checked_redis = check_mongodb(mongodb), check_redis(redis)
    if not checked_mongodb and not checked_redis:
        raise ConfigurationError("give mongodb (namespace and filter) or redis (key patterns) to erase")
    moment = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    return Request(
        request_id=f"{moment:%Y%m%dT%H%M%SZ}-{ticket or secrets.token_hex(4)}",
        requested_at=moment.replace(microsecond=0).isoformat().replace("+00:00", "Z"),
        requested_by=requested_by.strip(),
        reason=reason.strip(),
        mongodb=checked_mongodb,
        redis=checked_redis,
    )


def parse_request(document: object, name: str) -> Request:
    """A request from its stored JSON; IntegrityError naming ``name`` when it is not one."""
    if not isinstance(document, dict) or document.get("format_version") != FORMAT_VERSION:
        raise IntegrityError(f"{name} is not an erasure request of format {FORMAT_VERSION}")
    try:
        return Request(
            request_id=str(document["request_id"]),
            requested_at=str(document["requested_at"]),
            requested_by=str(document["requested_by"]),
            reason=str(document["reason"]),
            mongodb=check_mongodb(document.get("mongodb") or []),
            redis=check_redis(document.get("redis") or []),
        )
    except (KeyError, ConfigurationError) as exc:
        raise IntegrityError(f"{name} is not a valid erasure request: {exc}") from None


def recipients_tag(recipients: tuple[str, ...] | list[str]) -> str:
    """A short name of a set of age recipients (``plain`` for none), so a re-key can tell its own objects."""
    if not recipients:
        return "plain"
    fingerprints = sorted(recipient_fingerprint(r) for r in recipients)
    return "k" + hashlib.sha256("\n".join(fingerprints).encode()).hexdigest()[:10]


def entry_key(request_id: str, recipients: tuple[str, ...] | list[str]) -> str:
    """Where a request encrypted to ``recipients`` is stored."""
    return f"{PREFIX}{request_id}.{recipients_tag(recipients)}.json" + (".age" if recipients else "")


@dataclass(frozen=True)
class Entry:
    """One stored ledger object."""

    key: str
    request_id: str
    tag: str
    encrypted: bool
    signed: bool


def entries(storage: Storage) -> dict[str, list[Entry]]:
    """The ledger's objects by request id (normally one each; two while a re-key swaps them)."""
    found: dict[str, list[Entry]] = {}
    keys = {info.key for info in storage.list(PREFIX)}
    for key in sorted(keys):
        match = _KEY_RE.match(key)
        if not match or not _REQUEST_RE.match(match["request"]):
            continue
        found.setdefault(match["request"], []).append(
            Entry(key, match["request"], match["tag"], bool(match["age"]), key + SIGNATURE_SUFFIX in keys)
        )
    return found


def seal(request: Request, options: WriteOptions) -> bytes:
    """The stored bytes of a request: its JSON, age-encrypted to the options' recipients (no compression)."""
    out = io.BytesIO()
    with ObjectWriter(out, WriteOptions("none", recipients=options.recipients)) as writer:
        writer.write(json.dumps(request.document(), indent=1, sort_keys=True).encode())
    return out.getvalue()


def store(storage: Storage, key: str, data: bytes, options: WriteOptions) -> None:
    """Write one ledger object, its signature first (with a signing key): the object is the commit point."""
    if options.signer is not None:
        storage.put_bytes(key + SIGNATURE_SUFFIX, options.signer.sign(data).encode())
    storage.put_bytes(key, data)


def record(storage: Storage, request: Request, options: WriteOptions) -> str:
    """Add a request to the ledger; returns its key."""
    storage.check()
    key = entry_key(request.request_id, options.recipients)
    store(storage, key, seal(request, options), options)
    return key


def read_entry(storage: Storage, entry: Entry, identities: list[str], trust: list | None) -> Request:
    """Read, authenticate (with ``trust``) and decrypt one ledger object."""
    data = storage.get_bytes(entry.key)
    if trust is not None:
        if not entry.signed:
            raise SignatureError(f"{entry.key} is not signed (no {SIGNATURE_SUFFIX}) and trusted_signers are given")
        try:
            verify_any(storage.get_bytes(entry.key + SIGNATURE_SUFFIX).decode("ascii"), data, trust, NAMESPACE)
        except UnicodeDecodeError:
            raise SignatureError(f"{entry.key}{SIGNATURE_SUFFIX} is not an armored SSH signature") from None
        except SignatureError as exc:
            raise SignatureError(f"the signature of {entry.key} is not valid: {exc}") from None
    plain = data
    if entry.encrypted:
        opened = {"compression": "none", "encryption": {"format": "age", "recipients": []}}
        with ObjectReader(io.BytesIO(data), opened, identities, entry.key) as reader:
            plain = reader.read()
    try:
        document = json.loads(plain)
    except ValueError:
        raise IntegrityError(f"{entry.key} is not valid JSON") from None
    request = parse_request(document, entry.key)
    if request.request_id != entry.request_id:
        raise IntegrityError(f"{entry.key} holds request {request.request_id}, not {entry.request_id}")
    return request


def read_request(storage: Storage, stored: list[Entry], identities: list[str], trust: list | None = None) -> Request:
    """One request from its stored objects (normally one; two while a re-key swaps them): the first readable."""
    errors = []
    for entry in stored:
        try:
            return read_entry(storage, entry, identities, trust)
        except BackupError as exc:
            errors.append(exc)
    first = errors[0]
    raise type(first)(f"the erasure ledger cannot be read ({first}), so it could not be applied") from None


def read_ledger(storage: Storage, identities: list[str], trust: list | None = None) -> list[Request]:
    """Every request of the ledger, oldest first; one that cannot be read fails the whole read."""
    return [read_request(storage, stored, identities, trust) for _id, stored in sorted(entries(storage).items())]


def apply_ledger(requests: list[Request], engine: str, applier: Callable[[dict], list[tuple[str, int]]]) -> dict:
    """Apply every request's items of ``engine`` with the engine's ``applier``; the restore's ``erasure`` result.

    ``applier(item)`` removes what one item names from the restored data and returns ``(target, removed)``
    pairs (none when the restore did not bring the item's data back). The one place the ledger is applied.
    """
    if engine not in ENGINES:
        raise ConfigurationError(f"unknown erasure engine {engine!r}")
    details = []
    for request in requests:
        for item in getattr(request, engine):
            for target, removed in applier(item):
                details.append({"request_id": request.request_id, "target": target, "removed": removed})
    return {"requests": len(requests), "removed": sum(d["removed"] for d in details), "details": details}


def planned(requests: list[Request]) -> dict:
    """The ``erasure`` result of a check-mode restore: how many requests a real run applies."""
    return {"requests": len(requests), "removed": None, "details": []}
