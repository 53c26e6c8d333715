# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""The schedule filter of backup_schedule and awx_configure.yml; the logic, typed and unit-tested, is in
module_utils/schedule.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.caas.backup.plugins.module_utils import schedule


def schedule_jobs(jobs):
    """The schedule's jobs with their OnCalendar, cron and rrule renderings; a bad schedule fails the task."""
    try:
        return schedule.schedule_jobs(jobs)
    except schedule.ScheduleError as exc:
        raise AnsibleFilterError(f"Failed to read the schedule: {exc}") from None


class FilterModule:
    """The schedule filter."""

    def filters(self):
        return {"schedule_jobs": schedule_jobs}
