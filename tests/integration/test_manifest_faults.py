"""Bit flips in a stored manifest, on file:// and S3, with and without signing keys: none goes unnoticed.

Seeded and bounded: the manifest's bytes are sorted into classes (object keys,
string values, the recorded digest, numbers, literals, structure, whitespace),
a few positions of each class are flipped, preferring a bit that leaves the
manifest valid JSON (the case a JSON parser alone misses). Each flip must make
the set broken, so that restore refuses it by id, falls back past it, and
backup_verify fails it.
"""

import io
import json
import random
import re
import tarfile

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from harness import module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    MANIFEST,
    SetWriter,
    find_set,
    latest,
    list_sets,
)
from ansible_collections.caas.backup.plugins.module_utils.common import NotFoundError
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

SEED = 20260221
PER_CLASS = 5
_TOKEN = re.compile(
    r'(?P<string>"(?:[^"\\]|\\.)*")|(?P<number>-?\d+(?:\.\d+)?(?:[eE][+-]?\d+)?)'
    r"|(?P<literal>true|false|null)|(?P<structure>[{}\[\],:])|(?P<whitespace>\s+)"
)


def byte_classes(text: str) -> dict[str, list[int]]:
    """Every byte position of a JSON document, by class."""
    classes: dict[str, list[int]] = {}
    position = 0
    while position < len(text):
        match = _TOKEN.match(text, position)
        assert match, f"untokenizable manifest at {position}"
        kind = match.lastgroup
        if kind == "string":
            after = text[match.end() :].lstrip()
            if after.startswith(":"):
                kind = "key"
            elif text[:position].rstrip().endswith('"manifest_sha256":'):
                kind = "digest"
        if kind in ("key", "string", "digest"):  # the quotes are structure; the class is what is between them
            classes.setdefault("structure", []).extend((match.start(), match.end() - 1))
            classes.setdefault(kind, []).extend(range(match.start() + 1, match.end() - 1))
        else:
            classes.setdefault(kind, []).extend(range(match.start(), match.end()))
        position = match.end()
    return classes


def flips(data: bytes, rng: random.Random) -> list[tuple[str, int, bytes]]:
    """(class, position, damaged manifest) for PER_CLASS positions of each class; valid JSON kept where a bit allows."""
    out = []
    for kind, positions in sorted(byte_classes(data.decode()).items()):
        for position in rng.sample(positions, min(PER_CLASS, len(positions))):
            bits = rng.sample(range(8), 8)
            candidates = [bytearray(data) for bit in bits]
            for damaged, bit in zip(candidates, bits, strict=True):
                damaged[position] ^= 1 << bit
            valid = [bytes(d) for d in candidates if _is_json(bytes(d))]
            out.append((kind, position, valid[0] if valid else bytes(candidates[0])))
    return out


def _is_json(data: bytes) -> bool:
    try:
        json.loads(data)
    except ValueError:
        return False
    return True


def write_set(storage, signer, facts):
    """A config set whose archive holds the files ``facts`` names (so backup_verify passes it when intact)."""
    archive = io.BytesIO()
    with tarfile.open(fileobj=archive, mode="w") as tar:
        for name in facts["names"]:
            info = tarfile.TarInfo(name)
            info.size = 8
            tar.addfile(info, io.BytesIO(b"payload\n"))
    writer = SetWriter(storage, "config", "app", WriteOptions("none", signer=signer))
    with writer.object("config.tar") as out:
        out.write(archive.getvalue())
    writer.commit(facts)
    return writer


@pytest.fixture(params=["file", "s3"])
def storage(request, tmp_path, svc):
    if request.param == "file":
        return LocalStorage(str(tmp_path / "store"))
    url = f"s3://{svc['CAAS_S3_BUCKET']}/{request.node.name.replace('[', '-').replace(']', '')}"
    return s3_storage(svc, url)


@pytest.mark.parametrize("signed", [False, True], ids=["digest only", "signed"])
def test_every_class_of_manifest_bit_flip_is_caught(storage, svc, signed):
    key = SigningKey(Ed25519PrivateKey.generate()) if signed else None
    trust = parse_trusted([key.public_line("backup")], "trusted_signers") if signed else None
    facts = {"files": 12, "bytes": 80812, "names": ["app.yml", "tls.key"], "gzip": False, "note": None}
    older = write_set(storage, key, facts)
    newest = write_set(storage, key, facts)
    manifest_key = f"{newest.prefix}/{MANIFEST}"
    original = storage.get_bytes(manifest_key)
    damage = flips(original, random.Random(SEED))
    kinds = {d[0] for d in damage}
    assert kinds == {"key", "string", "digest", "number", "literal", "structure", "whitespace"}
    # every flip inside a key, string, digest or number keeps the manifest valid JSON here
    assert sum(_is_json(d[2]) for d in damage) >= 4 * PER_CLASS
    missed = []
    for kind, position, damaged in damage:
        storage.put_bytes(manifest_key, damaged)
        bset = next(s for s in list_sets(storage, "config", trust=trust) if s.backup_id == newest.backup_id)
        if bset.complete or not bset.error:
            missed.append((kind, position))
            continue
        with pytest.raises(NotFoundError, match=f"backup {re.escape(newest.prefix)} is incomplete"):
            find_set(storage, "config", newest.backup_id, trust=trust)
        warned = []
        assert latest(storage, "config", trust=trust, warn=warned.append).backup_id == older.backup_id
        assert len(warned) == 1 and newest.prefix in warned[0]
    assert missed == []

    # The module sees it too: backup_verify without backup_id fails the set, with its error, and passes the older one.
    kind, damaged = next((d[0], d[2]) for d in reversed(damage) if _is_json(d[2]))
    storage.put_bytes(manifest_key, damaged)
    args = {"storage_url": storage.url}
    if signed:
        args["trusted_signers"] = [key.public_line("backup")]
    verified = run_module("backup_verify", args, module_env(svc))
    assert verified["rc"] == 1 and verified["failed"] == 1 and verified["verified"] == 1
    assert f"first {newest.prefix}: manifest " in verified["msg"], (kind, verified["msg"])

    storage.put_bytes(manifest_key, original)
    assert run_module("backup_verify", args, module_env(svc))["rc"] == 0
