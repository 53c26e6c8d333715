"""Copies of backup sets to a second location, and restores from the first location holding a set, on local storage."""

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    MANIFEST,
    SIGNATURE,
    SetWriter,
    check_stored,
    find_set,
    first_location,
    list_sets,
)
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
)
from ansible_collections.caas.backup.plugins.module_utils.copy import copy_sets, plan_copy, select
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

UTC = datetime.timezone.utc


def at(day):
    return datetime.datetime(2026, 2, day, 2, 0, 0, tzinfo=UTC)


def make_set(storage, day, source="app", kind="config", signer=None, commit=True):
    writer = SetWriter(storage, kind, source, WriteOptions("zstd", signer=signer), (), now=at(day))
    for stem in ("a.bin", "b.bin"):
        with writer.object(stem) as out:
            out.write(f"{stem} of day {day} ".encode() * 5000)
    if commit:
        writer.commit({}, finished_at=at(day))
    return writer.prefix


@pytest.fixture()
def stores(tmp_path):
    return LocalStorage(str(tmp_path / "primary"), create=True), LocalStorage(str(tmp_path / "second"), create=True)


def copy_all(source, dest, **selection):
    plan = plan_copy(source, dest, select(list_sets(source), **selection), list_sets(dest))
    return plan, *copy_sets(source, dest, plan)


def objects(storage):
    return {info.key: storage.get_bytes(info.key) for info in storage.list()}


def test_copy_is_byte_identical_then_skipped_and_an_unfinished_set_is_never_copied(stores):
    source, dest = stores
    done = [make_set(source, 1), make_set(source, 2, kind="redis-rdb")]
    make_set(source, 3, commit=False)  # still being written: no manifest
    plan, copied, failed = copy_all(source, dest)
    assert [c["set"] for c in copied] == done and failed == [] and plan.refused == []
    assert objects(dest) == {k: v for k, v in objects(source).items() if k.rpartition("/")[0] in done}
    again, copied, failed = copy_all(source, dest)
    assert failed == []
    assert copied == [] and [s.prefix for s in again.present] == done


def test_a_corrupted_object_fails_its_set_only_and_its_manifest_is_never_written(stores):
    source, dest = stores
    good, bad = make_set(source, 1), make_set(source, 2)
    [bset] = [s for s in list_sets(source) if s.prefix == bad]
    key = f"{bad}/{bset.record('b.bin')['name']}"
    data = bytearray(source.get_bytes(key))
    data[len(data) // 2] ^= 0x01
    source.put_bytes(key, bytes(data))
    plan, copied, failed = copy_all(source, dest)
    assert [c["set"] for c in copied] == [good]
    [failure] = failed
    assert failure["set"] == bad and key in failure["error"] and "sha256" in failure["error"]
    assert [k for k in objects(dest) if k.startswith(bad)] == [], "nothing of the bad set stays at the destination"
    assert [s.prefix for s in list_sets(dest) if s.complete] == [good]


def test_a_truncated_object_is_named_with_its_size(stores):
    source, dest = stores
    prefix = make_set(source, 1)
    [bset] = list_sets(source)
    key = f"{prefix}/{bset.record('a.bin')['name']}"
    source.put_bytes(key, source.get_bytes(key)[:-7])
    plan, copied, [failure] = copy_all(source, dest)
    assert copied == [] and key in failure["error"] and "truncated or replaced" in failure["error"]
    assert list(dest.list()) == []


def test_a_signed_manifest_stays_valid_at_the_destination(stores):
    source, dest = stores
    private = Ed25519PrivateKey.generate()
    signer = SigningKey(private)
    make_set(source, 1, signer=signer)
    copy_all(source, dest)
    trust = parse_trusted([signer.public_line("backup@caas")], "test")
    [copied] = list_sets(dest, trust=trust)
    assert copied.complete and copied.signer is not None
    assert f"{copied.prefix}/{SIGNATURE}" in copied.keys


def test_selection_newest_per_kind_and_source_and_since(stores):
    source, dest = stores
    sets = {(kind, day): make_set(source, day, kind=kind) for kind in ("config", "kafka-meta") for day in (1, 2, 3)}
    plan = plan_copy(source, dest, select(list_sets(source), newest=1), [])
    assert sorted(s.prefix for s in plan.to_copy) == sorted([sets["config", 3], sets["kafka-meta", 3]])
    plan = plan_copy(source, dest, select(list_sets(source), since=at(2)), [])
    assert {s.prefix for s in plan.to_copy} == {sets[k, d] for k in ("config", "kafka-meta") for d in (2, 3)}


def test_a_set_missing_data_at_the_destination_is_copied_again_and_a_broken_copy_replaced(stores):
    source, dest = stores
    prefix = make_set(source, 1)
    copy_all(source, dest)
    [bset] = list_sets(dest)
    dest.delete([f"{prefix}/{bset.record('b.bin')['name']}"])
    plan, copied, failed = copy_all(source, dest)
    assert [c["set"] for c in copied] == [prefix], "a manifest without all its data is not a copy"
    manifest = dest.get_bytes(f"{prefix}/{MANIFEST}")
    dest.put_bytes(f"{prefix}/{MANIFEST}", manifest.replace(b'"tags": []', b'"tags": ["x"]'))
    # The altered manifest no longer matches its digest: broken at the destination, so copied over again.
    plan, copied, failed = copy_all(source, dest)
    assert [c["set"] for c in copied] == [prefix]
    assert dest.get_bytes(f"{prefix}/{MANIFEST}") == manifest


def test_another_set_with_the_same_id_at_the_destination_is_refused_not_overwritten(stores):
    source, dest = stores
    prefix = make_set(source, 1)
    other = SetWriter(dest, "config", "app", WriteOptions("none"), (), now=at(1))
    other.backup_id = prefix.rpartition("/")[2]
    with other.object("a.bin") as out:
        out.write(b"something else")
    other.commit({}, finished_at=at(1))
    before = objects(dest)
    plan, copied, failed = copy_all(source, dest)
    assert copied == [] and failed == [] and [r["set"] for r in plan.refused] == [prefix]
    assert "holds a different set with this id" in plan.refused[0]["error"]
    assert objects(dest) == before


def test_a_damaged_source_manifest_is_refused_by_name(stores):
    source, dest = stores
    prefix = make_set(source, 1)
    source.put_bytes(f"{prefix}/{MANIFEST}", b"{not json")
    plan, copied, failed = copy_all(source, dest)
    assert copied == [] and failed == [] and [r["set"] for r in plan.refused] == [prefix]
    assert "not valid JSON" in plan.refused[0]["error"]


def test_check_stored_names_a_missing_or_resized_object(stores):
    source = stores[0]
    prefix = make_set(source, 1)
    [bset] = list_sets(source)
    check_stored(bset, source.url)
    key = f"{prefix}/{bset.record('a.bin')['name']}"
    source.put_bytes(key, b"short")
    with pytest.raises(IntegrityError, match="truncated or replaced"):
        check_stored(list_sets(source)[0], source.url)
    source.delete([key])
    with pytest.raises(IntegrityError, match=f"{key} is missing in {source.url}"):
        check_stored(list_sets(source)[0], source.url)


def test_first_location_skips_unreachable_and_lacking_locations_with_warnings(tmp_path, stores):
    primary, second = stores
    gone = LocalStorage(str(tmp_path / "gone"))
    prefix = make_set(second, 1)
    warnings = []
    found_in, bset = first_location([gone, primary, second], lambda s: find_set(s, "config"), warnings.append)
    assert found_in is second and bset.prefix == prefix
    assert len(warnings) == 2 and gone.url in warnings[0] and primary.url in warnings[1]
    with pytest.raises(NotFoundError, match="no storage location holds it complete") as failure:
        first_location([gone, primary], lambda s: find_set(s, "config"))
    assert gone.url in str(failure.value) and primary.url in str(failure.value)


def test_first_location_alone_raises_its_own_error_and_never_skips_a_configuration_error(stores):
    primary, second = stores
    with pytest.raises(NotFoundError) as alone:
        first_location([primary], lambda s: find_set(s, "config"))
    assert "no storage location" not in str(alone.value)
    make_set(primary, 1, source="a")
    make_set(primary, 1, source="b")
    make_set(second, 1)
    with pytest.raises(ConfigurationError, match="several sources"):
        first_location([primary, second], lambda s: find_set(s, "config"))
