"""The one schedule: the strategy's jobs and cadences, and their systemd, cron and AWX renderings."""

import datetime
from pathlib import Path

import pytest
import yaml
from calendars import UTC, cron_next, rrule_next

from ansible_collections.caas.backup.plugins.module_utils import schedule
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError

REPO = Path(__file__).resolve().parents[4]
JOBS = REPO / "roles" / "backup_schedule" / "vars" / "jobs.yml"
MINUTE, HOUR, DAY = datetime.timedelta(minutes=1), datetime.timedelta(hours=1), datetime.timedelta(days=1)

# The strategy (issue 14): job -> (playbook, extra vars, OnCalendar, cron, first runs after 2026-03-01T00:00Z).
STRATEGY = {
    "mongodb-full": ("backup", {"caas_backup_only": "mongodb"}, "*-*-* 02:00:00 UTC", "0 2 * * *"),
    "mongodb-oplog": ("backup", {"caas_backup_only": "mongodb-oplog"}, "*-*-* *:00/5:00 UTC", "*/5 * * * *"),
    "redis": ("backup", {"caas_backup_only": "redis"}, "*-*-* 00/6:00:00 UTC", "0 */6 * * *"),
    "kafka": ("backup", {"caas_backup_only": "kafka"}, "*-*-* 02:30:00 UTC", "30 2 * * *"),
    "kafka-messages": ("backup", {"caas_backup_only": "kafka-messages"}, "*-*-* *:00/5:00 UTC", "*/5 * * * *"),
    "config": ("backup", {"caas_backup_only": "config"}, "*-*-* 03:00:00 UTC", "0 3 * * *"),
    "prune": ("prune", {}, "*-*-* 05:00:00 UTC", "0 5 * * *"),
    "verify": ("verify", {"caas_backup_verify_level": "restore"}, "*-*-01 06:00:00 UTC", "0 6 1 * *"),
    "monitoring": ("monitoring", {}, "*-*-* *:15:00 UTC", "15 * * * *"),
    "drill": ("drill", {}, "*-01,04,07,10-08 09:00:00 UTC", "0 9 8 1,4,7,10 *"),
}
START = datetime.datetime(2026, 3, 1, tzinfo=UTC)


def at(*args):
    return datetime.datetime(*args, tzinfo=UTC)


# The gaps between runs the strategy asks for, checked on the rrules' next occurrences.
CADENCE = {
    "mongodb-full": [at(2026, 3, 1, 2), at(2026, 3, 2, 2), at(2026, 3, 3, 2)],
    "mongodb-oplog": [START + 5 * MINUTE, START + 10 * MINUTE, START + 15 * MINUTE],
    "redis": [START + 6 * HOUR, START + 12 * HOUR, START + 18 * HOUR],
    "kafka": [at(2026, 3, 1, 2, 30), at(2026, 3, 2, 2, 30), at(2026, 3, 3, 2, 30)],
    "kafka-messages": [START + 5 * MINUTE, START + 10 * MINUTE, START + 15 * MINUTE],
    "config": [at(2026, 3, 1, 3), at(2026, 3, 2, 3), at(2026, 3, 3, 3)],
    "prune": [at(2026, 3, 1, 5), at(2026, 3, 2, 5), at(2026, 3, 3, 5)],
    "verify": [at(2026, 3, 1, 6), at(2026, 4, 1, 6), at(2026, 5, 1, 6)],
    "monitoring": [at(2026, 3, 1, 0, 15), at(2026, 3, 1, 1, 15), at(2026, 3, 1, 2, 15)],
    "drill": [at(2026, 4, 8, 9), at(2026, 7, 8, 9), at(2026, 10, 8, 9)],
}


@pytest.fixture(scope="module")
def jobs():
    return {j["name"]: j for j in schedule.schedule_jobs(yaml.safe_load(JOBS.read_text())["jobs"])}


def test_the_schedule_file_holds_every_job_of_the_strategy_with_its_cadence(jobs):
    assert set(jobs) == set(STRATEGY)
    for name, (playbook, extra, calendar, cron) in STRATEGY.items():
        job = jobs[name]
        rendered = (job["playbook"], job["extra_vars"], job["on_calendar"], job["cron"])
        assert rendered == (playbook, extra, calendar, cron), name
        assert job["enabled"]
    assert jobs["drill"]["then"] == ["monitoring"]
    # Restore-side jobs get the age identity; backup jobs only the public recipients.
    assert {n for n, j in jobs.items() if "identity" in j["credentials"]} == {"verify", "drill"}
    assert all("recipients" in jobs[n]["credentials"] for n, s in STRATEGY.items() if s[0] == "backup")


@pytest.mark.parametrize("name", sorted(CADENCE))
def test_rrule_and_cron_next_occurrences_are_the_strategys_cadence(jobs, name):
    assert rrule_next(jobs[name]["rrule"], START, 3) == CADENCE[name]
    assert cron_next(jobs[name]["cron"], START, 3) == CADENCE[name]


def test_rrule_and_cron_agree_across_a_year_of_boundaries(jobs):
    """Month ends, quarters and a leap-free February: two years of the monthly jobs, weeks or days of the rest."""
    for job in jobs.values():
        count = 24 if job["cadence"].get("day") else 40
        assert rrule_next(job["rrule"], START, count) == cron_next(job["cron"], START, count), job["name"]


@pytest.mark.parametrize(
    ("cadence", "calendar", "cron", "rule"),
    [
        ({"minute": "*/5"}, "*-*-* *:00/5:00 UTC", "*/5 * * * *", "FREQ=MINUTELY;INTERVAL=5;BYSECOND=0"),
        (
            {"hour": "*/6", "minute": 0},
            "*-*-* 00/6:00:00 UTC",
            "0 */6 * * *",
            "FREQ=HOURLY;INTERVAL=6;BYMINUTE=0;BYSECOND=0",
        ),
        ({"minute": [0, 30]}, "*-*-* *:00,30:00 UTC", "0,30 * * * *", "FREQ=HOURLY;BYMINUTE=0,30;BYSECOND=0"),
        (
            {"day": 1, "hour": 6, "minute": 0},
            "*-*-01 06:00:00 UTC",
            "0 6 1 * *",
            "FREQ=MONTHLY;BYMONTHDAY=1;BYHOUR=6;BYMINUTE=0;BYSECOND=0",
        ),
        (
            {"month": 1, "hour": 4, "minute": 5},
            "*-01-* 04:05:00 UTC",
            "5 4 * 1 *",
            "FREQ=DAILY;BYMONTH=1;BYHOUR=4;BYMINUTE=5;BYSECOND=0",
        ),
    ],
)
def test_one_cadence_renders_for_each_scheduler(cadence, calendar, cron, rule):
    assert schedule.on_calendar(cadence) == calendar
    assert schedule.cron(cadence) == cron
    assert schedule.rrule(cadence) == f"DTSTART:{schedule.DTSTART} RRULE:{rule}"


@pytest.mark.parametrize(
    ("cadence", "error"),
    [
        ({"hour": 2}, "names its minute"),
        ({"minute": "*/7"}, "must divide 60"),
        ({"hour": "*/5", "minute": 0}, "must divide 24"),
        ({"day": "*/2", "minute": 0}, "allowed for hour and minute only"),
        ({"hour": "*/6", "minute": "*/5"}, "only one field may be a step"),
        ({"minute": 60}, "from 0 to 59"),
        ({"minute": 0, "day": 0}, "from 1 to 31"),
        ({"minute": True}, "is not an integer"),
        ({"minute": 0, "weekday": 1}, "unknown cadence field(s) weekday"),
        ("daily", "is a mapping"),
    ],
)
def test_a_cadence_that_schedulers_would_read_differently_is_refused(cadence, error):
    with pytest.raises(schedule.ScheduleError) as raised:
        schedule.on_calendar(cadence)
    assert error in str(raised.value)
    assert isinstance(raised.value, BackupError)


@pytest.mark.parametrize(
    ("jobs", "error"),
    [
        ([{"name": "a", "playbook": "backup", "cadence": {"minute": 0}, "when": "x"}], "job a: unknown key(s) when"),
        ([{"name": "a", "playbook": "backup", "cadence": {"minute": 0}}] * 2, "job a: the name is used twice"),
        ([{"name": "a", "cadence": {"minute": 0}}], "job a: a job names its playbook"),
        ([{"name": "a", "playbook": "backup", "cadence": {"minute": 0}, "extra_vars": {"x": "a b"}}], "single words"),
        ([{"name": "a", "playbook": "backup", "cadence": {"minute": 0}, "credentials": ["root"]}], "known are storage"),
        ([{"name": "a", "playbook": "backup", "cadence": {"minute": 0}, "delay": -1}], "not a number of seconds"),
        ([{"name": "a", "playbook": "drill", "cadence": {"minute": 0}, "then": ["b"]}], "then names no enabled job b"),
        ([{"playbook": "backup"}], "a job is a mapping with a name"),
        ({"jobs": []}, "a list of jobs"),
    ],
)
def test_a_bad_schedule_is_refused_with_the_job_it_is_in(jobs, error):
    with pytest.raises(schedule.ScheduleError) as raised:
        schedule.schedule_jobs(jobs)
    assert error in str(raised.value)


def test_workflow_runs_the_job_then_its_followers_whatever_its_outcome(jobs):
    nodes = schedule.workflow_nodes(jobs["drill"], "caas.backup", "Default")
    org = {"name": "Default"}
    assert nodes == [
        {
            "identifier": "drill",
            "unified_job_template": {"name": "caas.backup drill", "type": "job_template", "organization": org},
            "related": {"always_nodes": [{"identifier": "monitoring"}]},
        },
        {
            "identifier": "monitoring",
            "unified_job_template": {"name": "caas.backup monitoring", "type": "job_template", "organization": org},
        },
    ]
    with pytest.raises(schedule.ScheduleError, match="needs jobs to run after it"):
        schedule.workflow_nodes(jobs["prune"], "caas.backup", "Default")
