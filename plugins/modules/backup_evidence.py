#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_evidence
short_description: Store a DR drill's evidence - its JSON report and an HTML page - in the backup storage
version_added: 0.1.0
description:
  - Writes a drill report (what C(playbooks/drill.yml) makes with the C(dr_site) role) to
    C(drills/<YYYYmmddTHHMMSSZ>/report.json) in O(storage_url), the time being the drill's start, with a
    human-readable C(report.html) beside it, then C(SHA256SUMS) (the sha256 of both, in C(sha256sum -c) format),
    written last - evidence without it is incomplete.
  - The objects are not encrypted - evidence holds no secret (the report names sets, counts and credential-free
    addresses) and auditors must read it with stock tools (C(aws s3 cp), C(sha256sum -c SHA256SUMS)).
  - Evidence is never overwritten - a drill whose directory already exists fails with nothing written.
  - The newest evidence is what M(caas.backup.backup_info) reports as the last drill.
author: caas.backup developers (@caas-backup)
options:
  report:
    description:
      - The drill report - C(result) (V(PASS) or V(FAIL)), C(started_at), C(finished_at), C(rto_seconds),
        C(rpo_seconds), C(rto_objective_seconds), C(rpo_objective_seconds), C(components), C(phases); more keys
        are kept as they are.
    type: dict
    required: true
extends_documentation_fragment:
  - caas.backup.common
attributes:
  check_mode:
    support: full
    description: Returns where the evidence would go (and the HTML it would write is rendered); nothing is written.
seealso:
  - module: caas.backup.backup_info
"""

EXAMPLES = r"""
- name: Store the drill's evidence
  caas.backup.backup_evidence:
    storage_url: s3://caas-backups/prod
    report: "{{ dr_site_report }}"
  register: evidence
"""

RETURN = r"""
drill_id:
  description: The drill's start, C(YYYYmmddTHHMMSSZ), the name of its directory.
  returned: always
  type: str
  sample: 20260221T100000Z
prefix:
  description: Where the evidence is, below O(storage_url).
  returned: always
  type: str
  sample: drills/20260221T100000Z/
location:
  description: O(storage_url) and RV(prefix) together.
  returned: always
  type: str
result:
  description: The drill's result, V(PASS) or V(FAIL).
  returned: always
  type: str
objects:
  description: The objects written (C(key), C(size), C(sha256)) - C(report.json), C(report.html); empty in check mode.
  returned: always
  type: list
  elements: dict
"""

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule


class EvidenceModule(BackupModule):
    """backup_evidence: writes drill evidence (an audited write)."""

    audit_action = "write"


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.common import ConfigurationError
    from ansible_collections.caas.backup.plugins.module_utils.evidence import PREFIX, drill_id, write_evidence
    from ansible_collections.caas.backup.plugins.module_utils.html_report import drill_page

    report = module.params["report"]
    for key in ("result", "started_at"):
        if key not in report:
            raise ConfigurationError(f"report has no {key!r}: give the drill report (dr_site_report)")
    html = drill_page(report)
    storage = module.open_storage()
    if module.check_mode:
        storage.check()
        prefix = f"{PREFIX}{drill_id(report)}/"
        written = {"drill_id": drill_id(report), "prefix": prefix, "objects": []}
    else:
        written = write_evidence(storage, report, html)
    return dict(
        changed=not module.check_mode,
        result=report["result"],
        location=f"{storage.url}/{written['prefix']}",
        **written,
    )


def main() -> None:
    module = EvidenceModule(dict(report=dict(type="dict", required=True)), supports_check_mode=True)
    module.run(run, "store the drill evidence")


if __name__ == "__main__":
    main()
