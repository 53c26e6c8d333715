# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Key rotation: backup sets and the erasure ledger re-encrypted to new age recipients.

Only the age layer changes: each object is decrypted with the old identity and encrypted again to the new
recipients in one stream (compressed bytes are never decompressed, nothing is held whole in memory). A set is
swapped so that every moment leaves it readable with the old or the new identity:

1. every encrypted object is written again under a new name (``<stem>.<tag><suffix>``, the tag naming the new
   recipients), the old one read through its manifest's size and sha256, the new one read back and checked;
2. the manifest is replaced by one listing the new objects (the swap: one atomic write). A signed set's
   signature file holds the old and the new signature just before and after it, so a reader that checks
   signatures accepts whichever manifest it sees; then it holds the new one alone;
3. the old objects are deleted.

A run killed anywhere leaves the old manifest with its objects (1), or the new one with its objects (2, 3);
the next run finishes the set and removes what the killed one left (objects no manifest lists).

The erasure ledger, which every restore reads with the identity it restores with, is re-encrypted to the old
and the new recipients together before the first set and to the new ones alone after the last
(:func:`swap_ledger`), so it opens with either identity for as long as sets of both exist.
"""

from __future__ import annotations

import contextlib
import hashlib
import json
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils import erasure
from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    DIGEST_FIELD,
    MANIFEST,
    SIGNATURE,
    BackupSet,
    check_openable,
    iso,
    manifest_digest,
    utcnow,
)
from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupError,
    ConfigurationError,
    IntegrityError,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage
from ansible_collections.caas.backup.plugins.module_utils.stream import (
    CHUNK,
    SUFFIXES,
    ObjectReader,
    ObjectWriter,
    WriteOptions,
    parse_identities,
    parse_recipients,
    recipient_fingerprint,
)

AGE_MAGIC = b"age-encryption.org/v1\n"
SIGNATURE_BEGIN = b"-----BEGIN SSH SIGNATURE-----"
HEADER_LIMIT = 64 * 1024


def check_keys(recipients: tuple[str, ...], identities: list[str]) -> None:
    """New recipients given and valid, an old identity given, and none of the old identities among the new:
    a rotation that left the old identity able to open the sets would revoke nothing."""
    if not recipients:
        raise ConfigurationError("give the new encryption_recipients (or CAAS_AGE_RECIPIENTS) to re-encrypt to")
    parse_recipients(recipients)
    if not identities:
        raise ConfigurationError("give the old identity (encryption_identity or encryption_identity_file)")
    old = {str(identity.to_public()) for identity in parse_identities(identities)}
    if old & {r.strip() for r in recipients}:
        raise ConfigurationError(
            "encryption_recipients include the public key of the old identity: it would still open every set"
        )


def fingerprints(recipients: tuple[str, ...] | list[str]) -> list[str]:
    """The manifest's record of a recipient list, sorted."""
    return sorted(recipient_fingerprint(r) for r in recipients)


def _encrypted(bset: BackupSet) -> list[dict]:
    return [r for r in (bset.manifest or {}).get("objects", ()) if r.get("encryption")]


def _leftovers(bset: BackupSet) -> list[str]:
    """Objects of a complete set its manifest does not list but a killed re-key wrote (``<stem>.*.age``)."""
    records = (bset.manifest or {}).get("objects", ())
    listed = {f"{bset.prefix}/{r['name']}" for r in records}
    stems = tuple(f"{bset.prefix}/{r['stem']}." for r in records if r.get("stem"))
    return sorted(k for k in bset.keys if k not in listed and k.startswith(stems) and k.endswith(".age"))


@dataclass
class SetPlan:
    """What a re-key does to one set: ``rekey`` it, ``tidy`` it (already re-keyed: only leftovers), or skip it."""

    bset: BackupSet
    action: str
    reason: str = ""
    leftovers: list[str] = field(default_factory=list)

    def summary(self) -> dict:
        records = _encrypted(self.bset)
        return {
            "kind": self.bset.kind,
            "source": self.bset.source,
            "backup_id": self.bset.backup_id,
            "objects": len(records),
            "bytes": sum(int(r.get("size") or 0) for r in records),
            **({"reason": self.reason} if self.reason else {}),
        }


def plan_sets(sets: list[BackupSet], options: WriteOptions, identities: list[str]) -> list[SetPlan]:
    """The plan of every selected set; refuses, before anything is written, a set the run could not finish."""
    wanted = fingerprints(options.recipients)
    plans = []
    for bset in sets:
        if not bset.complete:
            plans.append(SetPlan(bset, "skip", f"not restorable ({bset.error or 'no manifest: incomplete'})"))
            continue
        records = _encrypted(bset)
        if not records:
            plans.append(SetPlan(bset, "skip", "not encrypted"))
            continue
        if all(sorted(r["encryption"].get("recipients") or ()) == wanted for r in records):
            plans.append(SetPlan(bset, "tidy", "already encrypted to the new recipients", _leftovers(bset)))
            continue
        check_openable(bset, identities)
        if f"{bset.prefix}/{SIGNATURE}" in bset.keys and options.signer is None:
            raise ConfigurationError(
                f"{bset.prefix} is signed: give signing_key or signing_key_file to sign its new manifest"
            )
        plans.append(SetPlan(bset, "rekey", leftovers=_leftovers(bset)))
    return plans


class _HashingReader:
    """Counts and hashes what is read through it (the old object, checked against its manifest)."""

    def __init__(self, src) -> None:
        self._src = src
        self.sha256 = hashlib.sha256()
        self.size = 0

    def read(self, size: int = -1) -> bytes:
        data = self._src.read(size)
        self.sha256.update(data)
        self.size += len(data)
        return data


def check_header(storage: Storage, key: str, record: dict, recipients: int) -> None:
    """Read a new object back: its size and sha256 as written, and an age header with one X25519 stanza
    per recipient (what can be checked without the new identity)."""
    with storage.open(key) as src:
        hashed = _HashingReader(src)
        head = hashed.read(HEADER_LIMIT)
        while hashed.read(CHUNK):
            pass
    if hashed.size != record["size"] or hashed.sha256.hexdigest() != record["sha256"]:
        raise IntegrityError(f"{key} does not read back as it was written (size or sha256 differ)")
    lines = head.split(b"\n---", 1)[0].split(b"\n") if head.startswith(AGE_MAGIC) else []
    stanzas = sum(1 for line in lines if line.startswith(b"-> X25519 "))
    if stanzas != recipients:
        raise IntegrityError(f"{key} has {stanzas} X25519 recipient stanza(s), not {recipients}")


def new_name(record: dict, tag: str) -> str:
    """``dump.archive.k3f9a1c2e4b.zst.age``: the stem, the recipients' tag, the suffix stock tools read."""
    return f"{record['stem']}.{tag}{SUFFIXES.get(record.get('compression', 'none'), '')}.age"


def reencrypt(storage: Storage, src_key: str, dst_key: str, record: dict, identities: list[str], recipients) -> dict:
    """Stream one object from ``src_key`` (checked against ``record``) to ``dst_key`` encrypted to ``recipients``.

    Returns the new object's size, sha256 and encryption record.
    """
    with storage.open(src_key) as raw, storage.writer(dst_key) as sink:
        hashed = _HashingReader(raw)
        with (
            ObjectReader(hashed, dict(record, compression="none"), identities, src_key) as plain,
            ObjectWriter(sink, WriteOptions("none", recipients=tuple(recipients))) as out,
        ):
            for chunk in iter(lambda: plain.read(CHUNK), b""):
                out.write(chunk)
            while hashed.read(CHUNK):  # whatever follows the age payload still counts towards the sha256
                pass
            if hashed.size != record.get("size") or hashed.sha256.hexdigest() != record.get("sha256"):
                raise IntegrityError(f"{src_key} does not match its manifest (size or sha256): not re-keyed")
    written = out.record
    return {"size": written["size"], "sha256": written["sha256"], "encryption": written["encryption"]}


def rekey_set(storage: Storage, bset: BackupSet, identities: list[str], options: WriteOptions) -> dict:
    """Re-encrypt one set (see the module docstring for the order); returns the old keys it could not delete."""
    tag = erasure.recipients_tag(options.recipients)
    records, written, replaced = [], [], []
    try:
        for record in bset.manifest["objects"]:
            if not record.get("encryption"):
                records.append(record)
                continue
            name = new_name(record, tag)
            key = f"{bset.prefix}/{name}"
            fresh = reencrypt(storage, f"{bset.prefix}/{record['name']}", key, record, identities, options.recipients)
            written.append(key)
            check_header(storage, key, fresh, len(options.recipients))
            records.append(dict(record, name=name, **fresh))
            replaced.append(f"{bset.prefix}/{record['name']}")
    except BackupError:
        with contextlib.suppress(BackupError):
            storage.delete(written)  # the old manifest and objects are untouched: the set is as it was
        raise
    manifest = {k: v for k, v in bset.manifest.items() if k != DIGEST_FIELD}
    manifest.update(objects=records, rekeyed_at=iso(utcnow()))
    manifest[DIGEST_FIELD] = manifest_digest(manifest)
    data = json.dumps(manifest, indent=1, sort_keys=True).encode()
    signature_key = f"{bset.prefix}/{SIGNATURE}"
    signature = options.signer.sign(data) if options.signer is not None else None
    if signature is not None:
        old = storage.get_bytes(signature_key).decode("ascii") if signature_key in bset.keys else ""
        storage.put_bytes(signature_key, (old.rstrip("\n") + "\n" + signature if old else signature).encode())
    storage.put_bytes(f"{bset.prefix}/{MANIFEST}", data)  # the swap
    if signature is not None and signature_key in bset.keys:
        storage.put_bytes(signature_key, signature.encode())
    return storage.delete(replaced)


def plan_ledger(storage: Storage, identities: list[str], options: WriteOptions, trust: list | None) -> dict:
    """Check the ledger can be re-keyed (each request readable with the old identity, signable): ``rekeyed``
    (requests to re-key) and ``already`` (at the new recipients)."""
    tag = erasure.recipients_tag(options.recipients)
    done = {"rekeyed": 0, "already": 0}
    for request_id, stored in sorted(erasure.entries(storage).items()):
        if any(e.tag == tag for e in stored):
            done["already"] += 1
            continue
        if any(e.signed for e in stored) and options.signer is None:
            raise ConfigurationError(
                f"erasure request {request_id} is signed: give signing_key or signing_key_file to sign it again"
            )
        erasure.read_request(storage, stored, identities, trust)
        done["rekeyed"] += 1
    return done


def swap_ledger(
    storage: Storage, identities: list[str], options: WriteOptions, trust: list | None, final: str | None = None
) -> int:
    """Re-encrypt every request to ``options.recipients``: all the new objects first, then the old ones go.

    So at every moment each request has an object of the recipients before or one of those after, all requests
    alike. :func:`execute` swaps twice: to the old and the new recipients together before any set, to the new
    alone after every set - a restore with either identity reads the whole ledger throughout. A request already
    at the ``final`` tag (a killed run got that far) is left as it is. Returns how many requests were written.
    """
    tag = erasure.recipients_tag(options.recipients)
    keep = {tag, final or tag}
    stored_by_request = erasure.entries(storage)
    written = 0
    for request_id, stored in sorted(stored_by_request.items()):
        if not any(e.tag in keep for e in stored):
            request = erasure.read_request(storage, stored, identities, trust)
            sealed = erasure.seal(request, options)
            erasure.store(storage, erasure.entry_key(request_id, options.recipients), sealed, options)
            written += 1
    stale = [e for stored in stored_by_request.values() for e in stored if e.tag not in keep]
    storage.delete([k for e in stale for k in (e.key, e.key + erasure.SIGNATURE_SUFFIX)])
    return written


def tidy(storage: Storage, plan: SetPlan, signer) -> dict[str, str]:
    """Finish what a killed re-key left in a set: remove objects no manifest lists, and re-sign a manifest whose
    signature file still holds two signatures (only one that was verified: never sign an unchecked manifest).

    Returns the keys that could not be deleted, with why.
    """
    bset = plan.bset
    failed = storage.delete(plan.leftovers) if plan.leftovers else {}
    signature_key = f"{bset.prefix}/{SIGNATURE}"
    verified = signer is not None and bset.signer is not None and signature_key in bset.keys
    if verified and storage.get_bytes(signature_key).count(SIGNATURE_BEGIN) > 1:
        storage.put_bytes(signature_key, signer.sign(storage.get_bytes(f"{bset.prefix}/{MANIFEST}")).encode())
    return failed


def execute(
    storage: Storage,
    plans: list[SetPlan],
    identities: list[str],
    options: WriteOptions,
    trust: list | None,
    ledger: bool,
) -> dict:
    """Carry out a plan (:func:`plan_sets`): tidy and re-key each set; the ledger (with ``ledger``) around them.

    Returns ``rekeyed`` (set summaries), ``ledger`` (or None) and ``not_deleted`` (old keys, with why). A
    failure names the set and carries what was re-keyed before it.
    """
    not_deleted: dict[str, str] = {}
    done: list[dict] = []
    if ledger:
        old = tuple(str(identity.to_public()) for identity in parse_identities(identities))
        both = WriteOptions("none", recipients=tuple(dict.fromkeys(options.recipients + old)), signer=options.signer)
        swap_ledger(storage, identities, both, trust, final=erasure.recipients_tag(options.recipients))
    for plan in plans:
        if plan.action == "skip":
            continue
        try:
            not_deleted.update(tidy(storage, plan, options.signer))
            if plan.action == "rekey":
                not_deleted.update(rekey_set(storage, plan.bset, identities, options))
                done.append(plan.summary())
        except BackupError as exc:
            raise type(exc)(f"{plan.bset.prefix}: {exc}", rekeyed=done, changed=bool(done)) from None
    ledger_done = None
    if ledger:
        already = len(erasure.entries(storage))
        written = swap_ledger(storage, identities, options, trust)
        ledger_done = {"rekeyed": written, "already": already - written}
    return {"rekeyed": done, "ledger": ledger_done, "not_deleted": not_deleted}
