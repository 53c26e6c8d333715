"""Backup health: latest sets, alerts, PITR coverage and the Prometheus text."""

import datetime

from ansible_collections.caas.backup.plugins.module_utils.catalog import BackupSet, iso, new_backup_id
from ansible_collections.caas.backup.plugins.module_utils.monitoring import (
    DEFAULT_MAX_AGE_HOURS,
    pitr_coverage,
    render_metrics,
    summarize,
)
from ansible_collections.caas.backup.plugins.module_utils.retention import DEFAULT_POLICY, plan

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
    located = render_metrics(summary, NOW, "s3://copy/prod")
    assert 'caas_backup_last_size_bytes{location="s3://copy/prod",kind="config",source="app"} 42' in located
    assert 'caas_backup_alerts{location="s3://copy/prod",severity="critical"} 1' in located


def steady_state(now, weeks=5):
    """What weeks of a healthy schedule leave: a full backup every day at 02:00 (consistent point two minutes
    later), an oplog slice every 5 minutes continuing the previous one (also across full backups), all pruned by
    the default policy. ``now`` is just after a full backup and before the next capture."""
    step = datetime.timedelta(minutes=5)
    start = (now - datetime.timedelta(weeks=weeks)).replace(minute=3, second=0)  # captures at :03, :08, ...
    day = start.replace(hour=2, minute=0, second=0)
    sets = []
    while day <= now:
        point = day + datetime.timedelta(minutes=2)
        if point + datetime.timedelta(seconds=30) <= now:
            end = point + datetime.timedelta(seconds=30)
            sets.append(
                BackupSet(
                    "mongo-full",
                    "rs0",
                    new_backup_id(day),
                    {"started_at": iso(day), "finished_at": iso(end), "objects": [], "facts": {"last_ts": tsat(point)}},
                    size=1000,
                )
            )
        day += datetime.timedelta(days=1)
    first = start
    while first + step <= now:
        last = first + step
        facts = {"first_ts": tsat(first), "last_ts": tsat(last)}
        manifest = {"started_at": iso(last), "finished_at": iso(last), "objects": [], "facts": facts}
        sets.append(BackupSet("mongo-oplog", "rs0", new_backup_id(last), manifest, size=1000))
        first = last
    decisions = plan(sets, now, DEFAULT_POLICY)
    return [d.bset for d in decisions if d.keep]


def tsat(moment):
    return {"t": int(moment.timestamp()), "i": 1}


def gap_alerts(sets, now):
    summary = summarize(sets, now, DEFAULT_MAX_AGE_HOURS, 0)
    return [a for a in summary["alerts"] if "point-in-time gap" in a["message"]], summary


def test_a_healthy_steady_state_raises_no_gap_alert_and_a_real_gap_raises_one():
    """Daily full backups kept for 30 days and more, slices for 7 days: the older full backups are restore points
    of their own, no gap; the newest full backup, taken after the last capture, is none either. A slice lost
    inside the window is a gap, and alerted once."""
    now = datetime.datetime(2026, 11, 24, 2, 2, 45, tzinfo=UTC)
    kept = steady_state(now)
    fulls = [s for s in kept if s.kind == "mongo-full"]
    assert len(fulls) >= 30 and sum(s.kind == "mongo-oplog" for s in kept) > 7 * 288
    alerts, summary = gap_alerts(kept, now)
    assert alerts == []
    window = summary["pitr"]["rs0"]
    assert window["latest"] == "2026-11-24T02:02:00Z" and window["earliest"] < "2026-11-17T02:03:00Z"
    lost = [s for s in kept if s.kind == "mongo-oplog" and s.time == datetime.datetime(2026, 11, 20, 12, 3, tzinfo=UTC)]
    alerts, _summary = gap_alerts([s for s in kept if s not in lost], now)
    assert [a["message"] for a in alerts] == ["point-in-time gap from 2026-11-20T11:58:00Z to 2026-11-21T02:02:00Z"]


def test_full_backups_without_any_slice_raise_no_gap():
    """Without oplog capture, every full backup is a restore point of its own: nothing is a gap."""
    fulls = [bset(h, kind="mongo-full", facts={"last_ts": ts(h)}) for h in (72, 48, 24)]
    assert pitr_coverage(fulls, []) == {
        "earliest": "2026-11-23T12:00:00Z",
        "latest": "2026-11-23T12:00:00Z",
        "gaps": [],
    }


def test_slices_no_full_backup_reaches_are_a_gap():
    """The slices joining the only full backup to the newer ones are gone: targets up to the newest slice cannot be
    restored, and that is alerted."""
    fulls = [bset(120, kind="mongo-full", facts={"last_ts": ts(120)})]
    slices = [bset(h, kind="mongo-oplog", facts={"first_ts": ts(h + 1), "last_ts": ts(h)}) for h in range(72, 0, -1)]
    alerts, summary = gap_alerts([*fulls, *slices], NOW)
    assert summary["pitr"]["app"]["gaps"] == [{"from": "2026-11-19T12:00:00Z", "to": "2026-11-24T11:00:00Z"}]
    assert [a["message"] for a in alerts] == ["point-in-time gap from 2026-11-19T12:00:00Z to 2026-11-24T11:00:00Z"]


# ---- issue 13: per-kind thresholds, attempts, space, drills


def test_oplog_slices_are_no_size_anomaly_but_full_backups_still_are():
    slices = [bset(2, kind="mongo-oplog", size=1000), bset(1, kind="mongo-oplog", size=90000)]
    fulls = [bset(26, kind="mongo-full", size=1000), bset(1, kind="mongo-full", size=5000)]
    summary = summarize(slices + fulls, NOW, DEFAULT_MAX_AGE_HOURS, 0.5)
    assert [(a["kind"], a["severity"]) for a in summary["alerts"]] == [("mongo-full", "warning")]
    anomaly = {e["kind"]: e["size_anomaly"] for e in summary["latest"]}
    assert anomaly == {"mongo-full": True, "mongo-oplog": False}
    # A kind's own ratio wins over the general one, both ways.
    tuned = summarize(slices + fulls, NOW, DEFAULT_MAX_AGE_HOURS, 0.5, size_change_ratios={"mongo-full": 10})
    assert tuned["alerts"] == []
    strict = summarize(slices, NOW, DEFAULT_MAX_AGE_HOURS, 0.5, size_change_ratios={"mongo-oplog": 2})
    assert [a["kind"] for a in strict["alerts"]] == ["mongo-oplog"]


def test_sub_second_durations_and_the_baseline_of_the_previous_sets():
    sets = [bset(h, took=t) for h, t in ((5, 10), (4, 12), (3, 11), (2, 0.25))]
    [entry] = summarize(sets, NOW, DEFAULT_MAX_AGE_HOURS, 0)["latest"]
    assert entry["duration_seconds"] == 0.25 and entry["duration_baseline_seconds"] == 11
    assert entry["max_age_seconds"] == 25 * 3600


def attempt(result, error=None, kind="config", source="app", action="write", minute=0):
    return {
        "action": action,
        "kind": kind,
        "source": source,
        "result": result,
        "error": error,
        "started_at": f"2026-11-24T10:{minute:02d}:00Z",
        "finished_at": f"2026-11-24T10:{minute:02d}:01.5Z",
        "duration_seconds": 1.5,
    }


def test_attempt_stats_count_and_two_failures_in_a_row_are_critical():
    tried = [
        attempt("failed", "SourceError", minute=1),
        attempt("ok", minute=2),
        attempt("failed", "SourceError", minute=3),
        attempt("failed", "killed", minute=4),
        attempt("running", minute=5),
        attempt("failed", "StorageError", action="verify", kind="", minute=6),
    ]
    summary = summarize([bset(1)], NOW, DEFAULT_MAX_AGE_HOURS, 0.5, attempts=tried)
    stats = {(s["action"], s["kind"]): s for s in summary["attempts"]}
    write = stats[("write", "config")]
    assert (write["succeeded"], write["failed"], write["consecutive_failures"]) == (1, 3, 2)
    assert (write["last_result"], write["last_error"], write["last_attempt_time"]) == (
        "failed",
        "killed",
        "2026-11-24T10:04:01.5Z",
    )
    assert stats[("verify", "")]["consecutive_failures"] == 1
    [alert] = summary["alerts"]
    assert alert["severity"] == "critical" and alert["message"] == (
        "the last 2 config write attempts of app failed (last: killed)"
    )


def test_storage_space_alerts_and_a_failed_drill():
    def alerts(**extra):
        return [(a["severity"], a["message"]) for a in summarize([], NOW, {}, 0, **extra)["alerts"]]

    assert alerts(storage={"total_bytes": 100, "free_bytes": 10}) == [
        ("critical", "backup storage has 10% free (below 20%)")
    ]
    assert alerts(storage={"total_bytes": 100, "free_bytes": 30}) == [
        ("warning", "backup storage has 30% free (below 50%)")
    ]
    assert alerts(storage={"total_bytes": 100, "free_bytes": 60}, drill={"result": "PASS"}) == []
    assert alerts(drill={"result": "FAIL", "started_at": "2026-11-24T09:00:00Z"}) == [
        ("critical", "the last DR drill (2026-11-24T09:00:00Z) failed")
    ]


def test_storage_usage_against_a_quota_or_the_filesystem(tmp_path):
    from ansible_collections.caas.backup.plugins.module_utils.monitoring import storage_usage
    from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage

    storage = LocalStorage(str(tmp_path))
    storage.put_bytes("config/app/x/data", b"x" * 300)
    assert storage_usage(storage, 1000) == {"total_bytes": 1000, "free_bytes": 700, "used_bytes": 300}
    assert storage_usage(storage, 100)["free_bytes"] == 0
    disk = storage_usage(storage)
    assert 0 < disk["free_bytes"] <= disk["total_bytes"]


def test_metrics_of_attempts_space_drill_and_verification():
    from ansible_collections.caas.backup.plugins.module_utils.monitoring import render_metrics as render

    newest = bset(1)
    summary = summarize(
        [bset(2), newest],
        NOW,
        DEFAULT_MAX_AGE_HOURS,
        0.5,
        expected=[("redis-rdb", "cache")],
        verifications={newest.prefix: {"ok": False, "verified_at": "2026-11-24T11:30:00Z"}},
        attempts=[attempt("failed", "SourceError")],
        storage={"total_bytes": 1000, "free_bytes": 400},
        drill={"result": "FAIL", "finished_at": "2026-11-24T10:00:00Z", "rto_seconds": 4000.5, "rpo_seconds": True},
    )
    lines = set(render(summary, NOW).splitlines())
    labels = '{kind="config",source="app"}'
    attempt_labels = '{action="write",kind="config",source="app"}'
    for line in (
        f"caas_backup_max_age_seconds{labels} 90000",
        f"caas_backup_size_anomaly{labels} 0",
        f"caas_backup_stored_bytes{labels} 2000",
        'caas_backup_missing{kind="redis-rdb",source="cache"} 1',
        f"caas_backup_consecutive_failures{attempt_labels} 1",
        f"caas_backup_last_attempt_success{attempt_labels} 0",
        f"caas_backup_last_attempt_timestamp_seconds{attempt_labels} {parse(attempt('x')['finished_at'])}",
        f"caas_backup_attempts_failed{attempt_labels} 1",
        f"caas_backup_last_verification_success{labels} 0",
        f"caas_backup_last_verification_timestamp_seconds{labels} {parse('2026-11-24T11:30:00Z')}",
        "caas_backup_storage_total_bytes 1000",
        "caas_backup_storage_free_bytes 400",
        "caas_backup_drill_success 0",
        f"caas_backup_drill_last_timestamp_seconds {parse('2026-11-24T10:00:00Z')}",
        "caas_backup_drill_rto_seconds 4000.5",
    ):
        assert line in lines
    assert not any(line.startswith("caas_backup_drill_rpo_seconds ") for line in lines), "a bool is no number"


def parse(text):
    from ansible_collections.caas.backup.plugins.module_utils.catalog import parse_time

    return parse_time(text).timestamp()


def test_label_values_are_escaped_and_pushgateway_groups_encoded():
    from ansible_collections.caas.backup.plugins.module_utils.monitoring import _group, _labels

    assert _labels(source='a"b\\c\nd') == '{source="a\\"b\\\\c\\nd"}'
    assert _group("job", "caas_backup") == "job/caas_backup"
    assert _group("instance", "s3://caas-backups/prod") == "instance@base64/czM6Ly9jYWFzLWJhY2t1cHMvcHJvZA=="
    assert _group("instance", "") == "instance@base64/="
