# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the catalog says about backup health: latest sets, ages, sizes, PITR coverage, alerts, metrics.

Pure functions of (sets, now, thresholds), so every alert rule is unit-tested.
"""

from __future__ import annotations

import datetime

from ansible_collections.caas.backup.plugins.module_utils.catalog import BackupSet, iso, parse_time, set_order
from ansible_collections.caas.backup.plugins.module_utils.retention import consistent_point, slice_span

# Alert when the newest backup is older than this: the schedule's interval plus slack.
DEFAULT_MAX_AGE_HOURS = {
    "mongo-full": 25,
    "mongo-oplog": 1,
    "redis-rdb": 7,
    "redis-aof": 7,
    "kafka-meta": 25,
    "kafka-messages": 1,
    "config": 25,
}


def _duration(bset: BackupSet) -> float | None:
    manifest = bset.manifest or {}
    if manifest.get("started_at") and manifest.get("finished_at"):
        return (parse_time(manifest["finished_at"]) - parse_time(manifest["started_at"])).total_seconds()
    return None


def pitr_coverage(fulls: list[BackupSet], slices: list[BackupSet]) -> dict:
    """Earliest and latest restorable moment of one MongoDB source, and the gaps between.

    From each full backup's consistent point, contiguous oplog slices (each
    starting at or before the previous one's end) reach further; the union of
    those stretches is what a point-in-time restore can reach. Full backups
    older than the oldest stretch the slices extend are restore points of their
    own, as retention keeps them (daily, weekly...) long after their slices are
    gone: they open no window, and the spaces between them are no gap. A gap is
    a hole after the window opened: slices that stopped connecting (not the
    minutes between the last capture and a full backup taken since), or slices
    beyond the window that no full backup reaches.
    """
    points = sorted(consistent_point(f) for f in fulls if f.complete)
    if not points:
        return {"earliest": None, "latest": None, "gaps": []}
    chain = sorted(slice_span(s) for s in slices if s.complete)

    def reach(start: datetime.datetime) -> datetime.datetime:
        position = start
        for first, last in chain:
            if first > position:
                break
            position = max(position, last)
        return position

    stretches: list[list[datetime.datetime]] = []
    for start, end in sorted((p, reach(p)) for p in points):
        if stretches and start <= stretches[-1][1]:
            stretches[-1][1] = max(stretches[-1][1], end)
        else:
            stretches.append([start, end])
    opened = next((n for n, (start, end) in enumerate(stretches) if end > start), len(stretches) - 1)
    stretches = stretches[opened:]
    gaps = [{"from": iso(a[1]), "to": iso(b[0])} for a, b in zip(stretches, stretches[1:], strict=False)]
    if len(stretches) > 1 and stretches[-1][0] == stretches[-1][1]:
        # The newest full backup, taken after the last capture: the next slice continues over it.
        gaps.pop()
    newest = max((last for _first, last in chain), default=None)
    if newest is not None and newest > stretches[-1][1]:
        # Slices no full backup reaches (their base, or the slices joining it, are gone): not restorable.
        gaps.append({"from": iso(stretches[-1][1]), "to": iso(newest)})
    return {"earliest": iso(stretches[0][0]), "latest": iso(stretches[-1][1]), "gaps": gaps}


def lost_records_alerts(source: str, sets: list[BackupSet]) -> list[dict]:
    """A critical alert per Kafka message set that recorded lost offsets (deleted by the broker before capture)."""
    alerts = []
    for bset in sets:
        lost = {k: p["lost"] for k, p in (bset.facts.get("partitions") or {}).items() if p.get("lost")}
        if lost:
            ranges = "; ".join(f"{k} {', '.join(f'{a}..{b - 1}' for a, b in r)}" for k, r in sorted(lost.items()))
            alerts.append(
                {
                    "severity": "critical",
                    "kind": "kafka-messages",
                    "source": source,
                    "message": f"kafka-messages set {bset.backup_id} of {source} lost records deleted by the broker "
                    f"before capture: {ranges}",
                }
            )
    return alerts


def summarize(
    sets: list[BackupSet],
    now: datetime.datetime,
    max_age_hours: dict[str, float],
    size_change_ratio: float,
    expected: list[tuple[str, str]] = (),
    verifications: dict[str, dict] | None = None,
) -> dict:
    """Latest set per kind and source, PITR coverage per MongoDB source, and the alerts these raise.

    ``expected`` lists (kind, source) pairs that must have a backup: a missing
    one is a critical alert, as is a newest set older than its kind's max age.
    ``verifications`` maps a set's prefix to its last backup_verify report;
    a failed one is a critical alert.
    """
    groups: dict[tuple[str, str], list[BackupSet]] = {}
    for bset in sets:
        groups.setdefault((bset.kind, bset.source), []).append(bset)
    latest, alerts = [], []
    for (kind, source), group in sorted(groups.items()):
        complete = sorted((s for s in group if s.complete), key=set_order)
        incomplete = len(group) - len(complete)
        if not complete:
            alerts.append(
                {
                    "severity": "critical",
                    "kind": kind,
                    "source": source,
                    "message": f"no complete {kind} backup of {source} ({incomplete} incomplete)",
                }
            )
            continue
        if kind == "kafka-messages":
            alerts.extend(lost_records_alerts(source, complete))
        newest = complete[-1]
        age = (now - newest.time).total_seconds()
        entry = {
            "kind": kind,
            "source": source,
            "backup_id": newest.backup_id,
            "time": iso(newest.time),
            "age_seconds": int(age),
            "size": newest.size,
            "duration_seconds": _duration(newest),
            "count": len(complete),
            "incomplete": incomplete,
            "total_size": sum(s.size for s in group),
            "verification": None,
        }
        latest.append(entry)
        report = (verifications or {}).get(newest.prefix)
        if report is not None:
            entry["verification"] = {k: report.get(k) for k in ("ok", "level", "verified_at")}
            if not report.get("ok"):
                alerts.append(
                    {
                        "severity": "critical",
                        "kind": kind,
                        "source": source,
                        "message": f"verification of the newest {kind} backup of {source} failed",
                    }
                )
        limit = max_age_hours.get(kind)
        if limit is not None and age > limit * 3600:
            alerts.append(
                {
                    "severity": "critical",
                    "kind": kind,
                    "source": source,
                    "message": f"newest {kind} backup of {source} is {age / 3600:.1f} h old (limit {limit} h)",
                }
            )
        if len(complete) >= 2 and size_change_ratio > 0:
            previous = complete[-2].size
            if previous and abs(newest.size - previous) / previous > size_change_ratio:
                alerts.append(
                    {
                        "severity": "warning",
                        "kind": kind,
                        "source": source,
                        "message": f"newest {kind} backup of {source} is {newest.size} bytes, "
                        f"{newest.size / previous:.2f}x the previous one ({previous} bytes)",
                    }
                )
    for kind, source in expected:
        if (kind, source) not in groups:
            alerts.append(
                {
                    "severity": "critical",
                    "kind": kind,
                    "source": source,
                    "message": f"no {kind} backup of {source} at all",
                }
            )
    pitr = {}
    for source in sorted({s for k, s in groups if k == "mongo-full"}):
        pitr[source] = pitr_coverage(groups[("mongo-full", source)], groups.get(("mongo-oplog", source), []))
        for gap in pitr[source]["gaps"]:
            alerts.append(
                {
                    "severity": "warning",
                    "kind": "mongo-oplog",
                    "source": source,
                    "message": f"point-in-time gap from {gap['from']} to {gap['to']}",
                }
            )
    return {"latest": latest, "pitr": pitr, "alerts": alerts}


def _labels(**labels: str) -> str:
    body = ",".join(f'{k}="{v}"' for k, v in labels.items())
    return "{" + body + "}" if body else ""


def render_metrics(summary: dict, now: datetime.datetime) -> str:
    """Prometheus text exposition format, for node_exporter's textfile collector."""
    lines = []

    def metric(name: str, kind: str, help_text: str, samples: list[tuple[dict, float]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} {kind}")
        lines.extend(f"{name}{_labels(**labels)} {value}" for labels, value in samples)

    latest = summary["latest"]
    per_set = [({"kind": e["kind"], "source": e["source"]}, e) for e in latest]
    metric(
        "caas_backup_last_success_timestamp_seconds",
        "gauge",
        "End time of the newest complete backup.",
        [(lab, parse_time(e["time"]).timestamp()) for lab, e in per_set],
    )
    metric(
        "caas_backup_last_size_bytes",
        "gauge",
        "Stored size of the newest complete backup.",
        [(lab, e["size"]) for lab, e in per_set],
    )
    metric(
        "caas_backup_last_duration_seconds",
        "gauge",
        "How long the newest complete backup took.",
        [(lab, e["duration_seconds"]) for lab, e in per_set if e["duration_seconds"] is not None],
    )
    metric("caas_backup_sets", "gauge", "Complete backup sets in storage.", [(lab, e["count"]) for lab, e in per_set])
    metric(
        "caas_backup_incomplete_sets",
        "gauge",
        "Backup sets without a manifest.",
        [(lab, e["incomplete"]) for lab, e in per_set],
    )
    windows = [(source, w) for source, w in summary["pitr"].items() if w["latest"]]
    metric(
        "caas_backup_pitr_window_start_timestamp_seconds",
        "gauge",
        "Earliest point-in-time restore target.",
        [({"source": s}, parse_time(w["earliest"]).timestamp()) for s, w in windows],
    )
    metric(
        "caas_backup_pitr_window_end_timestamp_seconds",
        "gauge",
        "Latest point-in-time restore target.",
        [({"source": s}, parse_time(w["latest"]).timestamp()) for s, w in windows],
    )
    metric(
        "caas_backup_last_verification_success",
        "gauge",
        "1 when the newest backup's last verification passed, 0 when it failed.",
        [(lab, int(bool(e["verification"]["ok"]))) for lab, e in per_set if e["verification"]],
    )
    metric(
        "caas_backup_alerts",
        "gauge",
        "Backup alerts raised, by severity.",
        [({"severity": sev}, sum(a["severity"] == sev for a in summary["alerts"])) for sev in ("critical", "warning")],
    )
    metric(
        "caas_backup_abandoned",
        "gauge",
        "Killed or abandoned attempts still in storage: incomplete sets, unfinished uploads, empty directories.",
        [
            ({"kind": kind, "what": what}, count)
            for kind, counts in summary.get("abandoned", {}).items()
            for what, count in counts.items()
        ],
    )
    metric("caas_backup_info_timestamp_seconds", "gauge", "When these metrics were computed.", [({}, now.timestamp())])
    return "\n".join(lines) + "\n"
