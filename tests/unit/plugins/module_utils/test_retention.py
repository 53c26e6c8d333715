"""The retention planner: GFS calendars, PITR chains, redundancy, tags and incomplete sets."""

import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.caas.backup.plugins.module_utils.catalog import (
    BackupSet,
    SetWriter,
    latest,
    list_sets,
    new_backup_id,
    set_order,
)
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError
from ansible_collections.caas.backup.plugins.module_utils.mongo import pitr
from ansible_collections.caas.backup.plugins.module_utils.retention import (
    DEFAULT_POLICY,
    grace_period,
    merge_policy,
    pitr_warnings,
    plan,
    selection_prefixes,
)
from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage
from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

UTC = datetime.timezone.utc


def at(*args):
    return datetime.datetime(*args, tzinfo=UTC)


def bset(when, kind="mongo-full", source="db", tags=(), complete=True, facts=None):
    manifest = None
    if complete:
        manifest = {
            "finished_at": when.isoformat().replace("+00:00", "Z"),
            "tags": list(tags),
            "objects": [],
            "facts": facts or {},
        }
    return BackupSet(kind, source, new_backup_id(when), manifest)


def kept(decisions):
    return sorted(d.bset.time for d in decisions if d.keep)


def reasons(decisions, when):
    [decision] = [d for d in decisions if d.bset.time == when]
    return decision.reasons


def daily_series(start, days, hour=2, **kw):
    return [bset(start + datetime.timedelta(days=n, hours=hour), **kw) for n in range(days)]


def test_days_rule_keeps_what_is_inside_the_window():
    now = at(2026, 3, 10, 12)
    sets = daily_series(at(2026, 2, 20), 19, kind="redis-rdb")
    decisions = plan(sets, now, DEFAULT_POLICY)
    assert kept(decisions)[0] == at(2026, 3, 4, 2)  # 7 days back from 03-10 12:00 is 03-03 12:00
    assert len(kept(decisions)) == 7
    assert "outside every retention rule" in reasons(decisions, at(2026, 3, 3, 2))


def test_daily_keeps_the_newest_of_each_day():
    now = at(2026, 3, 10, 23)
    sets = [bset(at(2026, 3, 10, h)) for h in (1, 9, 17)] + [bset(at(2026, 3, 9, h)) for h in (3, 4)]
    decisions = plan(sets, now, {"mongo-full": {"daily": 2}})
    assert kept(decisions) == [at(2026, 3, 9, 4), at(2026, 3, 10, 17)]
    assert reasons(decisions, at(2026, 3, 10, 17)) == ["daily 2026-3-10"]


def test_daily_30_is_thirty_calendar_days():
    now = at(2026, 3, 31, 12)
    sets = daily_series(at(2026, 1, 1), 90)
    decisions = plan(sets, now, {"mongo-full": {"daily": 30}})
    assert kept(decisions) == [at(2026, 3, d, 2) for d in range(2, 32)]


def test_weekly_uses_iso_weeks_across_a_year_boundary():
    # 2026-12-31 is a Thursday of ISO week 2026-W53; 2027-01-03 (Sunday) is still W53; 2027-01-04 starts W01.
    now = at(2027, 1, 6, 12)
    sets = [bset(at(2026, 12, 31, 2)), bset(at(2027, 1, 3, 2)), bset(at(2027, 1, 4, 2)), bset(at(2026, 12, 27, 2))]
    decisions = plan(sets, now, {"mongo-full": {"weekly": 2}})
    assert kept(decisions) == [at(2027, 1, 3, 2), at(2027, 1, 4, 2)]
    assert reasons(decisions, at(2027, 1, 3, 2)) == ["weekly 2026-53"]


def test_monthly_handles_month_ends_and_a_leap_february():
    now = at(2028, 3, 15)
    sets = [bset(at(2028, 2, 29, 23)), bset(at(2028, 2, 1)), bset(at(2028, 1, 31, 23, 59)), bset(at(2027, 12, 31))]
    decisions = plan(sets, now, {"mongo-full": {"monthly": 3}})
    assert kept(decisions) == [at(2028, 1, 31, 23, 59), at(2028, 2, 29, 23)]


def test_monthly_counts_back_over_a_year_boundary():
    now = at(2026, 1, 10)
    sets = [bset(at(2025, m, 28)) for m in range(1, 13)]
    decisions = plan(sets, now, {"mongo-full": {"monthly": 3}})
    assert kept(decisions) == [at(2025, 11, 28), at(2025, 12, 28)]


def test_yearly_keeps_the_newest_of_each_year():
    now = at(2026, 6, 1)
    sets = [bset(at(y, 12, 31, 2)) for y in range(2015, 2026)] + [bset(at(2026, 1, 1))]
    decisions = plan(sets, now, {"mongo-full": {"yearly": 7}})
    assert kept(decisions) == [at(y, 12, 31, 2) for y in range(2020, 2026)] + [at(2026, 1, 1)]


def test_default_mongo_policy_over_three_years_of_dailies():
    now = at(2026, 11, 24, 3)
    sets = daily_series(at(2023, 11, 25), 1096)
    decisions = plan(sets, now, DEFAULT_POLICY)
    keep = kept(decisions)
    assert all(at(2026, 10, 26) <= t for t in keep[-30:])
    # 30 dailies, then weeklies, monthlies and yearlies back to 2023: far fewer than 1096, at least 30 + 3.
    assert 33 <= len(keep) <= 30 + 12 + 12 + 7
    assert keep[0].year == 2023  # the yearly of 2023 survives


def test_keep_tag_is_forever_and_other_tags_are_not():
    now = at(2026, 11, 24)
    old_release = bset(at(2019, 1, 1), kind="config", tags=["keep", "release-1.0"])
    old_other = bset(at(2019, 1, 2), kind="config", tags=["release-0.9"])
    decisions = plan([old_release, old_other, bset(at(2026, 11, 23), kind="config")], now, DEFAULT_POLICY)
    assert kept(decisions) == [at(2019, 1, 1), at(2026, 11, 23)]
    assert reasons(decisions, at(2019, 1, 1)) == ["tagged keep"]


def test_minimum_redundancy_keeps_the_newest_sets_even_when_all_are_old():
    now = at(2026, 11, 24)
    sets = [bset(at(2025, 1, d), kind="redis-rdb") for d in (1, 2, 3)]
    decisions = plan(sets, now, DEFAULT_POLICY, minimum_redundancy=2)
    assert kept(decisions) == [at(2025, 1, 2), at(2025, 1, 3)]
    assert reasons(decisions, at(2025, 1, 3)) == ["minimum_redundancy 2"]


def test_minimum_redundancy_counts_per_source():
    now = at(2026, 11, 24)
    sets = [bset(at(2025, 1, 1), kind="redis-rdb", source="a"), bset(at(2025, 1, 1), kind="redis-rdb", source="b")]
    assert len(kept(plan(sets, now, DEFAULT_POLICY, minimum_redundancy=1))) == 2


def test_incomplete_sets_go_after_the_grace_period_only():
    now = at(2026, 11, 24, 12)
    young = bset(at(2026, 11, 24, 11), kind="config", complete=False)
    old = bset(at(2026, 11, 22), kind="config", complete=False)
    decisions = plan([young, old], now, DEFAULT_POLICY)
    assert [d.keep for d in decisions] == [True, False]
    assert "older than the grace period" in decisions[1].reasons[0]


def test_incomplete_sets_do_not_count_for_redundancy():
    now = at(2026, 11, 24)
    sets = [bset(at(2025, 1, 1), kind="config"), bset(at(2026, 11, 1), kind="config", complete=False)]
    decisions = plan(sets, now, {"config": {"days": 1}}, minimum_redundancy=1)
    assert [d.keep for d in decisions] == [True, False]


def test_oplog_slices_needed_by_the_pitr_window_are_kept():
    """Slices older than 7 days stay when the window's base full backup is older still."""
    now = at(2026, 3, 20, 12)
    fulls = [
        bset(at(2026, 3, d, 2), facts={"last_ts": {"t": int(at(2026, 3, d, 2, 5).timestamp()), "i": 1}})
        for d in (10, 12, 19)
    ]
    slices = [
        bset(
            at(2026, 3, d, h),
            kind="mongo-oplog",
            facts={
                "first_ts": {"t": int(at(2026, 3, d, h - 6).timestamp()), "i": 1},
                "last_ts": {"t": int(at(2026, 3, d, h).timestamp()), "i": 1},
            },
        )
        for d in range(9, 21)
        for h in (6, 12, 18)
        if at(2026, 3, d, h) < now
    ]
    policy = {"mongo-full": {"days": 30}, "mongo-oplog": {"days": 7}}
    decisions = plan(fulls + slices, now, policy)
    oplog_kept = [d.bset.time for d in decisions if d.keep and d.bset.kind == "mongo-oplog"]
    # The window opens 03-13 12:00; the newest full at or before it is 03-12 02:05: slices from there on stay.
    assert min(oplog_kept) == at(2026, 3, 12, 6)
    assert "needed for point-in-time restore" in reasons(decisions, at(2026, 3, 12, 6))[0]
    assert not [d for d in decisions if d.bset.time == at(2026, 3, 11, 18)][0].keep


def test_oplog_without_any_full_backup_follows_its_days_rule():
    now = at(2026, 3, 20)
    slices = [bset(at(2026, 3, d), kind="mongo-oplog") for d in range(1, 20)]
    assert len(kept(plan(slices, now, DEFAULT_POLICY))) == 7


def test_unreadable_manifest_stops_the_plan():
    broken = BackupSet("config", "a", new_backup_id(at(2026, 1, 1)), None, error="manifest is not valid JSON")
    with pytest.raises(ConfigurationError, match="unreadable manifest.*nothing is pruned"):
        plan([broken, bset(at(2026, 1, 2), kind="config")], at(2026, 11, 24), DEFAULT_POLICY)


@pytest.mark.parametrize(
    "overrides,message",
    [
        ({"mysql": {"days": 1}}, "unknown kind 'mysql'"),
        ({"config": {"days": -1}}, r"config.days must be a whole number >= 0, not -1"),
        ({"config": {"hourly": 3}}, "unknown rule 'hourly'"),
        ({"config": {"days": True}}, "whole number"),
        ({"config": 30}, "must be a mapping"),
    ],
)
def test_invalid_policies_are_refused(overrides, message):
    with pytest.raises(ConfigurationError, match=message):
        merge_policy(overrides)


def test_merge_policy_replaces_a_kinds_rules_and_keeps_the_others():
    policy = merge_policy({"config": {"days": 30}})
    assert policy["config"] == {"days": 30}
    assert policy["mongo-full"] == DEFAULT_POLICY["mongo-full"]


@settings(max_examples=60, deadline=None)
@given(
    st.lists(
        st.datetimes(
            min_value=datetime.datetime(2018, 1, 1), max_value=datetime.datetime(2026, 11, 24), timezones=st.just(UTC)
        ),
        min_size=1,
        max_size=60,
    ),
    st.integers(min_value=1, max_value=3),
    st.sets(st.integers(min_value=0, max_value=59)),
)
@example([datetime.datetime(2019, 11, 27, tzinfo=UTC)], 1, set())
def test_plan_invariants(times, redundancy, failed):
    """Whatever the history and whichever sets failed verification: the newest restorable set always survives,
    ``redundancy`` restorable sets stay (as many as there are), every set has a reason."""
    now = at(2026, 11, 24, 12)
    sets = [bset(t.replace(microsecond=0)) for t in times]
    verifications = {s.prefix: {"ok": False} for n, s in enumerate(sets) if n in failed}
    decisions = plan(sets, now, DEFAULT_POLICY, minimum_redundancy=redundancy, verifications=verifications)
    assert all(d.reasons for d in decisions)
    good = [d for d in decisions if d.bset.prefix not in verifications]
    assert sum(d.keep for d in good) >= min(redundancy, len(good))
    if good:
        assert max(good, key=lambda d: set_order(d.bset)).keep


@pytest.mark.parametrize("redundancy", [0, -1])
def test_minimum_redundancy_below_one_is_refused(redundancy):
    with pytest.raises(ConfigurationError, match=f"minimum_redundancy must be a whole number >= 1, not {redundancy}"):
        plan([bset(at(2026, 1, 1))], at(2026, 11, 24), DEFAULT_POLICY, minimum_redundancy=redundancy)


def test_a_failed_newest_set_never_stands_in_for_the_good_one_before_it():
    """The newest set's stored verification failed: it does not count, the older good one stays."""
    now = at(2026, 11, 24, 12)
    good, bad = bset(at(2026, 11, 20, 2), kind="redis-rdb"), bset(at(2026, 11, 24, 2), kind="redis-rdb")
    decisions = plan([good, bad], now, {"redis-rdb": {"days": 1}}, verifications={bad.prefix: {"ok": False}})
    assert kept(decisions) == [at(2026, 11, 20, 2), at(2026, 11, 24, 2)]
    assert reasons(decisions, at(2026, 11, 20, 2)) == ["minimum_redundancy 1"]
    assert reasons(decisions, at(2026, 11, 24, 2)) == [
        "within 1 days",
        "verification failed: not counted as restorable",
    ]
    assert [d.as_dict()["verified"] for d in decisions] == [None, False]


def test_failed_sets_do_not_count_for_redundancy():
    now = at(2026, 11, 24, 12)
    sets = [bset(at(2025, 1, d), kind="config") for d in (1, 2, 3, 4)]
    verifications = {sets[3].prefix: {"ok": False}, sets[2].prefix: {"ok": True}}
    decisions = plan(sets, now, {"config": {"days": 1}}, minimum_redundancy=2, verifications=verifications)
    # The failed newest goes (no rule keeps it); the two newest good ones stay.
    assert kept(decisions) == [at(2025, 1, 2), at(2025, 1, 3)]


def test_a_gfs_period_keeps_its_newest_good_set_not_a_failed_newer_one():
    now = at(2026, 11, 24, 12)
    sets = [bset(at(2026, 11, 24, h)) for h in (1, 2)]
    decisions = plan(sets, now, {"mongo-full": {"daily": 1}}, verifications={sets[1].prefix: {"ok": False}})
    assert kept(decisions) == [at(2026, 11, 24, 1)]
    assert reasons(decisions, at(2026, 11, 24, 1)) == ["daily 2026-11-24"]


def test_sets_of_the_same_second_are_ordered_as_the_catalog_orders_them(tmp_path):
    """Two sets finishing in the same second: prune keeps the one latest() (restores, backup_info) picks."""
    storage = open_storage(f"file://{tmp_path}")
    when = at(2026, 11, 24, 2)
    for suffix in ("ffff", "0000"):  # written in the other order than the ids sort
        writer = SetWriter(storage, "mongo-full", "rs0", WriteOptions("none"), now=when)
        writer.backup_id = f"20261124T020000.000Z-{suffix}"
        with writer.object("data") as out:
            out.write(b"x")
        writer.commit({}, finished_at=when)
    picked = latest(storage, "mongo-full", "rs0")
    assert picked.backup_id.endswith("-ffff")
    assert list_sets(storage)[-1].backup_id == picked.backup_id
    decisions = plan(list_sets(storage), at(2026, 11, 24, 12), {"mongo-full": {"daily": 1}})
    assert [d.bset.backup_id for d in decisions if d.keep] == [picked.backup_id]


# ---------------------------------------------------------------- point-in-time windows

HOUR = datetime.timedelta(hours=1)


def ts(moment):
    return {"t": int(moment.timestamp()), "i": 1}


def history(now, full_days, slice_start, hours=1):
    """Daily full backups at 02:00 (consistent point 02:05) on ``full_days`` (days back from ``now``), and a chain
    of oplog slices every ``hours`` from ``slice_start`` to ``now``, each continuing the previous one."""
    day = now.replace(hour=0, minute=0, second=0)
    fulls = [
        bset(
            day - datetime.timedelta(days=d) + 2 * HOUR + datetime.timedelta(minutes=6),
            facts={"last_ts": ts(day - datetime.timedelta(days=d) + 2 * HOUR + datetime.timedelta(minutes=5))},
        )
        for d in full_days
    ]
    slices, first = [], slice_start
    while first + hours * HOUR <= now:
        last = first + hours * HOUR
        slices.append(bset(last, kind="mongo-oplog", facts={"first_ts": ts(first), "last_ts": ts(last)}))
        first = last
    return fulls, slices


def restorable(kept_sets, target):
    """Whether the restore planner (mongo/pitr.py) finds a full backup and slices reaching ``target``."""
    from bson import Timestamp

    fulls = sorted((s for s in kept_sets if s.kind == "mongo-full"), key=lambda s: s.facts["last_ts"]["t"])
    slices = [s for s in kept_sets if s.kind == "mongo-oplog"]
    moment = Timestamp(int(target.timestamp()), 0)
    return any(c.start < moment <= pitr.ts_next(c.reach) for c in pitr.chains(fulls, slices))


def test_slices_joining_the_only_full_backup_to_the_kept_window_stay():
    """Full backups stopped 5 days ago, a short mongo-full policy: the slices from the last full backup's point to
    the kept oplog window stay, and every target in the window can still be restored."""
    now = at(2026, 3, 20, 12)
    fulls, slices = history(now, [5], at(2026, 3, 10))
    policy = {"mongo-full": {"days": 2}, "mongo-oplog": {"days": 3}}
    decisions = plan(fulls + slices, now, policy)
    keep = [d.bset for d in decisions if d.keep]
    targets = [now - datetime.timedelta(days=3) + n * 2.5 * HOUR for n in range(28)]
    assert sum(restorable(keep, t) for t in targets) == 28
    base = fulls[0].facts["last_ts"]["t"]
    joining = [d for d in decisions if d.bset.kind == "mongo-oplog" and d.bset.time < now - 3 * 24 * HOUR]
    assert joining and all(d.keep for d in joining if d.bset.facts["last_ts"]["t"] > base)
    assert "needed for point-in-time restore from the full backup at 2026-03-15T02:05:00Z" in joining[-1].reasons
    assert not [d for d in joining if d.bset.facts["last_ts"]["t"] <= base and d.keep]
    assert pitr_warnings(decisions) == []


def test_a_window_opening_before_every_full_backup_is_reported():
    """Slices kept for 7 days, but the only full backup is 2 days old: targets before it cannot be reached."""
    now = at(2026, 3, 20, 12)
    fulls, slices = history(now, [2], at(2026, 3, 10))
    decisions = plan(fulls + slices, now, {"mongo-full": {"days": 30}, "mongo-oplog": {"days": 7}})
    assert pitr_warnings(decisions) == [
        "point-in-time targets of db from 2026-03-13T11:00:00Z to 2026-03-18T02:05:00Z cannot be restored: no full "
        "backup and unbroken chain of oplog slices reach them"
    ]


def test_the_base_full_backup_of_the_window_stays_against_the_full_policy_with_a_warning():
    now = at(2026, 3, 20, 12)
    fulls, slices = history(now, range(0, 12), at(2026, 3, 8))
    decisions = plan(fulls + slices, now, {"mongo-full": {"days": 2}, "mongo-oplog": {"days": 7}})
    keep = [d.bset for d in decisions if d.keep]
    assert all(restorable(keep, now - datetime.timedelta(days=7) + n * 6 * HOUR) for n in range(28))
    base = [d for d in decisions if d.bset.kind == "mongo-full" and d.bset.time.day == 13]
    assert base[0].keep and base[0].reasons == ["base of the point-in-time window from 2026-03-13T11:00:00Z"]
    [warning] = pitr_warnings(decisions)
    assert f"the mongo-full policy would delete {base[0].bset.prefix}" in warning
    # Fulls neither the policy nor the window need go.
    assert not [d for d in decisions if d.bset.kind == "mongo-full" and d.bset.time.day in (8, 9, 10, 11, 12)][0].keep


def test_a_hole_in_the_slices_keeps_the_full_backup_that_restarted_the_chain_and_warns():
    now = at(2026, 3, 20, 12)
    fulls, slices = history(now, range(0, 10), at(2026, 3, 12))
    # The oplog rolled over on 03-16: the slices of 06:00-08:00 are missing; the next starts at 03-17's full backup.
    hole = [s for s in slices if at(2026, 3, 16, 6) < s.time <= at(2026, 3, 17, 2, 5)]
    slices = [s for s in slices if s not in hole]
    restart = [s for s in slices if s.time > at(2026, 3, 17, 2, 5)][0]
    restart.manifest["facts"]["first_ts"] = ts(at(2026, 3, 17, 2, 5))
    decisions = plan(fulls + slices, now, {"mongo-full": {"days": 1}, "mongo-oplog": {"days": 7}})
    restarted = [d for d in decisions if d.bset.kind == "mongo-full" and d.bset.time.day == 17][0]
    assert restarted.keep and restarted.reasons[0].startswith("base of the point-in-time window")
    keep = [d.bset for d in decisions if d.keep]
    assert restorable(keep, at(2026, 3, 18)) and restorable(keep, at(2026, 3, 15))
    assert not restorable(keep, at(2026, 3, 16, 12))
    assert "from 2026-03-16T06:00:00Z to 2026-03-17T02:05:00Z cannot be restored" in " ".join(pitr_warnings(decisions))


def test_a_healthy_default_plan_raises_no_pitr_warning():
    now = at(2026, 3, 20, 12)
    fulls, slices = history(now, range(0, 40), at(2026, 2, 8))
    assert pitr_warnings(plan(fulls + slices, now, DEFAULT_POLICY)) == []


@pytest.mark.parametrize("hours", [-1, 87601, 10**12])
def test_incomplete_grace_hours_out_of_range_is_refused(hours):
    with pytest.raises(ConfigurationError, match="incomplete_grace_hours must be a whole number from 0 to 87600"):
        grace_period(hours)


def test_selection_prefixes_scope_cleanup_to_kinds_and_source():
    assert selection_prefixes([], None) == ("",)
    assert selection_prefixes(["config"], None) == ("config/",)
    assert selection_prefixes(["config", "redis-rdb"], "app") == ("config/app/", "redis-rdb/app/")
    assert len(selection_prefixes([], "app")) == len(DEFAULT_POLICY)
    with pytest.raises(ConfigurationError):
        selection_prefixes([], "../etc")


def test_kafka_message_sets_keep_seven_days_and_never_break_the_chain():
    """Message sets chain like oplog slices: after the oldest set a rule keeps, none is deleted."""
    assert DEFAULT_POLICY["kafka-messages"] == {"days": 7}
    now = at(2026, 3, 10, 12)
    sets = [bset(now - datetime.timedelta(hours=6 * n), kind="kafka-messages", source="kafka") for n in range(48)]
    by_days = plan(sets, now, merge_policy(None))
    assert kept(by_days) == sorted(s.time for s in sets if now - s.time <= datetime.timedelta(days=7))
    # daily: 2 keeps the newest set of two days; the ones between them carry records those points need.
    decisions = plan(sets, now, merge_policy({"kafka-messages": {"daily": 2}}))
    oldest_ruled = min(d.bset.time for d in decisions if d.rule_kept)
    assert kept(decisions) == sorted(s.time for s in sets if s.time >= oldest_ruled)
    between = [d for d in decisions if d.keep and not d.rule_kept]
    assert between and all("continues the kept kafka-messages chain" in d.reasons[-1] for d in between)
