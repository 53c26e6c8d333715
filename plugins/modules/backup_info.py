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
    and duration, each MongoDB source's point-in-time restore window, and the alerts the thresholds raise.
  - A C(kafka-messages) set that recorded lost offsets (records the broker deleted before they were captured) raises a
    critical alert naming the partitions and offsets, for as long as the set is kept.
  - Optionally writes the same facts as Prometheus textfile metrics for node_exporter.
  - Changes nothing but the metrics file.
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
        (V(0.5) is 50%; 0 to 1000). V(0) disables the check.
    type: float
    default: 0.5
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
    type: int
    default: 24
  metrics_path:
    description:
      - Write Prometheus text-format metrics to this file (atomically, mode 0644), e.g. for node_exporter's
        textfile collector. Its directory must exist.
    type: path
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.select
attributes:
  check_mode:
    support: full
    description: Reports as usual; the metrics file is not written.
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
    - {kind: config, source: app01, backup_id: 20260221T020000.412Z-3f9a, time: "2026-02-21T02:00:09Z",
       age_seconds: 3600, size: 48213, duration_seconds: 9.0, count: 31, incomplete: 0, total_size: 1494603}
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
"""

import os
import tempfile

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, ConfigurationError


def write_atomically(path: str, text: str) -> None:
    """Write ``text`` so a reader sees the old file or the new one, never half of it."""
    directory = os.path.dirname(os.path.abspath(path))
    fd, tmp = tempfile.mkstemp(prefix=".caas_backup-", dir=directory)
    with os.fdopen(fd, "w", encoding="utf-8") as out:
        out.write(text)
    os.chmod(tmp, 0o644)
    os.replace(tmp, path)


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.catalog import utcnow
    from ansible_collections.caas.backup.plugins.module_utils.monitoring import (
        DEFAULT_MAX_AGE_HOURS,
        render_metrics,
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
    max_age = {**DEFAULT_MAX_AGE_HOURS, **p["max_age_hours"]}
    grace = grace_period(p["incomplete_grace_hours"])
    prefixes = selection_prefixes(p["kinds"], p["source_name"])
    storage = module.open_storage()
    sets = module.selected_sets(storage)
    now = utcnow()
    leftovers = [leftover.key for leftover in storage.leftovers(now - grace, prefixes)]
    newest = {(s.kind, s.source): s for s in sets if s.complete}  # sets come oldest first
    verifications = {b.prefix: last_verification(storage, b) for b in newest.values()}
    summary = summarize(
        sets, now, max_age, p["size_change_ratio"], expected, {k: v for k, v in verifications.items() if v is not None}
    )
    result = dict(changed=False, **summary, abandoned=abandoned(sets, leftovers, now, grace))
    if p["list_sets"]:
        result["sets"] = [s.summary() for s in sets]
    if p["metrics_path"] and not module.check_mode:
        write_atomically(p["metrics_path"], render_metrics(result, now))
        result["metrics_path"] = p["metrics_path"]
    return result


def main() -> None:
    module = BackupModule(
        dict(
            max_age_hours=dict(type="dict", default={}),
            size_change_ratio=dict(type="float", default=0.5),
            expect=dict(type="list", elements="str", default=[]),
            list_sets=dict(type="bool", default=False),
            incomplete_grace_hours=dict(type="int", default=24),
            metrics_path=dict(type="path"),
        ),
        selects=True,
        supports_check_mode=True,
    )
    module.run(run, "report on backups")


if __name__ == "__main__":
    main()
