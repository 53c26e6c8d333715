"""The retention planner: GFS calendars, PITR chains, redundancy, tags and incomplete sets."""

import datetime

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st

from ansible_collections.caas.backup.plugins.module_utils.catalog import BackupSet, new_backup_id
from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError
from ansible_collections.caas.backup.plugins.module_utils.retention import (
    DEFAULT_POLICY,
    merge_policy,
    plan,
)

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
    st.integers(min_value=0, max_value=3),
)
# Within 7 * 365 days of now, but in 2019: outside the 7 calendar years (2020-2026) of yearly: 7.
@example([datetime.datetime(2019, 11, 27, tzinfo=UTC)], 0)
def test_plan_invariants(times, redundancy):
    """Whatever the history: the newest set of a kind always survives, redundancy holds, every set has a reason."""
    now = at(2026, 11, 24, 12)
    sets = [bset(t.replace(microsecond=0)) for t in times]
    decisions = plan(sets, now, DEFAULT_POLICY, minimum_redundancy=redundancy)
    assert all(d.reasons for d in decisions)
    assert sum(d.keep for d in decisions) >= min(redundancy, len(sets))
    newest = max(decisions, key=lambda d: d.bset.time)
    if newest.bset.time.year > now.year - DEFAULT_POLICY["mongo-full"]["yearly"] or redundancy:
        assert newest.keep
