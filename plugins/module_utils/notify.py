# -*- coding: utf-8 -*-
# Copyright: Contributors to the caas.backup collection
# GNU General Public License v3.0+ (see https://www.gnu.org/licenses/gpl-3.0.txt)
"""Alert delivery: a JSON webhook and SMTP email, with errors that say which channel failed and why."""

from __future__ import annotations

import json
import smtplib
import ssl
from email.message import EmailMessage

from ansible.module_utils.urls import open_url

from ansible_collections.caas.backup.plugins.module_utils.common import BackupError

SMTP_PORTS = {"ssl": 465, "starttls": 587, "none": 25}


class NotifyError(BackupError):
    """An alert could not be delivered."""


def describe(alerts: list[dict], prefix: str) -> tuple[str, str]:
    """A subject line and a plain-text body for the alerts."""
    critical = sum(a.get("severity") == "critical" for a in alerts)
    subject = f"{prefix} {critical} critical, {len(alerts) - critical} warning backup alert(s)"
    body = "\n".join(
        f"[{a.get('severity', '?').upper()}] {a.get('kind', '?')}/{a.get('source', '?')}: {a.get('message', '')}"
        for a in alerts
    )
    return subject, body


def post_webhook(url: str, payload: dict, headers: dict, timeout: int, validate_certs: bool) -> None:
    """POST ``payload`` as JSON; any non-2xx answer is an error naming the status."""
    try:
        reply = open_url(
            url,
            data=json.dumps(payload).encode(),
            method="POST",
            timeout=timeout,
            headers={"Content-Type": "application/json", **headers},
            validate_certs=validate_certs,
        )
        status = reply.status
    except OSError as exc:  # URLError, HTTPError and socket errors all are
        code = getattr(exc, "code", None)
        reason = getattr(exc, "reason", exc)
        raise NotifyError(
            f"webhook {url.split('?')[0]} failed: {f'HTTP {code} {reason}' if code else reason}"
        ) from None
    if not 200 <= status < 300:
        raise NotifyError(f"webhook {url.split('?')[0]} answered HTTP {status}")


def send_mail(
    host: str,
    port: int | None,
    security: str,
    user: str | None,
    password: str | None,
    sender: str,
    recipients: list[str],
    subject: str,
    body: str,
    timeout: int,
    validate_certs: bool,
) -> None:
    """Send one email; the password goes to the server only, never into an error message."""
    message = EmailMessage()
    message["Subject"], message["From"], message["To"] = subject, sender, ", ".join(recipients)
    message.set_content(body)
    context = ssl.create_default_context()
    if not validate_certs:
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
    port = port or SMTP_PORTS[security]
    try:
        if security == "ssl":
            client = smtplib.SMTP_SSL(host, port, timeout=timeout, context=context)
        else:
            client = smtplib.SMTP(host, port, timeout=timeout)
        with client:
            if security == "starttls":
                client.starttls(context=context)
            if user:
                client.login(user, password or "")
            client.send_message(message)
    except smtplib.SMTPAuthenticationError:
        raise NotifyError(f"SMTP server {host}:{port} refused the login of {user}") from None
    except (smtplib.SMTPException, OSError) as exc:
        raise NotifyError(f"email through {host}:{port} failed: {exc}") from None
