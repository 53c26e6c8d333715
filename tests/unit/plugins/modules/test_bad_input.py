"""Every module refuses malformed option values cleanly, before it connects to or touches anything.

Each of the 20 modules runs as Ansible runs it (a subprocess, arguments as JSON: ``harness.run_module``)
with valid options - storage in an empty temporary ``file://`` directory, servers at a loopback port nothing
listens on - and one option replaced by a malformed value: a wrong type, an out-of-range or huge number, a
garbage string, a URL with a bad port, a time out of range, a path below a missing directory. The result
must be a clean failure naming the option: ``rc != 0``, ``failed``, a message that starts with
``Failed to`` (the collection's validation) or is Ansible's own argument-spec error, and no ``exception``
(traceback). No service is needed: a value that got past validation would fail later at a closed port or
an empty storage, with a message that does not name the option, and the test would catch it.
"""

from __future__ import annotations

import functools
import importlib
import os
import re
import socket
import tempfile

import pytest
from harness import module_env, run_module
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from ansible_collections.caas.backup.plugins.module_utils.common import FILE_OPTIONS

MODULES = (
    "backup_copy",
    "backup_erasure",
    "backup_evidence",
    "backup_info",
    "backup_notify",
    "backup_rekey",
    "backup_verify",
    "config_backup",
    "config_restore",
    "kafka_message_capture",
    "kafka_message_restore",
    "kafka_topic_export",
    "kafka_topic_restore",
    "mongo_dump",
    "mongo_oplog_capture",
    "mongo_oplog_restore",
    "mongo_restore",
    "redis_restore",
    "redis_snapshot",
    "s3_backup_prune",
)
# Ansible's own refusals (argument spec, required_together), or the modules' "Failed to <verb> <object>: <cause>".
CLEAN = re.compile(r"^(Failed to |argument '|Elements value for option '|value of |parameters are required together: )")
WORK = tempfile.mkdtemp(prefix="caas-bad-input-")
MISSING = os.path.join(WORK, "no-such-dir")


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]  # closed again when the socket is: nothing listens there


PORT = _closed_port()
STORE = os.path.join(WORK, "store")
os.makedirs(STORE)
with open(os.path.join(WORK, "a.conf"), "w", encoding="utf-8") as fh:
    fh.write("x\n")

MONGO = dict(login_host="127.0.0.1", login_port=PORT, connect_timeout=1)
REDIS = dict(login_port=PORT, connect_timeout=1.0)
KAFKA = dict(bootstrap_servers=[f"127.0.0.1:{PORT}"], connect_timeout=1)
STORAGE = dict(storage_url=f"file://{STORE}")
# Valid options of each module; each example replaces one of them (or adds one) with a malformed value.
BASE: dict[str, dict] = {
    "backup_copy": dict(STORAGE, dest_storage_url=f"file://{WORK}/copy"),
    "backup_erasure": dict(STORAGE, requested_by="dpo", reason="ticket 1", redis=["user:1:*"]),
    "backup_evidence": dict(STORAGE, report={"result": "PASS", "started_at": "2026-02-21T10:00:00Z"}),
    "backup_info": dict(STORAGE),
    "backup_notify": dict(alerts=[{"severity": "critical", "kind": "config", "source": "app", "message": "old"}]),
    "backup_rekey": dict(STORAGE),
    "backup_verify": dict(STORAGE),
    "config_backup": dict(STORAGE, paths=["a.conf"], root=WORK),
    "config_restore": dict(STORAGE, dest=os.path.join(WORK, "restored")),
    "kafka_message_capture": dict(STORAGE, **KAFKA),
    "kafka_message_restore": dict(STORAGE, **KAFKA),
    "kafka_topic_export": dict(STORAGE, **KAFKA),
    "kafka_topic_restore": dict(STORAGE, **KAFKA),
    "mongo_dump": dict(STORAGE, **MONGO),
    "mongo_oplog_capture": dict(STORAGE, **MONGO),
    "mongo_oplog_restore": dict(STORAGE, target_time="2026-02-21T10:30:00Z", **MONGO),
    "mongo_restore": dict(STORAGE, **MONGO),
    "redis_restore": dict(STORAGE, start_command=["redis-server"], **REDIS),
    "redis_snapshot": dict(STORAGE, **REDIS),
    "s3_backup_prune": dict(STORAGE),
}

garbage = st.sampled_from(["abc", "12abc", "0x1F", " ", "-", "∞", "1e999x", "\x00", "' OR 1=1 --"])
containers = st.sampled_from([[1, 2], {"a": 1}, [[]], {"t": {"u": []}}])
huge = st.integers(min_value=10**9, max_value=10**30)
negative = st.integers(max_value=-1, min_value=-(10**30))
numbers = st.one_of(negative, huge, garbage, containers, st.just(True))
floats = st.one_of(numbers, st.sampled_from([-0.5, 1e12, "nan", "-inf"]))
booleans = st.one_of(st.sampled_from(["maybe", "2", "yes!", 7, -1, 0.5]), containers)
choices = st.one_of(garbage, st.sampled_from(["ZSTD ", "bogus", 5, "all"]))
times = st.sampled_from(
    [
        "2999-01-01T00:00:00Z",
        "1900-01-01T00:00:00Z",
        "9999-12-31T23:59:59+14:00",
        "yesterday",
        "2026-13-45T99:00:00Z",
        "{not json",
        '{"t": -1}',
        '{"t": 99999999999, "i": 0}',
        '{"t": "soon"}',
        {"t": 2**40},
        {"i": 1},
        {"t": 1700000000, "i": -3},
    ]
)


def urls(scheme: str) -> st.SearchStrategy:
    """Malformed URLs of ``scheme``: a bad port, a wrong scheme, no host, garbage."""
    return st.one_of(
        st.builds(lambda p: f"{scheme}://h.example:{p}", st.sampled_from(["99999", "abc", "-1", "0", "65536"])),
        st.sampled_from([f"{scheme}://", "ftp://h.example/x", "h.example:80", "ht!tp://::", "://"]),
        garbage,
    )


# What is malformed for each option, by name (an option means the same in every module that has it).
BAD: dict[str, st.SearchStrategy] = {
    **{
        name: numbers
        for name in (
            "login_port",
            "smtp_port",
            "request_timeout",
            "timeout",
            "duration",
            "slice_seconds",
            "max_age",
            "incomplete_grace_hours",
            "s3_object_lock_days",
            "compression_level",
            "parallel_collections",
            "insertion_workers",
            "minimum_redundancy",
            "newest",
            "dest_s3_object_lock_days",
            "batch_bytes",
        )
    },
    "connect_timeout": floats,
    "size_change_ratio": floats,
    **{
        name: booleans
        for name in (
            "validate_certs",
            "tls",
            "drop",
            "oplog",
            "check_keys",
            "list_sets",
            "follow",
            "aof",
            "record",
            "list_requests",
            "ledger",
            "restore_groups",
            "create_topics",
            "label_location",
            "required",
        )
    },
    **{name: choices for name in ("compression", "mode", "method", "level", "offsets", "replay_method")},
    "kinds": st.lists(st.sampled_from(["bogus", "mongo", "CONFIG"]), min_size=1, max_size=2),
    "uri": st.one_of(urls("mongodb"), st.just("mongodb://h.example/?wtimeoutMS=abc")),
    "scratch_mongo_uri": urls("mongodb"),
    "url": st.one_of(urls("redis"), st.just("redis://:pw@h.example:6379")),
    "webhook_url": urls("https"),
    "s3_endpoint_url": urls("http"),
    "dest_s3_endpoint_url": urls("http"),
    "dest_storage_url": st.sampled_from(["ftp://h.example/x", "s3://", "relative/dir", "file://host/x"]),
    "storage_fallback_urls": st.lists(st.sampled_from(["ftp://h.example/x", "s3://", "relative/dir"]), min_size=1),
    "bootstrap_servers": st.lists(
        st.sampled_from(["h.example:99999", "h.example", "h.example:abc", ":9092", "h.example:0"]), min_size=1
    ),
    "before": times,
    "since": times,
    "target_time": st.one_of(times, containers),
    "offsets_timestamp": times,
    "max_age_hours": st.one_of(
        st.sampled_from([{"config": "abc"}, {"config": -1}, {"nokind": 1}, {"config": [1]}, {"config": 10**12}]),
        garbage,
    ),
    "write_concern": st.sampled_from([{"w": -1}, {"j": "maybe"}, {"wtimeout": -5}, {"foo": 1}, {"w": [1]}]),
    "webhook_headers": st.sampled_from([{"X-A": ["list"]}, {"X-A": "a\nb"}, {"X-A": 5}]),
    "alerts": st.sampled_from([[{"severity": "bogus"}], [{"message": ["x"]}], ["notadict"], [5]]),
    "policy": st.sampled_from([{"config": {"daily": -1}}, {"nokind": {}}, {"config": "x"}, {"config": {"x": 1}}]),
    "metrics_path": st.just(os.path.join(MISSING, "caas.prom")),
    "html_path": st.just(os.path.join(MISSING, "status.html")),
    "report": st.sampled_from(
        ["notadict", {"result": "PASS"}, {"started_at": "2026-02-21T10:00:00Z"}, {"result": 1, "started_at": "x"}]
    ),
    "lock_dir": st.just(MISSING),
    "scratch_dir": st.just(MISSING),
    **{name: st.sampled_from([os.path.join(MISSING, "file.pem"), WORK]) for name in FILE_OPTIONS},
}


class _Spec(Exception):
    """Raised instead of parsing arguments: carries the argument spec a module built."""


@functools.cache
def options_of(module: str) -> tuple[str, ...]:
    """The module's options: its main() is run in-process up to the point where it hands Ansible its spec."""
    from ansible.module_utils.basic import AnsibleModule

    def capture(self, argument_spec, **kwargs):
        raise _Spec(sorted(argument_spec))

    imported = importlib.import_module(f"ansible_collections.caas.backup.plugins.modules.{module}")
    with pytest.MonkeyPatch.context() as patch:
        patch.setattr(AnsibleModule, "__init__", capture)
        with pytest.raises(_Spec) as spec:
            imported.main()
    return tuple(spec.value.args[0])


def assert_clean_failure(module: str, option: str, value, **more) -> None:
    args = dict(BASE[module], **more, **{option: value})
    result = run_module(module, args, module_env({}))
    where = f"{module} {option}={value!r}: {result.get('msg')!r}"
    assert result["rc"] != 0 and result.get("failed") is True, where
    assert "exception" not in result, f"{where}\n{result.get('exception')}"
    assert CLEAN.match(result["msg"]) and not result["msg"].startswith("Unsupported"), where
    assert option in result["msg"], f"{where} (the message must name the bad option)"


def test_every_module_is_covered():
    """A new module joins MODULES (and BASE), so its option checks are tried too."""
    plugins = os.path.join(os.path.dirname(__file__), *[os.pardir] * 4, "plugins", "modules")
    found = sorted(n[:-3] for n in os.listdir(plugins) if n.endswith(".py") and not n.startswith("_"))
    assert list(MODULES) == found and sorted(BASE) == found


@pytest.mark.parametrize("module", MODULES)
@settings(max_examples=2, deadline=None, suppress_health_check=[HealthCheck.too_slow], database=None)
@given(data=st.data())
def test_malformed_values_fail_cleanly(module, data):
    checked = sorted(set(options_of(module)) & set(BAD))
    assert checked, f"{module} has no option this test knows how to break"
    option = data.draw(st.sampled_from(checked), label="option")
    assert_clean_failure(module, option, data.draw(BAD[option], label="value"))


@pytest.mark.parametrize(
    ("module", "option", "value"),
    [
        # Values that raised unexpected exceptions, or were accepted, before options were validated.
        ("mongo_dump", "compression_level", 1_000_000),
        ("mongo_dump", "uri", "mongodb://h.example:abc/"),
        ("mongo_restore", "connect_timeout", 10**12),
        ("mongo_restore", "connect_timeout", -5),
        ("mongo_restore", "login_port", 99999),
        ("redis_snapshot", "url", "redis://h.example:99999"),
        ("redis_snapshot", "connect_timeout", -1.0),
        ("redis_restore", "timeout", 10**12),
        ("backup_info", "max_age_hours", {"config": "abc"}),
        ("backup_info", "metrics_path", os.path.join(MISSING, "caas.prom")),
        ("backup_info", "html_path", os.path.join(MISSING, "status.html")),
        ("backup_evidence", "report", {"result": "PASS", "started_at": "yesterday"}),
        ("backup_evidence", "report", {"result": "PLANNED", "started_at": "2026-02-21T10:00:00Z"}),
        ("backup_info", "audit_since", "2999-01-01T00:00:00Z"),
        ("backup_info", "audit_until", "yesterday"),
        ("backup_info", "pushgateway_url", "ht!tp://::"),
        ("backup_info", "size_change_ratios", {"mongo-oplog": -1}),
        ("backup_info", "size_change_ratios", {"oplog": 1}),
        ("backup_info", "storage_quota_bytes", 0),
        ("backup_info", "audit_window_days", 0),
        ("backup_notify", "webhook_url", "ht!tp://::"),
        ("s3_backup_prune", "incomplete_grace_hours", 10**12),
        ("s3_backup_prune", "incomplete_grace_hours", -5),
        ("mongo_oplog_restore", "target_time", "2999-01-01T00:00:00Z"),
        ("kafka_topic_export", "bootstrap_servers", ["127.0.0.1:99999"]),
        ("kafka_topic_restore", "offsets_timestamp", "2999-01-01T00:00:00Z"),
        ("redis_snapshot", "max_age", -1),
        ("mongo_dump", "tls_ca_file", os.path.join(MISSING, "ca.pem")),
        ("backup_verify", "scratch_dir", MISSING),
        ("backup_copy", "newest", 0),
        ("backup_copy", "dest_storage_url", "ftp://h.example/x"),
        ("config_restore", "storage_fallback_urls", ["s3://"]),
    ],
)
def test_known_bad_values_fail_cleanly(module, option, value):
    assert_clean_failure(module, option, value)


@pytest.mark.parametrize(("compression", "level"), [("gzip", 10), ("zstd", 23), ("none", 3)])
def test_compression_level_is_checked_per_codec(compression, level):
    assert_clean_failure("config_backup", "compression_level", level, compression=compression)


def test_a_missing_storage_directory_is_created_by_backups_and_refused_by_restores(tmp_path):
    """A backup creates a file:// storage directory that does not exist yet, and warns it did; check mode
    creates nothing; a restore (or verify, info, prune) fails saying the directory does not exist. The
    restore's result names the directory it wrote to (``target``)."""
    root = tmp_path / "conf"
    root.mkdir()
    (root / "app.env").write_text("A=1\n")
    store = tmp_path / "new" / "store"
    args = dict(storage_url=f"file://{store}", paths=["app.env"], root=str(root))
    planned = run_module("config_backup", args, module_env({}), check_mode=True)
    assert planned["rc"] == 0 and not store.exists(), planned
    made = run_module("config_backup", args, module_env({}))
    assert made["rc"] == 0, made
    assert store.is_dir() and f"storage directory {store} did not exist: created" in str(made["warnings"])
    dest = tmp_path / "restored"
    restored = run_module("config_restore", dict(storage_url=f"file://{store}", dest=str(dest)), module_env({}))
    assert restored["rc"] == 0 and restored["target"] == str(dest) and (dest / "app.env").read_text() == "A=1\n"

    missing = tmp_path / "nowhere"
    for module, more in (
        ("config_restore", dict(dest=str(dest))),
        ("backup_verify", {}),
        ("backup_info", {}),
        ("s3_backup_prune", {}),
    ):
        result = run_module(module, dict(storage_url=f"file://{missing}", **more), module_env({}))
        assert result["rc"] == 1 and f"storage directory {missing} does not exist" in result["msg"], result
        assert "exception" not in result and not missing.exists()
