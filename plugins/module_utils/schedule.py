# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The strategy's schedule: one list of jobs, rendered for systemd timers, cron and AWX schedules.

The jobs live in one data file (``roles/backup_schedule/vars/jobs.yml``) that ``roles/backup_schedule`` and
``playbooks/awx_configure.yml`` both read through the ``caas.backup.schedule_jobs`` filter, so the timers and
the AWX schedules cannot drift apart. A job's ``cadence`` names the UTC calendar fields it runs at (``month``,
``day``, ``hour``, ``minute``), each an integer, a list of integers, or ``"*/N"`` (every N from 0, where N divides
the field's range so that cron, systemd and an rrule agree at every boundary); an unset field means every value.
Everything here is pure, and unit-tested.
"""

from __future__ import annotations

from collections.abc import Mapping

from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError

# Field: (lowest, highest, step allowed, rrule part). Coarsest first.
FIELDS = {
    "month": (1, 12, False, "BYMONTH"),
    "day": (1, 31, False, "BYMONTHDAY"),
    "hour": (0, 23, True, "BYHOUR"),
    "minute": (0, 59, True, "BYMINUTE"),
}
JOB_KEYS = {"name", "description", "playbook", "extra_vars", "cadence", "delay", "credentials", "then", "enabled"}
CREDENTIALS = ("storage", "recipients", "identity")
# Every rrule starts here: a midnight (UTC) on the first of a month, so steps of hours and minutes that divide
# a day or an hour fall where cron's and systemd's do.
DTSTART = "20260101T000000Z"


class ScheduleError(ConfigurationError):
    """A schedule that cannot be rendered the same way for every scheduler."""


def _step(name: str, value: object) -> int | None:
    """N of a ``"*/N"`` value, None for any other value."""
    if isinstance(value, str) and value.startswith("*/"):
        low, high, allowed, _part = FIELDS[name]
        span = high - low + 1
        try:
            step = int(value[2:])
        except ValueError:
            raise ScheduleError(f"{name} {value!r} is not */N with an integer N") from None
        if not allowed or step < 1 or span % step:
            raise ScheduleError(f"{name} {value!r}: a step must divide {span} and is allowed for hour and minute only")
        return step
    return None


def _values(name: str, value: object) -> list[int]:
    """The fixed values of a field (an integer or a list of them), checked against its range."""
    low, high, _allowed, _part = FIELDS[name]
    items = value if isinstance(value, list) else [value]
    if not items or any(isinstance(v, bool) or not isinstance(v, int) or not low <= v <= high for v in items):
        raise ScheduleError(f"{name} {value!r} is not an integer (or list of them) from {low} to {high}")
    return sorted(set(items))


def check_cadence(cadence: object) -> dict:
    """The cadence, checked: known fields only, a minute always, at most one step. ScheduleError otherwise."""
    if not isinstance(cadence, Mapping) or not cadence:
        raise ScheduleError(f"a cadence is a mapping of {', '.join(FIELDS)}, not {cadence!r}")
    unknown = sorted(set(cadence) - set(FIELDS))
    if unknown:
        raise ScheduleError(f"unknown cadence field(s) {', '.join(unknown)} (known: {', '.join(FIELDS)})")
    if "minute" not in cadence:
        raise ScheduleError("a cadence names its minute (an unset minute would run every minute)")
    steps = [n for n, v in cadence.items() if _step(n, v) is not None]
    if len(steps) > 1:
        raise ScheduleError(f"only one field may be a step, not {', '.join(steps)}")
    for name, value in cadence.items():
        if name not in steps:
            _values(name, value)
    return dict(cadence)


def _render(cadence: dict, width: int, step_fmt: str) -> dict[str, str]:
    out = {}
    for name in FIELDS:
        value = cadence.get(name)
        step = _step(name, value)
        if value is None:
            out[name] = "*"
        elif step is not None:
            out[name] = step_fmt.format(step=step)
        else:
            out[name] = ",".join(f"{v:0{width}d}" for v in _values(name, value))
    return out


def on_calendar(cadence: object) -> str:
    """The systemd OnCalendar= expression of a cadence, in UTC: ``*-*-* 02:00:00 UTC``."""
    f = _render(check_cadence(cadence), 2, "00/{step}")
    return f"*-{f['month']}-{f['day']} {f['hour']}:{f['minute']}:00 UTC"


def cron(cadence: object) -> str:
    """The five cron fields of a cadence (in the host's time zone: keep hosts on UTC): ``0 2 * * *``."""
    f = _render(check_cadence(cadence), 1, "*/{step}")
    return f"{f['minute']} {f['hour']} {f['day']} {f['month']} *"


def rrule(cadence: object) -> str:
    """The AWX schedule rrule of a cadence (RFC 5545, UTC): ``DTSTART:... RRULE:FREQ=DAILY;BYHOUR=2;...``.

    The frequency is the finest field that is not fixed (a step gives the INTERVAL); every fixed field is a
    BY part, so the occurrences are those of the cron line and the OnCalendar expression.
    """
    cadence = check_cadence(cadence)
    steps = {n: _step(n, v) for n, v in cadence.items() if _step(n, v) is not None}
    if "minute" in steps:
        freq = "MINUTELY"
    elif "hour" in steps or "hour" not in cadence:
        freq = "HOURLY"
    elif "day" not in cadence:
        freq = "DAILY"
    else:
        freq = "MONTHLY"
    parts = [f"FREQ={freq}"]
    if steps:
        parts.append(f"INTERVAL={next(iter(steps.values()))}")
    for name, (_low, _high, _allowed, part) in FIELDS.items():
        if name in cadence and name not in steps:
            parts.append(f"{part}={','.join(str(v) for v in _values(name, cadence[name]))}")
    parts.append("BYSECOND=0")
    return f"DTSTART:{DTSTART} RRULE:{';'.join(parts)}"


def schedule_jobs(jobs: object) -> list[dict]:
    """The schedule's jobs checked, each with its ``on_calendar``, ``cron`` and ``rrule`` added.

    A job is ``{name, playbook, cadence}`` and optionally ``description``, ``extra_vars`` (a mapping of
    strings), ``delay`` (seconds a systemd run may be randomly delayed), ``credentials`` (what an AWX job
    template attaches: storage, recipients, identity), ``then`` (jobs run after it, whatever its outcome: an AWX
    workflow; the timers ignore it) and ``enabled`` (default true). Names are unique.
    """
    if not isinstance(jobs, list):
        raise ScheduleError(f"the schedule is a list of jobs, not {type(jobs).__name__}")
    out, seen = [], set()
    for job in jobs:
        if not isinstance(job, Mapping) or not job.get("name"):
            raise ScheduleError(f"a job is a mapping with a name, not {job!r}")
        name = job["name"]
        try:
            unknown = sorted(set(job) - JOB_KEYS)
            if unknown:
                raise ScheduleError(f"unknown key(s) {', '.join(unknown)} (known: {', '.join(sorted(JOB_KEYS))})")
            if name in seen:
                raise ScheduleError("the name is used twice")
            if not isinstance(job.get("playbook"), str) or not job["playbook"]:
                raise ScheduleError("a job names its playbook (playbooks/<playbook>.yml)")
            extra = job.get("extra_vars") or {}
            if not isinstance(extra, Mapping) or not all(
                isinstance(k, str) and isinstance(v, str) and v and " " not in v for k, v in extra.items()
            ):
                raise ScheduleError(f"extra_vars {extra!r} is not a mapping of names to single words")
            credentials = list(job.get("credentials") or [])
            if not set(credentials) <= set(CREDENTIALS):
                raise ScheduleError(f"credentials {credentials!r}: known are {', '.join(CREDENTIALS)}")
            then = list(job.get("then") or [])
            if not all(isinstance(n, str) for n in then):
                raise ScheduleError(f"then {then!r} is not a list of job names")
            delay = job.get("delay", 0)
            if isinstance(delay, bool) or not isinstance(delay, int) or delay < 0:
                raise ScheduleError(f"delay {delay!r} is not a number of seconds")
            rendered = {
                "name": name,
                "description": job.get("description") or name,
                "playbook": job["playbook"],
                "extra_vars": dict(extra),
                "cadence": check_cadence(job.get("cadence")),
                "delay": delay,
                "credentials": credentials,
                "then": then,
                "enabled": bool(job.get("enabled", True)),
            }
            rendered.update(
                on_calendar=on_calendar(rendered["cadence"]),
                cron=cron(rendered["cadence"]),
                rrule=rrule(rendered["cadence"]),
            )
        except ScheduleError as exc:
            raise ScheduleError(f"job {name}: {exc}") from None
        seen.add(name)
        out.append(rendered)
    enabled = {j["name"] for j in out if j["enabled"]}
    for job in out:
        missing = [n for n in job["then"] if n not in enabled]
        if job["enabled"] and missing:
            raise ScheduleError(f"job {job['name']}: then names no enabled job {', '.join(missing)}")
    return out


def workflow_nodes(job: Mapping, prefix: str, organization: str) -> list[dict]:
    """The AWX workflow nodes of a job with ``then``: the job, then each follower whatever the job's outcome.

    Templates are named ``<prefix> <job name>`` (as awx_configure.yml names them), in ``organization``; the
    result is what awx.awx.workflow_job_template takes as ``workflow_nodes``.
    """

    def node(name: str, related: dict | None = None) -> dict:
        out = {
            "identifier": name,
            "unified_job_template": {
                "name": f"{prefix} {name}",
                "type": "job_template",
                "organization": {"name": organization},
            },
        }
        if related:
            out["related"] = related
        return out

    then = list(job.get("then") or [])
    if not then:
        raise ScheduleError(f"job {job.get('name')}: a workflow needs jobs to run after it (then)")
    return [node(job["name"], {"always_nodes": [{"identifier": n} for n in then]})] + [node(n) for n in then]
