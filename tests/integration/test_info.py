"""backup_info against real S3: latest sets, alerts and the metrics file."""

import datetime

from harness import NOW, make_set, module_env, run_module, s3_storage

from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter, latest, list_sets
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions


def test_report_alerts_and_metrics(svc, s3_url, tmp_path):
    storage = s3_storage(svc, s3_url)
    make_set(storage, 3)
    newest = make_set(storage, 2)
    metrics = tmp_path / "caas_backup.prom"
    args = {
        "storage_url": s3_url,
        "expect": ["config/app", "redis-rdb/cache01"],
        "metrics_path": str(metrics),
        "list_sets": True,
    }
    checked = run_module("backup_info", args, module_env(svc), check_mode=True)
    assert checked["rc"] == 0, checked
    assert not metrics.exists(), "check mode must not write the metrics file"
    report = run_module("backup_info", args, module_env(svc))
    assert report["rc"] == 0 and not report["changed"]
    [latest] = report["latest"]
    assert f"{latest['kind']}/{latest['source']}/{latest['backup_id']}" == newest
    assert latest["count"] == 2 and latest["age_seconds"] >= 2 * 86400
    messages = [a["message"] for a in report["alerts"]]
    assert "no redis-rdb backup of cache01 at all" in messages
    assert any(m.startswith("newest config backup of app is") and "(limit 25 h)" in m for m in messages)
    assert len(report["sets"]) == 2
    text = metrics.read_text()
    assert 'caas_backup_sets{kind="config",source="app"} 2' in text
    assert 'caas_backup_alerts{severity="critical"} 2' in text


def test_bad_expect_entry_is_a_clear_error(svc, s3_url):
    result = run_module("backup_info", {"storage_url": s3_url, "expect": ["config"]}, module_env(svc))
    assert (
        result["rc"] == 1 and result["msg"] == "Failed to report on backups: expect entry 'config' is not kind/source"
    )


def test_sets_of_the_same_second_are_one_order_for_info_prune_and_restore(svc, s3_url):
    """Two sets finishing in the same second: backup_info's newest, the set a restore picks (catalog.latest) and
    the set prune keeps are the same one."""
    storage = s3_storage(svc, s3_url)
    when = NOW - datetime.timedelta(days=400)
    for suffix in ("ffff", "0000"):
        writer = SetWriter(storage, "config", "app", WriteOptions("none"), now=when)
        writer.backup_id = f"{when:%Y%m%dT%H%M%S}.000Z-{suffix}"
        with writer.object("data") as out:
            out.write(b"x")
        writer.commit({}, finished_at=when)
    restore_picks = latest(storage, "config", "app").backup_id
    report = run_module("backup_info", {"storage_url": s3_url}, module_env(svc))
    assert report["rc"] == 0, report
    assert [e["backup_id"] for e in report["latest"]] == [restore_picks]
    pruned = run_module("s3_backup_prune", {"storage_url": s3_url}, module_env(svc))
    assert pruned["rc"] == 0, pruned
    assert [s.backup_id for s in list_sets(storage)] == [restore_picks]


def test_abandoned_attempts_are_counted_and_published(svc, s3_url, s3, tmp_path):
    """An old incomplete set and a killed upload (no part: moto dates every upload 2010-11-10) are counted per kind,
    as the next prune would clean them; the metrics carry them."""
    storage = s3_storage(svc, s3_url)
    make_set(storage, 1)
    make_set(storage, 3, commit=False)
    make_set(storage, 0, kind="redis-rdb", commit=False)  # young: may still be written
    s3.create_multipart_upload(Bucket=storage.bucket, Key=f"{storage.prefix}/config/app/20260101T000000.000Z-0007/d")
    metrics = tmp_path / "caas_backup.prom"
    report = run_module("backup_info", {"storage_url": s3_url, "metrics_path": str(metrics)}, module_env(svc))
    assert report["rc"] == 0, report
    assert report["abandoned"] == {"config": {"incomplete_sets": 1, "unfinished_uploads": 1, "empty_directories": 0}}
    text = metrics.read_text()
    assert 'caas_backup_abandoned{kind="config",what="incomplete_sets"} 1' in text
    assert 'caas_backup_abandoned{kind="config",what="unfinished_uploads"} 1' in text
    only_redis = run_module("backup_info", {"storage_url": s3_url, "kinds": ["redis-rdb"]}, module_env(svc))
    assert only_redis["abandoned"] == {}
    bad = run_module("backup_info", {"storage_url": s3_url, "incomplete_grace_hours": -2}, module_env(svc))
    assert bad["rc"] == 1 and "incomplete_grace_hours must be a whole number from 0 to 87600" in bad["msg"]
