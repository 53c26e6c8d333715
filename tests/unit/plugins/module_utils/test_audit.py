"""Audit records: keys, the records of an attempt, joining them into attempts (killed runs too), reading a range."""

import datetime
import json

import pytest

from ansible_collections.caas.backup.plugins.module_utils import audit
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 24, 12, 0, 0, 123456, tzinfo=UTC)
GRACE = datetime.timedelta(hours=24)


def test_keys_sort_by_time_carry_action_and_kind_and_parse_back():
    key = audit.record_key(NOW, "write", "mongo-full")
    assert key.startswith("audit/2026/11/24/20261124T120000.123456Z-write-mongo-full-") and key.endswith(".json")
    assert audit.key_time(key) == NOW
    assert audit.record_key(NOW, "delete", "").split("-")[-2] == "any"
    assert audit.key_time("audit/2026/11/24/notes.txt") is None
    assert audit.key_time("config/app/20261124T120000.000Z-3f9a/manifest.json") is None
    assert audit.record_key(NOW, "write", "config") != audit.record_key(NOW, "write", "config")


def test_a_start_and_a_result_record_name_who_what_and_how_it_ended(tmp_path, monkeypatch):
    monkeypatch.setenv("CAAS_AUDIT_USER", "alice")
    monkeypatch.setenv("CAAS_AUDIT_HOST", "controller01")
    storage = LocalStorage(str(tmp_path))
    attempt = audit.record_start(storage, "write", "redis_snapshot", "redis-rdb", None)
    result = {"backup_id": "20261124T120000.123Z-3f9a", "source": "cache01", "stored_bytes": 10}
    record = audit.record_result(storage, attempt, result, None)
    assert record["result"] == "ok" and record["error"] is None
    assert record["sets"] == ["redis-rdb/cache01/20261124T120000.123Z-3f9a"]
    assert (record["source"], record["user"], record["host"]) == ("cache01", "alice", "controller01")
    assert record["run_user"] and record["run_host"] and record["duration_seconds"] >= 0
    keys = sorted(info.key for info in storage.list("audit/"))
    records = [json.loads(storage.get_bytes(key)) for key in keys]
    assert [r["record"] for r in records] == ["start", "result"]
    assert {r["attempt_id"] for r in records} == {attempt.attempt_id}
    assert records[0]["source"] == "" and records[1]["source"] == "cache01"


def test_a_failure_records_the_error_class_and_no_result_text(tmp_path):
    storage = LocalStorage(str(tmp_path))
    attempt = audit.record_start(storage, "restore", "mongo_restore", "mongo-full", "rs0")
    record = audit.record_result(
        storage, attempt, {"msg": "cannot log in as admin with password hunter2"}, "BackupError"
    )
    assert (record["result"], record["error"]) == ("failed", "BackupError")
    assert b"hunter2" not in b"".join(storage.get_bytes(i.key) for i in storage.list("audit/"))


def test_an_unknown_action_is_refused():
    with pytest.raises(BackupError, match="unknown audit action 'backup'"):
        audit.record_start(None, "backup", "x", None, None)


def test_set_ids_of_writes_prunes_and_verifications():
    assert audit.set_ids({"backup_id": ""}, "config", "app") == []
    assert audit.set_ids({"deleted": ["config/app/a", "config/app/b"]}, "", "") == ["config/app/a", "config/app/b"]
    reports = [{"kind": "config", "source": "app", "backup_id": "x"}, {"kind": "redis-rdb", "source": "c"}]
    assert audit.set_ids({"reports": reports}, "", "") == ["config/app/x"]


def start(attempt_id, hours_ago, kind="config", action="write"):
    moment = NOW - datetime.timedelta(hours=hours_ago)
    return {
        "record": "start",
        "attempt_id": attempt_id,
        "action": action,
        "kind": kind,
        "source": "app",
        "time": audit.stamp(moment),
    }


def result(attempt_id, hours_ago, outcome="ok", error=None, kind="config"):
    moment = NOW - datetime.timedelta(hours=hours_ago)
    return {
        **start(attempt_id, hours_ago + 0.01, kind),
        "record": "result",
        "finished_at": audit.stamp(moment),
        "started_at": audit.stamp(moment - datetime.timedelta(seconds=36)),
        "duration_seconds": 36.0,
        "result": outcome,
        "error": error,
        "sets": [],
    }


def test_attempts_join_start_and_result_and_a_lone_old_start_is_a_killed_run():
    records = [
        start("a", 50),
        result("a", 49.99),
        start("b", 30),  # killed: never finished, older than the grace
        start("c", 2),
        result("c", 1.99, "failed", "SourceError"),
        start("d", 1),  # still running
        {"record": "start", "attempt_id": 7},  # not ours: skipped
    ]
    found = audit.attempts(records, NOW, GRACE)
    assert [(a["attempt_id"], a["result"], a["error"]) for a in found] == [
        ("a", "ok", None),
        ("b", "failed", "killed"),
        ("c", "failed", "SourceError"),
        ("d", "running", None),
    ]
    assert found[0]["duration_seconds"] == 36.0 and found[1]["duration_seconds"] is None


def test_read_records_lists_only_the_months_of_the_range_and_keeps_unreadable_ones(tmp_path):
    storage = LocalStorage(str(tmp_path))
    for moment in (NOW - datetime.timedelta(days=40), NOW - datetime.timedelta(days=1), NOW):
        storage.put_bytes(audit.record_key(moment, "write", "config"), json.dumps({"t": audit.stamp(moment)}).encode())
    storage.put_bytes(audit.record_key(NOW, "verify", ""), b"{not json")
    storage.put_bytes("audit/2026/11/24/README", b"not a record")
    found = audit.read_records(storage, NOW - datetime.timedelta(days=2), NOW)
    assert found[0]["t"] == audit.stamp(NOW - datetime.timedelta(days=1))  # oldest first; 40 days ago is out
    assert sorted(str(r.get("t") or r.get("error")) for r in found[1:]) == [
        audit.stamp(NOW),
        "not valid JSON: " + ("Expecting property name enclosed in double quotes: line 1 column 2 (char 1)"),
    ]
    assert len(found) == 3
    listed = []
    original = storage.list
    storage.list = lambda prefix="": listed.append(prefix) or original(prefix)
    audit.read_records(storage, NOW - datetime.timedelta(days=60), NOW)
    assert listed == ["audit/2026/09/", "audit/2026/10/", "audit/2026/11/"]
