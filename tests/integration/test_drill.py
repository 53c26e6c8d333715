"""playbooks/drill.yml over real servers: a drill into scratch targets that passes, one that fails, and the
HTML pages (the drill's evidence, backup_info's status page) opened in headless Chromium.

The site is three hosts (localhost aliases): app01 (configuration), db1 (a SecantusDB replica set) and cache01
(a redis-server). Kafka is left out to keep the run short: its drill path is dr.yml's own (test_site.py), and
the drill adds nothing Kafka-specific. The scratch targets are a second SecantusDB, a second redis-server and a
scratch directory, started by the test.
"""

import hashlib
import html.parser
import json
import shutil
import subprocess
import time
from pathlib import Path

import pymongo
import redis
import services
from harness import REPO, module_env, run_module, run_playbook, site_inventory
from test_site import files, make_config, servers, site_env

PLAYBOOKS = REPO / "playbooks"
ARTIFACTS = REPO / ".build" / "artifacts"


def evidence(store: Path) -> dict[str, dict]:
    """Each drill's evidence in a file:// storage: {drill_id: {name: bytes}}."""
    found = {}
    for directory in sorted((store / "drills").iterdir()):
        found[directory.name] = {p.name: p.read_bytes() for p in directory.iterdir()}
    return found


def check_sums(objects: dict) -> None:
    """SHA256SUMS names report.json and report.html with their sha256, as `sha256sum -c` reads it."""
    lines = dict(line.split("  ")[::-1] for line in objects["SHA256SUMS"].decode().splitlines())
    assert set(lines) == {"report.json", "report.html"}
    for name, digest in lines.items():
        assert hashlib.sha256(objects[name]).hexdigest() == digest, name


class VisibleText(html.parser.HTMLParser):
    """The text a page shows (no style or title)."""

    def __init__(self) -> None:
        super().__init__()
        self.parts: list[str] = []
        self.hidden = 0

    def handle_starttag(self, tag, attrs) -> None:
        self.hidden += tag in ("style", "title")

    def handle_endtag(self, tag) -> None:
        self.hidden -= tag in ("style", "title")

    def handle_data(self, data) -> None:
        if not self.hidden:
            self.parts.append(data + " ")


def chromium(page: Path, name: str, tmp_path: Path, height: int = 1400) -> str:
    """Open ``page`` in headless Chromium: its DOM's text (what it shows), and a screenshot kept in ARTIFACTS."""
    ARTIFACTS.mkdir(parents=True, exist_ok=True)
    base = [
        "chromium",
        "--headless=new",
        "--no-sandbox",
        "--disable-gpu",
        f"--user-data-dir={tmp_path / 'chromium'}",
    ]
    shot = ARTIFACTS / f"{name}.png"
    shot.unlink(missing_ok=True)
    subprocess.run(
        [*base, f"--screenshot={shot}", f"--window-size=1280,{height}", page.as_uri()],
        capture_output=True,
        timeout=120,
        check=True,
    )
    assert shot.stat().st_size > 10_000, "the screenshot must show a rendered page"
    dom = subprocess.run(
        [*base, "--dump-dom", page.as_uri()], capture_output=True, text=True, timeout=120, check=True
    ).stdout
    text = VisibleText()
    text.feed(dom)
    return " ".join("".join(text.parts).split())


def test_drill_restores_into_scratch_targets_stores_evidence_and_fails_truthfully(
    svc, file_url, age_key, mongo_server, tmp_path
):
    """A drill to a random point in time, into scratch targets a provision hook names, passes: evidence (JSON,
    HTML, SHA256SUMS) in drills/<id>/, RTO/RPO, the restored data against the backup's manifest, production's
    current values beside them (it moved on: different, never judged), production untouched. A second drill
    whose MongoDB target is production's own server, whose configuration an extra var points at production,
    and whose scratch Redis cannot start fails: the first two refused before anything is restored, FAIL
    evidence stored, non-zero exit, production untouched. Both pages (and backup_info's status page) render
    in Chromium."""
    store = Path(file_url.removeprefix("file://"))
    env = site_env(svc, file_url, age_key)
    with servers(tmp_path) as start:
        mongo, cache = mongo_server("db1"), start("redis", "cache01")
        root = tmp_path / "app01"
        make_config(root, "app01")
        prod = pymongo.MongoClient(mongo.url)
        prod.shop.orders.insert_many([{"_id": i} for i in range(40)])
        prod_redis = redis.Redis(port=cache.port)
        prod_redis.mset({f"session:{n}": n for n in range(15)})
        groups = {"caas_config": ["app01"], "caas_mongodb": ["db1"], "caas_redis": ["cache01"]}
        host_vars = {
            "app01": {"config_backup_root": str(root)},
            "db1": {"caas_backup_mongodb_uri": mongo.url},
            "cache01": {"redis_backup_login_port": cache.port},
        }
        inventory = site_inventory(tmp_path / "site.json", groups, host_vars)
        backup = run_playbook(PLAYBOOKS / "backup.yml", {}, env, inventory=inventory)
        assert backup.returncode == 0, backup.stdout + backup.stderr
        # Production moves on after the backup: more documents, keys, a changed file; the oplog is captured.
        time.sleep(1.1)  # a whole second inside the point-in-time window
        prod.shop.orders.insert_many([{"_id": i} for i in range(40, 55)])
        prod_redis.mset({f"late:{n}": n for n in range(5)})
        (root / "services" / "api.yml").write_text("name: app01-changed\n")
        oplog = run_playbook(PLAYBOOKS / "backup.yml", {"caas_backup_only": "mongodb-oplog"}, env, inventory=inventory)
        assert oplog.returncode == 0, oplog.stdout + oplog.stderr
        production_files = files(root)

        scratch_mongo = mongo_server("scratch-db")
        scratch_redis = start("redis", "scratch-cache")
        scratch_config = tmp_path / "scratch-config"
        reports = tmp_path / "reports"
        # The provision hook "provisions" the scratch targets (the test started them) and names them in a fact;
        # dr_site_targets is read after the hook ran.
        hook = tmp_path / "provision.yml"
        scratch = {
            "mongodb": scratch_mongo.url,
            "redis": {"url": scratch_redis.url, "start_command": services.redis_start_command(scratch_redis)},
            "config": str(scratch_config),
        }
        hook.write_text(json.dumps([{"ansible.builtin.set_fact": {"provisioned": scratch}}]))
        drill_vars = {
            "drill_point_in_time": "random",
            "dr_site_report_dir": str(reports),
            "dr_site_provision_tasks": str(hook),
            "dr_site_targets": "{{ provisioned | default({}) }}",  # the role checks its arguments earlier
        }
        drill = run_playbook(PLAYBOOKS / "drill.yml", drill_vars, env, inventory=inventory)
        assert drill.returncode == 0, drill.stdout + drill.stderr
        stored = evidence(store)
        assert len(stored) == 1, sorted(stored)
        drill_id, objects = next(iter(stored.items()))
        assert sorted(objects) == ["SHA256SUMS", "report.html", "report.json"]
        check_sums(objects)
        report = json.loads(objects["report.json"])
        assert report["result"] == "PASS", report["table"]
        assert drill_id == report["started_at"][:19].replace("-", "").replace(":", "") + "Z"
        assert report["rto_seconds"] > 0 and report["rpo_seconds"] > 0 and report["rto_met"] and report["rpo_met"]
        assert report["rto_objective_seconds"] == 14400 and report["rpo_objective_seconds"] == 21600
        assert report["drill"]["point_in_time"] == "random" and report["target_time"]
        components = {c["component"]: c for c in report["components"]}
        assert {c: e["status"] for c, e in components.items()} == {"config": "PASS", "mongodb": "PASS", "redis": "PASS"}
        assert components["mongodb"]["point_in_time"] and components["mongodb"]["data_time"] == report["target_time"]
        [keys] = components["redis"]["checks"]
        # The restored data equals the backup (15 keys); production, shown beside it, has moved on (20).
        assert (keys["expected"], keys["found"], keys["production"], keys["ok"]) == (15, 15, 20, True)
        [config] = components["config"]["checks"]
        assert config["ok"] and config["found"] == config["expected"] and config["production"] == config["found"] - 1
        assert all(c["production"]["reachable"] for c in components.values())
        assert report["drill"]["targets"]["mongodb@db1"] == scratch_mongo.url
        # Restored into the scratch targets; production untouched.
        restored = pymongo.MongoClient(scratch_mongo.url).shop.orders.count_documents({})
        assert 40 <= restored <= 55, restored
        assert redis.Redis(port=scratch_redis.port).dbsize() == 15
        assert (scratch_config / "services" / "api.yml").read_text() == "name: app01\n"
        assert prod.shop.orders.count_documents({}) == 55 and prod_redis.dbsize() == 20
        assert files(root) == production_files
        assert f"Drill PASS: evidence in {file_url}/drills/{drill_id}/" in drill.stdout

        page = tmp_path / "drill-pass.html"
        page.write_bytes(objects["report.html"])
        shown = chromium(page, "drill-pass", tmp_path)
        assert f"DR drill {report['started_at']} PASS" in shown
        assert "RTO (drill duration)" in shown and "met" in shown and "MISSED" not in shown
        assert "key count 15 15 20 ok" in shown, shown

        status = tmp_path / "status.html"
        info = run_module("backup_info", {"storage_url": file_url, "html_path": str(status)}, module_env(svc))
        assert info["rc"] == 0 and info["html_path"] == str(status), info
        shown = chromium(status, "status-page", tmp_path)
        for kind, source in (
            ("config", "app01"),
            ("mongo-full", "secantus"),
            ("mongo-oplog", "secantus"),
            ("redis-rdb", "cache01"),
        ):
            assert f"{kind} {source} 1 complete, 0 incomplete" in shown, (kind, source, shown)
        window = info["pitr"]["secantus"]
        assert f"secantus {window['earliest']} to {window['latest']} none" in shown, shown
        assert f"{report['started_at']} PASS" in shown and f"drills/{drill_id}/report.html" in shown

        # The failing drill: db1's target is production's own server, and an extra var (which outranks the
        # drill's own settings) points app01's configuration restore at production: both refused before anything
        # is restored; cache01's scratch Redis cannot start (its start command exits).
        broken_redis = start("redis", "broken-cache")
        failing = dict(
            drill_vars,
            drill_point_in_time="",
            dr_site_provision_tasks="",
            config_backup_restore_dest=str(root),
            dr_site_targets={
                "mongodb": mongo.url.replace("127.0.0.1", "localhost"),
                "redis": {"url": broken_redis.url, "start_command": ["/bin/sh", "-c", "exit 3"]},
                "config": str(tmp_path / "scratch-config-2"),
            },
        )
        time.sleep(1)  # a drill of its own second: evidence is never overwritten
        failed = run_playbook(PLAYBOOKS / "drill.yml", failing, env, inventory=inventory)
        assert failed.returncode != 0, failed.stdout
        stored = evidence(store)
        new_ids = sorted(set(stored) - {drill_id})
        assert len(new_ids) == 1, new_ids
        new_id = new_ids[0]
        check_sums(stored[new_id])
        report = json.loads(stored[new_id]["report.json"])
        assert report["result"] == "FAIL"
        assert sorted(report["failed"]) == ["config@app01", "mongodb@db1", "redis@cache01"]
        errors = {c["component"]: c.get("error", "") for c in report["components"]}
        assert errors["config"] == (
            "restore: Failed to check the drill's scratch targets: config_backup_restore_dest set where it "
            "outranks the drill's target (extra vars?): a drill never restores into production"
        )
        assert errors["mongodb"] == (
            "restore: Failed to check the drill's scratch targets: mongodb scratch target "
            f"{failing['dr_site_targets']['mongodb']} is production's (caas_backup_mongodb_uri): "
            "a drill never restores into production"
        )
        assert errors["redis"].startswith("restore: Failed to restore Redis: Redis exited with code 3")
        assert f"Drill FAIL: evidence in {file_url}/drills/{new_id}/" in failed.stdout
        assert prod.shop.orders.count_documents({}) == 55 and prod_redis.dbsize() == 20
        assert files(root) == production_files

        page = tmp_path / "drill-fail.html"
        page.write_bytes(stored[new_id]["report.html"])
        shown = chromium(page, "drill-fail", tmp_path)
        assert f"DR drill {report['started_at']} FAIL" in shown and "a drill never restores into production" in shown
        shutil.rmtree(tmp_path / "chromium", ignore_errors=True)
