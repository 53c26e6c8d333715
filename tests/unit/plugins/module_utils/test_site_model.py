"""The site model: which host acts for which component, and the one report of a run."""

import pytest

from ansible_collections.caas.backup.plugins.module_utils import site

URI = "mongodb://db1:27017,db2:27017/?replicaSet=rs0"


def inventory(**groups):
    return {f"caas_{name}": hosts for name, hosts in groups.items()}


def test_one_leader_per_cluster_whatever_the_number_of_hosts():
    groups = inventory(config=["app01", "app02"], mongodb=["db1", "db2", "db3"], kafka=["k1", "k2"], redis=["c1", "c2"])
    hostvars = {
        "app01": {},
        "app02": {},
        # db1 and db2 reach the same replica set (the URI, credentials aside); db3 names another.
        "db1": {"caas_backup_mongodb_uri": URI},
        "db2": {"caas_backup_mongodb_uri": URI.replace("mongodb://", "mongodb://backup:pw@")},
        "db3": {"caas_backup_mongodb_uri": "mongodb://db3/", "caas_backup_mongodb_source_name": "reports"},
        "k1": {"caas_backup_kafka_bootstrap_servers": ["k1:9092", "k2:9092"]},
        "k2": {"caas_backup_kafka_bootstrap_servers": ["k2:9092", "k1:9092"]},
        # Two Redis servers, one per host; c2's is a replica named like c1's: backed up once.
        "c1": {},
        "c2": {"caas_backup_redis_source_name": "c1"},
    }
    plan = site.plan(groups, hostvars)
    leaders = {c: plan["components"][c]["leaders"] for c in plan["order"]}
    assert leaders == {"config": ["app01", "app02"], "mongodb": ["db1", "db3"], "redis": ["c1"], "kafka": ["k1"]}
    assert plan["components"]["mongodb"]["sources"] == {"db1": "", "db3": "reports"}
    assert plan["components"]["redis"]["sources"] == {"c1": "c1"}
    assert plan["jobs"] == ["config", "mongodb", "redis", "kafka"]
    assert site.jobs_of(plan, "db1") == ["mongodb"] and site.jobs_of(plan, "db2") == []


def test_jobs_follow_the_selection_and_the_oplog_switch():
    groups, hostvars = inventory(config=["a"], mongodb=["db"]), {"a": {}, "db": {}}
    assert site.plan(groups, hostvars, "mongodb-oplog")["jobs"] == ["mongodb-oplog"]
    assert site.plan(groups, hostvars, oplog=True)["jobs"] == ["config", "mongodb", "mongodb-oplog"]
    assert site.plan(groups, hostvars, ["config"], oplog=True)["jobs"] == ["config"]
    assert site.jobs_of(site.plan(groups, hostvars, "mongodb-oplog"), "db") == ["mongodb-oplog"]


@pytest.mark.parametrize(
    ("groups", "requested", "message"),
    [
        (inventory(config=["a"]), ["redis"], "redis was asked for but the inventory has no host in caas_redis"),
        # b is in no group, but its variable names a Kafka cluster: the inventory misses caas_kafka.
        ({"all": ["a", "b"], **inventory(config=["a"])}, [], "caas_backup_kafka_bootstrap_servers is set but"),
        (inventory(config=["a"]), "config,nosql", "unknown component(s) nosql"),
        ({}, [], "the inventory has no host in caas_config, caas_mongodb"),
        (inventory(config=["a", "c"]), [], "hosts a and c of caas_config both name their configuration app"),
    ],
)
def test_an_inventory_that_cannot_be_right_is_an_error(groups, requested, message):
    hostvars = {
        "a": {"caas_backup_source_name": "app"},
        "b": {"caas_backup_kafka_bootstrap_servers": ["k1:9092"]},
        "c": {"caas_backup_source_name": "app"},
    }
    with pytest.raises(site.SiteError, match=message.replace("(", r"\(").replace(")", r"\)")):
        site.plan(groups, hostvars, requested)


def test_members_of_one_replica_set_or_cluster_are_one_whatever_their_addresses():
    groups = inventory(mongodb=["db1", "db2", "db3"], kafka=["k1", "k2"], redis=["c1", "c2"])
    hostvars = {
        # Each member's own URI, one replica set: one backup.
        "db1": {"caas_backup_mongodb_uri": "mongodb://db1/?replicaSet=rs0"},
        "db2": {"caas_backup_mongodb_uri": "mongodb://db2/?tls=true&replicaSet=rs0"},
        "db3": {"caas_backup_mongodb_uri": "mongodb://db3/?replicaSet=rs0"},
        # No address at all: the group is one cluster.
        "k1": {},
        "k2": {},
        # Two hosts that reach one Redis server.
        "c1": {"caas_backup_redis_url": "redis://cache:6379"},
        "c2": {"caas_backup_redis_url": "redis://cache:6379"},
    }
    plan = site.plan(groups, hostvars)
    assert {c: plan["components"][c]["leaders"] for c in plan["order"]} == {
        "mongodb": ["db1"],
        "redis": ["c1"],
        "kafka": ["k1"],
    }


def test_a_leader_that_reported_nothing_is_failed():
    plan = site.plan(inventory(config=["a", "b"]), {"a": {}, "b": {}})
    found = site.outcomes(plan, {"a": {"out": {"config": {"status": "PASS"}}}, "b": {}}, "out")
    assert [(o["host"], o["status"]) for o in found] == [("a", "PASS"), ("b", "FAILED")]
    assert "b did not report" in found[1]["error"]


def outcome(component, status="PASS", data_time="2026-02-21T10:00:00Z", **more):
    return {"component": component, "host": "h", "status": status, "data_time": data_time, "checks": [], **more}


def test_report_measures_rto_rpo_and_passes_only_when_everything_did():
    results = [outcome("config", data_time="2026-02-21T09:00:00Z"), outcome("mongodb")]
    marks = [
        [["assess", "2026-02-21T11:00:00Z"], ["restore", "2026-02-21T11:05:00Z"], ["done", "2026-02-21T11:20:00Z"]],
        [["assess", "2026-02-21T11:00:10Z"], ["restore", "2026-02-21T11:06:00Z"], ["done", "2026-02-21T11:30:00Z"]],
    ]
    report = site.dr_report(results, "2026-02-21T11:00:00Z", "2026-02-21T11:30:00Z", marks)
    assert report["result"] == "PASS" and report["failed"] == []
    assert report["rto_seconds"] == 1800 and report["rpo_seconds"] == 7200  # the oldest data: config at 09:00
    assert report["phases"] == {"assess": 360.0, "restore": 1500.0}
    assert [c["age_seconds"] for c in report["components"]] == [7200, 3600]
    assert "Recovery PASS: RTO 30m00s" in report["table"] and "| config | h |" in report["markdown"]
    late = site.dr_report(results, "2026-02-21T11:00:00Z", "2026-02-21T11:30:00Z", rpo_objective=3600)
    assert late["result"] == "FAIL" and not late["rpo_met"] and late["failed"] == []
    assert "RPO 2h00m00s (objective 1h00m00s): MISSED" in late["markdown"]


def test_a_failed_check_or_component_fails_the_report_and_is_named():
    bad_check = outcome("redis", checks=[{"check": "key count", "ok": False, "expected": 5, "found": 0}])
    report = site.dr_report(
        [outcome("config"), bad_check, outcome("kafka", "FAILED", error="restore: broker down")],
        "2026-02-21T11:00:00Z",
        "2026-02-21T11:10:00Z",
    )
    assert report["result"] == "FAIL" and report["failed"] == ["redis@h", "kafka@h"]
    assert [c["status"] for c in report["components"]] == ["PASS", "FAILED", "FAILED"]
    assert "redis@h: checks failed: key count" in report["table"]
    assert "kafka@h: restore: broker down" in report["markdown"]


def test_check_mode_reports_the_plan_without_an_rpo():
    report = site.dr_report(
        [outcome("config", "PLANNED")], "2026-02-21T11:00:00Z", "2026-02-21T11:01:00Z", check_mode=True
    )
    assert report["result"] == "PLANNED" and report["rpo_seconds"] is None
    failed = site.dr_report(
        [outcome("config", "FAILED", error="assess: no set")],
        "2026-02-21T11:00:00Z",
        "2026-02-21T11:01:00Z",
        check_mode=True,
    )
    assert failed["result"] == "FAIL"


def test_health_checks_compare_what_was_restored_with_what_is_there():
    config = site.dr_checks({}, "config", {"created": [], "updated": ["docker-compose.yml"], "unchanged": 4})
    assert config[0]["ok"] is False and config[0]["differ"] == ["docker-compose.yml"] and config[0]["expected"] == 5
    restored = {
        "collections": [{"target": "shop.orders", "type": "collection", "count": 7}, {"target": "v", "type": "view"}]
    }
    live = {"collections": [{"ns": "shop.orders", "documents": 7}]}
    assert [c["ok"] for c in site.dr_checks(restored, "mongodb", live)] == [True]
    assert [c["found"] for c in site.dr_checks(restored, "mongodb", {"collections": []})] == [None]
    pitr = {"base_collections": [{"target": "shop.orders", "type": "collection"}]}
    assert site.dr_checks(pitr, "mongodb", {"collections": []}, pitr=True)[0]["missing"] == ["shop.orders"]
    assert site.dr_checks({"keys": 3}, "redis", {"facts": {"keys": 3}})[0]["ok"]
    kafka = site.dr_checks({}, "kafka", {"created_topics": ["orders"], "added_partitions": [], "groups": {"g": {}}})
    assert [c["ok"] for c in kafka] == [False, True, False] and kafka[2]["found"] == ["g"]


def test_a_smoke_test_is_a_report_line():
    ok = site.smoke_outcome({"item": {"name": "api"}, "rc": 0})
    bad = site.smoke_outcome({"item": {"name": "api", "host": "app01"}, "rc": 7, "stderr": "x\nconnection refused\n"})
    assert (ok["status"], bad["status"], bad["host"]) == ("PASS", "FAILED", "app01")
    assert bad["error"] == "exit status 7: connection refused"


def test_given_leaves_unset_options_out():
    assert site.given({"storage_url": None, "compression": "gzip", "tags": [], "drop": False}) == {
        "compression": "gzip",
        "tags": [],
        "drop": False,
    }


def test_a_backup_run_has_one_result():
    report = site.backup_report(
        [
            {"component": "config", "host": "a", "status": "PASS", "backup_id": "x", "stored_bytes": 176},
            {"component": "redis", "host": "b", "status": "FAILED", "error": "Failed to snapshot Redis: down"},
        ]
    )
    assert report["result"] == "FAIL" and report["failed"] == ["redis@b"]
    assert "Backup FAIL: 1 of 2 job(s)" in report["table"]
    assert "redis@b: Failed to snapshot Redis: down" in report["table"]
    planned = site.backup_report([{"component": "config", "host": "a", "status": "PLANNED", "stored_bytes": 0}])
    assert planned["result"] == "PLANNED" and " 0 " not in planned["table"].splitlines()[-1]


def test_kafka_messages_is_a_job_of_the_kafka_leaders_and_dr_checks_no_record_is_left():
    groups = inventory(config=["app01"], kafka=["k1", "k2"])
    hostvars = {h: {} for h in ("app01", "k1", "k2")}
    assert site.plan(groups, hostvars, "kafka-messages")["jobs"] == ["kafka-messages"]
    assert site.plan(groups, hostvars, messages=True)["jobs"] == ["config", "kafka", "kafka-messages"]
    assert site.plan(groups, hostvars)["jobs"] == ["config", "kafka"]
    assert site.jobs_of(site.plan(groups, hostvars, "kafka-messages"), "k1") == ["kafka-messages"]
    assert site.jobs_of(site.plan(groups, hostvars, "kafka-messages"), "k2") == []
    with pytest.raises(site.SiteError, match="kafka was asked for"):
        site.plan(inventory(config=["app01"]), hostvars, "kafka-messages")
    base = {"created_topics": [], "added_partitions": [], "groups": {}}
    assert len(site.dr_checks({}, "kafka", base)) == 3  # no record restore asked for: no such check
    left = site.dr_checks({}, "kafka", dict(base, messages={"records": 12}))
    assert left[3] == {"check": "every captured record on the target", "ok": False, "expected": 0, "found": 12}
    assert site.dr_checks({}, "kafka", dict(base, messages={"records": 0}))[3]["ok"] is True
