"""backup.yml and dr.yml as an operator runs them, and where secrets may never show up."""

import json
import os
import shutil
import subprocess
import threading
from pathlib import Path

from harness import REPO, dr_report, module_env, run_module, run_playbook, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import list_sets

SECRET_ENV = "MONGO_PASSWORD=do-not-leak-7f3a\n"


def make_site(root: Path) -> None:
    (root / "keys").mkdir(parents=True)
    (root / "services" / "api" / "config").mkdir(parents=True)
    (root / ".env").write_text(SECRET_ENV)
    (root / "keys" / "jwt.pem").write_text("-----BEGIN PRIVATE KEY-----\n")
    (root / "services" / "api" / "config" / "app.yml").write_text("port: 8080\n")
    (root / "docker-compose.yml").write_text("services: {}\n")
    os.chmod(root / ".env", 0o600)


def snapshot(root: Path) -> dict:
    return {
        str(p.relative_to(root)): (p.read_bytes(), p.stat().st_mode, int(p.stat().st_mtime))
        for p in sorted(root.rglob("*"))
        if p.is_file()
    }


class ArgvWatch:
    """Samples every process's argv while a run goes on, to catch a secret passed on a command line."""

    def __init__(self, needles: list[str]) -> None:
        self.needles = [n.encode() for n in needles]
        self.found: list[str] = []
        self.samples = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            for proc in Path("/proc").iterdir():
                if not proc.name.isdigit():
                    continue
                try:
                    argv = (proc / "cmdline").read_bytes()
                except OSError:
                    continue
                if any(n in argv for n in self.needles):
                    self.found.append(argv.replace(b"\0", b" ").decode(errors="replace"))
            self.samples += 1

    def __enter__(self):
        self._thread.start()
        return self

    def __exit__(self, *exc) -> None:
        self._stop.set()
        self._thread.join()


def test_backup_then_dr_restores_byte_identical_files_and_reports_rto_rpo(svc, s3_url, age_key, tmp_path):
    site = tmp_path / "site"
    make_site(site)
    before = snapshot(site)
    reports = tmp_path / "reports"
    secret_key = "wJalrXUtnFEMI-distinctive-test-secret-0001"
    env = module_env(svc, AWS_SECRET_ACCESS_KEY=secret_key)  # moto accepts any key: a distinctive one to hunt
    extra = {
        "caas_backup_storage_url": s3_url,
        "caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "config_backup_root": str(site),
        "config_backup_paths": [".env", "docker-compose.yml", "keys", "services"],
        "dr_site_report_dir": str(reports),
    }
    with ArgvWatch([secret_key, age_key["identity"], "do-not-leak"]) as watch:
        backup = run_playbook(REPO / "playbooks" / "backup.yml", extra, env, "-v")
        assert backup.returncode == 0, backup.stdout + backup.stderr
        shutil.rmtree(site)
        dr = run_playbook(REPO / "playbooks" / "dr.yml", extra, env, "-v")
        assert dr.returncode == 0, dr.stdout + dr.stderr
    assert watch.samples > 5, "the argv watch must have sampled during the runs"
    assert watch.found == [], f"a secret appeared in a process's argv: {watch.found}"
    assert snapshot(site) == before
    measured = dr_report(reports)
    assert measured["result"] == "PASS"
    assert float(measured["rto_seconds"]) > 0
    assert float(measured["rpo_seconds"]) >= 0
    [config] = measured["components"]
    assert (config["component"], config["source"], config["status"]) == ("config", "localhost", "PASS")
    for output in (backup.stdout, dr.stdout, backup.stderr, dr.stderr):
        assert secret_key not in output and age_key["identity"] not in output and "do-not-leak" not in output
    [bset] = list_sets(s3_storage(svc, s3_url), "config")
    manifest = json.dumps(bset.manifest)
    assert secret_key not in manifest and age_key["recipient"] not in manifest and "do-not-leak" not in manifest


def test_stock_tools_restore_a_backup_without_the_collection(svc, s3_url, s3, age_key, tmp_path):
    """The disaster path with nothing but the AWS API, age, zstd and tar."""
    site = tmp_path / "site"
    make_site(site)
    made = run_module(
        "config_backup",
        {
            "storage_url": s3_url,
            "root": str(site),
            "paths": [".env", "keys", "services", "docker-compose.yml"],
            "encryption_recipients": [age_key["recipient"]],
            "source_name": "web",
        },
        module_env(svc),
    )
    assert made["rc"] == 0, made
    prefix = s3_url.split("/", 3)[3]
    key = f"{prefix}/config/web/{made['backup_id']}/config.tar.zst.age"
    (tmp_path / "obj").write_bytes(s3.get_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key)["Body"].read())
    out = tmp_path / "out"
    out.mkdir()
    plain = subprocess.run(
        ["age", "-d", "-i", age_key["file"], str(tmp_path / "obj")], capture_output=True, check=True
    ).stdout
    tar = subprocess.run(["zstd", "-dc"], input=plain, capture_output=True, check=True).stdout
    subprocess.run(["tar", "-x", "-C", str(out)], input=tar, check=True)
    assert snapshot(out) == snapshot(site)


def test_secrets_without_recipients_are_refused_and_nothing_is_written(svc, s3_url, tmp_path):
    site = tmp_path / "site"
    make_site(site)
    result = run_module(
        "config_backup", {"storage_url": s3_url, "root": str(site), "paths": [".env", "keys"]}, module_env(svc)
    )
    assert result["rc"] == 1
    assert "refusing to store secrets in the clear" in result["msg"]
    assert list_sets(s3_storage(svc, s3_url), "config") == []


def test_check_mode_writes_nothing_and_reports_the_plan(svc, s3_url, age_key, tmp_path):
    site = tmp_path / "site"
    make_site(site)
    args = {"storage_url": s3_url, "root": str(site), "paths": ["services", "docker-compose.yml"], "source_name": "w"}
    planned = run_module("config_backup", args, module_env(svc), check_mode=True)
    assert planned["rc"] == 0 and planned["backup_id"] == "" and planned["files"] == 2
    assert list_sets(s3_storage(svc, s3_url), "config") == []
    assert run_module("config_backup", args, module_env(svc))["rc"] == 0
    dest = tmp_path / "dest"
    restore = {"storage_url": s3_url, "dest": str(dest)}
    plan = run_module("config_restore", restore, module_env(svc), check_mode=True)
    assert plan["changed"] and "docker-compose.yml" in plan["created"]
    assert not dest.exists()
    assert run_module("config_restore", restore, module_env(svc))["changed"]
    (dest / "docker-compose.yml").write_text("tampered\n")
    again = run_module("config_restore", restore, module_env(svc))
    assert again["updated"] == ["docker-compose.yml"] and again["created"] == []
    assert (dest / "docker-compose.yml").read_text() == "services: {}\n"
    assert not run_module("config_restore", restore, module_env(svc))["changed"]


def test_config_backup_check_mode_reports_the_files_and_bytes_and_stores_nothing(svc, s3_url, tmp_path):
    """config_backup in check mode: changed, the file list, count and bytes the real backup then records, where
    it would go (on S3); nothing is stored. Without source_name the source is this machine's host name, the one
    default that is a machine's name (configuration files belong to their machine)."""
    site = tmp_path / "site"
    make_site(site)
    args = {"storage_url": s3_url, "root": str(site), "paths": ["services", "docker-compose.yml"]}
    storage = s3_storage(svc, s3_url)
    planned = run_module("config_backup", args, module_env(svc), check_mode=True)
    assert planned["rc"] == 0, planned
    assert planned["changed"] is True and planned["backup_id"] == "" and planned["kind"] == "config"
    assert planned["source"] == os.uname().nodename
    assert planned["location"] == f"{s3_url}/config/{os.uname().nodename}/"
    assert planned["files"] == 2 and planned["bytes"] == len("port: 8080\n") + len("services: {}\n")
    assert planned["msg"] == f"would write a config backup of 2 file(s), 24 bytes (5 names) to {planned['location']}"
    assert list(storage.list("")) == []
    made = run_module("config_backup", args, module_env(svc))
    assert made["rc"] == 0, made
    facts = list_sets(storage, "config")[0].facts
    assert (facts["files"], facts["bytes"], facts["names"]) == (planned["files"], planned["bytes"], planned["names"])
