#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: config_backup
short_description: Back up configuration files as a tar archive
version_added: 0.1.0
description:
  - Archives O(paths) below O(root) as one POSIX tar stream, compressed and optionally encrypted, into a new
    C(config) backup set. Modes, owners and modification times are kept.
  - Paths that are secrets (O(secrets)) are refused unless O(encryption_recipients) are set, so keys and
    C(.env) files never reach storage in the clear.
  - The manifest, written last, lists every archived name with the counts; a set without it is never restored.
author: caas.backup developers (@caas-backup)
options:
  paths:
    description:
      - Files and directories to archive, absolute or relative to O(root). Directories are archived recursively.
    type: list
    elements: path
    required: true
  root:
    description:
      - Directory the archive's member names are relative to; O(paths) must lie below it.
    type: path
    default: /
  exclude:
    description:
      - Glob patterns left out. A pattern matches a member's relative name, any of its components, or a
        leading part of it, so V(node_modules) drops every such directory.
    type: list
    elements: str
    default: []
  secrets:
    description:
      - Glob patterns (matched like O(exclude)) of secret files. The backup fails when one is selected and
        O(encryption_recipients) is empty. Set to V([]) to archive every file in the clear.
    type: list
    elements: str
    default: [".env", ".env.*", "*.key", "*.pem", "*.p12", "*.pfx", "id_rsa*", "id_ed25519*", "keys", "secrets"]
  source_name:
    description:
      - Stable, credential-free name of what is backed up; the storage path segment after the kind.
      - Defaults to the host name of the machine the module runs on - the one default of the collection that is a
        machine's name, because configuration files belong to their machine. On a rebuilt site give the old name
        (the roles pass C(caas_backup_source_name), else the inventory hostname).
    type: str
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
attributes:
  check_mode:
    support: full
    description:
      - Lists what would be archived (names, file count, bytes) and where, reports C(changed=true) (a real run writes
        a new set), and writes nothing; the storage is only read, to check it can be reached.
seealso:
  - module: caas.backup.config_restore
"""

EXAMPLES = r"""
- name: Back up the platform configuration, encrypted, to S3
  caas.backup.config_backup:
    storage_url: s3://caas-backups/prod
    root: /srv/caas
    paths: [.env, docker-compose.yml, keys, services]
    exclude: [node_modules, dist]
    encryption_recipients: ["age1ql3z7hjy54pw3hyww5ayyfg7zqgvc7w3j2elw8zmrj2kg5sfn9aqmcac8p"]
    tags: [release-2.4.0, keep]
"""

RETURN = r"""
backup_id:
  description: Id of the new backup set; empty in check mode.
  returned: always
  type: str
  sample: 20260221T020000.412Z-3f9a
kind:
  description: V(config).
  returned: always
  type: str
msg:
  description: In check mode, what a real run would write (C(would write a config backup of N files ...)).
  returned: check mode
  type: str
source:
  description: Source name the set is stored under.
  returned: always
  type: str
  sample: app01
location:
  description: Storage path of the set; in check mode the path the new set's id would be added to.
  returned: success
  type: str
  sample: s3://caas-backups/prod/config/app01/20260221T020000.412Z-3f9a
files:
  description: Number of regular files archived (in check mode, that would be).
  returned: always
  type: int
bytes:
  description: Bytes of file content archived, or in check mode that would be (before compression).
  returned: always
  type: int
stored_bytes:
  description: Bytes written to storage (after compression and encryption).
  returned: success and not check mode
  type: int
names:
  description: Relative names of everything archived (in check mode, that would be).
  returned: always
  type: list
  elements: str
secrets:
  description: Names that matched O(secrets) (stored encrypted).
  returned: always
  type: list
  elements: str
encrypted:
  description: Whether the archive is encrypted.
  returned: always
  type: bool
duration:
  description: Seconds the backup took.
  returned: success and not check mode
  type: float
"""

import time

from ansible_collections.caas.backup.plugins.module_utils.common import (
    BackupModule,
    ConfigurationError,
    default_source_name,
    host_name,
)
from ansible_collections.caas.backup.plugins.module_utils.files import DEFAULT_SECRETS, secrets_in, select, write_tar


def run(module: BackupModule) -> dict:
    p = module.params
    started = time.monotonic()
    selection = select(p["root"], p["paths"], p["exclude"])
    secret_names = secrets_in(selection, p["secrets"])
    encrypted = bool(p["encryption_recipients"])
    if secret_names and not encrypted:
        raise ConfigurationError(
            f"{len(secret_names)} secret file(s) selected ({', '.join(secret_names[:5])}) "
            "but no encryption_recipients: refusing to store secrets in the clear"
        )
    source = p["source_name"] or default_source_name(host_name())
    result = dict(
        changed=True,
        backup_id="",
        kind="config",
        source=source,
        files=selection.files,
        bytes=selection.bytes,
        names=selection.names,
        secrets=secret_names,
        encrypted=encrypted,
    )
    if module.check_mode:
        result.update(module.planned_set("config", source))
        return dict(
            result,
            msg=f"would write a config backup of {selection.files} file(s), {selection.bytes} bytes "
            f"({len(selection.names)} names) to {result['location']}",
        )

    from ansible_collections.caas.backup.plugins.module_utils.catalog import write_set

    written = write_set(
        module.open_storage(),
        "config",
        source,
        module.write_options(),
        p["tags"],
        "config.tar",
        lambda out: write_tar(out, selection),
        selection.facts(),
    )
    result.update(written, duration=round(time.monotonic() - started, 3))
    return result


def main() -> None:
    module = BackupModule(
        dict(
            paths=dict(type="list", elements="path", required=True),
            root=dict(type="path", default="/"),
            exclude=dict(type="list", elements="str", default=[]),
            secrets=dict(type="list", elements="str", default=list(DEFAULT_SECRETS), no_log=False),
        ),
        writes=True,
        audit_action="write",
        audit_kind="config",
        supports_check_mode=True,
    )
    module.run(run, "back up configuration")


if __name__ == "__main__":
    main()
