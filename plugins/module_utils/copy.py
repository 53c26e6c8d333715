# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Copies of complete backup sets in another storage location (a second bucket, region or directory).

A set is copied byte for byte (encrypted objects stay encrypted, a signed manifest stays valid), one
object at a time in chunks (bounded memory), each checked against its manifest's size and sha256 as it
streams; its data first, then its signature, then its manifest, so a copy that fails or is killed midway
is never a complete set at the destination. Only complete sets of the source are copied; one already
complete at the destination is skipped.

The erasure ledger (``erasure/``) goes with the sets, before them: every restore applies it, so a copy
without it would bring erased data back when the copy is what is restored.
"""

from __future__ import annotations

import contextlib
import datetime
import json
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    MANIFEST,
    SIGNATURE,
    BackupSet,
    check_stored,
    set_order,
)
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError, IntegrityError
from ansible_collections.caas.backup.plugins.module_utils.erasure import PREFIX as ERASURE_PREFIX
from ansible_collections.caas.backup.plugins.module_utils.erasure import SIGNATURE_SUFFIX
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage
from ansible_collections.caas.backup.plugins.module_utils.stream import copy_hashed


@dataclass
class CopyPlan:
    """What a copy does: the sets to copy (oldest first), those already at the destination, those refused."""

    to_copy: list[BackupSet] = field(default_factory=list)
    present: list[BackupSet] = field(default_factory=list)
    refused: list[dict] = field(default_factory=list)  # {set, error}: never copied


def select(sets: list[BackupSet], since: datetime.datetime | None = None, newest: int | None = None) -> list[BackupSet]:
    """The complete or broken sets taken at or after ``since``, only the ``newest`` N complete ones of each kind
    and source when given (broken ones stay, to be refused by name); oldest first (:func:`set_order`).

    Sets without a manifest are left out: they may still be being written.
    """
    chosen = sorted((s for s in sets if (s.complete or s.broken) and (since is None or s.time >= since)), key=set_order)
    if newest:
        groups: dict[tuple[str, str], list[BackupSet]] = {}
        for bset in chosen:
            if bset.complete:
                groups.setdefault((bset.kind, bset.source), []).append(bset)
        kept = {s.prefix for group in groups.values() for s in group[-newest:]}
        chosen = [s for s in chosen if s.broken or s.prefix in kept]
    return chosen


def plan_copy(source: Storage, dest: Storage, selected: list[BackupSet], there: list[BackupSet]) -> CopyPlan:
    """Sort ``selected`` sets of ``source`` into to copy, already complete at ``dest`` (whose sets are ``there``),
    and refused.

    A source set that is not complete (its manifest damaged: see :func:`select`) is refused. A set already
    at ``dest`` with the same manifest and every object at its size is present; one with the same id but
    another manifest is refused (nothing is overwritten).
    """
    existing_sets = {(s.kind, s.source, s.backup_id): s for s in there}
    plan = CopyPlan()
    for bset in selected:
        if not bset.complete:
            plan.refused.append({"set": bset.prefix, "error": f"{bset.error or 'no manifest'} in {source.url}"})
            continue
        existing = existing_sets.get((bset.kind, bset.source, bset.backup_id))
        if existing is not None and existing.complete:
            if existing.manifest != bset.manifest:
                plan.refused.append(
                    {"set": bset.prefix, "error": f"{dest.url} holds a different set with this id: not overwritten"}
                )
                continue
            try:
                check_stored(existing, dest.url)
            except IntegrityError:
                plan.to_copy.append(bset)  # its manifest is there but not all its data: copy it again
                continue
            plan.present.append(bset)
            continue
        plan.to_copy.append(bset)
    return plan


def copy_set(source: Storage, dest: Storage, bset: BackupSet) -> dict:
    """Copy one complete set: every data object streamed and checked, then the signature, the manifest last.

    A mismatch (size, sha256, a manifest changed meanwhile) raises IntegrityError naming the object; what
    was written of the set at ``dest`` is removed again (best effort) and its manifest is never written.
    Returns ``{set, objects, bytes}``: the objects written (the manifest and signature too), the data bytes.
    """
    written: list[str] = []
    copied = 0
    try:
        for record in bset.manifest["objects"]:
            key = f"{bset.prefix}/{record['name']}"
            if not record.get("sha256"):
                raise IntegrityError(f"{key} in {source.url} has no sha256 in its manifest")
            with source.open(key) as src, dest.writer(key) as out:
                copied += copy_hashed(src, out, record["sha256"], record.get("size"), f"{key} in {source.url}")[0]
            written.append(key)
        stored = {info.key.rpartition("/")[2]: info.size for info in dest.list(f"{bset.prefix}/")}
        check_stored(BackupSet(bset.kind, bset.source, bset.backup_id, bset.manifest, sizes=stored), dest.url)
        raw = source.get_bytes(f"{bset.prefix}/{MANIFEST}")
        if _parse(raw) != bset.manifest:
            raise IntegrityError(f"{bset.prefix}/{MANIFEST} in {source.url} changed while the set was copied")
        if f"{bset.prefix}/{SIGNATURE}" in bset.keys:
            dest.put_bytes(f"{bset.prefix}/{SIGNATURE}", source.get_bytes(f"{bset.prefix}/{SIGNATURE}"))
            written.append(f"{bset.prefix}/{SIGNATURE}")
        dest.put_bytes(f"{bset.prefix}/{MANIFEST}", raw)
    except BackupError:
        with contextlib.suppress(BackupError):
            dest.delete(written)
        raise
    return {"set": bset.prefix, "objects": len(written) + 1, "bytes": copied}


def _parse(raw: bytes) -> object:
    try:
        return json.loads(raw)
    except ValueError:
        return None


def ledger_missing(source: Storage, dest: Storage) -> list[str]:
    """The erasure ledger's objects (requests and their signatures) of ``source`` that ``dest`` lacks, or holds
    at another size; a signature before its request (a request is read only with its signature there)."""
    there = {info.key: info.size for info in dest.list(ERASURE_PREFIX)}
    missing = [info.key for info in source.list(ERASURE_PREFIX) if there.get(info.key) != info.size]
    return sorted(missing, key=lambda key: (not key.endswith(SIGNATURE_SUFFIX), key))


def copy_ledger(source: Storage, dest: Storage, keys: list[str]) -> None:
    """Copy the ledger objects ``keys`` (see :func:`ledger_missing`) byte for byte, each read back at its size."""
    for key in keys:
        data = source.get_bytes(key)
        dest.put_bytes(key, data)
        stored = {info.key: info.size for info in dest.list(key)}
        if stored.get(key) != len(data):
            raise IntegrityError(f"{key} was not stored whole in {dest.url}: the erasure ledger was not copied")


def copy_sets(source: Storage, dest: Storage, plan: CopyPlan) -> tuple[list[dict], list[dict]]:
    """Copy every set of ``plan.to_copy`` (oldest first); a set that fails does not stop the others.

    Returns ``(copied, failed)``: ``copy_set`` results, and ``{set, error}`` for each set that failed.
    """
    copied: list[dict] = []
    failed: list[dict] = []
    for bset in plan.to_copy:
        try:
            copied.append(copy_set(source, dest, bset))
        except BackupError as exc:
            failed.append({"set": bset.prefix, "error": str(exc)})
    return copied, failed
