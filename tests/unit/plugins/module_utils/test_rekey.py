"""Key rotation (rekey.py) on a real local storage, killed at every one of its storage changes.

A run "killed" at its n-th change (an object or manifest written, a key deleted) raises there, and so does
every later call, as if the process had died: no cleanup of the killed run reaches the storage. After each,
every set must open with the old or with the new identity (the one a reader would use), its manifest
signature still checking; the ledger must open whole with either identity. A second run then finishes, and
the old identity opens nothing.
"""

from __future__ import annotations

import contextlib
import os

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from ansible_collections.caas.backup.plugins.module_utils import erasure, rekey
from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, fetch_object, list_sets
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    EncryptionError,
    IntegrityError,
)
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage, Storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

OLD = x25519.Identity.generate()
NEW = x25519.Identity.generate()
SIGNER = SigningKey(Ed25519PrivateKey.generate())
TRUST = parse_trusted([SIGNER.public_line("backup@caas")], "test")
CONTENT = {"a": os.urandom(300_000), "b": b"compressible " * 50_000, "rdb": os.urandom(10_000)}


class Killed(BaseException):
    """The process died here."""


class Dying(Storage):
    """A storage that dies at its ``at``-th change: that call and every later one raise :class:`Killed`."""

    def __init__(self, inner: LocalStorage, at: int) -> None:
        self.inner, self.at, self.changes, self.dead = inner, at, 0, False
        self.url = inner.url

    def _alive(self, change: bool = False) -> None:
        if change:
            self.changes += 1
            self.dead = self.dead or self.changes >= self.at
        if self.dead:
            raise Killed

    @contextlib.contextmanager
    def writer(self, key):
        self._alive(change=True)
        with self.inner.writer(key) as out:
            yield out

    def delete(self, keys):
        failed = {}
        for key in keys:  # one change per key: the kill may fall between two deletes
            self._alive(change=True)
            failed.update(self.inner.delete([key]))
        return failed

    def open(self, key):
        self._alive()
        return self.inner.open(key)

    def list(self, prefix=""):
        self._alive()
        return self.inner.list(prefix)

    def check(self):
        self._alive()
        self.inner.check()


def populate(root, signed: bool) -> tuple[LocalStorage, WriteOptions]:
    """Two encrypted sets (one of two objects), an unencrypted one, two erasure requests; all to OLD."""
    storage = LocalStorage(str(root), create=True)
    signer = SIGNER if signed else None
    old = WriteOptions("zstd", recipients=(str(OLD.to_public()),), signer=signer)
    for kind, stems, options in (
        ("config", ("a", "b"), old),
        ("redis-rdb", ("rdb",), WriteOptions("none", recipients=old.recipients, signer=signer)),
        ("kafka-meta", ("b",), WriteOptions("gzip", signer=signer)),
    ):
        writer = SetWriter(storage, kind, "app", options)
        for stem in stems:
            with writer.object(stem) as out:
                out.write(CONTENT[stem])
        writer.commit({"stems": list(stems)})
    for number in (1, 2):
        request = erasure.new_request("dpo", f"ticket {number}", [], [f"user:{number}:*"], ticket=f"T{number}")
        erasure.record(storage, request, old)
    new = WriteOptions("zstd", recipients=(str(NEW.to_public()),), signer=signer)
    return storage, new


def run(storage: Storage, new: WriteOptions, trust) -> dict:
    """What backup_rekey does (module_utils part): plan every set, then carry it out."""
    plans = rekey.plan_sets(list_sets(storage, trust=trust), new, [str(OLD)])
    rekey.plan_ledger(storage, [str(OLD)], new, trust)
    return rekey.execute(storage, plans, [str(OLD)], new, trust, ledger=True)


def opens(storage: LocalStorage, bset, identity) -> bool:
    """Whether ``identity`` opens every object of the set, giving back exactly what was written."""
    try:
        for record in bset.manifest["objects"]:
            with fetch_object(storage, bset, record["stem"]) as copy, copy.reader([str(identity)]) as reader:
                assert reader.read() == CONTENT[record["stem"]], bset.prefix
    except EncryptionError:
        return False
    return True


def ledger_opens(storage: LocalStorage, identity, trust) -> bool:
    try:
        requests = erasure.read_ledger(storage, [str(identity)], trust)
    except EncryptionError:
        return False
    assert [r.reason for r in requests] == ["ticket 1", "ticket 2"]
    return True


@pytest.mark.parametrize("signed", [True, False], ids=["signed", "unsigned"])
def test_a_rekey_killed_at_any_change_leaves_every_set_readable_and_a_rerun_finishes(tmp_path, signed):
    trust = TRUST if signed else None
    at = 0
    while True:
        at += 1
        storage, new = populate(tmp_path / f"kill-{at}", signed)
        dying = Dying(storage, at)
        try:
            run(dying, new, trust)
        except Killed:
            pass
        else:
            break  # the run needed fewer changes than ``at``: every kill point was tried
        sets = list_sets(storage, trust=trust)
        assert [s.kind for s in sets if s.complete] == ["config", "kafka-meta", "redis-rdb"], (at, sets)
        for bset in sets:
            if bset.kind != "kafka-meta":
                assert opens(storage, bset, OLD) or opens(storage, bset, NEW), (at, bset.prefix)
        assert ledger_opens(storage, OLD, trust) or ledger_opens(storage, NEW, trust), at
        # A restore needs the ledger and the set with one identity: while sets are re-keyed both open it.
        if any(opens(storage, s, NEW) for s in sets if s.kind != "kafka-meta"):
            assert ledger_opens(storage, NEW, trust), at
        if any(opens(storage, s, OLD) for s in sets if s.kind != "kafka-meta"):
            assert ledger_opens(storage, OLD, trust), at

        finished = run(storage, new, trust)
        assert finished["not_deleted"] == {}
        check_rotated(storage, trust)
    assert at > 12, f"only {at - 1} changes: the kill points were not all reached"
    check_rotated(storage, trust)


def check_rotated(storage: LocalStorage, trust) -> None:
    """The old identity opens nothing, the new one everything; nothing but the listed objects is left."""
    sets = list_sets(storage, trust=trust)
    for bset in sets:
        if bset.kind == "kafka-meta":
            assert opens(storage, bset, OLD)  # not encrypted: left as it was
            continue
        assert opens(storage, bset, NEW) and not opens(storage, bset, OLD), bset.prefix
        listed = {f"{bset.prefix}/{r['name']}" for r in bset.manifest["objects"]}
        extra = {k for k in bset.keys if k not in listed and not k.endswith(("/manifest.json", ".sig"))}
        assert not extra, extra
        assert bset.manifest["rekeyed_at"]
        if trust:
            signature = storage.get_bytes(f"{bset.prefix}/manifest.json.sig")
            assert signature.count(b"BEGIN SSH SIGNATURE") == 1
    assert ledger_opens(storage, NEW, trust) and not ledger_opens(storage, OLD, trust)
    assert all(len(stored) == 1 for stored in erasure.entries(storage).values())


def test_a_second_run_changes_nothing_and_the_plan_says_why(tmp_path):
    storage, new = populate(tmp_path / "s", signed=False)
    first = run(storage, new, None)
    assert [s["kind"] for s in first["rekeyed"]] == ["config", "redis-rdb"]
    assert first["ledger"] == {"rekeyed": 2, "already": 0}
    plans = rekey.plan_sets(list_sets(storage), new, [str(OLD)])
    assert {p.bset.kind: (p.action, p.reason) for p in plans} == {
        "config": ("tidy", "already encrypted to the new recipients"),
        "redis-rdb": ("tidy", "already encrypted to the new recipients"),
        "kafka-meta": ("skip", "not encrypted"),
    }
    assert rekey.plan_ledger(storage, [str(OLD)], new, None) == {"rekeyed": 0, "already": 2}
    assert run(storage, new, None)["rekeyed"] == []


def test_refusals_come_before_anything_is_written(tmp_path):
    storage, new = populate(tmp_path / "s", signed=True)
    before = sorted(i.key for i in storage.list())
    with pytest.raises(ConfigurationError, match="include the public key of the old identity"):
        rekey.check_keys((str(OLD.to_public()), str(NEW.to_public())), [str(OLD)])
    with pytest.raises(ConfigurationError, match="give the new encryption_recipients"):
        rekey.check_keys((), [str(OLD)])
    with pytest.raises(ConfigurationError, match="give the old identity"):
        rekey.check_keys(new.recipients, [])
    unsigned = WriteOptions("zstd", recipients=new.recipients)
    with pytest.raises(ConfigurationError, match="is signed: give signing_key"):
        rekey.plan_sets(list_sets(storage), unsigned, [str(OLD)])
    with pytest.raises(ConfigurationError, match="erasure request .* is signed"):
        rekey.plan_ledger(storage, [str(OLD)], unsigned, None)
    with pytest.raises(EncryptionError, match="none of the given identities"):
        rekey.plan_sets(list_sets(storage), new, [str(NEW)])
    assert sorted(i.key for i in storage.list()) == before


def test_a_corrupted_object_fails_its_set_and_leaves_it_as_it_was(tmp_path):
    storage, new = populate(tmp_path / "s", signed=False)
    [config] = [s for s in list_sets(storage) if s.kind == "config"]
    path = tmp_path / "s" / config.prefix / config.manifest["objects"][1]["name"]
    data = bytearray(path.read_bytes())
    data[-5] ^= 1
    path.write_bytes(bytes(data))
    before = sorted(i.key for i in storage.list())
    with pytest.raises(IntegrityError, match="corrupted or truncated|does not match its manifest"):
        run(storage, new, None)
    after = {i.key for i in storage.list()}
    assert {k for k in before if k.startswith(config.prefix)} == {k for k in after if k.startswith(config.prefix)}
