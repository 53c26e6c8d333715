# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the site playbooks; the logic, typed and unit-tested, is in module_utils/site.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.caas.backup.plugins.module_utils import site


def site_plan(groups, hostvars, requested=(), oplog=False, messages=False):
    """Which hosts act for which component (site.plan); an inventory that cannot be right fails the task."""
    try:
        return site.plan(groups, hostvars, requested, oplog, messages)
    except site.SiteError as exc:
        raise AnsibleFilterError(f"Failed to plan the site: {exc}") from None


class FilterModule:
    """The site filters."""

    def filters(self):
        return {
            "given": site.given,
            "site_plan": site_plan,
            "site_jobs": site.jobs_of,
            "site_outcomes": site.outcomes,
            "backup_report": site.backup_report,
            "dr_report": site.dr_report,
            "dr_checks": site.dr_checks,
            "dr_smoke": site.smoke_outcome,
            "site_values": site.host_values,
        }
