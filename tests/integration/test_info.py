"""backup_info against real S3: latest sets, alerts and the metrics file."""

from harness import make_set, module_env, run_module, s3_storage


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
