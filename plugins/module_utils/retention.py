# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Retention: a pure planner from (backup sets, now, policy) to keep/delete, each with its reasons.

Nothing here touches storage; :func:`plan` is deterministic for the same input,
so every rule is unit-tested on its own, and a dry run shows exactly what a
real prune would do.
"""

from __future__ import annotations

import datetime
from dataclasses import dataclass, field

from ansible_collections.caas.backup.plugins.module_utils.catalog import KINDS, BackupSet, iso, parse_time
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError

GFS_RULES = ("daily", "weekly", "monthly", "yearly")
DEFAULT_POLICY: dict[str, dict[str, int]] = {
    "mongo-full": {"daily": 30, "weekly": 12, "monthly": 12, "yearly": 7},
    "mongo-oplog": {"days": 7},
    "redis-rdb": {"days": 7},
    "redis-aof": {"days": 7},
    "kafka-meta": {"days": 90},
    "config": {"days": 365},
}


def merge_policy(overrides: dict | None) -> dict[str, dict[str, int]]:
    """The default policy with ``overrides`` applied per kind; refuses unknown kinds, rules and negative counts."""
    policy = {kind: dict(rules) for kind, rules in DEFAULT_POLICY.items()}
    for kind, rules in (overrides or {}).items():
        if kind not in KINDS:
            raise ConfigurationError(f"policy names an unknown kind {kind!r}: use {', '.join(KINDS)}")
        if not isinstance(rules, dict):
            raise ConfigurationError(f"policy for {kind} must be a mapping of rule to count")
        for rule, count in rules.items():
            if rule not in (*GFS_RULES, "days"):
                raise ConfigurationError(
                    f"policy for {kind} has an unknown rule {rule!r}: use days, {', '.join(GFS_RULES)}"
                )
            if isinstance(count, bool) or not isinstance(count, int) or count < 0:
                raise ConfigurationError(f"policy {kind}.{rule} must be a whole number >= 0, not {count!r}")
        policy[kind] = dict(rules)
    return policy


@dataclass
class Decision:
    """What happens to one set, and why."""

    bset: BackupSet
    keep: bool = False
    reasons: list[str] = field(default_factory=list)

    def as_dict(self) -> dict:
        return {
            "kind": self.bset.kind,
            "source": self.bset.source,
            "backup_id": self.bset.backup_id,
            "time": iso(self.bset.time),
            "complete": self.bset.complete,
            "action": "keep" if self.keep else "delete",
            "reasons": self.reasons,
        }


def _period(moment: datetime.datetime, rule: str) -> tuple[int, ...]:
    """The calendar bucket of a time for a GFS rule (UTC): a day, an ISO week, a month or a year."""
    if rule == "daily":
        return (moment.year, moment.month, moment.day)
    if rule == "weekly":
        year, week, _weekday = moment.isocalendar()
        return (year, week)
    if rule == "monthly":
        return (moment.year, moment.month)
    return (moment.year,)


def _periods_back(now: datetime.datetime, rule: str, count: int) -> set[tuple[int, ...]]:
    """The ``count`` most recent calendar buckets of a rule, the current one included."""
    buckets: set[tuple[int, ...]] = set()
    if rule == "daily":
        for back in range(count):
            buckets.add(_period(now - datetime.timedelta(days=back), rule))
    elif rule == "weekly":
        for back in range(count):
            buckets.add(_period(now - datetime.timedelta(weeks=back), rule))
    elif rule == "monthly":
        year, month = now.year, now.month
        for _back in range(count):
            buckets.add((year, month))
            year, month = (year, month - 1) if month > 1 else (year - 1, 12)
    else:
        buckets.update((now.year - back,) for back in range(count))
    return buckets


def ts_time(value, fallback: datetime.datetime) -> datetime.datetime:
    """A manifest timestamp fact ({t, i}, epoch seconds or ISO 8601) as a UTC time."""
    if isinstance(value, dict) and isinstance(value.get("t"), int):
        return datetime.datetime.fromtimestamp(value["t"], datetime.timezone.utc)
    if isinstance(value, (int, float)) and not isinstance(value, bool):
        return datetime.datetime.fromtimestamp(value, datetime.timezone.utc)
    if isinstance(value, str):
        return parse_time(value)
    return fallback


def _consistent_point(bset: BackupSet) -> datetime.datetime:
    return ts_time(bset.facts.get("last_ts"), bset.time)


def _apply_rules(decisions: list[Decision], rules: dict[str, int], now: datetime.datetime) -> None:
    """Keep what a kind's rules want among complete sets (newest first)."""
    newest_first = sorted((d for d in decisions if d.bset.complete), key=lambda d: d.bset.time, reverse=True)
    if "days" in rules:
        cutoff = now - datetime.timedelta(days=rules["days"])
        for decision in newest_first:
            if decision.bset.time >= cutoff:
                decision.keep = True
                decision.reasons.append(f"within {rules['days']} days")
    for rule in GFS_RULES:
        if not rules.get(rule):
            continue
        wanted = _periods_back(now, rule, rules[rule])
        seen: set[tuple[int, ...]] = set()
        for decision in newest_first:
            bucket = _period(decision.bset.time, rule)
            if bucket in wanted and bucket not in seen:
                seen.add(bucket)
                decision.keep = True
                decision.reasons.append(f"{rule} {'-'.join(str(p) for p in bucket)}")


def _protect_pitr_chain(
    oplog: list[Decision], fulls: list[Decision], rules: dict[str, int], now: datetime.datetime
) -> None:
    """Keep every oplog slice a point-in-time restore inside the oplog retention window still needs.

    Reaching a moment T needs the newest kept full backup whose consistent point
    is at or before T, and every slice from that point on. So the slices that
    start from the base of the oldest restorable moment are kept, however old.
    """
    kept_points = sorted(_consistent_point(d.bset) for d in fulls if d.keep)
    if not kept_points or "days" not in rules:
        return
    window_start = now - datetime.timedelta(days=rules["days"])
    at_or_before = [p for p in kept_points if p <= window_start]
    base = at_or_before[-1] if at_or_before else kept_points[0]
    for decision in oplog:
        if decision.keep or not decision.bset.complete:
            continue
        last = ts_time(decision.bset.facts.get("last_ts"), decision.bset.time)
        if last >= base:
            decision.keep = True
            decision.reasons.append(f"needed for point-in-time restore from the full backup at {iso(base)}")


def plan(
    sets: list[BackupSet],
    now: datetime.datetime,
    policy: dict[str, dict[str, int]],
    *,
    minimum_redundancy: int = 1,
    keep_tags: tuple[str, ...] = ("keep",),
    incomplete_grace: datetime.timedelta = datetime.timedelta(hours=24),
) -> list[Decision]:
    """Decide, for every set, keep or delete, with the reasons.

    Rules, in order: sets with a ``keep_tags`` tag stay forever; each kind's
    ``days`` and daily/weekly/monthly/yearly rules keep what they name; oplog
    slices a kept full backup's point-in-time window needs stay; at least
    ``minimum_redundancy`` complete sets stay per kind and source; incomplete
    sets (no manifest) go once older than ``incomplete_grace``, younger ones
    may still be being written. Sets with an unreadable manifest stop the plan.
    """
    if minimum_redundancy < 0:
        raise ConfigurationError("minimum_redundancy must be >= 0")
    unreadable = [s for s in sets if s.error]
    if unreadable:
        names = ", ".join(f"{s.prefix} ({s.error})" for s in unreadable[:5])
        raise ConfigurationError(
            f"{len(unreadable)} backup set(s) have an unreadable manifest: {names}; "
            "nothing is pruned until they are repaired or removed by hand"
        )
    decisions = [Decision(s) for s in sets]
    groups: dict[tuple[str, str], list[Decision]] = {}
    for decision in decisions:
        groups.setdefault((decision.bset.kind, decision.bset.source), []).append(decision)
    for (kind, _source), group in groups.items():
        for decision in group:
            tags = [t for t in decision.bset.tags if t in keep_tags]
            if tags:
                decision.keep = True
                decision.reasons.append(f"tagged {tags[0]}")
        _apply_rules(group, policy.get(kind, {}), now)
    for (kind, source), group in groups.items():
        if kind == "mongo-oplog":
            fulls = groups.get(("mongo-full", source), [])
            _protect_pitr_chain(group, fulls, policy.get(kind, {}), now)
    for group in groups.values():
        complete = sorted((d for d in group if d.bset.complete), key=lambda d: d.bset.time, reverse=True)
        missing = minimum_redundancy - sum(1 for d in complete if d.keep)
        for decision in complete:
            if missing <= 0:
                break
            if not decision.keep:
                decision.keep = True
                decision.reasons.append(f"minimum_redundancy {minimum_redundancy}")
                missing -= 1
        for decision in group:
            if decision.bset.complete:
                if not decision.keep:
                    decision.reasons.append("outside every retention rule")
            elif now - decision.bset.time < incomplete_grace:
                decision.keep = True
                decision.reasons.append("incomplete but younger than the grace period (may still be written)")
            else:
                decision.reasons.append("incomplete (no manifest) and older than the grace period")
    return decisions
