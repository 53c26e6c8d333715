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

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    KINDS,
    BackupSet,
    check_source,
    iso,
    parse_time,
    set_order,
)
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError

GFS_RULES = ("daily", "weekly", "monthly", "yearly")
DEFAULT_POLICY: dict[str, dict[str, int]] = {
    "mongo-full": {"daily": 30, "weekly": 12, "monthly": 12, "yearly": 7},
    "mongo-oplog": {"days": 7},
    "redis-rdb": {"days": 7},
    "redis-aof": {"days": 7},
    "kafka-meta": {"days": 90},
    "kafka-messages": {"days": 7},
    "config": {"days": 365},
}
# incomplete_grace_hours past this (10 years) is a mistake, and past a few million overflows a date.
MAX_GRACE_HOURS = 87600


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
    verification: dict | None = None
    # Kept by a kind's rules or by redundancy (not only by a tag or for a point-in-time window).
    rule_kept: bool = False

    @property
    def usable(self) -> bool:
        """Restorable: complete, and its stored verification (if any) passed."""
        return self.bset.complete and (self.verification is None or bool(self.verification.get("ok")))

    def keep_by_rule(self, reason: str) -> None:
        self.keep = True
        self.rule_kept = True
        self.reasons.append(reason)

    def as_dict(self) -> dict:
        return {
            "kind": self.bset.kind,
            "source": self.bset.source,
            "backup_id": self.bset.backup_id,
            "time": iso(self.bset.time),
            "complete": self.bset.complete,
            "verified": None if self.verification is None else bool(self.verification.get("ok")),
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


def consistent_point(bset: BackupSet) -> datetime.datetime:
    """A full backup's consistent point (its ``last_ts``): the first moment a point-in-time restore from it reaches."""
    return ts_time(bset.facts.get("last_ts"), bset.time)


def slice_span(bset: BackupSet) -> tuple[datetime.datetime, datetime.datetime]:
    """An oplog slice's (``first_ts``, ``last_ts``): it continues from the first and reaches the second."""
    last = ts_time(bset.facts.get("last_ts"), bset.time)
    return ts_time(bset.facts.get("first_ts"), last), last


def grace_period(hours: int) -> datetime.timedelta:
    """``incomplete_grace_hours`` as a time span; refuses negative and absurdly large values."""
    if isinstance(hours, bool) or not isinstance(hours, int) or not 0 <= hours <= MAX_GRACE_HOURS:
        raise ConfigurationError(
            f"incomplete_grace_hours must be a whole number from 0 to {MAX_GRACE_HOURS} (10 years), not {hours!r}"
        )
    return datetime.timedelta(hours=hours)


def selection_prefixes(kinds: list[str] | tuple[str, ...], source: str | None) -> tuple[str, ...]:
    """The storage prefixes a selection of ``kinds`` and ``source`` covers (``""``: everything)."""
    if not kinds and not source:
        return ("",)
    tail = f"{check_source(source)}/" if source else ""
    return tuple(f"{kind}/{tail}" for kind in (kinds or KINDS))


def abandoned(
    sets: list[BackupSet], leftover_keys: list[str], now: datetime.datetime, grace: datetime.timedelta
) -> dict[str, dict[str, int]]:
    """Killed or abandoned attempts per kind: incomplete sets older than ``grace``, unfinished uploads, empty dirs.

    ``leftover_keys`` are those of :meth:`Storage.leftovers` (a directory's ends
    with ``/``). These are what a prune removes, so the count a prune reports and
    the one backup_info sees before it are the same.
    """
    counts: dict[str, dict[str, int]] = {}

    def add(kind: str, what: str) -> None:
        entry = counts.setdefault(kind, {"incomplete_sets": 0, "unfinished_uploads": 0, "empty_directories": 0})
        entry[what] += 1

    for bset in sets:
        if not bset.complete and not bset.error and now - bset.time >= grace:
            add(bset.kind, "incomplete_sets")
    for key in leftover_keys:
        add(key.split("/")[0], "empty_directories" if key.endswith("/") else "unfinished_uploads")
    return dict(sorted(counts.items()))


def _apply_rules(decisions: list[Decision], rules: dict[str, int], now: datetime.datetime) -> None:
    """Keep what a kind's rules want among complete sets (newest first, restorable ones before failed ones)."""
    newest_first = sorted(
        (d for d in decisions if d.bset.complete), key=lambda d: (d.usable, set_order(d.bset)), reverse=True
    )
    if "days" in rules:
        cutoff = now - datetime.timedelta(days=rules["days"])
        for decision in newest_first:
            if decision.bset.time >= cutoff:
                decision.keep_by_rule(f"within {rules['days']} days")
    for rule in GFS_RULES:
        if not rules.get(rule):
            continue
        wanted = _periods_back(now, rule, rules[rule])
        seen: set[tuple[int, ...]] = set()
        for decision in newest_first:
            bucket = _period(decision.bset.time, rule)
            if bucket in wanted and bucket not in seen:
                seen.add(bucket)
                decision.keep_by_rule(f"{rule} {'-'.join(str(p) for p in bucket)}")


def _keep_restorable(group: list[Decision], minimum_redundancy: int) -> None:
    """The newest restorable set stays, and at least ``minimum_redundancy`` restorable sets in all.

    Sets whose verification failed are not restorable: they never count, so a
    bad newest set cannot stand in for the good one before it.
    """
    usable = sorted((d for d in group if d.usable), key=lambda d: set_order(d.bset), reverse=True)
    if not usable:
        return
    missing = minimum_redundancy - sum(1 for d in usable if d.keep)
    for decision in usable:
        if missing <= 0:
            break
        if not decision.keep:
            decision.keep_by_rule(f"minimum_redundancy {minimum_redundancy}")
            missing -= 1
    if not usable[0].keep:
        usable[0].keep_by_rule("newest restorable set")


@dataclass
class WindowNeeds:
    """What one source's point-in-time window needs (full backups, slices) and what no chain reaches."""

    source: str
    start: datetime.datetime
    end: datetime.datetime
    fulls: list[Decision] = field(default_factory=list)
    slices: list[Decision] = field(default_factory=list)
    unreachable: list[tuple[datetime.datetime, datetime.datetime]] = field(default_factory=list)


def window_needs(source: str, fulls: list[Decision], slices: list[Decision]) -> WindowNeeds | None:
    """The full backups and slices a point in time inside the kept oplog window needs.

    The window runs from the first position of the oldest slice the oplog's own
    rules keep (tags aside) to the newest slice's end. Reaching a moment T needs
    the newest full backup whose consistent point is at or before T, and every
    slice from that point on; after a hole in the slices, the full backup whose
    point lies in the first slice after it restarts the chain. Sets whose
    verification failed are not used.
    Returns None when no slice is kept by a rule (no window).
    """
    chain = sorted((d for d in slices if d.usable), key=lambda d: (*slice_span(d.bset), d.bset.backup_id))
    ruled = [d for d in chain if d.rule_kept]
    if not ruled:
        return None
    start = min(slice_span(d.bset)[0] for d in ruled)
    needs = WindowNeeds(source, start, max(slice_span(d.bset)[1] for d in chain))
    bases = sorted((d for d in fulls if d.usable), key=lambda d: (consistent_point(d.bset), set_order(d.bset)))
    if not bases:
        needs.unreachable.append((start, needs.end))
        return needs
    before = [d for d in bases if consistent_point(d.bset) <= start]
    base = before[-1] if before else bases[0]
    if not before:
        needs.unreachable.append((start, consistent_point(base.bset)))
    needs.fulls.append(base)
    reach = consistent_point(base.bset)
    hole_from = None
    for decision in chain:
        first, last = slice_span(decision.bset)
        if last <= reach:
            continue
        if first > reach:
            # A full backup restarts the chain on this slice when its point lies inside it (the earliest reaches most).
            restarts = [d for d in bases if first <= consistent_point(d.bset) < last]
            if not restarts:
                hole_from = reach if hole_from is None else hole_from
                continue
            restart = restarts[0]
            needs.fulls.append(restart)
            needs.unreachable.append((reach if hole_from is None else hole_from, consistent_point(restart.bset)))
            hole_from = None
        needs.slices.append(decision)
        reach = last
    if hole_from is not None:
        needs.unreachable.append((hole_from, needs.end))
    return needs


def _windows(groups: dict[tuple[str, str], list[Decision]]) -> list[WindowNeeds]:
    found = []
    for (kind, source), group in sorted(groups.items()):
        if kind == "mongo-oplog":
            needs = window_needs(source, groups.get(("mongo-full", source), []), group)
            if needs is not None:
                found.append(needs)
    return found


def _protect_pitr_window(needs: WindowNeeds) -> None:
    """Keep every full backup and slice a point in time inside the kept oplog window needs."""
    for decision in needs.fulls:
        if not decision.keep:
            decision.keep = True
            decision.reasons.append(f"base of the point-in-time window from {iso(needs.start)}")
    base = iso(consistent_point(needs.fulls[0].bset)) if needs.fulls else None
    for decision in needs.slices:
        if not decision.keep:
            decision.keep = True
            decision.reasons.append(f"needed for point-in-time restore from the full backup at {base}")


def _protect_message_chain(group: list[Decision]) -> None:
    """Keep every Kafka message set after the oldest one a rule keeps: a restore replays them all, in order.

    Message sets chain per partition like oplog slices (each continues where
    the previous one stopped), with no full backup under them: a set deleted
    between two kept ones would leave a hole in the records of every
    point in time after it.
    """
    ordered = sorted((d for d in group if d.bset.complete), key=lambda d: set_order(d.bset))
    ruled = [i for i, d in enumerate(ordered) if d.rule_kept]
    if not ruled:
        return
    start = ordered[ruled[0]]
    for decision in ordered[ruled[0] :]:
        if not decision.keep:
            decision.keep = True
            decision.reasons.append(f"continues the kept kafka-messages chain from {start.bset.backup_id}")


def _group(decisions: list[Decision]) -> dict[tuple[str, str], list[Decision]]:
    groups: dict[tuple[str, str], list[Decision]] = {}
    for decision in decisions:
        groups.setdefault((decision.bset.kind, decision.bset.source), []).append(decision)
    return groups


def plan(
    sets: list[BackupSet],
    now: datetime.datetime,
    policy: dict[str, dict[str, int]],
    *,
    minimum_redundancy: int = 1,
    keep_tags: tuple[str, ...] = ("keep",),
    incomplete_grace: datetime.timedelta = datetime.timedelta(hours=24),
    verifications: dict[str, dict] | None = None,
) -> list[Decision]:
    """Decide, for every set, keep or delete, with the reasons.

    Rules, in order: sets with a ``keep_tags`` tag stay forever; each kind's
    ``days`` and daily/weekly/monthly/yearly rules keep what they name; per kind
    and source the newest restorable set stays, and at least
    ``minimum_redundancy`` (>= 1) restorable ones; every full backup and oplog
    slice a point in time inside the kept oplog window needs stays; incomplete
    sets (no manifest) go once older than ``incomplete_grace``, younger ones
    may still be being written. ``verifications`` maps a set's prefix to its
    stored verification report: a set whose verification failed is not
    restorable and never counts. Sets with an unreadable manifest stop the plan.
    """
    if isinstance(minimum_redundancy, bool) or not isinstance(minimum_redundancy, int) or minimum_redundancy < 1:
        raise ConfigurationError(
            f"minimum_redundancy must be a whole number >= 1, not {minimum_redundancy!r}: "
            "the newest restorable set of every kind and source is never deleted"
        )
    unreadable = [s for s in sets if s.error]
    if unreadable:
        names = ", ".join(f"{s.prefix} ({s.error})" for s in unreadable[:5])
        raise ConfigurationError(
            f"{len(unreadable)} backup set(s) have an unreadable manifest: {names}; "
            "nothing is pruned until they are repaired or removed by hand"
        )
    decisions = [Decision(s, verification=(verifications or {}).get(s.prefix)) for s in sets]
    groups = _group(decisions)
    for (kind, _source), group in groups.items():
        for decision in group:
            tags = [t for t in decision.bset.tags if t in keep_tags]
            if tags:
                decision.keep = True
                decision.reasons.append(f"tagged {tags[0]}")
        _apply_rules(group, policy.get(kind, {}), now)
        _keep_restorable(group, minimum_redundancy)
    for needs in _windows(groups):
        _protect_pitr_window(needs)
    for (kind, _source), group in groups.items():
        if kind == "kafka-messages":
            _protect_message_chain(group)
    for group in groups.values():
        for decision in group:
            if decision.bset.complete:
                if decision.verification is not None and not decision.usable:
                    decision.reasons.append("verification failed: not counted as restorable")
                if not decision.keep:
                    decision.reasons.append("outside every retention rule")
            elif now - decision.bset.time < incomplete_grace:
                decision.keep = True
                decision.reasons.append("incomplete but younger than the grace period (may still be written)")
            else:
                decision.reasons.append("incomplete (no manifest) and older than the grace period")
    return decisions


def pitr_warnings(decisions: list[Decision]) -> list[str]:
    """What an operator must hear about a plan's point-in-time windows.

    A full backup that a kind's policy would delete but the kept oplog window
    needs (kept all the same), and any part of the window no kept full backup
    and unbroken chain of slices reaches.
    """
    warnings = []
    for needs in _windows(_group(decisions)):
        for decision in needs.fulls:
            if not decision.rule_kept and not any(r.startswith("tagged ") for r in decision.reasons):
                warnings.append(
                    f"the mongo-full policy would delete {decision.bset.prefix}, but the point-in-time window of "
                    f"{needs.source} from {iso(needs.start)} needs it: kept (lengthen the mongo-full policy or "
                    "shorten the mongo-oplog one)"
                )
        warnings.extend(
            f"point-in-time targets of {needs.source} from {iso(a)} to {iso(b)} cannot be restored: no full "
            "backup and unbroken chain of oplog slices reach them"
            for a, b in needs.unreachable
        )
    return warnings
