#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_info
short_description: Report on backup sets - latest per kind, age, size, PITR coverage, alerts, metrics
version_added: 0.1.0
description:
  - Reads the catalog in O(storage_url) and returns the newest complete set per kind and source with its age, size
    and duration, each MongoDB source's point-in-time restore window, the recorded attempts (runs of the backup,
    prune, verify and restore modules, failed or killed ones too, see RV(attempts)), the storage space, the last
    DR drill, and the alerts the thresholds raise.
  - Optionally writes the same facts as Prometheus metrics, to a textfile for node_exporter's textfile collector
    (O(metrics_path)) and/or to a Pushgateway (O(pushgateway_url)); the collection ships alert rules for them
    (C(roles/backup_monitoring/files/prometheus/caas-backup-rules.yml), see C(docs/monitoring.md)).
  - A C(kafka-messages) set that recorded lost offsets (records the broker deleted before they were captured) raises a
    critical alert naming the partitions and offsets, for as long as the set is kept.
  - Lists the audit records of a time range (O(audit_since), O(audit_until)).
  - Optionally renders the catalog as a static HTML status page (O(html_path)).
  - Changes nothing but the metrics file, the Pushgateway group and the status page.
author: caas.backup developers (@caas-backup)
options:
  max_age_hours:
    description:
      - Per kind, the age in hours past which the newest backup raises a critical alert. Merged over the defaults
        C(mongo-full) 25, C(mongo-oplog) 1, C(redis-rdb) 7, C(redis-aof) 7, C(kafka-meta) 25, C(kafka-messages) 1,
        C(config) 25.
    type: dict
    default: {}
  size_change_ratio:
    description:
      - Warn when the newest backup's size differs from the previous one's by more than this fraction
        (V(0.5) is 50%; 0 to 1000). V(0) disables the check. Kinds in O(size_change_ratios) use their own.
    type: float
    default: 0.5
  size_change_ratios:
    description:
      - Per kind, the size anomaly threshold (a fraction, V(0) disables it), over O(size_change_ratio). Merged over
        the defaults C(mongo-oplog) 0 and C(kafka-messages) 0 - an incremental slice holds what changed since the
        previous one, so its size follows the write load and is no anomaly.
    type: dict
    default: {}
  audit_window_days:
    description:
      - How many days of audit records the attempt metrics (RV(attempts)) are computed from (1 to 3660).
    type: int
    default: 7
  audit_since:
    description:
      - List the audit records made at or after this ISO 8601 time in RV(audit).
    type: str
  audit_until:
    description:
      - With O(audit_since), the end of the range listed (ISO 8601); now when unset.
    type: str
  storage_quota_bytes:
    description:
      - The size of the backup storage, for the storage space metrics and alerts. S3 has no size of its own - give
        the bucket's quota; a local directory reports its filesystem's when unset.
    type: int
  pushgateway_url:
    description:
      - Push the metrics to this Prometheus Pushgateway (C(http://host:9091)) with an HTTP PUT, replacing the
        group O(pushgateway_job)/O(pushgateway_instance); for jobs in ephemeral execution environments.
        Basic auth may be given in the URL (C(https://user:password@host)); it is never shown.
    type: str
  pushgateway_job:
    description:
      - The C(job) label of the pushed group.
    type: str
    default: caas_backup
  pushgateway_instance:
    description:
      - The C(instance) label of the pushed group; the storage URL when unset (stable, where a host name of an
        ephemeral execution environment is not).
    type: str
  timeout:
    description:
      - Seconds to wait for the Pushgateway (1 to 86400).
    type: int
    default: 30
  expect:
    description:
      - Kind and source pairs that must have backups, as C(kind/source); a missing one is a critical alert.
    type: list
    elements: str
    default: []
  list_sets:
    description:
      - Also return every set (complete or not).
    type: bool
    default: false
  incomplete_grace_hours:
    description:
      - Incomplete sets and unfinished uploads older than this count as killed or abandoned attempts in
        RV(abandoned) (younger ones may still be being written); the same meaning as in
        M(caas.backup.s3_backup_prune), so the counts are what its next run cleans. From V(0) to V(87600).
      - An attempt whose start record is older than this and has no result was killed, and counts as failed.
    type: int
    default: 24
  metrics_path:
    description:
      - Write Prometheus text-format metrics to this file (atomically, mode 0644), e.g. for node_exporter's
        textfile collector. Its directory must exist.
    type: path
  label_location:
    description:
      - Label every metric with C(location), the storage URL - for several locations (a primary and its copies
        made by M(caas.backup.backup_copy)) monitored side by side, each to a file or Pushgateway group of its own.
    type: bool
    default: false
  html_path:
    description:
      - Write the catalog as a static HTML status page to this file (atomically, mode 0644) - per kind and source
        a timeline of its sets, their count and sizes, the newest set's age and last verification; per MongoDB
        source the point-in-time window and its gaps; the alerts; the last DR drill (its evidence in
        C(drills/), see M(caas.backup.backup_evidence)). No script or external asset. Its directory must exist.
    type: path
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description: Reports as usual; the metrics file and the status page are not written and nothing is pushed.
seealso:
  - module: caas.backup.s3_backup_prune
"""

EXAMPLES = r"""
- name: Check backup freshness and publish metrics
  caas.backup.backup_info:
    storage_url: s3://caas-backups/prod
    expect: [mongo-full/rs0, redis-rdb/cache01, config/app01]
    metrics_path: /var/lib/prometheus/node-exporter/caas_backup.prom
  register: backups

- name: Push the metrics from an AWX job
  caas.backup.backup_info:
    storage_url: s3://caas-backups/prod
    storage_quota_bytes: 2000000000000
    pushgateway_url: http://pushgateway.example.com:9091

- name: Who did what last week
  caas.backup.backup_info:
    storage_url: s3://caas-backups/prod
    audit_since: "2026-02-14T00:00:00Z"
    audit_until: "2026-02-21T00:00:00Z"
  register: last_week

- name: Fail the job on a critical alert
  ansible.builtin.assert:
    that: backups.alerts | selectattr('severity', 'eq', 'critical') | list | length == 0
    fail_msg: "{{ backups.alerts | map(attribute='message') | list }}"
"""

RETURN = r"""
latest:
  description: Newest complete set per kind and source.
  returned: always
  type: list
  elements: dict
  sample:
    - {kind: config, source: app01, backup_id: 20260221T020000.412Z-3f9a, time: "2026-02-21T02:00:09.528311Z",
       age_seconds: 3600, max_age_seconds: 90000, size: 48213, duration_seconds: 9.116, duration_baseline_seconds: 8.9,
       count: 31, incomplete: 0, total_size: 1494603, size_anomaly: false,
       verification: {ok: true, level: checksum, verified_at: "2026-02-21T03:00:00Z"}}
missing:
  description: Kind and source pairs without any complete set (expected, or with incomplete sets only).
  returned: always
  type: list
  elements: dict
attempts:
  description:
    - Per C(action) (V(write), V(delete), V(verify), V(restore)...), C(kind) and C(source), from the audit records of
      the last O(audit_window_days) days - C(last_attempt_time), C(last_result) (V(ok) or V(failed)), C(last_error)
      (the error's class; V(killed) for a run that never recorded its result), C(last_duration_seconds),
      C(consecutive_failures) (since the last success), C(succeeded) and C(failed).
  returned: always
  type: list
  elements: dict
  sample:
    - {action: write, kind: config, source: app01, last_attempt_time: "2026-02-21T02:00:09.601002Z", last_result: ok,
       last_error: null, last_duration_seconds: 9.2, consecutive_failures: 0, succeeded: 7, failed: 1}
storage:
  description: C(total_bytes), C(free_bytes) and C(used_bytes) of the storage, or null when unknown (S3 without
    O(storage_quota_bytes)).
  returned: always
  type: dict
drill:
  description: The newest DR drill report (C(drills/<time>/report.json)) with its C(key), or null when none exists.
  returned: always
  type: dict
audit:
  description:
    - The audit records made in the range, oldest first - C(record) (V(start) or V(result)), C(attempt_id),
      C(action), C(module), C(kind), C(source), C(time), C(user) and C(host) (the controller's, from
      E(CAAS_AUDIT_USER) and E(CAAS_AUDIT_HOST)), C(run_user), C(run_host); a result adds C(result), C(error),
      C(duration_seconds) and C(sets). Each carries its storage C(key).
  returned: when O(audit_since) is set
  type: list
  elements: dict
pushed_to:
  description: The Pushgateway URL the metrics were pushed to (without a password).
  returned: when O(pushgateway_url) is set and not in check mode
  type: str
pitr:
  description:
    - Per MongoDB source, the point-in-time window (C(earliest) and C(latest) restore target) and the C(gaps) inside
      it. Full backups older than the window (kept by the daily/weekly... rules after their slices are gone) are
      restore points of their own, not gaps; nor is the newest full backup taken after the last capture. Slices
      that no full backup reaches are a gap.
  returned: always
  type: dict
abandoned:
  description:
    - Per kind, killed or abandoned attempts still in storage - C(incomplete_sets) (no manifest, older than
      O(incomplete_grace_hours)), C(unfinished_uploads) (S3 multipart uploads, local partial files) and
      C(empty_directories) - within O(kinds) and O(source_name).
  returned: always
  type: dict
  sample: {config: {incomplete_sets: 1, unfinished_uploads: 2, empty_directories: 0}}
alerts:
  description: Alerts raised, each with C(severity) (V(critical) or V(warning)), C(kind), C(source), C(message).
  returned: always
  type: list
  elements: dict
sets:
  description: Every set, when O(list_sets) is set.
  returned: when O(list_sets=true)
  type: list
  elements: dict
metrics_path:
  description: The metrics file written.
  returned: when O(metrics_path) is set and not in check mode
  type: str
html_path:
  description: The status page written.
  returned: when O(html_path) is set and not in check mode
  type: str
"""

import datetime
import os
import tempfile

from ansible_collections.caas.backup.plugins.module_utils.common import DAY, BackupModule, ConfigurationError


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` so a reader sees the old file or the new one, never half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".caas_backup-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.audit import attempts, read_records
    from ansible_collections.caas.backup.plugins.module_utils.catalog import parse_time, utcnow
    from ansible_collections.caas.backup.plugins.module_utils.evidence import latest_drill
    from ansible_collections.caas.backup.plugins.module_utils.monitoring import (
        DEFAULT_MAX_AGE_HOURS,
        push_metrics,
        render_metrics,
        storage_usage,
        summarize,
    )
    from ansible_collections.caas.backup.plugins.module_utils.retention import (
        abandoned,
        grace_period,
        selection_prefixes,
    )
    from ansible_collections.caas.backup.plugins.module_utils.verify import last_verification

    p = module.params
    expected = []
    for item in p["expect"]:
        kind, _sep, source = item.partition("/")
        if not source:
            raise ConfigurationError(f"expect entry {item!r} is not kind/source")
        expected.append((kind, source))
    if p["audit_until"] and not p["audit_since"]:
        raise ConfigurationError("audit_until goes with audit_since")
    max_age = {**DEFAULT_MAX_AGE_HOURS, **p["max_age_hours"]}
    grace = grace_period(p["incomplete_grace_hours"])
    prefixes = selection_prefixes(p["kinds"], p["source_name"])
    storage = module.open_storage()
    sets = module.selected_sets(storage)
    now = utcnow()
    leftovers = [leftover.key for leftover in storage.leftovers(now - grace, prefixes)]
    newest = {(s.kind, s.source): s for s in sets if s.complete}  # sets come oldest first
    verifications = {b.prefix: last_verification(storage, b) for b in newest.values()}
    window = now - datetime.timedelta(seconds=p["audit_window_days"] * DAY)
    tried = [
        a
        for a in attempts(read_records(storage, window, now), now, grace)
        if (not p["kinds"] or a.get("kind") in p["kinds"])
        and (not p["source_name"] or a.get("source") == p["source_name"])
    ]
    summary = summarize(
        sets,
        now,
        max_age,
        p["size_change_ratio"],
        expected,
        {k: v for k, v in verifications.items() if v is not None},
        size_change_ratios=p["size_change_ratios"],
        attempts=tried,
        storage=storage_usage(storage, p["storage_quota_bytes"]),
        drill=latest_drill(storage),
    )
    result = dict(changed=False, **summary, abandoned=abandoned(sets, leftovers, now, grace))
    if p["list_sets"]:
        result["sets"] = [s.summary() for s in sets]
    if p["audit_since"]:
        until = parse_time(p["audit_until"]) if p["audit_until"] else now
        result["audit"] = read_records(storage, parse_time(p["audit_since"]), until)
    if module.check_mode:
        return result
    text = render_metrics(result, now, storage.url if p["label_location"] else None)
    if p["metrics_path"]:
        write_atomically(p["metrics_path"], text)
        result["metrics_path"] = p["metrics_path"]
    if p["html_path"]:
        from ansible_collections.caas.backup.plugins.module_utils.html_report import status_page

        write_atomically(p["html_path"], status_page(result, [s.summary() for s in sets], result["drill"], now))
        result["html_path"] = p["html_path"]
    if p["pushgateway_url"]:
        instance = p["pushgateway_instance"] or storage.url
        result["pushed_to"] = push_metrics(
            p["pushgateway_url"], p["pushgateway_job"], instance, text, p["timeout"], p["validate_certs"]
        )
    return result


def main() -> None:
    module = BackupModule(
        dict(
            max_age_hours=dict(type="dict", default={}),
            size_change_ratio=dict(type="float", default=0.5),
            size_change_ratios=dict(type="dict", default={}),
            expect=dict(type="list", elements="str", default=[]),
            list_sets=dict(type="bool", default=False),
            incomplete_grace_hours=dict(type="int", default=24),
            metrics_path=dict(type="path"),
            label_location=dict(type="bool", default=False),
            html_path=dict(type="path"),
            audit_window_days=dict(type="int", default=7),
            audit_since=dict(type="str"),
            audit_until=dict(type="str"),
            storage_quota_bytes=dict(type="int"),
            pushgateway_url=dict(type="str"),
            pushgateway_job=dict(type="str", default="caas_backup"),
            pushgateway_instance=dict(type="str"),
            timeout=dict(type="int", default=30),
        ),
        selects=True,
        supports_check_mode=True,
    )
    module.run(run, "report on backups")


if __name__ == "__main__":
    main()
