#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_erasure
short_description: Record GDPR erasure requests in the ledger every restore applies
version_added: 0.1.0
description:
  - "Records an erasure request (right to erasure) in the storage's erasure ledger - MongoDB namespaces with a
    filter (for example C(caas_auth.users) and C({_id: 42})) and Redis key patterns - with who asked, why and
    when. Old backups are not rewritten; instead M(caas.backup.mongo_restore), M(caas.backup.mongo_oplog_restore)
    and M(caas.backup.redis_restore) (and so C(dr.yml) and drills) apply the whole ledger after every restore
    and report how many documents or keys it removed."
  - Each request is one object C(erasure/<request_id>.<tag>.json.age), encrypted to O(encryption_recipients)
    (the backups' recipients - restores already hold the identity that reads it; the filters identify the
    person), signed beside it (C(.sig)) with O(signing_key). Restores given O(trusted_signers) refuse unsigned
    or forged requests, and a ledger a restore cannot read fails the restore before anything is touched.
  - The request must also be carried out on the live systems - this module only makes it survive restores.
  - The ledger is never pruned (M(caas.backup.s3_backup_prune) does not touch C(erasure/)) - see docs/compliance.md.
  - O(list_requests=true) lists the requests (who, when, why, which namespaces - never the filters or patterns);
    with an identity they are decrypted, else only their ids are listed.
author: caas.backup developers (@caas-backup)
options:
  list_requests:
    description:
      - List the ledger instead of recording a request.
    type: bool
    default: false
  request_id:
    description:
      - A name of the request (letters, digits, V(_), V(-)), for example the ticket number; the stored id is the
        UTC time, V(-) and this. With it the module is idempotent - a request of that name already in the ledger
        is not recorded again (C(changed=false)). Without it every run records a new request.
    type: str
  requested_by:
    description:
      - Who asked for the erasure (a person or team; required unless O(list_requests)).
    type: str
  reason:
    description:
      - Why - for example the data subject's request and its reference (required unless O(list_requests)).
    type: str
  mongodb:
    description:
      - "MongoDB documents to erase - a list of C(namespace) (V(db.collection)) and C(filter) (a non-empty query
        mapping, MongoDB extended JSON such as C({$oid: ...}) allowed)."
    type: list
    elements: dict
    default: []
  redis:
    description:
      - "Redis keys to erase - glob patterns (for example V(session:user:42:*)), or mappings of C(pattern) and
        C(db) (a database number; every database when not given). A pattern of wildcards only is refused."
    type: list
    elements: raw
    default: []
extends_documentation_fragment:
  - caas.backup.common
  - caas.backup.common.write
  - caas.backup.common.read
attributes:
  check_mode:
    support: full
    description:
      - Checks the request and that the storage can be reached, and reports it with C(changed=true); nothing is
        written.
notes:
  - The compression, tags and object lock options of the common write options do not apply to ledger objects.
seealso:
  - module: caas.backup.mongo_restore
  - module: caas.backup.redis_restore
  - module: caas.backup.backup_rekey
"""

EXAMPLES = r"""
- name: Erase user 42 from every future restore
  caas.backup.backup_erasure:
    storage_url: s3://caas-backups/prod
    encryption_recipients: ["age1..."]
    signing_key_file: /etc/caas/backup-signing-key
    request_id: GDPR-2026-0042
    requested_by: dpo@example.com
    reason: "Art. 17 request of 2026-03-01, ticket GDPR-2026-0042"
    mongodb:
      - {namespace: caas_auth.users, filter: {_id: 42}}
      - {namespace: shop.orders, filter: {customer_id: 42}}
    redis: ["session:user:42:*", {pattern: "profile:42", db: 1}]

- name: List the ledger
  caas.backup.backup_erasure:
    storage_url: s3://caas-backups/prod
    list_requests: true
    encryption_identity_file: /root/.config/caas/age-key.txt
  register: ledger
"""

RETURN = r"""
request:
  description:
    - The request recorded (or, with O(request_id), found already recorded) - C(request_id), C(requested_at),
      C(requested_by), C(reason), C(mongodb_namespaces), C(redis_patterns) (how many).
  returned: unless O(list_requests)
  type: dict
key:
  description: The ledger object of the request.
  returned: unless O(list_requests)
  type: str
  sample: erasure/20260301T101500Z-GDPR-2026-0042.k3f9a1c2e4b.json.age
requests:
  description:
    - The ledger, oldest first - each as in RV(request) when an identity was given, else C(request_id) and
      C(keys) (its stored objects).
  returned: O(list_requests) is true
  type: list
  elements: dict
"""

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule


class ErasureModule(BackupModule):
    """backup_erasure: what it does is an erasure record (the audit log's action)."""

    audit_action = "erase"


def _record(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils import erasure

    p = module.params
    request = erasure.new_request(p["requested_by"], p["reason"], p["mongodb"], p["redis"], p["request_id"])
    options = module.write_options()
    storage = module.open_storage()
    storage.check()
    if p["request_id"]:
        for request_id, stored in erasure.entries(storage).items():
            if request_id.split("-", 1)[1] == p["request_id"]:
                return dict(changed=False, key=stored[0].key, request=dict(request.summary(), request_id=request_id))
    if module.check_mode:
        return dict(
            changed=True, key=erasure.entry_key(request.request_id, options.recipients), request=request.summary()
        )
    return dict(changed=True, key=erasure.record(storage, request, options), request=request.summary())


def _list(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils import erasure

    storage = module.open_storage()
    identities = module.identities()
    if identities:
        requests = [r.summary() for r in erasure.read_ledger(storage, identities, module.trusted_signers())]
    else:
        requests = [
            {"request_id": request_id, "keys": [e.key for e in stored]}
            for request_id, stored in sorted(erasure.entries(storage).items())
        ]
    return dict(changed=False, requests=requests)


def run(module: BackupModule) -> dict:
    return _list(module) if module.params["list_requests"] else _record(module)


def main() -> None:
    module = ErasureModule(
        dict(
            list_requests=dict(type="bool", default=False),
            request_id=dict(type="str"),
            requested_by=dict(type="str"),
            reason=dict(type="str"),
            mongodb=dict(type="list", elements="dict", default=[]),
            redis=dict(type="list", elements="raw", default=[]),
        ),
        writes=True,
        reads=True,
        supports_check_mode=True,
        required_if=[("list_requests", False, ("requested_by", "reason"))],
    )
    module.run(run, "list the erasure ledger" if module.params["list_requests"] else "record the erasure request")


if __name__ == "__main__":
    main()
