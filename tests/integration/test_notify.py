"""backup_notify against a real HTTP server and a real SMTP server (aiosmtpd), both on loopback."""

import json

import pytest
from aiosmtpd.controller import Controller
from aiosmtpd.smtp import AuthResult
from harness import module_env, run_module
from services import free_port

ALERTS = [
    {
        "severity": "critical",
        "kind": "mongo-full",
        "source": "rs0",
        "message": "newest mongo-full backup is 30.0 h old",
    },
    {"severity": "warning", "kind": "config", "source": "app", "message": "size changed 3.00x"},
]


class Mailbox:
    def __init__(self):
        self.messages = []

    async def handle_DATA(self, server, session, envelope):
        self.messages.append(
            {
                "from": envelope.mail_from,
                "to": envelope.rcpt_tos,
                "data": envelope.content.decode(),
                "login": session.authenticated,
            }
        )
        return "250 OK"


@pytest.fixture()
def smtp():
    """An SMTP server that accepts the login backup/s3cret-smtp (AUTH over plain TCP, as allowed here)."""
    box = Mailbox()

    def authenticate(server, session, envelope, mechanism, auth_data):
        ok = auth_data.login == b"backup" and auth_data.password == b"s3cret-smtp"
        return AuthResult(success=ok, handled=False)  # not handled: aiosmtpd answers 535 itself

    controller = Controller(
        box,
        hostname="127.0.0.1",
        port=free_port(),
        authenticator=authenticate,
        auth_require_tls=False,
        ready_timeout=30,  # aiosmtpd's 5 s default is short on a loaded machine
    )
    controller.start()
    yield controller.port, box
    controller.stop()


def test_webhook_gets_the_alerts_as_json_and_the_token_stays_out_of_the_result(svc, webhook):
    url, received, _status = webhook
    result = run_module(
        "backup_notify",
        {"alerts": ALERTS, "webhook_url": url, "webhook_headers": {"Authorization": "Bearer hook-token-123"}},
        module_env(svc),
    )
    assert result["rc"] == 0 and result["webhook"] and result["changed"] and result["sent"] == 2
    [post] = received
    assert post["body"]["alerts"] == ALERTS
    assert post["body"]["text"].startswith("[caas.backup] 1 critical, 1 warning backup alert(s)")
    assert post["headers"]["Authorization"] == "Bearer hook-token-123"
    assert "hook-token-123" not in json.dumps(result)


def test_webhook_error_status_is_a_clear_failure(svc, webhook):
    url, _received, status = webhook
    status["code"] = 500
    result = run_module("backup_notify", {"alerts": ALERTS, "webhook_url": url}, module_env(svc))
    assert result["rc"] == 1
    assert result["msg"].startswith(f"Failed to send backup alerts: webhook {url} failed")
    assert result["msg"].endswith("failed: HTTP 500 Internal Server Error")


def test_email_with_login_and_min_severity(svc, smtp):
    port, box = smtp
    args = {
        "alerts": ALERTS,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_user": "backup",
        "smtp_password": "s3cret-smtp",
        "mail_to": ["ops@example.com"],
        "min_severity": "critical",
    }
    result = run_module("backup_notify", args, module_env(svc))
    assert result["rc"] == 0 and result["email"] and result["sent"] == 1
    [mail] = box.messages
    assert mail["to"] == ["ops@example.com"] and mail["login"]
    assert "[CRITICAL] mongo-full/rs0: newest mongo-full backup is 30.0 h old" in mail["data"]
    assert "size changed" not in mail["data"]
    assert "s3cret-smtp" not in json.dumps(result)


def test_wrong_smtp_password_is_a_clear_failure_without_the_password(svc, smtp):
    port, box = smtp
    args = {
        "alerts": ALERTS,
        "smtp_host": "127.0.0.1",
        "smtp_port": port,
        "smtp_security": "none",
        "smtp_user": "backup",
        "smtp_password": "not-the-password",
        "mail_to": ["ops@example.com"],
    }
    result = run_module("backup_notify", args, module_env(svc))
    assert result["rc"] == 1
    assert result["msg"] == f"Failed to send backup alerts: SMTP server 127.0.0.1:{port} refused the login of backup"
    assert "not-the-password" not in json.dumps(result) and box.messages == []


def test_nothing_to_send_and_check_mode_send_nothing(svc, webhook):
    url, received, _status = webhook
    quiet = run_module(
        "backup_notify", {"alerts": ALERTS[1:], "webhook_url": url, "min_severity": "critical"}, module_env(svc)
    )
    assert quiet["rc"] == 0 and not quiet["changed"] and quiet["sent"] == 0
    planned = run_module("backup_notify", {"alerts": ALERTS, "webhook_url": url}, module_env(svc), check_mode=True)
    assert planned["rc"] == 0 and planned["changed"] and not planned["webhook"]
    assert received == []
