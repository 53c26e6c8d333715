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


def schedule_workflow(job, prefix, organization):
    """The AWX workflow nodes of a job followed by others; a job without followers fails the task."""
    try:
        return schedule.workflow_nodes(job, prefix, organization)
    except schedule.ScheduleError as exc:
        raise AnsibleFilterError(f"Failed to build the workflow: {exc}") from None


class FilterModule:
    """The schedule filters."""

    def filters(self):
        return {"schedule_jobs": schedule_jobs, "schedule_workflow": schedule_workflow}
