# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Backup sets and their manifests.

Layout: ``<kind>/<source>/<backup_id>/manifest.json`` beside the set's data
objects. The manifest is written last: a set without one is incomplete and is
never offered for restore.

Every manifest records the sha256 of its own canonical content
(``manifest_sha256``), so a damaged one is caught without any key. With a
signing key, ``manifest.json.sig`` (OpenSSH SSHSIG, see signing.py) is written
just before it; readers given trusted signers accept only sets it verifies.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import json
import re
import secrets
import tempfile
from collections.abc import Callable, Iterator, Sequence
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass, field
from typing import TypeVar

from ansible_collections.caas.backup.plugins.module_utils.common import (
    COLLECTION_VERSION,
    BackupError,
    ConfigurationError,
    EncryptionError,
    IntegrityError,
    NotFoundError,
    StorageError,
)
from ansible_collections.caas.backup.plugins.module_utils.signing import (
    NAMESPACE,
    SignatureError,
    TrustedKey,
    verify_any,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage
from ansible_collections.caas.backup.plugins.module_utils.stream import (
    ObjectReader,
    ObjectWriter,
    WriteOptions,
    copy_hashed,
    parse_identities,
    recipient_fingerprint,
)

KINDS = ("mongo-full", "mongo-oplog", "redis-rdb", "redis-aof", "kafka-meta", "kafka-messages", "config")
MANIFEST = "manifest.json"
# The manifest's SSHSIG signature, written just before the manifest when a signing key is given.
SIGNATURE = MANIFEST + ".sig"
# Written beside a set after it is complete (backup_verify); not part of its size.
VERIFICATION = "verification.json"
# 2: the manifest records its own sha256 (DIGEST_FIELD); version 1 manifests have none and still read.
FORMAT_VERSION = 2
DIGEST_FIELD = "manifest_sha256"
MANIFEST_READERS = 8
# Milliseconds keep sets made within one second in the order they were started (ids without them,
# from the first release, still parse).
_ID_RE = re.compile(r"^(\d{8}T\d{6})(?:\.(\d{3}))?Z-[0-9a-f]{4}$")
_SOURCE_RE = re.compile(r"^[A-Za-z0-9._-]+$")


def utcnow() -> datetime.datetime:
    """Now, in UTC, to the second."""
    return datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def iso(moment: datetime.datetime) -> str:
    """ISO 8601 UTC with a ``Z``."""
    return moment.astimezone(datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def parse_time(text: str) -> datetime.datetime:
    """An ISO 8601 time; one without a zone is taken as UTC."""
    try:
        moment = datetime.datetime.fromisoformat(text.strip().replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"{text!r} is not an ISO 8601 time (e.g. 2026-02-21T10:30:00Z)") from None
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=datetime.timezone.utc)
    return moment.astimezone(datetime.timezone.utc)


def new_backup_id(now: datetime.datetime | None = None) -> str:
    """``20260221T020000.412Z-3f9a``: UTC time to the millisecond and a short random suffix; sorts by time."""
    moment = (now or datetime.datetime.now(datetime.timezone.utc)).astimezone(datetime.timezone.utc)
    return f"{moment:%Y%m%dT%H%M%S}.{moment.microsecond // 1000:03d}Z-{secrets.token_hex(2)}"


def backup_id_time(backup_id: str) -> datetime.datetime:
    """The time a backup id was made at."""
    match = _ID_RE.match(backup_id)
    if not match:
        raise ConfigurationError(f"{backup_id!r} is not a backup id (e.g. 20260221T020000.412Z-3f9a)")
    moment = datetime.datetime.strptime(match.group(1), "%Y%m%dT%H%M%S").replace(tzinfo=datetime.timezone.utc)
    return moment.replace(microsecond=int(match.group(2) or 0) * 1000)


def check_kind(kind: str) -> str:
    """``kind`` if it is one the catalog knows."""
    if kind not in KINDS:
        raise ConfigurationError(f"unknown backup kind {kind!r}: use one of {', '.join(KINDS)}")
    return kind


def check_source(source: str) -> str:
    """``source`` if it is usable as one path segment."""
    if not source or not _SOURCE_RE.match(source) or source in (".", ".."):
        raise ConfigurationError(f"source_name {source!r} may hold only letters, digits, '.', '_' and '-'")
    return source


@dataclass
class BackupSet:
    """One backup set as the catalog sees it."""

    kind: str
    source: str
    backup_id: str
    manifest: dict | None = None
    error: str | None = None
    keys: list[str] = field(default_factory=list)
    size: int = 0
    sizes: dict[str, int] = field(default_factory=dict)  # object name -> stored size, from the listing
    signer: TrustedKey | None = None  # the trusted key its manifest signature was checked with

    @property
    def broken(self) -> bool:
        """Its manifest exists but cannot be used (damaged, unsigned or wrongly signed: see ``error``)."""
        return self.manifest is None and self.error is not None

    @property
    def prefix(self) -> str:
        return f"{self.kind}/{self.source}/{self.backup_id}"

    @property
    def complete(self) -> bool:
        """Restorable: its manifest exists and could be read."""
        return self.manifest is not None

    @property
    def time(self) -> datetime.datetime:
        """When the backup was taken (its end), else the time in its id."""
        if self.manifest and self.manifest.get("finished_at"):
            return parse_time(self.manifest["finished_at"])
        return backup_id_time(self.backup_id)

    @property
    def tags(self) -> list[str]:
        return list((self.manifest or {}).get("tags") or [])

    @property
    def facts(self) -> dict:
        return dict((self.manifest or {}).get("facts") or {})

    def record(self, stem: str) -> dict:
        """The manifest record of the object written as ``stem``."""
        for record in (self.manifest or {}).get("objects", ()):
            if record.get("stem") == stem:
                return record
        raise NotFoundError(f"backup {self.prefix} has no object {stem!r}")

    def summary(self) -> dict:
        """A compact description for module results."""
        return {
            "kind": self.kind,
            "source": self.source,
            "backup_id": self.backup_id,
            "complete": self.complete,
            "time": iso(self.time),
            "size": self.size,
            "tags": self.tags,
            "error": self.error,
            "signed_by": self.signer.label if self.signer else None,
        }


class SetWriter:
    """Writes one new backup set: objects first, the manifest last (:meth:`commit`)."""

    def __init__(
        self,
        storage: Storage,
        kind: str,
        source: str,
        options: WriteOptions,
        tags: list[str] | tuple[str, ...] = (),
        now: datetime.datetime | None = None,
    ) -> None:
        self.storage = storage
        self.kind = check_kind(kind)
        self.source = check_source(source)
        self.options = options
        self.tags = list(tags)
        moment = now or datetime.datetime.now(datetime.timezone.utc)
        self.started_at = moment  # to the microsecond: many backups take less than a second
        self.backup_id = new_backup_id(moment)
        self.objects: list[dict] = []
        self.signed = False

    @property
    def prefix(self) -> str:
        return f"{self.kind}/{self.source}/{self.backup_id}"

    @contextlib.contextmanager
    def object(self, stem: str) -> Iterator[ObjectWriter]:
        """A writer for one data object; its record joins the manifest on a clean exit."""
        name = stem + self.options.suffix()
        with self.storage.writer(f"{self.prefix}/{name}") as sink, ObjectWriter(sink, self.options) as out:
            yield out
        self.objects.append({"name": name, "stem": stem, **out.record})

    def commit(self, facts: dict, finished_at: datetime.datetime | None = None) -> dict:
        """Write the manifest: from now on the set is complete and restorable."""
        manifest = {
            "format_version": FORMAT_VERSION,
            "kind": self.kind,
            "source": self.source,
            "backup_id": self.backup_id,
            "started_at": iso(self.started_at),
            "finished_at": iso(finished_at or datetime.datetime.now(datetime.timezone.utc)),
            "collection_version": COLLECTION_VERSION,
            "tags": self.tags,
            "objects": self.objects,
            "facts": facts,
        }
        manifest[DIGEST_FIELD] = manifest_digest(manifest)
        data = json.dumps(manifest, indent=1, sort_keys=True).encode()
        if self.options.signer is not None:
            # Before the manifest: the manifest stays the commit point, and a committed set is signed from its start.
            self.storage.put_bytes(f"{self.prefix}/{SIGNATURE}", self.options.signer.sign(data).encode())
            self.signed = True
        self.storage.put_bytes(f"{self.prefix}/{MANIFEST}", data)
        return manifest

    def discard(self) -> None:
        """Remove the objects written so far, after a failure (best effort: the failure may be the storage)."""
        keys = [f"{self.prefix}/{o['name']}" for o in self.objects]
        if self.signed:
            keys.append(f"{self.prefix}/{SIGNATURE}")
        with contextlib.suppress(BackupError):
            self.storage.delete(keys)

    def result(self) -> dict:
        """The result fields every backup module reports: ``backup_id``, ``location``, ``stored_bytes``."""
        return {
            "backup_id": self.backup_id,
            "location": f"{self.storage.url}/{self.prefix}",
            "stored_bytes": sum(o["size"] for o in self.objects),
        }

    def __enter__(self) -> SetWriter:
        return self

    def __exit__(self, exc_type, exc, tb) -> None:
        # A failure anywhere inside leaves no objects behind (the manifest, written last, never was).
        if exc_type is not None:
            self.discard()


def manifest_digest(manifest: dict) -> str:
    """The sha256 of a manifest's canonical JSON (sorted keys, no spaces, ASCII), its own digest left out."""
    content = {k: v for k, v in manifest.items() if k != DIGEST_FIELD}
    canonical = json.dumps(content, sort_keys=True, separators=(",", ":"), ensure_ascii=True)
    return hashlib.sha256(canonical.encode()).hexdigest()


def _manifest_problem(
    manifest: object, raw: bytes, storage: Storage, bset: BackupSet, trust: list[TrustedKey] | None
) -> str | None:
    """Why a parsed manifest cannot be used, or None; sets ``bset.signer`` when its signature is good."""
    if not isinstance(manifest, dict) or not isinstance(manifest.get("objects"), list):
        return "manifest has no object list"
    version = manifest.get("format_version")
    if not isinstance(version, int) or version > FORMAT_VERSION:
        return f"manifest format_version {version!r} is newer than this collection reads ({FORMAT_VERSION})"
    recorded = manifest.get(DIGEST_FIELD)
    if recorded is None and version != 1:  # only the first format wrote no digest
        return f"manifest (format_version {version}) has no {DIGEST_FIELD}: damaged or altered"
    if recorded is not None and recorded != manifest_digest(manifest):
        return f"manifest does not match its {DIGEST_FIELD}: damaged or altered"
    if trust is None:
        return None
    if f"{bset.prefix}/{SIGNATURE}" not in bset.keys:
        return f"manifest is not signed (no {SIGNATURE}) and trusted_signers are given"
    try:
        armored = storage.get_bytes(f"{bset.prefix}/{SIGNATURE}").decode("ascii")
        bset.signer = verify_any(armored, raw, trust, NAMESPACE)
    except UnicodeDecodeError:
        return f"manifest signature is not valid: {SIGNATURE} is not an armored SSH signature"
    except SignatureError as exc:
        return f"manifest signature is not valid: {exc}"
    return None


def _read_manifest(storage: Storage, bset: BackupSet, trust: list[TrustedKey] | None = None) -> None:
    """Read, check and (with ``trust``) authenticate a set's manifest; on failure ``bset.error`` says why."""
    raw = storage.get_bytes(f"{bset.prefix}/{MANIFEST}")
    try:
        manifest = json.loads(raw)
    except ValueError as exc:
        bset.error = f"manifest is not valid JSON: {exc}"
        return
    bset.error = _manifest_problem(manifest, raw, storage, bset, trust)
    if bset.error is None:
        bset.manifest = manifest


def list_sets(
    storage: Storage, kind: str | None = None, source: str | None = None, trust: list[TrustedKey] | None = None
) -> list[BackupSet]:
    """Every backup set, complete or not, sorted by kind, source and :func:`set_order` (oldest first).

    Incomplete sets (no manifest, or one that cannot be read: see ``error``)
    are listed so retention can clean them up, but are never ``complete``.
    With ``trust`` (trusted signer keys), a set whose manifest signature they
    do not verify is not complete either: this is the one place signatures are checked.
    """
    prefix = ""
    if kind:
        prefix = f"{check_kind(kind)}/" + (f"{check_source(source)}/" if source else "")
    sets: dict[tuple[str, str, str], BackupSet] = {}
    manifests = set()
    for info in storage.list(prefix):
        parts = info.key.split("/")
        if len(parts) != 4 or parts[0] not in KINDS or not _ID_RE.match(parts[2]):
            continue
        ident = (parts[0], parts[1], parts[2])
        bset = sets.setdefault(ident, BackupSet(*ident))
        bset.keys.append(info.key)
        bset.sizes[parts[3]] = info.size
        if parts[3] != VERIFICATION:
            bset.size += info.size
        if parts[3] == MANIFEST:
            manifests.add(ident)
    # Manifests are small and many (one GET each): read them a few at a time.
    with ThreadPoolExecutor(MANIFEST_READERS) as pool:
        list(pool.map(lambda ident: _read_manifest(storage, sets[ident], trust), manifests))
    return sorted(sets.values(), key=lambda s: (s.kind, s.source, *set_order(s)))


def set_order(bset: BackupSet) -> tuple[datetime.datetime, str]:
    """The one ordering of sets (oldest first): their time, ties broken by backup id.

    Listing, latest, retention, backup_info and every restore sort with this
    key, so two sets finishing in the same second are told apart the same way
    everywhere: the one a restore would pick is the one retention keeps.
    """
    return (bset.time, bset.backup_id)


def sources_note(storage: Storage, kind: str) -> str:
    """``"; sources with <kind> backups: a, b"`` for a not-found message: which names a restore could use.

    A restore on a new host (disaster recovery) whose source name does not match the old one's is
    told the names that exist, rather than only that its own has none.
    """
    sources = sorted({s.source for s in list_sets(storage, kind) if s.complete})
    if not sources:
        return f"; no source has complete {kind} backups there"
    return f"; sources with {kind} backups: {', '.join(sources)}"


def _only_source(sets: list[BackupSet], kind: str) -> str:
    sources = sorted({s.source for s in sets})
    if len(sources) > 1:
        raise ConfigurationError(f"several sources have {kind} backups ({', '.join(sources)}): set source_name")
    return sources[0]


def latest(
    storage: Storage,
    kind: str,
    source: str | None = None,
    before: datetime.datetime | None = None,
    trust: list[TrustedKey] | None = None,
    warn: Callable[[str], None] | None = None,
) -> BackupSet:
    """The newest complete set of a kind (and source), optionally taken at or before ``before``.

    When newer sets are broken (see :attr:`BackupSet.broken`), the older set
    is returned and ``warn`` is told which ones were passed over and why.
    """
    listed = list_sets(storage, kind, source, trust)
    sets = [s for s in listed if s.complete]
    if sets and source is None:
        source = _only_source(sets, kind)
        sets = [s for s in sets if s.source == source]
    broken = [s for s in listed if s.broken and (source is None or s.source == source)]
    if before is not None:
        sets = [s for s in sets if s.time <= before]
        broken = [s for s in broken if s.time <= before]
    if not sets:
        where = f" for source {source}" if source else ""
        when = f" at or before {iso(before)}" if before else ""
        why = f" ({len(broken)} broken, the newest {broken[-1].prefix}: {broken[-1].error})" if broken else ""
        note = sources_note(storage, kind)
        raise NotFoundError(f"no complete {kind} backup{where}{when} in {storage.url}{why}{note}")
    chosen = max(sets, key=set_order)
    started = (backup_id_time(chosen.backup_id), chosen.backup_id)
    passed_over = [s for s in broken if (backup_id_time(s.backup_id), s.backup_id) > started]
    if passed_over and warn is not None:
        reasons = "; ".join(f"{s.prefix}: {s.error}" for s in passed_over)
        warn(f"restoring {chosen.prefix}, not the {len(passed_over)} newer broken set(s): {reasons}")
    return chosen


def get_set(
    storage: Storage, kind: str, backup_id: str, source: str | None = None, trust: list[TrustedKey] | None = None
) -> BackupSet:
    """The complete (and, with ``trust``, verified) set with this id; the source is found when not given."""
    backup_id_time(backup_id)
    matches = [s for s in list_sets(storage, kind, source, trust) if s.backup_id == backup_id]
    if not matches:
        where = f" for source {source}" if source else ""
        raise NotFoundError(f"no {kind} backup {backup_id}{where} in {storage.url}{sources_note(storage, kind)}")
    if len(matches) > 1:
        raise ConfigurationError(f"backup id {backup_id} exists for several sources: set source_name")
    bset = matches[0]
    if not bset.complete:
        raise NotFoundError(
            f"backup {bset.prefix} is incomplete ({bset.error or 'no manifest'}): it cannot be restored"
        )
    return bset


def find_set(
    storage: Storage,
    kind: str,
    backup_id: str | None = None,
    source: str | None = None,
    before: datetime.datetime | None = None,
    trust: list[TrustedKey] | None = None,
    warn: Callable[[str], None] | None = None,
) -> BackupSet:
    """The set a restore asked for: by id, else the latest (before a time); see :func:`latest` for ``warn``."""
    if backup_id:
        return get_set(storage, kind, backup_id, source, trust)
    return latest(storage, kind, source, before, trust, warn)


def check_stored(bset: BackupSet, storage_url: str = "") -> None:
    """Refuse a complete set that lacks an object its manifest names, or holds one of another size.

    Only the listing is used (nothing is read): how a storage location is told to hold the whole set
    before one is chosen to restore from. The sha256 is checked as each object is read.
    """
    where = f" in {storage_url}" if storage_url else ""
    for record in (bset.manifest or {}).get("objects", ()):
        key = f"{bset.prefix}/{record['name']}"
        stored = bset.sizes.get(record["name"])
        if stored is None:
            raise IntegrityError(f"{key} is missing{where}: the set is incomplete there")
        if record.get("size") is not None and stored != record["size"]:
            raise IntegrityError(
                f"{key}{where} is {stored} bytes but its manifest says {record['size']}: truncated or replaced"
            )


Found = TypeVar("Found")


def first_location(
    storages: Sequence[Storage], find: Callable[[Storage], Found], warn: Callable[[str], None] | None = None
) -> tuple[Storage, Found]:
    """The first storage location (in the order given) where ``find`` finds what a restore asked for, and that.

    A location that cannot be reached, lacks it, or holds it incomplete (StorageError, NotFoundError,
    IntegrityError from ``find``) is passed over; once one is found, ``warn`` is told each passed over and
    why. When none has it, the error names every location's reason (one location: its own error, as is).
    Any other error (a bad option, a key that opens nothing) is the same everywhere and is raised at once.
    """
    skipped: list[str] = []
    for storage in storages:
        try:
            found = find(storage)
        except (StorageError, NotFoundError, IntegrityError) as exc:
            if len(storages) == 1:
                raise
            skipped.append(f"{storage.url}: {exc}")
            continue
        if warn is not None:
            for reason in skipped:
                warn(f"storage location skipped: {reason}")
        return storage, found
    raise NotFoundError(f"no storage location holds it complete ({len(storages)} tried): " + "; ".join(skipped))


def check_openable(bset: BackupSet, identities: list[str]) -> None:
    """Refuse a set that none of ``identities`` can decrypt, from the recipient fingerprints its manifest records.

    No object is read: this is how a recovery is assessed before anything is downloaded or touched.
    """
    held = {recipient_fingerprint(str(i.to_public())) for i in parse_identities(identities)}
    for record in (bset.manifest or {}).get("objects", ()):
        wanted = set((record.get("encryption") or {}).get("recipients") or ())
        if wanted and not wanted & held:
            given = "none of the given identities" if held else "no identity was given: it"
            raise EncryptionError(
                f"{given} cannot decrypt {bset.prefix}/{record['name']} (encrypted to {', '.join(sorted(wanted))})"
            )


class LocalCopy:
    """A verified local copy of one stored object, readable as many times as needed."""

    def __init__(self, fileobj, record: dict, name: str) -> None:
        self.file = fileobj
        self.record = record
        self.name = name

    def reader(self, identities: list[str]) -> ObjectReader:
        """A fresh decrypting, decompressing reader from the start of the object."""
        self.file.seek(0)
        return ObjectReader(self.file, self.record, identities, self.name)


@contextlib.contextmanager
def fetch_object(storage: Storage, bset: BackupSet, stem: str, spool_dir: str | None = None) -> Iterator[LocalCopy]:
    """Download one object to a local temporary file and check it against the manifest.

    A corrupted or truncated object fails here, with its size or sha256 named,
    before the caller has touched anything. The copy is removed on exit.
    """
    record = bset.record(stem)
    with tempfile.TemporaryFile(dir=spool_dir) as local:
        verify_object(storage, bset, record, local)
        yield LocalCopy(local, record, f"{bset.prefix}/{record['name']}")


def verify_object(storage: Storage, bset: BackupSet, record: dict, copy_to=None) -> None:
    """Re-read one stored object and check its size and sha256 against the manifest."""
    key = f"{bset.prefix}/{record['name']}"
    with storage.open(key) as src:
        copy_hashed(src, copy_to, record.get("sha256"), record.get("size"), key)
    if not record.get("sha256"):
        raise IntegrityError(f"{key} has no sha256 in its manifest")


def write_set(
    storage: Storage,
    kind: str,
    source: str,
    options: WriteOptions,
    tags: list[str] | tuple[str, ...],
    stem: str,
    write: Callable[[ObjectWriter], object],
    facts: dict,
) -> dict:
    """Write a new set of one object (``write(out)`` fills it), then its manifest; on failure nothing stays.

    Returns the result fields every backup module reports: ``backup_id``,
    ``location`` and ``stored_bytes``.
    """
    storage.check()
    with SetWriter(storage, kind, source, options, tags) as backup:
        with backup.object(stem) as out:
            write(out)
        backup.commit(facts)
    return backup.result()
