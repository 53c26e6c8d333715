"""backup_verify on real S3: checksum and test-restore levels, recorded reports, and what backup_info makes of them."""

import pytest
from harness import module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import VERIFICATION, latest


@pytest.fixture()
def backed_up(svc, s3_url, age_key, tmp_path):
    site = tmp_path / "site"
    (site / "keys").mkdir(parents=True)
    (site / "keys" / "tls.key").write_text("PRIVATE\n")
    (site / "app.yml").write_text("port: 1\n" * 100)
    made = run_module(
        "config_backup",
        {
            "storage_url": s3_url,
            "root": str(site),
            "paths": ["keys", "app.yml"],
            "encryption_recipients": [age_key["recipient"]],
            "source_name": "web",
        },
        module_env(svc),
    )
    assert made["rc"] == 0, made
    return made


@pytest.mark.parametrize("level", ["checksum", "restore"])
def test_good_backup_verifies_and_the_report_is_recorded(svc, s3_url, age_key, backed_up, level):
    args = {"storage_url": s3_url, "level": level, "encryption_identity_file": age_key["file"]}
    result = run_module("backup_verify", args, module_env(svc))
    assert result["rc"] == 0, result
    [report] = result["reports"]
    assert report["ok"] and report["backup_id"] == backed_up["backup_id"]
    checks = {c["check"]: c for c in report["checks"]}
    assert checks["sha256 config.tar.zst.age"]["ok"]
    if level == "checksum":
        assert checks["checksum config.tar"]["members"] == 3
    else:
        assert checks["restore config.tar"]["files"] == 2 and checks["restore config.tar"]["bytes"] == 808
    storage = s3_storage(svc, s3_url)
    bset = latest(storage, "config", "web")
    assert f"{bset.prefix}/{VERIFICATION}" in bset.keys
    info = run_module("backup_info", {"storage_url": s3_url}, module_env(svc))
    assert info["latest"][0]["verification"]["ok"] is True
    assert info["latest"][0]["verification"]["level"] == level


def test_corrupted_backup_fails_verification_and_raises_an_alert(svc, s3_url, s3, age_key, backed_up):
    key = f"{s3_url.split('/', 3)[3]}/config/web/{backed_up['backup_id']}/config.tar.zst.age"
    body = bytearray(s3.get_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key)["Body"].read())
    body[-20] ^= 0xFF
    s3.put_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key, Body=bytes(body))
    result = run_module(
        "backup_verify", {"storage_url": s3_url, "encryption_identity_file": age_key["file"]}, module_env(svc)
    )
    assert result["rc"] == 1
    assert result["msg"].startswith("Failed to verify backups: 1 of 1 set(s) failed, first config/web/")
    assert "corrupted" in result["msg"] and result["failed"] == 1
    info = run_module("backup_info", {"storage_url": s3_url}, module_env(svc))
    assert "verification of the newest config backup of web failed" in [a["message"] for a in info["alerts"]]


def test_encrypted_backup_without_identity_fails_clearly(svc, s3_url, backed_up):
    result = run_module("backup_verify", {"storage_url": s3_url}, module_env(svc))
    assert result["rc"] == 1
    assert "is encrypted: give encryption_identity or encryption_identity_file" in result["msg"]


def test_check_mode_lists_the_sets_and_reads_nothing(svc, s3_url, backed_up):
    result = run_module("backup_verify", {"storage_url": s3_url}, module_env(svc), check_mode=True)
    assert result["rc"] == 0 and [r["backup_id"] for r in result["reports"]] == [backed_up["backup_id"]]
    assert VERIFICATION not in str(list(s3_storage(svc, s3_url).list("")))


def test_unknown_backup_id_is_not_found(svc, s3_url, backed_up):
    result = run_module("backup_verify", {"storage_url": s3_url, "backup_id": "20200101T000000Z-0000"}, module_env(svc))
    assert result["rc"] == 1 and "no complete backup 20200101T000000Z-0000" in result["msg"]
