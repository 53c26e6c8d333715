# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The site model the playbooks run on: which host acts for which component, and the run's one report.

An inventory names the parts of a site by group (``caas_config``, ``caas_mongodb``, ``caas_redis``,
``caas_kafka``). Configuration belongs to each host of ``caas_config``; a MongoDB replica set, a Redis
server and a Kafka cluster are each backed up and restored by exactly one host of their group, whatever
the number of hosts: the first host (in inventory order) of each *cluster identity*. Everything here is
pure: the playbooks call it through the ``caas.backup.site_plan``, ``site_outcomes`` and ``dr_report``
filters, and the unit tests call it directly.
"""

from __future__ import annotations

import datetime
import re
from collections.abc import Mapping

COMPONENTS = ("config", "mongodb", "redis", "kafka")
GROUPS = {c: f"caas_{c}" for c in COMPONENTS}
# Backup jobs that are not components of their own: the oplog capture runs on the MongoDB leaders, the
# record capture (kafka_message_capture) on the Kafka ones.
JOBS = {"mongodb-oplog": "mongodb", "kafka-messages": "kafka"}
# Source names: a component-specific variable first; configuration and Redis live on a host, so
# caas_backup_source_name and then the inventory hostname name them. MongoDB and Kafka name themselves
# (replica set name, cluster id) unless told.
_SOURCE_VARS = {
    "config": ("caas_backup_config_source_name", "caas_backup_source_name"),
    "mongodb": ("caas_backup_mongodb_source_name",),
    "redis": ("caas_backup_redis_source_name", "caas_backup_source_name"),
    "kafka": ("caas_backup_kafka_source_name",),
}
# Without a source name, hosts that reach the same server are one cluster.
_ADDRESS_VARS = {
    "mongodb": "caas_backup_mongodb_uri",
    "redis": "caas_backup_redis_url",
    "kafka": "caas_backup_kafka_bootstrap_servers",
}
# A variable that names a component's server: set while the group is empty, it is a mistake, never a skip.
SETTINGS = {c: (v,) for c, v in _ADDRESS_VARS.items()}
_CREDENTIALS = re.compile(r"(?<=://)[^/@]*@")
_REPLICA_SET = re.compile(r"[?&]replicaSet=([^&]+)")
HOST_BOUND = ("config", "redis")


class SiteError(Exception):
    """The inventory or the variables describe a site the playbooks cannot run on."""


def _first(host_vars: Mapping, names: tuple[str, ...]) -> str:
    for name in names:
        value = host_vars.get(name)
        if value not in (None, ""):
            return str(value)
    return ""


def source_of(component: str, host: str, host_vars: Mapping) -> str:
    """The source name a host backs up or restores for a component; empty: the module derives it."""
    named = _first(host_vars, _SOURCE_VARS[component])
    return named or (host if component in HOST_BOUND else "")


def identity_of(component: str, host: str, host_vars: Mapping) -> str:
    """What makes two hosts of a group the same cluster.

    A source name given for it; else the server's address (credentials left out) - for MongoDB the
    replica set the URI names, since every member's URI names the same one; else, for configuration and
    Redis, the host (each runs its own), and for MongoDB and Kafka the whole group (one cluster).
    """
    named = _first(host_vars, _SOURCE_VARS[component])
    if named:
        return f"source:{named}"
    address = host_vars.get(_ADDRESS_VARS.get(component, ""))
    if isinstance(address, (list, tuple)):
        address = ",".join(sorted(str(a) for a in address))
    if address:
        replica_set = _REPLICA_SET.search(str(address)) if component == "mongodb" else None
        return f"replica-set:{replica_set.group(1)}" if replica_set else "address:" + _CREDENTIALS.sub("", str(address))
    return f"source:{host}" if component in HOST_BOUND else f"group:{component}"


def given(options: Mapping) -> dict:
    """The options that were given: None (an unset role variable) leaves an option out, so that the module's
    ``module_defaults`` and environment fallbacks apply to it (an omitted task argument would drop those too)."""
    return {k: v for k, v in options.items() if v is not None}


def selection(names, known: tuple[str, ...]) -> list[str]:
    """A list or comma-separated string of names, checked against ``known``."""
    if isinstance(names, str):
        names = names.split(",")
    chosen = [str(n).strip() for n in names or () if str(n).strip()]
    unknown = sorted(set(chosen) - set(known))
    if unknown:
        raise SiteError(f"unknown component(s) {', '.join(unknown)}: choose from {', '.join(known)}")
    return chosen


def plan(groups: Mapping, hostvars: Mapping, requested=(), oplog: bool = False, messages: bool = False) -> dict:
    """Which hosts act for which component.

    ``requested`` names components (or jobs such as ``mongodb-oplog``) that must be there; empty means
    every component the inventory has, plus the oplog capture when ``oplog`` and the Kafka record capture
    when ``messages``. A variable naming a
    component's server (SETTINGS) set on any host while the component's group is empty is an error.
    Returns ``components``:
    per component its ``hosts``, its ``leaders`` (one per cluster) and each leader's ``sources``;
    ``order``, the components in restore order; and ``jobs``, what a backup run does, in order.
    Raises :class:`SiteError` for an inventory that cannot be right.
    """
    wanted = selection(requested, COMPONENTS + tuple(JOBS))
    errors = []
    components: dict[str, dict] = {}
    for component in COMPONENTS:
        hosts = list(groups.get(GROUPS[component]) or ())
        needed = component in wanted or any(JOBS.get(j) == component for j in wanted)
        if not hosts:
            if needed:
                errors.append(f"{component} was asked for but the inventory has no host in {GROUPS[component]}")
            elif any(hostvars[h].get(v) for h in groups.get("all") or () for v in SETTINGS.get(component, ())):
                names = " or ".join(SETTINGS[component])
                errors.append(f"{names} is set but the inventory has no host in {GROUPS[component]}")
            continue
        if wanted and not needed:
            continue
        leaders, sources, seen = [], {}, {}
        for host in hosts:
            host_vars = hostvars[host]
            ident = identity_of(component, host, host_vars)
            if ident in seen:
                if component == "config":
                    errors.append(
                        f"hosts {seen[ident]} and {host} of {GROUPS[component]} both name their configuration "
                        f"{ident.split(':', 1)[1]}: give each a caas_backup_source_name of its own"
                    )
                continue
            seen[ident] = host
            leaders.append(host)
            sources[host] = source_of(component, host, host_vars)
        components[component] = {"hosts": hosts, "leaders": leaders, "sources": sources}
    if errors:
        raise SiteError("; ".join(errors))
    if not components:
        raise SiteError(
            "the inventory has no host in " + ", ".join(GROUPS.values()) + ": put each part of the site in its group"
        )
    order = [c for c in COMPONENTS if c in components]
    jobs = [c for c in order if not wanted or c in wanted]
    if "mongodb" in components and ("mongodb-oplog" in wanted or (oplog and not wanted)):
        jobs.insert(jobs.index("mongodb") + 1 if "mongodb" in jobs else len(jobs), "mongodb-oplog")
    if "kafka" in components and ("kafka-messages" in wanted or (messages and not wanted)):
        jobs.insert(jobs.index("kafka") + 1 if "kafka" in jobs else len(jobs), "kafka-messages")
    return {"components": components, "order": order, "jobs": jobs}


def jobs_of(site: Mapping, host: str) -> list[str]:
    """The jobs of a run that ``host`` acts for (it leads their component's cluster)."""
    return [j for j in site["jobs"] if host in site["components"][JOBS.get(j, j)]["leaders"]]


def outcomes(site: Mapping, hostvars: Mapping, variable: str, key: str = "order") -> list[dict]:
    """Every leader's outcome per component (``key="order"``) or job (``key="jobs"``), read from ``variable``
    on each host; a leader that reported nothing (unreachable, or failed outside the recorded steps) is FAILED."""
    found = []
    for name in site[key]:
        for host in site["components"][JOBS.get(name, name)]["leaders"]:
            reported = dict((hostvars[host].get(variable) or {}).get(name) or {})
            if not reported:
                reported = {"status": "FAILED", "error": f"{host} did not report (unreachable, or failed earlier)"}
            found.append({"component": name, "host": host, **reported})
    return found


def _parse(text: str) -> datetime.datetime:
    moment = datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00"))
    return moment if moment.tzinfo else moment.replace(tzinfo=datetime.timezone.utc)


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    seconds = round(seconds)
    hours, rest = divmod(seconds, 3600)
    return f"{hours}h{rest // 60:02d}m{rest % 60:02d}s" if hours else f"{rest // 60}m{rest % 60:02d}s"


def _table(rows: list[list[str]]) -> str:
    widths = [max(len(r[i]) for r in rows) for i in range(len(rows[0]))]
    lines = ["  ".join(c.ljust(w) for c, w in zip(r, widths, strict=True)).rstrip() for r in rows]
    lines.insert(1, "  ".join("-" * w for w in widths))
    return "\n".join(lines)


def _markdown(rows: list[list[str]]) -> str:
    lines = ["| " + " | ".join(r) + " |" for r in rows]
    lines.insert(1, "|" + "|".join(["---"] * len(rows[0])) + "|")
    return "\n".join(lines)


def _phases(marks: list) -> dict[str, float]:
    spans: dict[str, list[float]] = {}
    for host_marks in marks:
        host_marks = list(host_marks or ())
        for (phase, begun), (_next, ended) in zip(host_marks, host_marks[1:], strict=False):
            span = spans.setdefault(phase, [_parse(begun).timestamp(), _parse(ended).timestamp()])
            span[0], span[1] = min(span[0], _parse(begun).timestamp()), max(span[1], _parse(ended).timestamp())
    return {phase: round(end - start, 3) for phase, (start, end) in spans.items()}


def _problem(outcome: Mapping) -> str:
    failed = [k["check"] for k in outcome.get("checks") or () if not k.get("ok")]
    return outcome.get("error") or "checks failed: " + ", ".join(failed)


def backup_report(results: list[dict]) -> dict:
    """A backup run's one result: per job what was written, and the jobs that failed."""
    rows = [["job", "host", "source", "backup", "stored", "duration", "status"]]
    for r in results:
        rows.append(
            [
                r["component"],
                r["host"],
                r.get("source") or "-",
                r.get("backup_id") or "-",
                "-" if r.get("status") != "PASS" else str(r.get("stored_bytes", "-")),
                _duration(r.get("duration")),
                r.get("status") or "FAILED",
            ]
        )
    failed = [r for r in results if r.get("status") not in ("PASS", "PLANNED")]
    result = "FAIL" if failed else ("PLANNED" if results and all(r["status"] == "PLANNED" for r in results) else "PASS")
    lines = [f"Backup {result}: {len(results) - len(failed)} of {len(results)} job(s)", _table(rows)]
    lines += [f"{r['component']}@{r['host']}: {_problem(r)}" for r in failed]
    return {"result": result, "failed": [f"{r['component']}@{r['host']}" for r in failed], "table": "\n".join(lines)}


def dr_report(
    results: list[dict],
    started_at: str,
    finished_at: str,
    marks: list | None = None,
    rto_objective: float = 14400,
    rpo_objective: float = 21600,
    target_time: str = "",
    check_mode: bool = False,
) -> dict:
    """The recovery's one report: per component what was restored and checked, per phase how long, RTO/RPO.

    ``results`` are :func:`outcomes`; a component PASSes when it was restored (or, in check mode,
    planned) and every check held. RTO is the run's duration; RPO the age of the oldest restored data at
    the start of the recovery (with ``target_time``, the point in time restored to is that data's time).
    ``marks`` holds, per host, the ``[phase, ISO time]`` at which it began each phase (and ``done``); a
    phase lasts from its earliest start to its latest end over the hosts. The report PASSes only when
    every component did and both objectives are met.
    """
    started = _parse(started_at)
    rto = (_parse(finished_at) - started).total_seconds()
    data_times = [r["data_time"] for r in results if r.get("data_time")]
    rpo = (started - min(_parse(t) for t in data_times)).total_seconds() if data_times and not check_mode else None
    components = []
    for r in results:
        checks = list(r.get("checks") or ())
        status = r.get("status") or "FAILED"
        if status == "PASS" and not all(c.get("ok") for c in checks):
            status = "FAILED"
        age = round((started - _parse(r["data_time"])).total_seconds(), 3) if r.get("data_time") else None
        components.append({**r, "status": status, "checks": checks, "age_seconds": age})
    passed = all(c["status"] in ("PASS", "PLANNED") for c in components)
    within = {
        "rto": check_mode or rto <= rto_objective,
        "rpo": check_mode or (rpo is not None and rpo <= rpo_objective),
    }
    overall = "PLANNED" if check_mode and passed else ("PASS" if passed and all(within.values()) else "FAIL")
    phase_rows = _phases(marks or [])
    report = {
        "result": overall,
        "started_at": started_at,
        "finished_at": finished_at,
        "check_mode": check_mode,
        "target_time": target_time or None,
        "rto_seconds": round(rto, 3),
        "rpo_seconds": None if rpo is None else round(rpo, 3),
        "rto_objective_seconds": rto_objective,
        "rpo_objective_seconds": rpo_objective,
        "rto_met": within["rto"],
        "rpo_met": within["rpo"],
        "phases": phase_rows,
        "components": components,
        "failed": [f"{c['component']}@{c['host']}" for c in components if c["status"] not in ("PASS", "PLANNED")],
    }
    rows = [["component", "host", "source", "backup", "data as of", "age", "checks", "duration", "status"]]
    for c in components:
        held = sum(1 for k in c["checks"] if k.get("ok"))
        rows.append(
            [
                c["component"],
                c["host"],
                c.get("source") or "-",
                c.get("backup_id") or "-",
                c.get("data_time") or "-",
                _duration(c["age_seconds"]),
                f"{held}/{len(c['checks'])}",
                _duration(c.get("duration")),
                c["status"],
            ]
        )
    rpo_text = "-" if rpo is None else _duration(rpo)
    verdict = {k: "met" if ok else "MISSED" for k, ok in within.items()}
    summary = (
        f"Recovery {overall}: RTO {_duration(rto)} (objective {_duration(rto_objective)}), "
        f"RPO {rpo_text} (objective {_duration(rpo_objective)})"
    )
    problems = [
        f"{c['component']}@{c['host']}: {_problem(c)}" for c in components if c["status"] not in ("PASS", "PLANNED")
    ]
    phase_text = ", ".join(f"{name} {_duration(s)}" for name, s in phase_rows.items())
    report["summary"] = summary
    report["table"] = "\n".join([summary, _table(rows), *(["Phases: " + phase_text] if phase_text else []), *problems])
    report["markdown"] = (
        "\n\n".join(
            [
                f"# Disaster recovery {started_at}: **{overall}**",
                f"- RTO {_duration(rto)} (objective {_duration(rto_objective)}): {verdict['rto']}\n"
                f"- RPO {rpo_text} (objective {_duration(rpo_objective)}): {verdict['rpo']}",
                _markdown(rows),
                *(["Phases: " + phase_text] if phase_text else []),
                *(["Failures:\n" + "\n".join(f"- {p}" for p in problems)] if problems else []),
            ]
        )
        + "\n"
    )
    return report


def _live_counts(live: Mapping) -> dict[str, int]:
    counts = {}
    for c in live.get("collections") or ():
        name = c.get("ns") or c.get("name")
        if name is not None:
            counts[name] = c.get("documents", c.get("count"))
    return counts


def dr_checks(restored: Mapping, component: str, live: Mapping, pitr: bool = False) -> list[dict]:
    """Health checks of a restored component, from what its restore reported (``restored``, itself checked
    against the set's manifest) and what the system holds now (``live``: the check-mode result of the
    component's restore module, for configuration and Kafka, or backup module, for MongoDB and Redis).
    Each check is ``{check, ok, expected, found}``."""
    if component == "config":
        differ = sorted([*(live.get("created") or ()), *(live.get("updated") or ())])
        return [
            {
                "check": "every file of the set present with its recorded content and mode",
                "ok": not differ,
                "expected": len(differ) + int(live.get("unchanged") or 0),
                "found": int(live.get("unchanged") or 0),
                **({"differ": differ[:20]} if differ else {}),
            }
        ]
    if component == "mongodb":
        found = _live_counts(live)
        if pitr:
            wanted = sorted(
                c["target"] for c in restored.get("base_collections") or () if c.get("type") == "collection"
            )
            missing = [ns for ns in wanted if ns not in found]
            return [
                {
                    "check": "every collection of the base backup present after the replay",
                    "ok": not missing,
                    "expected": len(wanted),
                    "found": len(wanted) - len(missing),
                    **({"missing": missing} if missing else {}),
                }
            ]
        return [
            {
                "check": f"{c['target']} document count",
                "ok": found.get(c["target"]) == c.get("count"),
                "expected": c.get("count"),
                "found": found.get(c["target"]),
            }
            for c in restored.get("collections") or ()
            if c.get("type") == "collection"
        ]
    if component == "redis":
        facts = live.get("facts") or live
        return [
            {
                "check": "key count",
                "ok": facts.get("keys") == restored.get("keys"),
                "expected": restored.get("keys"),
                "found": facts.get("keys"),
            }
        ]
    if component == "kafka":
        missing = sorted(live.get("created_topics") or ())
        short = sorted(live.get("added_partitions") or ())
        groups = sorted(live.get("groups") or ())
        checks = [
            {"check": "every topic of the set present", "ok": not missing, "expected": 0, "found": missing},
            {"check": "every topic has its partitions", "ok": not short, "expected": 0, "found": short},
            {"check": "every consumer group at its restored offsets", "ok": not groups, "expected": 0, "found": groups},
        ]
        messages = live.get("messages")
        if messages and not messages.get("skipped"):
            # The record restore in check mode: what it would still produce (after the target's last record).
            pending = messages.get("records")
            checks.append(
                {"check": "every captured record on the target", "ok": pending == 0, "expected": 0, "found": pending}
            )
        return checks
    raise SiteError(f"no health checks for component {component}")


def host_values(site: Mapping, hostvars: Mapping, variable: str) -> list:
    """``variable`` of every host that acts for a component of the run (once per host)."""
    hosts = dict.fromkeys(h for c in site["order"] for h in site["components"][c]["leaders"])
    return [hostvars[h].get(variable) for h in hosts if hostvars[h].get(variable) is not None]


def smoke_outcome(result: Mapping) -> dict:
    """A smoke test's command result (one item of a registered loop) as a report line."""
    test = result.get("item") or {}
    failed = result.get("rc") != 0
    cause = (result.get("stderr") or result.get("msg") or "").strip().splitlines()[-1:] or [""]
    return {
        "component": f"smoke: {test.get('name', '?')}",
        "host": test.get("host", "localhost"),
        "status": "FAILED" if failed else "PASS",
        "checks": [{"check": "exit status 0", "ok": not failed, "expected": 0, "found": result.get("rc")}],
        **({"error": f"exit status {result.get('rc')}: {cause[0]}"} if failed else {}),
    }
