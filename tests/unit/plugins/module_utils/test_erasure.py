"""The erasure ledger (erasure.py): requests checked, stored encrypted and signed, read back or refused."""

from __future__ import annotations

import datetime

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from pyrage import x25519

from ansible_collections.caas.backup.plugins.module_utils import erasure
from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    EncryptionError,
    IntegrityError,
)
from ansible_collections.caas.backup.plugins.module_utils.signing import SigningKey, parse_trusted
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

KEY = x25519.Identity.generate()
OTHER = x25519.Identity.generate()
SIGNER = SigningKey(Ed25519PrivateKey.generate())
TRUST = parse_trusted([SIGNER.public_line()], "test")
WHEN = datetime.datetime(2026, 3, 1, 10, 15, tzinfo=datetime.timezone.utc)


def request(ticket="GDPR-42", **more):
    args = dict(
        mongodb=[{"namespace": "caas_auth.users", "filter": {"_id": 42}}],
        redis=["session:42:*", {"pattern": "profile:42", "db": 1}],
    )
    args.update(more)
    return erasure.new_request("dpo@example.com", "Art. 17, ticket GDPR-42", ticket=ticket, now=WHEN, **args)


@pytest.mark.parametrize(
    ("mongodb", "redis", "message"),
    [
        ([{"namespace": "caas_auth.users", "filter": {}}], [], "non-empty mapping"),
        ([{"namespace": "caas_auth.users"}], [], "non-empty mapping"),
        ([{"namespace": "users", "filter": {"_id": 1}}], [], "db.collection"),
        ([{"namespace": "admin.system.users", "filter": {"_id": 1}}], [], "not a system collection"),
        ([{"namespace": "a.b", "filter": "{not json"}], [], "not valid JSON"),
        ([{"namespace": "a.b", "filter": {"_id": 1}, "drop": True}], [], "mapping of namespace and filter"),
        ([], ["*"], "wildcards only"),
        ([], ["**?"], "wildcards only"),
        ([], [{"pattern": "a:*", "db": "zero"}], "database number"),
        ([], [5], "key pattern or a mapping"),
        ([], [], "give mongodb"),
    ],
)
def test_requests_that_would_erase_too_much_or_nothing_are_refused(mongodb, redis, message):
    with pytest.raises(ConfigurationError, match=message):
        erasure.new_request("dpo", "reason", mongodb, redis)


def test_who_and_why_are_required_and_the_id_is_time_and_ticket():
    with pytest.raises(ConfigurationError, match="requested_by"):
        erasure.new_request(" ", "reason", [], ["a:*"])
    with pytest.raises(ConfigurationError, match="reason"):
        erasure.new_request("dpo", "", [], ["a:*"])
    with pytest.raises(ConfigurationError, match="request_id may hold only"):
        request(ticket="a/b")
    made = request(mongodb=[{"namespace": "a.b", "filter": '{"_id": {"$oid": "65f0c0ffee0000000000002a"}}'}])
    assert made.request_id == "20260301T101500Z-GDPR-42" and made.requested_at == "2026-03-01T10:15:00Z"
    assert made.mongodb == ({"namespace": "a.b", "filter": {"_id": {"$oid": "65f0c0ffee0000000000002a"}}},)
    assert made.redis == ({"pattern": "session:42:*"}, {"pattern": "profile:42", "db": 1})
    assert made.summary()["mongodb_namespaces"] == ["a.b"] and "filter" not in str(made.summary())


def test_a_request_round_trips_encrypted_and_signed(tmp_path):
    storage = LocalStorage(str(tmp_path))
    options = WriteOptions("zstd", recipients=(str(KEY.to_public()),), signer=SIGNER)
    key = erasure.record(storage, request(), options)
    assert key == erasure.entry_key("20260301T101500Z-GDPR-42", options.recipients) and key.endswith(".json.age")
    stored = (tmp_path / key).read_bytes()
    assert stored.startswith(b"age-encryption.org/v1") and b"caas_auth" not in stored
    assert (tmp_path / f"{key}.sig").read_bytes().startswith(b"-----BEGIN SSH SIGNATURE-----")
    [read] = erasure.read_ledger(storage, [str(KEY)], TRUST)
    assert read == request()
    with pytest.raises(EncryptionError, match="erasure ledger cannot be read .*none of the given identities"):
        erasure.read_ledger(storage, [str(OTHER)])
    with pytest.raises(EncryptionError, match="is encrypted: give encryption_identity"):
        erasure.read_ledger(storage, [])


def test_unsigned_or_forged_requests_are_refused_given_trusted_signers(tmp_path):
    storage = LocalStorage(str(tmp_path))
    options = WriteOptions("none", recipients=(str(KEY.to_public()),))
    key = erasure.record(storage, request(), options)
    assert len(erasure.read_ledger(storage, [str(KEY)])) == 1  # nothing to check signatures against
    with pytest.raises(IntegrityError, match="is not signed"):
        erasure.read_ledger(storage, [str(KEY)], TRUST)
    forger = SigningKey(Ed25519PrivateKey.generate())
    (tmp_path / f"{key}.sig").write_text(forger.sign((tmp_path / key).read_bytes()))
    with pytest.raises(IntegrityError, match="not a trusted signer"):
        erasure.read_ledger(storage, [str(KEY)], TRUST)


def test_a_damaged_request_fails_and_a_request_stored_twice_needs_one_readable_copy(tmp_path):
    storage = LocalStorage(str(tmp_path))
    mine = WriteOptions("none", recipients=(str(KEY.to_public()),))
    theirs = WriteOptions("none", recipients=(str(OTHER.to_public()),))
    erasure.record(storage, request(), mine)
    erasure.record(storage, request(), theirs)  # as a re-key between its two writes leaves it
    assert [r.request_id for r in erasure.read_ledger(storage, [str(KEY)])] == ["20260301T101500Z-GDPR-42"]
    assert [r.request_id for r in erasure.read_ledger(storage, [str(OTHER)])] == ["20260301T101500Z-GDPR-42"]
    plain = erasure.record(storage, request(ticket="T2"), WriteOptions("none"))
    assert plain.endswith(".plain.json")
    (tmp_path / plain).write_text('{"format_version": 1, "request_id": "x"}')
    with pytest.raises(IntegrityError, match="not a valid erasure request"):
        erasure.read_ledger(storage, [str(KEY)])


def test_apply_ledger_reports_every_removal_per_request():
    first, second = request(ticket="A"), request(ticket="B", mongodb=[], redis=["cart:42"])
    seen = []

    def applier(item):
        seen.append(item["pattern"])
        return [("db0", 2)] if item["pattern"] != "profile:42" else []

    report = erasure.apply_ledger([first, second], "redis", applier)
    assert seen == ["session:42:*", "profile:42", "cart:42"]
    assert report == {
        "requests": 2,
        "removed": 4,
        "details": [
            {"request_id": "20260301T101500Z-A", "target": "db0", "removed": 2},
            {"request_id": "20260301T101500Z-B", "target": "db0", "removed": 2},
        ],
    }
    assert erasure.planned([first]) == {"requests": 1, "removed": None, "details": []}
