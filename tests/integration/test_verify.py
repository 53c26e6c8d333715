"""backup_verify on real S3: checksum and test-restore levels, recorded reports, and what backup_info makes of them."""

import json
import shutil
import subprocess
from pathlib import Path

import pytest
from harness import module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, SIGNATURE, VERIFICATION, latest


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


# ---------------------------------------------------------------- signed manifests and forged sets

SSH_KEYGEN = shutil.which("ssh-keygen")
needs_ssh_keygen = pytest.mark.skipif(SSH_KEYGEN is None, reason="ssh-keygen (openssh-client) is not installed")


def ed25519_key(directory, name):
    """A key pair made by the stock ssh-keygen: the private key's path and the public key line."""
    path = directory / name
    subprocess.run([SSH_KEYGEN, "-q", "-t", "ed25519", "-N", "", "-C", f"{name}@caas", "-f", str(path)], check=True)
    return str(path), (directory / f"{name}.pub").read_text().strip()


def config_set(svc, s3_url, age_key, root, compose, **signing):
    """A config set of ``root`` holding ``docker-compose.yml`` = ``compose``, written by config_backup."""
    root.mkdir(parents=True, exist_ok=True)
    (root / "docker-compose.yml").write_text(compose)
    args = {
        "storage_url": s3_url,
        "root": str(root),
        "paths": ["docker-compose.yml"],
        "encryption_recipients": [age_key["recipient"]],
        "source_name": "web",
        **signing,
    }
    made = run_module("config_backup", args, module_env(svc))
    assert made["rc"] == 0, made
    return made["backup_id"]


@pytest.fixture()
def signed_site(svc, s3_url, age_key, tmp_path):
    """A genuine set signed by the backup key, and the target directory with the file it manages."""
    key_file, public = ed25519_key(tmp_path, "backup")
    genuine = config_set(svc, s3_url, age_key, tmp_path / "genuine", "image: app:1\n", signing_key_file=key_file)
    dest = tmp_path / "dest"
    dest.mkdir()
    (dest / "docker-compose.yml").write_text("image: app:1-running\n")
    allowed = tmp_path / "allowed_signers"
    allowed.write_text(f"backup@caas {public}\n")
    return {"genuine": genuine, "public": public, "allowed": str(allowed), "dest": dest, "key_file": key_file}


def warnings_of(result):
    """A module result's warning texts (ansible-core 2.19 returns them as event dicts)."""
    return [w["event"]["msg"] if isinstance(w, dict) else w for w in result.get("warnings", ())]


def snapshot(directory):
    return {str(p.relative_to(directory)): p.read_bytes() for p in sorted(directory.rglob("*")) if p.is_file()}


@needs_ssh_keygen
def test_signed_set_verifies_here_and_with_stock_ssh_keygen(svc, s3_url, age_key, signed_site, tmp_path):
    args = {"storage_url": s3_url, "encryption_identity_file": age_key["file"]}
    args["trusted_signers"] = [signed_site["public"]]
    result = run_module("backup_verify", args, module_env(svc))
    assert result["rc"] == 0, result
    [report] = result["reports"]
    assert report["ok"] and report["signed_by"].endswith(" (backup@caas)")
    assert not any("signatures are not checked" in w for w in warnings_of(result))
    storage = s3_storage(svc, s3_url)
    prefix = f"config/web/{signed_site['genuine']}"
    (tmp_path / "manifest.json").write_bytes(storage.get_bytes(f"{prefix}/{MANIFEST}"))
    (tmp_path / "manifest.json.sig").write_bytes(storage.get_bytes(f"{prefix}/{SIGNATURE}"))
    stock = subprocess.run(
        [SSH_KEYGEN, "-Y", "verify", "-f", signed_site["allowed"], "-I", "backup@caas", "-n", "caas-backup"]
        + ["-s", str(tmp_path / "manifest.json.sig")],
        stdin=(tmp_path / "manifest.json").open("rb"),
        capture_output=True,
        check=False,
    )
    assert stock.returncode == 0, stock.stderr
    assert b'Good "caas-backup" signature for backup@caas' in stock.stdout


@needs_ssh_keygen
@pytest.mark.parametrize("forger", ["attacker key", "unsigned"])
def test_forged_set_is_refused_by_restore_and_failed_by_verify(svc, s3_url, age_key, signed_site, tmp_path, forger):
    """A forger with bucket write access and the public recipient writes a newer set with its own compose file."""
    signing = {}
    if forger == "attacker key":
        signing["signing_key_file"] = ed25519_key(tmp_path, "attacker")[0]
    forged = config_set(svc, s3_url, age_key, tmp_path / "evil", "image: evil/miner\n", **signing)
    why = "which is not a trusted signer" if signing else "manifest is not signed (no manifest.json.sig)"
    dest, before = signed_site["dest"], snapshot(signed_site["dest"])
    trusted = {"trusted_signers_file": signed_site["allowed"], "encryption_identity_file": age_key["file"]}
    common = {"storage_url": s3_url, **trusted}

    refused = run_module("config_restore", {**common, "dest": str(dest), "backup_id": forged}, module_env(svc))
    assert refused["rc"] == 1
    assert f"backup config/web/{forged} is incomplete (manifest" in refused["msg"] and why in refused["msg"]
    assert snapshot(dest) == before

    verified = run_module("backup_verify", common, module_env(svc))
    assert verified["rc"] == 1 and verified["failed"] == 1 and verified["verified"] == 1
    assert f"first config/web/{forged}: " in verified["msg"] and why in verified["msg"]
    bad = next(r for r in verified["reports"] if r["backup_id"] == forged)
    assert bad["checks"][0]["check"] == "manifest" and why in bad["checks"][0]["error"]

    fallback = run_module("config_restore", {**common, "dest": str(dest)}, module_env(svc))
    assert fallback["rc"] == 0, fallback
    assert fallback["backup_id"] == signed_site["genuine"]
    assert any(f"not the 1 newer broken set(s): config/web/{forged}: " in w for w in warnings_of(fallback))
    assert (dest / "docker-compose.yml").read_text() == "image: app:1\n"


@needs_ssh_keygen
def test_broken_newest_manifest_fails_verify_and_restore_falls_back_with_a_warning(
    svc, s3_url, age_key, signed_site, s3
):
    """No trusted signers here: the manifest's own sha256 catches a flip that leaves it valid JSON."""
    newest = config_set(svc, s3_url, age_key, signed_site["dest"].parent / "newer", "image: app:2\n")
    key = f"{s3_url.split('/', 3)[3]}/config/web/{newest}/{MANIFEST}"
    body = s3.get_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key)["Body"].read()
    damaged = body.replace(b'"files": 1', b'"files": 3')  # '1' -> '3' is one bit
    assert damaged != body
    s3.put_object(Bucket=svc["CAAS_S3_BUCKET"], Key=key, Body=damaged)
    args = {"storage_url": s3_url, "encryption_identity_file": age_key["file"]}

    verified = run_module("backup_verify", args, module_env(svc))
    assert verified["rc"] == 1 and verified["failed"] == 1 and verified["verified"] == 1
    assert f"first config/web/{newest}: manifest does not match its manifest_sha256" in verified["msg"]
    assert any("signatures are not checked" in w for w in warnings_of(verified))

    restored = run_module("config_restore", {**args, "dest": str(signed_site["dest"])}, module_env(svc))
    assert restored["rc"] == 0 and restored["backup_id"] == signed_site["genuine"]
    warnings = warnings_of(restored)
    assert sum("signatures are not checked" in w for w in warnings) == 1
    assert any(f"not the 1 newer broken set(s): config/web/{newest}: manifest does not match" in w for w in warnings)


@needs_ssh_keygen
def test_keys_from_the_environment_sign_and_check_and_the_secret_is_never_returned(svc, s3_url, tmp_path):
    key_file, public = ed25519_key(tmp_path, "env")
    secret = Path(key_file).read_text()
    site = tmp_path / "site"
    site.mkdir()
    (site / "app.yml").write_text("port: 1\n")
    args = {"storage_url": s3_url, "root": str(site), "paths": ["app.yml"], "source_name": "web"}
    made = run_module("config_backup", args, module_env(svc, CAAS_SIGNING_KEY=secret))
    assert made["rc"] == 0, made
    assert secret.splitlines()[1] not in json.dumps(made)
    verified = run_module("backup_verify", {"storage_url": s3_url}, module_env(svc, CAAS_TRUSTED_SIGNERS=public))
    assert verified["rc"] == 0, verified
    assert verified["reports"][0]["signed_by"].endswith(" (env@caas)")
    wrong_args = {"storage_url": s3_url, "trusted_signers": ["ssh-rsa AAAAB3Nza"]}
    wrong = run_module("backup_verify", wrong_args, module_env(svc))
    assert wrong["rc"] == 1
    assert wrong["msg"] == "Failed to verify backups: trusted_signers entry 1 line 1 holds no ssh-ed25519 public key"
