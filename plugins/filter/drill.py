# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Filters of the drill playbook; the logic, typed and unit-tested, is in module_utils/evidence.py."""

from __future__ import annotations

from ansible.errors import AnsibleFilterError

from ansible_collections.caas.backup.plugins.module_utils import evidence
from ansible_collections.caas.backup.plugins.module_utils.common import BackupError


def drill_point(pitr, source=""):
    """A random point inside a MongoDB source's point-in-time window (evidence.random_point)."""
    try:
        return evidence.random_point(pitr, source or "")
    except BackupError as exc:
        raise AnsibleFilterError(f"Failed to pick the drill's point in time: {exc}") from None


class FilterModule:
    """The drill filters."""

    def filters(self):
        return {
            "drill_targets": evidence.scratch_targets,
            "drill_point": drill_point,
            "drill_report": evidence.drill_report,
            "drill_shadowed": evidence.shadowed,
        }
