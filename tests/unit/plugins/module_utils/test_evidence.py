"""Drills: scratch targets never production, the random point in time, production beside the checks, evidence."""

import datetime
import hashlib
import json
import random

import pytest

from ansible_collections.caas.backup.plugins.module_utils import evidence, site
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError, NotFoundError
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage

PROD = {
    "caas_backup_mongodb_uri": "mongodb://backup:s3cret@db1:27017,db2:27017/?replicaSet=rs0",
    "redis_backup_login_port": 6380,
    "caas_backup_kafka_bootstrap_servers": ["k1:9092", "k2:9092"],
    "config_backup_root": "/srv/caas",
}
ALL = ("config", "mongodb", "redis", "kafka")


def unresolved(host):
    return set()


def refused(targets, components=ALL, host_vars=None, resolver=unresolved):
    return evidence.scratch_targets(targets, list(components), PROD if host_vars is None else host_vars, resolver)[
        "refused"
    ]


def test_scratch_targets_elsewhere_pass_and_are_returned():
    targets = {
        "mongodb": "mongodb://scratch:27017/",
        "redis": "redis://127.0.0.1:6399/0",
        "kafka": ["scratch-k:9092"],
        "config": "/srv/drill",
    }
    checked = evidence.scratch_targets(targets, list(ALL), PROD, unresolved)
    assert checked["refused"] == []
    assert checked["targets"] == {**targets, "redis": {"url": "redis://127.0.0.1:6399/0"}}
    # The role variables that point the restores there; Redis never keeps production's unit or start command.
    assert checked["overrides"] == {
        "mongodb_backup_restore_uri": "mongodb://scratch:27017/",
        "redis_backup_url": "redis://127.0.0.1:6399/0",
        "redis_backup_service": "",
        "redis_backup_start_command": [],
        "redis_backup_config_file": "",
        "kafka_backup_restore_bootstrap_servers": ["scratch-k:9092"],
        "config_backup_restore_dest": "/srv/drill",
    }
    own = {"url": "redis://h:1", "service": "redis-drill", "config_file": "/etc/drill.conf"}
    assert evidence.overrides({"redis": own})["redis_backup_service"] == "redis-drill"
    # Only this host's components are checked and returned.
    assert evidence.scratch_targets(targets, ["redis"], PROD, unresolved)["targets"] == {
        "redis": {"url": targets["redis"]}
    }


@pytest.mark.parametrize(
    "component, target, named",
    [
        # One member of the replica set is production, whatever the credentials or options.
        ("mongodb", "mongodb://other:pw@db2:27017/?tls=true", "caas_backup_mongodb_uri"),
        # Port 27017 is the default: db1 and db1:27017 are one server.
        ("mongodb", "mongodb://db1/", "caas_backup_mongodb_uri"),
        # localhost, 127.0.0.1 and ::1 are this machine.
        ("redis", {"url": "redis://localhost:6380/1", "start_command": ["redis-server"]}, "redis_backup_login_port"),
        ("kafka", ["scratch:9092", "K1:9092"], "caas_backup_kafka_bootstrap_servers"),
        ("config", "/srv/caas", "config_backup_root"),
        ("config", "/srv/caas/drill", "config_backup_root"),
        ("config", "/srv", "config_backup_root"),
    ],
)
def test_a_target_that_is_production_is_refused(component, target, named):
    [reason] = refused({component: target}, [component])
    assert reason.endswith(f"is production's ({named}): a drill never restores into production")
    assert "s3cret" not in reason


def test_redis_url_and_role_variables_name_production_too():
    host_vars = {"caas_backup_redis_url": "redis://:pw@cache01:6379/0", "mongodb_backup_restore_uri": "mongodb://m:1"}
    assert refused({"redis": "redis://cache01/2"}, ["redis"], host_vars)
    assert refused({"mongodb": "mongodb://m:1/?replicaSet=x"}, ["mongodb"], host_vars)
    assert not refused({"redis": "redis://cache01:6390"}, ["redis"], host_vars)
    # The login port without a host is the module's default host, this machine.
    assert refused({"redis": "redis://127.0.0.1:6380"}, ["redis"], {"redis_backup_login_port": 6380})


def test_a_name_and_the_address_it_resolves_to_are_one_host():
    names = {"db2": {"10.0.0.5"}, "cache01": {"10.0.0.9"}, "drill-db": {"10.0.0.50"}}

    def resolver(host):
        return names.get(host, set())

    assert refused({"mongodb": "mongodb://10.0.0.5:27017/"}, ["mongodb"], resolver=resolver)
    assert not refused({"mongodb": "mongodb://drill-db:27017/"}, ["mongodb"], resolver=resolver)
    prod = {"caas_backup_redis_url": "redis://cache01:6379"}
    assert refused({"redis": "redis://10.0.0.9:6379"}, ["redis"], prod, resolver)
    # This machine by any loopback address; the real resolver knows localhost.
    assert refused({"redis": "redis://127.0.1.1:6380"}, ["redis"])
    assert ("127.0.0.1", 6379) in evidence._endpoints("redis", "redis://localhost", evidence.resolve)


def test_a_component_without_a_target_is_refused():
    assert refused({}, ["mongodb", "redis"]) == [
        "mongodb has no scratch target (dr_site_targets.mongodb)",
        "redis has no scratch target (dr_site_targets.redis)",
    ]
    assert refused({"redis": {"start_command": ["x"]}}, ["redis"]) == [
        "redis has no scratch target (dr_site_targets.redis)"
    ]


WINDOW = {"earliest": "2026-02-21T10:00:00.500000Z", "latest": "2026-02-21T10:00:10Z", "gaps": []}


def test_random_point_is_a_whole_second_inside_the_window():
    seen = {evidence.random_point({"rs0": WINDOW}, rng=random.Random(n)) for n in range(200)}
    # After the window opens (the target is exclusive), up to the last captured second.
    assert seen == {f"2026-02-21T10:00:{s:02d}Z" for s in range(1, 11)}


def test_random_point_never_falls_in_a_gap():
    window = dict(WINDOW, gaps=[{"from": "2026-02-21T10:00:02Z", "to": "2026-02-21T10:00:08Z"}])
    seen = {evidence.random_point({"rs0": window}, "rs0", random.Random(n)) for n in range(200)}
    assert seen == {f"2026-02-21T10:00:{s:02d}Z" for s in (1, 2, 9, 10)}


def test_random_point_needs_a_window_and_one_source():
    with pytest.raises(NotFoundError, match="has no point-in-time window"):
        evidence.random_point({"rs0": {"earliest": None, "latest": None, "gaps": []}})
    with pytest.raises(NotFoundError, match="holds no whole second"):
        evidence.random_point({"rs0": dict(WINDOW, latest="2026-02-21T10:00:00.900000Z")})
    with pytest.raises(ConfigurationError, match="2 MongoDB sources .*a, b"):
        evidence.random_point({"a": WINDOW, "b": WINDOW})
    with pytest.raises(ConfigurationError, match="0 MongoDB sources"):
        evidence.random_point({})
    assert evidence.random_point({"a": WINDOW, "b": {}}, "a")


def recovery(redis_found=15):
    restored = {"keys": 15}
    checks = site.dr_checks(restored, "redis", {"facts": {"keys": redis_found}})
    results = [
        {
            "component": "redis",
            "host": "cache01",
            "status": "PASS",
            "data_time": "2026-02-21T09:00:00Z",
            "checks": checks,
        },
        {"component": "smoke: api", "host": "localhost", "status": "PASS", "checks": []},
    ]
    return site.dr_report(results, "2026-02-21T10:00:00.25Z", "2026-02-21T10:05:00Z"), restored


def test_drill_report_shows_production_beside_the_checks_without_judging_it():
    report, restored = recovery()
    hostvars = {
        "cache01": {
            "dr_site_restored": {"redis": restored},
            "dr_site_production": {"redis": {"changed": True, "facts": {"keys": 22}}},
            "dr_site_scratch": {"redis": {"url": "redis://:pw@127.0.0.1:6399/0", "start_command": ["x"]}},
        }
    }
    drill = evidence.drill_report(report, hostvars, "random")
    [redis_entry, smoke] = drill["components"]
    [check] = redis_entry["checks"]
    # Production moved on (22 keys): shown, while the check and the result stay the backup's.
    assert (check["expected"], check["found"], check["production"], check["ok"]) == (15, 15, 22, True)
    assert redis_entry["production"] == {"reachable": True} and drill["result"] == "PASS"
    assert smoke == report["components"][1]
    assert drill["drill"] == {"point_in_time": "random", "targets": {"redis@cache01": "redis://127.0.0.1:6399/0"}}
    # The restored data decides: a wrong key count fails, whatever production holds.
    failed, restored = recovery(redis_found=14)
    hostvars["cache01"]["dr_site_production"]["redis"]["facts"]["keys"] = 15
    assert evidence.drill_report(failed, hostvars)["result"] == "FAIL"


def test_drill_report_says_when_production_could_not_be_read():
    report, restored = recovery()
    unreachable = {
        "dr_site_restored": {"redis": restored},
        "dr_site_production": {"redis": {"failed": True, "msg": "no"}},
    }
    [entry, _smoke] = evidence.drill_report(report, {"cache01": unreachable})["components"]
    assert entry["production"] == {"reachable": False, "error": "no"}
    assert entry["checks"][0]["production"] is None and entry["checks"][0]["ok"]
    [entry, _smoke] = evidence.drill_report(report, {})["components"]
    assert entry["production"] == {"reachable": False, "error": "not read"}


def test_evidence_is_written_with_its_sha256_never_overwritten_and_read_back(tmp_path):
    storage = LocalStorage(str(tmp_path))
    assert evidence.latest_drill(storage) is None
    report, _restored = recovery()
    written = evidence.write_evidence(storage, report, "<html>page</html>")
    assert written["drill_id"] == "20260221T100000Z" and written["prefix"] == "drills/20260221T100000Z/"
    stored = {p.name: p.read_bytes() for p in (tmp_path / "drills" / "20260221T100000Z").iterdir()}
    assert json.loads(stored["report.json"]) == report and stored["report.html"] == b"<html>page</html>"
    sums = {name: digest for digest, name in (line.split("  ") for line in stored["SHA256SUMS"].decode().splitlines())}
    assert sums == {n: hashlib.sha256(stored[n]).hexdigest() for n in ("report.json", "report.html")}
    assert [o["sha256"] for o in written["objects"]] == [sums["report.json"], sums["report.html"]]
    with pytest.raises(ConfigurationError, match="already exists .* never overwritten"):
        evidence.write_evidence(storage, dict(report, result="FAIL"), "<html></html>")
    assert json.loads((tmp_path / "drills" / "20260221T100000Z" / "report.json").read_text())["result"] == "PASS"
    latest = evidence.latest_drill(storage)
    assert latest == {**report, "drill_id": "20260221T100000Z", "evidence": "drills/20260221T100000Z/"}


def test_latest_drill_is_the_newest_complete_one_and_a_damaged_one_fails(tmp_path):
    storage = LocalStorage(str(tmp_path))
    report, _restored = recovery()
    evidence.write_evidence(storage, report, "")
    newer = dict(report, started_at="2026-05-21T10:00:00Z", result="FAIL")
    evidence.write_evidence(storage, newer, "")
    storage.put_bytes("drills/20260821T100000Z/report.json", b"{}")  # no SHA256SUMS: still being written
    assert evidence.latest_drill(storage)["drill_id"] == "20260521T100000Z"
    assert evidence.latest_drill(storage)["result"] == "FAIL"
    storage.put_bytes("drills/20260521T100000Z/report.json", json.dumps(dict(newer, result="PASS")).encode())
    forged = evidence.latest_drill(storage)
    assert forged["result"] == "FAIL" and forged["error"].startswith("evidence unusable: drills/20260521T100000Z/")


def test_evidence_needs_a_finished_drill_report():
    with pytest.raises(ConfigurationError, match="PASS or FAIL, not 'PLANNED'"):
        evidence.write_evidence(None, {"result": "PLANNED", "started_at": "2026-02-21T10:00:00Z"}, "")
    with pytest.raises(ConfigurationError, match="not an ISO 8601 time"):
        evidence.drill_id({"started_at": "yesterday"})
    moment = datetime.datetime(2026, 2, 21, 11, 0, 0, tzinfo=datetime.timezone(datetime.timedelta(hours=1)))
    assert evidence.drill_id({"started_at": moment.isoformat()}) == "20260221T100000Z"


def test_a_variable_that_outranks_the_drill_is_named():
    wanted = evidence.overrides({"config": "/srv/drill", "kafka": ["s:9092"]})
    assert evidence.shadowed(wanted, wanted) == []
    effective = dict(wanted, config_backup_restore_dest="/srv/caas")
    assert evidence.shadowed(wanted, effective) == ["config_backup_restore_dest"]
    assert evidence.shadowed(wanted, {}) == ["kafka_backup_restore_bootstrap_servers", "config_backup_restore_dest"]
