# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Disaster-recovery drills: their scratch targets, their point in time, production side by side, their evidence.

A drill (``playbooks/drill.yml``) is ``dr.yml`` into scratch targets. What may never happen is a restore into
production: :func:`scratch_targets` refuses a target that is one of production's addresses before anything is
restored. The evidence is stored in the backup storage, unencrypted (it holds no secret and auditors must read
it), as ``drills/<YYYYmmddTHHMMSSZ>/report.json`` and ``report.html``, then ``SHA256SUMS`` (written last, in
``sha256sum -c`` format: evidence without it is incomplete). :func:`latest_drill` reads the newest.
"""

from __future__ import annotations

import datetime
import hashlib
import json
import os
import random
import re
import socket
from collections.abc import Callable, Mapping
from urllib.parse import urlparse

from ansible_collections.caas.backup.plugins.module_utils.common import (
    ConfigurationError,
    IntegrityError,
    NotFoundError,
)
from ansible_collections.caas.backup.plugins.module_utils.site import dr_checks
from ansible_collections.caas.backup.plugins.module_utils.storage import Storage

PREFIX = "drills/"
REPORT = "report.json"
HTML = "report.html"
SUMS = "SHA256SUMS"
_DRILL_ID = re.compile(r"^\d{8}T\d{6}Z$")
_LOCAL = {"localhost", "127.0.0.1", "::1", "0.0.0.0", "ip6-localhost"}
_DEFAULT_PORTS = {"mongodb": 27017, "redis": 6379, "kafka": 9092}
# Where each component's production server is named on a site host: the site variables, the role variables.
PRODUCTION_VARS = {
    "mongodb": ("caas_backup_mongodb_uri", "mongodb_backup_uri", "mongodb_backup_restore_uri"),
    "redis": ("caas_backup_redis_url", "redis_backup_url"),
    "kafka": (
        "caas_backup_kafka_bootstrap_servers",
        "kafka_backup_bootstrap_servers",
        "kafka_backup_restore_bootstrap_servers",
    ),
    "config": ("config_backup_root", "config_backup_restore_dest"),
}


Resolver = Callable[[str], set[str]]


def _host(host: str) -> str:
    host = host.strip("[]").lower()
    return "127.0.0.1" if host in _LOCAL or host.startswith("127.") else host


def resolve(host: str) -> set[str]:
    """The IP addresses a host name resolves to (none when it does not): a name and its address are one host."""
    try:
        return {str(info[4][0]) for info in socket.getaddrinfo(host, None, proto=socket.IPPROTO_TCP)}
    except (OSError, UnicodeError):
        return set()


def _endpoints(component: str, address, resolver: Resolver) -> set[tuple[str, int]]:
    """The (host, port) pairs an address names, each host also as the addresses it resolves to; this machine's
    names are one."""
    default = _DEFAULT_PORTS[component]
    if isinstance(address, (list, tuple)):
        items = [str(a) for a in address]
    elif component == "mongodb":
        rest = str(address).partition("://")[2] or str(address)
        items = rest.rpartition("@")[2].split("/")[0].split("?")[0].split(",")
    elif "://" in str(address):
        parsed = urlparse(str(address))
        items = [f"[{parsed.hostname or ''}]:{parsed.port or default}"]
    else:
        items = [str(address)]
    found = set()
    for item in items:
        host, sep, port = item.strip().rpartition(":")
        if not sep or not port.isdigit():
            host, port = item.strip(), str(default)
        host = host.strip("[]")
        if host:
            found |= {(_host(h), int(port)) for h in {host, *resolver(host)}}
    return found


def _production(component: str, host_vars: Mapping) -> list[tuple[str, object]]:
    named = [(name, host_vars.get(name)) for name in PRODUCTION_VARS[component]]
    if component == "redis":
        port = host_vars.get("redis_backup_login_port")
        if port not in (None, ""):
            named.append(
                ("redis_backup_login_port", f"{host_vars.get('redis_backup_login_host') or '127.0.0.1'}:{port}")
            )
    return [(name, value) for name, value in named if value not in (None, "", [])]


def _target_address(component: str, target) -> object:
    if component == "redis" and isinstance(target, Mapping):
        return target.get("url")
    return target


def scratch_targets(targets: Mapping, components: list[str], host_vars: Mapping, resolver: Resolver = resolve) -> dict:
    """The scratch target of each component a drill restores on this host, checked never to be production.

    ``targets`` maps a component to its scratch target: ``mongodb`` a URI, ``redis`` a URL or
    ``{url, start_command | service, config_file}``, ``kafka`` a list of bootstrap servers, ``config`` a
    directory. ``host_vars`` are the host's variables, where production is named (:data:`PRODUCTION_VARS`,
    and ``redis_backup_login_host``/``_port``). A component without a target, or whose target is one of
    production's addresses (the same host - by name or by an address it resolves to - and port; for
    configuration the same directory, or one inside the other), is refused - a drill never restores into
    production.
    Returns ``targets`` (``{component: target}``, Redis as a dict), ``refused`` (why, one line each: none
    when the drill may go on) and ``overrides``: the role variables that point the restores and checks at the
    targets, with their values (:func:`overrides`).
    """
    chosen: dict = {}
    problems = []
    for component in components:
        target = (targets or {}).get(component)
        address = _target_address(component, target)
        if address in (None, "", []):
            problems.append(f"{component} has no scratch target (dr_site_targets.{component})")
            continue
        for name, value in _production(component, host_vars):
            if component == "config":
                mine, theirs = os.path.realpath(str(address)), os.path.realpath(str(value))
                same = os.path.commonpath([mine, theirs]) in (mine, theirs)
            else:
                same = bool(_endpoints(component, address, resolver) & _endpoints(component, value, resolver))
            if same:
                problems.append(
                    f"{component} scratch target {_safe(address)} is production's ({name}): a drill never restores "
                    "into production"
                )
                break
        chosen[component] = (
            dict(target) if isinstance(target, Mapping) else ({"url": target} if component == "redis" else target)
        )
    return {"targets": chosen, "refused": problems, "overrides": overrides(chosen)}


def overrides(targets: Mapping) -> dict:
    """The role variables that point a drill's restores and health checks at its scratch ``targets``, and their
    values: for Redis also its own start command or unit and config file (none: never production's)."""
    found: dict = {}
    if "mongodb" in targets:
        found["mongodb_backup_restore_uri"] = targets["mongodb"]
    if "redis" in targets:
        redis = targets["redis"]
        found.update(
            redis_backup_url=redis.get("url"),
            redis_backup_service=redis.get("service") or "",
            redis_backup_start_command=list(redis.get("start_command") or ()),
            redis_backup_config_file=redis.get("config_file") or "",
        )
    if "kafka" in targets:
        found["kafka_backup_restore_bootstrap_servers"] = list(targets["kafka"])
    if "config" in targets:
        found["config_backup_restore_dest"] = targets["config"]
    return found


def shadowed(wanted: Mapping, effective: Mapping) -> list[str]:
    """The variables of :func:`overrides` (``wanted``) whose ``effective`` value differs: something that outranks
    the drill's own settings (extra vars) would point a restore elsewhere - maybe at production."""
    return [name for name, value in wanted.items() if effective.get(name) != value]


def _safe(address) -> str:
    """An address without the password a URI may hold."""
    return re.sub(r"(?<=://)[^/@]*@", "", ",".join(address) if isinstance(address, (list, tuple)) else str(address))


def _epoch(text: str) -> float:
    return datetime.datetime.fromisoformat(str(text).replace("Z", "+00:00")).timestamp()


def _iso(seconds: float) -> str:
    return datetime.datetime.fromtimestamp(seconds, datetime.timezone.utc).isoformat().replace("+00:00", "Z")


def random_point(pitr: Mapping, source: str = "", rng: random.Random | None = None) -> str:
    """A random whole second inside a MongoDB source's point-in-time window (``backup_info``'s ``pitr``), never
    in a gap: the target a drill restores to (ISO 8601 UTC, exclusive, so its second is after the window opens).

    ``source`` picks the source when there are several. Raises :class:`NotFoundError` when there is no window
    or no whole second inside it.
    """
    if not source:
        if len(pitr) != 1:
            raise ConfigurationError(
                f"{len(pitr)} MongoDB sources have point-in-time windows ({', '.join(sorted(pitr)) or 'none'}): "
                "set caas_backup_mongodb_source_name"
            )
        source = next(iter(pitr))
    window = pitr.get(source) or {}
    if not window.get("earliest") or not window.get("latest"):
        raise NotFoundError(f"MongoDB source {source} has no point-in-time window (no full backup and oplog slices)")
    start, end = _epoch(window["earliest"]), _epoch(window["latest"])
    spans, position = [], start
    for gap in sorted(window.get("gaps") or (), key=lambda g: _epoch(g["from"])):
        spans.append((position, _epoch(gap["from"])))
        position = _epoch(gap["to"])
    spans.append((position, end))
    # Whole seconds s with first < s <= last: the entry at `first` is restored, and `last` was captured.
    seconds = [(int(first) + 1, int(last)) for first, last in spans if int(last) >= int(first) + 1]
    if not seconds:
        raise NotFoundError(
            f"the point-in-time window of {source} ({window['earliest']} to {window['latest']}) holds no whole second"
        )
    rng = rng or random.SystemRandom()
    total = sum(b - a + 1 for a, b in seconds)
    pick = rng.randrange(total)
    for a, b in seconds:
        if pick <= b - a:
            break
        pick -= b - a + 1
    return _iso(a + pick)


def drill_report(report: Mapping, hostvars: Mapping, point_in_time: str = "") -> dict:
    """The drill's report: ``dr_report``'s, with production's current state beside each check, and ``drill``.

    Per component, ``hostvars[host]`` holds what its restore returned (``dr_site_restored``), the check-mode
    probe of production (``dr_site_production``: a module result, failed when production could not be read)
    and the scratch targets (``dr_site_scratch``). The checks' pass/fail stays what the restored data says
    against its backup: production moved on since the backup was taken, so its values differ and never pass
    or fail a drill. Each check gains ``production`` (production's value now, or None); each component gains
    ``production`` (``reachable``, and ``error`` when not). ``drill`` records ``point_in_time`` (how the target
    time was chosen: ``random``, a time, or empty for the latest backups) and the credential-free ``targets``.
    """
    out = dict(report)
    components, targets = [], {}
    for component in report.get("components") or ():
        entry = dict(component)
        name, host_vars = entry.get("component"), hostvars.get(entry.get("host")) or {}
        for scratch_component, target in (host_vars.get("dr_site_scratch") or {}).items():
            address = target.get("url") if isinstance(target, Mapping) else target
            targets[f"{scratch_component}@{entry.get('host')}"] = _safe(address)
        if name not in PRODUCTION_VARS:  # a smoke test
            components.append(entry)
            continue
        probe = (host_vars.get("dr_site_production") or {}).get(name)
        checks = [dict(c, production=None) for c in entry.get("checks") or ()]
        if not isinstance(probe, Mapping) or probe.get("failed"):
            error = probe.get("msg") if isinstance(probe, Mapping) else None
            entry["production"] = {"reachable": False, "error": str(error or "not read")}
        else:
            entry["production"] = {"reachable": True}
            restored = (host_vars.get("dr_site_restored") or {}).get(name) or {}
            now = dr_checks(restored, name, probe, bool(entry.get("point_in_time")))
            values = {c["check"]: c.get("found") for c in now}
            for check in checks:
                check["production"] = values.get(check["check"])
        entry["checks"] = checks
        components.append(entry)
    out["components"] = components
    out["drill"] = {"point_in_time": str(point_in_time or ""), "targets": targets}
    return out


def drill_id(report: Mapping) -> str:
    """``YYYYmmddTHHMMSSZ``: the drill's start, the name of its evidence directory."""
    try:
        started = datetime.datetime.fromisoformat(str(report.get("started_at")).replace("Z", "+00:00"))
    except ValueError:
        raise ConfigurationError(f"report started_at {report.get('started_at')!r} is not an ISO 8601 time") from None
    if started.tzinfo is None:
        started = started.replace(tzinfo=datetime.timezone.utc)
    return f"{started.astimezone(datetime.timezone.utc):%Y%m%dT%H%M%SZ}"


def _sums(objects: dict[str, bytes]) -> bytes:
    return "".join(f"{hashlib.sha256(data).hexdigest()}  {name}\n" for name, data in objects.items()).encode()


def write_evidence(storage: Storage, report: Mapping, html: str) -> dict:
    """Store a drill's report (JSON) and its HTML page under ``drills/<drill_id>/``, then ``SHA256SUMS``.

    Evidence is never overwritten: a directory that already holds a drill's evidence raises
    :class:`ConfigurationError`. Returns ``drill_id``, ``prefix`` and ``objects`` (``key``, ``size``,
    ``sha256`` each).
    """
    if report.get("result") not in ("PASS", "FAIL"):
        raise ConfigurationError(f"a drill report has result PASS or FAIL, not {report.get('result')!r}")
    ident = drill_id(report)
    prefix = f"{PREFIX}{ident}/"
    if any(True for _info in storage.list(prefix)):
        raise ConfigurationError(f"drill evidence {prefix} already exists in {storage.url}: it is never overwritten")
    objects = {REPORT: (json.dumps(report, indent=1, sort_keys=True) + "\n").encode(), HTML: html.encode()}
    for name, data in objects.items():
        storage.put_bytes(prefix + name, data)
    storage.put_bytes(prefix + SUMS, _sums(objects))
    return {
        "drill_id": ident,
        "prefix": prefix,
        "objects": [
            {"key": prefix + name, "size": len(data), "sha256": hashlib.sha256(data).hexdigest()}
            for name, data in objects.items()
        ],
    }


def latest_drill(storage: Storage) -> dict | None:
    """The report of the newest complete drill evidence (the one with ``SHA256SUMS``), or None.

    The report gains ``drill_id`` and ``evidence`` (its prefix). A report whose sha256 does not match
    ``SHA256SUMS`` cannot be trusted: it is returned as ``result: FAIL`` with ``error`` saying why, so the
    drill alert fires rather than a forged PASS counting.
    """
    complete = sorted(
        info.key.split("/")[1]
        for info in storage.list(PREFIX)
        if info.key.endswith("/" + SUMS) and len(info.key.split("/")) == 3 and _DRILL_ID.match(info.key.split("/")[1])
    )
    if not complete:
        return None
    ident = complete[-1]
    prefix = f"{PREFIX}{ident}/"
    sums = dict(
        reversed(line.split("  ", 1)) for line in storage.get_bytes(prefix + SUMS).decode().splitlines() if "  " in line
    )
    try:
        raw = storage.get_bytes(prefix + REPORT)
        found = hashlib.sha256(raw).hexdigest()
        if sums.get(REPORT) != found:
            raise IntegrityError(f"{prefix}{REPORT} has sha256 {found}, {SUMS} says {sums.get(REPORT)}")
        report = json.loads(raw)
    except (IntegrityError, NotFoundError, ValueError) as exc:
        return {"drill_id": ident, "evidence": prefix, "result": "FAIL", "error": f"evidence unusable: {exc}"}
    return {**report, "drill_id": ident, "evidence": prefix}
