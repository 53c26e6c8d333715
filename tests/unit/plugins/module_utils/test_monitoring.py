"""Backup health: latest sets, alerts, PITR coverage and the Prometheus text."""

import datetime

from ansible_collections.caas.backup.plugins.module_utils.catalog import BackupSet, new_backup_id
from ansible_collections.caas.backup.plugins.module_utils.monitoring import (
    DEFAULT_MAX_AGE_HOURS,
    pitr_coverage,
    render_metrics,
    summarize,
)

UTC = datetime.timezone.utc
NOW = datetime.datetime(2026, 11, 24, 12, tzinfo=UTC)


def bset(hours_ago, kind="config", source="app", size=1000, complete=True, facts=None, took=5):
    end = NOW - datetime.timedelta(hours=hours_ago)
    start = end - datetime.timedelta(seconds=took)
    manifest = None
    if complete:
        manifest = {
            "started_at": start.isoformat(),
            "finished_at": end.isoformat(),
            "objects": [],
            "facts": facts or {},
        }
    return BackupSet(kind, source, new_backup_id(start), manifest, size=size)


def ts(hours_ago):
    return {"t": int((NOW - datetime.timedelta(hours=hours_ago)).timestamp()), "i": 1}


def test_latest_per_kind_and_source_with_age_size_and_duration():
    summary = summarize(
        [bset(30), bset(2, size=1200), bset(3, kind="redis-rdb", source="cache")], NOW, DEFAULT_MAX_AGE_HOURS, 0.5
    )
    latest = {(e["kind"], e["source"]): e for e in summary["latest"]}
    assert latest[("config", "app")]["age_seconds"] == 7200
    assert latest[("config", "app")]["size"] == 1200 and latest[("config", "app")]["count"] == 2
    assert latest[("config", "app")]["duration_seconds"] == 5.0
    assert summary["alerts"] == []


def test_stale_backup_is_critical():
    summary = summarize([bset(26)], NOW, DEFAULT_MAX_AGE_HOURS, 0.5)
    [alert] = summary["alerts"]
    assert alert["severity"] == "critical" and "26.0 h old (limit 25 h)" in alert["message"]


def test_size_anomaly_is_a_warning_both_ways():
    for new_size in (100, 3000):
        summary = summarize([bset(5, size=1000), bset(1, size=new_size)], NOW, DEFAULT_MAX_AGE_HOURS, 0.5)
        [alert] = summary["alerts"]
        assert alert["severity"] == "warning" and f"{new_size} bytes" in alert["message"]
    assert summarize([bset(5, size=1000), bset(1, size=1400)], NOW, DEFAULT_MAX_AGE_HOURS, 0.5)["alerts"] == []


def test_missing_and_incomplete_only_sources_are_critical():
    summary = summarize(
        [bset(1, complete=False)], NOW, DEFAULT_MAX_AGE_HOURS, 0.5, expected=[("mongo-full", "rs0"), ("config", "app")]
    )
    messages = sorted(a["message"] for a in summary["alerts"])
    assert messages == ["no complete config backup of app (1 incomplete)", "no mongo-full backup of rs0 at all"]


def test_pitr_window_follows_contiguous_slices_and_reports_gaps():
    fulls = [
        bset(48, kind="mongo-full", facts={"last_ts": ts(48)}),
        bset(24, kind="mongo-full", facts={"last_ts": ts(24)}),
    ]
    slices = [bset(h, kind="mongo-oplog", facts={"first_ts": ts(h + 6), "last_ts": ts(h)}) for h in (42, 36, 18, 12, 6)]
    coverage = pitr_coverage(fulls, slices)
    assert coverage["earliest"] == "2026-11-22T12:00:00Z"
    assert coverage["latest"] == "2026-11-24T06:00:00Z"
    # From the first full, slices reach 36 h ago; the next full is at 24 h ago: a gap between.
    assert coverage["gaps"] == [{"from": "2026-11-23T00:00:00Z", "to": "2026-11-23T12:00:00Z"}]


def test_pitr_without_full_backups_has_no_window():
    assert pitr_coverage([], [bset(1, kind="mongo-oplog")]) == {"earliest": None, "latest": None, "gaps": []}


def test_metrics_text_format():
    fulls = [bset(2, kind="mongo-full", source="rs0", facts={"last_ts": ts(2)})]
    summary = summarize([bset(1, size=42), *fulls], NOW, DEFAULT_MAX_AGE_HOURS, 0.5, expected=[("redis-rdb", "c")])
    text = render_metrics(summary, NOW)
    assert (
        f'caas_backup_last_success_timestamp_seconds{{kind="config",source="app"}} {(NOW.timestamp() - 3600)}' in text
    )
    assert 'caas_backup_last_size_bytes{kind="config",source="app"} 42' in text
    assert 'caas_backup_pitr_window_end_timestamp_seconds{source="rs0"}' in text
    assert 'caas_backup_alerts{severity="critical"} 1' in text
    assert "# TYPE caas_backup_sets gauge" in text
    assert text.endswith("\n")
