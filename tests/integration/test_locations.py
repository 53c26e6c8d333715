"""A second backup location, as an operator runs it: copy.yml to a second S3 bucket and a local directory, the
primary bucket deleted, dr.yml restoring from the second location, prune.yml over every location.

One test for the whole story (each playbook run costs seconds on this machine): the real S3 server (moto) holds
the primary and the second bucket, a directory the third location.
"""

import shutil
from pathlib import Path

from harness import REPO, dr_report, make_set, module_env, run_module, run_playbook, s3_storage
from test_playbooks import make_site, snapshot

from ansible_collections.caas.backup.plugins.module_utils.catalog import MANIFEST, list_sets
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

PLAYBOOKS = REPO / "playbooks"


def test_copies_survive_the_primary_bucket_and_a_corrupted_object_is_never_copied(svc, s3, age_key, tmp_path):
    primary_bucket, second_bucket = "caas-primary-locations", "caas-second-locations"
    for bucket in (primary_bucket, second_bucket):
        s3.create_bucket(Bucket=bucket)
    primary, second = f"s3://{primary_bucket}/prod", f"s3://{second_bucket}/prod"
    third = f"file://{tmp_path / 'copy'}"  # does not exist yet: the copy creates it
    site = tmp_path / "site"
    make_site(site)
    before = snapshot(site)
    env = module_env(svc)
    extra = {
        "caas_backup_storage_url": primary,
        "caas_backup_s3_endpoint_url": svc["CAAS_S3_ENDPOINT"],
        "caas_backup_storage_fallback_urls": [second, third],
        "caas_backup_encryption_recipients": [age_key["recipient"]],
        "caas_backup_encryption_identity_file": age_key["file"],
        "config_backup_root": str(site),
        "config_backup_paths": [".env", "docker-compose.yml", "keys", "services"],
        "dr_site_report_dir": str(tmp_path / "reports"),
    }
    backup = run_playbook(PLAYBOOKS / "backup.yml", extra, env)
    assert backup.returncode == 0, backup.stdout + backup.stderr
    source = s3_storage(svc, primary)
    [config] = list_sets(source, "config")
    # A second set whose data object is then corrupted in the primary: it must not be copied as good.
    bad_prefix = make_set(source, 1, kind="kafka-meta")
    [bad] = list_sets(source, "kafka-meta")
    bad_key = f"{bad_prefix}/{bad.record('data')['name']}"
    data = bytearray(source.get_bytes(bad_key))
    data[10] ^= 0x20
    source.put_bytes(bad_key, bytes(data))

    # An erasure request: restores from a copy must apply it too, so the ledger goes with the sets.
    asked = run_module(
        "backup_erasure",
        {
            "storage_url": primary,
            "encryption_recipients": [age_key["recipient"]],
            "requested_by": "dpo",
            "reason": "ticket 9",
            "redis": ["user:9:*"],
        },
        env,
    )
    assert asked["rc"] == 0, asked
    ledger = sorted(info.key for info in source.list("erasure/"))
    assert ledger == [asked["key"]]

    planned = run_playbook(PLAYBOOKS / "copy.yml", extra, env, "--check")
    assert planned.returncode == 0, planned.stdout + planned.stderr
    assert "would copy 2 set(s)" in planned.stdout
    assert not list(s3_storage(svc, second).list()) and not Path(tmp_path / "copy").exists()

    copied = run_playbook(PLAYBOOKS / "copy.yml", extra, env)
    assert copied.returncode != 0, "a set failing its sha256 fails the copy run"
    assert bad_key in copied.stdout and "sha256" in copied.stdout, copied.stdout
    copies = {second: s3_storage(svc, second), third: open_storage(third)}
    for url, storage in copies.items():
        [there] = [s for s in list_sets(storage) if s.complete]
        assert there.prefix == config.prefix and there.manifest == config.manifest, url
        for key in config.keys:
            assert storage.get_bytes(key) == source.get_bytes(key), f"{key} in {url} is not byte-identical"
        assert [info.key for info in storage.list(f"{bad_prefix}/")] == [], f"{url} holds part of the bad set"
        for key in ledger:
            assert storage.get_bytes(key) == source.get_bytes(key), f"the erasure ledger's {key} is not in {url}"
    # Monitoring shows each location's freshness: one metrics file per location, each series labelled with it.
    metrics = tmp_path / "metrics" / "caas_backup.prom"
    watched = run_playbook(PLAYBOOKS / "monitoring.yml", {**extra, "backup_monitoring_metrics_path": str(metrics)}, env)
    assert watched.returncode == 0, watched.stdout + watched.stderr
    for path, url in (
        (metrics, primary),
        (metrics.with_name("caas_backup-2.prom"), second),
        (metrics.with_name("caas_backup-3.prom"), third),
    ):
        fresh = f'caas_backup_last_success_timestamp_seconds{{location="{url}",kind="config",source="{config.source}"}}'
        assert fresh in path.read_text(), f"{path} has no freshness of {url}"

    again = run_module(
        "backup_copy",
        {"storage_url": primary, "dest_storage_url": second, "kinds": ["config"]},
        env,
    )
    assert again["rc"] == 0 and not again["changed"] and again["present"] == [config.prefix], again

    s3.delete_objects(
        Bucket=primary_bucket,
        Delete={"Objects": [{"Key": o["Key"]} for o in s3.list_objects_v2(Bucket=primary_bucket)["Contents"]]},
    )
    s3.delete_bucket(Bucket=primary_bucket)
    shutil.rmtree(site)
    dr = run_playbook(PLAYBOOKS / "dr.yml", extra, env)
    assert dr.returncode == 0, dr.stdout + dr.stderr
    assert snapshot(site) == before
    [component] = dr_report(tmp_path / "reports")["components"]
    assert (component["status"], component["backup_id"]) == ("PASS", config.backup_id)
    assert component["storage_url"] == second, component
    output = dr.stdout + dr.stderr
    assert "storage location skipped" in output and primary in output and "does not exist" in output, output

    # The second bucket gone too: the module restores from the third location, and says which and why.
    restored = run_module(
        "config_restore",
        {
            "storage_url": primary,
            "storage_fallback_urls": ["s3://caas-never-made/prod", third],
            "dest": str(tmp_path / "from-third"),
            "encryption_identity_file": age_key["file"],
        },
        env,
    )
    assert restored["rc"] == 0 and restored["storage_url"] == third and restored["backup_id"] == config.backup_id
    skipped = [w for w in restored.get("warnings", ()) if "storage location skipped" in str(w)]
    assert len(skipped) == 2 and primary in str(skipped[0]) and "caas-never-made" in str(skipped[1])
    assert snapshot(tmp_path / "from-third") == before

    # Retention per location: prune.yml plans each location it is given (the primary is gone: the copies only).
    pruned = run_playbook(PLAYBOOKS / "prune.yml", {**extra, "caas_backup_storage_url": second}, env, "--check")
    assert pruned.returncode == 0, pruned.stdout + pruned.stderr
    assert pruned.stdout.count("would delete 0 set(s)") == 2, pruned.stdout
    assert all(s.complete for s in list_sets(copies[third])) and (tmp_path / "copy" / config.prefix / MANIFEST).exists()
