#!/usr/bin/python
# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)

DOCUMENTATION = r"""
module: backup_notify
short_description: Send backup alerts to a webhook and/or by email
version_added: 0.1.0
description:
  - Sends the alerts M(caas.backup.backup_info) returns (or any list of the same shape) as one JSON POST to a
    webhook (Slack-compatible C(text) plus the structured C(alerts)) and/or one email through SMTP.
  - Nothing is sent when no alert reaches O(min_severity).
author: caas.backup developers (@caas-backup)
options:
  alerts:
    description:
      - Alerts, each with C(severity) (V(critical) or V(warning)), C(kind), C(source) and C(message).
    type: list
    elements: dict
    required: true
  min_severity:
    description:
      - Send only alerts of at least this severity.
    type: str
    choices: [warning, critical]
    default: warning
  webhook_url:
    description:
      - URL (V(http://) or V(https://)) to POST the alerts to as JSON.
    type: str
  webhook_headers:
    description:
      - Extra HTTP headers, e.g. an C(Authorization) token. Never logged.
    type: dict
  smtp_host:
    description:
      - SMTP server to send the email through; no email when unset.
    type: str
  smtp_port:
    description:
      - SMTP port (1-65535); 465 with O(smtp_security=ssl), 587 with V(starttls), 25 otherwise when unset.
    type: int
  smtp_security:
    description:
      - V(starttls) upgrades the connection, V(ssl) connects with TLS, V(none) sends in the clear.
    type: str
    choices: [none, starttls, ssl]
    default: starttls
  smtp_user:
    description:
      - SMTP login, with O(smtp_password).
    type: str
  smtp_password:
    description:
      - SMTP password. Falls back to E(CAAS_SMTP_PASSWORD). Never logged.
    type: str
  mail_from:
    description:
      - Sender address.
    type: str
    default: caas-backup@localhost
  mail_to:
    description:
      - Recipient addresses; required with O(smtp_host).
    type: list
    elements: str
    default: []
  subject_prefix:
    description:
      - Start of the email subject and the webhook text.
    type: str
    default: "[caas.backup]"
  timeout:
    description:
      - Seconds to wait for the webhook or the SMTP server (1-86400).
    type: int
    default: 30
  validate_certs:
    description:
      - Verify TLS certificates of the webhook and SMTP server.
    type: bool
    default: true
attributes:
  check_mode:
    support: full
    description: Reports what would be sent and sends nothing.
seealso:
  - module: caas.backup.backup_info
"""

EXAMPLES = r"""
- name: Alert the on-call channel and the ops mailbox
  caas.backup.backup_notify:
    alerts: "{{ backups.alerts }}"
    webhook_url: "{{ vault_ops_webhook }}"
    smtp_host: smtp.example.com
    smtp_user: backup-alerts
    smtp_password: "{{ vault_smtp_password }}"
    mail_to: [ops@example.com]
"""

RETURN = r"""
sent:
  description: Alerts sent (those at or above O(min_severity)).
  returned: always
  type: int
webhook:
  description: Whether the webhook was called.
  returned: always
  type: bool
email:
  description: Whether the email was sent.
  returned: always
  type: bool
subject:
  description: Subject line of the notification.
  returned: always
  type: str
"""

from ansible.module_utils.basic import env_fallback

from ansible_collections.caas.backup.plugins.module_utils.common import BackupModule, ConfigurationError


def run(module: BackupModule) -> dict:
    from ansible_collections.caas.backup.plugins.module_utils.notify import describe, post_webhook, send_mail

    p = module.params
    if p["smtp_host"] and not p["mail_to"]:
        raise ConfigurationError("smtp_host needs mail_to")
    alerts = [a for a in p["alerts"] if p["min_severity"] == "warning" or a.get("severity") == "critical"]
    subject, text = describe(alerts, p["subject_prefix"])
    result = dict(changed=False, sent=len(alerts), webhook=False, email=False, subject=subject)
    if not alerts or module.check_mode:
        result["changed"] = bool(alerts)
        return result
    if p["webhook_url"]:
        post_webhook(
            p["webhook_url"],
            {"text": f"{subject}\n{text}", "alerts": alerts},
            p["webhook_headers"] or {},
            p["timeout"],
            p["validate_certs"],
        )
        result["webhook"] = True
    if p["smtp_host"]:
        send_mail(
            p["smtp_host"],
            p["smtp_port"],
            p["smtp_security"],
            p["smtp_user"],
            p["smtp_password"],
            p["mail_from"],
            p["mail_to"],
            subject,
            text,
            p["timeout"],
            p["validate_certs"],
        )
        result["email"] = True
    result["changed"] = result["webhook"] or result["email"]
    return result


def main() -> None:
    module = BackupModule(
        dict(
            alerts=dict(type="list", elements="dict", required=True),
            min_severity=dict(type="str", default="warning", choices=["warning", "critical"]),
            webhook_url=dict(type="str"),
            webhook_headers=dict(type="dict", no_log=True),
            smtp_host=dict(type="str"),
            smtp_port=dict(type="int"),
            smtp_security=dict(type="str", default="starttls", choices=["none", "starttls", "ssl"]),
            smtp_user=dict(type="str"),
            smtp_password=dict(type="str", no_log=True, fallback=(env_fallback, ["CAAS_SMTP_PASSWORD"])),
            mail_from=dict(type="str", default="caas-backup@localhost"),
            mail_to=dict(type="list", elements="str", default=[]),
            subject_prefix=dict(type="str", default="[caas.backup]"),
            timeout=dict(type="int", default=30),
            validate_certs=dict(type="bool", default=True),
        ),
        storage=False,
        supports_check_mode=True,
        required_together=[("smtp_user", "smtp_password")],
    )
    module.run(run, "send backup alerts")


if __name__ == "__main__":
    main()
