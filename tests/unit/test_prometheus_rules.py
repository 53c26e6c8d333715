"""The shipped Prometheus alert rules: promtool checks them and runs their unit tests, every alert is tested
firing and not firing, and every runbook link points to a section of docs/monitoring.md."""

import re
import subprocess
from pathlib import Path

import services
import yaml

REPO = Path(__file__).resolve().parents[2]
RULES = REPO / "roles" / "backup_monitoring" / "files" / "prometheus" / "caas-backup-rules.yml"
TESTS = sorted((REPO / "tests" / "prometheus").glob("*.test.yml"))
RUNBOOK = "https://github.com/caas-backup/caas.backup/blob/main/docs/monitoring.md#"


def promtool(*args):
    return subprocess.run(
        [services.binary("promtool"), *args], capture_output=True, text=True, timeout=120, check=False
    )


def alert_rules():
    return [rule for group in yaml.safe_load(RULES.read_text())["groups"] for rule in group["rules"]]


def test_promtool_checks_the_rules():
    result = promtool("check", "rules", str(RULES))
    assert result.returncode == 0, result.stdout + result.stderr
    assert f"SUCCESS: {len(alert_rules())} rules found" in result.stdout


def test_promtool_unit_tests_pass():
    assert TESTS, "no tests/prometheus/*.test.yml"
    result = promtool("test", "rules", *map(str, TESTS))
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_is_tested_firing_and_not_firing():
    firing, quiet = set(), set()
    for path in TESTS:
        for case in yaml.safe_load(path.read_text())["tests"]:
            for check in case["alert_rule_test"]:
                (firing if check.get("exp_alerts") else quiet).add(check["alertname"])
    names = {rule["alert"] for rule in alert_rules()}
    assert names - firing == set(), "alerts never tested firing"
    assert names - quiet == set(), "alerts never tested not firing"


def test_every_alert_has_a_severity_a_for_and_a_runbook_section():
    anchors = {
        re.sub(r"[^a-z0-9 -]", "", line.lstrip("#").strip().lower()).replace(" ", "-")
        for line in (REPO / "docs" / "monitoring.md").read_text().splitlines()
        if line.startswith("#")
    }
    for rule in alert_rules():
        assert rule["labels"]["severity"] in ("critical", "warning"), rule["alert"]
        assert re.fullmatch(r"\d+[smh]", rule["for"]), rule["alert"]
        url = rule["annotations"]["runbook_url"]
        assert url == RUNBOOK + rule["alert"].lower(), rule["alert"]
        assert rule["alert"].lower() in anchors, f"docs/monitoring.md has no section {rule['alert']}"
