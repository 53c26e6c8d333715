# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""What the catalog says about backup health: latest sets, ages, sizes, PITR coverage, attempts, storage space,
drills, alerts, and the Prometheus metrics of all of it (a textfile for node_exporter, or a Pushgateway push).

Pure functions of (sets, attempts, now, thresholds), so every alert is unit-tested; the few readers of the
storage (:func:`storage_usage`; the last drill is evidence.latest_drill's) and :func:`push_metrics` are kept apart.
"""

from __future__ import annotations

import base64
import datetime
import os
import statistics
from urllib.parse import quote, urlparse

from ansible_collections.caas.backup.plugins.module_utils.catalog import BackupSet, iso, parse_time, set_order
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError, StorageError
from ansible_collections.caas.backup.plugins.module_utils.retention import consistent_point, slice_span
from ansible_collections.caas.backup.plugins.module_utils.storage import LocalStorage, Storage

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


# Warn when the newest set's size differs from the previous one's by more than this fraction, per kind
# (over the module's ``size_change_ratio``): an incremental kind holds what changed since the last one,
# whose size follows the write load, not the data: no size anomaly (0 turns the check off).
DEFAULT_SIZE_CHANGE_RATIOS = {"mongo-oplog": 0.0, "kafka-messages": 0.0}
# Consecutive failed attempts of one kind and source that are a critical alert.
FAILURES_CRITICAL = 2
# Free storage below these fractions of the total: critical, warning.
SPACE_CRITICAL = 0.2
SPACE_WARNING = 0.5
# How many of the previous sets' durations make the baseline a new duration is compared with.
DURATION_BASELINE_SETS = 5


def _duration(bset: BackupSet) -> float | None:
    """Seconds from a manifest's ``started_at`` to its ``finished_at`` (whole seconds in old manifests)."""
    manifest = bset.manifest or {}
    if manifest.get("started_at") and manifest.get("finished_at"):
        return (parse_time(manifest["finished_at"]) - parse_time(manifest["started_at"])).total_seconds()
    return None


def _baseline(sets: list[BackupSet]) -> float | None:
    """The median duration of the sets before the newest (up to DURATION_BASELINE_SETS of them)."""
    durations = [d for d in (_duration(s) for s in sets[-DURATION_BASELINE_SETS - 1 : -1]) if d is not None]
    return statistics.median(durations) if durations else None


def _alert(severity: str, kind: str, source: str, message: str) -> dict:
    return {"severity": severity, "kind": kind, "source": source, "message": message}


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


def attempt_stats(attempts: list[dict]) -> list[dict]:
    """Per action, kind and source: the last attempt (time, result, duration), the failures since the last
    success, and the attempts that succeeded and failed, from :func:`audit.attempts` (oldest first).

    Attempts still running are left out: they have no result yet.
    """
    groups: dict[tuple[str, str, str], dict] = {}
    for attempt in attempts:
        if attempt.get("result") not in ("ok", "failed"):
            continue
        key = (attempt.get("action") or "", attempt.get("kind") or "", attempt.get("source") or "")
        entry = groups.setdefault(
            key,
            {
                "action": key[0],
                "kind": key[1],
                "source": key[2],
                "succeeded": 0,
                "failed": 0,
                "consecutive_failures": 0,
            },
        )
        ok = attempt["result"] == "ok"
        entry["succeeded" if ok else "failed"] += 1
        entry["consecutive_failures"] = 0 if ok else entry["consecutive_failures"] + 1
        entry.update(
            last_attempt_time=attempt.get("finished_at") or attempt.get("started_at"),
            last_result=attempt["result"],
            last_error=attempt.get("error"),
            last_duration_seconds=attempt.get("duration_seconds"),
        )
    return [groups[key] for key in sorted(groups)]


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
    *,
    size_change_ratios: dict[str, float] | None = None,
    attempts: list[dict] | None = None,
    storage: dict | None = None,
    drill: dict | None = None,
) -> dict:
    """Latest set per kind and source, PITR coverage per MongoDB source, attempts, and the alerts these raise.

    ``expected`` lists (kind, source) pairs that must have a backup: a missing
    one is a critical alert, as is a newest set older than its kind's max age.
    ``verifications`` maps a set's prefix to its last backup_verify report;
    a failed one is a critical alert. ``size_change_ratios`` are per-kind size
    anomaly thresholds over ``size_change_ratio`` (see DEFAULT_SIZE_CHANGE_RATIOS).
    ``attempts`` (:func:`audit.attempts`), ``storage`` (:func:`storage_usage`) and
    ``drill`` (evidence.latest_drill) add failure, space and DR drill alerts.
    """
    ratios = {**DEFAULT_SIZE_CHANGE_RATIOS, **(size_change_ratios or {})}
    groups: dict[tuple[str, str], list[BackupSet]] = {}
    for bset in sets:
        groups.setdefault((bset.kind, bset.source), []).append(bset)
    latest, alerts, missing = [], [], []
    for (kind, source), group in sorted(groups.items()):
        complete = sorted((s for s in group if s.complete), key=set_order)
        incomplete = len(group) - len(complete)
        if not complete:
            missing.append({"kind": kind, "source": source})
            alerts.append(
                _alert("critical", kind, source, f"no complete {kind} backup of {source} ({incomplete} incomplete)")
            )
            continue
        if kind == "kafka-messages":
            alerts.extend(lost_records_alerts(source, complete))
        newest = complete[-1]
        age = (now - newest.time).total_seconds()
        limit = max_age_hours.get(kind)
        entry = {
            "kind": kind,
            "source": source,
            "backup_id": newest.backup_id,
            "time": iso(newest.time),
            "age_seconds": int(age),
            "max_age_seconds": limit * 3600 if limit is not None else None,
            "size": newest.size,
            "duration_seconds": _duration(newest),
            "duration_baseline_seconds": _baseline(complete),
            "count": len(complete),
            "incomplete": incomplete,
            "total_size": sum(s.size for s in group),
            "size_anomaly": False,
            "verification": None,
        }
        latest.append(entry)
        report = (verifications or {}).get(newest.prefix)
        if report is not None:
            entry["verification"] = {k: report.get(k) for k in ("ok", "level", "verified_at")}
            if not report.get("ok"):
                alerts.append(
                    _alert("critical", kind, source, f"verification of the newest {kind} backup of {source} failed")
                )
        if limit is not None and age > limit * 3600:
            alerts.append(
                _alert(
                    "critical",
                    kind,
                    source,
                    f"newest {kind} backup of {source} is {age / 3600:.1f} h old (limit {limit} h)",
                )
            )
        ratio = ratios.get(kind, size_change_ratio)
        if len(complete) >= 2 and ratio > 0:
            previous = complete[-2].size
            if previous and abs(newest.size - previous) / previous > ratio:
                entry["size_anomaly"] = True
                alerts.append(
                    _alert(
                        "warning",
                        kind,
                        source,
                        f"newest {kind} backup of {source} is {newest.size} bytes, "
                        f"{newest.size / previous:.2f}x the previous one ({previous} bytes)",
                    )
                )
    for kind, source in expected:
        if (kind, source) not in groups:
            missing.append({"kind": kind, "source": source})
            alerts.append(_alert("critical", kind, source, f"no {kind} backup of {source} at all"))
    pitr = {}
    for source in sorted({s for k, s in groups if k == "mongo-full"}):
        pitr[source] = pitr_coverage(groups[("mongo-full", source)], groups.get(("mongo-oplog", source), []))
        for gap in pitr[source]["gaps"]:
            alerts.append(
                _alert("warning", "mongo-oplog", source, f"point-in-time gap from {gap['from']} to {gap['to']}")
            )
    stats = attempt_stats(attempts or [])
    for entry in stats:
        if entry["consecutive_failures"] >= FAILURES_CRITICAL:
            what = f"{entry['kind'] or 'any kind'} {entry['action']}"
            alerts.append(
                _alert(
                    "critical",
                    entry["kind"],
                    entry["source"],
                    f"the last {entry['consecutive_failures']} {what} attempts of "
                    f"{entry['source'] or 'an unnamed source'} failed (last: {entry['last_error']})",
                )
            )
    if storage and storage.get("total_bytes"):
        free = storage["free_bytes"] / storage["total_bytes"]
        for severity, below in (("critical", SPACE_CRITICAL), ("warning", SPACE_WARNING)):
            if free < below:
                alerts.append(_alert(severity, "", "", f"backup storage has {free:.0%} free (below {below:.0%})"))
                break
    if drill is not None and drill.get("result") != "PASS":
        alerts.append(_alert("critical", "", "", f"the last DR drill ({drill.get('started_at')}) failed"))
    return {
        "latest": latest,
        "pitr": pitr,
        "alerts": alerts,
        "missing": missing,
        "attempts": stats,
        "storage": storage,
        "drill": drill,
    }


def storage_usage(storage: Storage, quota_bytes: int | None = None) -> dict | None:
    """Total, free and used bytes of the backup storage, or None when they cannot be known.

    Against ``quota_bytes`` when given (S3 has no size of its own: the used bytes are every object's
    below the storage URL); else, for a local directory, its filesystem (``statvfs``).
    """
    if quota_bytes:
        used = sum(info.size for info in storage.list(""))
        return {"total_bytes": quota_bytes, "free_bytes": max(quota_bytes - used, 0), "used_bytes": used}
    if isinstance(storage, LocalStorage):
        try:
            st = os.statvfs(storage.root)
        except OSError as exc:
            raise StorageError(f"cannot read the space of {storage.root}: {exc.strerror}") from None
        total, free = st.f_blocks * st.f_frsize, st.f_bavail * st.f_frsize
        return {"total_bytes": total, "free_bytes": free, "used_bytes": total - st.f_bfree * st.f_frsize}
    return None


def _escape(value: object) -> str:
    return str(value).replace("\\", "\\\\").replace("\n", "\\n").replace('"', '\\"')


def _labels(**labels: object) -> str:
    body = ",".join(f'{k}="{_escape(v)}"' for k, v in labels.items())
    return "{" + body + "}" if body else ""


def _timestamp(text: str | None) -> float | None:
    if not text:
        return None
    try:
        return parse_time(text).timestamp()
    except BackupError:
        return None


def render_metrics(summary: dict, now: datetime.datetime, location: str | None = None) -> str:
    """Prometheus text exposition format (0.0.4), one family per fact, for node_exporter's textfile collector
    or a Pushgateway. Times are Unix seconds; 0/1 families are 1 for success (or for an anomaly).

    ``location`` (a storage URL) labels every sample, so the catalogs of several locations (a primary and its
    copies) are series of their own side by side."""
    lines = []
    where = {"location": location} if location else {}

    def metric(name: str, help_text: str, samples: list[tuple[dict, float | None]]) -> None:
        lines.append(f"# HELP {name} {help_text}")
        lines.append(f"# TYPE {name} gauge")
        lines.extend(f"{name}{_labels(**where, **labels)} {value}" for labels, value in samples if value is not None)

    per_set = [({"kind": e["kind"], "source": e["source"]}, e) for e in summary["latest"]]
    metric(
        "caas_backup_last_success_timestamp_seconds",
        "End time of the newest complete backup.",
        [(lab, parse_time(e["time"]).timestamp()) for lab, e in per_set],
    )
    metric(
        "caas_backup_max_age_seconds",
        "Age past which the newest backup of this kind is too old (max_age_hours).",
        [(lab, e.get("max_age_seconds")) for lab, e in per_set],
    )
    metric(
        "caas_backup_last_size_bytes",
        "Stored size of the newest complete backup.",
        [(lab, e["size"]) for lab, e in per_set],
    )
    metric(
        "caas_backup_size_anomaly",
        "1 when the newest backup's size differs from the previous one's past its kind's size_change_ratio.",
        [(lab, int(e.get("size_anomaly", False))) for lab, e in per_set],
    )
    metric(
        "caas_backup_last_duration_seconds",
        "How long the newest complete backup took.",
        [(lab, e["duration_seconds"]) for lab, e in per_set],
    )
    metric(
        "caas_backup_duration_baseline_seconds",
        f"Median duration of the up to {DURATION_BASELINE_SETS} complete backups before the newest.",
        [(lab, e.get("duration_baseline_seconds")) for lab, e in per_set],
    )
    metric(
        "caas_backup_stored_bytes",
        "Bytes stored for this kind and source, all sets.",
        [(lab, e["total_size"]) for lab, e in per_set],
    )
    metric("caas_backup_sets", "Complete backup sets in storage.", [(lab, e["count"]) for lab, e in per_set])
    metric(
        "caas_backup_incomplete_sets", "Backup sets without a manifest.", [(lab, e["incomplete"]) for lab, e in per_set]
    )
    metric(
        "caas_backup_missing",
        "1 for an expected kind and source without any complete backup.",
        [({"kind": m["kind"], "source": m["source"]}, 1) for m in summary.get("missing", ())],
    )
    attempts = [
        ({"action": a["action"], "kind": a["kind"], "source": a["source"]}, a) for a in summary.get("attempts", ())
    ]
    metric(
        "caas_backup_last_attempt_timestamp_seconds",
        "When the last recorded attempt (backup, delete, verify, restore...) ended.",
        [(lab, _timestamp(a["last_attempt_time"])) for lab, a in attempts],
    )
    metric(
        "caas_backup_last_attempt_success",
        "1 when the last recorded attempt succeeded, 0 when it failed (or was killed).",
        [(lab, int(a["last_result"] == "ok")) for lab, a in attempts],
    )
    metric(
        "caas_backup_last_attempt_duration_seconds",
        "How long the last recorded attempt took.",
        [(lab, a["last_duration_seconds"]) for lab, a in attempts],
    )
    metric(
        "caas_backup_consecutive_failures",
        "Failed attempts since the last successful one.",
        [(lab, a["consecutive_failures"]) for lab, a in attempts],
    )
    metric(
        "caas_backup_attempts_succeeded",
        "Attempts that succeeded within the audit window read (audit_window_days).",
        [(lab, a["succeeded"]) for lab, a in attempts],
    )
    metric(
        "caas_backup_attempts_failed",
        "Attempts that failed (or were killed) within the audit window read (audit_window_days).",
        [(lab, a["failed"]) for lab, a in attempts],
    )
    space = summary.get("storage") or {}
    metric(
        "caas_backup_storage_total_bytes",
        "Size of the backup storage (filesystem, or storage_quota_bytes).",
        [({}, space.get("total_bytes"))],
    )
    metric("caas_backup_storage_free_bytes", "Free bytes of the backup storage.", [({}, space.get("free_bytes"))])
    verified = [(lab, e["verification"]) for lab, e in per_set if e["verification"]]
    metric(
        "caas_backup_last_verification_timestamp_seconds",
        "When the newest backup was last verified.",
        [(lab, _timestamp(v.get("verified_at"))) for lab, v in verified],
    )
    metric(
        "caas_backup_last_verification_success",
        "1 when the newest backup's last verification passed, 0 when it failed.",
        [(lab, int(bool(v["ok"]))) for lab, v in verified],
    )
    windows = [(source, w) for source, w in summary["pitr"].items() if w["latest"]]
    metric(
        "caas_backup_pitr_window_start_timestamp_seconds",
        "Earliest point-in-time restore target.",
        [({"source": s}, parse_time(w["earliest"]).timestamp()) for s, w in windows],
    )
    metric(
        "caas_backup_pitr_window_end_timestamp_seconds",
        "Latest point-in-time restore target.",
        [({"source": s}, parse_time(w["latest"]).timestamp()) for s, w in windows],
    )
    metric(
        "caas_backup_pitr_broken_chain",
        "1 when the point-in-time window has gaps (slices that do not connect).",
        [({"source": s}, int(bool(w["gaps"]))) for s, w in summary["pitr"].items()],
    )
    drill = summary.get("drill")
    if drill is not None:
        metric(
            "caas_backup_drill_last_timestamp_seconds",
            "When the last DR drill ended.",
            [({}, _timestamp(drill.get("finished_at")) or _timestamp(drill.get("started_at")))],
        )
        metric(
            "caas_backup_drill_success",
            "1 when the last DR drill passed, 0 when it failed.",
            [({}, int(drill.get("result") == "PASS"))],
        )
        for field, help_text in (
            ("rto_seconds", "Recovery time the last DR drill measured."),
            ("rpo_seconds", "Recovery point (data loss window) the last DR drill measured."),
            ("rto_objective_seconds", "The recovery time objective."),
            ("rpo_objective_seconds", "The recovery point objective."),
        ):
            value = drill.get(field)
            number = value if isinstance(value, (int, float)) and not isinstance(value, bool) else None
            metric(f"caas_backup_drill_{field}", help_text, [({}, number)])
    metric(
        "caas_backup_alerts",
        "Backup alerts raised, by severity.",
        [({"severity": sev}, sum(a["severity"] == sev for a in summary["alerts"])) for sev in ("critical", "warning")],
    )
    metric(
        "caas_backup_abandoned",
        "Killed or abandoned attempts still in storage: incomplete sets, unfinished uploads, empty directories.",
        [
            ({"kind": kind, "what": what}, count)
            for kind, counts in summary.get("abandoned", {}).items()
            for what, count in counts.items()
        ],
    )
    metric("caas_backup_info_timestamp_seconds", "When these metrics were computed.", [({}, now.timestamp())])
    return "\n".join(lines) + "\n"


def _group(name: str, value: str) -> str:
    """One label of a Pushgateway grouping key in its URL path: base64 (URL-safe) when the value holds a ``/``
    or is empty, as the Pushgateway asks."""
    if value and "/" not in value:
        return f"{name}/{quote(value, safe='')}"
    return f"{name}@base64/{base64.urlsafe_b64encode(value.encode()).decode() or '='}"


def push_metrics(url: str, job: str, instance: str, text: str, timeout: int, validate_certs: bool = True) -> str:
    """PUT ``text`` to a Pushgateway under the grouping key ``job``/``instance`` (replacing that group's metrics).

    Returns the URL pushed to, without any password; NotifyError when the Pushgateway cannot be reached or
    refuses the metrics.
    """
    from ansible.module_utils.urls import open_url

    from ansible_collections.caas.backup.plugins.module_utils.notify import NotifyError

    parsed = urlparse(url)
    target = f"{url.rstrip('/')}/metrics/{_group('job', job)}/{_group('instance', instance)}"
    shown = target.replace(parsed.netloc, parsed.hostname + (f":{parsed.port}" if parsed.port else ""), 1)
    try:
        reply = open_url(
            target,
            data=text.encode(),
            method="PUT",
            timeout=timeout,
            headers={"Content-Type": "text/plain; version=0.0.4; charset=utf-8"},
            validate_certs=validate_certs,
        )
        status = reply.status
    except OSError as exc:  # URLError, HTTPError and socket errors all are
        code = getattr(exc, "code", None)
        body = exc.read().decode(errors="replace").strip()[:300] if code and hasattr(exc, "read") else ""
        reason = f"HTTP {code} {body or getattr(exc, 'reason', '')}" if code else getattr(exc, "reason", exc)
        raise NotifyError(f"cannot push metrics to the Pushgateway {shown}: {reason}") from None
    if not 200 <= status < 300:
        raise NotifyError(f"Pushgateway {shown} answered HTTP {status}")
    return shown
