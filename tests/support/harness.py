"""Running the collection's modules and playbooks from tests, as Ansible runs them."""

import datetime
import json
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[2]
COLLECTIONS = REPO / ".build" / "collections"


def module_env(svc, **extra):
    """The environment a module runs with: the services' S3 endpoint and keys, the collection importable."""
    env = dict(os.environ)
    env.update({k: v for k, v in svc.items() if k.startswith(("AWS_", "CAAS_S3"))})
    env["PYTHONPATH"] = str(COLLECTIONS)
    env.update(extra)
    return env


def run_module(name, args, env, check_mode=False):
    """Run a module of the collection as Ansible does on a host: arguments in a file, JSON on stdout.

    Returns the parsed result, with ``rc`` added.
    """
    module_args = dict(args)
    if check_mode:
        module_args["_ansible_check_mode"] = True
    proc = subprocess.run(
        [sys.executable, "-m", f"ansible_collections.caas.backup.plugins.modules.{name}"],
        input=json.dumps({"ANSIBLE_MODULE_ARGS": module_args}),
        capture_output=True,
        text=True,
        env=env,
        timeout=600,
        check=False,
    )
    try:
        result = json.loads(proc.stdout)
    except ValueError:
        pytest.fail(f"{name} printed no JSON (rc {proc.returncode}):\n{proc.stdout}\n{proc.stderr}")
    result["rc"] = proc.returncode
    return result


def site_inventory(path: Path, groups: dict[str, list[str]], host_vars: dict | None = None) -> Path:
    """An inventory file of localhost aliases (local connection) in the site's groups: ``{group: [hosts]}``."""
    hosts = {h for members in groups.values() for h in members}
    inventory = {
        "all": {
            "hosts": {h: dict((host_vars or {}).get(h, {})) for h in sorted(hosts)},
            "vars": {"ansible_connection": "local", "ansible_python_interpreter": "{{ ansible_playbook_python }}"},
            "children": {group: {"hosts": {h: {} for h in members}} for group, members in groups.items()},
        }
    }
    path.write_text(json.dumps(inventory, indent=1))
    return path


def run_playbook(playbook, extra_vars, env, *more, groups=("caas_config",), inventory=None):
    """Run ansible-playbook; returns the CompletedProcess.

    The inventory is ``inventory``, else localhost alone in each of ``groups`` (the site's parts it plays).
    """
    env = dict(env)
    env.update(ANSIBLE_COLLECTIONS_PATH=str(COLLECTIONS), ANSIBLE_FORCE_COLOR="0", ANSIBLE_NOCOLOR="1")
    env.pop("PYTHONPATH", None)
    with tempfile.TemporaryDirectory() as tmp:
        if inventory is None:
            inventory = site_inventory(Path(tmp) / "inventory.json", {g: ["localhost"] for g in groups})
        return subprocess.run(
            [
                str(Path(sys.executable).with_name("ansible-playbook")),
                "-i",
                str(inventory),
                str(playbook),
                "-e",
                json.dumps(extra_vars),
                *more,
            ],
            capture_output=True,
            text=True,
            env=env,
            timeout=900,
            check=False,
        )


def dr_report(report_dir: Path) -> dict:
    """The one JSON report dr.yml wrote into ``report_dir`` (dr_site_report_dir)."""
    [report] = sorted(Path(report_dir).glob("dr-report-*.json"))
    return json.loads(report.read_text())


def s3_storage(svc, url):
    """The collection's S3Storage for ``url`` on the session's S3 server."""
    from ansible_collections.caas.backup.plugins.module_utils.storage import open_storage

    return open_storage(
        url,
        endpoint_url=svc["CAAS_S3_ENDPOINT"],
        access_key=svc["AWS_ACCESS_KEY_ID"],
        secret_key=svc["AWS_SECRET_ACCESS_KEY"],
    )


NOW = datetime.datetime.now(datetime.timezone.utc).replace(microsecond=0)


def make_set(storage, days_ago, kind="config", tags=(), commit=True):
    """A small backup set of source ``app`` taken ``days_ago`` days ago (without its manifest unless ``commit``)."""
    from ansible_collections.caas.backup.plugins.module_utils.catalog import SetWriter
    from ansible_collections.caas.backup.plugins.module_utils.stream import WriteOptions

    when = NOW - datetime.timedelta(days=days_ago)
    writer = SetWriter(storage, kind, "app", WriteOptions("none"), tags, now=when)
    with writer.object("data") as out:
        out.write(b"x" * 100)
    if commit:
        writer.commit({}, finished_at=when)
    return writer.prefix
