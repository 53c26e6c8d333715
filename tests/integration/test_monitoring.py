"""Monitoring end to end: real Prometheus scraping node_exporter's textfile output and a Pushgateway with the
shipped rules, Alertmanager routing to a webhook in the test; and the audit records behind the attempt metrics."""

import datetime
import hashlib
import json
import time
import urllib.request

import boto3
import pytest
import services
import yaml
from harness import REPO, module_env, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, list_sets
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

RULES = REPO / "roles" / "backup_monitoring" / "files" / "prometheus" / "caas-backup-rules.yml"
QUOTA = 10**12  # the space alerts are about the storage's quota, not this machine's disk


def get_json(url):
    with urllib.request.urlopen(url, timeout=5) as reply:
        return json.loads(reply.read())


def wait_for(what, probe, timeout=60.0):
    """``probe()``'s first truthy value, polled until ``timeout`` seconds; fails naming ``what``."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        found = probe()
        if found:
            return found
        time.sleep(0.5)
    pytest.fail(f"timed out waiting for {what}")


@pytest.fixture()
def monitoring(tmp_path, webhook):
    """node_exporter, a Pushgateway, Alertmanager (to the test's webhook) and Prometheus with the shipped rules,
    every ``for:`` cut to 1 s and a 1 s scrape and evaluation interval; stopped at the end."""
    rules = yaml.safe_load(RULES.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            rule["for"] = "1s"
    fast_rules = tmp_path / "rules.yml"
    fast_rules.write_text(yaml.safe_dump(rules))
    url, received, _status = webhook
    handles = []
    try:
        node = services.start_node_exporter(tmp_path / "node-exporter")
        handles.append(node)
        push = services.start_pushgateway(tmp_path / "pushgateway")
        handles.append(push)
        am = services.start_alertmanager(tmp_path / "alertmanager", webhook_url=url, group_wait="1s")
        handles.append(am)
        prom = services.start_prometheus(
            tmp_path / "prometheus",
            scrape={"node": node.url, "pushgateway": push.url},
            alertmanager=am.url,
            rule_files=[fast_rules],
            interval="1s",
        )
        handles.append(prom)
        yield {
            "textfile": node.dir / "textfile",
            "pushgateway": push.url,
            "prometheus": prom.url,
            "received": received,
        }
    finally:
        services.stop_pids([(h.pid, h.started) for h in handles])


def config_set(storage, source, when):
    """A small complete config set of ``source`` finished at ``when``; returns its data object's key."""
    writer = SetWriter(storage, "config", source, WriteOptions("none"), now=when)
    with writer.object("config.tar") as out:
        out.write(b"x" * 100)
    writer.commit({"names": []}, finished_at=when)
    return f"{writer.prefix}/{writer.objects[0]['name']}"


def firing(prometheus):
    alerts = get_json(f"{prometheus}/api/v1/alerts")["data"]["alerts"]
    return sorted((a["labels"]["alertname"], a["labels"].get("source", ""), a["state"]) for a in alerts)


def test_prometheus_pages_for_each_failure_and_not_for_a_healthy_catalog(monitoring, tmp_path):
    """A stale source, a backup failing twice in a row, a failed verification and a failed drill each arrive
    at Alertmanager's webhook as their alert, through the textfile collector and the Pushgateway alike; the
    healthy catalog, exported the same two ways first, raises none."""
    env = module_env({}, CAAS_AUDIT_USER="tester")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("setting = 1\n")
    now = datetime.datetime.now(datetime.timezone.utc)

    healthy = tmp_path / "healthy"
    written = run_module(
        "config_backup", {"storage_url": f"file://{healthy}", "paths": [str(etc)], "source_name": "good"}, env
    )
    assert written["rc"] == 0, written
    exported = run_module(
        "backup_info",
        {
            "storage_url": f"file://{healthy}",
            "storage_quota_bytes": QUOTA,
            "metrics_path": str(monitoring["textfile"] / "caas_backup.prom"),
            "pushgateway_url": monitoring["pushgateway"],
            "pushgateway_instance": "healthy",
        },
        env,
    )
    assert exported["rc"] == 0 and exported["alerts"] == [], exported
    assert exported["attempts"][0]["succeeded"] == 1 and exported["attempts"][0]["consecutive_failures"] == 0
    query = f"{monitoring['prometheus']}/api/v1/query?query=caas_backup_info_timestamp_seconds"

    def jobs():
        return sorted(r["metric"]["job"] for r in get_json(query)["data"]["result"])

    wait_for("both exports scraped", lambda: jobs() == ["caas_backup", "node"])
    time.sleep(5)  # several evaluations with for: 1s: anything that would fire has
    assert firing(monitoring["prometheus"]) == []
    assert monitoring["received"] == []

    broken = tmp_path / "broken"
    storage = open_storage(f"file://{broken}", create=True)
    config_set(storage, "stale", now - datetime.timedelta(days=2))
    damaged = broken / config_set(storage, "damaged", now)
    damaged.write_bytes(b"y" * 100)  # same size, other bytes: the sha256 check fails
    for _attempt in range(2):
        failed = run_module(
            "config_backup",
            {"storage_url": f"file://{broken}", "paths": [str(etc / "gone")], "source_name": "app"},
            env,
        )
        assert failed["rc"] == 1, failed
    verified = run_module(
        "backup_verify", {"storage_url": f"file://{broken}", "kinds": ["config"], "source_name": "damaged"}, env
    )
    assert verified["rc"] == 1 and verified["failed"] == 1, verified
    drill = {"result": "FAIL", "started_at": (now - datetime.timedelta(hours=1)).isoformat(), "rto_seconds": 4000}
    # As backup_evidence stores it (drills helper): the report, then SHA256SUMS (written last) naming its sha256.
    raw = json.dumps(drill).encode()
    storage.put_bytes(f"drills/{now:%Y%m%dT%H%M%SZ}/report.json", raw)
    storage.put_bytes(
        f"drills/{now:%Y%m%dT%H%M%SZ}/SHA256SUMS", f"{hashlib.sha256(raw).hexdigest()}  report.json\n".encode()
    )

    # The playbook, as the hourly job runs it: the same metrics to the textfile and the Pushgateway.
    play = run_playbook(
        REPO / "playbooks" / "monitoring.yml",
        {
            "caas_backup_storage_url": f"file://{broken}",
            "backup_monitoring_storage_quota_bytes": QUOTA,
            "backup_monitoring_metrics_path": str(monitoring["textfile"] / "caas_backup.prom"),
            "backup_monitoring_pushgateway_url": monitoring["pushgateway"],
            "backup_monitoring_pushgateway_instance": "broken",
            "backup_monitoring_rules_dir": str(tmp_path / "rules.d"),
        },
        env,
    )
    assert play.returncode == 0, play.stdout + play.stderr
    installed = (tmp_path / "rules.d" / "caas-backup-rules.yml").read_text()
    assert yaml.safe_load(installed) == yaml.safe_load(RULES.read_text())

    expected = {
        ("CaasBackupTooOld", "stale"),
        ("CaasBackupFailing", "app"),
        ("CaasBackupIntegrityCheckFailed", "damaged"),
        ("CaasBackupDrillFailed", ""),
    }

    def arrived():
        alerts = [a for post in monitoring["received"] for a in post["body"]["alerts"]]
        seen = {(a["labels"]["alertname"], a["labels"].get("source", ""), a["labels"]["job"]) for a in alerts}
        want = {(name, source, job) for name, source in expected for job in ("node", "caas_backup")}
        return seen if want <= seen else None

    seen = wait_for("the four alerts from both exports at the webhook", arrived)
    assert {(name, source) for name, source, _job in seen} == expected, "no other alert may fire"
    alerts = [a for post in monitoring["received"] for a in post["body"]["alerts"]]
    assert {a["labels"]["severity"] for a in alerts} == {"critical"}
    assert all(a["annotations"]["runbook_url"].startswith("https://") for a in alerts)
    assert all(a["labels"].get("instance") != "healthy" for a in alerts), "the healthy group still raises nothing"


def test_audit_records_every_attempt_without_secrets(svc, s3_url, tmp_path):
    """Each module run writes a start and a result record to S3 (with the controller's user, the error's class
    and the sets touched, never an option's value); a killed run's lone start record counts as a failure once
    older than the grace; backup_info lists the records of a time range."""
    secret = "s3cr3t-Pa55word-never-stored"
    env = module_env(svc, CAAS_AUDIT_USER="alice", CAAS_AUDIT_HOST="controller01")
    etc = tmp_path / "etc"
    etc.mkdir()
    (etc / "app.conf").write_text("x = 1\n")
    base = {"storage_url": s3_url, "source_name": "app", "aws_secret_access_key": secret}  # moto takes any key
    ok = run_module("config_backup", {**base, "paths": [str(etc)]}, env)
    assert ok["rc"] == 0, ok
    bad = run_module("config_backup", {**base, "paths": [str(etc / "missing")]}, env)
    assert bad["rc"] == 1
    checked = run_module("config_backup", {**base, "paths": [str(etc)]}, env, check_mode=True)
    assert checked["rc"] == 0
    # A failure the module reports itself (fail_json, not an exception): an identity file that is a directory.
    restore = {**base, "dest": str(tmp_path / "dest"), "encryption_identity_file": str(tmp_path)}
    refused = run_module("config_restore", restore, env)
    assert refused["rc"] == 1 and "encryption_identity_file" in refused["msg"], refused

    storage = s3_storage(svc, s3_url)
    keys = [info.key for info in storage.list("audit/")]
    assert len(keys) == 6, keys  # start and result of three runs; check mode records nothing
    raw = b"".join(storage.get_bytes(key) for key in keys)
    assert secret.encode() not in raw and b"aws_secret_access_key" not in raw
    # A killed run: its start record alone, from three days ago.
    killed = datetime.datetime.now(datetime.timezone.utc) - datetime.timedelta(days=3)
    record = {
        "record": "start",
        "attempt_id": "00000000deadbeef",
        "action": "write",
        "kind": "config",
        "source": "app",
        "time": killed.strftime("%Y-%m-%dT%H:%M:%S.%fZ"),
        "user": "alice",
        "host": "controller01",
    }
    storage.put_bytes(
        f"audit/{killed:%Y/%m/%d}/{killed:%Y%m%dT%H%M%S.%f}Z-write-config-0badf00d.json", json.dumps(record).encode()
    )

    since = (killed - datetime.timedelta(hours=1)).strftime("%Y-%m-%dT%H:%M:%SZ")
    report = run_module("backup_info", {"storage_url": s3_url, "audit_since": since}, env)
    assert report["rc"] == 0, report
    results = [r for r in report["audit"] if r["record"] == "result"]
    assert [(r["module"], r["result"], r["error"]) for r in results] == [
        ("config_backup", "ok", None),
        ("config_backup", "failed", "SourceError"),
        ("config_restore", "failed", "ModuleFailure"),
    ]
    [made] = [s for s in list_sets(storage) if s.complete]
    assert results[0]["sets"] == [made.prefix] and results[1]["sets"] == []
    assert results[2]["action"] == "restore" and results[2]["kind"] == "config"
    assert {(r["user"], r["host"]) for r in report["audit"]} == {("alice", "controller01")}
    [restores, stats] = report["attempts"]
    assert (restores["action"], restores["failed"], restores["last_error"]) == ("restore", 1, "ModuleFailure")
    assert (stats["succeeded"], stats["failed"], stats["consecutive_failures"]) == (1, 2, 1)
    assert stats["last_result"] == "failed" and stats["last_error"] == "SourceError"
    assert isinstance(stats["last_duration_seconds"], float) and 0 < stats["last_duration_seconds"] < 60

    later = run_module("backup_info", {"storage_url": s3_url, "audit_since": since, "audit_until": since}, env)
    assert later["rc"] == 0 and later["audit"] == []


def test_a_restore_with_read_only_credentials_is_not_stopped_by_the_audit_log(tmp_path):
    """The restore side may hold read-only S3 keys: its audit record is refused (AccessDenied), and the restore
    still runs, warned that it is not recorded; a backup with those keys fails, as its write would."""
    handle = services.start_s3(tmp_path / "s3-iam", unauthenticated_requests=7)  # the readiness check is one
    try:
        anyone = dict(
            endpoint_url=handle.url, aws_access_key_id="x", aws_secret_access_key="x", region_name="us-east-1"
        )
        iam = boto3.client("iam", **anyone)
        keys = {}
        for user, actions in (("writer", ["s3:*"]), ("reader", ["s3:GetObject", "s3:ListBucket"])):
            iam.create_user(UserName=user)
            keys[user] = iam.create_access_key(UserName=user)["AccessKey"]
            policy = {"Version": "2012-10-17", "Statement": [{"Effect": "Allow", "Action": actions, "Resource": "*"}]}
            iam.put_user_policy(UserName=user, PolicyName="s3", PolicyDocument=json.dumps(policy))

        def creds(user):
            key = keys[user]
            return {"aws_access_key_id": key["AccessKeyId"], "aws_secret_access_key": key["SecretAccessKey"]}

        boto3.client("s3", endpoint_url=handle.url, region_name="us-east-1", **creds("writer")).create_bucket(
            Bucket="read-only"
        )
        etc = tmp_path / "etc"
        etc.mkdir()
        (etc / "app.conf").write_text("x = 1\n")
        env = module_env({}, CAAS_S3_ENDPOINT=handle.url)
        base = {"storage_url": "s3://read-only/site", "source_name": "app"}
        made = run_module("config_backup", {**base, "paths": ["app.conf"], "root": str(etc), **creds("writer")}, env)
        assert made["rc"] == 0, made
        restored = run_module("config_restore", {**base, "dest": str(tmp_path / "dest"), **creds("reader")}, env)
        assert restored["rc"] == 0, restored
        assert (tmp_path / "dest" / "app.conf").read_text() == "x = 1\n"
        warnings = str(restored["warnings"])
        assert "this run is not recorded in the audit log: " in warnings and "(AccessDenied)" in warnings
        refused = run_module("config_backup", {**base, "paths": ["app.conf"], "root": str(etc), **creds("reader")}, env)
        assert refused["rc"] == 1 and "AccessDenied" in refused["msg"], refused
    finally:
        handle.stop()
