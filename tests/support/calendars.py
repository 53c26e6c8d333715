"""Next occurrences of a schedule, each computed by its own reader: dateutil for an AWX rrule, systemd-analyze for
an OnCalendar expression, and a plain cron field matcher for a cron line (no cron library is installed)."""

import datetime
import re
import subprocess

from dateutil.rrule import rrulestr

UTC = datetime.timezone.utc


def rrule_next(rule: str, after: datetime.datetime, count: int) -> list[datetime.datetime]:
    """The next ``count`` occurrences after ``after`` of an AWX rrule (``DTSTART:... RRULE:...``), parsed by
    python-dateutil as AWX parses it (its two parts on lines of their own)."""
    return list(rrulestr(rule.replace(" RRULE:", "\nRRULE:")).xafter(after, count=count))


def systemd_next(expression: str, after: datetime.datetime, count: int) -> list[datetime.datetime]:
    """The next ``count`` elapses after ``after`` of an OnCalendar expression, by ``systemd-analyze calendar``."""
    proc = subprocess.run(
        [
            "systemd-analyze",
            "calendar",
            f"--iterations={count}",
            f"--base-time={after.strftime('%Y-%m-%d %H:%M:%S')} UTC",
            expression,
        ],
        capture_output=True,
        text=True,
        check=True,
        env={"TZ": "UTC", "PATH": "/usr/bin:/bin"},
    )
    found = re.findall(r"(?:Next elapse|Iter\. #\d+): \w+ (\d{4}-\d\d-\d\d \d\d:\d\d:\d\d) UTC", proc.stdout)
    return [datetime.datetime.strptime(f, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC) for f in found]


def _cron_field(field: str, value: int) -> bool:
    if field == "*":
        return True
    if field.startswith("*/"):
        return value % int(field[2:]) == 0
    return value in {int(v) for v in field.split(",")}


def cron_next(line: str, after: datetime.datetime, count: int) -> list[datetime.datetime]:
    """The next ``count`` minutes after ``after`` that the five fields of a cron line match (a host on UTC).

    Day of month and day of week are not both restricted in any line this project writes, so both must match.
    """
    minute, hour, day, month, weekday = line.split()[:5]
    out = []
    moment = after.replace(second=0, microsecond=0) + datetime.timedelta(minutes=1)
    while len(out) < count:
        if (
            _cron_field(minute, moment.minute)
            and _cron_field(hour, moment.hour)
            and _cron_field(day, moment.day)
            and _cron_field(month, moment.month)
            and _cron_field(weekday, moment.isoweekday() % 7)
        ):
            out.append(moment)
            moment += datetime.timedelta(minutes=1)
        elif not (_cron_field(day, moment.day) and _cron_field(month, moment.month)):
            moment = (moment + datetime.timedelta(days=1)).replace(hour=0, minute=0)
        elif not _cron_field(hour, moment.hour):
            moment = (moment + datetime.timedelta(hours=1)).replace(minute=0)
        else:
            moment += datetime.timedelta(minutes=1)
    return out
