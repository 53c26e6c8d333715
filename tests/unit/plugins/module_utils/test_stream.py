"""The stream pipeline: round trips, stock-tool compatibility, and clear errors."""

import gzip
import io
import os
import random
import shutil
import subprocess

import pytest
import zstandard
from pyrage import x25519

from ansible_collections.caas.backup.plugins.module_utils.common import EncryptionError, IntegrityError
from ansible_collections.caas.backup.plugins.module_utils.stream import (
    ObjectReader,
    ObjectWriter,
    WriteOptions,
    copy_hashed,
    recipient_fingerprint,
)

IDENTITY = x25519.Identity.generate()
RECIPIENT = str(IDENTITY.to_public())
DATA = os.urandom(300_000) + b"compressible " * 200_000


def write(data: bytes, options: WriteOptions) -> tuple[bytes, dict]:
    sink = io.BytesIO()
    with ObjectWriter(sink, options) as out:
        for start in range(0, len(data), 65536):
            out.write(data[start : start + 65536])
    return sink.getvalue(), out.record


def read(stored: bytes, record: dict, identities=(str(IDENTITY),)) -> bytes:
    with ObjectReader(io.BytesIO(stored), record, list(identities), "obj") as reader:
        return reader.read()


@pytest.mark.parametrize("compression", ["zstd", "gzip", "none"])
@pytest.mark.parametrize("encrypted", [False, True])
def test_round_trip(compression, encrypted):
    options = WriteOptions(compression, recipients=(RECIPIENT,) if encrypted else ())
    stored, record = write(DATA, options)
    assert record["raw_size"] == len(DATA)
    assert record["size"] == len(stored)
    assert record["sha256"] == copy_hashed(io.BytesIO(stored), None)[1]
    assert record["compression"] == compression
    assert (record["encryption"] is not None) == encrypted
    assert read(stored, record) == DATA
    if compression != "none":
        assert len(stored) < len(DATA)


def test_manifest_record_names_recipient_fingerprint_not_key():
    record = write(b"x", WriteOptions("zstd", recipients=(RECIPIENT,)))[1]
    assert record["encryption"] == {"format": "age", "recipients": [recipient_fingerprint(RECIPIENT)]}
    assert RECIPIENT not in repr(record) and str(IDENTITY) not in repr(record)


def test_plain_formats_open_with_the_standard_libraries():
    stored = write(DATA, WriteOptions("gzip"))[0]
    assert gzip.decompress(stored) == DATA
    stored = write(DATA, WriteOptions("zstd"))[0]
    assert zstandard.ZstdDecompressor().stream_reader(io.BytesIO(stored)).read() == DATA


def test_stock_age_and_zstd_open_an_encrypted_object(tmp_path):
    """`age -d -i key | zstd -d` is the disaster path without this collection."""
    for tool in ("age", "zstd"):
        assert shutil.which(tool), f"{tool} must be installed (make venv installs it)"
    stored = write(DATA, WriteOptions("zstd", recipients=(RECIPIENT,)))[0]
    (tmp_path / "obj.zst.age").write_bytes(stored)
    key = tmp_path / "key.txt"
    key.write_text(str(IDENTITY) + "\n")
    key.chmod(0o600)
    age = subprocess.run(["age", "-d", "-i", str(key), str(tmp_path / "obj.zst.age")], capture_output=True, check=True)
    plain = subprocess.run(["zstd", "-dc"], input=age.stdout, capture_output=True, check=True)
    assert plain.stdout == DATA


def test_stock_age_encrypted_object_reads_back(tmp_path):
    assert shutil.which("age")
    src = tmp_path / "plain"
    src.write_bytes(DATA)
    out = subprocess.run(["age", "-r", RECIPIENT, str(src)], capture_output=True, check=True).stdout
    record = {"compression": "none", "encryption": {"format": "age"}}
    assert read(out, record) == DATA


def test_wrong_identity_is_a_clear_error():
    stored, record = write(DATA, WriteOptions("zstd", recipients=(RECIPIENT,)))
    other = str(x25519.Identity.generate())
    with pytest.raises(EncryptionError, match="none of the given identities can decrypt obj"):
        read(stored, record, [other])


def test_tampered_age_header_is_corruption_not_a_wrong_key():
    """Every byte of the header flipped (one seeded bit each): corruption with the right key, wrong key without it."""
    stored, record = write(b"abc" * 100, WriteOptions("none", recipients=(RECIPIENT,)))
    header_end = stored.index(b"\n---") + stored[stored.index(b"\n---") + 1 :].index(b"\n") + 2
    rng = random.Random(11)
    for position in range(header_end):
        damaged = bytearray(stored)
        damaged[position] ^= 1 << rng.randrange(8)
        with pytest.raises(IntegrityError, match=r"^age header of obj is corrupted \("):
            read(bytes(damaged), record)
    other = str(x25519.Identity.generate())
    with pytest.raises(EncryptionError, match="none of the given identities can decrypt obj"):
        read(stored, record, [other])


def test_missing_identity_is_a_clear_error():
    stored, record = write(b"abc", WriteOptions("zstd", recipients=(RECIPIENT,)))
    with pytest.raises(EncryptionError, match="is encrypted: give encryption_identity"):
        read(stored, record, [])


def test_invalid_identity_error_never_quotes_the_key():
    bad = "AGE-SECRET-KEY-1NOTAVALIDKEYATALL"
    with pytest.raises(EncryptionError) as info:
        read(b"", {"compression": "none", "encryption": {"format": "age"}}, [bad])
    assert bad not in str(info.value)
    assert "not a valid age X25519 identity" in str(info.value)


def test_invalid_recipient_is_a_clear_error():
    with pytest.raises(EncryptionError, match="invalid age recipient 'age1nope'"):
        write(b"abc", WriteOptions("zstd", recipients=("age1nope",)))


@pytest.mark.parametrize("compression", ["zstd", "gzip"])
def test_corrupted_compressed_stream_raises_integrity_error(compression):
    stored, record = write(DATA, WriteOptions(compression))
    broken = bytearray(stored)
    broken[len(broken) // 2] ^= 0xFF
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        read(bytes(broken), record)


def test_truncated_encrypted_stream_raises_integrity_error():
    stored, record = write(DATA, WriteOptions("none", recipients=(RECIPIENT,)))
    with pytest.raises(IntegrityError, match="corrupted or truncated"):
        read(stored[: len(stored) // 2], record)


def test_copy_hashed_detects_size_and_hash_mismatch():
    with pytest.raises(IntegrityError, match="is 3 bytes but its manifest says 4"):
        copy_hashed(io.BytesIO(b"abc"), None, expected_size=4, name="k")
    with pytest.raises(IntegrityError, match="corrupted"):
        copy_hashed(io.BytesIO(b"abc"), None, expected_sha256="0" * 64, name="k")


def test_failing_sink_surfaces_its_own_error_through_encryption():
    class Broken:
        def write(self, data):
            raise OSError("disk full")

    with (
        pytest.raises(OSError, match="disk full"),
        ObjectWriter(Broken(), WriteOptions("none", recipients=(RECIPIENT,))) as out,
    ):
        for _chunk in range(100):
            out.write(b"x" * 65536)
