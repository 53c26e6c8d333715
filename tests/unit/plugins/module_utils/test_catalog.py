"""Backup ids, manifests and the catalog, on a local directory storage."""

import datetime
import json
import re

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    MANIFEST,
    SIGNATURE,
    SetWriter,
    backup_id_time,
    fetch_object,
    find_set,
    get_set,
    latest,
    list_sets,
    manifest_digest,
    new_backup_id,
    parse_time,
)
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    StorageError,
)
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage, open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

UTC = datetime.timezone.utc


def at(day, hour=2):
    return datetime.datetime(2026, 2, day, hour, 0, 0, tzinfo=UTC)


def make_set(storage, when, source="app", kind="config", payload=b"payload", tags=(), commit=True, signer=None):
    writer = SetWriter(storage, kind, source, WriteOptions("zstd", signer=signer), tags, now=when)
    with writer.object("data.bin") as out:
        out.write(payload)
    if commit:
        writer.commit({"answer": 42}, finished_at=when + datetime.timedelta(minutes=5))
    return writer


@pytest.fixture()
def storage(tmp_path):
    return LocalStorage(str(tmp_path / "store"))


def test_backup_id_format_sorts_by_time():
    ids = [new_backup_id(at(d)) for d in (3, 1, 2)]
    assert all(re.match(r"^\d{8}T\d{6}\.\d{3}Z-[0-9a-f]{4}$", i) for i in ids)
    assert sorted(ids) == [ids[1], ids[2], ids[0]]
    assert backup_id_time(ids[0]) == at(3)


def test_backup_ids_made_within_one_second_keep_their_order():
    second = datetime.datetime(2026, 2, 21, 2, 0, 0, tzinfo=UTC)
    moments = [second.replace(microsecond=ms * 1000) for ms in (999, 5, 412)]
    ids = [new_backup_id(m) for m in moments]
    assert ids[1].startswith("20260221T020000.005Z-")
    assert sorted(ids) == [ids[1], ids[2], ids[0]]
    assert [backup_id_time(i) for i in ids] == moments
    assert new_backup_id(second.replace(second=1)) > ids[0]


def test_backup_ids_of_the_first_release_still_parse():
    assert backup_id_time("20260221T020000Z-3f9a") == datetime.datetime(2026, 2, 21, 2, tzinfo=UTC)
    with pytest.raises(ConfigurationError, match="is not a backup id"):
        backup_id_time("20260221T020000.41Z-3f9a")


@pytest.mark.parametrize(
    "text,expected",
    [
        ("2026-02-21T10:30:00Z", datetime.datetime(2026, 2, 21, 10, 30, tzinfo=UTC)),
        ("2026-02-21T12:30:00+02:00", datetime.datetime(2026, 2, 21, 10, 30, tzinfo=UTC)),
        ("2026-02-21T10:30:00", datetime.datetime(2026, 2, 21, 10, 30, tzinfo=UTC)),
    ],
)
def test_parse_time(text, expected):
    assert parse_time(text) == expected


def test_parse_time_rejects_garbage():
    with pytest.raises(ConfigurationError, match="not an ISO 8601 time"):
        parse_time("yesterday")


def test_manifest_is_written_last_and_describes_the_set(storage):
    writer = make_set(storage, at(1), tags=["keep"])
    manifest = json.loads(storage.get_bytes(f"{writer.prefix}/{MANIFEST}"))
    assert manifest["format_version"] == 2
    assert manifest["manifest_sha256"] == manifest_digest(manifest)
    assert manifest["kind"] == "config" and manifest["source"] == "app"
    assert manifest["tags"] == ["keep"]
    assert manifest["facts"] == {"answer": 42}
    assert manifest["started_at"] == "2026-02-01T02:00:00Z"
    [record] = manifest["objects"]
    assert record["name"] == "data.bin.zst" and record["stem"] == "data.bin"
    assert record["raw_size"] == len(b"payload") and len(record["sha256"]) == 64


def test_set_without_manifest_is_listed_but_never_restorable(storage):
    make_set(storage, at(1))
    partial = make_set(storage, at(2), commit=False)
    sets = list_sets(storage, "config")
    assert [s.complete for s in sets] == [True, False]
    assert latest(storage, "config").time == at(1) + datetime.timedelta(minutes=5)
    with pytest.raises(NotFoundError, match="incomplete"):
        get_set(storage, "config", partial.backup_id)


def test_latest_before_a_time(storage):
    for day in (1, 2, 3):
        make_set(storage, at(day))
    assert latest(storage, "config", before=at(2, 12)).time.day == 2
    with pytest.raises(NotFoundError, match="at or before 2026-01-01T00:00:00Z"):
        latest(storage, "config", before=datetime.datetime(2026, 1, 1, tzinfo=UTC))


def test_latest_needs_a_source_when_several_exist(storage):
    make_set(storage, at(1), source="a")
    make_set(storage, at(1), source="b")
    with pytest.raises(ConfigurationError, match=r"several sources .*\(a, b\)"):
        latest(storage, "config")
    assert latest(storage, "config", "b").source == "b"


def test_unknown_backup_id_is_not_found(storage):
    make_set(storage, at(1))
    with pytest.raises(NotFoundError, match="no config backup 20200101T000000Z-0000"):
        find_set(storage, "config", "20200101T000000Z-0000")
    with pytest.raises(ConfigurationError, match="is not a backup id"):
        find_set(storage, "config", "latest-ish")


def test_empty_storage_says_what_is_missing(storage):
    storage.put_bytes("README", b"")
    with pytest.raises(NotFoundError, match="no complete config backup in file://"):
        latest(storage, "config")


def test_manifest_from_a_newer_version_is_not_restorable(storage):
    writer = make_set(storage, at(1))
    key = f"{writer.prefix}/{MANIFEST}"
    manifest = json.loads(storage.get_bytes(key))
    manifest["format_version"] = 99
    storage.put_bytes(key, json.dumps(manifest).encode())
    [bset] = list_sets(storage, "config")
    assert not bset.complete and "newer" in bset.error


def test_unreadable_manifest_is_reported(storage):
    writer = make_set(storage, at(1))
    storage.put_bytes(f"{writer.prefix}/{MANIFEST}", b"{not json")
    [bset] = list_sets(storage, "config")
    assert not bset.complete and "not valid JSON" in bset.error


def test_fetch_object_round_trip_and_rereads(storage):
    make_set(storage, at(1), payload=b"hello world")
    bset = latest(storage, "config")
    with fetch_object(storage, bset, "data.bin") as copy:
        assert copy.reader([]).read() == b"hello world"
        assert copy.reader([]).read() == b"hello world"


@pytest.mark.parametrize(
    "damage,message",
    [
        (lambda b: b[:-3], "truncated or replaced"),
        (lambda b: b[:-1] + bytes([b[-1] ^ 1]), "corrupted"),
    ],
)
def test_fetch_object_detects_damage_before_returning(storage, tmp_path, damage, message):
    writer = make_set(storage, at(1), payload=b"x" * 1000)
    path = tmp_path / "store" / writer.prefix / "data.bin.zst"
    path.write_bytes(damage(path.read_bytes()))
    with pytest.raises(IntegrityError, match=message), fetch_object(storage, latest(storage, "config"), "data.bin"):
        pytest.fail("a damaged object must not be handed out")


def test_invalid_source_and_kind_are_refused(storage):
    with pytest.raises(ConfigurationError, match="source_name"):
        SetWriter(storage, "config", "a/b", WriteOptions())
    with pytest.raises(ConfigurationError, match="unknown backup kind"):
        SetWriter(storage, "mysql", "a", WriteOptions())


@pytest.mark.parametrize(
    "url,message",
    [
        ("relative/dir", "absolute path"),
        ("file://host/dir", "absolute path"),
        ("s3://", "names no bucket"),
        ("ftp://x/y", "use file:///path or s3://bucket/prefix"),
    ],
)
def test_open_storage_rejects_bad_urls(url, message):
    with pytest.raises(ConfigurationError, match=message):
        open_storage(url)


def test_local_storage_writes_atomically(storage, tmp_path):
    with pytest.raises(RuntimeError), storage.writer("config/a/x") as out:
        out.write(b"half")
        raise RuntimeError("killed")
    assert list(storage.list("")) == []
    assert not any(p.is_file() for p in (tmp_path / "store").rglob("*"))


def test_set_writer_leaves_nothing_behind_when_its_block_fails(storage):
    with pytest.raises(RuntimeError, match="source died"), SetWriter(storage, "config", "app", WriteOptions()) as w:
        with w.object("data.bin") as out:
            out.write(b"written")
        raise RuntimeError("source died")
    assert list(storage.list("")) == []


def test_set_writer_result_names_the_set(storage):
    with SetWriter(storage, "config", "app", WriteOptions("none")) as writer:
        with writer.object("data.bin") as out:
            out.write(b"12345")
        writer.commit({})
    assert writer.result() == {
        "backup_id": writer.backup_id,
        "location": f"{storage.url}/{writer.prefix}",
        "stored_bytes": 5,
    }


BACKUP_KEY = SigningKey(Ed25519PrivateKey.generate())
TRUST = parse_trusted([BACKUP_KEY.public_line("backup@caas")], "trusted_signers")


def flip(storage, key, old, new):
    """Rewrite one stored object with ``old`` replaced by ``new`` (still valid JSON)."""
    data = storage.get_bytes(key)
    assert data.count(old) == 1
    storage.put_bytes(key, data.replace(old, new))


def test_a_manifest_that_stays_valid_json_but_changed_is_not_complete(storage):
    writer = make_set(storage, at(1))
    flip(storage, f"{writer.prefix}/{MANIFEST}", b'"answer": 42', b'"answer": 43')
    [bset] = list_sets(storage, "config")
    assert not bset.complete and bset.broken
    assert bset.error == "manifest does not match its manifest_sha256: damaged or altered"
    with pytest.raises(NotFoundError, match=r"is incomplete \(manifest does not match its manifest_sha256"):
        get_set(storage, "config", writer.backup_id)


def test_a_format_2_manifest_without_its_digest_is_not_complete(storage):
    writer = make_set(storage, at(1))
    flip(storage, f"{writer.prefix}/{MANIFEST}", b'"manifest_sha256"', b'"manifest_sha257"')
    [bset] = list_sets(storage, "config")
    assert bset.error == "manifest (format_version 2) has no manifest_sha256: damaged or altered"


def test_format_1_manifests_without_a_digest_still_read(storage):
    writer = make_set(storage, at(1))
    key = f"{writer.prefix}/{MANIFEST}"
    manifest = json.loads(storage.get_bytes(key))
    del manifest["manifest_sha256"]
    manifest["format_version"] = 1
    storage.put_bytes(key, json.dumps(manifest, indent=1).encode())
    [bset] = list_sets(storage, "config")
    assert bset.complete and bset.error is None and bset.facts == {"answer": 42}


class RecordingStorage(LocalStorage):
    """A real local storage that remembers the order of its writes, and can refuse one key."""

    def __init__(self, root, refuse=None):
        super().__init__(root)
        self.puts, self.refuse = [], refuse

    def put_bytes(self, key, data):
        if self.refuse and key.endswith(self.refuse):
            raise StorageError(f"write of {key} refused")
        self.puts.append(key.rsplit("/", 1)[-1])
        return super().put_bytes(key, data)


def test_signature_is_written_before_the_manifest_and_verifies(tmp_path):
    storage = RecordingStorage(str(tmp_path / "store"))
    make_set(storage, at(1), signer=BACKUP_KEY)
    assert storage.puts == [SIGNATURE, MANIFEST]
    [bset] = list_sets(storage, "config", trust=TRUST)
    assert bset.complete and bset.signer.label == f"{BACKUP_KEY.fingerprint} (backup@caas)"
    assert bset.summary()["signed_by"] == bset.signer.label
    [unchecked] = list_sets(storage, "config")
    assert unchecked.complete and unchecked.signer is None


def test_a_failed_manifest_write_leaves_no_signature_behind(tmp_path):
    storage = RecordingStorage(str(tmp_path / "store"), refuse=MANIFEST)
    with pytest.raises(StorageError), SetWriter(storage, "config", "app", WriteOptions(signer=BACKUP_KEY)) as writer:
        with writer.object("data.bin") as out:
            out.write(b"x")
        writer.commit({})
    assert list(storage.list("")) == []


@pytest.mark.parametrize(
    "signer,message",
    [
        (None, "manifest is not signed (no manifest.json.sig) and trusted_signers are given"),
        (SigningKey(Ed25519PrivateKey.generate()), "manifest signature is not valid: it is made by SHA256:"),
    ],
)
def test_with_trusted_signers_unsigned_or_foreign_sets_are_not_complete(storage, signer, message):
    writer = make_set(storage, at(1), signer=signer)
    [bset] = list_sets(storage, "config", trust=TRUST)
    assert not bset.complete and bset.error.startswith(message)
    with pytest.raises(NotFoundError, match=re.escape(f"backup {writer.prefix} is incomplete ({message}")):
        find_set(storage, "config", writer.backup_id, trust=TRUST)


def test_a_resigned_manifest_changed_after_signing_is_refused(storage):
    """The digest is recomputed by the forger, so only the signature catches it."""
    writer = make_set(storage, at(1), signer=BACKUP_KEY)
    key = f"{writer.prefix}/{MANIFEST}"
    manifest = json.loads(storage.get_bytes(key))
    manifest["facts"] = {"answer": 43}
    manifest["manifest_sha256"] = manifest_digest(manifest)
    storage.put_bytes(key, json.dumps(manifest, indent=1, sort_keys=True).encode())
    assert list_sets(storage, "config")[0].complete
    [bset] = list_sets(storage, "config", trust=TRUST)
    assert bset.error == (
        f"manifest signature is not valid: it does not match the signed data (key {TRUST[0].label}): tampered"
    )


def test_latest_falls_back_past_broken_sets_and_says_so(storage):
    good = make_set(storage, at(1))
    bad = make_set(storage, at(2))
    flip(storage, f"{bad.prefix}/{MANIFEST}", b'"answer": 42', b'"answer": 40')
    make_set(storage, at(3), commit=False)  # in progress, not broken: no warning for it
    warnings = []
    assert latest(storage, "config", warn=warnings.append).backup_id == good.backup_id
    assert warnings == [
        f"restoring {good.prefix}, not the 1 newer broken set(s): {bad.prefix}: "
        "manifest does not match its manifest_sha256: damaged or altered"
    ]
    warnings.clear()
    assert find_set(storage, "config", before=at(1, 12), warn=warnings.append).backup_id == good.backup_id
    assert warnings == []


def test_no_complete_set_says_why_the_broken_ones_are_not(storage):
    bad = make_set(storage, at(2), signer=SigningKey(Ed25519PrivateKey.generate()))
    with pytest.raises(NotFoundError, match=re.escape(f"(1 broken, the newest {bad.prefix}: manifest signature")):
        latest(storage, "config", trust=TRUST)


def test_latest_for_an_unknown_source_names_the_sources_that_have_backups(storage):
    """A restore on a new host whose source name does not match is told which names exist (DR onto new hosts)."""
    make_set(storage, at(1), source="app02")
    make_set(storage, at(2), source="app01")
    make_set(storage, at(3), source="half", commit=False)  # incomplete: not a source a restore could use
    make_set(storage, at(1), source="db", kind="redis-rdb")  # another kind: not listed
    with pytest.raises(NotFoundError) as raised:
        latest(storage, "config", "dr-app")
    assert str(raised.value) == (
        f"no complete config backup for source dr-app in {storage.url}; sources with config backups: app01, app02"
    )
    with pytest.raises(NotFoundError, match=r"for source app01 at or before .*; sources with config backups: app01"):
        latest(storage, "config", "app01", before=at(1))


def test_get_set_for_an_unknown_source_names_the_sources_that_have_backups(storage):
    known = make_set(storage, at(1), source="app01")
    with pytest.raises(NotFoundError) as raised:
        get_set(storage, "config", known.backup_id, "dr-app")
    assert str(raised.value) == (
        f"no config backup {known.backup_id} for source dr-app in {storage.url}; sources with config backups: app01"
    )


def test_not_found_on_a_storage_without_the_kind_says_no_source_has_it(storage):
    make_set(storage, at(1), source="app01")
    with pytest.raises(NotFoundError, match=r"for source cache01 .*; no source has complete redis-rdb"):
        latest(storage, "redis-rdb", "cache01")
