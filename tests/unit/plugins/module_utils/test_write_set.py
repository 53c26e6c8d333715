"""catalog.write_set: one object, then the manifest; a failure leaves nothing behind."""

import pytest

from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets, write_set
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions


def test_write_set_commits_one_object_and_its_manifest(tmp_path):
    storage = LocalStorage(str(tmp_path))
    written = write_set(
        storage,
        "kafka-meta",
        "kafka-x",
        WriteOptions("gzip"),
        ["keep"],
        "doc.json",
        lambda out: out.write(b"{}"),
        {"n": 1},
    )
    [bset] = list_sets(storage, "kafka-meta")
    assert bset.complete and bset.facts == {"n": 1} and bset.tags == ["keep"]
    assert written == {
        "backup_id": bset.backup_id,
        "location": f"{storage.url}/{bset.prefix}",
        "stored_bytes": bset.record("doc.json")["size"],
    }


def test_write_set_leaves_nothing_when_writing_fails(tmp_path):
    storage = LocalStorage(str(tmp_path))

    def broken(out):
        out.write(b"partial")
        raise RuntimeError("source went away")

    with pytest.raises(RuntimeError, match="source went away"):
        write_set(storage, "config", "app", WriteOptions("zstd"), [], "config.tar", broken, {})
    assert list_sets(storage) == []
